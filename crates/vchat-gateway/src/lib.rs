//! vchat-gateway: the gRPC gateway of a vchat Flow, and the runtime that serves
//! one executor as a service.
//!
//! - [`Gateway`] serves `jina.JinaRPC/Call` (a bidirectional stream: one response
//!   per request, same `request_id`, in order), `grpc.health.v1.Health`,
//!   `jina.JinaGatewayDryRunRPC/dry_run` and `jina.JinaInfoRPC/_status`.
//! - [`FlowRuntime`] runs a Flow's executors for each request: in-process ones
//!   directly, external ones ([`RemoteExecutor`]) over gRPC, Python ones through
//!   Jina's executor runtime; `needs` topology, replicas and room-sticky routing
//!   are described in [`flow`].
//! - [`serve_executor`] is `vchat executor`: `process_single_data`,
//!   `endpoint_discovery`, `_status` and health for one executor.
//! - [`codec::decode_request`] decodes requests without copying frame pixels and turns
//!   an oversized request into an ERROR response rather than a broken stream.
//!
//! - [`metrics::Metrics`]: Prometheus counters, gauges and latency histograms,
//!   served on their own port by [`Gateway::monitoring`].
//! - TLS ([`Gateway::tls`]) with rustls (ring), the handshake done by the
//!   gateway's own accept loop so that it is timed with the HTTP/2 preface.
//! - Limits of peers: connections on the gRPC port ([`ConnLimits`]: a cap, a
//!   handshake timeout, streams per connection, keepalive pings), streams per
//!   client address, idle streams and peers that stop reading
//!   ([`CallLimits`]), and metric labels peers cannot grow.
//! - [`web`]: the browser side ([`Gateway::web`]): a web client at `/` and a
//!   WebSocket at `/ws` that streams JPEG frames through the same Flow, on their
//!   own port (hyper and tokio-tungstenite; the same certificate as gRPC).
//!
//! This crate has no feature flags.

mod call;
pub mod codec;
mod conn;
pub mod discovery;
mod executor_server;
pub mod flow;
mod gate;
pub mod metrics;
mod outbox;
pub mod python;
mod remote;
mod server;
mod skip;
pub mod web;

pub use call::{CallLimits, CallService, JinaRpcServer, PREFETCH_METADATA};
pub use conn::{ConnInfo, ConnLimits};
pub use executor_server::{UNKNOWN_STREAM, serve_executor};
pub use flow::{
    BuildOptions, FlowRuntime, Node, RESULTS_PARAMETER, SKIPPED_PARAMETER, error_response,
    error_status, merge, skipped_response,
};
#[cfg(unix)]
pub use python::supervise;
pub use python::{Launch, PythonExecutor, SUPERVISE_COMMAND};
pub use remote::{DEFAULT_TIMEOUT, RemoteExecutor, RemoteOptions, channel, channel_with};
pub use server::{CONNECTION_WINDOW, Gateway, GatewayError, MAX_FRAME, STREAM_WINDOW, VERSION};
pub use skip::SkipFrames;
pub use tokio_util::sync::CancellationToken;
pub use web::WebOptions;
