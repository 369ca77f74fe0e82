//! Building a running Flow from its YAML: in-process executors from the
//! registry, external ones as gRPC clients, Python ones by starting Jina.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vchat_core::config::{DEFAULT_STOP_GRACE_S, ExecutorSpec, FlowSpec, StreamMode};
use vchat_core::{ConfigError, Executor, Registry};

use super::FlowRuntime;
use super::discovery::Replicas;
use super::python::{Launch, PythonExecutor};
use super::remote::{DEFAULT_TIMEOUT, RemoteExecutor, RemoteOptions};
use super::skip::SkipFrames;
use super::topology::{Node, Source};

/// Options for building a Flow's executors.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Interpreter that runs Python executors (`py_modules`) through Jina.
    pub python: PathBuf,
    /// A program with the hidden [`SUPERVISE_COMMAND`](crate::SUPERVISE_COMMAND)
    /// subcommand (the `vchat` binary) to lead each Python executor's process
    /// group (see [`crate::flow::python`]); `None`: `python` leads it, and a gateway
    /// killed with SIGKILL leaves it running.
    pub supervisor: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            python: std::env::var_os("VCHAT_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3")),
            supervisor: None,
        }
    }
}

impl FlowRuntime {
    /// Builds every executor `spec` names: in-process ones from `registry`,
    /// external ones as gRPC clients, Python ones (`py_modules`) by starting Jina.
    pub async fn build(
        spec: &FlowSpec,
        registry: &Registry,
        options: &BuildOptions,
    ) -> Result<Self, ConfigError> {
        let mut nodes = Vec::new();
        let mut python = Vec::new();
        for e in &spec.executors {
            nodes.push(build_node(e, registry, options, &mut python).await?);
        }
        for (i, e) in spec.executors.iter().enumerate() {
            nodes[i].needs = e
                .deployment
                .needs
                .iter()
                .map(|need| match need.as_str() {
                    "gateway" => Source::Gateway,
                    name => Source::Node(
                        spec.executors
                            .iter()
                            .position(|o| o.name == name)
                            .expect("needs checked when loading"),
                    ),
                })
                .collect();
        }
        let mut flow = Self::with_topology(nodes, python)
            .map_err(|m| ConfigError::new(vchat_core::Origin::file(&spec.file), m))?;
        flow.modes = spec.with.endpoints.clone();
        if flow.modes.values().any(|m| *m == StreamMode::Receive) && !flow.is_chain() {
            return Err(ConfigError::new(
                vchat_core::Origin::file(&spec.file),
                "with.endpoints: `receive` streams need a chain of executors (no `needs`) whose first is a source",
            ));
        }
        Ok(flow)
    }
}

async fn build_node(
    e: &ExecutorSpec,
    registry: &Registry,
    options: &BuildOptions,
    python: &mut Vec<PythonExecutor>,
) -> Result<Node, ConfigError> {
    let d = &e.deployment;
    let defaults = RemoteOptions::default();
    let remote_options = RemoteOptions {
        timeout: d.timeout_send.unwrap_or(DEFAULT_TIMEOUT),
        retries: d.retries,
        max_response_bytes: d.max_response_bytes.unwrap_or(defaults.max_response_bytes),
        keepalive_interval: match d.keepalive_interval {
            Some(i) if i.is_zero() => None,
            Some(i) => Some(i),
            None => defaults.keepalive_interval,
        },
        keepalive_timeout: d.keepalive_timeout.unwrap_or(defaults.keepalive_timeout),
        tls: d.tls,
        secret: match &d.secret {
            Some(s) => Some(vchat_auth::expand_env(s).map_err(|m| {
                ConfigError::new(
                    e.origin.clone(),
                    format!("executor `{}`: executor_secret: {m}", e.name),
                )
            })?),
            None => None,
        },
    };
    let at = |m: String| ConfigError::new(e.origin.clone(), format!("executor `{}`: {m}", e.name));
    let mut addrs = d.external.clone();
    if addrs.is_empty() && !e.py_modules.is_empty() {
        let yaml = e
            .file
            .as_ref()
            .ok_or_else(|| at("py_modules without an executor YAML".into()))?;
        let uses_with = (!e.with.is_empty()).then(|| {
            serde_json::Value::Object(
                e.with
                    .iter()
                    .map(|(k, (v, _))| (k.clone(), v.clone()))
                    .collect(),
            )
        });
        let launch = Launch {
            supervisor: options.supervisor.clone(),
            grace: d
                .stop_grace
                .unwrap_or(Duration::from_secs_f64(DEFAULT_STOP_GRACE_S)),
        };
        for _ in 0..d.replicas.max(1) {
            let p = PythonExecutor::start(&options.python, yaml, uses_with.as_ref(), &launch)
                .await
                .map_err(&at)?;
            addrs.push(p.addr().to_string());
            python.push(p);
        }
    }
    let mut discovery = None;
    let (replicas, endpoints, own_route): (Vec<Arc<dyn Executor>>, _, _) = if addrs.is_empty() {
        let mut replicas = Vec::new();
        for _ in 0..d.replicas.max(1) {
            let executor = registry.build(e)?;
            replicas.push(if d.skip_frames {
                Arc::new(SkipFrames::new(executor)) as Arc<dyn Executor>
            } else {
                executor
            });
        }
        let endpoints = replicas[0].endpoints();
        let route = replicas[0].route_by().map(str::to_string);
        (replicas, Some(endpoints), route)
    } else if !d.external.is_empty() {
        discovery = Some(
            Replicas::start(
                &e.name,
                super::discovery::source(&addrs, d.dns_replicas),
                remote_options,
                d.resolve_interval,
            )
            .await
            .map_err(&at)?,
        );
        (Vec::new(), None, None)
    } else {
        let replicas = addrs
            .iter()
            .map(|a| {
                RemoteExecutor::new(&e.name, a, remote_options.clone())
                    .map(|r| Arc::new(r) as Arc<dyn Executor>)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(&at)?;
        (replicas, None, None)
    };
    let mut node = Node::with_replicas(
        e.name.clone(),
        replicas,
        endpoints,
        d.route_by.clone().or(own_route),
    );
    node.discovery = discovery;
    Ok(node)
}
