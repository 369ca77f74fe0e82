//! The WebRTC door: a browser's camera as H.264 over a peer connection, and
//! the room's mosaic back on the same connection, signalled WHIP-style on the
//! browser side's HTTP port (`port_http`).
//!
//! | request | answer |
//! |---|---|
//! | `POST /whip?user=NAME&room=ROOM` (`Content-Type: application/sdp`, an SDP offer) | `201 Created`, the SDP answer, `Location: /whip/ID` |
//! | the same with `?access_token=TOKEN` or `Authorization: Bearer TOKEN` | with `with.auth`: user and room are the token's |
//! | `GET /whip/ID` | the peer's counters (JSON) |
//! | `DELETE /whip/ID` | `204`: the peer leaves its room |
//!
//! Every peer connection runs on one UDP socket (`webrtc.udp_port`), driven
//! by `driver.rs` with `str0m`; the answer names one host candidate: the
//! address the browser reached the HTTP port at (or `webrtc.public_ip` behind
//! NAT). The gateway is ICE-lite: the browser checks, the gateway answers.
//!
//! Each peer has a codec thread (`h264.rs`, OpenH264): received access units
//! are decoded to BGR frames, and the newest one goes through the Flow as a
//! request of the peer's stream, exactly as a WebSocket frame (a frame that
//! arrives while the previous one is in the Flow replaces the one waiting).
//! Each mosaic is encoded and written back; a mosaic that finds the encoder
//! busy waits in a slot of one, where a newer one replaces it, so a codec
//! thread that falls behind encodes the room as it is now instead of working
//! through old mosaics. A keyframe goes out first, and whenever the
//! browser asks (PLI/FIR); the gateway asks the browser for one when it lost
//! a picture.
//!
//! Bounds: `webrtc.max_peers` connections (503 past it), the stream limits of
//! every door (`max_streams`, per address, the token), `webrtc.max_sdp_bytes`
//! (413), `webrtc.connect_timeout_s` for ICE and DTLS, `max_frame_bytes` for
//! the pictures a stream announces (checked before decoding), the WebSocket's
//! frame rate cap (`websocket_max_fps`) and `stream_idle_timeout_s`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use vchat_core::config::{
    DEFAULT_WEBRTC_CONNECT_TIMEOUT_S, DEFAULT_WEBRTC_MAX_PEERS, DEFAULT_WEBRTC_MAX_SDP_BYTES,
    DEFAULT_WEBSOCKET_MAX_FPS,
};
use vchat_core::{Content, Document, DocumentArray, Outcome, Tensor};

use super::websocket::{JoinQuery, parse_join_query};
use crate::session::{Credentials, Door, RateLimit, Session, Sessions};

mod driver;
pub mod h264;
pub mod sdp;

use driver::{Command, Peer};
use h264::{Decoded, FrameDecoder, FrameEncoder};

/// Path of the WHIP endpoint.
pub const WHIP_PATH: &str = "/whip";
/// The page's WebRTC client.
pub const WEBRTC_JS: &str = include_str!("../../../web/webrtc.js");
/// Endpoint of every frame, as the WebSocket's.
const ENDPOINT: &str = "/";
/// Access units (and wake-ups) waiting for one peer's codec thread; past it
/// access units are dropped (and a keyframe asked for).
const CODEC_QUEUE: usize = 32;
/// Commands waiting for the driver.
const DRIVER_QUEUE: usize = 1024;

/// Settings of the WebRTC door.
#[derive(Debug, Clone)]
pub struct WebRtcOptions {
    /// The UDP port (0: any free one).
    pub udp_port: u16,
    /// The address browsers reach the UDP port at, behind NAT.
    pub public_ip: Option<IpAddr>,
    /// Most peer connections at once.
    pub max_peers: usize,
    /// How long ICE and DTLS may take.
    pub connect_timeout: Duration,
    /// Largest SDP offer, in bytes.
    pub max_sdp_bytes: usize,
}

