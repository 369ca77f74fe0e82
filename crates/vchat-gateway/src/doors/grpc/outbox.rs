//! The responses of one `Call` stream on their way to the socket.
//!
//! Left to itself, hyper polls a response body only while the stream has
//! HTTP/2 window to send: a peer that stops reading (or never opens its window)
//! parks the body, and with it the stream's requests in flight, its slot and its
//! room, for as long as the connection lives. Here a task of the stream's own
//! produces the responses into a queue bounded in bytes, and the body only takes
//! from it:
//!
//! - past `max_stream_queue_bytes` waiting, no further response is produced
//!   (nor request read) until the peer takes some: backpressure, never growth;
//! - when the peer takes nothing of a waiting queue for `send_timeout`, the
//!   stream ends (its slot is free at once) and the peer's connection is closed:
//!   hyper offers no way to reset one stream whose body it is not polling, and
//!   a connection that will not drain would otherwise keep the stream's buffers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::body::Frame;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::http::HeaderMap;
use vchat_core::budget::Held;
use vchat_core::proto::WireReply;

use crate::conn::{later, seconds};

struct State {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// `bytes` in the process's memory budget (`max_memory_mb`).
    held: Held,
    /// The status the stream ends with, once every chunk is taken.
    end: Option<Status>,
    /// When the peer last took a chunk, or the queue last became non-empty.
    last_progress: Instant,
    body: Option<Waker>,
    body_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    producer: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Limits of one stream's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) max_bytes: usize,
    pub(crate) send_timeout: Duration,
}

/// The body of a `Call` response whose messages `responses` yields; `close`
/// closes the stream's connection (see the module's documentation).
pub(crate) fn body<S>(
    responses: S,
    limits: QueueLimits,
    close: Option<CancellationToken>,
) -> OutboxBody
where
    S: Stream<Item = Result<WireReply, Status>> + Send + Unpin + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            bytes: 0,
            held: vchat_core::budget::global().hold(0),
            end: None,
            last_progress: Instant::now(),
            body: None,
            body_gone: false,
        }),
        producer: Notify::new(),
    });
    tokio::spawn(produce(responses, shared.clone(), limits, close));
    OutboxBody {
        shared,
        done: false,
    }
}

async fn produce<S>(
    mut responses: S,
    shared: Arc<Shared>,
    limits: QueueLimits,
    close: Option<CancellationToken>,
) where
    S: Stream<Item = Result<WireReply, Status>> + Unpin,
{
    let far = || later(Instant::now(), Duration::from_secs(86400 * 365));
    let (end, discard) = loop {
        // Made before the state is read, so that a chunk taken in between still
        // wakes this loop.
        let taken = shared.producer.notified();
        let (room, deadline) = {
            let st = shared.lock();
            if st.body_gone {
                // The peer reset the stream or the connection is gone.
                return;
            }
            let waiting = !st.chunks.is_empty();
            (
                st.bytes < limits.max_bytes,
                waiting.then(|| later(st.last_progress, limits.send_timeout)),
            )
        };
        tokio::select! {
            item = responses.next(), if room => {
                let end = match item {
                    Some(Ok(msg)) => match msg.encode() {
                        Ok(chunks) => {
                            let mut st = shared.lock();
                            if st.chunks.is_empty() {
                                st.last_progress = Instant::now();
                            }
                            for c in chunks {
                                st.bytes += c.len();
                                st.chunks.push_back(c);
                            }
                            let bytes = st.bytes;
                            st.held.set(bytes);
                            if let Some(w) = st.body.take() {
                                w.wake();
                            }
                            continue;
                        }
                        Err(status) => status,
                    },
                    Some(Err(status)) => status,
                    None => Status::ok(""),
                };
                break (end, false);
            }
            _ = taken => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() => {
                let stalled = {
                    let st = shared.lock();
                    !st.chunks.is_empty()
                        && later(st.last_progress, limits.send_timeout) <= Instant::now()
                };
                if stalled {
                    let wait = seconds(limits.send_timeout);
                    tracing::info!(send_timeout_s = %wait, "Peer not reading its responses; dropping it");
                    break (
                        Status::deadline_exceeded(format!(
                            "the client took no response for {wait} s (send_timeout_s)"
                        )),
                        true,
                    );
                }
            }
        }
    };
    // The stream's slot is given back before the peer can see the end: a client
    // that opens its next stream as soon as this one ends finds it free.
    drop(responses);
    finish(&shared, end, discard);
    if discard && let Some(close) = &close {
        close.cancel();
    }
}

/// Ends the stream with `status` after the chunks waiting (or instead of them,
/// with `discard`).
fn finish(shared: &Shared, status: Status, discard: bool) {
    let mut st = shared.lock();
    if discard {
        st.chunks.clear();
        st.bytes = 0;
        st.held.set(0);
    }
    st.end = Some(status);
    if let Some(w) = st.body.take() {
        w.wake();
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from_static("13"),
        );
    }
    map
}

/// The HTTP body of one `Call` response: the queue's chunks, then trailers.
pub(crate) struct OutboxBody {
    shared: Arc<Shared>,
    done: bool,
}

impl hyper::body::Body for OutboxBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut st = self.shared.lock();
        if let Some(chunk) = st.chunks.pop_front() {
            st.bytes -= chunk.len();
            let bytes = st.bytes;
            st.held.set(bytes);
            st.last_progress = Instant::now();
            drop(st);
            self.shared.producer.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(status) = st.end.take() {
            drop(st);
            self.done = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
        }
        st.body = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        self.shared.lock().body_gone = true;
        self.shared.producer.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn response(n: usize) -> Result<WireReply, Status> {
        Ok(WireReply::from(vchat_proto::DataRequestProto {
            header: Some(vchat_proto::HeaderProto {
                request_id: "x".repeat(n),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn responses_then_trailers() {
        let items = futures::stream::iter(vec![response(10), response(20)]);
        let limits = QueueLimits {
            max_bytes: 1 << 20,
            send_timeout: Duration::from_secs(5),
        };
        let collected = body(items, limits, None).collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert!(collected.to_bytes().len() > 30);
    }

    #[tokio::test]
    async fn a_full_queue_stops_production() {
        let produced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = produced.clone();
        let items = futures::stream::iter(0..1000).map(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            response(1000)
        });
        let limits = QueueLimits {
            max_bytes: 10_000,
            send_timeout: Duration::from_secs(60),
        };
        let mut b = body(items, limits, None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = produced.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (10..=12).contains(&n),
            "{n} produced with room for about 10"
        );
        // Taking one lets one more be produced.
        let _ = b.frame().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(produced.load(std::sync::atomic::Ordering::SeqCst) > n);
    }

    #[tokio::test]
    async fn a_peer_that_takes_nothing_is_dropped() {
        let items = futures::stream::iter(0..100).map(|_| response(1000));
        let close = CancellationToken::new();
        let limits = QueueLimits {
            max_bytes: 10_000,
            send_timeout: Duration::from_millis(300),
        };
        let mut b = body(items, limits, Some(close.clone()));
        tokio::time::timeout(Duration::from_secs(10), close.cancelled())
            .await
            .expect("the connection is closed");
        // The chunks were dropped; the stream ends with the status.
        let frame = b.frame().await.unwrap().unwrap();
        let trailers = frame.into_trailers().unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "4");
        let message = trailers.get("grpc-message").unwrap().to_str().unwrap();
        assert!(message.contains("send_timeout_s"), "{message}");
    }
}
