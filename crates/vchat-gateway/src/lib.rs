//! vchat-gateway: the gateway of a vchat Flow, and the runtime that serves one
//! executor as a service.
//!
//! - [`Gateway`] serves a Flow through its doors: gRPC (`jina.JinaRPC/Call`, a
//!   bidirectional stream: one response per request, same `request_id`, in
//!   order; with `grpc.health.v1.Health`, `jina.JinaGatewayDryRunRPC/dry_run` and
//!   `jina.JinaInfoRPC/_status`) and, on its own port, the browser's WebSocket.
//! - [`doors`]: each door turns its transport's messages into
//!   [`Request`](vchat_core::Request)s and [`Reply`](vchat_core::Reply)s into
//!   messages; everything else about a stream is its [`Session`]: admission
//!   and limits, the frame rate cap, the idle timeout, metrics, and telling the
//!   executors that the stream ended.
//! - [`FlowRuntime`] runs a Flow's executors for each request: in-process ones
//!   directly, external ones ([`RemoteExecutor`]) over gRPC, Python ones through
//!   Jina's executor runtime; `needs` topology, replicas and room-sticky routing
//!   are described in [`flow`].
//! - [`serve_executor`] is `vchat executor`: `process_single_data`,
//!   `endpoint_discovery`, `_status` and health for one executor.
//! - [`metrics::Metrics`]: Prometheus counters, gauges and latency histograms,
//!   served on their own port by [`Gateway::monitoring`].
//! - TLS ([`Gateway::tls`]) with rustls (ring), the handshake done by the
//!   gateway's own accept loop (`conn`) so that it is timed with the HTTP/2
//!   preface.
//!
//! - [`session::access`]: who a stream is, for every door: the identity and room
//!   of its access token ([`Gateway::auth`]), and one stream per user and room.
//!
//! This crate has no feature flags.

pub mod config;
mod conn;
pub mod doors;
mod error;
mod executor_server;
pub mod flow;
pub mod link;
pub mod metrics;
mod server;
pub mod session;
mod tls;

pub use conn::{ConnInfo, ConnLimits};
pub use doors::grpc::{GrpcDoor, JinaRpcServer, PREFETCH_METADATA};
pub use doors::websocket::WebOptions;
pub use error::GatewayError;
pub use executor_server::{UNKNOWN_STREAM, serve_executor, serve_executor_with};
#[cfg(unix)]
pub use flow::python::supervise;
pub use flow::python::{self, Launch, PythonExecutor, SUPERVISE_COMMAND};
pub use flow::remote::{DEFAULT_TIMEOUT, RemoteExecutor, RemoteOptions, channel, channel_with};
pub use flow::skip::SkipFrames;
pub use flow::{BuildOptions, FlowRuntime, Node, merge};
pub use link::LinkOptions;
pub use server::{Gateway, VERSION};
pub use session::{Session, Sessions, StreamLimits};
pub use tls::tls_acceptor;
pub use tokio_util::sync::CancellationToken;
pub use vchat_core::proto::{RESULTS_PARAMETER, SKIPPED_PARAMETER};
pub use vchat_core::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
