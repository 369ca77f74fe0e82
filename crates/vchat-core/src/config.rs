//! Flow and executor YAML, with Jina's keys.
//!
//! Parsed with `serde-saphyr`, which reports the line and column of every error;
//! every struct denies unknown keys, so a typo is an error that names the file, the
//! line and the key rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::{ConfigError, Origin};

/// A flow's executor's `with:` values, each with where it was written.
pub type WithValues = BTreeMap<String, (serde_json::Value, Origin)>;

/// Default number of requests of one stream processed at once.
pub const DEFAULT_PREFETCH: usize = 16;
/// Default largest request message accepted, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Default most `Call` streams open at once on one gateway.
pub const DEFAULT_MAX_STREAMS: usize = 256;
/// Default largest frame (a document's tensor or blob), in bytes: a 4K BGR frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 3840 * 2160 * 3;
/// Default most frames per second one WebSocket connection may send.
pub const DEFAULT_WEBSOCKET_MAX_FPS: f64 = 30.0;
/// Default most TCP connections open at once on the gRPC port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default most streams open at once on one HTTP/2 connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 16;
/// Default most streams open at once from one client address (an IPv4 address,
/// or an IPv6 /64 network), per door.
pub const DEFAULT_MAX_STREAMS_PER_IP: usize = 16;
/// Default seconds a stream may go without a request (a frame) before it is ended.
pub const DEFAULT_STREAM_IDLE_TIMEOUT_S: f64 = 30.0;
/// Default seconds a peer may take nothing of a stream's responses before it is
/// dropped.
pub const DEFAULT_SEND_TIMEOUT_S: f64 = 20.0;
/// Default most bytes of responses waiting for one stream's peer to take them:
/// a few mosaics. A response larger than this still goes out, alone.
pub const DEFAULT_MAX_STREAM_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default seconds a new connection has to finish its TLS handshake and send
/// the HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT_S: f64 = 10.0;
/// Default seconds between HTTP/2 keepalive pings on a quiet gRPC connection.
pub const DEFAULT_KEEPALIVE_INTERVAL_S: f64 = 20.0;
/// Default most rooms given a label of their own in the metrics.
pub const DEFAULT_METRICS_MAX_ROOMS: usize = 64;

/// The gateway protocols a Flow may name in `with.protocol`.
pub const PROTOCOLS: [&str; 2] = ["grpc", "websocket"];

type SpannedMap = BTreeMap<String, Spanned<serde_json::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    jtype: Spanned<String>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    with: Option<FlowWith>,
    #[serde(default)]
    executors: Vec<Spanned<ExecutorEntry>>,
}