impl Default for WebRtcOptions {
    fn default() -> Self {
        WebRtcOptions {
            udp_port: 0,
            public_ip: None,
            max_peers: DEFAULT_WEBRTC_MAX_PEERS,
            connect_timeout: Duration::from_secs_f64(DEFAULT_WEBRTC_CONNECT_TIMEOUT_S),
            max_sdp_bytes: DEFAULT_WEBRTC_MAX_SDP_BYTES,
        }
    }
}

/// What a codec thread is given.
pub(crate) enum CodecIn {
    /// An access unit from the browser.
    Media(Arc<[u8]>),
    /// A mosaic is waiting in the peer's [`NextMosaic`].
    Mosaic,
    /// The browser asked for a keyframe.
    Keyframe,
}

/// The newest mosaic of a peer that its codec thread has not taken yet.
///
/// Mosaics used to queue with the access units: a codec thread short of CPU
/// (H.264 encoding of a large mosaic is the costliest step of a peer) then
/// encoded mosaics seconds old, and the pictures feeding the Flow waited
/// behind them, so the round trip grew with the queue. Only the newest
/// mosaic is worth encoding.
#[derive(Default)]
pub(crate) struct NextMosaic {
    slot: Mutex<Option<Tensor>>,
}

impl NextMosaic {
    /// Leaves `t` for the codec thread; false when it replaced one that was
    /// never encoded.
    fn put(&self, t: Tensor) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(t)
            .is_none()
    }

    fn take(&self) -> Option<Tensor> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Hands a mosaic to a peer's codec thread: it replaces one still waiting
