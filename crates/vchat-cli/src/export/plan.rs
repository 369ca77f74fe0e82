//! What a Flow becomes when it is exported: each in-process executor a service of
//! its own, and the gateway's Flow naming them by their replicas' DNS names.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use vchat_core::Registry;
use vchat_core::budget::DEFAULT_MAX_MEMORY_MB;
use vchat_core::config::{ExecutorSpec, FlowSpec, StreamMode, load_flow};

use super::*;

/// One in-process executor of the Flow, as a service of its own.
pub(crate) struct Service {
    /// Its object name: the Flow name as a DNS label.
    pub dns: String,
    pub replicas: usize,
    /// The executor YAML the container serves (`jtype`, `with`, `metas`).
    pub yaml: String,
    /// `vchat executor` arguments.
    pub args: Vec<String>,
}

/// What a Flow becomes: the executors as services, and the gateway's Flow.
pub(crate) struct Plan {
    /// The Flow's name as a DNS label (its file's stem), prefix of shared objects.
    pub app: String,
    pub services: Vec<Service>,
    /// The gateway's Flow YAML: the Flow's `with:` and every executor named by
    /// its replicas' addresses.
    pub gateway_flow: String,
    pub grpc_port: u16,
    pub http_port: Option<u16>,
    pub monitoring_port: Option<u16>,
    /// PEM certificate chain and key.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// The secrets of the Flow (access-token keys, external executors'
    /// secrets) by the environment variable the gateway's Flow reads each from.
    pub gateway_secrets: BTreeMap<String, String>,
    /// The secret every executor service requires of the gateways
    /// ([`EXECUTOR_SECRET_ENV`]); `None`: there is no executor service.
    pub executor_secret: Option<String>,
    /// Memory limit of a gateway container, in MiB: its `max_memory_mb` and
    /// room for code, stacks and connections.
    pub gateway_memory_mb: usize,
    pub gateway_args: Vec<String>,
}

/// Headroom over `max_memory_mb` in a gateway container's memory limit: the
/// process's code, thread stacks, TLS and HTTP/2 state (the idle gateway is
/// 10 MB; BENCHMARKS.md).
pub const GATEWAY_MEMORY_HEADROOM_MB: usize = 128;
/// Memory limit of an executor container, in MiB: the process-wide ceiling on
/// frames and mosaics held (`vchat executor` keeps the default
/// `max_memory_mb`) and the same headroom.
pub const EXECUTOR_MEMORY_MB: usize = DEFAULT_MAX_MEMORY_MB + GATEWAY_MEMORY_HEADROOM_MB;

impl Plan {
    /// Keeps the executor secret of an earlier export into the same directory
    /// (`file`, the Secret or env file it wrote): a re-export then changes no
    /// secret, so a pod restarted after `kubectl apply` still matches the
    /// others. A new secret is made only where there was none.
    pub(crate) fn keep_executor_secret(&mut self, file: &Path) -> anyhow::Result<()> {
        if self.executor_secret.is_none() || !file.exists() {
            return Ok(());
        }
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the earlier export's {}", file.display()))?;
        match secrets::find_secret(&text, EXECUTOR_SECRET_ENV) {
            Some(s) => self.executor_secret = Some(s),
            None => tracing::warn!(
                file = %file.display(),
                "no {EXECUTOR_SECRET_ENV} in the earlier export; a new executor secret is made"
            ),
        }
        Ok(())
    }

