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
//! [`Executor::route_by`](vchat_core::Executor::route_by); `room` for the VideoChatExecutor) sees every request
//! whose first document has the same value of that tag on the same replica
//! (rendezvous hashing: adding a replica moves only the rooms it takes over);
//! others are spread round-robin.
//!
//! ## Files
//!
//! [`topology`] (nodes, replicas, the order of `needs`, merging), `build` (from
//! the YAML), [`remote`] (an executor in another process), [`python`] (Jina's
//! executor runtime), [`skip`] (frame skipping).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use futures::stream::{BoxStream, StreamExt};
use vchat_core::config::StreamMode;
use vchat_core::proto::struct_value;
use vchat_core::{
    DEFAULT_ENDPOINT, DocumentArray, Error, Outcome, Reply, Request, RequestContext, SourceContext,
    StreamId, Value, parameters_for, serves,
};

mod build;
pub mod discovery;
pub mod python;
pub mod remote;
pub mod skip;
pub mod topology;

pub use build::BuildOptions;
pub use topology::{Node, merge};

use python::PythonExecutor;
use topology::{Plan, Source};

/// The executors of a Flow.
pub struct FlowRuntime {
    nodes: Vec<Node>,
    names: Vec<String>,
    plan: Plan,
    /// Stream mode of each endpoint that is not `send-receive`.
    modes: BTreeMap<String, StreamMode>,
    python: Vec<PythonExecutor>,
}

/// An executor's error, with the documents it left.
type Failure = (Error, Option<DocumentArray>);

/// What one run of the Flow needs to know of its request besides the documents.
struct Call<'a> {
    id: &'a str,
    endpoint: &'a str,
    target: Option<regex::Regex>,
    parameters: &'a BTreeMap<String, Value>,
    stream: StreamId,
}

impl<'a> Call<'a> {
    fn of(request: &'a Request, stream: StreamId) -> Result<Self, Error> {
        let target = match request.target_executor.as_deref() {
            None | Some("") => None,
            Some(pattern) => Some(regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                Error::BadRequest(format!("header.target_executor is not a valid regex: {e}"))
            })?),
        };
        Ok(Call {
            id: &request.id,
            endpoint: &request.endpoint,
            target,
            parameters: &request.parameters,
            stream,
        })
    }
}

impl FlowRuntime {
    /// A chain of `nodes`, run in order.
    pub fn new(nodes: Vec<Node>) -> Self {
        Self::with_topology(nodes, Vec::new()).expect("a chain has no cycle")
    }

    fn with_topology(mut nodes: Vec<Node>, python: Vec<PythonExecutor>) -> Result<Self, String> {
        let plan = Plan::of(&mut nodes)?;
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        Ok(FlowRuntime {
            nodes,
            names,
            plan,
            modes: BTreeMap::new(),
            python,
        })
    }

    fn is_chain(&self) -> bool {
        self.plan.levels.iter().all(|l| l.len() == 1)
            && self.nodes.iter().all(|n| n.needs.len() == 1)
    }

