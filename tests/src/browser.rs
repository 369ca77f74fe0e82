//! Browser test support: headless Chromium driven over the DevTools protocol
//! (CDP) with a small client of our own, and a plain WebSocket client for the
//! gateway's `/ws`.
//!
//! Chromium runs in its own process group, killed with everything it started
//! when [`Chromium`] is dropped, whether the test passed or panicked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::PATIENCE;

/// How long Chromium may take to start on a busy machine.
const LAUNCH_PATIENCE: Duration = Duration::from_secs(60);

/// The Chromium executable: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps.sh (Debian package chromium), or set CHROMIUM",
        path.display()
    );
    path
}

/// A headless Chromium with a fake camera, killed (with its whole process
/// group) when dropped.
pub struct Chromium {
    child: Child,
    ws_url: String,
    profile: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Chromium {
    /// Starts Chromium with a fresh profile under `dir`, a fake camera that every
    /// page may use, and waits for its DevTools address.
    pub fn launch(dir: &Path) -> Chromium {
        Chromium::start(dir, &["--use-fake-ui-for-media-stream"])
    }

    /// [`launch`](Self::launch), but every page asking for the camera is refused,
    /// as when a user denies it.
    pub fn launch_denying_camera(dir: &Path) -> Chromium {
        Chromium::start(dir, &["--use-fake-ui-for-media-stream=deny"])
    }

    /// [`launch`](Self::launch), accepting any server certificate (for a test
    /// server whose CA this fresh profile does not know).
    pub fn launch_accepting_any_certificate(dir: &Path) -> Chromium {
        Chromium::start(
            dir,
            &[
                "--use-fake-ui-for-media-stream",
                "--ignore-certificate-errors",
            ],
        )
    }

    /// [`launch`](Self::launch) with `extra` command-line switches (e.g.
    /// `--allow-loopback-in-peer-connection` for WebRTC on 127.0.0.1).
    pub fn launch_with(dir: &Path, extra: &[&str]) -> Chromium {
        let mut args = vec!["--use-fake-ui-for-media-stream"];
        args.extend_from_slice(extra);
        Chromium::start(dir, &args)
    }

    fn start(dir: &Path, extra: &[&str]) -> Chromium {
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let mut cmd = Command::new(chromium_path());
        cmd.args([
            "--headless=new",
            "--remote-debugging-port=0",
            "--use-fake-device-for-media-stream",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            // Every page streams, not only the one in front.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--window-size=800,1000",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that Drop ends the renderers and helpers too.
        .process_group(0);
        let mut child = cmd.spawn().expect("start chromium");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let err = child.stderr.take().unwrap();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut browser = Chromium {
            child,
            ws_url: String::new(),
            profile,
            log,
        };
        match rx.recv_timeout(LAUNCH_PATIENCE) {
            Ok(url) => browser.ws_url = url,
            Err(_) => panic!(
                "chromium printed no DevTools address; its output:\n{}",
                browser.log()
            ),
        }
        browser
    }

    /// What Chromium printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Opens a DevTools connection to the browser.
    pub async fn connect(&self) -> Arc<Cdp> {
        Arc::new(Cdp::connect(&self.ws_url).await)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A DevTools protocol connection: commands with ids, answered by id; events
/// are not kept.
pub struct Cdp {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: AtomicU64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open DevTools at {url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        {
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v.get("id").and_then(Value::as_u64)
                        && let Some(tx) = pending.lock().unwrap().remove(&id)
                    {
                        let _ = tx.send(v);
                    }
                }
                // The browser went away: fail every command still waiting.
                pending.lock().unwrap().clear();
            });
        }
        Cdp {
            out,
            pending,
            next: AtomicU64::new(1),
        }
    }

    /// Sends `method` (to `session`'s page, or to the browser) and returns its
    /// `result`, or the protocol's error message.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(Message::text(msg.to_string()))
            .map_err(|_| "DevTools connection closed".to_string())?;
        let reply = tokio::time::timeout(PATIENCE * 3, rx)
            .await
            .map_err(|_| format!("{method}: no answer in time"))?
            .map_err(|_| format!("{method}: DevTools connection closed"))?;
        match reply.get("error") {
            Some(e) => Err(format!("{method}: {e}")),
            None => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Sends a browser-level command that must succeed.
    pub async fn browser(&self, method: &str, params: Value) -> Value {
        self.call(None, method, params).await.unwrap()
    }
}

/// One tab, attached with its own session.
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    target: String,
    /// The name used for its artifacts.
    pub name: String,
}

impl Page {
    /// Opens `url` in a new tab.
    pub async fn open(cdp: &Arc<Cdp>, name: &str, url: &str) -> Page {
        let created = cdp
            .browser("Target.createTarget", json!({"url": url}))
            .await;
        let target = created["targetId"].as_str().unwrap().to_string();
        let attached = cdp
            .browser(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        Page {
            cdp: cdp.clone(),
            session,
            target,
            name: name.to_string(),
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its
    /// value as JSON, or the exception's text.
    pub async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .cdp
            .call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{}: {e}", self.name));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// [`try_eval`](Self::try_eval) that must succeed.
    pub async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{}: {expression}: {e}", self.name))
    }

    /// `window.vchat` of the web client, without its functions.
    pub async fn state(&self) -> Value {
        self.eval("JSON.parse(JSON.stringify(window.vchat || null))")
            .await
    }

    /// Waits until `condition` (a JS expression) is true, polling; panics with
    /// the page's state after `patience`.
    pub async fn wait_for(&self, what: &str, condition: &str, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let ok = self
                .try_eval(&format!("!!(window.vchat && ({condition}))"))
                .await;
            if ok == Ok(Value::Bool(true)) {
                return self.state().await;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no {what} in {patience:?}; window.vchat = {}",
                    self.name,
                    self.state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The DevTools session of this tab, for [`Cdp::call`].
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Saves a PNG screenshot to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let r = self
            .cdp
            .call(
                Some(&self.session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await
            .unwrap();
        let png = base64_decode(r["data"].as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }

    /// Closes the tab, as a user closing it.
    pub async fn close(self) {
        self.cdp
            .browser("Target.closeTarget", json!({"targetId": self.target}))
            .await;
    }
}

/// Decodes standard base64 (what CDP and the web client's state use).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let n = data
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (value(c) << (18 - 6 * i)));
        let take = data.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

/// The gateway's `/ws` as a program (not a browser) uses it.
pub struct WsClient<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
}

/// A parsed message from `/ws`.
#[derive(Debug, Clone)]
pub enum WsReply {
    /// A status (JSON text).
    Status(Value),
    /// A binary message (a mosaic JPEG).
    Binary(bytes::Bytes),
    /// The server closed the connection: code and reason.
    Closed(u16, String),
}

impl<S> WsClient<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// Wraps a connected WebSocket.
    pub fn new(ws: tokio_tungstenite::WebSocketStream<S>) -> Self {
        WsClient { ws }
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, data: impl Into<bytes::Bytes>) {
        self.ws.send(Message::Binary(data.into())).await.unwrap();
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next message (pings and pongs skipped).
    pub async fn next(&mut self) -> WsReply {
        loop {
            let m = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a message in time");
            return match m {
                None => WsReply::Closed(1006, "no close frame".into()),
                Some(Err(e)) => WsReply::Closed(1006, e.to_string()),
                Some(Ok(Message::Text(t))) => WsReply::Status(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Binary(b))) => WsReply::Binary(b),
                Some(Ok(Message::Close(c))) => {
                    let (code, reason) = c.map_or((1005, String::new()), |c| {
                        (c.code.into(), c.reason.to_string())
                    });
                    WsReply::Closed(code, reason)
                }
                Some(Ok(_)) => continue,
            };
        }
    }

    /// The next message, which must be a status.
    pub async fn status(&mut self) -> Value {
        match self.next().await {
            WsReply::Status(v) => v,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    /// The reply to one frame: its status, and the mosaic JPEG after a `mosaic`.
    pub async fn reply(&mut self) -> (Value, Option<bytes::Bytes>) {
        let s = self.status().await;
        if s["type"] == "mosaic" {
            match self.next().await {
                WsReply::Binary(b) => (s, Some(b)),
                other => panic!("expected the mosaic after {s}, got {other:?}"),
            }
        } else {
            (s, None)
        }
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The connection itself.
    pub fn into_inner(self) -> tokio_tungstenite::WebSocketStream<S> {
        self.ws
    }
}
