//! `jina.JinaRPC/Call`: the bidirectional stream every client talks to.
//!
//! Written by hand rather than generated so that an oversized request gets an
//! ERROR response and the stream stays open ([`decode_request`]), and so that
//! requests and responses travel through [`vchat_core::wire`], which does not copy
//! their pixels.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use vchat_core::config::{
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_STREAM_QUEUE_BYTES,
    DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_IP, DEFAULT_PREFETCH, DEFAULT_SEND_TIMEOUT_S,
    DEFAULT_STREAM_IDLE_TIMEOUT_S, StreamMode,
};
use vchat_core::{Error, StreamId};
use vchat_proto::DataRequestProto;
use vchat_proto::docarray::{document_proto, nd_array_proto};
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::jina::status_proto::StatusCode;

use crate::codec::{Inbound, decode_request};
use crate::conn::{ConnInfo, later, seconds};
use crate::flow::{FlowRuntime, SKIPPED_PARAMETER, error_response, skipped_response};
use crate::gate::{Admitted, StreamGate};
use crate::metrics::Metrics;
use crate::outbox::{self, QueueLimits};
use vchat_core::wire::{GrpcMessages, grpc_response};

type Responses = futures::stream::BoxStream<'static, Result<DataRequestProto, Status>>;

/// A future of a single-response stream.
fn one(item: Result<DataRequestProto, Status>) -> futures::future::BoxFuture<'static, Responses> {
    futures::future::ready(futures::stream::once(futures::future::ready(item)).boxed()).boxed()
}

/// Metadata key of the client's in-flight limit, as Jina's client sends it.
pub const PREFETCH_METADATA: &str = "__prefetch__";

/// Limits of one `Call` stream.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// At most this many requests of one stream are processed at once; a client's
    /// `__prefetch__` may lower it, never raise it.
    pub prefetch: usize,
    /// Requests over this many bytes are answered with an ERROR status.
    pub max_message_bytes: usize,
    /// At most this many processed requests per second on one stream in
    /// `send-receive` mode; the others are answered as skipped.
    pub max_fps: Option<f64>,
    /// At most this many `Call` streams are open at once; one more is refused
    /// with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// A document whose tensor or blob is over this many bytes is answered with an
    /// ERROR status.
    pub max_frame_bytes: usize,
    /// At most this many streams at once from one client address (per door);
    /// one more is refused with RESOURCE_EXHAUSTED.
    pub max_streams_per_ip: usize,
    /// A stream with no request for this long, and none in flight, is ended
    /// with DEADLINE_EXCEEDED.
    pub stream_idle_timeout: Duration,
    /// A peer that takes none of its stream's waiting responses for this long
    /// is dropped.
    pub send_timeout: Duration,
    /// At most this many bytes of responses wait for one stream's peer; past it
    /// the stream produces nothing more until the peer takes some.
    pub max_stream_queue_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            prefetch: DEFAULT_PREFETCH,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_fps: None,
            max_streams_per_ip: DEFAULT_MAX_STREAMS_PER_IP,
            stream_idle_timeout: Duration::from_secs_f64(DEFAULT_STREAM_IDLE_TIMEOUT_S),
            send_timeout: Duration::from_secs_f64(DEFAULT_SEND_TIMEOUT_S),
            max_stream_queue_bytes: DEFAULT_MAX_STREAM_QUEUE_BYTES,
        }
    }
}

/// The first document of `req` whose frame is over `limit` bytes: its size.
fn oversized_frame(req: &DataRequestProto, limit: usize) -> Option<usize> {
    let Some(Documents::Docs(da)) = req.data.as_ref()?.documents.as_ref() else {
        return None;
    };
    da.docs.iter().find_map(|d| {
        let size = match d.content.as_ref()? {
            document_proto::Content::Blob(b) => b.len(),
            document_proto::Content::Tensor(t) => match t.content.as_ref()? {
                nd_array_proto::Content::Dense(dense) => dense.buffer.len(),
                _ => 0,
            },
            document_proto::Content::Text(t) => t.len(),
        };
        (size > limit).then_some(size)
    })
}

/// The `jina.JinaRPC` service.
#[derive(Clone)]
pub struct CallService {
    flow: Arc<FlowRuntime>,
    limits: CallLimits,
    shutdown: CancellationToken,
    stream_ids: StreamIds,
    gate: Arc<StreamGate>,
    metrics: Arc<Metrics>,
}

