//! `jina.JinaRPC/Call`: the bidirectional stream every client talks to.
//!
//! Written by hand rather than generated so that it can use [`CallCodec`], which
//! answers an oversized request with an ERROR response and keeps the stream open.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use vchat_core::config::StreamMode;
use vchat_core::{Error, StreamId};
use vchat_proto::DataRequestProto;

use crate::codec::{CallCodec, Inbound};
use crate::flow::{FlowRuntime, error_response, skipped_response};

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
}

/// The `jina.JinaRPC` service.
#[derive(Clone)]
pub struct CallService {
    flow: Arc<FlowRuntime>,
    limits: CallLimits,
    shutdown: CancellationToken,
    next_stream: Arc<AtomicU64>,
}

impl CallService {
    /// Serves `flow`; once `shutdown` is cancelled, every stream stops reading new
    /// requests, answers those in flight and ends.
    pub fn new(flow: Arc<FlowRuntime>, limits: CallLimits, shutdown: CancellationToken) -> Self {
        CallService {
            flow,
            limits,
            shutdown,
            // Random start: stream ids also reach executors in other processes,
            // which may serve several gateways.
            next_stream: Arc::new(AtomicU64::new(random_base())),
        }
    }
}

fn random_base() -> u64 {
    let id = vchat_core::new_id();
    u64::from_str_radix(&id[..16], 16).unwrap_or(1) | 1
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DataRequestProto, Status>> + Send>>;

/// Tells the Flow that a stream ended when its response stream is dropped: at the
/// end of the stream, on cancellation or on a broken connection alike.
struct StreamGuard {
    flow: Arc<FlowRuntime>,
    id: StreamId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let flow = self.flow.clone();
        let id = self.id;
        tracing::debug!(stream = id.0, "Stream ended");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { flow.stream_closed(id).await });
        }
    }
}

struct Guarded {
    inner: ResponseStream,
    _guard: StreamGuard,
}

impl Stream for Guarded {
    type Item = Result<DataRequestProto, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl StreamingService<Inbound> for CallService {
    type Response = DataRequestProto;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Response<ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Inbound>>) -> Self::Future {
        let prefetch = request
            .metadata()
            .get(PREFETCH_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&p| p > 0)
            .map_or(self.limits.prefetch, |p| p.min(self.limits.prefetch));
        let id = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let flow = self.flow.clone();
        let limit = self.limits.max_message_bytes;
        let inbound = request
            .into_inner()
            .take_until(self.shutdown.clone().cancelled_owned());
        tracing::debug!(stream = id.0, prefetch, "Stream opened");
        let guard = StreamGuard {
            flow: flow.clone(),
            id,
        };
        let min_gap = self
            .limits
            .max_fps
            .filter(|f| *f > 0.0)
            .map(|f| Duration::from_secs_f64(1.0 / f));
        let mut last_processed: Option<Instant> = None;
        let responses = inbound
            .map(move |item| {
                let flow = flow.clone();
                let req = match item {
                    Ok(Inbound::Request(req)) => req,
                    Ok(Inbound::Oversized { header, size }) => {
                        let e = Error::BadRequest(format!(
                            "message of {size} bytes is over the limit of {limit} bytes"
                        ));
                        return one(Ok(error_response(header, &e)));
                    }
                    Err(status) => return one(Err(status)),
                };
                // max_fps: a request that comes too soon after the last processed one
                // of this stream is answered as skipped, unprocessed.
                if let Some(gap) = min_gap {
                    let endpoint = req
                        .header
                        .as_ref()
                        .and_then(|h| h.exec_endpoint.as_deref())
                        .unwrap_or("/");
                    if flow.mode(endpoint) == StreamMode::SendReceive {
                        let now = Instant::now();
                        if last_processed.is_some_and(|t| now.duration_since(t) < gap) {
                            return one(Ok(skipped_response(req.header.unwrap_or_default())));
                        }
                        last_processed = Some(now);
                    }
                }
                let endpoint = req
                    .header
                    .as_ref()
                    .and_then(|h| h.exec_endpoint.as_deref())
                    .unwrap_or("/");
                if flow.mode(endpoint) == StreamMode::Receive {
                    let responses = flow.respond(req, id).map(Ok);
                    return futures::future::ready(responses.boxed()).boxed();
                }
                // Processed inside the future, so that `buffered` runs up to
                // `prefetch` requests of the stream at once.
                async move {
                    let resp = flow.process(req, id).await;
                    futures::stream::once(futures::future::ready(Ok(resp))).boxed()
                }
                .boxed()
            })
            // Processes up to `prefetch` requests at once and answers in order; the
            // stream is not read further until one finishes, so nothing queues
            // without a bound.
            .buffered(prefetch)
            .flatten();
        let stream: ResponseStream = Box::pin(Guarded {
            inner: Box::pin(responses),
            _guard: guard,
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
    B: Body + Send + 'static,
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
        Box::pin(async move {
            // tonic's own limit ends the stream; keep it well above ours so that an
            // oversized request normally gets an ERROR response instead.
            let hard = limit.saturating_mul(2).max(limit.saturating_add(16 << 20));
            let mut grpc = Grpc::new(CallCodec::new(limit))
                .apply_max_message_size_config(Some(hard), Some(usize::MAX));
            Ok(grpc.streaming(service, req).await)
        })
    }
}
