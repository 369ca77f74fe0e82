//! `vchat-client ADDR USER`: join a vchat video chat.
//!
//! Threads: the frame source is read on its own thread (`Capture`), which hands
//! the newest frame to the sender through a single-slot handoff; the network runs
//! on a tokio runtime (`stream.rs`) whose on_done callback hands each mosaic, the
//! moment it arrives, to the main thread through another such slot; the main
//! thread owns the window (OpenCV's highgui is single-threaded) and the other
//! sinks, and runs the window's event loop.

mod stream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use vchat_client::capture::Capture;
use vchat_client::latest::{Latest, Taken};
use vchat_client::sink::{Control, FpsCounter, MosaicSink, Overlay, Stats, save_png};
use vchat_client::source::{FrameSource, TestPattern};
use vchat_core::Tensor;

/// Join a vchat video chat: stream your webcam to a vchat (or Jina) gateway and
/// see the mosaic of every user in the room.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    after_help = "In the window: h shows the keys, m pauses and resumes your camera, ESC or q \
        leaves the chat. Examples:\n  \
        vchat-client grpc://192.168.1.20:12345 alice\n  \
        vchat-client grpc://127.0.0.1:12345 bob --source clip.avi --loop\n  \
        vchat-client grpc://127.0.0.1:12345 carol --headless --source test --frames 300"
)]
struct Args {
    /// Gateway address, as `vchat flow` prints it: grpc://HOST:PORT, or
    /// grpcs://HOST:PORT for a Flow served over TLS.
    addr: String,
    /// Your name in the chat (sent as tags.user).
    user: String,
    /// Room to join (tags.room); users in other rooms never see you.
    #[arg(long)]
    room: Option<String>,
    /// Frame source: a camera index (0 is the default webcam), a video file, or
    /// `test` (a moving pattern in a colour derived from the user name).
    #[arg(long, default_value = "0")]
    source: String,
    /// Start a video file over at its end instead of leaving the chat.
    #[arg(long = "loop")]
    looping: bool,
    /// Frame size sent, HEIGHTxWIDTH; every frame is resized to it.
    #[arg(long, default_value = "200x300", value_parser = parse_size)]
    size: (usize, usize),
    /// Most frames per second sent [default: the camera's or the file's rate; 30
    /// for the test pattern]; 0: as fast as responses come back.
    #[arg(long)]
    fps: Option<f64>,
    /// No window: print a status line per second instead.
    #[arg(long)]
    headless: bool,
    /// Write the received mosaics to this video file (.avi: MJPG).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Save the newest mosaic to this PNG file on exit.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Save a contact sheet of the chat over time to this PNG file on exit: the
    /// mosaic each time the room's users change, and one every
    /// --contact-sheet-every seconds (at most 16 moments, spread over the run).
    #[arg(long)]
    contact_sheet: Option<PathBuf>,
    /// Seconds between two moments of --contact-sheet.
    #[arg(long, default_value_t = 2.0)]
    contact_sheet_every: f64,
    /// Join with the camera paused: the others see a "paused" tile with your
    /// name until `m` in the window resumes it.
    #[arg(long)]
    paused: bool,
    /// Stop after sending this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Requests in flight at most; the frame sent is always the newest one.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// Endpoint to call (the request's exec_endpoint).
    #[arg(long, default_value = "/")]
    endpoint: String,
    /// How the stream flows: `send-receive` (a frame in, a mosaic out), `receive`
    /// (one request, then the frames a source executor on the server yields), `send`
    /// (frames in; acknowledgements and extra outputs back, no frames).
    #[arg(long, default_value = "send-receive", value_parser = ["send-receive", "receive", "send"])]
    mode: String,
    /// An extra input sent with every request, KEY=VALUE (a number, true/false, or
    /// text); repeat for more. In the window, `]` raises and `[` lowers the first
    /// numeric one by 10% while streaming.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, vchat_core::Value)>,
    /// Exit when the server is unreachable or goes away, instead of retrying.
    #[arg(long)]
    no_reconnect: bool,
    /// CA certificate (PEM) that signed the server's, for grpcs:// with a private
    /// CA or a self-signed certificate [default: the system's roots].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Access token for a Flow with access control (`vchat token` makes one);
    /// USER must be the token's identity.
    #[arg(long, env = "VCHAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How frames travel: `raw` (uint8 tensors) or `jpeg` (blobs with mime_type
    /// image/jpeg; the mosaics come back as JPEG too).
    #[arg(long, default_value = "raw", value_parser = ["raw", "jpeg"])]
    encoding: String,
    /// JPEG quality, 1 to 100 (with --encoding jpeg).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not HEIGHTxWIDTH, e.g. 200x300"))?;
    let h: usize = h.parse().map_err(|_| format!("bad height in {s:?}"))?;
    let w: usize = w.parse().map_err(|_| format!("bad width in {s:?}"))?;
    if h == 0 || w == 0 || h > 4320 || w > 7680 {
        return Err(format!(
            "{s:?}: height and width must be 1..=4320 and 1..=7680"
        ));
    }
    Ok((h, w))
}

