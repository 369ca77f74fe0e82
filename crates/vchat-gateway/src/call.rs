//! `jina.JinaRPC/Call`: the bidirectional stream every client talks to.
//!
//! Written by hand rather than generated so that it can use [`CallCodec`], which
//! answers an oversized request with an ERROR response and keeps the stream open.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use vchat_core::config::{
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_STREAMS, DEFAULT_PREFETCH,
};
use vchat_core::{Error, StreamId};
use vchat_proto::DataRequestProto;
use vchat_proto::docarray::{document_proto, nd_array_proto};
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::jina::status_proto::StatusCode;

use crate::codec::{CallCodec, Inbound};
use crate::flow::{FlowRuntime, error_response};
use crate::metrics::Metrics;

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
    /// At most this many `Call` streams are open at once; one more is refused
    /// with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// A document whose tensor or blob is over this many bytes is answered with an
    /// ERROR status.
    pub max_frame_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            prefetch: DEFAULT_PREFETCH,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
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
    next_stream: Arc<AtomicU64>,
    streams: Arc<Semaphore>,
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
            streams: Arc::new(Semaphore::new(limits.max_streams.max(1))),
            limits,
            shutdown,
            metrics,
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
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
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
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            self.metrics.stream_rejected();
            let max = self.limits.max_streams;
            tracing::warn!(max_streams = max, "Stream refused: too many streams");
            return Box::pin(async move {
                Err(Status::resource_exhausted(format!(
                    "too many streams: this gateway serves at most {max} at once (max_streams)"
                )))
            });
        };
        self.metrics.stream_delta(1);
        let id = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let flow = self.flow.clone();
        let limit = self.limits.max_message_bytes;
        let frame_limit = self.limits.max_frame_bytes;
        let metrics = self.metrics.clone();
        let inbound = request
            .into_inner()
            .take_until(self.shutdown.clone().cancelled_owned());
        tracing::debug!(stream = id.0, prefetch, "Stream opened");
        let guard = StreamGuard {
            flow: flow.clone(),
            id,
            metrics: metrics.clone(),
            _permit: permit,
        };
        let responses = inbound
            .map(move |item| {
                let flow = flow.clone();
                let metrics = metrics.clone();
                async move {
                    let started = std::time::Instant::now();
                    let (resp, endpoint, size_in) = match item {
                        Ok(Inbound::Request(req)) => {
                            let endpoint = req
                                .header
                                .as_ref()
                                .and_then(|h| h.exec_endpoint.clone())
                                .unwrap_or_else(|| "/".to_string());
                            let size_in = req.encoded_len();
                            let resp = match oversized_frame(&req, frame_limit) {
                                Some(size) => error_response(
                                    req.header.unwrap_or_default(),
                                    &Error::BadRequest(format!(
                                        "a frame of {size} bytes is over the limit of \
                                         {frame_limit} bytes (max_frame_bytes)"
                                    )),
                                ),
                                None => flow.process(req, id).await,
                            };
                            (resp, endpoint, size_in)
                        }
                        Ok(Inbound::Oversized { header, size }) => {
                            let endpoint =
                                header.exec_endpoint.clone().unwrap_or_else(|| "/".into());
                            let resp = error_response(
                                header,
                                &Error::BadRequest(format!(
                                    "message of {size} bytes is over the limit of {limit} bytes"
                                )),
                            );
                            (resp, endpoint, size)
                        }
                        Err(status) => return Err(status),
                    };
                    let failed = resp
                        .header
                        .as_ref()
                        .and_then(|h| h.status.as_ref())
                        .is_some_and(|s| s.code == StatusCode::Error as i32);
                    metrics.request(
                        &endpoint,
                        started.elapsed(),
                        failed,
                        size_in,
                        resp.encoded_len(),
                    );
                    Ok(resp)
                }
            })
            // Processes up to `prefetch` requests at once and answers in order; the
            // stream is not read further until one finishes, so nothing queues
            // without a bound.
            .buffered(prefetch);
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
