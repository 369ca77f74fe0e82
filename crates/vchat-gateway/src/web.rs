//! The browser side of a Flow (`with: {protocol: [grpc, websocket]}`): a
//! single-page web client and the WebSocket it streams over, on their own port
//! (`port_http`), over TLS when the Flow has a certificate.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the web client (`web/index.html` and `web/app.js`, built into the binary) |
//! | `GET /ws?user=NAME&room=ROOM` | the WebSocket; `room` is optional (the shared room) |
//! | `GET /ws?access_token=TOKEN` | the WebSocket of a Flow with `with.auth`: user and room are the token's |
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
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vchat_core::config::DEFAULT_WEBSOCKET_MAX_FPS;
use vchat_core::jpeg::{self, MIME_JPEG};
use vchat_core::value::Kind;
use vchat_core::{Content, Document, StreamId};
use vchat_proto::jina::data_request_proto::DataContentProto;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::jina::status_proto::StatusCode as JinaStatus;
use vchat_proto::{DataRequestProto, DocumentArrayProto, HeaderProto};

use crate::call::{CallLimits, StreamIds};
use crate::flow::{FlowRuntime, SKIPPED_PARAMETER};
use crate::gate::{Admitted, Refused, StreamGate};
use crate::metrics::Metrics;
use crate::server::GatewayError;

/// The web client's page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");
/// The web client's script.
pub const APP_JS: &str = include_str!("../web/app.js");
/// The close code of a WebSocket replaced by a newer connection of its user in
/// its room: a client should not reconnect on it.
pub const CLOSE_REPLACED: u16 = 4000;
/// Path of the WebSocket.
pub const WS_PATH: &str = "/ws";
/// Endpoint every browser frame is sent to, and the latency metric's label.
const ENDPOINT: &str = "/";
/// JPEG quality of a mosaic the Flow answered as raw pixels.
const JPEG_QUALITY: u8 = 80;
/// A TLS handshake or a request head must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping is sent after this long without a message from the browser...
const PING_AFTER: Duration = Duration::from_secs(15);
/// ...and the connection is dropped after this long.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// A browser that takes longer than this to take one message (a frozen tab, a
/// dead network) is disconnected, rather than holding its connection forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest user or room name, in bytes: the same on every door.
const MAX_NAME_BYTES: usize = vchat_core::MAX_NAME_BYTES;

/// Settings of the browser side besides the Flow's [`CallLimits`].
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

/// A TLS acceptor for the PEM certificate chain and key (the Flow's
/// `ssl_certfile` and `ssl_keyfile`), speaking HTTP/1.1.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, GatewayError> {
    tls_acceptor_for(cert_pem, key_pem, b"http/1.1")
}

/// A TLS acceptor for the PEM certificate chain and key that offers `alpn`
/// (`h2` on the gRPC port).
pub(crate) fn tls_acceptor_for(
    cert_pem: &[u8],
    key_pem: &[u8],
    alpn: &[u8],
) -> Result<TlsAcceptor, GatewayError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| GatewayError::Tls(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| GatewayError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The browser side of one gateway.
pub(crate) struct Web {
    flow: Arc<FlowRuntime>,
    limits: CallLimits,
    options: WebOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tls: bool,
    stream_ids: StreamIds,
    gate: StreamGate,
}

impl Web {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        flow: Arc<FlowRuntime>,
        limits: CallLimits,
        options: WebOptions,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tls: bool,
        stream_ids: StreamIds,
        access: Arc<crate::access::Access>,
    ) -> Self {
        Web {
            flow,
            gate: StreamGate::new(
                limits.max_streams,
                limits.max_streams_per_ip,
                metrics.clone(),
                access,
                "connections",
            ),
            limits,
            options,
            metrics,
            shutdown,
            tls,
            stream_ids,
        }
    }

    /// Largest frame accepted: the smaller of the two message limits.
    fn frame_limit(&self) -> usize {
        self.limits
            .max_frame_bytes
            .min(self.limits.max_message_bytes)
    }
}