/// The Flow's own settings (`with:` of a `jtype: Flow` file).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowWith {
    /// Address to listen on (default `0.0.0.0`, as Jina).
    #[serde(default)]
    pub host: Option<String>,
    /// Port to listen on; 0 or absent picks a free port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Gateway protocols, one or a list (as Jina): `grpc` (always served, on
    /// `port`) and `websocket` (the browser client and its WebSocket, on
    /// `port_http`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub protocol: Vec<String>,
    /// Port of the browser side (`protocol: websocket`): the web page at `/` and
    /// the WebSocket at `/ws`; 0 or absent picks a free port, printed at start.
    #[serde(default)]
    pub port_http: Option<u16>,
    /// Origins (`https://chat.example.org`, or `*` for any) whose pages may open
    /// the WebSocket besides the gateway's own; default none: same origin only.
    #[serde(default)]
    pub websocket_origins: Vec<String>,
    /// At most this many frames per second from one WebSocket connection
    /// (bursts of up to one second's worth); the excess is answered
    /// `rate_limited`, unprocessed. Default [`DEFAULT_WEBSOCKET_MAX_FPS`].
    #[serde(default)]
    pub websocket_max_fps: Option<f64>,
    /// Requests of one stream processed at once when the client does not say
    /// (its `__prefetch__` metadata); default [`DEFAULT_PREFETCH`].
    #[serde(default)]
    pub prefetch: Option<usize>,
    /// Largest request message, in bytes; a larger one is answered with an ERROR
    /// status. Default [`DEFAULT_MAX_MESSAGE_BYTES`].
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Most `Call` streams open at once; one more is refused with
    /// RESOURCE_EXHAUSTED. Default [`DEFAULT_MAX_STREAMS`].
    #[serde(default)]
    pub max_streams: Option<usize>,
    /// Largest frame (a document's tensor buffer or blob) in bytes; a request with
    /// a larger one is answered with an ERROR status. Default
    /// [`DEFAULT_MAX_FRAME_BYTES`].
    #[serde(default)]
    pub max_frame_bytes: Option<usize>,
    /// Ceiling, in MiB, on the bytes this process holds in users' frames, rooms'
    /// cached mosaics, requests in flight and responses waiting for their peers
    /// ([`crate::budget`]); while more is held,
    /// new streams are refused with RESOURCE_EXHAUSTED (503 on the WebSocket).
    /// Default [`DEFAULT_MAX_MEMORY_MB`](crate::budget::DEFAULT_MAX_MEMORY_MB).
    #[serde(default)]
    pub max_memory_mb: Option<usize>,
    /// PEM certificate chain: serve gRPC over TLS (with `ssl_keyfile`). A
    /// relative path is relative to the Flow YAML.
    #[serde(default)]
    pub ssl_certfile: Option<PathBuf>,
    /// PEM private key of `ssl_certfile`.
    #[serde(default)]
    pub ssl_keyfile: Option<PathBuf>,
    /// Serve Prometheus metrics on `port_monitoring`.
    #[serde(default)]
    pub monitoring: Option<bool>,
    /// Port of the metrics endpoint (`GET /metrics`); 0 or absent picks a free
    /// port, printed at start.
    #[serde(default)]
    pub port_monitoring: Option<u16>,
    /// At most this many responses with frames per second on one stream in
    /// `send-receive` mode; requests over it are answered as skipped.
    #[serde(default)]
    pub max_fps: Option<f64>,
    /// How each endpoint's stream flows; endpoints not listed are `send-receive`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, StreamMode>,
    /// Most TCP connections open at once on the gRPC port; a new one over it is
    /// closed as soon as it is accepted. Default [`DEFAULT_MAX_CONNECTIONS`].
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Most streams open at once on one HTTP/2 connection (the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` the gateway announces); a client opens
    /// more only as others end. Default [`DEFAULT_MAX_CONCURRENT_STREAMS`].
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Most streams open at once from one client address (IPv4 address or IPv6
    /// /64), per door (gRPC `Call` streams; WebSockets); one more is refused with
    /// RESOURCE_EXHAUSTED (WebSocket: 429). Default [`DEFAULT_MAX_STREAMS_PER_IP`].
    #[serde(default)]
    pub max_streams_per_ip: Option<usize>,
    /// Seconds a stream may go without a request (a WebSocket: without a frame;
    /// pings and pongs do not count) while none of its requests is in flight;
    /// then it is ended with DEADLINE_EXCEEDED (WebSocket: closed with 1008).
    /// Default [`DEFAULT_STREAM_IDLE_TIMEOUT_S`].
    #[serde(default)]
    pub stream_idle_timeout_s: Option<f64>,
    /// Seconds a gRPC peer may take nothing of a stream's waiting responses;
    /// then the stream ends and the peer's connection is closed. Default
    /// [`DEFAULT_SEND_TIMEOUT_S`].
    #[serde(default)]
    pub send_timeout_s: Option<f64>,
    /// Most bytes of encoded responses waiting for one gRPC stream's peer; past
    /// it no further response is produced (and no further request read) until
    /// the peer takes some. Default [`DEFAULT_MAX_STREAM_QUEUE_BYTES`].
    #[serde(default)]
    pub max_stream_queue_bytes: Option<usize>,
    /// Seconds a new gRPC connection has to finish its TLS handshake and send
    /// the HTTP/2 preface; then it is closed. Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT_S`].
    #[serde(default)]
    pub handshake_timeout_s: Option<f64>,
    /// Seconds between HTTP/2 keepalive pings on the gRPC port; a ping not
    /// answered within as long again closes the connection. Default
    /// [`DEFAULT_KEEPALIVE_INTERVAL_S`].
    #[serde(default)]
    pub keepalive_interval_s: Option<f64>,
    /// Most rooms given a `room` label of their own in `vchat_room_users` (the
    /// fullest ones); every room is counted in `vchat_rooms`. Default
    /// [`DEFAULT_METRICS_MAX_ROOMS`].
    #[serde(default)]
    pub metrics_max_rooms: Option<usize>,
}

