//! One stream of one peer, the same for every door: a door (gRPC, WebSocket)
//! turns its transport's messages into [`Request`]s and [`Reply`]s into
//! messages, and leaves the rest to its [`Session`]:
//!
//! - admission (`Door::open`): the memory ceiling, streams per address and per
//!   door (see `gate.rs`), then who the stream is: its access token, and one
//!   stream per user in a room (see [`access`]);
//! - the stream's id, and telling the Flow's executors when the stream ends, however
//!   it ends (the session is dropped);
//! - the frame rate cap ([`rate`]) and the size of frames;
//! - how busy the stream is, for its idle timeout ([`activity`]);
//! - running a request through the Flow, counted in the memory budget and in the
//!   metrics.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use vchat_core::config::{
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_OUTBOX_BYTES,
    DEFAULT_MAX_STREAM_QUEUE_BYTES, DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_IP,
    DEFAULT_PREFETCH, DEFAULT_SEND_TIMEOUT_S, DEFAULT_STREAM_IDLE_TIMEOUT_S,
};
use vchat_core::{Content, DocumentArray, Error, Reply, Request, StreamId};

use crate::flow::FlowRuntime;
use crate::metrics::Metrics;

pub mod access;
pub mod activity;
pub(crate) mod gate;
pub mod rate;

pub(crate) use access::Seat;
pub use access::{Access, Credentials};
pub use activity::{Activity, InFlight};
pub(crate) use gate::{Refused, StreamGate};
pub use rate::RateLimit;

/// Limits of every stream, on every door.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// At most this many requests of one stream are processed at once; a client's
    /// `__prefetch__` may lower it, never raise it.
    pub prefetch: usize,
    /// Requests over this many bytes are answered with an ERROR status.
    pub max_message_bytes: usize,
    /// At most this many processed requests per second on one gRPC stream in
    /// `send-receive` mode; the others are answered as skipped.
    pub max_fps: Option<f64>,
    /// At most this many streams are open at once on one door; one more is
    /// refused.
    pub max_streams: usize,
    /// A document whose tensor or blob is over this many bytes is answered with an
    /// ERROR status.
    pub max_frame_bytes: usize,
    /// At most this many streams at once from one client address (per door);
    /// one more is refused.
    pub max_streams_per_ip: usize,
    /// A stream with no request for this long, and none in flight, is ended.
    pub stream_idle_timeout: Duration,
    /// A peer that takes none of its stream's waiting responses for this long
    /// is dropped.
    pub send_timeout: Duration,
    /// At most this many bytes of responses wait for one stream's peer; past it
    /// the stream produces nothing more until the peer takes some.
    pub max_stream_queue_bytes: usize,
    /// At most this many bytes of frames wait for one stream's peer; past it
    /// the older ones are replaced by skipped replies, the newest kept.
    pub max_outbox_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            prefetch: DEFAULT_PREFETCH,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_fps: None,
            max_streams_per_ip: DEFAULT_MAX_STREAMS_PER_IP,
            stream_idle_timeout: Duration::from_secs_f64(DEFAULT_STREAM_IDLE_TIMEOUT_S),
            send_timeout: Duration::from_secs_f64(DEFAULT_SEND_TIMEOUT_S),
            max_stream_queue_bytes: DEFAULT_MAX_STREAM_QUEUE_BYTES,
            max_outbox_bytes: DEFAULT_MAX_OUTBOX_BYTES,
        }
    }
}

/// What the streams of every door of one gateway share.
pub struct Sessions {
    flow: Arc<FlowRuntime>,
    limits: StreamLimits,
    metrics: Arc<Metrics>,
    access: Arc<Access>,
    next_id: AtomicU64,
}

impl Sessions {
    /// The streams of a gateway serving `flow`, who they are checked by `access`.
    pub fn new(
        flow: Arc<FlowRuntime>,
        limits: StreamLimits,
        metrics: Arc<Metrics>,
        access: Arc<Access>,
    ) -> Arc<Self> {
        // Stream ids start at random: they also reach executors in other
        // processes, which may serve several gateways.
        let id = vchat_core::new_id();
        let base = u64::from_str_radix(&id[..16], 16).unwrap_or(1) | 1;
        Arc::new(Sessions {
            flow,
            limits,
            metrics,
            access,
            next_id: AtomicU64::new(base),
        })
    }

    /// The entrance of one door, with its own stream limits; `noun` is what the
    /// door calls a stream in its messages ("streams", "connections").
    pub fn door(self: &Arc<Self>, noun: &'static str) -> Door {
        Door {
            gate: StreamGate::new(
                self.limits.max_streams,
                self.limits.max_streams_per_ip,
                self.metrics.clone(),
                self.access.clone(),
                noun,
            ),
            sessions: self.clone(),
            noun,
        }
    }

    /// The Flow.
    pub fn flow(&self) -> &Arc<FlowRuntime> {
        &self.flow
    }