/// Serves the page and the WebSocket on `listener` until the gateway's shutdown;
/// then stops accepting, answers the frames in flight, closes every WebSocket
/// with 1001 (going away) and returns.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, web: Arc<Web>) {
    let tracker = TaskTracker::new();
    loop {
        let Some((sock, peer)) = crate::conn::accept(&listener, &web.shutdown, "web").await else {
            break;
        };
        // Small messages (status, mosaics' tails) must not wait for delayed ACKs.
        let _ = sock.set_nodelay(true);
        let (web, tls, inner) = (web.clone(), tls.clone(), tracker.clone());
        tracker.spawn(async move {
            match tls {
                None => serve_connection(sock, peer, web, inner).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => serve_connection(s, peer, web, inner).await,
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

async fn serve_connection<I>(io: I, peer: SocketAddr, web: Arc<Web>, tracker: TaskTracker)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let web = web.clone();
        hyper::service::service_fn(move |req| {
            let response = web.handle(req, peer, &tracker);
            async move { Ok::<_, Infallible>(response) }
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

/// Who a WebSocket streams as, from its query string.
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// `user`, trimmed, at most 128 bytes.
    pub user: Option<String>,
    /// `room`, trimmed, at most 128 bytes.
    pub room: Option<String>,
    /// `access_token`, at most [`vchat_auth::MAX_TOKEN_BYTES`].
    pub token: Option<String>,
}

impl Web {
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
            WS_PATH => self.upgrade(req, peer, tracker),
            _ => plain(
                StatusCode::NOT_FOUND,
                format!("no such page: open / for the web client, or {WS_PATH} for the WebSocket"),
            ),
        }
    }

    /// The WebSocket handshake: checks, then hands the connection to
    /// [`Web::run_socket`].
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
        let mut who = match parse_who(req.uri().query().unwrap_or("")) {
            Ok(w) => w,
            Err(m) => return plain(StatusCode::BAD_REQUEST, m),
        };
        let creds = crate::access::Credentials {
            token: who.token.take(),
            user: who.user.clone(),
            room: who.room.clone(),
        };
        let admitted = match self.gate.admit(Some(peer.ip()), creds) {
            Ok(admitted) => admitted,
            Err(refused) => {
                let code = match &refused {
                    Refused::PerIp(_) => StatusCode::TOO_MANY_REQUESTS,
                    Refused::Memory(_) | Refused::Streams(_) => StatusCode::SERVICE_UNAVAILABLE,
                    Refused::Auth(e) => match e.denial() {
                        vchat_auth::Denial::Unauthenticated => StatusCode::UNAUTHORIZED,
                        vchat_auth::Denial::PermissionDenied => StatusCode::FORBIDDEN,
                    },
                };
                return plain(code, refused.to_string());
            }
        };
        if let Some(g) = admitted.seat.grant() {
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
                    web.run_socket(ws, who, peer, admitted).await;
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

    /// Streams one connection's frames through the Flow until either side closes
    /// or the gateway shuts down.
    async fn run_socket<S>(
        self: Arc<Self>,
        ws: WebSocketStream<S>,
        who: Who,
        peer: SocketAddr,
        admitted: Admitted,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.stream_ids.next();
        let seat = admitted.seat.clone();
        let replaced = seat.replaced();
        tokio::pin!(replaced);
        self.metrics.stream_delta(1);
        let _leave = Leave {
            flow: self.flow.clone(),
            metrics: self.metrics.clone(),
            id,
        };
        let who = Arc::new(who);
        tracing::info!(
            stream = id.0,
            %peer,
            user = who.user.as_deref().unwrap_or(""),
            room = who.room.as_deref().unwrap_or(""),
            "WebSocket opened"
        );
        let (mut sink, mut stream) = ws.split();
        let hello = json!({
            "type": "hello",
            "user": who.user,
            "room": who.room,
            "max_fps": self.options.max_fps,
            "max_frame_bytes": self.frame_limit(),
            "version": crate::VERSION,
        });
        if sink.send(Message::text(hello.to_string())).await.is_err() {
            return;
        }
        let prefetch = self.limits.prefetch.max(1);
        let mut bucket = Bucket::new(self.options.max_fps);
        let mut seq = 0u64;
        let mut inflight: FuturesOrdered<BoxFuture<'static, Vec<Message>>> = FuturesOrdered::new();
        let mut reading = true;
        let mut close: Option<CloseFrame> = None;
        let mut last_heard = Instant::now();
        // Only frames (and their replies) keep a connection from being idle:
        // a client that just answers pings holds a slot without using it.
        let idle_limit = self.limits.stream_idle_timeout;
        let mut active = Instant::now();
        let mut ticker = tokio::time::interval(PING_AFTER / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !reading && inflight.is_empty() {
                break;
            }
            tokio::select! {
                Some(out) = inflight.next(), if !inflight.is_empty() => {
                    active = Instant::now();
                    for m in out {
                        match tokio::time::timeout(SEND_TIMEOUT, sink.send(m)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return,
                            Err(_) => {
                                tracing::info!(stream = id.0, "WebSocket not reading; closing");
                                return;
                            }
                        }
                    }
                }
                msg = stream.next(), if reading && inflight.len() < prefetch => {
                    last_heard = Instant::now();
                    match msg {
                        Some(Ok(Message::Binary(data))) => {
                            active = Instant::now();
                            seq += 1;
                            let reply = if bucket.take(Instant::now()) {
                                self.clone().frame(data, seq, who.clone(), id, seat.clone()).boxed()
                            } else {
                                self.metrics.frame_skipped();
                                let m = json!({
                                    "type": "rate_limited",
                                    "seq": seq,
                                    "max_fps": self.options.max_fps,
                                });
                                futures::future::ready(vec![Message::text(m.to_string())]).boxed()
                            };
                            inflight.push_back(reply);
                        }
                        Some(Ok(Message::Text(_))) => {
                            let m = json!({
                                "type": "error",
                                "error": "send each frame as a binary message holding one JPEG; \
                                          text messages are not read",
                            });
                            inflight.push_back(
                                futures::future::ready(vec![Message::text(m.to_string())]).boxed(),
                            );
                        }
                        Some(Ok(Message::Close(_))) | None => reading = false,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            reading = false;
                            tracing::debug!(stream = id.0, error = %e, "WebSocket read failed");
                            if let WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) = e {
                                close = Some(CloseFrame {
                                    code: CloseCode::Size,
                                    reason: format!(
                                        "message of {size} bytes is far over the limit of {} bytes",
                                        max_size.min(self.frame_limit())
                                    )
                                    .into(),
                                });
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(crate::conn::later(active.into(), idle_limit)), if reading && inflight.is_empty() => {
                    let s = crate::conn::seconds(idle_limit);
                    tracing::info!(stream = id.0, stream_idle_timeout_s = %s, "WebSocket idle; closing");
                    reading = false;
                    close = Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: format!("no frame for {s} s (stream_idle_timeout_s)").into(),
                    });
                }
                _ = &mut replaced, if reading => {
                    reading = false;
                    close = Some(CloseFrame {
                        code: CloseCode::Library(CLOSE_REPLACED),
                        reason: seat.replaced_reason().into(),
                    });
                }
                _ = self.shutdown.cancelled(), if reading => {
                    reading = false;
                    close = Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "the server is shutting down".into(),
                    });
                }
                _ = ticker.tick() => {
                    let quiet = last_heard.elapsed();
                    if quiet >= SILENCE_LIMIT {
                        tracing::info!(stream = id.0, "WebSocket silent too long; closing");
                        return;
                    }
                    if quiet >= PING_AFTER {
                        let ping = sink.send(Message::Ping(Bytes::new()));
                        if !matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(()))) {
                            return;
                        }
                    }
                }
            }
        }
        let frame = close.unwrap_or(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.close().await;
        })
        .await;
    }

    /// The reply to frame `seq` of stream `id`: processed through the Flow, or an
    /// error when it is no JPEG or too large.
    async fn frame(
        self: Arc<Self>,
        data: Bytes,
        seq: u64,
        who: Arc<Who>,
        id: StreamId,
        seat: Arc<crate::access::Seat>,
    ) -> Vec<Message> {
        let started = Instant::now();
        let size_in = data.len();
        let limit = self.frame_limit();
        let error = |text: String| {
            let m = json!({"type": "error", "seq": seq, "error": text}).to_string();
            let n = m.len();
            (vec![Message::text(m)], n)
        };
        let bad = if size_in > limit {
            Some(format!(
                "a frame of {size_in} bytes is over the limit of {limit} bytes (max_frame_bytes)"
            ))
        } else if !data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            let head: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
            Some(format!(
                "not a JPEG: each binary message must be one JPEG image (it starts with ff d8 ff), \
                 got {size_in} bytes starting with [{}]",
                head.join(" ")
            ))
        } else {
            None
        };
        if let Some(text) = bad {
            let (out, n) = error(text);
            self.metrics
                .request(ENDPOINT, started.elapsed(), true, size_in, n);
            return out;
        }
        let mut req = request(data, &who);
        if let Err(text) = seat.check(&mut req) {
            let (out, n) = error(text);
            self.metrics
                .request(ENDPOINT, started.elapsed(), true, size_in, n);
            return out;
        }
        let mut resp = self.flow.process(req, id).await;
        seat.reply(&mut resp);
        let server_ms = started.elapsed().as_secs_f64() * 1e3;
        let (out, failed, size_out) = reply(resp, seq, server_ms);
        match out {
            Ok(out) => {
                self.metrics
                    .request(ENDPOINT, started.elapsed(), failed, size_in, size_out);
                out
            }
            Err(text) => {
                let (out, n) = error(text);
                self.metrics
                    .request(ENDPOINT, started.elapsed(), true, size_in, n);
                out
            }
        }
    }
}

