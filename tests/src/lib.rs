//! Test support: start the real `vchat` binaries on loopback ports chosen by the OS,
//! and talk to them with the client library or with raw protocol messages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use vchat_client::{Client, PostOptions, PostSummary, Response};
use vchat_core::{Document, Tensor};
use vchat_proto::DataRequestProto;
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::jina_rpc_client::JinaRpcClient;

pub mod browser;

/// How long any single expected event may take before a test gives up. Generous:
/// the machines are shared; tests assert on what arrives, not on how fast.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of a binary of this workspace, built by `cargo build --workspace --bins`
/// into the same target directory as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A temporary directory for one test, under target/.
pub fn scratch(tag: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .ancestors()
        .nth(3)
        .unwrap()
        .join("e2e")
        .join(format!("{tag}-{}", vchat_core::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How long a process stopped by a test helper has after SIGTERM before SIGKILL:
/// more than a Flow's own grace for its streams and its executors' processes.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Sends `signal` (`libc::SIGTERM`, ...) to the process `child`.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Stops `child` as a user would: SIGTERM, then SIGKILL if it is still running
/// after `grace`; returns how it exited.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Processes (pid, command line) whose environment holds `key=value`: the
/// descendants of a process started with that variable, however deep, even
/// when other tests run processes of the same programs beside them. Zombies
/// (their environment is gone) are not counted.
pub fn processes_with_env(key: &str, value: &str) -> Vec<(u32, String)> {
    let wanted = format!("{key}={value}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

/// A running `vchat flow`, stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`])
/// when dropped.
pub struct Flow {
    child: Child,
    addr: String,
    metrics: Option<String>,
    web: Option<String>,
    stderr: Arc<Mutex<String>>,
}

impl Flow {
    /// Starts `vchat flow --uses <flow> --host 127.0.0.1 --port 0 <extra>` and waits
    /// for its `vchat: listening on` line.
    pub fn start(flow: &Path, extra: &[&str]) -> Flow {
        Flow::start_on_port(flow, 0, extra)
    }

    /// [`start`](Self::start) on a given port: to restart a Flow where its clients
    /// expect it (get a free one from [`free_port`]).
    pub fn start_on_port(flow: &Path, port: u16, extra: &[&str]) -> Flow {
        use std::ffi::OsStr;
        let port = port.to_string();
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("flow"), OsStr::new("--uses"), flow.as_os_str()];
        args.extend(["--host", "127.0.0.1", "--port", port.as_str()].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        Flow::spawn(&bin("vchat"), &args)
    }

    /// Starts `vchat executor --uses <yaml> --host 127.0.0.1 --port <port>`.
    pub fn executor(yaml: &Path, port: u16) -> Flow {
        use std::ffi::OsStr;
        let port = port.to_string();
        let args = [
            OsStr::new("executor"),
            OsStr::new("--uses"),
            yaml.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("127.0.0.1"),
            OsStr::new("--port"),
            OsStr::new(&port),
        ];
        Flow::spawn(&bin("vchat"), &args)
    }

    /// Starts `program args...` and waits for its `vchat: listening on` line.
    pub fn spawn(program: &Path, args: &[&std::ffi::OsStr]) -> Flow {
        Flow::spawn_with_env(program, args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(flow: &Path, extra: &[&str], env: &[(&str, &str)]) -> Flow {
        use std::ffi::OsStr;
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("flow"), OsStr::new("--uses"), flow.as_os_str()];
        args.extend(["--host", "127.0.0.1", "--port", "0"].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        Flow::spawn_with_env(&bin("vchat"), &args, env)
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_with_env(program: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Flow {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vchat flow");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let err = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // The metrics line and the web line (http:// or https://), when there
            // are, come before the gRPC address.
            let (mut metrics, mut web) = (None, None);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("vchat: metrics on ") {
                    metrics = Some(url.trim().to_string());
                }
                if let Some(addr) = line.strip_prefix("vchat: listening on ") {
                    let addr = addr.trim().to_string();
                    if addr.starts_with("http://") || addr.starts_with("https://") {
                        web = Some(addr);
                    } else {
                        let _ = tx.send((addr, metrics.take(), web.take()));
                    }
                }
            }
        });
        let (addr, metrics, web) = match rx.recv_timeout(PATIENCE) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} did not start; stderr:\n{}",
                    program.display(),
                    stderr.lock().unwrap()
                );
            }
        };
        Flow {
            child,
            addr,
            metrics,
            web,
            stderr,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), when the Flow serves the
    /// browser side.
    pub fn web_url(&self) -> &str {
        self.web.as_deref().expect("the Flow serves the web client")
    }

    /// `http://127.0.0.1:PORT/metrics`, when the Flow serves metrics.
    pub fn metrics_url(&self) -> &str {
        self.metrics.as_deref().expect("the Flow serves metrics")
    }

    /// Starts the repository's own `flow.yml` without the names on tiles
    /// (`tests/flows/unlabelled.yml`): its tests compare every pixel of a
    /// mosaic with the colours sent.
    pub fn start_default(extra: &[&str]) -> Flow {
        Flow::start(&repo_root().join("tests/flows/unlabelled.yml"), extra)
    }

    /// `grpc://127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// What the process logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit (at most [`PATIENCE`]).
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        self.wait_exit("SIGTERM")
    }

    /// Kills the process with SIGKILL, alone (not its children), and reaps it.
    pub fn kill_hard(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGKILL);
        self.wait_exit("SIGKILL")
    }

    fn wait_exit(&mut self, after: &str) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit after {after}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGINT without waiting for the exit.
    pub fn signal_interrupt(&self) {
        signal(&self.child, libc::SIGINT);
    }

    /// Sends SIGINT and waits for the exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal_interrupt();
        self.wait_exit("SIGINT")
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        // Gracefully, so that the Flow stops the processes it started.
        terminate(&mut self.child, STOP_GRACE);
    }
}

