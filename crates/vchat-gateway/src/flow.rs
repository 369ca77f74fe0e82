//! The Flow runtime: a Flow's executors, run for each request in the order their
//! `needs` give (a chain by default), with replicas and room-sticky routing.
//!
//! ## Topology
//!
//! Each executor takes the output of the executors it `needs` (`gateway` is the
//! request itself; by default, the previous executor of the list). Executors whose
//! inputs are ready run concurrently. When an executor needs several others, their
//! outputs are **merged by document id**: documents keep the order of their first
//! appearance, needs taken in the order listed; for a document present in several,
//! a later need's content (tensor, blob or text) and MIME type replace an earlier
//! one's when set, and tags are merged key by key, later needs winning. The response
//! is the merge, in the same way, of the executors nobody needs.
//!
//! An executor that does not serve the request's endpoint, or whose name does not
//! match the request's `target_executor`, passes its input through unchanged.
//!
//! ## Replicas
//!
//! `replicas: N` (or a list of external hosts) runs N copies. An executor with a
//! routing tag (`route_by` in the YAML, or the executor's own
//! [`Executor::route_by`]; `room` for the VideoChatExecutor) sees every request
//! whose first document has the same value of that tag on the same replica
//! (rendezvous hashing: adding a replica moves only the rooms it takes over);
//! others are spread round-robin.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::join_all;
use futures::stream::{BoxStream, StreamExt};
use std::time::Duration;
use vchat_core::config::{DEFAULT_STOP_GRACE_S, ExecutorSpec, FlowSpec, StreamMode};
use vchat_core::{
    ConfigError, Document, DocumentArray, Error, Executor, Registry, RequestContext, SourceContext,
    StreamId, Struct, Value, parameters_for, serves,
};
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::status_proto::{ExceptionProto, StatusCode};
use vchat_proto::{DataRequestProto, HeaderProto, StatusProto};

use crate::python::{Launch, PythonExecutor};
use crate::remote::{DEFAULT_TIMEOUT, RemoteExecutor, RemoteOptions};

/// Where an executor takes its input from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Gateway,
    Node(usize),
}

/// One executor of a running Flow, with its replicas.
pub struct Node {
    name: String,
    replicas: Vec<Arc<dyn Executor>>,
    /// Endpoints bound, `None` for executors in other processes (they apply the
    /// endpoint rules themselves).
    endpoints: Option<Vec<String>>,
    route_by: Option<String>,
    needs: Vec<Source>,
    next: AtomicUsize,
    /// An external executor's replicas, found by name (then `replicas` is empty).
    discovery: Option<Arc<crate::discovery::Replicas>>,
}

impl Node {
    /// A node named `name` running `executor`, taking the previous node's output.
    pub fn new(name: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        Node {
            name: name.into(),
            endpoints: Some(executor.endpoints()),
            route_by: executor.route_by().map(str::to_string),
            replicas: vec![executor],
            needs: Vec::new(),
            next: AtomicUsize::new(0),
            discovery: None,
        }
    }

    /// The executor's name in the Flow.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.members().len()
    }

    /// Every replica now in use.
    fn members(&self) -> Vec<Arc<dyn Executor>> {
        match &self.discovery {
            Some(d) => d.all(),
            None => self.replicas.clone(),
        }
    }

    /// Users present per room over every replica (see
    /// [`Executor::users_per_room`]).
    pub fn users_per_room(&self) -> Vec<(String, usize)> {
        self.members()
            .iter()
            .flat_map(|r| r.users_per_room())
            .collect()
    }

    /// Whether every replica answers (see [`Executor::ready`]).
    pub async fn ready(&self) -> Result<(), String> {
        if self.discovery.as_ref().is_some_and(|d| d.is_empty()) {
            return self.pick(&DocumentArray::new()).ready().await;
        }
        for r in &self.members() {
            r.ready().await?;
        }
        Ok(())
    }

    /// The replica that serves `docs`.
    fn pick(&self, docs: &DocumentArray) -> Arc<dyn Executor> {
        if let Some(d) = &self.discovery {
            let key = self
                .route_by
                .as_ref()
                .map(|tag| docs.first().and_then(|d| d.tag_str(tag)).unwrap_or(""));
            return d.pick(key);
        }
        let n = self.replicas.len();
        if n == 1 {
            return self.replicas[0].clone();
        }
        let i = match &self.route_by {
            Some(tag) => {
                let key = docs.first().and_then(|d| d.tag_str(tag)).unwrap_or("");
                rendezvous(key, n)
            }
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        self.replicas[i].clone()
    }
}