fn parse_param(s: &str) -> Result<(String, vchat_core::Value), String> {
    use vchat_core::value::Kind;
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    let kind = match (v.parse::<f64>(), v) {
        (Ok(n), _) if n.is_finite() => Kind::NumberValue(n),
        (_, "true") => Kind::BoolValue(true),
        (_, "false") => Kind::BoolValue(false),
        _ => Kind::StringValue(v.to_string()),
    };
    Ok((k.to_string(), vchat_core::Value { kind: Some(kind) }))
}

/// What the network side and the main thread share.
pub(crate) struct Shared {
    pub capture: Capture,
    pub stats: Mutex<Stats>,
    pub fps: Mutex<FpsCounter>,
    pub latency: Mutex<Option<Duration>>,
    /// Newest mosaic for the output thread (taken when drawn).
    pub mosaics: Latest<Tensor>,
    /// Newest mosaic for `--snapshot` (kept).
    pub newest: Mutex<Option<Tensor>>,
    /// A problem to show on the window (server unavailable...).
    pub status: Mutex<Option<String>>,
    /// Set to leave: ESC, q, closed window, Ctrl-C, SIGTERM.
    pub stop: CancellationToken,
    /// `receive` mode: frames come from the server, none are captured or dropped.
    pub receive: bool,
    /// The room's users in mosaic order, from the newest response.
    pub participants: Mutex<Vec<String>>,
    /// The newest frame of the user's own source, for the self-view.
    pub self_view: Mutex<Option<Tensor>>,
    /// `m` in the window: the camera is paused; the stream stays alive with a
    /// tiny frame tagged `paused` a few times a second.
    pub paused: AtomicBool,
    /// Mosaics over time for `--contact-sheet`.
    pub moments: Mutex<Moments>,
    /// The extra inputs sent with each request; keys in the window change them.
    pub params: tokio::sync::watch::Sender<std::collections::BTreeMap<String, vchat_core::Value>>,
}

/// Most mosaics on a contact sheet.
const MAX_MOMENTS: usize = 16;

/// The mosaics kept for a contact sheet: one whenever the room's users change
/// and one every `every`. When [`MAX_MOMENTS`] are kept, every other one goes
/// and the period doubles, so the sheet spans the whole run in bounded memory.
pub(crate) struct Moments {
    start: Instant,
    /// `None`: no contact sheet, nothing is kept.
    every: Option<Duration>,
    last: Option<Instant>,
    kept: Vec<(f64, Tensor)>,
}

impl Moments {
    fn new(every: Option<Duration>) -> Self {
        Moments {
            start: Instant::now(),
            every,
            last: None,
            kept: Vec::new(),
        }
    }

