//! `vchat bench ADDR`: simulated chat users, each on its own stream, and the
//! per-frame latency (request sent to response received, matched by request_id).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use vchat_client::source::{TestPattern, textured, user_color};
use vchat_client::{Client, PostOptions};
use vchat_core::{Document, Tensor};
use vchat_proto::prost::Message;

/// Frames of the moving pattern rendered ahead and sent in turn.
const PATTERN_FRAMES: u64 = 30;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Gateway address: grpc://HOST:PORT or grpcs://HOST:PORT (vchat or any Jina
    /// 3 gateway).
    addr: String,
    /// CA certificate (PEM) for grpcs:// [default: the system's roots].
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// How frames travel: `raw` tensors or `jpeg` blobs (mosaics come back alike).
    #[arg(long, default_value = "raw", value_parser = ["raw", "jpeg"])]
    encoding: String,
    /// JPEG quality, 1 to 100 (with --encoding jpeg).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// Frame content: `pattern` (the client's test pattern: a colour with a
    /// moving bar, so every frame differs, as a camera's do), `solid` (one colour
    /// per user, never changing: a server may answer a repeated room state from a
    /// cache), or `textured` (gradients and noise that move every frame: JPEG
    /// sizes closer to a camera's).
    #[arg(long, default_value = "pattern", value_parser = ["solid", "pattern", "textured"])]
    frames: String,
    /// Simulated users, each with its own stream.
    #[arg(long, default_value_t = 3)]
    users: usize,
    /// Frames per second per user; 0 sends as fast as answers come (within --window).
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Seconds to measure, after the warm-up (with --count: the most to wait).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Frames each user sends after the warm-up; the run ends once they are all
    /// answered (or after --duration). Without it, users send for --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds of load before measuring starts (joins, warm-up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Frame size, HEIGHTxWIDTH.
    #[arg(long, default_value = "200x300")]
    size: String,
    /// Room the users join (tags.room); none by default.
    #[arg(long)]
    room: Option<String>,
    /// Rooms the users are spread over, in turn: user N joins room
    /// `ROOM-(N % ROOMS)` (ROOM from --room, else `bench`). 1 (the default):
    /// every user in --room.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rooms: u64,
    /// Requests in flight per user at most.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Access token for a Flow with access control, one per simulated user
    /// (repeat it): user N streams with the Nth token, as its identity in its
    /// room (frames then carry no user or room tag of their own).
    #[arg(long)]
    token: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    users: usize,
    fps: f64,
    size: String,
    seconds: f64,
    sent: u64,
    answered: u64,
    errors: u64,
    /// Frames due while a user's window was full: not sent.
    skipped: u64,
    /// Sent but never answered.
    lost: u64,
    rate: f64,
    target_rate: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes_out: u64,
    bytes_in: u64,
}