impl CallService {
    /// Serves `flow`; once `shutdown` is cancelled, every stream stops reading new
    /// requests, answers those in flight and ends.
    pub fn new(
        flow: Arc<FlowRuntime>,
        limits: CallLimits,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        CallService {
            flow,
            gate: Arc::new(StreamGate::new(
                limits.max_streams,
                limits.max_streams_per_ip,
                metrics.clone(),
                crate::access::Access::open(),
                "streams",
            )),
            limits,
            shutdown,
            metrics,
            stream_ids: StreamIds::new(),
        }
    }

    /// Checks who each stream is with `access` (shared with the other doors)
    /// instead of serving everyone under any name.
    pub fn with_access(mut self, access: Arc<crate::access::Access>) -> Self {
        self.gate = Arc::new(StreamGate::new(
            self.limits.max_streams,
            self.limits.max_streams_per_ip,
            self.metrics.clone(),
            access,
            "streams",
        ));
        self
    }

    /// The ids this service gives its streams, to share with the gateway's other
    /// front doors (the WebSocket), so that no two streams get the same one.
    pub(crate) fn stream_ids(&self) -> StreamIds {
        self.stream_ids.clone()
    }
}

/// Stream ids of one gateway, from a random start: they also reach executors in
/// other processes, which may serve several gateways.
#[derive(Clone)]
pub(crate) struct StreamIds(Arc<AtomicU64>);

impl StreamIds {
    fn new() -> Self {
        let id = vchat_core::new_id();
        let base = u64::from_str_radix(&id[..16], 16).unwrap_or(1) | 1;
        StreamIds(Arc::new(AtomicU64::new(base)))
    }

    /// The next id.
    pub(crate) fn next(&self) -> StreamId {
        StreamId(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DataRequestProto, Status>> + Send>>;

/// Tells the Flow that a stream ended when its response stream is dropped: at the
/// end of the stream, on cancellation or on a broken connection alike.
struct StreamGuard {
    flow: Arc<FlowRuntime>,
    id: StreamId,
    metrics: Arc<Metrics>,
    _admitted: Admitted,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.stream_delta(-1);
        let flow = self.flow.clone();
        let id = self.id;
        tracing::debug!(stream = id.0, "Stream ended");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { flow.stream_closed(id).await });
        }
    }
}

/// A stream that keeps `_hold` alive as long as itself.
struct Holding<S, T> {
    inner: S,
    _hold: T,
}

impl<S: Stream + Unpin, T: Unpin> Stream for Holding<S, T> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

type Guarded = Holding<ResponseStream, StreamGuard>;

/// How busy one stream is: its requests in flight, and when it last received
/// or finished one.
struct Activity(std::sync::Mutex<(usize, tokio::time::Instant)>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity(std::sync::Mutex::new((
            0,
            tokio::time::Instant::now(),
        ))))
    }

    fn get(&self) -> (usize, tokio::time::Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request begins; it counts as in flight until the token is dropped,
    /// when its responses are all out.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut a = self.0.lock().unwrap_or_else(|e| e.into_inner());
        a.0 += 1;
        a.1 = tokio::time::Instant::now();
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        a.0 = a.0.saturating_sub(1);
        a.1 = tokio::time::Instant::now();
    }
}

/// A stream's requests, ended with DEADLINE_EXCEEDED once the stream has had
/// no request and none in flight for `timeout`. A request in flight (a
/// `receive` stream's frames, a slow executor) keeps the stream alive.
struct IdleLimit {
    inner: Inbounds,
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl IdleLimit {
    fn new(inner: Inbounds, activity: Arc<Activity>, timeout: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        IdleLimit {
            inner,
            activity,
            timeout,
            sleep,
            done: false,
        }
    }
}

impl Stream for IdleLimit {
    type Item = Result<Inbound, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use std::future::Future;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.poll_next_unpin(cx) {
            return Poll::Ready(item);
        }
        let (in_flight, last) = this.activity.get();
        if in_flight > 0 {
            // The stream is polled again when a request in flight is answered
            // (its responses are taken before the next request is read).
            return Poll::Pending;
        }
        let deadline = later(last, this.timeout);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.done = true;
            let s = seconds(this.timeout);
            tracing::info!(stream_idle_timeout_s = %s, "Stream idle; ending it");
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "no request for {s} s (stream_idle_timeout_s)"
            )))));
        }
        Poll::Pending
    }
}