/// The request of one browser frame: the JPEG as a document's blob, tagged with
/// the connection's user and room, asking for a JPEG answer.
fn request(jpeg: Bytes, who: &Who) -> DataRequestProto {
    let mut doc = Document::new();
    doc.content = Some(Content::Blob(jpeg));
    doc.mime_type = MIME_JPEG.to_string();
    if let Some(u) = &who.user {
        doc.set_tag_str("user", u.clone());
    }
    if let Some(r) = &who.room {
        doc.set_tag_str("room", r.clone());
    }
    doc.set_tag_str("accept", "jpeg");
    DataRequestProto {
        header: Some(HeaderProto {
            request_id: vchat_core::new_id(),
            exec_endpoint: Some(ENDPOINT.to_string()),
            ..Default::default()
        }),
        data: Some(DataContentProto {
            documents: Some(Documents::Docs(DocumentArrayProto {
                docs: vec![doc.into_proto()],
            })),
        }),
        ..Default::default()
    }
}

/// The messages answering frame `seq` from the Flow's response, whether it
/// failed, and their size; `Err` with a description when the response carries
/// an unusable frame.
#[allow(clippy::type_complexity)]
fn reply(
    resp: DataRequestProto,
    seq: u64,
    server_ms: f64,
) -> (Result<Vec<Message>, String>, bool, usize) {
    let status = resp.header.as_ref().and_then(|h| h.status.as_ref());
    if let Some(s) = status
        && s.code == JinaStatus::Error as i32
    {
        let m = json!({"type": "error", "seq": seq, "error": s.description}).to_string();
        let n = m.len();
        return (Ok(vec![Message::text(m)]), true, n);
    }
    if resp
        .parameters
        .as_ref()
        .is_some_and(|p| p.fields.contains_key(SKIPPED_PARAMETER))
    {
        let m = json!({"type": "skipped", "seq": seq}).to_string();
        let n = m.len();
        return (Ok(vec![Message::text(m)]), false, n);
    }
    let doc = match resp.data.and_then(|d| d.documents) {
        Some(Documents::Docs(da)) => da.docs.into_iter().next().map(Document::from_proto),
        _ => None,
    };
    let doc = match doc {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return (
                Err(format!("the Flow answered an unusable document: {e}")),
                true,
                0,
            );
        }
        None => {
            let m =
                json!({"type": "ack", "seq": seq, "tags": {}, "server_ms": server_ms}).to_string();
            let n = m.len();
            return (Ok(vec![Message::text(m)]), false, n);
        }
    };
    let tags = Json::Object(
        doc.tags
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    );
    let participants = tags.get("participants").cloned().unwrap_or(Json::Null);
    let image = match &doc.content {
        Some(Content::Blob(b)) if jpeg::is_jpeg(&doc) => Some(Ok(b.clone())),
        Some(Content::Tensor(t)) => Some(
            t.frame_dims()
                .map_err(|m| format!("the Flow answered a tensor that is no frame: {m}"))
                .and_then(|(h, w)| {
                    jpeg::encode_bgr(t.data(), h, w, JPEG_QUALITY).map_err(|e| e.to_string())
                }),
        ),
        _ => None,
    };
    match image {
        None => {
            let m = json!({"type": "ack", "seq": seq, "tags": tags, "server_ms": server_ms})
                .to_string();
            let n = m.len();
            (Ok(vec![Message::text(m)]), false, n)
        }
        Some(Err(e)) => (Err(e), true, 0),
        Some(Ok(jpeg)) => {
            let (width, height) = jpeg_size(&jpeg).unwrap_or((0, 0));
            let m = json!({
                "type": "mosaic",
                "seq": seq,
                "width": width,
                "height": height,
                "participants": participants,
                "tags": tags,
                "server_ms": server_ms,
            })
            .to_string();
            let n = m.len() + jpeg.len();
            (Ok(vec![Message::text(m), Message::Binary(jpeg)]), false, n)
        }
    }
}