/// (counted as dropped), else the thread is woken. `Err` when the thread is
/// gone.
fn offer_mosaic(
    next: &NextMosaic,
    codec: &SyncSender<CodecIn>,
    stats: &PeerStats,
    t: Tensor,
) -> Result<(), ()> {
    if !next.put(t) {
        // Its wake-up is on the way, or the thread looks at the slot once
        // its queue is empty.
        stats.mosaics_dropped.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    match codec.try_send(CodecIn::Mosaic) {
        // A full queue: the thread takes the mosaic after it.
        Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
        Err(TrySendError::Disconnected(_)) => Err(()),
    }
}

/// The counters of one peer (`GET /whip/ID`).
#[derive(Default)]
pub(crate) struct PeerStats {
    connected: AtomicBool,
    frames_in: AtomicU64,
    frames_dropped: AtomicU64,
    frames_decoded: AtomicU64,
    frames_processed: AtomicU64,
    mosaics_encoded: AtomicU64,
    mosaics_dropped: AtomicU64,
    mosaics_out: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl PeerStats {
    fn set_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }
    fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }
    fn frame_dropped(&self) {
        self.frames_dropped.fetch_add(1, Ordering::Relaxed);
    }
    fn mosaic_out(&self) {
        self.mosaics_out.fetch_add(1, Ordering::Relaxed);
    }
    fn error(&self, m: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
    }
    fn json(&self) -> serde_json::Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "frames_in": n(&self.frames_in),
            "frames_dropped": n(&self.frames_dropped),
            "frames_decoded": n(&self.frames_decoded),
            "frames_processed": n(&self.frames_processed),
            "mosaics_encoded": n(&self.mosaics_encoded),
            "mosaics_dropped": n(&self.mosaics_dropped),
            "mosaics_out": n(&self.mosaics_out),
            "errors": n(&self.errors),
            "last_error": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// The peers open now, by id, for `DELETE` and `GET` and for `max_peers`.
#[derive(Default)]
pub(crate) struct Registry {
    peers: Mutex<HashMap<String, Arc<PeerStats>>>,
}

impl Registry {
    fn remove(&self, id: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
    fn get(&self, id: &str) -> Option<Arc<PeerStats>> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
    /// Adds a peer unless `max` are open.
    fn insert(&self, id: &str, stats: Arc<PeerStats>, max: usize) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= max {
            return false;
        }
        peers.insert(id.to_string(), stats);
        true
    }
}

/// The WebRTC side of one gateway.
pub(crate) struct WebRtcDoor {
    door: Door,
    options: WebRtcOptions,
    max_fps: f64,
    udp: SocketAddr,
    registry: Arc<Registry>,
    driver: mpsc::Sender<Command>,
    crypto: Arc<str0m::crypto::CryptoProvider>,
    shutdown: CancellationToken,
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl WebRtcDoor {
    /// Starts the driver on `socket`; `max_fps` is the per-peer frame rate cap.
    pub(crate) fn start(
        sessions: &Arc<Sessions>,
        socket: UdpSocket,
        options: WebRtcOptions,
        max_fps: f64,
        shutdown: CancellationToken,
    ) -> std::io::Result<Arc<Self>> {
        let udp = socket.local_addr()?;
        tracing::info!(udp = %udp, "WebRTC: peer connections on UDP port {}", udp.port());
        let registry = Arc::new(Registry::default());
        let (tx, rx) = mpsc::channel(DRIVER_QUEUE);
        tokio::spawn(driver::run(socket, rx, registry.clone(), shutdown.clone()));
        Ok(Arc::new(WebRtcDoor {
            door: sessions.door("WebRTC peers"),
            options,
            max_fps,
            udp,
            registry,
            driver: tx,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            shutdown,
        }))
    }

    /// Answers a request under [`WHIP_PATH`]; `local` is where the browser
    /// reached the HTTP port.
    pub(crate) async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == WHIP_PATH {
            if req.method() != Method::POST {
                let mut r = plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "POST an SDP offer (Content-Type: application/sdp) to join over WebRTC",
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return r;
            }
            return self.offer(req, peer, local).await;
        }
        let Some(id) = path
            .strip_prefix(WHIP_PATH)
            .and_then(|p| p.strip_prefix('/'))
        else {
            return plain(StatusCode::NOT_FOUND, "no such WebRTC resource");
        };
        let Some(stats) = self.registry.get(id) else {
            return plain(
                StatusCode::NOT_FOUND,
                "no such WebRTC peer (it left, or never connected in time)",
            );
        };
        match *req.method() {
            Method::DELETE => {
                let _ = self.driver.send(Command::Remove(id.to_string())).await;
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Method::GET => {
                let mut r = plain(StatusCode::OK, stats.json().to_string());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            _ => {
                let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or DELETE a peer");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, DELETE"));
                r
            }
        }
    }

    /// `POST /whip`: checks, admits the stream, answers the offer and starts
    /// the peer.
    async fn offer(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Response<Body> {
        let headers = req.headers();
        let sdp_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
            });
        if !sdp_type {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the offer must be sent with Content-Type: application/sdp",
            );
        }
        let limit = self.options.max_sdp_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > limit as u64) {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                sdp::OfferError::TooLarge {
                    size: usize::try_from(n).unwrap_or(usize::MAX),
                    limit,
                }
                .to_string(),
            );
        }
        let mut who = match parse_join_query(req.uri().query().unwrap_or("")) {
            Ok(w) => w,
            Err(m) => return plain(StatusCode::BAD_REQUEST, m),
        };
        if who.token.is_none() {
            who.token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(vchat_auth::bearer)
                .map(str::to_string);
        }
        // One byte over the limit is enough to know it is over.
        let body = match Limited::new(req.into_body(), limit.saturating_add(1))
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        sdp::OfferError::TooLarge {
                            size: limit.saturating_add(1),
                            limit,
                        }
                        .to_string(),
                    );
                }
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the offer: {e}"),
                );
            }
        };
        let text = match sdp::check_offer(&body, limit) {
            Ok(t) => t,
            Err(e @ sdp::OfferError::TooLarge { .. }) => {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
            Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let offer = match SdpOffer::from_sdp_string(text) {
            Ok(o) => o,
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not an SDP offer: {e}"),
                );
            }
        };
        let Some(candidate_addr) = self.candidate(local) else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "this server has no address for WebRTC on this network: set webrtc.public_ip",
            );
        };
        // The peer's place first: a refused offer must not replace its user's
        // stream (one per user and room) on the way.
        let id = vchat_core::new_id();
        let stats = Arc::new(PeerStats::default());
        if !self
            .registry
            .insert(&id, stats.clone(), self.options.max_peers)
        {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this server holds {} WebRTC peers, its limit (webrtc.max_peers); \
                     try again later or use the WebSocket",
                    self.options.max_peers
                ),
            );
        }
        let place = Place {
            registry: &self.registry,
            id: Some(&id),
        };
        let rate = RateLimit::per_second(self.max_fps)
            .or_else(|| RateLimit::per_second(DEFAULT_WEBSOCKET_MAX_FPS));
        let creds = Credentials {
            token: who.token.take(),
            user: who.user.clone(),
            room: who.room.clone(),
        };
        let session = match self.door.open(Some(peer.ip()), creds, rate) {
            Ok(s) => s,
            Err(refused) => return plain(refused.http_status(), refused.to_string()),
        };
        if let Some(g) = session.seat().grant() {
            who.user = Some(g.identity.clone());
            who.room = Some(g.room.clone());
        }
        let mut rtc = Rtc::builder()
            .set_crypto_provider(self.crypto.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        let candidate = match Candidate::host(candidate_addr, "udp") {
            Ok(c) => c,
            Err(e) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("no WebRTC candidate: {e}"),
                );
            }
        };
        rtc.add_local_candidate(candidate);
        let answer = match rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("the SDP offer cannot be answered: {e}"),
                );
            }
        };
        let cancel = self.shutdown.child_token();
        let (codec_tx, codec_rx) = std::sync::mpsc::sync_channel(CODEC_QUEUE);
        let latest = Arc::new(Latest::default());
        let next = Arc::new(NextMosaic::default());
        let limit = {
            let l = session.limits();
            l.max_frame_bytes.min(l.max_message_bytes)
        };
        let spawned = {
            let (id, driver, latest, stats, next) = (
                id.clone(),
                self.driver.clone(),
                latest.clone(),
                stats.clone(),
                next.clone(),
            );
            std::thread::Builder::new()
                .name("vchat-webrtc-codec".into())
                .spawn(move || codec_thread(id, codec_rx, driver, latest, next, stats, limit))
        };
        if let Err(e) = spawned {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot start the peer's codec: {e}"),
            );
        }
        tracing::info!(
            stream = session.id().0,
            %peer,
            peer_id = %id,
            user = who.user.as_deref().unwrap_or(""),
            room = who.room.as_deref().unwrap_or(""),
            "WebRTC offer answered"
        );
        let now = Instant::now();
        let p = Peer {
            id: id.clone(),
            rtc,
            local: candidate_addr,
            connect_by: Some(now + self.options.connect_timeout),
            codec: codec_tx.clone(),
            cancel: cancel.clone(),
            stats: stats.clone(),
            started: now,
            video: None,
            pt: None,
            last_pli: None,
        };
        if self.driver.send(Command::Add(Box::new(p))).await.is_err() {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            );
        }
        // The driver frees the place from now on.
        place.keep();
        tokio::spawn(run_stream(
            session,
            who,
            id.clone(),
            latest,
            next,
            codec_tx,
            self.driver.clone(),
            stats,
            cancel,
        ));
        let mut r = Response::new(Full::new(Bytes::from(answer.to_sdp_string())));
        *r.status_mut() = StatusCode::CREATED;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/sdp"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&format!("{WHIP_PATH}/{id}")) {
            h.insert(header::LOCATION, v);
        }
        r
    }

    /// The address of the candidate offered to a browser that reached the
    /// HTTP port at `local`.
    fn candidate(&self, local: Option<SocketAddr>) -> Option<SocketAddr> {
        let port = self.udp.port();
        if let Some(ip) = self.options.public_ip {
            return Some(SocketAddr::new(ip, port));
        }
        if !self.udp.ip().is_unspecified() {
            return Some(self.udp);
        }
        let ip = local?.ip();
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        (ip.is_ipv4() == self.udp.is_ipv4()).then_some(SocketAddr::new(ip, port))
    }
}