/// The requests of one `Call` stream, decoded.
pub type Inbounds = futures::stream::BoxStream<'static, Result<Inbound, Status>>;

impl CallService {
    /// Serves one `Call` stream: its responses, or the status that refuses it.
    pub fn call(
        &mut self,
        request: Request<Inbounds>,
    ) -> BoxFuture<Response<ResponseStream>, Status> {
        let prefetch = request
            .metadata()
            .get(PREFETCH_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&p| p > 0)
            .map_or(self.limits.prefetch, |p| p.min(self.limits.prefetch));
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.remote_addr.ip());
        let creds = crate::access::Credentials {
            token: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(vchat_auth::bearer)
                .map(str::to_string),
            ..Default::default()
        };
        let admitted = match self.gate.admit(peer, creds) {
            Ok(admitted) => admitted,
            Err(refused) => {
                let status = match &refused {
                    crate::gate::Refused::Auth(e) => crate::access::status_of(e),
                    _ => Status::resource_exhausted(refused.to_string()),
                };
                return Box::pin(async move { Err(status) });
            }
        };
        self.metrics.stream_delta(1);
        let id = self.stream_ids.next();
        let flow = self.flow.clone();
        let limit = self.limits.max_message_bytes;
        let frame_limit = self.limits.max_frame_bytes;
        let metrics = self.metrics.clone();
        let activity = Activity::new();
        let seat = admitted.seat.clone();
        let inbound = IdleLimit::new(
            request.into_inner(),
            activity.clone(),
            self.limits.stream_idle_timeout,
        )
        .take_until(self.shutdown.clone().cancelled_owned());
        let inbound = crate::access::until_replaced(inbound, &seat);
        tracing::debug!(stream = id.0, prefetch, "Stream opened");
        let guard = StreamGuard {
            flow: flow.clone(),
            id,
            metrics: metrics.clone(),
            _admitted: admitted,
        };
        let min_gap = self
            .limits
            .max_fps
            .filter(|f| *f > 0.0)
            // A rate too small for its gap to be a Duration: the longest gap.
            .map(|f| Duration::try_from_secs_f64(1.0 / f).unwrap_or(Duration::MAX));
        let mut last_processed: Option<Instant> = None;
        let mut respond = move |item: Result<Inbound, Status>| {
            let flow = flow.clone();
            let metrics = metrics.clone();
            let started = Instant::now();
            let seat = seat.clone();
            let mut req = match item {
                Ok(Inbound::Request(req)) => req,
                Ok(Inbound::Oversized { header, size }) => {
                    let endpoint = header.exec_endpoint.clone().unwrap_or_else(|| "/".into());
                    let e = Error::BadRequest(format!(
                        "message of {size} bytes is over the limit of {limit} bytes"
                    ));
                    let resp = error_response(header, &e);
                    metrics.request(&endpoint, started.elapsed(), true, size, resp.encoded_len());
                    return one(Ok(resp));
                }
                Err(status) => return one(Err(status)),
            };
            let endpoint = req
                .header
                .as_ref()
                .and_then(|h| h.exec_endpoint.clone())
                .unwrap_or_else(|| "/".to_string());
            let size_in = req.encoded_len();
            if let Err(m) = seat.check(&mut req) {
                let resp = error_response(req.header.unwrap_or_default(), &Error::BadRequest(m));
                metrics.request(
                    &endpoint,
                    started.elapsed(),
                    true,
                    size_in,
                    resp.encoded_len(),
                );
                return one(Ok(resp));
            }
            if let Some(size) = oversized_frame(&req, frame_limit) {
                let e = Error::BadRequest(format!(
                    "a frame of {size} bytes is over the limit of {frame_limit} bytes (max_frame_bytes)"
                ));
                let resp = error_response(req.header.unwrap_or_default(), &e);
                metrics.request(
                    &endpoint,
                    started.elapsed(),
                    true,
                    size_in,
                    resp.encoded_len(),
                );
                return one(Ok(resp));
            }
            let mode = flow.mode(&endpoint);
            // max_fps: a request that comes too soon after the last processed one
            // of this stream is answered as skipped, unprocessed.
            if let Some(gap) = min_gap
                && mode == StreamMode::SendReceive
            {
                let now = Instant::now();
                if last_processed.is_some_and(|t| now.duration_since(t) < gap) {
                    metrics.frame_skipped();
                    return one(Ok(skipped_response(req.header.unwrap_or_default())));
                }
                last_processed = Some(now);
            }
            if mode == StreamMode::Receive {
                let responses = flow.respond(req, id).map(move |mut r| {
                    seat.reply(&mut r);
                    Ok(r)
                });
                return futures::future::ready(responses.boxed()).boxed();
            }
            // Processed inside the future, so that `buffered` runs up to
            // `prefetch` requests of the stream at once. A request in flight is
            // memory a peer makes the process hold: it counts in max_memory_mb.
            let held = vchat_core::budget::global().hold(size_in);
            async move {
                let mut resp = flow.process(req, id).await;
                drop(held);
                seat.reply(&mut resp);
                let failed = resp
                    .header
                    .as_ref()
                    .and_then(|h| h.status.as_ref())
                    .is_some_and(|s| s.code == StatusCode::Error as i32);
                let skipped = resp
                    .parameters
                    .as_ref()
                    .is_some_and(|p| p.fields.contains_key(SKIPPED_PARAMETER));
                if skipped {
                    metrics.frame_skipped();
                }
                metrics.request(
                    &endpoint,
                    started.elapsed(),
                    failed,
                    size_in,
                    resp.encoded_len(),
                );
                futures::stream::once(futures::future::ready(Ok(resp))).boxed()
            }
            .boxed()
        };
        let responses = inbound
            .map(move |item| {
                let in_flight = activity.begin();
                respond(item)
                    .map(move |responses| {
                        Holding {
                            inner: responses,
                            _hold: in_flight,
                        }
                        .boxed()
                    })
                    .boxed()
            })
            // Processes up to `prefetch` requests at once and answers in order; the
            // stream is not read further until one finishes, so nothing queues
            // without a bound.
            .buffered(prefetch)
            .flatten();
        let stream: ResponseStream = Box::pin(Guarded {
            inner: Box::pin(responses),
            _hold: guard,
        });
        Box::pin(async move { Ok(Response::new(stream)) })
    }
}