/// A protobuf `Value` as JSON.
fn to_json(v: &vchat_core::Value) -> Json {
    match v.kind.as_ref() {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(to_json).collect()),
    }
}

/// `(width, height)` from a JPEG's frame header (SOFn), without decoding it.
pub fn jpeg_size(data: &[u8]) -> Option<(u16, u16)> {
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return None;
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        let is_sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let s = data.get(i + 5..i + 9)?;
            return Some((
                u16::from_be_bytes([s[2], s[3]]),
                u16::from_be_bytes([s[0], s[1]]),
            ));
        }
        i += 2 + len;
    }
    None
}

/// Tells the Flow that a WebSocket's stream ended, however it ended.
struct Leave {
    flow: Arc<FlowRuntime>,
    metrics: Arc<Metrics>,
    id: StreamId,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.metrics.stream_delta(-1);
        let (flow, id) = (self.flow.clone(), self.id);
        tracing::info!(stream = id.0, "WebSocket closed");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { flow.stream_closed(id).await });
        }
    }
}

/// A token bucket: `rate` frames per second on average, bursts of one second's
/// worth (at least one frame).
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            DEFAULT_WEBSOCKET_MAX_FPS
        };
        let capacity = rate.max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes one frame's token at `now`; false when there is none.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a page of `origin` may open the WebSocket of a server reached as
