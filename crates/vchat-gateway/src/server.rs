//! The gateway server: `jina.JinaRPC/Call`, gRPC health, `dry_run` and `_status` on
//! one port.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use vchat_proto::jina::jina_gateway_dry_run_rpc_server::{
    JinaGatewayDryRunRpc, JinaGatewayDryRunRpcServer,
};
use vchat_proto::jina::jina_info_rpc_server::{JinaInfoRpc, JinaInfoRpcServer};
use vchat_proto::{JinaInfoProto, StatusProto};

use crate::call::{CallLimits, CallService, JinaRpcServer};
use crate::flow::FlowRuntime;

/// Errors of the gateway crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A socket could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// HTTP/2 flow-control window of one stream, in bytes.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 flow-control window of one connection, in bytes.
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// Version reported by `_status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Info {
    executors: Vec<String>,
}

#[tonic::async_trait]
impl JinaGatewayDryRunRpc for Info {
    async fn dry_run(&self, _: Request<()>) -> Result<Response<StatusProto>, Status> {
        // In-process executors are ready once the Flow is built.
        Ok(Response::new(StatusProto::default()))
    }
}

#[tonic::async_trait]
impl JinaInfoRpc for Info {
    async fn status(&self, _: Request<()>) -> Result<Response<JinaInfoProto>, Status> {
        let mut jina = HashMap::new();
        jina.insert("vchat".to_string(), VERSION.to_string());
        jina.insert("jina-protocol".to_string(), "3".to_string());
        jina.insert("executors".to_string(), self.executors.join(","));
        Ok(Response::new(JinaInfoProto {
            jina,
            envs: HashMap::new(),
        }))
    }
}

/// A gateway serving one Flow.
pub struct Gateway {
    flow: Arc<FlowRuntime>,
    limits: CallLimits,
}

impl Gateway {
    /// A gateway for `flow` with the per-stream `limits`.
    pub fn new(flow: FlowRuntime, limits: CallLimits) -> Self {
        Gateway {
            flow: Arc::new(flow),
            limits,
        }
    }

    /// Serves on `listener` until `shutdown` is cancelled; then stops accepting,
    /// answers the requests in flight, ends every stream and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), GatewayError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<JinaRpcServer>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let info = Arc::new(Info {
            executors: self
                .flow
                .nodes()
                .iter()
                .map(|n| n.name().to_string())
                .collect(),
        });
        let call = CallService::new(self.flow.clone(), self.limits, shutdown.clone());
        let signal = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.cancelled().await;
                health.set_not_serving::<JinaRpcServer>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                tracing::info!("Shutting down: finishing requests in flight");
            }
        };
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // A raw frame is hundreds of KiB and a mosaic several MiB: HTTP/2's
            // default 64 KiB windows would stall every message on window updates.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .add_service(health_service)
            .add_service(JinaRpcServer::new(call))
            .add_service(JinaGatewayDryRunRpcServer::from_arc(info.clone()))
            .add_service(JinaInfoRpcServer::from_arc(info))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY, Nagle's algorithm holds the tail of each
                // response until the peer's delayed ACK: 40 ms per frame.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await?;
        Ok(())
    }
}