/// `jina.JinaRPC` as a tower service for tonic's router.
#[derive(Clone)]
pub struct JinaRpcServer {
    service: CallService,
}

impl JinaRpcServer {
    /// Wraps `service`.
    pub fn new(service: CallService) -> Self {
        JinaRpcServer { service }
    }
}

impl NamedService for JinaRpcServer {
    const NAME: &'static str = "jina.JinaRPC";
}

impl<B> tower_service::Service<http::Request<B>> for JinaRpcServer
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        if req.uri().path() != "/jina.JinaRPC/Call" {
            return Box::pin(
                async move { Ok(Status::unimplemented("no such method").into_http()) },
            );
        }
        let limit = service.limits.max_message_bytes;
        let queue = QueueLimits {
            max_bytes: service.limits.max_stream_queue_bytes.max(1),
            send_timeout: service.limits.send_timeout,
        };
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let close = parts.extensions.get::<ConnInfo>().map(|c| c.close.clone());
            if let Some(enc) = parts.headers.get("grpc-encoding")
                && enc.as_bytes() != b"identity"
            {
                let enc = String::from_utf8_lossy(enc.as_bytes()).into_owned();
                return Ok(Status::unimplemented(format!(
                    "requests compressed with {enc:?} are not supported: send them uncompressed"
                ))
                .into_http());
            }
            // tonic's own limit ends the stream; keep it well above ours so that an
            // oversized request normally gets an ERROR response instead.
            let hard = limit.saturating_mul(2).max(limit.saturating_add(16 << 20));
            let inbound = GrpcMessages::new(Box::pin(body), hard)
                .map(move |message| message.and_then(|m| decode_request(m, limit)))
                .boxed();
            let request = Request::from_parts(
                MetadataMap::from_headers(parts.headers),
                parts.extensions,
                inbound,
            );
            let mut service = service;
            match service.call(request).await {
                // Responses go out as chunks that share their pixels with the
                // socket writes instead of copying them (see `wire`), through a
                // queue bounded in bytes and in time (see `outbox`).
                Ok(resp) => Ok(grpc_response(tonic::body::Body::new(outbox::body(
                    resp.into_inner(),
                    queue,
                    close,
                )))),
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