/// A peer's place in the registry while its offer is answered: given back
/// unless kept.
struct Place<'a> {
    registry: &'a Registry,
    id: Option<&'a str>,
}

impl Place<'_> {
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.registry.remove(id);
        }
    }
}

/// The newest decoded frame of a peer, waiting for the Flow.
#[derive(Default)]
struct Latest {
    frame: Mutex<Option<Tensor>>,
    ready: Notify,
}

/// Decodes a peer's access units and encodes its mosaics until the driver
/// drops the peer (its channel closes): everything queued first (every
/// access unit must be decoded, each refers to those before it), then the
/// newest mosaic.
fn codec_thread(
    id: String,
    rx: Receiver<CodecIn>,
    driver: mpsc::Sender<Command>,
    latest: Arc<Latest>,
    next: Arc<NextMosaic>,
    stats: Arc<PeerStats>,
    limit: usize,
) {
    let mut decoder = match FrameDecoder::new(limit) {
        Ok(d) => d,
        Err(e) => {
            stats.error(e);
            let _ = driver.try_send(Command::Remove(id));
            return;
        }
    };
    let mut encoder = FrameEncoder::default();
    let mut refused_logged = false;
    while let Ok(first) = rx.recv() {
        let mut queued = Some(first);
        while let Some(msg) = queued.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                CodecIn::Media(au) => match decoder.decode(&au) {
                    Decoded::Frame(t) => {
                        stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
                        let replaced = latest
                            .frame
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .replace(t);
                        if replaced.is_some() {
                            stats.frame_dropped();
                        }
                        latest.ready.notify_one();
                    }
                    Decoded::Nothing => {}
                    Decoded::Broken(e) => {
                        tracing::debug!(peer = %id, error = %e, "H.264 not decodable; asking for a keyframe");
                        let _ = driver.try_send(Command::RequestKeyframe(id.clone()));
                    }
                    Decoded::TooLarge(m) => {
                        if !refused_logged {
                            tracing::warn!(peer = %id, "{m}");
                            refused_logged = true;
                        }
                        stats.error(m);
                    }
                },
                CodecIn::Mosaic => {}
                CodecIn::Keyframe => encoder.want_keyframe(),
            }
        }
        let Some(t) = next.take() else { continue };
        let Ok((h, w)) = t.frame_dims() else { continue };
        match encoder.encode(t.data(), h, w) {
            Ok(au) if !au.is_empty() => {
                stats.mosaics_encoded.fetch_add(1, Ordering::Relaxed);
                let send = driver.try_send(Command::Send { id: id.clone(), au });
                if send.is_err() {
                    // The link is behind: the browser must restart
                    // from a keyframe once it catches up.
                    stats.mosaics_dropped.fetch_add(1, Ordering::Relaxed);
                    encoder.want_keyframe();
                }
            }
            Ok(_) => {}
            Err(e) => stats.error(e),
        }
    }
}