    /// The limits.
    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The entrance of one door: its streams count against their own limits.
pub struct Door {
    sessions: Arc<Sessions>,
    gate: StreamGate,
    noun: &'static str,
}

impl Door {
    /// Opens a stream for a peer at `peer` that presented `creds`, with the
    /// frame rate cap `rate`, or says why not (the door turns a [`Refused`] into
    /// its own status).
    pub(crate) fn open(
        &self,
        peer: Option<IpAddr>,
        creds: Credentials,
        rate: Option<RateLimit>,
    ) -> Result<Session, Refused> {
        let admitted = self.gate.admit(peer, creds)?;
        let s = &self.sessions;
        s.metrics.stream_delta(1);
        let id = StreamId(s.next_id.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(stream = id.0, door = self.noun, "Stream opened");
        Ok(Session {
            id,
            seat: admitted.seat.clone(),
            sessions: s.clone(),
            rate: Mutex::new(rate),
            activity: Activity::new(),
            noun: self.noun,
            _admitted: admitted,
        })
    }

    /// What every stream of the gateway shares.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }
}

/// One open stream. Dropping it ends the stream: the Flow's executors are told,
/// and its places (streams, per address) are given back.
pub struct Session {
    id: StreamId,
    seat: Arc<Seat>,
    sessions: Arc<Sessions>,
    rate: Mutex<Option<RateLimit>>,
    activity: Arc<Activity>,
    noun: &'static str,
    _admitted: gate::Admitted,
}

impl Session {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The Flow.
    pub fn flow(&self) -> &Arc<FlowRuntime> {
        &self.sessions.flow
    }

    /// The limits.
    pub fn limits(&self) -> &StreamLimits {
        &self.sessions.limits
    }

    /// Who the stream is.
    pub(crate) fn seat(&self) -> &Arc<Seat> {
        &self.seat
    }

    /// How busy the stream is.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Takes the frame rate cap's token for one frame: false when the frame
    /// comes too soon and must not be processed (counted as skipped).
    pub fn admit_frame(&self) -> bool {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let admitted = rate.as_mut().is_none_or(|r| r.take(Instant::now()));
        if !admitted {
            self.sessions.metrics.frame_skipped();
        }
        admitted
    }

    /// Runs `request` through the Flow, once it is checked against who the
    /// stream is. While it runs, its frames count in the process's memory budget
    /// (`max_memory_mb`).
    pub async fn process(&self, mut request: Request) -> Reply {
        if let Err(m) = self.seat.check(&mut request) {
            return Reply::error(Error::BadRequest(m));
        }
        let held = vchat_core::budget::global().hold(frame_bytes(&request.docs));
        let mut reply = self.sessions.flow.process(request, self.id).await;
        drop(held);
        self.seat.reply(&mut reply);
        if reply.is_skipped() {
            self.sessions.metrics.frame_skipped();
        }
        reply
    }

    /// The replies of a `receive` request: one per frame its source yields.
    pub fn respond(&self, mut request: Request) -> BoxStream<'static, Reply> {
        if let Err(m) = self.seat.check(&mut request) {
            let reply = Reply::error(Error::BadRequest(m));
            return futures::stream::once(futures::future::ready(reply)).boxed();
        }
        let seat = self.seat.clone();
        self.sessions
            .flow
            .respond(request, self.id)
            .map(move |mut reply| {
                seat.reply(&mut reply);
                reply
            })
            .boxed()
    }

    /// Counts one answered request in the metrics.
    pub fn record(
        &self,
        endpoint: &str,
        started: Instant,
        failed: bool,
        bytes_in: usize,
        bytes_out: usize,
    ) {
        self.sessions
            .metrics
            .request(endpoint, started.elapsed(), failed, bytes_in, bytes_out);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sessions.metrics.stream_delta(-1);
        let flow = self.sessions.flow.clone();
        let id = self.id;
        tracing::debug!(stream = id.0, door = self.noun, "Stream ended");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { flow.stream_closed(id).await });
        }
    }
}

/// The size of a document's frame (tensor buffer, blob or text), in bytes.
fn content_bytes(content: Option<&Content>) -> usize {
    match content {
        Some(Content::Tensor(t)) => t.data().len(),
        Some(Content::Blob(b)) => b.len(),
        Some(Content::Text(t)) => t.len(),
        None => 0,
    }
}

/// The bytes of all the frames of `docs`.
pub fn frame_bytes(docs: &DocumentArray) -> usize {
    docs.iter()
        .map(|d| content_bytes(d.content.as_ref()))
        .fold(0, usize::saturating_add)
}

/// Why a frame of `size` bytes is refused, when it is over `limit`
/// (`max_frame_bytes`).
pub fn frame_too_large(size: usize, limit: usize) -> Option<String> {
    (size > limit).then(|| {
        format!("a frame of {size} bytes is over the limit of {limit} bytes (max_frame_bytes)")
    })
}

/// Refuses documents of which one has a frame over `limit` bytes.
pub fn check_frames(docs: &DocumentArray, limit: usize) -> Result<(), Error> {
    match docs
        .iter()
        .find_map(|d| frame_too_large(content_bytes(d.content.as_ref()), limit))
    {
        Some(m) => Err(Error::BadRequest(m)),
        None => Ok(()),
    }
}