    /// Offers the newest mosaic; `changed`: the room's users differ from the
    /// previous mosaic's.
    pub(crate) fn offer(&mut self, frame: &Tensor, changed: bool) {
        let Some(every) = self.every else {
            return;
        };
        let now = Instant::now();
        if !changed && self.last.is_some_and(|t| now - t < every) {
            return;
        }
        if self.kept.len() >= MAX_MOMENTS {
            let mut i = 0;
            self.kept.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.every = Some(every * 2);
        }
        self.last = Some(now);
        self.kept
            .push(((now - self.start).as_secs_f64(), frame.clone()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn overlay(&self) -> Overlay {
        Overlay {
            fps: lock(&self.fps).fps(),
            latency: *lock(&self.latency),
            dropped: self.dropped(),
            status: lock(&self.status).clone(),
            results: {
                let params = self.params.borrow();
                let mut parts: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", vchat_client::sink::value_text(v)))
                    .collect();
                let results = lock(&self.stats).results.clone();
                if !results.is_empty() {
                    parts.push(results);
                }
                parts.join("  ")
            },
            participants: lock(&self.participants).clone(),
            self_view: lock(&self.self_view).clone(),
            paused: self.paused.load(Ordering::Relaxed),
        }
    }

    /// `m`: pauses or resumes the camera.
    fn toggle_pause(&self) {
        let paused = !self.paused.fetch_xor(true, Ordering::Relaxed);
        eprintln!(
            "vchat-client: camera {}",
            if paused { "paused" } else { "on" }
        );
    }

    /// Captured frames replaced by newer ones before they could be sent.
    fn dropped(&self) -> u64 {
        if self.receive {
            0
        } else {
            self.capture.dropped()
        }
    }

    /// `]` (up) or `[` (down): the first numeric parameter by 10%.
    fn nudge(&self, up: bool) {
        use vchat_core::value::Kind;
        self.params.send_modify(|p| {
            let first = p.iter_mut().find_map(|(k, v)| match &mut v.kind {
                Some(Kind::NumberValue(n)) => Some((k, n)),
                _ => None,
            });
            if let Some((k, n)) = first {
                *n = if up { *n * 1.1 } else { *n / 1.1 };
                eprintln!("vchat-client: {k} = {n:.3}");
            }
        });
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vchat-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_source(args: &Args) -> anyhow::Result<Box<dyn FrameSource>> {
    use vchat_client_app::cv::{SourceSpec, VideoSource};
    let (h, w) = args.size;
    // In receive mode the frames come from the server: no camera is opened.
    if args.source == "test" || args.mode == "receive" {
        return Ok(Box::new(TestPattern::new(&args.user, h, w)));
    }
    vchat_client_app::cv::quiet_logs();
    match SourceSpec::parse(&args.source) {
        SourceSpec::Test => Ok(Box::new(TestPattern::new(&args.user, h, w))),
        SourceSpec::Camera(i) => Ok(Box::new(
            VideoSource::camera(i, h, w).map_err(anyhow::Error::msg)?,
        )),
        SourceSpec::File(path) => Ok(Box::new(
            VideoSource::file(&path, args.looping, h, w).map_err(anyhow::Error::msg)?,
        )),
    }
}

fn open_sinks(args: &Args, fps: f64) -> anyhow::Result<Vec<Box<dyn MosaicSink>>> {
    let mut sinks: Vec<Box<dyn MosaicSink>> = Vec::new();
    if !args.headless {
        // Checked before anything touches highgui: OpenCV aborts without a display.
        vchat_client::display::check_display().map_err(anyhow::Error::msg)?;
        let title = match &args.room {
            Some(r) => format!("vchat: {} in {r}", args.user),
            None => format!("vchat: {}", args.user),
        };
        let (h, w) = args.size;
        sinks.push(Box::new(
            vchat_client_app::cv::Window::open(&title, h, w)
                .map_err(anyhow::Error::msg)?
                .for_user(&args.user),
        ));
    }
    if let Some(path) = &args.record {
        sinks.push(Box::new(
            vchat_client_app::cv::Recorder::new(path, fps).map_err(anyhow::Error::msg)?,
        ));
    }
    Ok(sinks)
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(f) = args.fps
        && !(f >= 0.0 && f.is_finite())
    {
        bail!("--fps must be 0 or a positive number, got {f}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    {
        // Fail on a bad address before opening anything (a channel needs the runtime).
        let _rt = rt.enter();
        vchat_client::Client::open(&args.addr, args.ca.as_deref())?;
    }
    let source = open_source(&args)?;
    let source_fps = source.native_fps();
    let capture = Capture::spawn(source, args.fps);
    let record_fps = capture
        .period()
        .map(|p| 1.0 / p.as_secs_f64())
        .or(source_fps)
        .unwrap_or(30.0);
    let mut sinks = open_sinks(&args, record_fps)?;

    let shared = Arc::new(Shared {
        capture,
        stats: Mutex::new(Stats::default()),
        fps: Mutex::new(FpsCounter::default()),
        latency: Mutex::new(None),
        mosaics: Latest::new(),
        newest: Mutex::new(None),
        status: Mutex::new(None),
        stop: CancellationToken::new(),
        receive: args.mode == "receive",
        participants: Mutex::new(Vec::new()),
        self_view: Mutex::new(None),
        paused: AtomicBool::new(args.paused),
        moments: Mutex::new(Moments::new(args.contact_sheet.as_ref().map(|_| {
            Duration::from_secs_f64(args.contact_sheet_every.clamp(0.05, 3600.0))
        }))),
        params: tokio::sync::watch::Sender::new(args.params.iter().cloned().collect()),
    });
    rt.spawn(stop_on_signals(shared.stop.clone()));
    // With a window too: the terminal it was started from shows the same numbers.
    rt.spawn(print_status(shared.clone(), args.user.clone()));
    let config = stream::Config {
        addr: args.addr.clone(),
        user: args.user.clone(),
        room: args.room.clone(),
        prefetch: args.prefetch,
        frames: args.frames,
        deadline: args
            .duration
            .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0))),
        reconnect: !args.no_reconnect,
        endpoint: args.endpoint.clone(),
        receive: args.mode == "receive",
        ca: args.ca.clone(),
        jpeg_quality: (args.encoding == "jpeg").then_some(args.quality),
        token: args.token.clone().filter(|t| !t.is_empty()),
    };
    let task = rt.spawn(stream::run(shared.clone(), config));

    let sink_result = output_loop(&shared, &mut sinks, &task);
    let result = rt.block_on(task).context("the network task failed")?;
    shared.capture.stop();
    for s in &mut sinks {
        if let Err(e) = s.finish() {
            eprintln!("vchat-client: {e}");
        }
    }
    // The runtime may still hold a stuck connection: do not wait for it.
    rt.shutdown_background();
    let summary = result?;
    sink_result?;
    if let Some(path) = &args.snapshot {
        match lock(&shared.newest).as_ref() {
            Some(frame) => save_png(frame, path).map_err(anyhow::Error::msg)?,
            None => bail!(
                "no mosaic was received, nothing to save to {}",
                path.display()
            ),
        }
    }
    if let Some(path) = &args.contact_sheet {
        let moments = std::mem::take(&mut lock(&shared.moments).kept);
        let sheet = vchat_client_app::cv::contact_sheet(&moments).map_err(anyhow::Error::msg)?;
        save_png(&sheet, path).map_err(anyhow::Error::msg)?;
    }
    let stats = lock(&shared.stats);
    println!(
        "{}: done: {} responses, {} errors, {} frames sent, {} dropped",
        args.user,
        summary.requests,
        summary.errors,
        stats.sent,
        shared.dropped()
    );
    Ok(())
}

/// Runs on the main thread until the network task ends: hands each new mosaic to
/// the sinks and lets the window handle its events. A sink's failure stops the
/// stream and is returned.
fn output_loop(
    shared: &Shared,
    sinks: &mut [Box<dyn MosaicSink>],
    task: &tokio::task::JoinHandle<anyhow::Result<vchat_client::PostSummary>>,
) -> anyhow::Result<()> {
    let mut failure: Option<String> = None;
    // A window's poll waits for its events (10 ms); without one, wait here.
    let mut interactive = !sinks.is_empty();
    let feed = |sinks: &mut [Box<dyn MosaicSink>], frame: &Tensor, failure: &mut Option<String>| {
        let overlay = shared.overlay();
        for s in sinks.iter_mut() {
            if let Err(e) = s.mosaic(frame, &overlay) {
                failure.get_or_insert(e);
                shared.stop.cancel();
            }
        }
    };
    while !task.is_finished() {
        let wait = if interactive {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        if let Taken::Value(frame) = shared.mosaics.take_timeout(wait)
            && failure.is_none()
        {
            feed(sinks, &frame, &mut failure);
        }
        if interactive {
            let overlay = shared.overlay();
            for s in sinks.iter_mut() {
                match s.poll(&overlay) {
                    Ok(Control::Continue) => {}
                    Ok(Control::Key(b'm')) => shared.toggle_pause(),
                    Ok(Control::Key(k)) => shared.nudge(k == b']'),
                    Ok(Control::Close) => {
                        interactive = false;
                        shared.stop.cancel();
                    }
                    Err(e) => {
                        interactive = false;
                        failure.get_or_insert(e);
                        shared.stop.cancel();
                    }
                }
            }
        }
    }
    // The last mosaic may have arrived after the last look.
    if let Taken::Value(frame) = shared.mosaics.try_take()
        && failure.is_none()
    {
        feed(sinks, &frame, &mut failure);
    }
    match failure {
        Some(e) => bail!(e),
        None => Ok(()),
    }
}

async fn stop_on_signals(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.cancel();
    }
}

/// One status line per second.
async fn print_status(shared: Arc<Shared>, user: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let line = {
            let mut stats = lock(&shared.stats);
            stats.dropped = shared.dropped();
            stats.take_line()
        };
        match lock(&shared.status).as_deref() {
            Some(problem) => println!("{user}: {line} ({problem})"),
            None => println!("{user}: {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mosaic(v: u8) -> Tensor {
        Tensor::image(2, 3, 3, vec![v; 18].into()).unwrap()
    }

    #[test]
    fn a_contact_sheet_keeps_changes_and_a_bounded_spread_of_moments() {
        let mut off = Moments::new(None);
        off.offer(&mosaic(1), true);
        assert!(off.kept.is_empty(), "nothing kept without --contact-sheet");
        let mut m = Moments::new(Some(Duration::from_secs(3600)));
        m.offer(&mosaic(1), false);
        m.offer(&mosaic(2), false);
        assert_eq!(m.kept.len(), 1, "within the period: one moment");
        for v in 0..100 {
            m.offer(&mosaic(v), true);
            assert!(m.kept.len() <= MAX_MOMENTS);
        }
        // The first moment stays: the sheet spans the whole run.
        assert_eq!(m.kept[0].1, mosaic(1));
        assert_eq!(m.kept.last().unwrap().1, mosaic(99));
    }
}