/// How a stream flows on an endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    /// A frame in, a frame out (the chat).
    #[default]
    SendReceive,
    /// Frames in; each answered with an acknowledgement (tags and extra outputs,
    /// no frame).
    Send,
    /// One request in, a stream of frames out from a source executor.
    Receive,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutorEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uses: Option<Spanned<String>>,
    #[serde(default)]
    uses_with: Option<SpannedMap>,
    #[serde(default)]
    uses_metas: Option<Metas>,
    #[serde(default)]
    host: Option<OneOrMany<String>>,
    #[serde(default)]
    port: Option<OneOrMany<u16>>,
    #[serde(default)]
    external: Option<bool>,
    #[serde(default)]
    replicas: Option<usize>,
    #[serde(default)]
    needs: Option<OneOrMany<String>>,
    #[serde(default)]
    timeout_send: Option<u64>,
    #[serde(default)]
    retries: Option<i64>,
    #[serde(default)]
    route_by: Option<String>,
    #[serde(default)]
    skip_frames: Option<bool>,
    #[serde(default)]
    max_response_bytes: Option<usize>,
    #[serde(default)]
    keepalive_interval_s: Option<u64>,
    #[serde(default)]
    keepalive_timeout_s: Option<u64>,
    #[serde(default)]
    stop_grace_s: Option<f64>,
    #[serde(default)]
    resolve_interval_s: Option<f64>,
    #[serde(default)]
    dns_replicas: Option<bool>,
}

/// A YAML value that may be one item or a list of them (Jina allows both for
/// `host`, `port` and `needs`).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(OneOrMany::<T>::deserialize(d)?.into_vec())
}

impl FlowWith {
    /// Whether the Flow serves the browser side (`protocol` names `websocket`).
    pub fn serves_websocket(&self) -> bool {
        self.protocol
            .iter()
            .any(|p| p.eq_ignore_ascii_case("websocket"))
    }
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

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
    /// How often an external executor's host names are resolved again
    /// (`resolve_interval_s`). `None`: [`DEFAULT_RESOLVE_INTERVAL_S`].
    pub resolve_interval: Option<std::time::Duration>,
    /// The one `host` is a DNS name whose addresses are the replicas, found
    /// anew every `resolve_interval` (`dns_replicas: true`; a headless Service).
    pub dns_replicas: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutorFile {
    jtype: Spanned<String>,
    #[serde(default)]
    with: Option<SpannedMap>,
    #[serde(default)]
    metas: Option<Metas>,
    #[serde(default)]
    py_modules: Option<Spanned<Vec<String>>>,
}

/// Jina's `metas:` of an executor. `description` and `workspace` are accepted so
/// that Jina's executor YAMLs load; vchat does not use them.
#[derive(Debug, Clone, Default, Deserialize)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
struct Metas {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    py_modules: Option<Spanned<Vec<String>>>,
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

fn origin_of<T>(file: &Path, s: &Spanned<T>) -> Origin {
    Origin {
        file: file.to_path_buf(),
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

fn parse_yaml<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location();
        let origin = Origin {
            file: file.to_path_buf(),
            line: loc.map_or(0, |l| l.line()),
            column: loc.map_or(0, |l| l.column()),
        };
        // serde-saphyr's Display adds its own position and a source excerpt; the
        // origin already says where, so keep only the first line of the message.
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid YAML").to_string();
        ConfigError::new(origin, strip_position(&first))
    })
}

/// Removes serde-saphyr's "error: line X column Y: " prefix (or " at line X, column
/// Y" suffix), which the origin already says.
fn strip_position(msg: &str) -> String {
    let mut m = msg.strip_prefix("error: ").unwrap_or(msg);
    if m.starts_with("line ")
        && let Some(i) = m.find(": ")
    {
        m = &m[i + 2..];
    }
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file)
        .map_err(|e| ConfigError::new(Origin::file(file), format!("cannot read: {e}")))
}

