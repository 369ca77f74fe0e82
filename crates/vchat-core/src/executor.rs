//! The plug-in point: an [`Executor`] processes the documents of each request that
//! reaches it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures_core::stream::BoxStream;
use prost_types::{Value, value::Kind};

use crate::{DocumentArray, Error};

/// The endpoint that serves every endpoint an executor has no binding for, as Jina's
/// `@requests` without `on=`.
pub const DEFAULT_ENDPOINT: &str = "/default";

/// Identifies one client stream (one `JinaRPC.Call`) for as long as it is open, so
/// that a stateful executor can forget what the stream brought when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The stream of requests whose caller does not say which client stream they
    /// belong to (a Jina gateway calling a vchat executor): many clients at once,
    /// so never one user's.
    pub const UNKNOWN: StreamId = StreamId(0);
}

/// What an executor knows of the request it is processing, beside its documents.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The endpoint the client asked for (`header.exec_endpoint`).
    pub endpoint: &'a str,
    /// The request's parameters, with `parameters[<executor name>]` already merged
    /// over the global keys for this executor.
    pub parameters: &'a BTreeMap<String, Value>,
    /// The stream the request came on.
    pub stream: StreamId,
    /// The request's id.
    pub request_id: &'a str,
    /// Extra outputs: values set here reach the client beside the documents, in
    /// the response's `parameters['__results__'][<executor name>]` (as Jina returns
    /// an executor's return value).
    pub results: &'a Mutex<BTreeMap<String, Value>>,
}

impl RequestContext<'_> {
    /// Sets the extra output `key` (see [`results`](Self::results)).
    pub fn set_result(&self, key: &str, value: Value) {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value);
    }
}

/// The frames a source executor yields for one `receive` request.
pub type SourceStream = BoxStream<'static, Result<DocumentArray, Error>>;

/// What a source executor knows of the `receive` request that started it.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The endpoint asked for.
    pub endpoint: String,
    /// The request's parameters (with this executor's own section merged in).
    pub parameters: BTreeMap<String, Value>,
    /// The request's documents (e.g. the user's tags).
    pub docs: DocumentArray,
}

/// An executor: the unit of processing in a Flow.
///
/// Implementations are shared across streams and called concurrently: keep state
/// behind a lock that is never held across an `.await`.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The endpoints this executor binds. [`DEFAULT_ENDPOINT`] serves every endpoint
    /// without a binding of its own; a request for an endpoint that is not bound and
    /// no default binding passes through unchanged.
    fn endpoints(&self) -> Vec<String> {
        vec![DEFAULT_ENDPOINT.to_string()]
    }

    /// Processes one request's documents in place. An `Err` fails this request only.
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error>;

    /// The tag that must pin requests to one replica when the executor runs as
    /// several: a stateful executor that keeps per-room state returns `Some("room")`
    /// so that every frame of a room reaches the same copy. `None` (the default):
    /// requests are spread over replicas one by one.
    fn route_by(&self) -> Option<&str> {
        None
    }

    /// A source executor (a camera, a file, a test pattern) returns the frames it
    /// yields for a `receive` request, paced at its own rate; the stream ends when
    /// the source does or when the client goes away. `None` (the default): not a
    /// source.
    fn source(&self, _ctx: SourceContext) -> Option<SourceStream> {
        None
    }

    /// Called once when a client stream ends (closed, cancelled or broken), after
    /// its last request was processed.
    async fn stream_closed(&self, _stream: StreamId) {}

    /// Whether the executor answers, for the gateway's `dry_run` (`vchat ping`):
    /// in-process executors are ready once built; one in another process checks
    /// that it still answers. The error says why not.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Users present per room, for the gateway's metrics; executors without rooms
    /// (and executors in other processes) report none.
    fn users_per_room(&self) -> Vec<(String, usize)> {
        Vec::new()
    }
}

/// Parameter key carrying the client stream's id to an executor in another process
/// (hex string), so that a remote stateful executor can tell streams apart.
pub const STREAM_PARAMETER: &str = "__vchat_stream__";

/// Endpoint on which a gateway tells a vchat executor in another process that the
/// stream named by [`STREAM_PARAMETER`] ended.
pub const STREAM_CLOSED_ENDPOINT: &str = "/_vchat/stream_closed";

/// Whether an executor bound to `bound` serves a request for `endpoint`.
pub fn serves(bound: &[String], endpoint: &str) -> bool {
    bound.iter().any(|b| b == endpoint || b == DEFAULT_ENDPOINT)
}

/// The parameters one executor sees: the global keys, overridden by the keys of
/// `parameters[executor]` when that is a mapping. Other executors' sections are left
/// out.
pub fn parameters_for(
    params: &BTreeMap<String, Value>,
    executor: &str,
    executor_names: &[String],
) -> BTreeMap<String, Value> {
    let mut merged: BTreeMap<String, Value> = params
        .iter()
        .filter(|(k, v)| {
            !(executor_names.iter().any(|n| n == *k)
                && matches!(v.kind, Some(Kind::StructValue(_))))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value {
        kind: Some(Kind::StructValue(own)),
    }) = params.get(executor)
    {
        for (k, v) in &own.fields {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{number_value, string_value};
    use prost_types::Struct;

    #[test]
    fn default_endpoint_serves_everything() {
        let bound = vec![DEFAULT_ENDPOINT.to_string()];
        assert!(serves(&bound, "/"));
        assert!(serves(&bound, "/anything"));
        let only_index = vec!["/index".to_string()];
        assert!(serves(&only_index, "/index"));
        assert!(!serves(&only_index, "/search"));
    }

    #[test]
    fn executor_section_overrides_global_keys() {
        let mut own = Struct::default();
        own.fields.insert("threshold".into(), number_value(0.9));
        let mut params = BTreeMap::new();
        params.insert("threshold".into(), number_value(0.5));
        params.insert("mode".into(), string_value("fast"));
        params.insert(
            "blur".into(),
            Value {
                kind: Some(Kind::StructValue(own)),
            },
        );
        let names = vec!["blur".to_string(), "other".to_string()];
        let blur = parameters_for(&params, "blur", &names);
        assert_eq!(blur["threshold"], number_value(0.9));
        assert_eq!(blur["mode"], string_value("fast"));
        assert!(!blur.contains_key("blur"));
        let other = parameters_for(&params, "other", &names);
        assert_eq!(other["threshold"], number_value(0.5));
    }
}