/// A loopback port nobody listens on right now: bound by the OS, then released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python of the virtual environment with Jina 3.34 in it.
pub fn jina_python() -> PathBuf {
    let py = repo_root().join("target/jina-venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/jina-venv.sh (scripts/test.sh does) to install Jina 3.34",
        py.display()
    );
    py
}

/// A running process whose output lines the test can wait for; stopped (SIGTERM,
/// then SIGKILL after [`STOP_GRACE`]) when dropped.
pub struct Proc {
    child: Child,
    lines: std::sync::mpsc::Receiver<(bool, String)>,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the process");
        let (tx, lines) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (is_err, pipe) in [
            (false, Box::new(out) as Box<dyn std::io::Read + Send>),
            (true, Box::new(err)),
        ] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    {
                        let mut l = log.lock().unwrap();
                        l.push_str(&line);
                        l.push('\n');
                    }
                    let _ = tx.send((is_err, line));
                }
            });
        }
        Proc { child, lines, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far, stdout and stderr interleaved.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a line (stdout or stderr) for which `pred` holds and returns it;
    /// panics with the log after [`PATIENCE`].
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line {what} in time; output so far:\n{}", self.log()),
            }
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit; returns the status and the log.
    pub fn interrupt(self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.wait()
    }

    /// Waits for the exit (at most [`PATIENCE`] after output stops mattering);
    /// returns the status and everything printed.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE * 3;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit; output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads catch the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.log())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, STOP_GRACE);
    }
}

/// An X server for window tests: `Xvfb -displayfd`, so the server picks a free
/// display number itself and parallel tests never race for one (which
/// `xvfb-run -a` can). Killed when dropped.
pub struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Starts Xvfb; panics with how to install it when it is missing.
    pub fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x1024x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is missing: run scripts/install-deps.sh (Debian package xvfb)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("Xvfb did not report its display: {line:?}")
        });
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }

    /// The value for DISPLAY.
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes a PNG file: (height, width, RGB pixels).
pub fn decode_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.height as usize, info.width as usize, buf)
}

/// Share of the pixels in rows `rows` of a decoded RGB PNG (see [`decode_png`])
/// within `tolerance` of `bgr` in every channel.
pub fn share_of(
    png: &(usize, usize, Vec<u8>),
    rows: std::ops::Range<usize>,
    bgr: [u8; 3],
    tolerance: u8,
) -> f64 {
    let (_, w, data) = png;
    let rgb = [bgr[2], bgr[1], bgr[0]];
    let px: Vec<&[u8]> = data[rows.start * w * 3..rows.end * w * 3]
        .chunks(3)
        .collect();
    let close = |p: &[u8]| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= tolerance);
    px.iter().filter(|p| close(p)).count() as f64 / px.len() as f64
}

