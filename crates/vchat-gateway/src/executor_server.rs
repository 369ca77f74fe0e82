//! `vchat executor`: one executor served over gRPC, as Jina serves an executor, so
//! that a vchat or Jina gateway can call it.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use prost::Message;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use vchat_core::proto::{WireReply, reply_into_wire, request_from_proto};
use vchat_core::wire::{GrpcBody, GrpcMessages, compressed_call, grpc_response};
use vchat_core::{DocumentArray, Reply, STREAM_CLOSED_ENDPOINT, STREAM_PARAMETER, StreamId};
use vchat_proto::jina::jina_discover_endpoints_rpc_server::{
    JinaDiscoverEndpointsRpc, JinaDiscoverEndpointsRpcServer,
};
use vchat_proto::jina::jina_info_rpc_server::{JinaInfoRpc, JinaInfoRpcServer};
use vchat_proto::{DataRequestProto, EndpointsProto, JinaInfoProto};

use crate::error::GatewayError;
use crate::flow::FlowRuntime;
use crate::link::LinkOptions;
use crate::server::VERSION;
use tonic::service::interceptor::InterceptedService;
use vchat_core::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};

/// Requests from a caller that does not say which client stream they belong to
/// (a Jina gateway) all count as this one stream.
pub const UNKNOWN_STREAM: StreamId = StreamId::UNKNOWN;

struct Service {
    flow: Arc<FlowRuntime>,
}

/// The client stream a request belongs to, as the calling gateway names it
/// (and removed from the parameters the executors see).
fn take_stream(request: &mut vchat_core::Request) -> StreamId {
    let raw = request
        .parameters
        .remove(STREAM_PARAMETER)
        .and_then(|v| match v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => u64::from_str_radix(&s, 16).ok(),
            _ => None,
        });
    raw.map_or(UNKNOWN_STREAM, StreamId)
}

impl Service {
    /// The reply to one request, its tensors still in their pieces.
    async fn process_single_data(&self, proto: DataRequestProto) -> WireReply {
        let (envelope, request) = request_from_proto(proto);
        let reply = match request {
            Ok(mut request) => {
                let stream = take_stream(&mut request);
                if request.endpoint == STREAM_CLOSED_ENDPOINT {
                    self.flow.stream_closed(stream).await;
                    Reply::ok(DocumentArray::new())
                } else {
                    self.flow.process(request, stream).await
                }
            }
            Err(reply) => reply,
        };
        reply_into_wire(envelope, reply)
    }
}

/// `jina.JinaSingleDataRequestRPC`, written by hand rather than generated so
/// that a reply travels through [`vchat_core::wire`]: a vertical mosaic goes to
/// the socket as its users' frames, never joined into one buffer.
#[derive(Clone)]
struct SingleDataServer {
    service: Arc<Service>,
    max_message_bytes: usize,
}

impl NamedService for SingleDataServer {
    const NAME: &'static str = "jina.JinaSingleDataRequestRPC";
}

impl<B> tower_service::Service<http::Request<B>> for SingleDataServer
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
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != SINGLE_DATA_PATH {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            if let Some(status) = compressed_call(req.headers()) {
                return Ok(status.into_http());
            }
            let mut messages = GrpcMessages::new(Box::pin(req.into_body()), this.max_message_bytes);
            let proto = match messages.next().await {
                Some(Ok(m)) => DataRequestProto::decode(m)
                    .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}"))),
                Some(Err(status)) => Err(status),
                None => Err(Status::invalid_argument("the call carries no request")),
            };
            match proto {
                Ok(proto) => {
                    let reply = this.service.process_single_data(proto).await;
                    let body = GrpcBody::response(futures::stream::iter([Ok::<_, Status>(reply)]));
                    Ok(grpc_response(tonic::body::Body::new(body)))
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The path of the one method of `jina.JinaSingleDataRequestRPC`.
const SINGLE_DATA_PATH: &str = "/jina.JinaSingleDataRequestRPC/process_single_data";

#[tonic::async_trait]
impl JinaDiscoverEndpointsRpc for Service {
    async fn endpoint_discovery(&self, _: Request<()>) -> Result<Response<EndpointsProto>, Status> {
        let mut endpoints: Vec<String> = self.flow.endpoints();
        endpoints.sort();
        endpoints.dedup();
        Ok(Response::new(EndpointsProto {
            endpoints,
            write_endpoints: Vec::new(),
            schemas: Some(Default::default()),
        }))
    }
}

#[tonic::async_trait]
impl JinaInfoRpc for Service {
    async fn status(&self, _: Request<()>) -> Result<Response<JinaInfoProto>, Status> {
        let mut jina = HashMap::new();
        jina.insert("vchat".to_string(), VERSION.to_string());
        jina.insert("executor".to_string(), self.flow.names().join(","));
        Ok(Response::new(JinaInfoProto {
            jina,
            envs: HashMap::new(),
        }))
    }
}

/// Serves `flow` (normally one executor) on `listener` until `shutdown`.
pub async fn serve_executor(
    flow: FlowRuntime,
    max_message_bytes: usize,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    serve_executor_with(
        flow,
        max_message_bytes,
        listener,
        shutdown,
        LinkOptions::default(),
    )
    .await
}

/// [`serve_executor`] with its link protected: a secret required on every
/// call, TLS (see [`crate::link`]).
pub async fn serve_executor_with(
    flow: FlowRuntime,
    max_message_bytes: usize,
    listener: TcpListener,
    shutdown: CancellationToken,
    link: LinkOptions,
) -> Result<(), GatewayError> {
    let service = Arc::new(Service {
        flow: Arc::new(flow),
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SingleDataServer>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let signal = async move {
        shutdown.cancelled().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vchat_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| GatewayError::Reflection(e.to_string()))?;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &link.tls {
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .map_err(|e| GatewayError::Tls(e.to_string()))?;
    }
    let check = crate::link::require(link.secret.clone());
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            SingleDataServer {
                service: service.clone(),
                max_message_bytes,
            },
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            JinaDiscoverEndpointsRpcServer::from_arc(service.clone()),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            JinaInfoRpcServer::from_arc(service),
            check,
        ))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal)
        .await?;
    Ok(())
}