/// `host` over `scheme`: its own origin, an allowed one, or no origin at all
/// (a client that is not a browser).
pub fn origin_allowed(
    origin: Option<&str>,
    host: Option<&str>,
    scheme: &str,
    allowed: &[String],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    match (origin.split_once("://"), host) {
        (Some((s, authority)), Some(host)) => {
            s.eq_ignore_ascii_case(scheme) && authority.eq_ignore_ascii_case(host.trim())
        }
        _ => false,
    }
}

/// `user` and `room` of a query string (`application/x-www-form-urlencoded`).
pub fn parse_who(query: &str) -> Result<Who, String> {
    let mut who = Who::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(v).ok_or_else(|| format!("`{k}` is not valid UTF-8 once decoded"))?;
        let max = if k == "access_token" {
            vchat_auth::MAX_TOKEN_BYTES
        } else {
            MAX_NAME_BYTES
        };
        if value.len() > max {
            return Err(format!("`{k}` is longer than {max} bytes"));
        }
        let value = value.trim().to_string();
        match k {
            "access_token" if !value.is_empty() => who.token = Some(value),
            "user" if !value.is_empty() => who.user = Some(value),
            "room" if !value.is_empty() => who.room = Some(value),
            _ => {}
        }
    }
    Ok(who)
}

