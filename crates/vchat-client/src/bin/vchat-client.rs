//! `vchat-client ADDR USER`: join a vchat video chat.
//!
//! Streams one frame per request (request_size = 1) from a frame source and handles
//! every mosaic the moment it arrives (on_done): counts it for the status line and
//! keeps the newest for `--snapshot`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use vchat_client::sink::{Stats, save_png};
use vchat_client::source::{FrameSource, TestPattern};
use vchat_client::{Client, PostOptions};
use vchat_core::{Document, Tensor};

/// Join a vchat video chat: stream frames to a vchat (or Jina) gateway and receive
/// the mosaic of every user in the room.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Example: vchat-client grpc://127.0.0.1:12345 alice --headless --frames 300"
)]
struct Args {
    /// Gateway address, as `vchat flow` prints it: grpc://HOST:PORT.
    addr: String,
    /// Your name in the chat (sent as tags.user).
    user: String,
    /// Room to join (tags.room); users in other rooms never see you.
    #[arg(long)]
    room: Option<String>,
    /// Frame size sent, HEIGHTxWIDTH.
    #[arg(long, default_value = "200x300", value_parser = parse_size)]
    size: (usize, usize),
    /// Frames per second sent; 0 sends as fast as responses come back.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Frame source: `test` (a moving pattern in a colour derived from the user name).
    #[arg(long, default_value = "test")]
    source: String,
    /// Print a status line per second instead of opening a window.
    #[arg(long)]
    headless: bool,
    /// Stop after sending this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Save the newest mosaic to this PNG file on exit.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Requests in flight at most; frames due while the window is full are skipped.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
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

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("vchat-client: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.headless {
        bail!(
            "this build has no window renderer; run with --headless (add --snapshot FILE.png to save the mosaic)"
        );
    }
    if !(args.fps >= 0.0 && args.fps.is_finite()) {
        bail!("--fps must be 0 or a positive number, got {}", args.fps);
    }
    let (h, w) = args.size;
    let source: Box<dyn FrameSource> = match args.source.as_str() {
        "test" => Box::new(TestPattern::new(&args.user, h, w)),
        other => bail!("unknown --source {other:?}; this build has `test`"),
    };
    let client = Client::new(&args.addr)?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let latest: Arc<Mutex<Option<Tensor>>> = Arc::default();

    let stop = Arc::new(tokio::sync::Notify::new());
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.notify_one();
            }
        });
    }
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let period = (args.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / args.fps));
    let user = args.user.clone();
    let room = args.room.clone();
    let max_frames = args.frames.unwrap_or(u64::MAX);
    let frames = {
        let stats = stats.clone();
        let state = (source, Instant::now(), 0u64);
        futures::stream::unfold(state, move |(mut source, mut next, n)| {
            let stats = stats.clone();
            let user = user.clone();
            let room = room.clone();
            async move {
                if let Some(p) = period {
                    tokio::time::sleep_until(next.into()).await;
                    // Frames due while we waited on the network are skipped, never queued.
                    let behind = (Instant::now() - next).as_nanos() / p.as_nanos();
                    stats.lock().unwrap().dropped += behind as u64;
                    next += p * (behind as u32 + 1);
                }
                if n >= max_frames || deadline.is_some_and(|d| Instant::now() >= d) {
                    return None;
                }
                // Taken after the wait, so the newest frame is the one sent.
                let frame = match source.next_frame() {
                    Ok(f) => f?,
                    Err(e) => {
                        eprintln!("vchat-client: frame source failed: {e}");
                        return None;
                    }
                };
                let mut doc = Document::with_tensor(frame);
                doc.set_tag_str("user", user);
                if let Some(r) = room {
                    doc.set_tag_str("room", r);
                }
                stats.lock().unwrap().sent += 1;
                Some((doc, (source, next, n + 1)))
            }
        })
    };
    let frames = frames.take_until({
        let stop = stop.clone();
        async move { stop.notified().await }
    });

    let printer = {
        let stats = stats.clone();
        let user = args.user.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = stats.lock().unwrap().take_line();
                println!("{user}: {line}");
            }
        })
    };

    let options = PostOptions::new()
        .request_size(1)
        .prefetch(args.prefetch)
        .on_done({
            let stats = stats.clone();
            let latest = latest.clone();
            move |resp| {
                let docs = resp.docs().ok();
                let frame = docs
                    .as_ref()
                    .and_then(|d| d.first())
                    .and_then(|d| d.tensor())
                    .cloned();
                stats.lock().unwrap().record(
                    resp.latency(),
                    frame.as_ref().map(|f| f.shape()),
                    false,
                );
                if frame.is_some() {
                    *latest.lock().unwrap() = frame;
                }
            }
        })
        .on_error({
            let stats = stats.clone();
            move |resp| {
                eprintln!(
                    "vchat-client: request failed: {}",
                    resp.error().unwrap_or("unknown error")
                );
                stats.lock().unwrap().record(resp.latency(), None, true);
            }
        });
    let result = client
        .post("/", frames, options)
        .await
        .with_context(|| format!("is `vchat flow` running at {}?", args.addr));
    printer.abort();
    let summary = result?;
    if let Some(path) = &args.snapshot {
        match latest.lock().unwrap().as_ref() {
            Some(frame) => save_png(frame, path).map_err(anyhow::Error::msg)?,
            None => bail!(
                "no mosaic was received, nothing to save to {}",
                path.display()
            ),
        }
    }
    let stats = stats.lock().unwrap();
    println!(
        "{}: done: {} responses, {} errors, {} frames sent, {} dropped",
        args.user, summary.requests, summary.errors, stats.sent, stats.dropped
    );
    Ok(())
}