fn with_values(file: &Path, map: Option<SpannedMap>) -> WithValues {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let o = origin_of(file, &v);
            (k, (v.value, o))
        })
        .collect()
}

/// `host:port` of every replica of an external executor: hosts and ports are one
/// value or lists; one list and one value pair every item with the value, two
/// lists pair item by item.
fn external_addresses(
    host: Option<OneOrMany<String>>,
    port: Option<OneOrMany<u16>>,
) -> Result<Vec<String>, String> {
    let (hosts, ports) = match (host, port) {
        (None, None) => return Ok(Vec::new()),
        (Some(h), Some(p)) => (h.into_vec(), p.into_vec()),
        (Some(_), None) => return Err("`host` given without `port`".into()),
        (None, Some(p)) => (vec!["127.0.0.1".to_string()], p.into_vec()),
    };
    let n = hosts.len().max(ports.len());
    if hosts.is_empty()
        || ports.is_empty()
        || (hosts.len() != n && hosts.len() != 1)
        || (ports.len() != n && ports.len() != 1)
    {
        return Err(format!(
            "{} host(s) and {} port(s) do not pair up",
            hosts.len(),
            ports.len()
        ));
    }
    Ok((0..n)
        .map(|i| {
            let h = &hosts[if hosts.len() == 1 { 0 } else { i }];
            let p = ports[if ports.len() == 1 { 0 } else { i }];
            let h = h.strip_prefix("grpc://").unwrap_or(h);
            format!("{h}:{p}")
        })
        .collect())
}

/// Whether `uses` names a YAML file (rather than a registered jtype).
fn is_path(uses: &str) -> bool {
    uses.ends_with(".yml") || uses.ends_with(".yaml") || uses.contains('/')
}

/// Reads an executor YAML (`jtype`, `with`, `metas`, `py_modules`).
pub fn load_executor(file: &Path) -> Result<ExecutorSpec, ConfigError> {
    let text = read(file)?;
    let parsed: ExecutorFile = parse_yaml(file, &text)?;
    let metas = parsed.metas.unwrap_or_default();
    let base = file.parent().unwrap_or(Path::new("."));
    let py_modules = parsed
        .py_modules
        .or(metas.py_modules)
        .map(|m| m.value.iter().map(|p| base.join(p)).collect())
        .unwrap_or_default();
    Ok(ExecutorSpec {
        name: metas
            .name
            .clone()
            .unwrap_or_else(|| parsed.jtype.value.clone()),
        jtype: parsed.jtype.value.clone(),
        jtype_origin: origin_of(file, &parsed.jtype),
        with: with_values(file, parsed.with),
        origin: Origin::file(file),
        py_modules,
        file: Some(file.to_path_buf()),
        deployment: Deployment {
            replicas: 1,
            retries: DEFAULT_RETRIES,
            ..Default::default()
        },
    })
}

