//! The gateway server: `jina.JinaRPC/Call`, gRPC health, `dry_run` and `_status` on
//! one port.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use vchat_proto::jina::jina_gateway_dry_run_rpc_server::{
    JinaGatewayDryRunRpc, JinaGatewayDryRunRpcServer,
};
use vchat_proto::jina::jina_info_rpc_server::{JinaInfoRpc, JinaInfoRpcServer};
use vchat_proto::jina::status_proto::{ExceptionProto, StatusCode};
use vchat_proto::{JinaInfoProto, StatusProto};

use crate::conn::{self, ConnLimits};
use crate::doors::grpc::{GrpcDoor, JinaRpcServer};
use crate::doors::webrtc::{WebRtcDoor, WebRtcOptions};
use crate::doors::websocket::{self, WebOptions, WebSocketDoor};
use crate::error::GatewayError;
use crate::flow::FlowRuntime;
use crate::metrics::{Metrics, serve_metrics};
use crate::session::Access;
use crate::session::{Sessions, StreamLimits};
use crate::tls::{tls_acceptor, tls_acceptor_for};

use vchat_core::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};

/// Version reported by `_status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Info {
    executors: Vec<String>,
    flow: Arc<FlowRuntime>,
}

#[tonic::async_trait]
impl JinaGatewayDryRunRpc for Info {
    /// SUCCESS when every executor answers: in-process ones are ready once the
    /// Flow is built; external ones must answer `_status`. Otherwise ERROR, with
    /// the first executor that does not answer.
    async fn dry_run(&self, _: Request<()>) -> Result<Response<StatusProto>, Status> {
        let checks = self.flow.nodes().iter().map(|n| n.ready());
        for result in futures::future::join_all(checks).await {
            if let Err(reason) = result {
                return Ok(Response::new(StatusProto {
                    code: StatusCode::Error as i32,
                    description: reason.clone(),
                    exception: Some(ExceptionProto {
                        name: "ExecutorUnavailable".into(),
                        args: vec![reason],
                        ..Default::default()
                    }),
                }));
            }
        }
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
    limits: StreamLimits,
    conn_limits: ConnLimits,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    monitoring: Option<TcpListener>,
    web: Option<(TcpListener, WebOptions)>,
    webrtc: Option<(tokio::net::UdpSocket, WebRtcOptions)>,
    metrics: Arc<Metrics>,
    access: Arc<Access>,
}

impl Gateway {
    /// A gateway for `flow` with the per-stream `limits`.
    pub fn new(flow: FlowRuntime, limits: StreamLimits) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.set_endpoints(flow.named_endpoints());
        Gateway {
            flow: Arc::new(flow),
            limits,
            conn_limits: ConnLimits::default(),
            tls: None,
            monitoring: None,
            web: None,
            webrtc: None,
            metrics,
            access: Access::open(),
        }
    }

    /// Streams need an access token verified by `verifier` (see [`crate::session::access`]);
    /// without it the gateway is open and names are not verified.
    pub fn auth(mut self, verifier: vchat_auth::Verifier) -> Self {
        self.access = Access::new(Some(verifier));
        self
    }

    /// At most `n` rooms per executor get a label of their own in the metrics
    /// (default [`DEFAULT_METRICS_MAX_ROOMS`](vchat_core::config::DEFAULT_METRICS_MAX_ROOMS)).
    pub fn metrics_max_rooms(self, n: usize) -> Self {
        self.metrics.set_max_rooms(n);
        self
    }

    /// Serves gRPC over TLS with this PEM certificate chain and private key;
    /// plaintext clients are then refused.
    pub fn tls(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls = Some((cert_pem, key_pem));
        self
    }

    /// Bounds the gRPC port's connections (default [`ConnLimits::default`]).
    pub fn connections(mut self, limits: ConnLimits) -> Self {
        self.conn_limits = limits;
        self
    }

    /// Serves the Prometheus metrics (`GET /metrics`) on `listener`.
    pub fn monitoring(mut self, listener: TcpListener) -> Self {
        self.monitoring = Some(listener);
        self
    }

    /// Serves the browser side on `listener`: the web client at `/` and its
    /// WebSocket at `/ws` (see [`websocket`]), over TLS when [`tls`](Self::tls) is set.
    pub fn web(mut self, listener: TcpListener, options: WebOptions) -> Self {
        self.web = Some((listener, options));
        self
    }

    /// Serves the WebRTC door (see [`crate::doors::webrtc`]) on `socket`, its
    /// signalling on the browser side's port: only with [`web`](Self::web).
    pub fn webrtc(mut self, socket: tokio::net::UdpSocket, options: WebRtcOptions) -> Self {
        self.webrtc = Some((socket, options));
        self
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The Flow it serves (to stop its processes once serving is over).
    pub fn flow(&self) -> Arc<FlowRuntime> {
        self.flow.clone()
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
            flow: self.flow.clone(),
        });
        let sessions = Sessions::new(
            self.flow.clone(),
            self.limits,
            self.metrics.clone(),
            self.access.clone(),
        );
        let grpc = GrpcDoor::new(&sessions, shutdown.clone());
        if let Some(listener) = self.monitoring {
            tokio::spawn(serve_metrics(
                listener,
                self.metrics.clone(),
                self.flow.clone(),
                shutdown.clone(),
            ));
        }
        let web_server = match self.web {
            Some((listener, options)) => {
                let acceptor = match &self.tls {
                    Some((cert, key)) => Some(tls_acceptor(cert, key)?),
                    None => None,
                };
                let max_fps = options.max_fps;
                let mut web =
                    WebSocketDoor::new(&sessions, options, shutdown.clone(), acceptor.is_some());
                if let Some((socket, options)) = self.webrtc {
                    let door =
                        WebRtcDoor::start(&sessions, socket, options, max_fps, shutdown.clone())?;
                    web = web.with_webrtc(door);
                }
                Some(tokio::spawn(websocket::serve(
                    listener,
                    acceptor,
                    Arc::new(web),
                )))
            }
            None => None,
        };
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
        let tls = match &self.tls {
            Some((cert, key)) => Some(tls_acceptor_for(cert, key, b"h2")?),
            None => None,
        };
        let limits = self.conn_limits;
        let incoming = conn::incoming(listener, tls, limits, shutdown.clone());
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // A raw frame is hundreds of KiB and a mosaic several MiB: HTTP/2's
            // default 64 KiB windows would stall every message on window updates.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_concurrent_streams(limits.max_concurrent_streams.max(1))
            // A peer whose connection is dead, or that stopped reading its
            // socket, never answers a ping: the connection is closed.
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_interval))
            .add_service(health_service)
            .add_service(JinaRpcServer::new(grpc))
            .add_service(JinaGatewayDryRunRpcServer::from_arc(info.clone()))
            .add_service(JinaInfoRpcServer::from_arc(info))
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        if let Some(web) = web_server {
            // Closes every WebSocket once its frames in flight are answered.
            let _ = web.await;
        }
        Ok(())
    }
}
