//! Whether a new stream may open, the same for every door: the memory ceiling
//! (`max_memory_mb`), the streams from one address (`max_streams_per_ip`) and the
//! streams of the door (`max_streams`), checked in that order, then who the
//! stream is ([`super::access`]: its access token, and the place of its identity).
//! A door only turns a [`Refused`] into its own status (gRPC's
//! RESOURCE_EXHAUSTED, UNAUTHENTICATED, PERMISSION_DENIED, an HTTP code).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vchat_core::budget::OverBudget;

use super::access::{Access, Credentials, Seat};
use crate::conn::{IpSlot, PerIp};
use crate::metrics::Metrics;

/// The stream limits of one door.
pub(crate) struct StreamGate {
    streams: Arc<Semaphore>,
    max_streams: usize,
    per_ip: PerIp,
    metrics: Arc<Metrics>,
    access: Arc<Access>,
    /// What the door calls a stream in its messages: "streams", "connections".
    noun: &'static str,
}

/// The places an open stream holds; they are given back when it is dropped.
pub(crate) struct Admitted {
    /// Who the stream is; the door checks each request with it.
    pub(crate) seat: Arc<Seat>,
    _permit: OwnedSemaphorePermit,
    _ip_slot: Option<IpSlot>,
}

/// Why a stream was refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// More memory is held than `max_memory_mb`.
    Memory(OverBudget),
    /// `max_streams_per_ip` streams are open from this address.
    PerIp(String),
    /// `max_streams` streams are open.
    Streams(String),
    /// The access token is missing or not valid, or does not grant this.
    Auth(vchat_auth::AuthError),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Memory(over) => over.fmt(f),
            Refused::PerIp(m) | Refused::Streams(m) => f.write_str(m),
            Refused::Auth(e) => e.fmt(f),
        }
    }
}

impl Refused {
    /// The HTTP status of this refusal, for the doors that answer over HTTP.
    pub(crate) fn http_status(&self) -> hyper::StatusCode {
        use hyper::StatusCode;
        match self {
            Refused::PerIp(_) => StatusCode::TOO_MANY_REQUESTS,
            Refused::Memory(_) | Refused::Streams(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refused::Auth(e) => match e.denial() {
                vchat_auth::Denial::Unauthenticated => StatusCode::UNAUTHORIZED,
                vchat_auth::Denial::PermissionDenied => StatusCode::FORBIDDEN,
            },
        }
    }
}

impl StreamGate {
    pub(crate) fn new(
        max_streams: usize,
        max_streams_per_ip: usize,
        metrics: Arc<Metrics>,
        access: Arc<Access>,
        noun: &'static str,
    ) -> Self {
        StreamGate {
            // A larger limit than a semaphore counts is no limit: serve it as
            // the most it counts rather than panic.
            streams: Arc::new(Semaphore::new(max_streams.clamp(1, Semaphore::MAX_PERMITS))),
            max_streams,
            per_ip: PerIp::new(max_streams_per_ip),
            metrics,
            access,
            noun,
        }
    }

    /// Lets a stream from `peer` with `creds` in, or says why not (counted in
    /// `vchat_streams_rejected_total` and logged).
    pub(crate) fn admit(
        &self,
        peer: Option<IpAddr>,
        creds: Credentials,
    ) -> Result<Admitted, Refused> {
        let refused = |r: Refused| {
            self.metrics.stream_rejected();
            tracing::warn!(door = self.noun, "Stream refused: {r}");
            Err(r)
        };
        if let Err(over) = vchat_core::budget::global().check() {
            return refused(Refused::Memory(over));
        }
        let ip_slot = match peer {
            Some(ip) => match self.per_ip.try_acquire(ip) {
                Some(slot) => Some(slot),
                None => {
                    let (noun, max) = (self.noun, self.per_ip.max());
                    return refused(Refused::PerIp(format!(
                        "too many {noun} from {ip}: at most {max} at once from one address (max_streams_per_ip)"
                    )));
                }
            },
            None => None,
        };
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            let (noun, max) = (self.noun, self.max_streams);
            return refused(Refused::Streams(format!(
                "too many {noun}: this gateway serves at most {max} at once (max_streams)"
            )));
        };
        // Last: the counters above turn a flood away before any token is decoded.
        let seat = match self.access.seat(creds) {
            Ok(seat) => seat,
            Err(e) => return refused(Refused::Auth(e)),
        };
        Ok(Admitted {
            seat,
            _permit: permit,
            _ip_slot: ip_slot,
        })
    }
}
