//! The responses of one `Call` stream on their way to the socket.
//!
//! Left to itself, hyper polls a response body only while the stream has
//! HTTP/2 window to send: a peer that stops reading (or never opens its window)
//! parks the body, and with it the stream's requests in flight, its slot and its
//! room, for as long as the connection lives. Here a task of the stream's own
//! produces the responses into a queue bounded in bytes, and the body only takes
//! from it:
//!
//! - past `max_outbox_bytes` waiting, the older frames waiting are replaced by
//!   skipped replies (same request id, no documents), newest kept: a video
//!   client wants the latest mosaic, not a backlog, and each request still gets
//!   its answer in order;
//! - past `max_stream_queue_bytes` waiting (what cannot be replaced: errors,
//!   skipped replies, a response the peer has begun to take), no further
//!   response is produced (nor request read) until the peer takes some:
//!   backpressure, never growth;
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
use vchat_core::proto::{SKIPPED_PARAMETER, WireReply, bool_value, is_error, is_skipped};
use vchat_proto::DataRequestProto;
use vchat_proto::docarray::document_proto::Content;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;

use crate::conn::{later, seconds};

/// One response on its way out.
struct Entry {
    chunks: VecDeque<Bytes>,
    /// The response while it may still be replaced: a frame the peer has not
    /// begun to take. Its pixels are the same bytes as `chunks`', not a copy.
    replaceable: Option<WireReply>,
}

struct State {
    entries: VecDeque<Entry>,
    /// Encoded bytes of `entries` not yet taken.
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
    /// Past this many bytes waiting, older frames are replaced (see the module).
    pub(crate) max_frame_bytes: usize,
    pub(crate) send_timeout: Duration,
}

/// Called with the number of frames replaced by skipped replies.
pub(crate) type OnDropped = Box<dyn Fn(u64) + Send + Sync>;

/// The body of a `Call` response whose messages `responses` yields; `close`
/// closes the stream's connection (see the module's documentation).
pub(crate) fn body<S>(
    responses: S,
    limits: QueueLimits,
    close: Option<CancellationToken>,
    dropped: OnDropped,
) -> OutboxBody
where
    S: Stream<Item = Result<WireReply, Status>> + Send + Unpin + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            entries: VecDeque::new(),
            bytes: 0,
            held: vchat_core::budget::global().hold(0),
            end: None,
            last_progress: Instant::now(),
            body: None,
            body_gone: false,
        }),
        producer: Notify::new(),
    });
    tokio::spawn(produce(responses, shared.clone(), limits, close, dropped));
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
    dropped: OnDropped,
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
            let waiting = !st.entries.is_empty();
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
                            if st.entries.is_empty() {
                                st.last_progress = Instant::now();
                            }
                            let chunks = VecDeque::from(chunks);
                            st.bytes += chunks.iter().map(Bytes::len).sum::<usize>();
                            let replaceable = is_frame(msg.proto()).then_some(msg);
                            if !chunks.is_empty() {
                                st.entries.push_back(Entry { chunks, replaceable });
                            }
                            let replaced = supersede(&mut st, limits.max_frame_bytes);
                            let bytes = st.bytes;
                            st.held.set(bytes);
                            if let Some(w) = st.body.take() {
                                w.wake();
                            }
                            drop(st);
                            if replaced > 0 {
                                dropped(replaced);
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
                    !st.entries.is_empty()
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
        st.entries.clear();
        st.bytes = 0;
        st.held.set(0);
    }
    st.end = Some(status);
    if let Some(w) = st.body.take() {
        w.wake();
    }
}

/// The next chunk for the socket. A response the peer has begun to take is
/// no longer replaceable: its rest must follow. A response is gone from the
/// queue with its last chunk, so that an empty queue never counts as waiting
/// (`send_timeout`).
fn take_chunk(st: &mut State) -> Option<Bytes> {
    let entry = st.entries.front_mut()?;
    entry.replaceable = None;
    let chunk = entry.chunks.pop_front();
    if entry.chunks.is_empty() {
        st.entries.pop_front();
    }
    chunk
}

/// Whether `msg` is a frame another of the same stream may supersede: a
/// successful answer whose documents carry pixels.
fn is_frame(msg: &DataRequestProto) -> bool {
    if is_error(msg) || is_skipped(msg) {
        return false;
    }
    match msg.data.as_ref().and_then(|d| d.documents.as_ref()) {
        Some(Documents::Docs(da)) => da
            .docs
            .iter()
            .any(|d| matches!(d.content, Some(Content::Tensor(_) | Content::Blob(_)))),
        _ => false,
    }
}