/// Reads a Flow YAML and the executor YAMLs it names (paths relative to the Flow
/// file).
pub fn load_flow(file: &Path) -> Result<FlowSpec, ConfigError> {
    let text = read(file)?;
    let parsed: FlowFile = parse_yaml(file, &text)?;
    let _ = parsed.version;
    if parsed.jtype.value != "Flow" {
        return Err(ConfigError::new(
            origin_of(file, &parsed.jtype),
            format!(
                "jtype: expected `Flow`, got `{}` (an executor YAML is served with `vchat executor --uses`)",
                parsed.jtype.value
            ),
        ));
    }
    let mut with = parsed.with.unwrap_or_default();
    if with.ssl_certfile.is_some() != with.ssl_keyfile.is_some() {
        return Err(ConfigError::new(
            Origin::file(file),
            "with.ssl_certfile and with.ssl_keyfile go together: give both, or neither",
        ));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    for p in [&mut with.ssl_certfile, &mut with.ssl_keyfile]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
    if let Some(p) = with
        .protocol
        .iter()
        .find(|p| !PROTOCOLS.iter().any(|known| p.eq_ignore_ascii_case(known)))
    {
        return Err(ConfigError::new(
            Origin::file(file),
            format!("with.protocol: `{p}` is not served; use `grpc` and/or `websocket`"),
        ));
    }
    if let Some(f) = with.websocket_max_fps
        && !(f > 0.0 && f.is_finite())
    {
        return Err(ConfigError::new(
            Origin::file(file),
            format!("with.websocket_max_fps must be a positive number, got {f}"),
        ));
    }
    // A stream's frames are at least 1/max_fps seconds apart (0 or less: no
    // limit). A rate so small that this gap is no Duration (1e-300) is refused
    // here, not found when a stream opens.
    if let Some(f) = with.max_fps
        && f > 0.0
        && std::time::Duration::try_from_secs_f64(1.0 / f).is_err()
    {
        return Err(ConfigError::new(
            Origin::file(file),
            format!("with.max_fps: {f} frames per second is too small to be a rate"),
        ));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut executors: Vec<ExecutorSpec> = Vec::new();
    for (i, entry) in parsed.executors.into_iter().enumerate() {
        let entry_origin = origin_of(file, &entry);
        let entry = entry.value;
        let name = entry
            .name
            .clone()
            .or(entry.uses_metas.as_ref().and_then(|m| m.name.clone()))
            .unwrap_or_else(|| format!("executor{i}"));
        let at = |msg: String| {
            ConfigError::new(entry_origin.clone(), format!("executor `{name}`: {msg}"))
        };
        let mut spec = match &entry.uses {
            Some(uses) if is_path(&uses.value) => {
                let path = base.join(&uses.value);
                if !path.is_file() {
                    return Err(ConfigError::new(
                        origin_of(file, uses),
                        format!(
                            "uses: executor file `{}` not found (paths are relative to the Flow file)",
                            path.display()
                        ),
                    ));
                }
                load_executor(&path)?
            }
            Some(uses) => ExecutorSpec {
                name: uses.value.clone(),
                jtype: uses.value.clone(),
                jtype_origin: origin_of(file, uses),
                with: WithValues::new(),
                origin: origin_of(file, uses),
                py_modules: Vec::new(),
                file: None,
                deployment: Deployment::default(),
            },
            None => ExecutorSpec {
                name: name.clone(),
                jtype: String::new(),
                jtype_origin: entry_origin.clone(),
                with: WithValues::new(),
                origin: entry_origin.clone(),
                py_modules: Vec::new(),
                file: None,
                deployment: Deployment::default(),
            },
        };
        spec.name = name.clone();
        spec.origin = entry_origin.clone();
        spec.with.extend(with_values(file, entry.uses_with));
        let external = external_addresses(entry.host, entry.port).map_err(at)?;
        if entry.external == Some(true) && external.is_empty() {
            return Err(at("external: true needs `host` and `port`".into()));
        }
        if external.is_empty() && entry.uses.is_none() {
            return Err(at("needs `uses` (an executor YAML or jtype), or `host` and `port` of an external executor".into()));
        }
        let dns_replicas = entry.dns_replicas.unwrap_or(false);
        if dns_replicas && external.len() != 1 {
            return Err(at(format!(
                "dns_replicas: true needs one `host` and one `port` (a name whose addresses are the replicas), got {} address(es)",
                external.len()
            )));
        }
        if dns_replicas && entry.replicas.is_some() {
            return Err(at(
                "dns_replicas: true finds the replicas in DNS; leave `replicas` out".into(),
            ));
        }
        let resolve_interval = match entry.resolve_interval_s {
            None => None,
            Some(s)
                if s.is_finite()
                    && (RESOLVE_INTERVAL_RANGE_S.0..=RESOLVE_INTERVAL_RANGE_S.1).contains(&s) =>
            {
                Some(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => {
                return Err(at(format!(
                    "resolve_interval_s must be between {} and {} seconds, got {s}",
                    RESOLVE_INTERVAL_RANGE_S.0, RESOLVE_INTERVAL_RANGE_S.1
                )));
            }
        };
        if resolve_interval.is_some() && external.is_empty() {
            return Err(at(
                "resolve_interval_s applies to an external executor (`host` and `port`)".into(),
            ));
        }
        if !external.is_empty() && entry.replicas.is_some_and(|r| r != external.len()) {
            return Err(at(format!(
                "replicas: {} but {} external address(es) given; list one host/port per replica",
                entry.replicas.unwrap_or(0),
                external.len()
            )));
        }
        let retries = match entry.retries {
            None => DEFAULT_RETRIES,
            Some(r) if r < 0 => DEFAULT_RETRIES,
            Some(r) => u32::try_from(r)
                .map_err(|_| at(format!("retries: {r} is more than {}", u32::MAX)))?,
        };
        spec.deployment = Deployment {
            replicas: if external.is_empty() {
                entry.replicas.unwrap_or(1)
            } else {
                external.len()
            },
            external,
            needs: entry.needs.map(OneOrMany::into_vec).unwrap_or_default(),
            route_by: entry.route_by,
            timeout_send: entry.timeout_send.map(std::time::Duration::from_millis),
            retries,
            skip_frames: entry.skip_frames.unwrap_or(false),
            max_response_bytes: entry.max_response_bytes,
            keepalive_interval: entry
                .keepalive_interval_s
                .map(std::time::Duration::from_secs),
            keepalive_timeout: entry
                .keepalive_timeout_s
                .map(std::time::Duration::from_secs),
            stop_grace: match entry.stop_grace_s {
                None => None,
                Some(g) if g.is_finite() && (0.0..=3600.0).contains(&g) => {
                    Some(std::time::Duration::from_secs_f64(g))
                }
                Some(g) => {
                    return Err(at(format!(
                        "stop_grace_s must be between 0 and 3600 seconds, got {g}"
                    )));
                }
            },
            resolve_interval,
            dns_replicas,
        };
        if spec.deployment.replicas == 0 {
            return Err(at("replicas must be at least 1".into()));
        }
        if executors.iter().any(|e| e.name == spec.name) || spec.name == "gateway" {
            return Err(ConfigError::new(
                entry_origin,
                format!(
                    "executors[{i}]: name `{}` is used twice (or is `gateway`)",
                    spec.name
                ),
            ));
        }
        executors.push(spec);
    }
    for e in &executors {
        for need in &e.deployment.needs {
            if need != "gateway" && !executors.iter().any(|o| &o.name == need) {
                return Err(ConfigError::new(
                    e.origin.clone(),
                    format!(
                        "executor `{}`: needs `{need}`, which is not an executor of this Flow",
                        e.name
                    ),
                ));
            }
        }
    }
    Ok(FlowSpec {
        file: file.to_path_buf(),
        with,
        executors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vchat-config-{tag}-{}", crate::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn resolves_executor_files_relative_to_the_flow() {
        let d = tmpdir("rel");
        write(
            &d,
            "ex/config.yml",
            "jtype: VideoChatExecutor\nwith:\n  idle_timeout_s: 3\n",
        );
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nwith:\n  port: 0\nexecutors:\n  - uses: ex/config.yml\n    name: agg\n    uses_with:\n      idle_timeout_s: 9\n",
        );
        let spec = load_flow(&flow).unwrap();
        assert_eq!(spec.with.port, Some(0));
        let ex = &spec.executors[0];
        assert_eq!(
            (ex.name.as_str(), ex.jtype.as_str()),
            ("agg", "VideoChatExecutor")
        );
        let (v, o) = &ex.with["idle_timeout_s"];
        assert_eq!(v, &serde_json::json!(9));
        assert_eq!((o.file.as_path(), o.line), (flow.as_path(), 8));
    }

    #[test]
    fn tls_paths_are_relative_to_the_flow_and_go_together() {
        let d = tmpdir("tls");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nwith:\n  ssl_certfile: certs/c.pem\n  ssl_keyfile: /abs/k.pem\n  max_streams: 8\n  max_frame_bytes: 100\n  monitoring: true\n  port_monitoring: 0\n",
        );
        let w = load_flow(&flow).unwrap().with;
        assert_eq!(w.ssl_certfile, Some(d.join("certs/c.pem")));
        assert_eq!(w.ssl_keyfile, Some(PathBuf::from("/abs/k.pem")));
        assert_eq!((w.max_streams, w.max_frame_bytes), (Some(8), Some(100)));
        assert_eq!((w.monitoring, w.port_monitoring), (Some(true), Some(0)));
        let half = write(
            &d,
            "half.yml",
            "jtype: Flow\nwith:\n  ssl_certfile: c.pem\n",
        );
        let err = load_flow(&half).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let d = tmpdir("unknown");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - uses: Foo\n    nmae: x\n",
        );
        let err = load_flow(&flow).unwrap_err();
        assert_eq!(err.origin.line, 4, "{err}");
        assert!(err.to_string().contains("nmae"), "{err}");
        assert!(!err.to_string().contains("line 4 column"), "{err}");
        assert!(err.to_string().contains("flow.yml:4"), "{err}");
    }

    #[test]
    fn missing_executor_file_is_named() {
        let d = tmpdir("missing");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - uses: nope/config.yml\n",
        );
        let err = load_flow(&flow).unwrap_err().to_string();
        assert!(
            err.contains("flow.yml:3") && err.contains("nope/config.yml"),
            "{err}"
        );
    }

    #[test]
    fn a_bare_uses_names_a_jtype_and_names_default() {
        let d = tmpdir("bare");
        let remote = write(
            &d,
            "remote.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    host: [h1, h2]\n    port: 7\n    external: true\n  - name: b\n    uses: X\n    replicas: 3\n    needs: [gateway, a]\n    route_by: room\n    timeout_send: 250\n",
        );
        let spec = load_flow(&remote).unwrap();
        assert_eq!(spec.executors[0].deployment.external, vec!["h1:7", "h2:7"]);
        assert_eq!(spec.executors[0].deployment.replicas, 2);
        let b = &spec.executors[1].deployment;
        assert_eq!(
            (b.replicas, b.needs.clone(), b.route_by.as_deref()),
            (
                3,
                vec!["gateway".to_string(), "a".to_string()],
                Some("room")
            )
        );
        assert_eq!(b.timeout_send, Some(std::time::Duration::from_millis(250)));
        let bad = write(
            &d,
            "bad.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    uses: X\n    needs: nope\n",
        );
        assert!(
            load_flow(&bad)
                .unwrap_err()
                .to_string()
                .contains("needs `nope`")
        );
        let bad = write(
            &d,
            "bad2.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    external: true\n",
        );
        assert!(load_flow(&bad).unwrap_err().to_string().contains("host"));
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - uses: VideoChatExecutor\n",
        );
        let spec = load_flow(&flow).unwrap();
        assert_eq!(spec.executors[0].jtype, "VideoChatExecutor");
        assert_eq!(spec.executors[0].name, "executor0");
    }

    #[test]
    fn external_executor_link_settings() {
        let d = tmpdir("link");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    host: h\n    port: 7\n    max_response_bytes: 1000\n    keepalive_interval_s: 0\n    keepalive_timeout_s: 5\n    stop_grace_s: 0.5\n  - name: b\n    host: h\n    port: 8\n",
        );
        let spec = load_flow(&flow).unwrap();
        let a = &spec.executors[0].deployment;
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            (
                a.max_response_bytes,
                a.keepalive_interval,
                a.keepalive_timeout
            ),
            (Some(1000), Some(secs(0)), Some(secs(5)))
        );
        assert_eq!(a.stop_grace, Some(std::time::Duration::from_millis(500)));
        let b = &spec.executors[1].deployment;
        assert_eq!(
            (b.max_response_bytes, b.keepalive_interval, b.stop_grace),
            (None, None, None)
        );
        let bad = write(
            &d,
            "bad.yml",
            "jtype: Flow\nexecutors:\n  - uses: X\n    stop_grace_s: -1\n",
        );
        let err = load_flow(&bad).unwrap_err().to_string();
        assert!(err.contains("stop_grace_s"), "{err}");
    }

    #[test]
    fn py_modules_are_resolved_next_to_the_yaml() {
        let d = tmpdir("py");
        let ex = write(
            &d,
            "executor/config.yml",
            "jtype: VideoChatExecutor\npy_modules:\n  - executor.py\n",
        );
        let spec = load_executor(&ex).unwrap();
        assert_eq!(spec.py_modules, vec![d.join("executor/executor.py")]);
    }

    #[test]
    fn not_a_flow_is_an_error() {
        let d = tmpdir("notflow");
        let f = write(&d, "flow.yml", "jtype: VideoChatExecutor\n");
        assert!(
            load_flow(&f)
                .unwrap_err()
                .to_string()
                .contains("expected `Flow`")
        );
    }

    #[test]
    fn protocol_is_one_name_or_a_list() {
        let d = tmpdir("protocol");
        let one = write(&d, "one.yml", "jtype: Flow\nwith:\n  protocol: grpc\n");
        let spec = load_flow(&one).unwrap();
        assert_eq!(spec.with.protocol, vec!["grpc"]);
        assert!(!spec.with.serves_websocket());
        let both = write(
            &d,
            "both.yml",
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\n  websocket_origins: [https://chat.example.org]\n  websocket_max_fps: 12\n",
        );
        let spec = load_flow(&both).unwrap();
        assert!(spec.with.serves_websocket());
        assert_eq!(spec.with.port_http, Some(0));
        assert_eq!(
            spec.with.websocket_origins,
            vec!["https://chat.example.org"]
        );
        assert_eq!(spec.with.websocket_max_fps, Some(12.0));
        let http = write(
            &d,
            "http.yml",
            "jtype: Flow\nwith:\n  protocol: [grpc, http]\n",
        );
        let err = load_flow(&http).unwrap_err().to_string();
        assert!(err.contains("`http` is not served"), "{err}");
        let fps = write(
            &d,
            "fps.yml",
            "jtype: Flow\nwith:\n  protocol: websocket\n  websocket_max_fps: 0\n",
        );
        let err = load_flow(&fps).unwrap_err().to_string();
        assert!(
            err.contains("websocket_max_fps must be a positive"),
            "{err}"
        );
    }

    #[test]
    fn max_memory_mb_is_a_flow_setting() {
        let d = tmpdir("memory");
        let flow = write(&d, "flow.yml", "jtype: Flow\nwith:\n  max_memory_mb: 512\n");
        assert_eq!(load_flow(&flow).unwrap().with.max_memory_mb, Some(512));
        let bad = write(&d, "bad.yml", "jtype: Flow\nwith:\n  max_memory_mb: lots\n");
        assert!(load_flow(&bad).is_err());
    }

    #[test]
    fn replicas_by_name_settings_parse_and_are_checked() {
        let d = tmpdir("discovery");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    host: [chat-0.chat, chat-1.chat]\n    port: 8080\n    resolve_interval_s: 2.5\n  - name: b\n    host: chat.ns.svc\n    port: 8080\n    dns_replicas: true\n",
        );
        let spec = load_flow(&flow).unwrap();
        let (a, b) = (&spec.executors[0].deployment, &spec.executors[1].deployment);
        assert_eq!(a.external, ["chat-0.chat:8080", "chat-1.chat:8080"]);
        assert_eq!(
            a.resolve_interval,
            Some(std::time::Duration::from_millis(2500))
        );
        assert!(!a.dns_replicas);
        assert_eq!(b.external, ["chat.ns.svc:8080"]);
        assert!(b.dns_replicas && b.resolve_interval.is_none());
        for (text, want) in [
            (
                "host: [a, b]\n    port: 1\n    dns_replicas: true",
                "needs one `host`",
            ),
            (
                "host: a\n    port: 1\n    dns_replicas: true\n    replicas: 2",
                "leave `replicas` out",
            ),
            (
                "host: a\n    port: 1\n    resolve_interval_s: 0",
                "resolve_interval_s must be between",
            ),
            (
                "host: a\n    port: 1\n    resolve_interval_s: .nan",
                "resolve_interval_s must be between",
            ),
            (
                "uses: X\n    resolve_interval_s: 3",
                "applies to an external executor",
            ),
        ] {
            let f = write(
                &d,
                "bad.yml",
                &format!("jtype: Flow\nexecutors:\n  - name: a\n    {text}\n"),
            );
            let err = load_flow(&f).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
