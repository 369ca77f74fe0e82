//! One WebSocket connection: its frames through the Flow, in order, until
//! either side closes or the gateway shuts down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use super::messages::{self, ENDPOINT, frame_request, reply_messages};
use super::query::JoinQuery;
use super::{CLOSE_REPLACED, PING_AFTER, SEND_TIMEOUT, SILENCE_LIMIT, WebSocketDoor};
use crate::session::{Session, frame_too_large};

impl WebSocketDoor {
    /// Streams one connection's frames through the Flow until either side closes
    /// or the gateway shuts down.
    pub(super) async fn run_socket<S>(
        self: Arc<Self>,
        ws: WebSocketStream<S>,
        who: JoinQuery,
        peer: SocketAddr,
        session: Session,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let session = Arc::new(session);
        let id = session.id();
        let replaced = session.seat().replaced();
        tokio::pin!(replaced);
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
            "version": crate::server::VERSION,
        });
        if sink.send(Message::text(hello.to_string())).await.is_err() {
            return;
        }
        let limits = *session.limits();
        let prefetch = limits.prefetch.max(1);
        let mut seq = 0u64;
        let mut inflight: FuturesOrdered<BoxFuture<'static, Vec<Message>>> = FuturesOrdered::new();
        let mut reading = true;
        let mut close: Option<CloseFrame> = None;
        let mut last_heard = Instant::now();
        // Only frames (and their replies) keep a connection from being idle:
        // a client that just answers pings holds a slot without using it.
        let idle_limit = limits.stream_idle_timeout;
        let mut ticker = tokio::time::interval(PING_AFTER / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !reading && inflight.is_empty() {
                break;
            }
            let idle_at = session.activity().idle_deadline(idle_limit);
            tokio::select! {
                Some(out) = inflight.next(), if !inflight.is_empty() => {
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
                            seq += 1;
                            let in_flight = session.activity().begin();
                            let reply = if session.admit_frame() {
                                let (session, who) = (session.clone(), who.clone());
                                let limit = self.frame_limit();
                                async move {
                                    let out = answer_frame(&session, data, seq, &who, limit).await;
                                    drop(in_flight);
                                    out
                                }
                                .boxed()
                            } else {
                                drop(in_flight);
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
                _ = tokio::time::sleep_until(idle_at.unwrap_or_else(tokio::time::Instant::now)), if reading && inflight.is_empty() && idle_at.is_some() => {
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
                        reason: session.seat().replaced_reason().into(),
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
        // The closing handshake: our Close, then the browser's. Frames it sent
        // meanwhile are read and dropped: a socket closed with data unread is
        // reset, and a browser that had not read our Close yet would lose it
        // (and its code and reason) to the reset, seeing 1006.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = sink.send(Message::Close(Some(frame))).await;
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
            let _ = sink.close().await;
        })
        .await;
    }
}

/// The reply to frame `seq` of a stream: processed through the Flow, or an
/// error when it is no JPEG or over `limit` bytes.
async fn answer_frame(
    session: &Session,
    data: Bytes,
    seq: u64,
    who: &JoinQuery,
    limit: usize,
) -> Vec<Message> {
    let started = Instant::now();
    let size_in = data.len();
    let error = |text: String| messages::text(json!({"type": "error", "seq": seq, "error": text}));
    let bad = if let Some(m) = frame_too_large(size_in, limit) {
        Some(m)
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
        session.record(ENDPOINT, started, true, size_in, n);
        return out;
    }
    let reply = session.process(frame_request(data, who)).await;
    let server_ms = started.elapsed().as_secs_f64() * 1e3;
    let (out, failed, size_out) = reply_messages(reply, seq, server_ms);
    match out {
        Ok(out) => {
            session.record(ENDPOINT, started, failed, size_in, size_out);
            out
        }
        Err(text) => {
            let (out, n) = error(text);
            session.record(ENDPOINT, started, true, size_in, n);
            out
        }
    }
}