/// While more than `budget` bytes wait, replaces the oldest waiting frame by a
/// skipped reply, never the newest frame; returns how many were replaced.
fn supersede(st: &mut State, budget: usize) -> u64 {
    let mut replaced = 0;
    if st.bytes <= budget {
        return 0;
    }
    let Some(newest) = st.entries.iter().rposition(|e| e.replaceable.is_some()) else {
        return 0;
    };
    for i in 0..newest {
        if st.bytes <= budget {
            break;
        }
        let entry = &mut st.entries[i];
        let Some(msg) = entry.replaceable.take() else {
            continue;
        };
        let frame = msg.proto();
        let mut skipped = DataRequestProto {
            header: frame.header.clone(),
            parameters: frame.parameters.clone(),
            routes: frame.routes.clone(),
            data: None,
        };
        skipped
            .parameters
            .get_or_insert_with(Default::default)
            .fields
            .insert(SKIPPED_PARAMETER.to_string(), bool_value(true));
        // A reply without documents encodes to a few hundred bytes; should it
        // fail, the frame goes out as it was.
        let Ok(chunks) = WireReply::from(skipped).encode() else {
            continue;
        };
        let old: usize = entry.chunks.iter().map(Bytes::len).sum();
        let new: usize = chunks.iter().map(Bytes::len).sum();
        entry.chunks = VecDeque::from(chunks);
        st.bytes = st.bytes - old + new;
        replaced += 1;
    }
    replaced
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
        if let Some(chunk) = take_chunk(&mut st) {
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
    use vchat_proto::StatusProto;

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
            max_frame_bytes: 1 << 20,
            send_timeout: Duration::from_secs(5),
        };
        let collected = body(items, limits, None, Box::new(|_| {}))
            .collect()
            .await
            .unwrap();
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
            max_frame_bytes: 10_000,
            send_timeout: Duration::from_secs(60),
        };
        let mut b = body(items, limits, None, Box::new(|_| {}));
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
            max_frame_bytes: 10_000,
            send_timeout: Duration::from_millis(300),
        };
        let mut b = body(items, limits, Some(close.clone()), Box::new(|_| {}));
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

    /// A response carrying a frame of `n` bytes, with `id` as its request id.
    fn frame(id: usize, n: usize) -> Result<WireReply, Status> {
        Ok(WireReply::from(frame_proto(id, n)))
    }

    fn frame_proto(id: usize, n: usize) -> DataRequestProto {
        let doc = vchat_proto::DocumentProto {
            content: Some(Content::Blob(Bytes::from(vec![id as u8; n]))),
            ..Default::default()
        };
        DataRequestProto {
            header: Some(vchat_proto::HeaderProto {
                request_id: id.to_string(),
                ..Default::default()
            }),
            data: Some(vchat_proto::jina::data_request_proto::DataContentProto {
                documents: Some(Documents::Docs(vchat_proto::DocumentArrayProto {
                    docs: vec![doc],
                })),
            }),
            ..Default::default()
        }
    }

    fn decode_all(mut bytes: Bytes) -> Vec<DataRequestProto> {
        use bytes::Buf;
        use prost::Message;
        let mut out = Vec::new();
        while bytes.has_remaining() {
            bytes.advance(1);
            let len = bytes.get_u32() as usize;
            out.push(DataRequestProto::decode(bytes.split_to(len)).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_newer_frame_supersedes_the_older_ones_waiting() {
        let items = futures::stream::iter((0..50).map(|i| frame(i, 10_000)));
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = dropped.clone();
        let limits = QueueLimits {
            max_bytes: 1 << 20,
            max_frame_bytes: 25_000,
            send_timeout: Duration::from_secs(60),
        };
        let b = body(
            items,
            limits,
            None,
            Box::new(move |n| {
                counted.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        // Nothing is read until every response is produced: the peer is behind.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let collected = b.collect().await.unwrap();
        let replies = decode_all(collected.to_bytes());
        // Every request is answered, in order.
        let ids: Vec<String> = replies
            .iter()
            .map(|r| r.header.as_ref().unwrap().request_id.clone())
            .collect();
        let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(ids, expected);
        let frames: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| is_frame(r))
            .map(|(i, _)| i)
            .collect();
        // The newest frames are the ones sent, within the budget.
        assert!(frames.contains(&49), "{frames:?}");
        assert!(frames.len() <= 3, "{frames:?}");
        let skipped = replies.iter().filter(|r| is_skipped(r)).count();
        assert_eq!(skipped + frames.len(), 50);
        assert_eq!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            skipped as u64
        );
    }

    #[tokio::test]
    async fn errors_are_never_replaced() {
        let items = futures::stream::iter((0..20).map(|i| {
            if i % 2 == 0 {
                frame(i, 10_000)
            } else {
                let mut r = frame_proto(i, 10_000);
                r.header.as_mut().unwrap().status = Some(StatusProto {
                    code: vchat_proto::jina::status_proto::StatusCode::Error as i32,
                    ..Default::default()
                });
                Ok(WireReply::from(r))
            }
        }));
        let limits = QueueLimits {
            max_bytes: 1 << 20,
            max_frame_bytes: 1,
            send_timeout: Duration::from_secs(60),
        };
        let b = body(items, limits, None, Box::new(|_| {}));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let replies = decode_all(b.collect().await.unwrap().to_bytes());
        assert_eq!(replies.len(), 20);
        assert_eq!(replies.iter().filter(|r| is_error(r)).count(), 10);
        assert_eq!(replies.iter().filter(|r| is_frame(r)).count(), 1);
    }
}
