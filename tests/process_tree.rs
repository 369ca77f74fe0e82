//! The links to executors in other processes: Python executors the Flow starts
//! live and die with it as one process group, and calls to external executors are
//! bounded (a deadline on the whole call, a response size limit), never repeated
//! once they may have been applied, and a stream's end reaches an executor only
//! after that stream's calls in flight.

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use vchat_core::{Document, STREAM_CLOSED_ENDPOINT, STREAM_PARAMETER};
use vchat_e2e::*;
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::jina_info_rpc_server::{JinaInfoRpc, JinaInfoRpcServer};
use vchat_proto::{DataRequestProto, JinaInfoProto};

/// Environment variable marking every process of one test's Flow.
const MARKER: &str = "VCHAT_TEST_PROCESS_TREE";

/// How long a stopped Flow's processes may take to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Python executors: the process tree

/// The seed's Python executor and a Flow that names it, in a fresh directory.
fn seed_flow(tag: &str) -> std::path::PathBuf {
    let dir = scratch(tag);
    write_file(
        &dir,
        "executor/executor.py",
        include_str!("jina/seed/executor/executor.py"),
    );
    write_file(
        &dir,
        "executor/config.yml",
        include_str!("jina/seed/executor/config.yml"),
    );
    write_file(&dir, "flow.yml", include_str!("jina/seed/flow.yml"))
}

/// Starts the seed's Flow with a marker of its own; returns the Flow and the
/// marker's value.
fn start_marked(tag: &str) -> (Flow, String) {
    let flow_yml = seed_flow(tag);
    let python = jina_python();
    let marker = vchat_core::new_id();
    let flow = Flow::start_with_env(
        &flow_yml,
        &["--python", python.to_str().unwrap()],
        &[(MARKER, &marker)],
    );
    (flow, marker)
}

