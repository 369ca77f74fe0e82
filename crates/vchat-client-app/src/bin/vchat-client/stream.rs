//! The network side: stream frames with `Client::post` (request_size 1) and hand
//! each response to the main thread from on_done; when the server is unreachable
//! or goes away, say so and retry with backoff until it is back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::Stream;
use vchat_client::latest::Taken;
use vchat_client::{Client, ClientError, PostOptions, PostSummary};
use vchat_core::Document;

use crate::shared::{Shared, lock};

/// First wait before reconnecting; doubled after each failure up to the maximum.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// With requests in flight and no response for this long, the server is gone
/// (a machine that vanished sends no reset).
const SILENCE: Duration = Duration::from_secs(10);
/// How long the source may take to deliver a frame before it counts as stalled.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(15);
const FRAME_WAIT: Duration = Duration::from_secs(5);
/// How long leaving may take: ending the stream and the last responses.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    pub user: String,
    pub room: Option<String>,
    pub prefetch: usize,
    pub frames: Option<u64>,
    pub deadline: Option<Instant>,
    pub reconnect: bool,
    /// The endpoint called.
    pub endpoint: String,
    /// `receive` mode: one request, then the server's frames.
    pub receive: bool,
    /// PEM CA certificate for grpcs:// (else the system roots).
    pub ca: Option<std::path::PathBuf>,
    /// JPEG quality when frames travel as JPEG; `None`: raw tensors.
    pub jpeg_quality: Option<u8>,
    /// Access token of a Flow with access control.
    pub token: Option<String>,
}

/// Largest mosaic decoded from a JPEG response, in pixels.
const MAX_MOSAIC_PIXELS: usize = 8192 * 8192;
/// While the camera is paused, one tiny frame tagged `paused` this often keeps
/// the user in the room: well within the executor's `idle_timeout_s` (5 s by
/// default) and the gateway's `stream_idle_timeout_s` (30 s).
const PAUSED_PERIOD: Duration = Duration::from_millis(500);
/// The paused frame is the camera's frame this many times smaller on each side:
/// the executor draws the paused tile at the camera's aspect ratio.
const PAUSED_SHRINK: usize = 8;

