//! The browser side of a Flow (`with: {protocol: [grpc, websocket]}`): a
//! single-page web client and the WebSocket it streams over, on their own port
//! (`port_http`), over TLS when the Flow has a certificate.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the web client (`web/index.html` and `web/app.js`, built into the binary) |
//! | `GET /ws?user=NAME&room=ROOM` | the WebSocket; `room` is optional (the shared room) |
//! | `GET /ws?access_token=TOKEN` | the WebSocket of a Flow with `with.auth`: user and room are the token's |
//! | `GET /webrtc.js`, `/whip...` | the WebRTC door's script and signalling (see [`super::webrtc`]) |
//!
//! # Wire format
//!
//! Browser to server: one **binary message per frame, holding one JPEG** (what
//! `canvas.toBlob('image/jpeg')` gives). The server numbers the binary messages
//! of a connection 1, 2, 3, ... (`seq`), builds a request from each (the JPEG as
//! the document's blob, `tags.user`, `tags.room`, `tags.accept = jpeg`) and runs
//! it through the Flow exactly like a gRPC request, one stream per connection.
//!
//! Server to browser, every message in order, **exactly one reply per frame**:
//!
//! - `{"type":"mosaic","seq":N,"width":W,"height":H,"participants":[...],"tags":{...},"server_ms":T}`
//!   (text), immediately followed by the mosaic as one binary JPEG message;
//! - `{"type":"ack","seq":N,"tags":{...},"server_ms":T}`: processed, no frame came back;
//! - `{"type":"skipped","seq":N}`: the Flow skipped it (`skip_frames`);
//! - `{"type":"rate_limited","seq":N,"max_fps":F}`: over `websocket_max_fps`,
//!   dropped unprocessed;
//! - `{"type":"error","seq":N,"error":"..."}`: the frame could not be processed
//!   (not a JPEG, over `max_frame_bytes`, a full room, ...); the connection goes
//!   on.
//!
//! Besides, the first message is `{"type":"hello","user":...,"room":...,"max_fps":F,"max_frame_bytes":B,"version":V}`,
//! and a text message from the browser is answered with an `error` without `seq`.
//! A message over twice the frame limit (and at least 16 MiB over it) closes the
//! connection with code 1009, as the gRPC layer ends such a stream.
//!
//! # Security
//!
//! The WebSocket handshake is refused with 403 unless its `Origin` is the
//! server's own (`http[s]://` + the `Host` header) or listed in
//! `websocket_origins` (`*`: any); clients that send no `Origin` (not browsers)
//! are let in. Connections count against `max_streams`; each is rate limited
//! (a token bucket of `websocket_max_fps`, bursts of one second's worth). When the
//! socket closes, for any reason, the Flow's executors are told the stream
//! ended, so the user leaves the room at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vchat_core::config::DEFAULT_WEBSOCKET_MAX_FPS;

use super::webrtc::{WEBRTC_JS, WHIP_PATH, WebRtcDoor};
use crate::session::{Credentials, Door, RateLimit, Sessions};

mod messages;
mod query;
mod socket;

pub use messages::jpeg_size;
pub use query::{JoinQuery, origin_allowed, parse_join_query, percent_decode};

pub const INDEX_HTML: &str = include_str!("../../../web/index.html");
/// The web client's script.
pub const APP_JS: &str = include_str!("../../../web/app.js");
/// The close code of a WebSocket replaced by a newer connection of its user in
/// its room: a client should not reconnect on it.
pub const CLOSE_REPLACED: u16 = 4000;
/// Path of the WebSocket.
pub const WS_PATH: &str = "/ws";
/// A TLS handshake or a request head must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping is sent after this long without a message from the browser...
pub(super) const PING_AFTER: Duration = Duration::from_secs(15);
/// ...and the connection is dropped after this long.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// A browser that takes longer than this to take one message (a frozen tab, a
/// dead network) is disconnected, rather than holding its connection forever.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of the browser side besides the Flow's [`StreamLimits`](crate::StreamLimits).
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Origins allowed to open the WebSocket besides the server's own; `*`: any.
    pub origins: Vec<String>,
    /// At most this many frames per second per connection.
    pub max_fps: f64,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            origins: Vec::new(),
            max_fps: DEFAULT_WEBSOCKET_MAX_FPS,
        }
    }
}

/// The browser side of one gateway.
pub(crate) struct WebSocketDoor {
    door: Door,
    options: WebOptions,
    shutdown: CancellationToken,
    tls: bool,
    webrtc: Option<Arc<WebRtcDoor>>,
}

impl WebSocketDoor {
    pub(crate) fn new(
        sessions: &Arc<Sessions>,
        options: WebOptions,
        shutdown: CancellationToken,
        tls: bool,
    ) -> Self {
        WebSocketDoor {
            door: sessions.door("connections"),
            options,
            shutdown,
            tls,
            webrtc: None,
        }
    }

    /// Also serves the WebRTC door's signalling (`/whip`) and script.
    pub(crate) fn with_webrtc(mut self, webrtc: Arc<WebRtcDoor>) -> Self {
        self.webrtc = Some(webrtc);
        self
    }