/// The replica with the highest hash of (key, replica): stable for a key, and a
/// new replica takes over only the keys it now wins.
fn rendezvous(key: &str, n: usize) -> usize {
    (0..n)
        .max_by_key(|&i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            i.hash(&mut h);
            h.finish()
        })
        .unwrap_or(0)
}

/// Options for building a Flow's executors.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Interpreter that runs Python executors (`py_modules`) through Jina.
    pub python: PathBuf,
    /// A program with the hidden [`SUPERVISE_COMMAND`](crate::SUPERVISE_COMMAND)
    /// subcommand (the `vchat` binary) to lead each Python executor's process
    /// group (see [`crate::python`]); `None`: `python` leads it, and a gateway
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

/// The executors of a Flow.
pub struct FlowRuntime {
    nodes: Vec<Node>,
    names: Vec<String>,
    /// Node indexes grouped so that every node's needs are in earlier groups.
    levels: Vec<Vec<usize>>,
    /// Nodes whose output nobody takes: the response.
    sinks: Vec<usize>,
    /// How many nodes take each node's output.
    consumers: Vec<usize>,
    /// Stream mode of each endpoint that is not `send-receive`.
    modes: BTreeMap<String, StreamMode>,
    python: Vec<PythonExecutor>,
}

/// Parameter key flagging a response as skipped (no frame; see `skip_frames`).
pub const SKIPPED_PARAMETER: &str = "__skipped__";
/// Parameter key of the executors' extra outputs, by executor name (as in Jina).
pub const RESULTS_PARAMETER: &str = "__results__";

type Failure = (Error, Option<DocumentArray>);

impl FlowRuntime {
    /// A chain of `nodes`, run in order.
    pub fn new(nodes: Vec<Node>) -> Self {
        Self::with_topology(nodes, Vec::new()).expect("a chain has no cycle")
    }