/// The stream of one peer: its newest frame through the Flow, one at a time,
/// each mosaic to the codec thread, until the peer is dropped, replaced or
/// idle.
#[allow(clippy::too_many_arguments)]
async fn run_stream(
    session: Session,
    who: JoinQuery,
    id: String,
    latest: Arc<Latest>,
    next: Arc<NextMosaic>,
    codec: SyncSender<CodecIn>,
    driver: mpsc::Sender<Command>,
    stats: Arc<PeerStats>,
    cancel: CancellationToken,
) {
    let replaced = session.seat().replaced();
    tokio::pin!(replaced);
    let idle_limit = session.limits().stream_idle_timeout;
    let mut reason = "dropped";
    loop {
        let idle_at = session.activity().idle_deadline(idle_limit);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = &mut replaced => {
                reason = "replaced by a newer stream of its user";
                break;
            }
            _ = tokio::time::sleep_until(idle_at.unwrap_or_else(tokio::time::Instant::now)), if idle_at.is_some() => {
                reason = "idle (stream_idle_timeout_s)";
                break;
            }
            _ = latest.ready.notified() => {
                let frame = latest.frame.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(frame) = frame else { continue };
                let in_flight = session.activity().begin();
                if !session.admit_frame() {
                    continue;
                }
                let started = Instant::now();
                let size_in = frame.data().len();
                let reply = session.process(frame_request(frame, &who)).await;
                drop(in_flight);
                stats.frames_processed.fetch_add(1, Ordering::Relaxed);
                let (failed, size_out) = match reply.outcome {
                    Outcome::Error(e) => {
                        stats.error(e.to_string());
                        (true, 0)
                    }
                    Outcome::Skipped(_) => (false, 0),
                    Outcome::Ok => {
                        let mosaic = reply
                            .docs
                            .and_then(|d| d.0.into_iter().next())
                            .and_then(|d| match d.content {
                                Some(Content::Tensor(t)) if t.frame_dims().is_ok() => Some(t),
                                _ => None,
                            });
                        match mosaic {
                            Some(t) => {
                                let n = t.data().len();
                                if offer_mosaic(&next, &codec, &stats, t).is_err() {
                                    break;
                                }
                                (false, n)
                            }
                            None => (false, 0),
                        }
                    }
                };
                session.record(ENDPOINT, started, failed, size_in, size_out);
            }
        }
    }
    tracing::info!(stream = session.id().0, peer_id = %id, reason, "WebRTC peer left");
    let _ = driver.send(Command::Remove(id)).await;
}