/// The process group of `pid`.
fn pgid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Waits until no process carries `marker`; panics with those left after
/// [`GONE_WITHIN`].
fn assert_gone(marker: &str) {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let left = processes_with_env(MARKER, marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running {GONE_WITHIN:?} after the Flow stopped: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Flow's Jina processes: at least one, all in one process group that is
/// not the Flow's own.
fn jina_processes(flow: &Flow, marker: &str) -> Vec<(u32, String)> {
    let tree = processes_with_env(MARKER, marker);
    let jina: Vec<(u32, String)> = tree
        .iter()
        .filter(|(_, cmd)| cmd.contains("-m jina executor"))
        .cloned()
        .collect();
    assert!(!jina.is_empty(), "no jina process found: {tree:#?}");
    let groups: Vec<Option<u32>> = jina.iter().map(|(pid, _)| pgid_of(*pid)).collect();
    assert!(
        groups.iter().all(|g| g.is_some() && *g == groups[0]),
        "{jina:#?} in groups {groups:?}"
    );
    assert_ne!(groups[0], pgid_of(flow.pid()), "in the Flow's own group");
    jina
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_stopped_with_sigterm_leaves_no_python_process() {
    let (mut flow, marker) = start_marked("tree-term");
    jina_processes(&flow, &marker);
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", [255, 0, 0], 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    alice.leave().await;
    let status = flow.terminate();
    assert!(status.success(), "{status:?}\n{}", flow.stderr());
    assert_gone(&marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_killed_with_sigkill_leaves_no_python_process() {
    let (mut flow, marker) = start_marked("tree-kill");
    jina_processes(&flow, &marker);
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", [255, 0, 0], 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    // The Flow alone, as the OOM killer or `kill -9 <pid>` would: it cannot
    // stop anything itself.
    flow.kill_hard();
    drop(alice);
    assert_gone(&marker);
}

/// `vchat __supervise` with a marker and its stdin as the lifeline.
fn supervise(grace_ms: u64, script: &str, marker: &str) -> std::process::Child {
    Command::new(bin("vchat"))
        .args(["__supervise", "--grace-ms", &grace_ms.to_string(), "--"])
        .args(["sh", "-c", script])
        .env(MARKER, marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
    let marker = vchat_core::new_id();
    // A shell and two children, all deaf to SIGTERM.
    let mut sup = supervise(300, "trap '' TERM; sleep 600 & sleep 600", &marker);
    let deadline = Instant::now() + PATIENCE;
    while processes_with_env(MARKER, &marker).len() < 4 {
        assert!(Instant::now() < deadline, "the group did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still running while the lifeline is open.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processes_with_env(MARKER, &marker).len(), 4);
    drop(sup.stdin.take());
    assert_gone(&marker);
    sup.wait().unwrap();
}

#[test]
fn a_supervised_program_that_exits_takes_its_group_along() {
    let marker = vchat_core::new_id();
    let mut sup = supervise(2000, "sleep 600 & exit 3", &marker);
    // The lifeline stays open: the program's own exit is the cue.
    let _lifeline = sup.stdin.take();
    let status = sup.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_gone(&marker);
}

// ---------------------------------------------------------------------------
// External executors: an executor in the test, speaking raw HTTP/2 gRPC, so that
// it can misbehave in ways a well-behaved server cannot.

/// What the test executor saw.
#[derive(Default)]
struct Seen {
    /// Calls per `do` tag of the first document.
    calls: Mutex<HashMap<String, usize>>,
    /// (`received` | `applied` | `closed`, client stream) in order.
    events: Mutex<Vec<(&'static str, String)>>,
}

impl Seen {
    fn calls(&self, what: &str) -> usize {
        self.calls.lock().unwrap().get(what).copied().unwrap_or(0)
    }

    fn events(&self) -> Vec<(&'static str, String)> {
        self.events.lock().unwrap().clone()
    }

    fn event(&self, kind: &'static str, stream: &str) {
        self.events.lock().unwrap().push((kind, stream.to_string()));
    }
}

/// `jina.JinaSingleDataRequestRPC`, by hand. The first document's `do` tag says
/// what to do: `stall` (headers and part of the body, then nothing), `big` (a
/// 2 MiB answer), `unavailable` (UNAVAILABLE after counting the call), `slow`
/// (an answer after 5 s), `frame` (applied 300 ms after it arrived, even if the
/// caller goes away, as a thread-pool server does), anything else: echo.
#[derive(Clone)]
struct TestExecutor(Arc<Seen>);

impl NamedService for TestExecutor {
    const NAME: &'static str = "jina.JinaSingleDataRequestRPC";
}

type Body = tonic::body::Body;
type Frame = http_body::Frame<Bytes>;

fn grpc_body(frames: impl futures::Stream<Item = Result<Frame, Status>> + Send + 'static) -> Body {
    Body::new(StreamBody::new(frames))
}

fn message(msg: &impl Message) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(0);
    buf.put_u32(msg.encoded_len() as u32);
    msg.encode(&mut buf).unwrap();
    buf.freeze()
}

fn grpc_ok(msg: DataRequestProto) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = futures::stream::iter([
        Ok(Frame::data(message(&msg))),
        Ok(Frame::trailers(trailers)),
    ]);
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(grpc_body(frames))
        .unwrap()
}

impl TestExecutor {
    async fn answer(seen: Arc<Seen>, mut req: DataRequestProto) -> http::Response<Body> {
        let stream = req
            .parameters
            .as_ref()
            .and_then(|p| p.fields.get(STREAM_PARAMETER))
            .and_then(|v| match &v.kind {
                Some(vchat_core::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let endpoint = req.header.as_ref().and_then(|h| h.exec_endpoint.clone());
        if endpoint.as_deref() == Some(STREAM_CLOSED_ENDPOINT) {
            seen.event("closed", &stream);
            return grpc_ok(DataRequestProto {
                header: req.header,
                ..Default::default()
            });
        }
        let docs = match req.data.as_ref().and_then(|d| d.documents.as_ref()) {
            Some(Documents::Docs(da)) => da.docs.clone(),
            _ => Vec::new(),
        };
        let what = docs
            .first()
            .and_then(|d| Document::from_proto(d.clone()).ok())
            .and_then(|d| d.tag_str("do").map(str::to_string))
            .unwrap_or_else(|| "echo".into());
        *seen.calls.lock().unwrap().entry(what.clone()).or_default() += 1;
        match what.as_str() {
            "stall" => {
                // A message announced as 1000 bytes, 10 of them sent, the rest
                // never.
                let mut part = BytesMut::new();
                part.put_u8(0);
                part.put_u32(1000);
                part.put_slice(&[0; 10]);
                let frames = futures::stream::iter([Ok(Frame::data(part.freeze()))])
                    .chain(futures::stream::pending());
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(grpc_body(frames))
                    .unwrap()
            }
            "unavailable" => Status::unavailable("busy, but the call was counted").into_http(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                grpc_ok(req)
            }
            "big" => {
                let mut doc = Document::new();
                doc.content = Some(vchat_core::Content::Blob(Bytes::from(vec![7u8; 2 << 20])));
                req.data = Some(DataContentProto {
                    documents: Some(Documents::Docs(vchat_proto::DocumentArrayProto {
                        docs: vec![doc.into_proto()],
                    })),
                });
                grpc_ok(req)
            }
            "frame" => {
                seen.event("received", &stream);
                let later = seen.clone();
                let applied = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    later.event("applied", &stream);
                });
                let _ = applied.await;
                grpc_ok(req)
            }
            _ => grpc_ok(req),
        }
    }
}

impl Service<http::Request<Body>> for TestExecutor {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(Status::internal("unreadable body").into_http()),
            };
            let req =
                DataRequestProto::decode(body.get(5..).unwrap_or_default()).unwrap_or_default();
            Ok(TestExecutor::answer(seen, req).await)
        })
    }
}

/// `_status` saying it is a vchat executor, so that the gateway tells it when
/// streams end.
struct Info;

#[tonic::async_trait]
impl JinaInfoRpc for Info {
    async fn status(&self, _: Request<()>) -> Result<Response<JinaInfoProto>, Status> {
        let mut jina = HashMap::new();
        jina.insert("vchat".to_string(), "test".to_string());
        Ok(Response::new(JinaInfoProto {
            jina,
            envs: HashMap::new(),
        }))
    }
}

/// Serves a [`TestExecutor`] on a loopback port chosen by the OS and starts a
/// Flow that calls it with a 1 s deadline and the `extra` executor settings.
async fn flow_with_test_executor(tag: &str, extra: &str) -> (Flow, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .add_service(TestExecutor(seen.clone()))
        .add_service(JinaInfoRpcServer::new(Info))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let dir = scratch(tag);
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nexecutors:\n  - name: remote\n    host: 127.0.0.1\n    port: {port}\n    external: true\n    timeout_send: 1000\n{extra}"
        ),
    );
    (Flow::start(&flow_yml, &[]), seen)
}

/// A request whose one document says what the test executor does.
fn asking(id: &str, what: &str) -> DataRequestProto {
    let mut doc = Document::new();
    doc.set_tag_str("do", what);
    doc.set_tag_str("user", "alice");
    request(id, vec![doc.into_proto()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_bounded_by_the_deadline() {
    let (flow, seen) = flow_with_test_executor("stall", "").await;
    let mut stream = RawStream::connect(flow.addr()).await;
    let resp = stream.send(asking("r1", "stall")).await;
    let (code, description) = status(&resp);
    assert_eq!(code, 1, "{description}");
    assert!(
        description.contains("timeout_send") && description.contains("1s"),
        "{description}"
    );
    assert_eq!(resp.header.unwrap().request_id, "r1");
    // The stream goes on.
    let resp = stream.send(asking("r2", "echo")).await;
    assert_eq!(status(&resp), (0, String::new()));
    assert_eq!(seen.calls("stall"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_limit_is_an_error_response() {
    let (flow, seen) = flow_with_test_executor("big", "    max_response_bytes: 1048576\n").await;
    let mut stream = RawStream::connect(flow.addr()).await;
    let resp = stream.send(asking("r1", "big")).await;
    let (code, description) = status(&resp);
    assert_eq!(code, 1, "{description}");
    assert!(
        description.contains("max_response_bytes") && description.contains("1048576"),
        "{description}"
    );
    let resp = stream.send(asking("r2", "echo")).await;
    assert_eq!(status(&resp), (0, String::new()));
    assert_eq!(seen.calls("big"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_may_have_been_applied_is_not_retried() {
    // `retries` is 2 by default: a retried call would be counted 3 times.
    let (flow, seen) = flow_with_test_executor("noretry", "").await;
    let mut stream = RawStream::connect(flow.addr()).await;
    // UNAVAILABLE sent by the executor itself: it had the request.
    let resp = stream.send(asking("r1", "unavailable")).await;
    let (code, description) = status(&resp);
    assert_eq!(code, 1, "{description}");
    assert!(description.contains("busy"), "{description}");
    assert_eq!(seen.calls("unavailable"), 1);
    // Past the deadline: it may have been applied.
    let resp = stream.send(asking("r2", "slow")).await;
    let (code, description) = status(&resp);
    assert_eq!(code, 1, "{description}");
    assert!(description.contains("timeout_send"), "{description}");
    // Any retry would have come before the ERROR response; give a late one a
    // chance to show anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((seen.calls("unavailable"), seen.calls("slow")), (1, 1));
    let resp = stream.send(asking("r3", "echo")).await;
    assert_eq!(status(&resp), (0, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_stream_reaches_the_executor_after_its_calls_in_flight() {
    let (flow, seen) = flow_with_test_executor("closed", "").await;
    let mut stream = RawStream::connect(flow.addr()).await;
    stream.send_no_wait(asking("r1", "frame"));
    let deadline = Instant::now() + PATIENCE;
    while seen.events().is_empty() {
        assert!(Instant::now() < deadline, "the frame never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The client goes away while its frame is being applied.
    drop(stream);
    while !seen.events().iter().any(|(kind, _)| *kind == "closed") {
        assert!(
            Instant::now() < deadline,
            "the executor never heard of the end: {:?}",
            seen.events()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = seen.events();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["received", "applied", "closed"], "{events:?}");
    assert!(
        events
            .iter()
            .all(|(_, s)| !s.is_empty() && *s == events[0].1),
        "{events:?}"
    );
}
