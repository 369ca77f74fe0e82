//! vchat-gateway: the gRPC gateway of a vchat Flow.
//!
//! - [`Gateway`] serves `jina.JinaRPC/Call` (a bidirectional stream: one response
//!   per request, same `request_id`, in order), `grpc.health.v1.Health`,
//!   `jina.JinaGatewayDryRunRPC/dry_run` and `jina.JinaInfoRPC/_status`.
//! - [`FlowRuntime`] runs a Flow's executors in order for each request, applying
//!   Jina's endpoint, `target_executor` and per-executor `parameters` rules.
//! - [`codec::CallCodec`] decodes requests without copying frame pixels and turns
//!   an oversized request into an ERROR response rather than a broken stream.
//!
//! This crate has no feature flags.

mod call;
pub mod codec;
pub mod flow;
mod server;

pub use call::{CallLimits, CallService, JinaRpcServer, PREFETCH_METADATA};
pub use flow::{FlowRuntime, Node, error_response, error_status};
pub use server::{Gateway, GatewayError, VERSION};
pub use tokio_util::sync::CancellationToken;
