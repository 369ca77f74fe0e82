//! How an executor of a Flow is deployed, and the YAML entries it is read from.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{FlowWith, SpannedMap, WithValues};
use crate::Origin;

/// Default retries of a call to an external executor that could not be reached.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default largest response accepted from an external executor, in bytes: room
/// for a mosaic of a few 4K frames.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;
/// Default seconds between HTTP/2 PINGs on an external executor's connection.
pub const DEFAULT_EXECUTOR_KEEPALIVE_INTERVAL_S: u64 = 10;
/// Default seconds a PING may stay unanswered before the connection is closed.
pub const DEFAULT_EXECUTOR_KEEPALIVE_TIMEOUT_S: u64 = 20;
/// Default seconds a Python executor's processes have to exit after SIGTERM
/// before they are killed.
pub const DEFAULT_STOP_GRACE_S: f64 = 3.0;
/// Default seconds between two resolutions of an external executor's host
/// names, which find replicas that came or went (a StatefulSet's pods).
pub const DEFAULT_RESOLVE_INTERVAL_S: f64 = 5.0;
/// Shortest and longest `resolve_interval_s` accepted, in seconds.
pub const RESOLVE_INTERVAL_RANGE_S: (f64, f64) = (0.1, 3600.0);

/// How an executor of a Flow is deployed: where it runs, how many copies, what it
/// follows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deployment {
    /// `host:port` of each replica of an external executor (one served by
    /// `vchat executor` or `jina executor`); empty when it runs in this process.
    pub external: Vec<String>,
    /// Copies of an in-process executor (at least 1).
    pub replicas: usize,
    /// Executors whose output this one takes (`gateway` is the request itself);
    /// empty: the previous executor of the list.
    pub needs: Vec<String>,
    /// Tag that pins requests to one replica (`room` for the video chat); `None`:
    /// the executor's own choice, else spread per request.
    pub route_by: Option<String>,
    /// Per-call timeout of an external executor (`timeout_send`, milliseconds).
    pub timeout_send: Option<std::time::Duration>,
    /// Retries of a call to an external executor that could not be reached.
    pub retries: u32,
    /// While the executor is busy, a stream's waiting frame is replaced by its
    /// newer one instead of queueing (the replaced request is answered skipped).
    pub skip_frames: bool,
    /// Largest response of an external executor, in bytes
    /// (`max_response_bytes`); a larger one is an ERROR response for its request.
    /// `None`: [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub max_response_bytes: Option<usize>,
    /// HTTP/2 PING interval on an external executor's connection
    /// (`keepalive_interval_s`; 0 turns pings off). `None`:
    /// [`DEFAULT_EXECUTOR_KEEPALIVE_INTERVAL_S`].
    pub keepalive_interval: Option<std::time::Duration>,
    /// How long a PING may stay unanswered before the connection is closed
    /// (`keepalive_timeout_s`). `None`: [`DEFAULT_EXECUTOR_KEEPALIVE_TIMEOUT_S`].
    pub keepalive_timeout: Option<std::time::Duration>,
    /// How long a Python executor's processes have to exit after SIGTERM before
    /// they are killed (`stop_grace_s`). `None`: [`DEFAULT_STOP_GRACE_S`].
    pub stop_grace: Option<std::time::Duration>,
    /// Calls an external executor over TLS (`tls: true`), checking its
    /// certificate against the system's roots and `VCHAT_EXECUTOR_CA` (a PEM file).
    pub tls: bool,
    /// The shared secret sent on every call to an external executor
    /// (`executor_secret`, `${ENV_VAR}` read at start-up), which
    /// `vchat executor --secret-env` requires.
    pub secret: Option<String>,
    /// How often an external executor's host names are resolved again
    /// (`resolve_interval_s`). `None`: [`DEFAULT_RESOLVE_INTERVAL_S`].
    pub resolve_interval: Option<std::time::Duration>,
    /// The one `host` is a DNS name whose addresses are the replicas, found
    /// anew every `resolve_interval` (`dns_replicas: true`; a headless Service).
    pub dns_replicas: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecutorEntry {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) uses: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) uses_with: Option<SpannedMap>,
    #[serde(default)]
    pub(super) uses_metas: Option<Metas>,
    #[serde(default)]
    pub(super) host: Option<OneOrMany<String>>,
    #[serde(default)]
    pub(super) port: Option<OneOrMany<u16>>,
    #[serde(default)]
    pub(super) external: Option<bool>,
    #[serde(default)]
    pub(super) replicas: Option<usize>,
    #[serde(default)]
    pub(super) needs: Option<OneOrMany<String>>,
    #[serde(default)]
    pub(super) timeout_send: Option<u64>,
    #[serde(default)]
    pub(super) retries: Option<i64>,
    #[serde(default)]
    pub(super) route_by: Option<String>,
    #[serde(default)]
    pub(super) skip_frames: Option<bool>,
    #[serde(default)]
    pub(super) max_response_bytes: Option<usize>,
    #[serde(default)]
    pub(super) keepalive_interval_s: Option<u64>,
    #[serde(default)]
    pub(super) keepalive_timeout_s: Option<u64>,
    #[serde(default)]
    pub(super) stop_grace_s: Option<f64>,
    #[serde(default)]
    pub(super) tls: Option<bool>,
    #[serde(default)]
    pub(super) executor_secret: Option<String>,
    #[serde(default)]
    pub(super) resolve_interval_s: Option<f64>,
    #[serde(default)]
    pub(super) dns_replicas: Option<bool>,
}

/// A YAML value that may be one item or a list of them (Jina allows both for
/// `host`, `port` and `needs`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

pub(super) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(OneOrMany::<T>::deserialize(d)?.into_vec())
}

impl<T> OneOrMany<T> {
    pub(super) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecutorFile {
    pub(super) jtype: Spanned<String>,
    #[serde(default)]
    pub(super) with: Option<SpannedMap>,
    #[serde(default)]
    pub(super) metas: Option<Metas>,
    #[serde(default)]
    pub(super) py_modules: Option<Spanned<Vec<String>>>,
}

/// Jina's `metas:` of an executor. `description` and `workspace` are accepted so
/// that Jina's executor YAMLs load; vchat does not use them.
#[derive(Debug, Clone, Default, Deserialize)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub(super) struct Metas {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) workspace: Option<String>,
    #[serde(default)]
    pub(super) py_modules: Option<Spanned<Vec<String>>>,
}

/// A parsed, resolved Flow: what the gateway needs to start.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// The Flow file.
    pub file: PathBuf,
    /// The Flow's own settings.
    pub with: FlowWith,
    /// Executors in the order they run.
    pub executors: Vec<ExecutorSpec>,
}

/// One executor of a Flow, or the one executor of an executor YAML.
#[derive(Debug, Clone)]
pub struct ExecutorSpec {
    /// Its name in the Flow (`executor0`, `executor1`, ... when not given).
    pub name: String,
    /// The registered type that implements it.
    pub jtype: String,
    /// Where the jtype was named.
    pub jtype_origin: Origin,
    /// `with:` of the executor YAML, overridden by `uses_with:` of the Flow.
    pub with: WithValues,
    /// Where the `uses:` (or the executor file) that declares it was written.
    pub origin: Origin,
    /// Python modules the YAML lists (`py_modules`): a Python executor.
    pub py_modules: Vec<PathBuf>,
    /// The executor YAML, when `uses` names one.
    pub file: Option<PathBuf>,
    /// Where and how it runs.
    pub deployment: Deployment,
}