/// Form decoding (`%XX`, `+` for a space) of a query string's value; `None`
/// when the bytes it stands for are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Two hex digits exactly: `from_str_radix` alone would also take a sign
        // (`%+a` is `%`, a space and `a`, not byte 0x0a).
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: Vec<String> = Vec::new();
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed(None, host, "http", &none));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8080"),
            host,
            "http",
            &none
        ));
        assert!(!origin_allowed(
            Some("https://127.0.0.1:8080"),
            host,
            "http",
            &none
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            host,
            "http",
            &none
        ));
        assert!(!origin_allowed(Some("null"), host, "http", &none));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:8080"),
            None,
            "http",
            &none
        ));
        let listed = vec!["https://chat.example.org/".to_string()];
        assert!(origin_allowed(
            Some("https://chat.example.org"),
            host,
            "http",
            &listed
        ));
        assert!(!origin_allowed(
            Some("https://other.example.org"),
            host,
            "http",
            &listed
        ));
        let any = vec!["*".to_string()];
        assert!(origin_allowed(
            Some("http://evil.example"),
            host,
            "http",
            &any
        ));
    }

    #[test]
    fn query() {
        let w = parse_who("user=ann%20b&room=r+1&x=9").unwrap();
        assert_eq!(w.user.as_deref(), Some("ann b"));
        assert_eq!(w.room.as_deref(), Some("r 1"));
        let w = parse_who("room=&user=").unwrap();
        assert!(w.user.is_none() && w.room.is_none());
        assert!(parse_who("user=%ff").is_err());
        assert!(parse_who(&format!("user={}", "a".repeat(200))).is_err());
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("✓"));
    }

    #[test]
    fn bucket_allows_a_second_then_the_rate() {
        let mut b = Bucket::new(2.0);
        let t = Instant::now();
        assert!(b.take(t));
        assert!(b.take(t));
        assert!(!b.take(t));
        assert!(!b.take(t + Duration::from_millis(400)));
        assert!(b.take(t + Duration::from_millis(600)));
        assert!(!b.take(t + Duration::from_millis(700)));
    }

    #[test]
    fn jpeg_size_reads_the_frame_header() {
        let px = vec![128u8; 24 * 40 * 3];
        let j = jpeg::encode_bgr(&px, 24, 40, 80).unwrap();
        assert_eq!(jpeg_size(&j), Some((40, 24)));
        assert_eq!(jpeg_size(b"\xff\xd8\xff"), None);
        assert_eq!(jpeg_size(b"not a jpeg"), None);
    }

    #[test]
    fn a_raw_mosaic_is_sent_as_jpeg_with_its_size() {
        let mut doc = Document::with_tensor(
            vchat_core::Tensor::image(8, 16, 3, Bytes::from(vec![50u8; 8 * 16 * 3])).unwrap(),
        );
        doc.set_tag("participants", vchat_core::string_value("ann"));
        let resp = DataRequestProto {
            header: Some(HeaderProto::default()),
            data: Some(DataContentProto {
                documents: Some(Documents::Docs(DocumentArrayProto {
                    docs: vec![doc.into_proto()],
                })),
            }),
            ..Default::default()
        };
        let (out, failed, _) = reply(resp, 7, 1.0);
        let out = out.unwrap();
        assert!(!failed);
        assert_eq!(out.len(), 2);
        let meta: Json = serde_json::from_str(out[0].to_text().unwrap()).unwrap();
        assert_eq!(meta["type"], "mosaic");
        assert_eq!(meta["seq"], 7);
        assert_eq!(
            (meta["width"].clone(), meta["height"].clone()),
            (json!(16), json!(8))
        );
        assert_eq!(meta["participants"], "ann");
        assert!(matches!(&out[1], Message::Binary(b) if b.starts_with(&[0xFF, 0xD8])));
    }
}