    pub(crate) fn new(flow: &Path, registry: &Registry) -> anyhow::Result<Plan> {
        let spec = load_flow(flow)?;
        let raw: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(flow)
                .with_context(|| format!("cannot read {}", flow.display()))?,
        )
        .with_context(|| format!("cannot read {} as YAML", flow.display()))?;
        Plan::from_spec(&spec, raw.get("with").cloned(), registry)
    }

    fn from_spec(
        spec: &FlowSpec,
        raw_with: Option<Value>,
        registry: &Registry,
    ) -> anyhow::Result<Plan> {
        if spec
            .with
            .endpoints
            .values()
            .any(|m| *m == StreamMode::Receive)
        {
            bail!(
                "with.endpoints: a `receive` endpoint needs its source executor in the gateway's process; such a Flow is not exported"
            );
        }
        let app = dns_label(
            spec.file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("vchat"),
        );
        let max_message_bytes = spec.with.max_message_bytes;
        let mut gateway_secrets = secrets::GatewaySecrets::default();
        let mut services: Vec<Service> = Vec::new();
        let mut executors = Vec::new();
        for e in &spec.executors {
            let d = &e.deployment;
            let mut entry = Map::new();
            entry.insert("name".into(), json!(e.name));
            if d.external.is_empty() {
                if !e.py_modules.is_empty() {
                    bail!(
                        "executor `{}` is a Python executor (py_modules): serve it with Jina in a container of your own and name it in the Flow by `host`/`port`",
                        e.name
                    );
                }
                let dns = unique_label(&e.name, &services);
                let route_by = match &d.route_by {
                    Some(r) => Some(r.clone()),
                    None => registry.build(e)?.route_by().map(str::to_string),
                };
                let hosts: Vec<String> = (0..d.replicas.max(1))
                    .map(|i| format!("{dns}-{i}.{dns}"))
                    .collect();
                entry.insert("host".into(), json!(hosts));
                entry.insert("port".into(), json!(EXECUTOR_PORT));
                entry.insert("external".into(), json!(true));
                entry.insert(
                    "executor_secret".into(),
                    json!(format!("${{{EXECUTOR_SECRET_ENV}}}")),
                );
                if let Some(r) = route_by {
                    entry.insert("route_by".into(), json!(r));
                }
                let mut args = vec![
                    "executor".to_string(),
                    "--uses".into(),
                    "executor.yml".into(),
                    "--host".into(),
                    "0.0.0.0".into(),
                    "--port".into(),
                    EXECUTOR_PORT.to_string(),
                    "--name".into(),
                    e.name.clone(),
                    "--secret-env".into(),
                    EXECUTOR_SECRET_ENV.into(),
                ];
                if let Some(m) = max_message_bytes {
                    args.extend(["--max-message-bytes".into(), m.to_string()]);
                }
                services.push(Service {
                    dns,
                    replicas: d.replicas.max(1),
                    yaml: executor_yaml(e)?,
                    args,
                });
            } else {
                let (hosts, ports): (Vec<String>, Vec<Value>) = d
                    .external
                    .iter()
                    .map(|a| match a.rsplit_once(':') {
                        Some((h, p)) => (
                            h.to_string(),
                            p.parse::<u16>().map(|p| json!(p)).unwrap_or(json!(p)),
                        ),
                        None => (a.clone(), json!(null)),
                    })
                    .unzip();
                entry.insert("host".into(), json!(hosts));
                entry.insert("port".into(), Value::Array(ports));
                entry.insert("external".into(), json!(true));
                if d.dns_replicas {
                    entry.insert("dns_replicas".into(), json!(true));
                }
                if d.tls {
                    entry.insert("tls".into(), json!(true));
                }
                if let Some(s) = &d.secret {
                    let env = gateway_secrets.take(
                        s,
                        &format!("executor `{}`: executor_secret", e.name),
                        &format!("{EXECUTOR_SECRET_ENV}_{}", secrets::env_name(&e.name)),
                    )?;
                    entry.insert("executor_secret".into(), json!(format!("${{{env}}}")));
                }
                if let Some(r) = &d.route_by {
                    entry.insert("route_by".into(), json!(r));
                }
            }
            if !d.needs.is_empty() {
                entry.insert("needs".into(), json!(d.needs));
            }
            if let Some(t) = d.timeout_send {
                entry.insert("timeout_send".into(), json!(t.as_millis() as u64));
            }
            entry.insert("retries".into(), json!(d.retries));
            if let Some(m) = d.max_response_bytes {
                entry.insert("max_response_bytes".into(), json!(m));
            }
            if let Some(k) = d.keepalive_interval {
                entry.insert("keepalive_interval_s".into(), json!(k.as_secs()));
            }
            if let Some(k) = d.keepalive_timeout {
                entry.insert("keepalive_timeout_s".into(), json!(k.as_secs()));
            }
            if let Some(r) = d.resolve_interval {
                entry.insert("resolve_interval_s".into(), json!(r.as_secs_f64()));
            }
            if d.skip_frames {
                tracing::warn!(
                    executor = %e.name,
                    "skip_frames applies to executors in the gateway's process; the exported executor service queues instead"
                );
            }
            executors.push(Value::Object(entry));
        }

        // The Flow's own settings as written (every key, including ones this
        // exporter does not know), with what the containers fix: where to
        // listen, and where TLS files are.
        let mut with = match raw_with {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let grpc_port = match spec.with.port {
            Some(p) if p != 0 => p,
            _ => DEFAULT_GATEWAY_PORT,
        };
        with.insert("host".into(), json!("0.0.0.0"));
        with.insert("port".into(), json!(grpc_port));
        // A port of 0 means "any free one", which a Service cannot name.
        let fixed = |p: Option<u16>, default: u16| p.filter(|p| *p != 0).unwrap_or(default);
        let http_port = spec
            .with
            .serves_websocket()
            .then_some(fixed(spec.with.port_http, DEFAULT_HTTP_PORT));
        if let Some(p) = http_port {
            with.insert("port_http".into(), json!(p));
        }
        let monitoring_port = spec
            .with
            .monitoring
            .unwrap_or(false)
            .then_some(fixed(spec.with.port_monitoring, DEFAULT_MONITORING_PORT));
        if let Some(p) = monitoring_port {
            with.insert("port_monitoring".into(), json!(p));
        }
        let tls = match (&spec.with.ssl_certfile, &spec.with.ssl_keyfile) {
            (Some(c), Some(k)) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
                };
                with.insert("ssl_certfile".into(), json!(format!("{TLS_DIR}/tls.crt")));
                with.insert("ssl_keyfile".into(), json!(format!("{TLS_DIR}/tls.key")));
                Some((read(c)?, read(k)?))
            }
            _ => None,
        };
        // Access-token keys: the Flow names each by a variable of the
        // gateway's environment, which a Secret sets.
        if let Some(auth) = &spec.with.auth {
            let mut keys = Map::new();
            for (id, value) in &auth.keys {
                let what = format!("with.auth.keys.{id}");
                let env = gateway_secrets.take(
                    value,
                    &what,
                    &format!("VCHAT_AUTH_KEY_{}", secrets::env_name(id)),
                )?;
                let len = gateway_secrets.env[&env].len();
                if len < vchat_auth::MIN_SECRET_BYTES {
                    bail!(
                        "{what}: the secret is {len} bytes; at least {} are needed \
                         (e.g. `openssl rand -hex 32`)",
                        vchat_auth::MIN_SECRET_BYTES
                    );
                }
                keys.insert(id.clone(), json!(format!("${{{env}}}")));
            }
            with.insert("auth".into(), json!({ "keys": keys }));
        }
        let executor_secret = if services.is_empty() {
            None
        } else {
            Some(secrets::generate()?)
        };
        let mut flow = Map::new();
        flow.insert("jtype".into(), json!("Flow"));
        flow.insert("with".into(), Value::Object(with));
        flow.insert("executors".into(), Value::Array(executors));
        let gateway_flow = yaml(&Value::Object(flow))?;
        Ok(Plan {
            app,
            services,
            gateway_flow,
            grpc_port,
            http_port,
            monitoring_port,
            tls,
            gateway_secrets: gateway_secrets.env,
            executor_secret,
            gateway_memory_mb: spec.with.max_memory_mb.unwrap_or(DEFAULT_MAX_MEMORY_MB)
                + GATEWAY_MEMORY_HEADROOM_MB,
            gateway_args: vec!["flow".into(), "--uses".into(), "flow.yml".into()],
        })
    }
}

/// The executor YAML an executor service serves: its jtype, its `with:` (the
/// executor file's, overridden by the Flow's `uses_with:`), its name.
fn executor_yaml(e: &ExecutorSpec) -> anyhow::Result<String> {
    let with: Map<String, Value> = e
        .with
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    let mut m = Map::new();
    m.insert("jtype".into(), json!(e.jtype));
    if !with.is_empty() {
        m.insert("with".into(), Value::Object(with));
    }
    m.insert("metas".into(), json!({ "name": e.name }));
    yaml(&Value::Object(m))
}

/// A DNS label for `name` no other service has (names differing only in case
/// would collide), and not the gateway's.
fn unique_label(name: &str, taken: &[Service]) -> String {
    let base = dns_label(name);
    let mut label = base.clone();
    let mut n = 2;
    while label == "gateway" || taken.iter().any(|s| s.dns == label) {
        label = format!("{base}-{n}");
        n += 1;
    }
    label
}