/// The request of one decoded frame: a BGR tensor tagged with the peer's
/// user and room, asking for a raw mosaic (encoded here, as H.264).
fn frame_request(frame: Tensor, who: &JoinQuery) -> vchat_core::Request {
    let mut doc = Document::new();
    doc.set_tensor(frame);
    if let Some(u) = &who.user {
        doc.set_tag_str("user", u.clone());
    }
    if let Some(r) = &who.room {
        doc.set_tag_str("room", r.clone());
    }
    doc.set_tag_str("accept", "raw");
    vchat_core::Request::new(ENDPOINT, DocumentArray(vec![doc]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use h264::Decoded;

    fn solid(h: usize, w: usize, bgr: [u8; 3]) -> Tensor {
        let data: Vec<u8> = bgr.iter().copied().cycle().take(h * w * 3).collect();
        Tensor::image(h, w, 3, Bytes::from(data)).unwrap()
    }

    #[test]
    fn a_codec_thread_behind_encodes_only_the_newest_mosaic() {
        let (codec, rx) = std::sync::mpsc::sync_channel(CODEC_QUEUE);
        let (driver, mut sent) = mpsc::channel(DRIVER_QUEUE);
        let next = Arc::new(NextMosaic::default());
        let stats = Arc::new(PeerStats::default());
        // Ten mosaics come while the codec thread is busy (here: not started).
        for i in 0..10u8 {
            offer_mosaic(&next, &codec, &stats, solid(48, 64, [i * 20, 40, 200])).unwrap();
        }
        drop(codec);
        let thread = {
            let (next, stats) = (next.clone(), stats.clone());
            let latest = Arc::new(Latest::default());
            std::thread::spawn(move || {
                codec_thread("p".into(), rx, driver, latest, next, stats, 1 << 20)
            })
        };
        thread.join().unwrap();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(n(&stats.mosaics_encoded), 1);
        assert_eq!(n(&stats.mosaics_dropped), 9);
        // What went out is the newest mosaic.
        let Ok(Command::Send { au, .. }) = sent.try_recv() else {
            panic!("no mosaic sent")
        };
        assert!(sent.try_recv().is_err(), "more than one mosaic sent");
        let mut dec = FrameDecoder::new(1 << 20).unwrap();
        let Decoded::Frame(t) = dec.decode(&au) else {
            panic!("not a picture")
        };
        let px = &t.data()[(24 * 64 + 32) * 3..][..3];
        assert!(px[0].abs_diff(180) < 20, "{px:?}");
    }
}