    /// Largest frame accepted: the smaller of the two message limits.
    fn frame_limit(&self) -> usize {
        let limits = self.door.sessions().limits();
        limits.max_frame_bytes.min(limits.max_message_bytes)
    }
}

/// Serves the page and the WebSocket on `listener` until the gateway's shutdown;
/// then stops accepting, answers the frames in flight, closes every WebSocket
/// with 1001 (going away) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    web: Arc<WebSocketDoor>,
) {
    let tracker = TaskTracker::new();
    loop {
        let Some((sock, peer)) = crate::conn::accept(&listener, &web.shutdown, "web").await else {
            break;
        };
        // Small messages (status, mosaics' tails) must not wait for delayed ACKs.
        let _ = sock.set_nodelay(true);
        let local = sock.local_addr().ok();
        let (web, tls, inner) = (web.clone(), tls.clone(), tracker.clone());
        tracker.spawn(async move {
            match tls {
                None => serve_connection(sock, peer, local, web, inner).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => serve_connection(s, peer, local, web, inner).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    web: Arc<WebSocketDoor>,
    tracker: TaskTracker,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let web = web.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let path = req.uri().path();
            let whip = path == WHIP_PATH || path.starts_with(&format!("{WHIP_PATH}/"));
            let response: BoxFuture<'static, Response<Body>> = match web.webrtc.clone() {
                Some(webrtc) if whip => {
                    async move { webrtc.handle(req, peer, local).await }.boxed()
                }
                _ => futures::future::ready(web.handle(req, peer, &tracker)).boxed(),
            };
            async move { Ok::<_, Infallible>(response.await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection failed");
            }
        }
        _ = web.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

type Body = Full<Bytes>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut text = body.into();
    text.push('\n');
    respond(status, "text/plain; charset=utf-8", text)
}

impl WebSocketDoor {
    fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        tracker: &TaskTracker,
    ) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/" | "/index.html" => {
                let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
                let h = r.headers_mut();
                // The page loads its script and opens its WebSocket from this origin
                // only; 'self' in connect-src covers ws:// and wss:// of it.
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                         img-src 'self' blob: data:; media-src 'self' blob: mediastream:; \
                         connect-src 'self'; frame-ancestors 'none'",
                    ),
                );
                h.insert(
                    "permissions-policy",
                    HeaderValue::from_static("camera=(self), microphone=()"),
                );
                r
            }
            "/app.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
            "/webrtc.js" => respond(StatusCode::OK, "text/javascript; charset=utf-8", WEBRTC_JS),
            WS_PATH => self.upgrade(req, peer, tracker),
            _ => plain(
                StatusCode::NOT_FOUND,
                format!("no such page: open / for the web client, or {WS_PATH} for the WebSocket"),
            ),
        }
    }

    /// The WebSocket handshake: checks, then hands the connection to
    /// [`WebSocketDoor::run_socket`].
    fn upgrade(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        tracker: &TaskTracker,
    ) -> Response<Body> {
        let headers = req.headers();
        let has_token = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
            let mut r = plain(
                StatusCode::UPGRADE_REQUIRED,
                format!("{WS_PATH} is a WebSocket: connect with ws:// or wss://"),
            );
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            return r;
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            let mut r = plain(
                StatusCode::BAD_REQUEST,
                "only WebSocket version 13 is served",
            );
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return r;
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let accept = derive_accept_key(key.as_bytes());
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let scheme = if self.tls { "https" } else { "http" };
        if !origin_allowed(origin, host, scheme, &self.options.origins) {
            let origin = origin.unwrap_or_default().to_string();
            tracing::warn!(%peer, origin, "WebSocket refused: origin not allowed");
            return plain(
                StatusCode::FORBIDDEN,
                format!(
                    "origin {origin} may not open this WebSocket: only pages served by this \
                     gateway, or origins listed in with.websocket_origins"
                ),
            );
        }
        let mut who = match parse_join_query(req.uri().query().unwrap_or("")) {
            Ok(w) => w,
            Err(m) => return plain(StatusCode::BAD_REQUEST, m),
        };
        let rate = RateLimit::per_second(self.options.max_fps)
            .or_else(|| RateLimit::per_second(DEFAULT_WEBSOCKET_MAX_FPS));
        let creds = Credentials {
            token: who.token.take(),
            user: who.user.clone(),
            room: who.room.clone(),
        };
        let session = match self.door.open(Some(peer.ip()), creds, rate) {
            Ok(session) => session,
            Err(refused) => return plain(refused.http_status(), refused.to_string()),
        };
        if let Some(g) = session.seat().grant() {
            who.user = Some(g.identity.clone());
            who.room = Some(g.room.clone());
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let web = self.clone();
        tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let hard = web.hard_limit();
                    let config = WebSocketConfig::default()
                        .max_message_size(Some(hard))
                        .max_frame_size(Some(hard));
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    web.run_socket(ws, who, peer, session).await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        r
    }

    /// The size over which a message ends the connection instead of being
    /// answered with an error (as tonic's own limit does for gRPC).
    fn hard_limit(&self) -> usize {
        let limit = self.frame_limit();
        limit.saturating_mul(2).max(limit.saturating_add(16 << 20))
    }
}