#[derive(Default)]
struct Shared {
    latencies: Vec<Duration>,
    sent: u64,
    answered: u64,
    errors: u64,
    skipped: u64,
    bytes_out: u64,
    bytes_in: u64,
    last_answer: Option<Instant>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The frames one simulated user sends in turn, each with its size on the wire.
fn prepare(args: &BenchArgs, u: usize, h: usize, w: usize) -> anyhow::Result<Vec<(Document, u64)>> {
    let name = format!("user{u}");
    // A moving pattern changes every frame, as a camera does (so no two
    // room states are alike); a solid colour never does.
    let renders: Vec<Tensor> = if args.frames == "pattern" {
        let p = TestPattern::new(&name, h, w);
        (0..PATTERN_FRAMES).map(|n| p.render(n)).collect()
    } else if args.frames == "textured" {
        let color = user_color(&name);
        (0..PATTERN_FRAMES)
            .map(|n| textured(color, h, w, n as usize))
            .collect()
    } else {
        vec![TestPattern::solid(user_color(&name), h, w).render(0)]
    };
    let mut docs = Vec::with_capacity(renders.len());
    for frame in renders {
        let mut doc = if args.encoding == "jpeg" {
            let jpeg = vchat_core::jpeg::encode_bgr(frame.data(), h, w, args.quality)?;
            let mut d = Document::new();
            d.set_jpeg(jpeg);
            d
        } else {
            Document::with_tensor(frame)
        };
        // With tokens, the gateway takes the user and room from each one.
        if args.token.is_empty() {
            doc.set_tag_str("user", name.clone());
            if args.rooms > 1 {
                let base = args.room.as_deref().unwrap_or("bench");
                doc.set_tag_str("room", format!("{base}-{}", u as u64 % args.rooms));
            } else if let Some(r) = &args.room {
                doc.set_tag_str("room", r.clone());
            }
        }
        let bytes = doc.clone().into_proto().encoded_len() as u64 + 64;
        docs.push((doc, bytes));
    }
    Ok(docs)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (h, w) = args
        .size
        .split_once('x')
        .and_then(|(h, w)| Some((h.parse::<usize>().ok()?, w.parse::<usize>().ok()?)))
        .filter(|&(h, w)| h > 0 && w > 0)
        .ok_or_else(|| anyhow::anyhow!("--size {:?} is not HEIGHTxWIDTH", args.size))?;
    let fps_ok = args.fps.is_finite() && args.fps >= 0.0;
    let duration_ok = args.duration.is_finite() && args.duration > 0.0;
    if args.users == 0 || !fps_ok || !duration_ok {
        bail!("--users must be positive, --fps 0 or more, --duration more than 0");
    }
    if !args.token.is_empty() && args.token.len() < args.users {
        bail!(
            "--users {} with {} --token: give each user a token of its own (a second stream of \
             one identity replaces the first)",
            args.users,
            args.token.len()
        );
    }
    let client = Client::open(&args.addr, args.ca.as_deref())?;
    // Every frame is rendered (and encoded) before the clock starts, so that
    // preparing them takes nothing from the load.
    if !args.json {
        eprintln!("  preparing the frames of {} users...", args.users);
    }
    let prepared = (0..args.users)
        .map(|u| prepare(&args, u, h, w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let period = (args.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / args.fps));
    let mut tasks = Vec::new();
    for (u, docs) in prepared.into_iter().enumerate() {
        let docs = Arc::new(docs);
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shared_in = shared.clone();
        // Users start spread over one frame period, as independent cameras do.
        let offset = period.map_or(Duration::ZERO, |p| p * u as u32 / args.users as u32);
        let count = args.count;
        let frames =
            futures::stream::unfold((start + offset, 0u64), move |(mut next, mut measured)| {
                let shared = shared_in.clone();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (doc, frame_bytes) = docs[n % docs.len()].clone();
                async move {
                    if let Some(p) = period {
                        tokio::time::sleep_until(next.into()).await;
                        let behind = ((Instant::now() - next).as_nanos() / p.as_nanos()) as u32;
                        next += p * (behind + 1);
                        if Instant::now() >= measure_from {
                            shared.lock().unwrap().skipped += u64::from(behind);
                        }
                    }
                    let now = Instant::now();
                    if now >= end || count.is_some_and(|c| measured >= c) {
                        return None;
                    }
                    if now >= measure_from {
                        measured += 1;
                        let mut s = shared.lock().unwrap();
                        s.sent += 1;
                        s.bytes_out += frame_bytes;
                    }
                    Some((doc, (next, measured)))
                }
            });
        let shared_out = shared.clone();
        let options = match args.token.get(u) {
            Some(t) => PostOptions::new().token(t.clone()),
            None => PostOptions::new(),
        };
        let options = options
            .request_size(1)
            .prefetch(args.window.max(1))
            .on_always(move |resp| {
                let Some(lat) = resp.latency() else { return };
                // Count a response when its request was sent inside the window.
                let sent = Instant::now() - lat;
                if sent < measure_from {
                    return;
                }
                let mut s = shared_out.lock().unwrap();
                s.answered += 1;
                s.last_answer = Some(Instant::now());
                if resp.is_error() {
                    s.errors += 1;
                }
                s.latencies.push(lat);
                s.bytes_in += resp.proto().encoded_len() as u64;
            });
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.post("/", frames.boxed(), options).await
        }));
    }
    // A progress bar on stderr (never with --json, whose stdout is for machines):
    // elapsed time of the whole run, or frames sent of --count.
    let progress = (!args.json).then(|| {
        let shared = shared.clone();
        let total = args.warmup.max(0.0) + args.duration;
        let frames = args.count.map(|c| c * args.users as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let s = shared.lock().unwrap();
                let t = start.elapsed().as_secs_f64();
                let done = match frames {
                    Some(f) => s.sent as f64 / f.max(1) as f64,
                    None => t / total,
                };
                let filled = (done.clamp(0.0, 1.0) * 30.0) as usize;
                eprint!(
                    "\r  [{}{}] {:3.0}%  {t:5.1} s  sent {}  answered {}  errors {}   ",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    done.clamp(0.0, 1.0) * 100.0,
                    s.sent,
                    s.answered,
                    s.errors
                );
            }
        })
    });
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    if !failures.is_empty() {
        failures.dedup();
        bail!(
            "{} of {} streams failed: {}",
            failures.len(),
            args.users,
            failures.join("; ")
        );
    }
    let mut s = shared.lock().unwrap();
    s.latencies.sort_unstable();
    // With --count the run is as long as its last answer.
    let seconds = match (args.count, s.last_answer) {
        (Some(_), Some(t)) => (t - measure_from).as_secs_f64().max(1e-3),
        _ => args.duration,
    };
    let report = Report {
        users: args.users,
        fps: args.fps,
        size: format!("{h}x{w}"),
        seconds,
        sent: s.sent,
        answered: s.answered,
        errors: s.errors,
        skipped: s.skipped,
        lost: s.sent.saturating_sub(s.answered),
        rate: s.answered as f64 / seconds,
        target_rate: args.fps * args.users as f64,
        p50_ms: percentile(&s.latencies, 0.50),
        p90_ms: percentile(&s.latencies, 0.90),
        p99_ms: percentile(&s.latencies, 0.99),
        max_ms: s
            .latencies
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        bytes_out: s.bytes_out,
        bytes_in: s.bytes_in,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &Report) {
    let target = if r.target_rate > 0.0 {
        format!(
            " of {:.1}/s target ({:.1}%)",
            r.target_rate,
            100.0 * r.rate / r.target_rate
        )
    } else {
        " (unthrottled)".to_string()
    };
    println!(
        "users {}  fps {}  frames {}  measured {:.1} s",
        r.users, r.fps, r.size, r.seconds
    );
    println!("  responses   {:.1}/s{target}", r.rate);
    println!(
        "  frames      sent {}  answered {}  errors {}  skipped {}  lost {}",
        r.sent, r.answered, r.errors, r.skipped, r.lost
    );
    println!(
        "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
    );
    println!(
        "  bytes       out {:.1} MB  in {:.1} MB",
        r.bytes_out as f64 / 1e6,
        r.bytes_in as f64 / 1e6
    );
}
