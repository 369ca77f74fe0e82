//! `vchat-client ADDR USER`: join a vchat video chat.
//!
//! Threads: the frame source is read on its own thread (`Capture`), which hands
//! the newest frame to the sender through a single-slot handoff; the network runs
//! on a tokio runtime (`stream.rs`) whose on_done callback hands each mosaic, the
//! moment it arrives, to the main thread through another such slot; the main
//! thread owns the window (OpenCV's highgui is single-threaded) and the other
//! sinks, and runs the window's event loop (`output.rs`). What both sides share
//! is in `shared.rs`; the command line in `args.rs`.

mod args;
mod output;
mod shared;
mod stream;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use vchat_client::capture::Capture;
use vchat_client::latest::Latest;
use vchat_client::sink::{FpsCounter, MosaicSink, Stats, save_png};
use vchat_client::source::{FrameSource, TestPattern};

use crate::args::Args;
use crate::output::{output_loop, print_status};
use crate::shared::{Moments, Shared, lock};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr a pipe nobody reads any
        // more) is dropped; reporting it on stderr would panic the task that
        // logged, e.g. the one that stops the server on SIGTERM.
        .log_internal_errors(false)
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
        vchat_client_app::display::check_display().map_err(anyhow::Error::msg)?;
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
        let moments = lock(&shared.moments).take();
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