/// Writes `text` to `dir/name` (creating folders) and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// A solid-colour H×W×3 frame (BGR) tagged with `user`.
pub fn frame(user: &str, color: [u8; 3], h: usize, w: usize) -> Document {
    let data: Vec<u8> = std::iter::repeat_n(color, h * w).flatten().collect();
    let mut doc = Document::with_tensor(Tensor::image(h, w, 3, Bytes::from(data)).unwrap());
    doc.set_tag_str("user", user);
    doc
}

/// The colour of each `band`-row band of a frame, checking each band is uniform.
pub fn bands(t: &Tensor, band: usize) -> Vec<[u8; 3]> {
    let row = t.shape()[1] * 3;
    t.data()
        .chunks(row * band)
        .map(|c| {
            let first = [c[0], c[1], c[2]];
            assert!(c.chunks(3).all(|p| p == first), "band is not one colour");
            first
        })
        .collect()
}

/// A chat user driven by the test through the client library: each
/// [`send`](Self::send) posts one frame (request_size 1), each response arrives
/// through on_done / on_error.
pub struct User {
    tx: Option<mpsc::Sender<Document>>,
    responses: mpsc::UnboundedReceiver<Response>,
    task: tokio::task::JoinHandle<Result<PostSummary, vchat_client::ClientError>>,
}

impl User {
    /// Opens a stream to `addr`.
    pub fn connect(addr: &str) -> User {
        User::with_client(Client::new(addr).unwrap())
    }

    /// Opens a stream with `client` (e.g. one for grpcs:// with a private CA).
    pub fn with_client(client: Client) -> User {
        let (tx, rx) = mpsc::channel(4);
        let (resp_tx, responses) = mpsc::unbounded_channel();
        let err_tx = resp_tx.clone();
        let options = PostOptions::new()
            .request_size(1)
            .on_done(move |r| {
                let _ = resp_tx.send(r.clone());
            })
            .on_error(move |r| {
                let _ = err_tx.send(r.clone());
            });
        let task = tokio::spawn(client.post("/", ReceiverStream::new(rx), options));
        User {
            tx: Some(tx),
            responses,
            task,
        }
    }

    /// Sends `doc` and returns its response.
    pub async fn send(&mut self, doc: Document) -> Response {
        self.tx
            .as_ref()
            .expect("stream open")
            .send(doc)
            .await
            .expect("stream open");
        tokio::time::timeout(PATIENCE, self.responses.recv())
            .await
            .expect("response in time")
            .expect("stream open")
    }

    /// Ends the stream and waits until every response arrived.
    pub async fn leave(mut self) -> PostSummary {
        self.tx.take();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("stream ends in time")
            .unwrap()
            .expect("stream ends cleanly")
    }
}

/// A stream on which the test sends raw protocol messages, so that it can send
/// what the client library would refuse to build.
pub struct RawStream {
    tx: Option<mpsc::UnboundedSender<DataRequestProto>>,
    responses: Option<tonic::Streaming<DataRequestProto>>,
}

impl RawStream {
    /// Opens `jina.JinaRPC/Call` on `addr`.
    pub async fn connect(addr: &str) -> RawStream {
        RawStream::try_connect(addr).await.unwrap()
    }

