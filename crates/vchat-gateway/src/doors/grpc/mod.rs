//! `jina.JinaRPC/Call`: the bidirectional stream every client talks to, as a door
//! of the gateway: each message becomes a [`Request`] for the stream's
//! [`Session`], each [`Reply`] a message.
//!
//! Written by hand rather than generated so that an oversized request gets an
//! ERROR response and the stream stays open ([`decode_request`]), and so that
//! requests and responses travel through [`vchat_core::wire`], which does not copy
//! their pixels.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Status};
use vchat_core::config::StreamMode;
use vchat_core::proto::{Envelope, WireReply, reply_into_wire, request_from_proto};
use vchat_core::wire::{GrpcMessages, compressed_call, grpc_response};
use vchat_core::{Error, Reply};

use crate::conn::ConnInfo;
use crate::session::access::{status_of, until_replaced};
use crate::session::{Credentials, Door, RateLimit, Refused, Session, Sessions, check_frames};

pub mod codec;
mod idle;
pub(crate) mod outbox;

use codec::{Inbound, decode_request};
use idle::IdleLimit;
use outbox::QueueLimits;

/// Metadata key of the client's in-flight limit, as Jina's client sends it.
pub const PREFETCH_METADATA: &str = "__prefetch__";

/// The requests of one `Call` stream, decoded.
pub type Inbounds = futures::stream::BoxStream<'static, Result<Inbound, Status>>;

type Responses = futures::stream::BoxStream<'static, Result<WireReply, Status>>;

/// The responses of one stream: the stream's session lives as long as they do.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<WireReply, Status>> + Send>>;

/// A future of a single-response stream.
fn single(item: Result<WireReply, Status>) -> futures::future::BoxFuture<'static, Responses> {
    futures::future::ready(futures::stream::once(futures::future::ready(item)).boxed()).boxed()
}

/// The gRPC door: `jina.JinaRPC`.
#[derive(Clone)]
pub struct GrpcDoor {
    door: Arc<Door>,
    shutdown: CancellationToken,
}

impl GrpcDoor {
    /// Serves the streams of `sessions`; once `shutdown` is cancelled, every
    /// stream stops reading new requests, answers those in flight and ends.
    pub fn new(sessions: &Arc<Sessions>, shutdown: CancellationToken) -> Self {
        GrpcDoor {
            door: Arc::new(sessions.door("streams")),
            shutdown,
        }
    }

    /// Serves one `Call` stream: its responses, or the status that refuses it.
    pub fn call(&self, request: Request<Inbounds>) -> Result<ResponseStream, Status> {
        let limits = *self.door.sessions().limits();
        let prefetch = request
            .metadata()
            .get(PREFETCH_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&p| p > 0)
            .map_or(limits.prefetch, |p| p.min(limits.prefetch));
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.remote_addr.ip());
        let creds = Credentials {
            token: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(vchat_auth::bearer)
                .map(str::to_string),
            ..Default::default()
        };
        let rate = limits.max_fps.and_then(RateLimit::steady);
        let session = Arc::new(self.door.open(peer, creds, rate).map_err(
            |refused| match &refused {
                Refused::Auth(e) => status_of(e),
                _ => Status::resource_exhausted(refused.to_string()),
            },
        )?);
        let activity = session.activity().clone();
        let inbound = IdleLimit::new(
            request.into_inner(),
            activity.clone(),
            limits.stream_idle_timeout,
        )
        .take_until(self.shutdown.clone().cancelled_owned());
        // A newer stream of the same user in the same room ends this one.
        let inbound = until_replaced(inbound, session.seat());
        let responses = inbound
            .map(move |item| {
                let in_flight = activity.begin();
                answer(session.clone(), item)
                    .map(move |responses| {
                        // The request counts as in flight until its responses
                        // are all out.
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
        Ok(Box::pin(responses))
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

/// The responses to one message of a stream.
fn answer(
    session: Arc<Session>,
    item: Result<Inbound, Status>,
) -> futures::future::BoxFuture<'static, Responses> {
    let started = Instant::now();
    let limits = *session.limits();
    let proto = match item {
        Ok(Inbound::Request(proto)) => proto,
        Ok(Inbound::Oversized { header, size }) => {
            let envelope = Envelope::of_header(header);
            let e = Error::BadRequest(format!(
                "message of {size} bytes is over the limit of {} bytes",
                limits.max_message_bytes
            ));
            return single(Ok(respond(
                &session,
                envelope,
                Reply::error(e),
                started,
                size,
            )));
        }
        Err(status) => return single(Err(status)),
    };
    let size_in = proto.encoded_len();
    let (envelope, request) = request_from_proto(proto);
    let request = match request {
        Ok(r) => r,
        Err(reply) => return single(Ok(respond(&session, envelope, reply, started, size_in))),
    };
    if let Err(e) = check_frames(&request.docs, limits.max_frame_bytes) {
        let reply = Reply::error(e);
        return single(Ok(respond(&session, envelope, reply, started, size_in)));
    }
    let mode = session.flow().mode(&request.endpoint);
    // max_fps: a request that comes too soon after the last processed one of
    // this stream is answered as skipped, unprocessed.
    if mode == StreamMode::SendReceive && !session.admit_frame() {
        let reply = Reply::skipped("over the stream's max_fps");
        return single(Ok(reply_into_wire(
            Envelope::of_header(envelope.header),
            reply,
        )));
    }
    if mode == StreamMode::Receive {
        let replies = session
            .respond(request)
            .map(move |reply| Ok(reply_into_wire(envelope.clone(), reply)));
        return futures::future::ready(replies.boxed()).boxed();
    }
    // Processed inside the future, so that `buffered` runs up to `prefetch`
    // requests of the stream at once.
    async move {
        let reply = session.process(request).await;
        let resp = respond(&session, envelope, reply, started, size_in);
        futures::stream::once(futures::future::ready(Ok(resp))).boxed()
    }
    .boxed()
}

/// The wire response of `reply`, counted in the metrics.
fn respond(
    session: &Session,
    envelope: Envelope,
    reply: Reply,
    started: Instant,
    size_in: usize,
) -> WireReply {
    let endpoint = envelope.endpoint().to_string();
    let failed = reply.is_error();
    let resp = reply_into_wire(envelope, reply);
    session.record(&endpoint, started, failed, size_in, resp.encoded_len());
    resp
}

/// `jina.JinaRPC` as a tower service for tonic's router.
#[derive(Clone)]
pub struct JinaRpcServer {
    service: GrpcDoor,
}

impl JinaRpcServer {
    /// Wraps `service`.
    pub fn new(service: GrpcDoor) -> Self {
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
        let limits = *service.door.sessions().limits();
        let limit = limits.max_message_bytes;
        let queue = QueueLimits {
            max_bytes: limits.max_stream_queue_bytes.max(1),
            max_frame_bytes: limits.max_outbox_bytes,
            send_timeout: limits.send_timeout,
        };
        let metrics = service.door.sessions().metrics().clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let close = parts.extensions.get::<ConnInfo>().map(|c| c.close.clone());
            if let Some(status) = compressed_call(&parts.headers) {
                return Ok(status.into_http());
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
            match service.call(request) {
                // Responses go out as chunks that share their pixels with the
                // socket writes instead of copying them (see `wire`), through a
                // queue bounded in bytes and in time (see `outbox`).
                Ok(responses) => Ok(grpc_response(tonic::body::Body::new(outbox::body(
                    responses,
                    queue,
                    close,
                    Box::new(move |n| metrics.frames_dropped(n)),
                )))),
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