    fn with_topology(mut nodes: Vec<Node>, python: Vec<PythonExecutor>) -> Result<Self, String> {
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.needs.is_empty() {
                node.needs = vec![if i == 0 {
                    Source::Gateway
                } else {
                    Source::Node(i - 1)
                }];
            }
        }
        let n = nodes.len();
        let mut consumers = vec![0; n];
        for node in &nodes {
            for s in &node.needs {
                if let Source::Node(j) = s {
                    consumers[*j] += 1;
                }
            }
        }
        let mut level_of: Vec<Option<usize>> = vec![None; n];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        let mut placed = 0;
        while placed < n {
            let ready: Vec<usize> = (0..n)
                .filter(|&i| level_of[i].is_none())
                .filter(|&i| {
                    nodes[i].needs.iter().all(|s| match s {
                        Source::Gateway => true,
                        Source::Node(j) => level_of[*j].is_some_and(|l| l < levels.len()),
                    })
                })
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> = (0..n)
                    .filter(|&i| level_of[i].is_none())
                    .map(|i| nodes[i].name.as_str())
                    .collect();
                return Err(format!("the `needs` of {} form a cycle", stuck.join(", ")));
            }
            for &i in &ready {
                level_of[i] = Some(levels.len());
            }
            placed += ready.len();
            levels.push(ready);
        }
        let sinks = (0..n).filter(|&i| consumers[i] == 0).collect();
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        Ok(FlowRuntime {
            nodes,
            names,
            levels,
            sinks,
            consumers,
            modes: BTreeMap::new(),
            python,
        })
    }

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

    fn is_chain(&self) -> bool {
        self.levels.iter().all(|l| l.len() == 1) && self.nodes.iter().all(|n| n.needs.len() == 1)
    }

    /// The stream mode of `endpoint`.
    pub fn mode(&self, endpoint: &str) -> StreamMode {
        self.modes.get(endpoint).copied().unwrap_or_default()
    }

    /// Sets the stream mode of endpoints (those not listed are `send-receive`).
    pub fn set_modes(&mut self, modes: BTreeMap<String, StreamMode>) {
        self.modes = modes;
    }

    /// The executors.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Executor names, in Flow order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The endpoints the Flow names: bound by an in-process executor, or given a
    /// mode in `with.endpoints`. An executor bound to `/default` serves every
    /// endpoint, but names only that one.
    pub fn named_endpoints(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self.endpoints().into_iter().collect();
        names.extend(self.modes.keys().cloned());
        names
    }

    /// Every endpoint some in-process executor binds.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.endpoints
                    .clone()
                    .unwrap_or_else(|| vec![vchat_core::DEFAULT_ENDPOINT.to_string()])
            })
            .collect()
    }

    /// Processes one request and returns its response, which carries the same
    /// `request_id` and an ERROR status if anything failed.
    pub async fn process(&self, mut req: DataRequestProto, stream: StreamId) -> DataRequestProto {
        let header = req.header.take().unwrap_or_default();
        let docs = match req.data.take().and_then(|d| d.documents) {
            None => Ok(DocumentArray::new()),
            Some(Documents::Docs(da)) => DocumentArray::from_proto(da),
            Some(Documents::DocsBytes(_)) => Err(Error::BadRequest(
                "data.docs_bytes (pickled documents) is not supported: send data.docs".into(),
            )),
        };
        let results = Mutex::new(BTreeMap::new());
        let result = match docs {
            Ok(docs) => self.run(docs, &header, &req, stream, 0, &results).await,
            Err(e) => Err((e, None)),
        };
        let send_only =
            self.mode(header.exec_endpoint.as_deref().unwrap_or("/")) == StreamMode::Send;
        self.respond_with(
            req,
            header,
            result,
            results.into_inner().unwrap_or_else(|e| e.into_inner()),
            send_only,
        )
    }

    /// Builds the response of a request from what its run gave.
    fn respond_with(
        &self,
        mut req: DataRequestProto,
        mut header: HeaderProto,
        result: Result<DocumentArray, Failure>,
        results: BTreeMap<String, Value>,
        send_only: bool,
    ) -> DataRequestProto {
        let docs = match result {
            Ok(mut docs) => {
                if send_only {
                    // An acknowledgement: ids and tags, no frames.
                    for d in docs.iter_mut() {
                        d.content = None;
                    }
                }
                Some(docs)
            }
            Err((Error::Skipped(reason), _)) => {
                tracing::trace!(reason, "Skipped");
                let params = req.parameters.get_or_insert_with(Default::default);
                params
                    .fields
                    .insert(SKIPPED_PARAMETER.to_string(), bool_value(true));
                None
            }
            Err((e, docs)) => {
                header.status = Some(error_status(&e));
                docs
            }
        };
        if !results.is_empty() {
            let params = req.parameters.get_or_insert_with(Default::default);
            params
                .fields
                .insert(RESULTS_PARAMETER.to_string(), struct_value(results));
        }
        req.header = Some(header);
        req.data = docs.map(|d| DataContentProto {
            documents: Some(Documents::Docs(d.into_proto())),
        });
        req
    }

    /// The responses to one request: one, or for a `receive` endpoint, one per frame
    /// the source yields, all with the request's id.
    pub fn respond(
        self: &Arc<Self>,
        mut req: DataRequestProto,
        stream: StreamId,
    ) -> BoxStream<'static, DataRequestProto> {
        let endpoint = req
            .header
            .as_ref()
            .and_then(|h| h.exec_endpoint.clone())
            .unwrap_or_else(|| "/".into());
        let flow = self.clone();
        if self.mode(&endpoint) != StreamMode::Receive {
            return futures::stream::once(async move { flow.process(req, stream).await }).boxed();
        }
        let header = req.header.take().unwrap_or_default();
        let docs = match req.data.take().and_then(|d| d.documents) {
            Some(Documents::Docs(da)) => DocumentArray::from_proto(da).unwrap_or_default(),
            _ => DocumentArray::new(),
        };
        let params = req
            .parameters
            .as_ref()
            .map(|p| p.fields.clone())
            .unwrap_or_default();
        let source = self.nodes.first().and_then(|n| {
            n.pick(&docs).source(SourceContext {
                endpoint: endpoint.clone(),
                parameters: parameters_for(&params, &n.name, &self.names),
                docs: docs.clone(),
            })
        });
        let Some(source) = source else {
            let e = Error::BadRequest(format!(
                "endpoint {endpoint} is a `receive` stream but the Flow's first executor is not a source"
            ));
            return futures::stream::once(async move { error_response(header, &e) }).boxed();
        };
        let base = DataRequestProto {
            parameters: req.parameters.take(),
            ..Default::default()
        };
        source
            .then(move |item| {
                let flow = flow.clone();
                let header = header.clone();
                let base = base.clone();
                async move {
                    let results = Mutex::new(BTreeMap::new());
                    let result = match item {
                        Ok(docs) => flow.run(docs, &header, &base, stream, 1, &results).await,
                        Err(e) => Err((e, None)),
                    };
                    let failed = result.is_err();
                    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
                    (
                        flow.respond_with(base.clone(), header, result, results, false),
                        failed,
                    )
                }
            })
            // A failed source or executor ends the stream after its error response.
            .scan(false, |ended, (resp, failed)| {
                let out = (!*ended).then_some(resp);
                *ended |= failed;
                futures::future::ready(out)
            })
            .boxed()
    }

    /// Runs the Flow on `input`, from the `first` node of a chain on (0: all).
    async fn run(
        &self,
        input: DocumentArray,
        header: &HeaderProto,
        req: &DataRequestProto,
        stream: StreamId,
        first: usize,
        all_results: &Mutex<BTreeMap<String, Value>>,
    ) -> Result<DocumentArray, Failure> {
        let endpoint = header.exec_endpoint.as_deref().unwrap_or("/");
        let target = match header.target_executor.as_deref() {
            None | Some("") => None,
            Some(pattern) => Some(regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                (
                    Error::BadRequest(format!("header.target_executor is not a valid regex: {e}")),
                    None,
                )
            })?),
        };
        let empty = Default::default();
        let params = req.parameters.as_ref().map_or(&empty, |p| &p.fields);
        let run_node = |i: usize, mut docs: DocumentArray| {
            let node = &self.nodes[i];
            let target = &target;
            async move {
                let skip = target.as_ref().is_some_and(|t| !t.is_match(&node.name))
                    || node
                        .endpoints
                        .as_ref()
                        .is_some_and(|b| !serves(b, endpoint));
                if skip {
                    return Ok(docs);
                }
                let merged = parameters_for(params, &node.name, &self.names);
                let results = Mutex::new(BTreeMap::new());
                let ctx = RequestContext {
                    endpoint,
                    parameters: &merged,
                    stream,
                    request_id: &header.request_id,
                    results: &results,
                };
                let outcome = node.pick(&docs).process(&mut docs, &ctx).await;
                let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
                if !results.is_empty() {
                    all_results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(node.name.clone(), struct_value(results));
                }
                match outcome {
                    Ok(()) => Ok(docs),
                    Err(e) => Err((e, Some(docs))),
                }
            }
        };

        // The common case, a chain: no clones, no merges.
        if self.is_chain() {
            let mut docs = input;
            for level in self.levels.iter().skip(first) {
                docs = run_node(level[0], docs).await?;
            }
            return Ok(docs);
        }

        let mut outputs: Vec<Option<DocumentArray>> = vec![None; self.nodes.len()];
        let mut remaining = self.consumers.clone();
        let mut input = Some(input);
        let gateway_uses = self
            .nodes
            .iter()
            .filter(|n| n.needs.contains(&Source::Gateway))
            .count();
        let mut gateway_left = gateway_uses;
        for level in &self.levels {
            let mut jobs = Vec::with_capacity(level.len());
            for &i in level {
                let parts: Vec<DocumentArray> = self.nodes[i]
                    .needs
                    .iter()
                    .map(|s| match *s {
                        Source::Gateway => {
                            gateway_left -= 1;
                            if gateway_left == 0 {
                                input.take().unwrap_or_default()
                            } else {
                                input.clone().unwrap_or_default()
                            }
                        }
                        Source::Node(j) => {
                            remaining[j] -= 1;
                            if remaining[j] == 0 {
                                outputs[j].take().unwrap_or_default()
                            } else {
                                outputs[j].clone().unwrap_or_default()
                            }
                        }
                    })
                    .collect();
                jobs.push(run_node(i, merge(parts)));
            }
            for (&i, out) in level.iter().zip(join_all(jobs).await) {
                outputs[i] = Some(out?);
            }
        }
        Ok(merge(
            self.sinks
                .iter()
                .map(|&i| outputs[i].take().unwrap_or_default())
                .collect(),
        ))
    }

    /// Stops the processes the Flow started (Python executors), each with its
    /// whole process group: SIGTERM, its grace, then SIGKILL. Returns when they
    /// are gone.
    pub async fn stop_processes(&self) {
        join_all(self.python.iter().map(PythonExecutor::stop)).await;
    }

    /// The process groups of the processes the Flow started.
    pub fn process_groups(&self) -> Vec<i32> {
        self.python
            .iter()
            .filter_map(PythonExecutor::process_group)
            .collect()
    }

    /// Tells every executor (every replica) that `stream` ended.
    pub async fn stream_closed(&self, stream: StreamId) {
        let all = self
            .nodes
            .iter()
            .flat_map(|n| n.members())
            .map(|e| async move { e.stream_closed(stream).await });
        join_all(all).await;
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
                Arc::new(crate::skip::SkipFrames::new(executor)) as Arc<dyn Executor>
            } else {
                executor
            });
        }
        let endpoints = replicas[0].endpoints();
        let route = replicas[0].route_by().map(str::to_string);
        (replicas, Some(endpoints), route)
    } else if !d.external.is_empty() {
        discovery = Some(
            crate::discovery::Replicas::start(
                &e.name,
                crate::discovery::source(&addrs, d.dns_replicas),
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
    Ok(Node {
        name: e.name.clone(),
        replicas,
        endpoints,
        route_by: d.route_by.clone().or(own_route),
        needs: Vec::new(),
        next: AtomicUsize::new(0),
        discovery,
    })
}

fn bool_value(b: bool) -> Value {
    Value {
        kind: Some(vchat_core::value::Kind::BoolValue(b)),
    }
}

fn struct_value(fields: BTreeMap<String, Value>) -> Value {
    Value {
        kind: Some(vchat_core::value::Kind::StructValue(Struct { fields })),
    }
}

/// The response to a request answered without processing because of the stream's
/// frame rate cap or frame skipping: SUCCESS, no docs, `parameters.__skipped__`.
pub fn skipped_response(header: HeaderProto) -> DataRequestProto {
    let mut fields = BTreeMap::new();
    fields.insert(SKIPPED_PARAMETER.to_string(), bool_value(true));
    DataRequestProto {
        header: Some(header),
        parameters: Some(Struct { fields }),
        ..Default::default()
    }
}

/// Merges the outputs of several executors by document id (see the module docs).
pub fn merge(mut parts: Vec<DocumentArray>) -> DocumentArray {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut out: Vec<Document> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for part in parts {
        for doc in part {
            match index.get(&doc.id) {
                Some(&pos) => {
                    let into = &mut out[pos];
                    if doc.content.is_some() {
                        into.content = doc.content;
                    }
                    if !doc.mime_type.is_empty() {
                        into.mime_type = doc.mime_type;
                    }
                    into.tags.extend(doc.tags);
                }
                None => {
                    index.insert(doc.id.clone(), out.len());
                    out.push(doc);
                }
            }
        }
    }
    DocumentArray(out)
}

/// The ERROR status Jina's client reports for `e`.
pub fn error_status(e: &Error) -> StatusProto {
    let description = e.to_string();
    StatusProto {
        code: StatusCode::Error as i32,
        exception: Some(ExceptionProto {
            name: e.name().to_string(),
            args: vec![description.clone()],
            stacks: Vec::new(),
            executor: e.executor().unwrap_or_default().to_string(),
        }),
        description,
    }
}

/// The response to a request that was not processed: its header with `e`.
pub fn error_response(mut header: HeaderProto, e: &Error) -> DataRequestProto {
    header.status = Some(error_status(e));
    DataRequestProto {
        header: Some(header),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vchat_core::{async_trait, string_value};

    /// Appends its name to tags.trail and sleeps `delay_ms`.
    struct Mark(&'static str, u64);

    #[async_trait]
    impl Executor for Mark {
        async fn process(
            &self,
            docs: &mut DocumentArray,
            _: &RequestContext<'_>,
        ) -> Result<(), Error> {
            tokio::time::sleep(std::time::Duration::from_millis(self.1)).await;
            for d in docs.iter_mut() {
                let trail = d.tag_str("trail").unwrap_or("").to_string();
                d.set_tag_str("trail", format!("{trail}{}", self.0));
                d.set_tag_str(self.0, "seen");
            }
            Ok(())
        }
    }

    fn node(name: &'static str, needs: Vec<Source>) -> Node {
        let mut n = Node::new(name, Arc::new(Mark(name, 0)));
        n.needs = needs;
        n
    }

    fn request(docs: usize) -> DataRequestProto {
        let docs = (0..docs)
            .map(|i| {
                let mut d = Document::new();
                d.id = format!("d{i}");
                d.into_proto()
            })
            .collect();
        DataRequestProto {
            header: Some(HeaderProto {
                request_id: "r".into(),
                ..Default::default()
            }),
            data: Some(DataContentProto {
                documents: Some(Documents::Docs(vchat_proto::DocumentArrayProto { docs })),
            }),
            ..Default::default()
        }
    }

    fn out_docs(resp: DataRequestProto) -> DocumentArray {
        match resp.data.and_then(|d| d.documents) {
            Some(Documents::Docs(d)) => DocumentArray::from_proto(d).unwrap(),
            _ => panic!("no docs"),
        }
    }

    #[tokio::test]
    async fn a_chain_runs_in_order() {
        let flow = FlowRuntime::new(vec![
            node("a", vec![]),
            node("b", vec![]),
            node("c", vec![]),
        ]);
        let docs = out_docs(flow.process(request(2), StreamId(1)).await);
        assert_eq!(docs.len(), 2);
        assert!(docs.iter().all(|d| d.tag_str("trail") == Some("abc")));
    }

    #[tokio::test]
    async fn a_diamond_merges_by_id() {
        // a -> (b, c) -> d
        let nodes = vec![
            node("a", vec![Source::Gateway]),
            node("b", vec![Source::Node(0)]),
            node("c", vec![Source::Node(0)]),
            node("d", vec![Source::Node(1), Source::Node(2)]),
        ];
        let flow = FlowRuntime::with_topology(nodes, vec![]).unwrap();
        assert_eq!(flow.levels, vec![vec![0], vec![1, 2], vec![3]]);
        let docs = out_docs(flow.process(request(3), StreamId(1)).await);
        assert_eq!(
            docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["d0", "d1", "d2"]
        );
        for d in docs.iter() {
            // Both branches' tags survive the merge; the later need's trail wins.
            assert_eq!(
                (d.tag_str("b"), d.tag_str("c"), d.tag_str("d")),
                (Some("seen"), Some("seen"), Some("seen"))
            );
            assert_eq!(d.tag_str("trail"), Some("acd"));
        }
    }

    #[tokio::test]
    async fn floating_sinks_are_merged_into_the_response() {
        let nodes = vec![
            node("a", vec![Source::Gateway]),
            node("b", vec![Source::Gateway]),
        ];
        let flow = FlowRuntime::with_topology(nodes, vec![]).unwrap();
        let docs = out_docs(flow.process(request(1), StreamId(1)).await);
        assert_eq!(
            (docs[0].tag_str("a"), docs[0].tag_str("b")),
            (Some("seen"), Some("seen"))
        );
    }

    #[tokio::test]
    async fn cycles_are_refused() {
        let nodes = vec![
            node("a", vec![Source::Node(1)]),
            node("b", vec![Source::Node(0)]),
        ];
        let err = FlowRuntime::with_topology(nodes, vec![]).err().unwrap();
        assert!(err.contains("cycle"), "{err}");
    }

    #[tokio::test]
    async fn target_executor_restricts_and_endpoints_route() {
        let flow = FlowRuntime::new(vec![node("alpha", vec![]), node("beta", vec![])]);
        let mut req = request(1);
        req.header.as_mut().unwrap().target_executor = Some("be.*".into());
        let docs = out_docs(flow.process(req, StreamId(1)).await);
        assert_eq!(docs[0].tag_str("trail"), Some("beta"));
        let mut req = request(1);
        req.header.as_mut().unwrap().target_executor = Some("(".into());
        let resp = flow.process(req, StreamId(1)).await;
        assert!(
            resp.header
                .unwrap()
                .status
                .unwrap()
                .description
                .contains("target_executor")
        );
    }

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let rooms: Vec<String> = (0..200).map(|i| format!("room{i}")).collect();
        let on2: Vec<usize> = rooms.iter().map(|r| rendezvous(r, 2)).collect();
        assert_eq!(
            on2,
            rooms.iter().map(|r| rendezvous(r, 2)).collect::<Vec<_>>()
        );
        let ones = on2.iter().filter(|&&i| i == 1).count();
        assert!((50..150).contains(&ones), "{ones}");
        // Going from 2 to 3 replicas moves only rooms to the new replica.
        for (r, &old) in rooms.iter().zip(&on2) {
            let new = rendezvous(r, 3);
            assert!(new == old || new == 2);
        }
        let _ = string_value("x");
    }
}