    /// Opens `jina.JinaRPC/Call` on `addr`, or returns the status the gateway
    /// refuses the stream with.
    pub async fn try_connect(addr: &str) -> Result<RawStream, tonic::Status> {
        let uri = addr.replace("grpc://", "http://");
        let mut client = JinaRpcClient::connect(uri)
            .await
            .unwrap()
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::unbounded_channel();
        let responses = client
            .call(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(RawStream {
            tx: Some(tx),
            responses: Some(responses),
        })
    }

    /// Sends `req` and returns the next response.
    pub async fn send(&mut self, req: DataRequestProto) -> DataRequestProto {
        self.tx.as_ref().unwrap().send(req).unwrap();
        tokio::time::timeout(
            PATIENCE,
            self.responses
                .as_mut()
                .expect("responses not taken")
                .message(),
        )
        .await
        .expect("response in time")
        .expect("stream still open")
        .expect("a response, not the end of the stream")
    }

    /// Hands the response side to the caller (to read concurrently with sending).
    pub fn take_responses(&mut self) -> tonic::Streaming<DataRequestProto> {
        self.responses.take().expect("responses not taken yet")
    }

    /// Sends `req` without waiting for its response.
    pub fn send_no_wait(&mut self, req: DataRequestProto) {
        self.tx.as_ref().unwrap().send(req).unwrap();
    }

    /// Ends the sending side and returns what the stream ends with.
    pub async fn close(mut self) -> Result<Option<DataRequestProto>, tonic::Status> {
        self.tx.take();
        tokio::time::timeout(
            PATIENCE,
            self.responses
                .as_mut()
                .expect("responses not taken")
                .message(),
        )
        .await
        .expect("stream ends in time")
    }

    /// Waits for the next message or the end of the stream without sending.
    pub async fn next(&mut self) -> Result<Option<DataRequestProto>, tonic::Status> {
        tokio::time::timeout(
            PATIENCE,
            self.responses
                .as_mut()
                .expect("responses not taken")
                .message(),
        )
        .await
        .expect("stream answers in time")
    }
}

/// A request with id `id` carrying `docs`.
pub fn request(id: &str, docs: Vec<vchat_proto::DocumentProto>) -> DataRequestProto {
    DataRequestProto {
        header: Some(vchat_proto::HeaderProto {
            request_id: id.to_string(),
            exec_endpoint: Some("/".into()),
            ..Default::default()
        }),
        data: Some(DataContentProto {
            documents: Some(Documents::Docs(vchat_proto::DocumentArrayProto { docs })),
        }),
        ..Default::default()
    }
}

/// `(code, description)` of a response's status; code 0 is SUCCESS.
pub fn status(resp: &DataRequestProto) -> (i32, String) {
    let s = resp
        .header
        .as_ref()
        .and_then(|h| h.status.clone())
        .unwrap_or_default();
    (s.code, s.description)
}

/// The single tensor of a response.
pub fn response_tensor(resp: &DataRequestProto) -> Tensor {
    match resp.data.as_ref().and_then(|d| d.documents.as_ref()) {
        Some(Documents::Docs(da)) => {
            let doc = Document::from_proto(da.docs[0].clone()).unwrap();
            doc.tensor().expect("a tensor").clone()
        }
        other => panic!("no docs in response: {other:?}"),
    }
}

/// A solid-colour H×W frame (BGR) tagged with `user`, sent as a JPEG blob.
pub fn jpeg_frame(user: &str, color: [u8; 3], h: usize, w: usize) -> Document {
    let data: Vec<u8> = std::iter::repeat_n(color, h * w).flatten().collect();
    let mut doc = Document::new();
    doc.content = Some(vchat_core::Content::Blob(
        vchat_core::jpeg::encode_bgr(&data, h, w, 90).unwrap(),
    ));
    doc.mime_type = vchat_core::jpeg::MIME_JPEG.into();
    doc.set_tag_str("user", user);
    doc
}

/// The frame of a response document, a tensor or a decoded JPEG, and whether
/// it came as JPEG.
pub fn frame_of(doc: &Document) -> (Tensor, bool) {
    let jpeg = vchat_core::jpeg::is_jpeg(doc);
    let t = vchat_core::jpeg::frame_of(doc, 1 << 26)
        .expect("a frame")
        .expect("a valid frame");
    (t, jpeg)
}

/// Whether every pixel of the `band`-row bands of `t` is within `tolerance` of
/// the colour given for that band (for JPEG, which is lossy). The 4 rows next to
/// each edge of a band are not checked: a decoder's chroma upsampling blends the
/// rows on both sides of a boundary between two users.
pub fn bands_close(t: &Tensor, band: usize, colors: &[[u8; 3]], tolerance: u8) -> bool {
    const EDGE: usize = 4;
    let row = t.shape()[1] * 3;
    let chunks: Vec<&[u8]> = t.data().chunks(row * band).collect();
    chunks.len() == colors.len()
        && chunks.iter().zip(colors).all(|(c, want)| {
            let inner = &c[EDGE.min(band / 4) * row..c.len() - EDGE.min(band / 4) * row];
            inner
                .chunks(3)
                .all(|p| (0..3).all(|i| p[i].abs_diff(want[i]) <= tolerance))
        })
}

/// `tags.participants` of a response document.
pub fn participants(doc: &Document) -> Vec<String> {
    use vchat_core::value::Kind;
    match doc.tags.get("participants").and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(l)) => l
            .values
            .iter()
            .filter_map(|v| match v.kind.as_ref() {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        other => panic!("no tags.participants list: {other:?}"),
    }
}

/// The body of `GET url` (plain HTTP, as the metrics endpoint serves).
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        sock,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample `name` (with its labels, as written) in Prometheus
/// text, 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A private CA and a server certificate it signed for `localhost` and
/// `127.0.0.1`, written to `dir`: `(ca.pem, server.pem, server.key)`.
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "vchat test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
