//! `vchat executor`: one executor served over gRPC, as Jina serves an executor, so
//! that a vchat or Jina gateway can call it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use vchat_core::proto::{reply_into_proto, request_from_proto};
use vchat_core::{DocumentArray, Reply, STREAM_CLOSED_ENDPOINT, STREAM_PARAMETER, StreamId};
use vchat_proto::jina::jina_discover_endpoints_rpc_server::{
    JinaDiscoverEndpointsRpc, JinaDiscoverEndpointsRpcServer,
};
use vchat_proto::jina::jina_info_rpc_server::{JinaInfoRpc, JinaInfoRpcServer};
use vchat_proto::jina::jina_single_data_request_rpc_server::{
    JinaSingleDataRequestRpc, JinaSingleDataRequestRpcServer,
};
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

#[tonic::async_trait]
impl JinaSingleDataRequestRpc for Service {
    async fn process_single_data(
        &self,
        request: Request<DataRequestProto>,
    ) -> Result<Response<DataRequestProto>, Status> {
        let (envelope, request) = request_from_proto(request.into_inner());
        let reply = match request {
            Ok(mut request) => {
                let stream = take_stream(&mut request);
                if request.endpoint == STREAM_CLOSED_ENDPOINT {
                    self.flow.stream_closed(stream).await;
                    return Ok(Response::new(reply_into_proto(
                        envelope,
                        Reply::ok(DocumentArray::new()),
                    )));
                }
                self.flow.process(request, stream).await
            }
            Err(reply) => reply,
        };
        Ok(Response::new(reply_into_proto(envelope, reply)))
    }
}

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
    health
        .set_serving::<JinaSingleDataRequestRpcServer<Service>>()
        .await;
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
            JinaSingleDataRequestRpcServer::from_arc(service.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(usize::MAX),
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