    /// The stream mode of `endpoint`.
    pub fn mode(&self, endpoint: &str) -> StreamMode {
        self.modes.get(endpoint).copied().unwrap_or_default()
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
    pub fn named_endpoints(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.endpoints().into_iter().collect();
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
                    .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()])
            })
            .collect()
    }

    /// Processes one request: its reply (an `Error` outcome if anything failed).
    pub async fn process(&self, request: Request, stream: StreamId) -> Reply {
        let results = Mutex::new(BTreeMap::new());
        let mut request = request;
        let docs = std::mem::take(&mut request.docs);
        let result = match Call::of(&request, stream) {
            Ok(call) => self.run(docs, &call, 0, &results).await,
            Err(e) => Err((e, None)),
        };
        let send_only = self.mode(&request.endpoint) == StreamMode::Send;
        let mut reply = reply_of(result, into_inner(results), send_only);
        reply.parameters = request.parameters;
        reply
    }

    /// The replies to one request: one, or for a `receive` endpoint, one per frame
    /// the source yields.
    pub fn respond(
        self: &Arc<Self>,
        request: Request,
        stream: StreamId,
    ) -> BoxStream<'static, Reply> {
        let flow = self.clone();
        if self.mode(&request.endpoint) != StreamMode::Receive {
            return futures::stream::once(async move { flow.process(request, stream).await })
                .boxed();
        }
        let source = self.nodes.first().and_then(|n| {
            n.pick(&request.docs).source(SourceContext {
                endpoint: request.endpoint.clone(),
                parameters: parameters_for(&request.parameters, &n.name, &self.names),
                docs: request.docs.clone(),
            })
        });
        let Some(source) = source else {
            let e = Error::BadRequest(format!(
                "endpoint {} is a `receive` stream but the Flow's first executor is not a source",
                request.endpoint
            ));
            return futures::stream::once(async move { Reply::error(e) }).boxed();
        };
        let request = Arc::new(Request {
            docs: DocumentArray::new(),
            ..request
        });
        source
            .then(move |item| {
                let (flow, request) = (flow.clone(), request.clone());
                async move {
                    let results = Mutex::new(BTreeMap::new());
                    let result = match (item, Call::of(&request, stream)) {
                        (Ok(docs), Ok(call)) => flow.run(docs, &call, 1, &results).await,
                        (Err(e), _) | (_, Err(e)) => Err((e, None)),
                    };
                    let mut reply = reply_of(result, into_inner(results), false);
                    reply.parameters = request.parameters.clone();
                    reply
                }
            })
            // A failed source or executor ends the stream after its error reply.
            .scan(false, |ended, reply| {
                let out = (!*ended).then_some(reply);
                *ended |= out.as_ref().is_some_and(Reply::is_error);
                futures::future::ready(out)
            })
            .boxed()
    }

    /// Runs the Flow on `input`, from the `first` node of a chain on (0: all).
    async fn run(
        &self,
        input: DocumentArray,
        call: &Call<'_>,
        first: usize,
        all_results: &Mutex<BTreeMap<String, Value>>,
    ) -> Result<DocumentArray, Failure> {
        let run_node = |i: usize, mut docs: DocumentArray| {
            let node = &self.nodes[i];
            async move {
                let skip = call
                    .target
                    .as_ref()
                    .is_some_and(|t| !t.is_match(&node.name))
                    || node
                        .endpoints
                        .as_ref()
                        .is_some_and(|b| !serves(b, call.endpoint));
                if skip {
                    return Ok(docs);
                }
                let merged = parameters_for(call.parameters, &node.name, &self.names);
                let results = Mutex::new(BTreeMap::new());
                let ctx = RequestContext {
                    endpoint: call.endpoint,
                    parameters: &merged,
                    stream: call.stream,
                    request_id: call.id,
                    results: &results,
                };
                let outcome = node.pick(&docs).process(&mut docs, &ctx).await;
                let results = into_inner(results);
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
            for level in self.plan.levels.iter().skip(first) {
                docs = run_node(level[0], docs).await?;
            }
            return Ok(docs);
        }

        let mut outputs: Vec<Option<DocumentArray>> = vec![None; self.nodes.len()];
        let mut remaining = self.plan.consumers.clone();
        let mut input = Some(input);
        let mut gateway_left = self
            .nodes
            .iter()
            .filter(|n| n.needs.contains(&Source::Gateway))
            .count();
        for level in &self.plan.levels {
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
            self.plan
                .sinks
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

fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// The reply of a run: a send-only endpoint's documents come back without their
/// frames (an acknowledgement: ids and tags).
fn reply_of(
    result: Result<DocumentArray, Failure>,
    results: BTreeMap<String, Value>,
    send_only: bool,
) -> Reply {
    let (outcome, docs) = match result {
        Ok(mut docs) => {
            if send_only {
                for d in docs.iter_mut() {
                    d.content = None;
                }
            }
            (Outcome::Ok, Some(docs))
        }
        Err((Error::Skipped(reason), _)) => (Outcome::Skipped(reason), None),
        Err((e, docs)) => (Outcome::Error(e), docs),
    };
    Reply {
        outcome,
        docs,
        results,
        parameters: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vchat_core::{Document, Executor, async_trait};

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

    fn request(docs: usize) -> Request {
        let docs = (0..docs)
            .map(|i| {
                let mut d = Document::new();
                d.id = format!("d{i}");
                d
            })
            .collect::<Vec<_>>();
        Request {
            id: "r".into(),
            ..Request::new("/", DocumentArray(docs))
        }
    }

    fn out_docs(reply: Reply) -> DocumentArray {
        reply.docs.expect("no docs")
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
        assert_eq!(flow.plan.levels, vec![vec![0], vec![1, 2], vec![3]]);
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
        req.target_executor = Some("be.*".into());
        let docs = out_docs(flow.process(req, StreamId(1)).await);
        assert_eq!(docs[0].tag_str("trail"), Some("beta"));
        let mut req = request(1);
        req.target_executor = Some("(".into());
        let resp = flow.process(req, StreamId(1)).await;
        assert!(
            resp.failure()
                .unwrap()
                .to_string()
                .contains("target_executor")
        );
    }
}