/// `tags.participants` of a response document.
fn participants_of(doc: &Document) -> Option<Vec<String>> {
    use vchat_core::value::Kind;
    match doc.tags.get("participants")?.kind.as_ref()? {
        Kind::ListValue(l) => Some(
            l.values
                .iter()
                .filter_map(|v| match v.kind.as_ref() {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Why the frame stream ended.
#[derive(Debug, Clone)]
enum End {
    /// The user left, or --frames / --duration was reached.
    Done,
    /// The source failed (camera gone, stalled).
    Failed(String),
}

/// What one connection attempt records.
#[derive(Default)]
struct Attempt {
    ended: Mutex<Option<End>>,
    sent: AtomicU64,
    received: AtomicU64,
    answered: AtomicBool,
    last_progress: Mutex<Option<Instant>>,
}

impl Attempt {
    fn end(&self, e: End) {
        lock(&self.ended).get_or_insert(e);
    }

    fn progress(&self) {
        *lock(&self.last_progress) = Some(Instant::now());
    }
}

/// Streams until the user leaves, a limit is reached, the source ends, or a fatal
/// error.
pub async fn run(shared: Arc<Shared>, cfg: Config) -> anyhow::Result<PostSummary> {
    let mut total = PostSummary::default();
    let mut backoff = BACKOFF_START;
    let failing = Arc::new(AtomicBool::new(false));
    loop {
        // A fresh channel each time: the old connection may be dead without knowing.
        let client = Client::open(&cfg.addr, cfg.ca.as_deref())?;
        let attempt = Arc::new(Attempt::default());
        attempt.progress();
        let options = post_options(&shared, &cfg, &attempt, &failing);
        let post = client.post(
            &cfg.endpoint,
            frames(shared.clone(), cfg.clone(), attempt.clone()),
            options,
        );
        let outcome = tokio::select! {
            r = post => Some(r),
            _ = silence(&attempt) => None,
            _ = async {
                shared.stop.cancelled().await;
                tokio::time::sleep(if cfg.receive { Duration::ZERO } else { LEAVE_GRACE }).await;
            } => {
                if !cfg.receive {
                    eprintln!("vchat-client: the server did not confirm the end of the stream; leaving anyway");
                }
                return Ok(total);
            }
        };
        let ended = lock(&attempt.ended).clone();
        let reason = match (outcome, ended) {
            (_, Some(End::Failed(e))) => bail!(e),
            (Some(Ok(s)), Some(End::Done)) => {
                add_up(&mut total, s);
                return Ok(total);
            }
            (Some(Ok(s)), None) => {
                add_up(&mut total, s);
                "the server ended the stream".to_string()
            }
            (Some(Err(_)), Some(End::Done)) if shared.stop.is_cancelled() => return Ok(total),
            (Some(Err(e)), _) if !e.is_unavailable() => return Err(e.into()),
            (Some(Err(e)), _) => describe(&e),
            (None, _) => format!(
                "the server stopped answering (no response for {} s)",
                SILENCE.as_secs()
            ),
        };
        let answered = attempt.answered.load(Ordering::Relaxed);
        if !cfg.reconnect {
            if answered {
                bail!("lost {}: {reason} (--no-reconnect)", cfg.addr);
            }
            bail!(
                "cannot reach {} ({reason}): is `vchat flow` running there?",
                cfg.addr
            );
        }
        if answered {
            backoff = BACKOFF_START;
        }
        failing.store(true, Ordering::Relaxed);
        let what = if answered { "lost" } else { "cannot reach" };
        eprintln!(
            "vchat-client: {what} {} ({reason}); retrying in {:.1} s (--no-reconnect exits instead)",
            cfg.addr,
            backoff.as_secs_f64()
        );
        *lock(&shared.status) = Some(format!(
            "server unavailable: retrying in {:.0} s",
            backoff.as_secs_f64().ceil()
        ));
        let deadline = async {
            match cfg.deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.stop.cancelled() => return Ok(total),
            _ = deadline => return Ok(total),
        }
        *lock(&shared.status) = Some("server unavailable: reconnecting".into());
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn add_up(total: &mut PostSummary, attempt: PostSummary) {
    total.requests += attempt.requests;
    total.done += attempt.done;
    total.errors += attempt.errors;
}

/// The gRPC status message rather than tonic's whole debug text.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Rpc { status, .. } if !status.message().is_empty() => {
            status.message().to_string()
        }
        other => other.to_string(),
    }
}

/// Resolves when requests are in flight and nothing came back for [`SILENCE`].
async fn silence(attempt: &Attempt) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let waiting =
            attempt.sent.load(Ordering::Relaxed) > attempt.received.load(Ordering::Relaxed);
        let quiet = lock(&attempt.last_progress).is_some_and(|t| t.elapsed() > SILENCE);
        if waiting && quiet {
            return;
        }
    }
}

fn post_options(
    shared: &Arc<Shared>,
    cfg: &Config,
    attempt: &Arc<Attempt>,
    failing: &Arc<AtomicBool>,
) -> PostOptions {
    let on_any = {
        let shared = shared.clone();
        let attempt = attempt.clone();
        let failing = failing.clone();
        let addr = cfg.addr.clone();
        move || {
            attempt.received.fetch_add(1, Ordering::Relaxed);
            attempt.progress();
            if !attempt.answered.swap(true, Ordering::Relaxed) {
                *lock(&shared.status) = None;
                if failing.swap(false, Ordering::Relaxed) {
                    eprintln!("vchat-client: connected to {addr} again; streaming");
                }
            }
        }
    };
    let on_error_any = on_any.clone();
    let options = match &cfg.token {
        Some(t) => PostOptions::new().token(t.clone()),
        None => PostOptions::new(),
    };
    options
        .request_size(1)
        .prefetch(cfg.prefetch)
        .live_parameters(shared.params.subscribe())
        .on_done({
            let shared = shared.clone();
            let on_any = on_any;
            let user = cfg.user.clone();
            move |resp| {
                on_any();
                let mut changed = false;
                if let Some(now) = resp
                    .docs()
                    .ok()
                    .and_then(|d| d.first().and_then(participants_of))
                {
                    let mut known = lock(&shared.participants);
                    if *known != now {
                        // One line per change: scripts wait on it for a user to be in.
                        println!("{user}: participants: {}", now.join(", "));
                        *known = now;
                        changed = true;
                    }
                }
                let results = resp.results();
                if !results.is_empty() {
                    lock(&shared.stats).results = results
                        .iter()
                        .map(|(k, v)| format!("{k}={}", vchat_client::sink::value_text(v)))
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                if resp.is_skipped() {
                    let mut stats = lock(&shared.stats);
                    stats.skipped += 1;
                    stats.record(resp.latency(), None, false);
                    return;
                }
                let frame = resp.docs().ok().and_then(|d| {
                    d.first()
                        .and_then(|d| vchat_core::jpeg::frame_of(d, MAX_MOSAIC_PIXELS))
                        .and_then(Result::ok)
                });
                lock(&shared.stats).record(
                    resp.latency(),
                    frame.as_ref().map(|f| f.shape()),
                    false,
                );
                lock(&shared.fps).tick();
                if let Some(l) = resp.latency() {
                    *lock(&shared.latency) = Some(l);
                }
                if let Some(frame) = frame {
                    lock(&shared.moments).offer(&frame, changed);
                    *lock(&shared.newest) = Some(frame.clone());
                    // Drawn by the main thread the moment it looks (within ~10 ms).
                    shared.mosaics.put(frame);
                }
            }
        })
        .on_error({
            let shared = shared.clone();
            let on_any = on_error_any;
            move |resp| {
                on_any();
                eprintln!(
                    "vchat-client: request failed: {}",
                    resp.error().unwrap_or("unknown error")
                );
                lock(&shared.stats).record(resp.latency(), None, true);
            }
        })
}

/// The frames of one connection attempt: the newest captured frame each time the
/// client has room for a request.
fn frames(
    shared: Arc<Shared>,
    cfg: Config,
    attempt: Arc<Attempt>,
) -> impl Stream<Item = Document> + Send + 'static {
    futures::stream::unfold((), move |()| {
        let (shared, cfg, attempt) = (shared.clone(), cfg.clone(), attempt.clone());
        async move {
            if cfg.frames.is_some_and(|n| lock(&shared.stats).sent >= n) {
                attempt.end(End::Done);
                return None;
            }
            if cfg.receive {
                // One request starts the server's stream; then keep the stream open
                // until the user leaves.
                if attempt.sent.load(Ordering::Relaxed) > 0 {
                    let deadline = async {
                        match cfg.deadline {
                            Some(d) => tokio::time::sleep_until(d.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shared.stop.cancelled() => {}
                        _ = deadline => {}
                    }
                    // The server's stream goes on until we leave: leave now.
                    shared.stop.cancel();
                    attempt.end(End::Done);
                    return None;
                }
                let mut doc = Document::new();
                doc.set_tag_str("user", cfg.user.clone());
                if let Some(r) = &cfg.room {
                    doc.set_tag_str("room", r.clone());
                }
                lock(&shared.stats).sent += 1;
                attempt.sent.fetch_add(1, Ordering::Relaxed);
                return Some((doc, ()));
            }
            let capture = &shared.capture;
            let mut wait = if capture.captured() == 0 {
                FIRST_FRAME_WAIT
            } else {
                FRAME_WAIT
            };
            if let Some(p) = capture.period() {
                wait = wait.max(p * 3);
            }
            let deadline = async {
                match cfg.deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let taken = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => None,
                _ = deadline => None,
                t = tokio::time::timeout(wait, capture.frames().take()) => Some(t),
            };
            let frame = match taken {
                None => {
                    attempt.end(End::Done);
                    return None;
                }
                Some(Err(_)) => {
                    attempt.end(End::Failed(format!(
                        "{} delivered no frame for {} s (a camera that stopped, or a stalled file)",
                        capture.description(),
                        wait.as_secs()
                    )));
                    return None;
                }
                Some(Ok(Taken::Value(f))) => f,
                Some(Ok(_)) => {
                    match capture.error() {
                        Some(e) => attempt.end(End::Failed(e)),
                        None => attempt.end(End::Done),
                    }
                    return None;
                }
            };
            *lock(&shared.self_view) = Some(frame.clone());
            if shared.paused.load(Ordering::Relaxed) {
                let deadline = async {
                    match cfg.deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => {
                        attempt.end(End::Done);
                        return None;
                    }
                    _ = deadline => {
                        attempt.end(End::Done);
                        return None;
                    }
                    _ = tokio::time::sleep(PAUSED_PERIOD) => {}
                }
            }
            if shared.paused.load(Ordering::Relaxed) {
                let (h, w) = (frame.shape()[0], frame.shape()[1]);
                let (h, w) = ((h / PAUSED_SHRINK).max(1), (w / PAUSED_SHRINK).max(1));
                let Ok(tiny) = vchat_core::Tensor::image(h, w, 3, vec![0u8; h * w * 3].into())
                else {
                    attempt.end(End::Failed("cannot make the paused frame".into()));
                    return None;
                };
                let mut doc = Document::with_tensor(tiny);
                doc.set_tag_str("user", cfg.user.clone());
                if let Some(r) = &cfg.room {
                    doc.set_tag_str("room", r.clone());
                }
                doc.set_tag(
                    "paused",
                    vchat_core::Value {
                        kind: Some(vchat_core::value::Kind::BoolValue(true)),
                    },
                );
                if cfg.jpeg_quality.is_some() {
                    doc.set_tag_str("accept", "jpeg");
                }
                lock(&shared.stats).sent += 1;
                attempt.sent.fetch_add(1, Ordering::Relaxed);
                return Some((doc, ()));
            }
            let mut doc = match cfg.jpeg_quality {
                None => Document::with_tensor(frame),
                Some(q) => {
                    let (h, w) = (frame.shape()[0], frame.shape()[1]);
                    match vchat_core::jpeg::encode_bgr(frame.data(), h, w, q) {
                        Ok(jpeg) => {
                            let mut d = Document::new();
                            d.set_jpeg(jpeg);
                            d
                        }
                        Err(e) => {
                            attempt.end(End::Failed(format!("cannot encode a frame: {e}")));
                            return None;
                        }
                    }
                }
            };
            doc.set_tag_str("user", cfg.user.clone());
            if let Some(r) = &cfg.room {
                doc.set_tag_str("room", r.clone());
            }
            lock(&shared.stats).sent += 1;
            attempt.sent.fetch_add(1, Ordering::Relaxed);
            Some((doc, ()))
        }
    })
}
