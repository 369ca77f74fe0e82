//! `vchat bench ADDR`: simulated chat users, each on its own stream, and the
//! per-frame latency (request sent to response received, matched by request_id).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::ffi::OsString;
use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use vchat_client::source::{TestPattern, textured, user_color};
use vchat_client::{Client, PostOptions};
use vchat_core::{Document, Tensor};
use vchat_proto::prost::Message;

mod webrtc;

/// Frames of the moving pattern rendered ahead and sent in turn.
const PATTERN_FRAMES: u64 = 30;

/// Most processes `--processes` starts.
const MAX_PROCESSES: u32 = 64;

/// What a child prints on stdout once its frames are ready.
const READY: &str = "ready";

/// What the parent writes on a child's stdin to start its clock.
const GO: &str = "go";

/// The share of the cores it can use above which the load generator may be the
/// bottleneck of what it measures.
const BUSY_SHARE: f64 = 0.8;

/// How much of a failed child's stderr its error quotes, in bytes.
const STDERR_TAIL: usize = 2000;

/// How long a child whose output ended has to exit before it is killed.
const CHILD_EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Gateway address: grpc://HOST:PORT or grpcs://HOST:PORT (vchat or any Jina
    /// 3 gateway); with --transport webrtc, the gateway's HTTP port
    /// (port_http): http://HOST:PORT.
    addr: String,
    /// How the users stream: `grpc` (one `Call` stream each, one frame per
    /// request) or `webrtc` (one peer connection each, signalled on `POST
    /// /whip`: an H.264 camera at --size and --fps, the mosaic back as H.264,
    /// round trips read from barcodes in the mosaic; at most 64 users, --fps
    /// up to 60, --duration up to 3600 s, --size from 64x192 to 1920x1920;
    /// --window, --encoding, --quality do not apply, --count, --ca and
    /// --frames textured are refused).
    #[arg(long, default_value = "grpc", value_parser = ["grpc", "webrtc"])]
    transport: String,
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
    /// Rooms the users are spread over, user N in room N mod ROOMS, named
    /// `ROOM-K` (`room-K` without --room); 1 puts everyone in --room.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rooms: u32,
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
    /// Processes of the load generator: the users are split across N child
    /// processes of `vchat bench` (same settings, user names kept distinct),
    /// whose results are merged, so that one process's cores are not the limit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_PROCESSES as i64))]
    processes: u32,
    /// Process id of the server on this machine: its CPU over the measured
    /// window (from /proc/PID/stat) and its peak RSS are reported beside the
    /// load generator's own.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Runs as process I of N of a `--processes N` parent: its share of the
    /// users, started when the parent writes `go` on stdin, and ended when
    /// stdin closes.
    #[arg(long, hide = true)]
    shard: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    /// `grpc` or `webrtc`. Over WebRTC, `sent` counts frames sent, `answered`
    /// and the latency percentiles the frames read back from a mosaic and
    /// their round trips (`lost`: sent, never seen in a mosaic), `errors`
    /// encode and decode errors, bytes the UDP payloads; `webrtc` has the
    /// mosaic rates and each user's figures.
    transport: String,
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
    /// Cores this machine offers the load generator (and the server, when both
    /// run here).
    cores: usize,
    /// CPU (user + system) of the load generator over the measured window, all
    /// its processes.
    bench_cpu_s: f64,
    /// The same in % of one core: 100 is one core busy for the whole window.
    bench_cpu_percent: f64,
    /// Each process of the load generator.
    bench_processes: Vec<ProcessCpu>,
    /// With --server-pid: the server's CPU over the same window, and its peak
    /// resident memory since it started.
    server_pid: Option<u32>,
    server_cpu_s: Option<f64>,
    server_cpu_percent: Option<f64>,
    server_peak_rss_mb: Option<f64>,
    /// What may make the figures wrong, e.g. a load generator short of CPU.
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webrtc: Option<webrtc::Summary>,
}

/// The CPU one process of the load generator used over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProcessCpu {
    pid: u32,
    /// `single` (one process), `parent` (starts the others and merges their
    /// results) or `child`.
    role: String,
    users: usize,
    cpu_s: f64,
    /// In % of one core.
    cpu_percent: f64,
    /// Cores it can keep busy: its runtime's threads, at most the machine's.
    usable_cores: usize,
}

/// What one process measured, with every latency, so that percentiles are
/// computed over all of them; a child prints it as its last stdout line.
#[derive(Debug, Serialize, Deserialize)]
struct ShardResult {
    seconds: f64,
    sent: u64,
    answered: u64,
    errors: u64,
    skipped: u64,
    bytes_out: u64,
    bytes_in: u64,
    latencies_ns: Vec<u64>,
    cpu: ProcessCpu,
    /// Over WebRTC: each user's figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    webrtc: Vec<webrtc::UserResult>,
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

/// CPU used so far by this process and by the server, at one instant.
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    own_s: f64,
    server_s: Option<f64>,
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            own_s: own_cpu_seconds(),
            server_s: server_pid.and_then(|p| server_cpu_seconds(p).ok()),
        }
    }
}

/// User + system CPU seconds of this process, all threads.
fn own_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return secs(ru.ru_utime) + secs(ru.ru_stime);
        }
    }
    f64::NAN
}

/// User + system CPU seconds of process `pid`, from /proc/PID/stat.
fn server_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .with_context(|| format!("--server-pid {pid}: cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count
    // from the last parenthesis. utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => Ok(u.saturating_add(s) as f64 / clock_ticks()),
        _ => bail!("--server-pid {pid}: no CPU times in {path}"),
    }
}

fn clock_ticks() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads a system constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            return t as f64;
        }
    }
    100.0
}

/// Peak resident memory of process `pid` (VmHWM), in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Warnings for processes that used more than [`BUSY_SHARE`] of the cores they
/// can keep busy, and for all of them together against the machine's.
fn busy_warnings(procs: &[ProcessCpu], cores: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    for p in procs {
        if p.cpu_percent / 100.0 > BUSY_SHARE * p.usable_cores as f64 {
            warnings.push(format!(
                "load generator process {} ({}) used {:.0}% of a core, over {:.0}% of the {} \
                 core(s) it can use: it may be the bottleneck (try --processes, or more --threads)",
                p.pid,
                p.role,
                p.cpu_percent,
                BUSY_SHARE * 100.0,
                p.usable_cores
            ));
        }
    }
    let total: f64 = procs.iter().map(|p| p.cpu_percent).sum();
    if procs.len() > 1 && total / 100.0 > BUSY_SHARE * cores as f64 {
        warnings.push(format!(
            "the load generator's {} processes used {total:.0}% of a core together, over {:.0}% \
             of this machine's {cores} core(s): it may be the bottleneck (run it on another machine)",
            procs.len(),
            BUSY_SHARE * 100.0
        ));
    }
    warnings
}

/// `I/N`: process I (from 0) of N.
fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    s.split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|&(i, n)| i < n)
        .ok_or_else(|| anyhow::anyhow!("--shard {s:?} is not I/N with I < N"))
}

/// The users process `i` of `n` simulates: a contiguous share, so that every
/// user keeps its name (and token) whichever process runs it.
fn shard_users(users: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    users * i / n..users * (i + 1) / n
}

/// Starts a thread that reads the parent's lines on stdin: the receiver
/// completes on `go`; when stdin ends (the parent exited, or was killed) the
/// process exits, so that no child outlives its parent.
fn watch_parent() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut line = String::new();
        let stdin = std::io::stdin();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.trim() == GO => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
            }
        }
        std::process::exit(1);
    });
    rx
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
                let base = args.room.as_deref().unwrap_or("room");
                doc.set_tag_str("room", format!("{base}-{}", u % args.rooms as usize));
            } else if let Some(r) = &args.room {
                doc.set_tag_str("room", r.clone());
            }
        }
        let bytes = doc.clone().into_proto().encoded_len() as u64 + 64;
        docs.push((doc, bytes));
    }
    Ok(docs)
}

pub async fn run(args: BenchArgs, threads: Option<usize>) -> anyhow::Result<ExitCode> {
    let (h, w) = args
        .size
        .split_once('x')
        .and_then(|(h, w)| Some((h.parse::<usize>().ok()?, w.parse::<usize>().ok()?)))
        .filter(|&(h, w)| h > 0 && w > 0)
        .ok_or_else(|| anyhow::anyhow!("--size {:?} is not HEIGHTxWIDTH", args.size))?;
    if args.transport == "webrtc" {
        webrtc::check(&args, (h, w))?;
    }
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
    if !args.token.is_empty() && args.rooms > 1 {
        bail!("--rooms with --token: each token names its own room");
    }
    if args.rooms as usize > args.users {
        bail!(
            "--rooms {} with --users {}: each room needs a user",
            args.rooms,
            args.users
        );
    }
    if args.processes as usize > args.users {
        bail!(
            "--processes {} with --users {}: each process needs a user of its own",
            args.processes,
            args.users
        );
    }
    if let Some(pid) = args.server_pid {
        server_cpu_seconds(pid)?;
    }
    let cores = available_cores();
    let usable_cores = threads.unwrap_or(cores).clamp(1, cores);
    if args.processes > 1 && args.shard.is_none() {
        return tokio::task::spawn_blocking(move || {
            run_parent(&args, threads, (h, w), cores, usable_cores)
        })
        .await?;
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    // Started first, so that a parent gone while the frames are prepared ends
    // this process too.
    let go = shard.map(|_| watch_parent());
    let (i, n) = shard.unwrap_or((0, 1));
    let users = shard_users(args.users, i, n);
    let quiet = args.json || shard.is_some();
    if args.transport == "webrtc" {
        // The parent measures the server when there is one.
        let server_pid = args.server_pid.filter(|_| shard.is_none());
        let args = Arc::new(args);
        let a = args.clone();
        let (result, cpu_start, cpu_end, _) = tokio::task::spawn_blocking(move || {
            webrtc::run(&a, (h, w), users, go, server_pid, quiet)
        })
        .await??;
        if shard.is_some() {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string(&result)?)?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        let wall = (cpu_end.at - cpu_start.at).as_secs_f64().max(1e-3);
        let server = server_pid.map(|pid| (pid, cpu_start.server_s, cpu_end.server_s, wall));
        let report = merge(&args, (h, w), vec![result], Vec::new(), server, cores);
        return output(&args, &report);
    }
    let client = Client::open(&args.addr, args.ca.as_deref())?;
    // Every frame is rendered (and encoded) before the clock starts, so that
    // preparing them takes nothing from the load.
    if !quiet {
        eprintln!("  preparing the frames of {} users...", args.users);
    }
    let prepared = users
        .clone()
        .map(|u| prepare(&args, u, h, w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(go) = go {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}")?;
        out.flush()?;
        drop(out);
        go.await
            .context("the parent process went away before the start")?;
    }
    let shared = Arc::new(Mutex::new(Shared::default()));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let period = (args.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / args.fps));
    // The parent measures the server when there is one.
    let server_pid = args.server_pid.filter(|_| shard.is_none());
    let cpu_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        CpuSample::take(server_pid)
    });
    let mut tasks = Vec::new();
    for (u, docs) in users.clone().zip(prepared) {
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
    let progress = (!quiet).then(|| {
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
            users.len(),
            failures.join("; ")
        );
    }
    let cpu_end = CpuSample::take(server_pid);
    let cpu_start = cpu_start.await?;
    let wall = (cpu_end.at - cpu_start.at).as_secs_f64().max(1e-3);
    let own_cpu = (cpu_end.own_s - cpu_start.own_s).max(0.0);
    let s = std::mem::take(&mut *shared.lock().unwrap());
    // With --count the run is as long as its last answer.
    let seconds = match (args.count, s.last_answer) {
        (Some(_), Some(t)) => (t - measure_from).as_secs_f64().max(1e-3),
        _ => args.duration,
    };
    let result = ShardResult {
        seconds,
        sent: s.sent,
        answered: s.answered,
        errors: s.errors,
        skipped: s.skipped,
        bytes_out: s.bytes_out,
        bytes_in: s.bytes_in,
        latencies_ns: s
            .latencies
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect(),
        cpu: ProcessCpu {
            pid: std::process::id(),
            role: if shard.is_some() { "child" } else { "single" }.to_string(),
            users: users.len(),
            cpu_s: own_cpu,
            cpu_percent: 100.0 * own_cpu / wall,
            usable_cores,
        },
        webrtc: Vec::new(),
    };
    if shard.is_some() {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&result)?)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let server = server_pid.map(|pid| (pid, cpu_start.server_s, cpu_end.server_s, wall));
    let report = merge(&args, (h, w), vec![result], Vec::new(), server, cores);
    output(&args, &report)
}

/// The server's pid and CPU seconds at the start and the end of the measured
/// window, and the window's length.
type ServerWindow = (u32, Option<f64>, Option<f64>, f64);

/// One report from the results of every process: counts and rates summed,
/// percentiles over every latency, CPU per process and in total.
fn merge(
    args: &BenchArgs,
    (h, w): (usize, usize),
    results: Vec<ShardResult>,
    mut procs: Vec<ProcessCpu>,
    server: Option<ServerWindow>,
    cores: usize,
) -> Report {
    let mut latencies: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latencies_ns.iter().copied())
        .collect();
    latencies.sort_unstable();
    let latencies: Vec<Duration> = latencies.into_iter().map(Duration::from_nanos).collect();
    let sum = |f: fn(&ShardResult) -> u64| results.iter().map(f).sum::<u64>();
    let (sent, answered) = (sum(|r| r.sent), sum(|r| r.answered));
    let rate = results
        .iter()
        .map(|r| r.answered as f64 / r.seconds.max(1e-3))
        .sum();
    let seconds = results.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let per_user: Vec<webrtc::UserResult> = results
        .iter()
        .flat_map(|r| r.webrtc.iter().cloned())
        .collect();
    procs.extend(results.iter().map(|r| r.cpu.clone()));
    let mut warnings = busy_warnings(&procs, cores);
    let (server_pid, server_cpu_s, server_cpu_percent, server_peak_rss_mb) = match server {
        Some((pid, Some(a), Some(b), wall)) => {
            let cpu = (b - a).max(0.0);
            (
                Some(pid),
                Some(cpu),
                Some(100.0 * cpu / wall),
                peak_rss_mb(pid),
            )
        }
        Some((pid, ..)) => {
            warnings.push(format!(
                "the server (pid {pid}) could not be measured: it exited during the run"
            ));
            (Some(pid), None, None, None)
        }
        None => (None, None, None, None),
    };
    let webrtc =
        (args.transport == "webrtc").then(|| webrtc::Summary::of(per_user, server_cpu_percent));
    Report {
        transport: args.transport.clone(),
        users: args.users,
        fps: args.fps,
        size: format!("{h}x{w}"),
        seconds,
        sent,
        answered,
        errors: sum(|r| r.errors),
        skipped: sum(|r| r.skipped),
        lost: sent.saturating_sub(answered),
        rate,
        target_rate: args.fps * args.users as f64,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        bytes_out: sum(|r| r.bytes_out),
        bytes_in: sum(|r| r.bytes_in),
        cores,
        bench_cpu_s: procs.iter().map(|p| p.cpu_s).sum(),
        bench_cpu_percent: procs.iter().map(|p| p.cpu_percent).sum(),
        bench_processes: procs,
        server_pid,
        server_cpu_s,
        server_cpu_percent,
        server_peak_rss_mb,
        warnings,
        webrtc,
    }
}

fn output(args: &BenchArgs, report: &Report) -> anyhow::Result<ExitCode> {
    for w in &report.warnings {
        eprintln!("vchat bench: warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print_table(report);
    }
    Ok(ExitCode::SUCCESS)
}

impl BenchArgs {
    /// The command line of child `i` of `n`: these settings, all the users
    /// (each child takes its share), JSON out.
    fn child_args(&self, i: usize, n: usize, threads: Option<usize>) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut arg = |k: &str, v: String| {
            a.push(k.into());
            a.push(v.into());
        };
        if let Some(t) = threads {
            arg("--threads", t.to_string());
        }
        a.push("bench".into());
        a.push(self.addr.clone().into());
        if let Some(ca) = &self.ca {
            a.push("--ca".into());
            a.push(ca.clone().into_os_string());
        }
        let mut arg = |k: &str, v: String| {
            a.push(k.into());
            a.push(v.into());
        };
        arg("--transport", self.transport.clone());
        arg("--encoding", self.encoding.clone());
        arg("--quality", self.quality.to_string());
        arg("--frames", self.frames.clone());
        arg("--users", self.users.to_string());
        arg("--fps", self.fps.to_string());
        arg("--duration", self.duration.to_string());
        if let Some(c) = self.count {
            arg("--count", c.to_string());
        }
        arg("--warmup", self.warmup.to_string());
        arg("--size", self.size.clone());
        if let Some(r) = &self.room {
            arg("--room", r.clone());
        }
        arg("--rooms", self.rooms.to_string());
        arg("--window", self.window.to_string());
        for t in &self.token {
            arg("--token", t.clone());
        }
        arg("--shard", format!("{i}/{n}"));
        a.push("--json".into());
        a
    }
}

/// One child process of the load generator, killed (and reaped) when dropped.
struct Child {
    process: std::process::Child,
    /// Its lifeline: closing it ends the child.
    stdin: Option<std::process::ChildStdin>,
    /// The end of what it wrote on stderr.
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    users: std::ops::Range<usize>,
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// What a child's stdout said.
enum ChildEvent {
    Ready,
    Done(Box<ShardResult>),
    /// A line that is neither, or stdout ended before the result.
    Broken(String),
}

impl Child {
    fn spawn(
        exe: &std::path::Path,
        args: Vec<OsString>,
        i: usize,
        n: usize,
        users: std::ops::Range<usize>,
        events: std::sync::mpsc::Sender<(usize, ChildEvent)>,
    ) -> anyhow::Result<Child> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut process = std::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start load generator process {} of {n} ({})",
                    i + 1,
                    exe.display()
                )
            })?;
        let (stdin, stdout, err) = (
            process.stdin.take(),
            process.stdout.take().expect("piped"),
            process.stderr.take().expect("piped"),
        );
        std::thread::spawn(move || {
            let mut done = false;
            for line in std::io::BufReader::new(stdout).lines() {
                let event = match line {
                    Ok(l) if l == READY => ChildEvent::Ready,
                    Ok(l) => match serde_json::from_str::<ShardResult>(&l) {
                        Ok(r) => {
                            done = true;
                            ChildEvent::Done(Box::new(r))
                        }
                        Err(e) => ChildEvent::Broken(format!("unexpected output ({e}): {l:.200}")),
                    },
                    Err(e) => ChildEvent::Broken(format!("cannot read its output: {e}")),
                };
                if events.send((i, event)).is_err() {
                    return;
                }
            }
            if !done {
                let _ = events.send((i, ChildEvent::Broken("it ended without a result".into())));
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let tail = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut t = tail.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
                if t.len() > 2 * STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    let cut = (cut..t.len()).find(|&c| t.is_char_boundary(c)).unwrap_or(0);
                    t.drain(..cut);
                }
            }
        });
        Ok(Child {
            process,
            stdin,
            stderr,
            stderr_reader: Some(stderr_reader),
            users,
        })
    }

    /// The error for a child that failed: how it ended and what it said.
    fn failure(&mut self, i: usize, n: usize, what: &str) -> anyhow::Error {
        let deadline = Instant::now() + CHILD_EXIT_WAIT;
        let status = loop {
            match self.process.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.process.kill();
                    break match self.process.wait() {
                        Ok(s) => format!("still running, stopped: {s}"),
                        Err(e) => format!("still running: {e}"),
                    };
                }
                Err(e) => break e.to_string(),
            }
        };
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        let stderr = self.stderr.lock().unwrap();
        let stderr = stderr.trim();
        let stderr = &stderr[stderr.len().saturating_sub(STDERR_TAIL).min(stderr.len())..];
        anyhow::anyhow!(
            "load generator process {} of {n} (pid {}, users {}..{}) failed: {what}; {status}{}",
            i + 1,
            self.process.id(),
            self.users.start,
            self.users.end,
            if stderr.is_empty() {
                String::new()
            } else {
                format!("; its stderr:\n{stderr}")
            }
        )
    }
}

/// `--processes N`: starts N children of `vchat bench`, each with its share of
/// the users, starts their clocks together once all have prepared their
/// frames, and merges their results.
fn run_parent(
    args: &BenchArgs,
    threads: Option<usize>,
    size: (usize, usize),
    cores: usize,
    usable_cores: usize,
) -> anyhow::Result<ExitCode> {
    let n = args.processes as usize;
    let exe = std::env::current_exe()
        .context("cannot find the vchat executable to start the load generator's processes")?;
    let (tx, events) = std::sync::mpsc::channel();
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let users = shard_users(args.users, i, n);
        children.push(Child::spawn(
            &exe,
            args.child_args(i, n, threads),
            i,
            n,
            users,
            tx.clone(),
        )?);
    }
    drop(tx);
    if !args.json {
        eprintln!(
            "  {n} processes preparing the frames of {} users...",
            args.users
        );
    }
    let mut ready = 0;
    while ready < n {
        let Ok((i, event)) = events.recv() else {
            bail!("the load generator's processes ended without a word");
        };
        match event {
            ChildEvent::Ready => ready += 1,
            ChildEvent::Done(_) => {
                return Err(children[i].failure(i, n, "a result before the start"));
            }
            ChildEvent::Broken(what) => return Err(children[i].failure(i, n, &what)),
        }
    }
    for (i, c) in children.iter_mut().enumerate() {
        let sent = c.stdin.as_mut().map(|s| {
            writeln!(s, "{GO}")?;
            s.flush()
        });
        if let Some(Err(e)) = sent {
            return Err(c.failure(i, n, &format!("cannot start it: {e}")));
        }
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    if !args.json {
        eprintln!(
            "  running {} users in {n} processes for {:.1} s...",
            args.users,
            args.warmup.max(0.0) + args.duration
        );
    }
    let mut cpu_start = None;
    let mut results: Vec<Option<ShardResult>> = (0..n).map(|_| None).collect();
    let mut done = 0;
    while done < n {
        let event = match cpu_start {
            None => {
                let now = Instant::now();
                if now >= measure_from {
                    cpu_start = Some(CpuSample::take(args.server_pid));
                    continue;
                }
                match events.recv_timeout(measure_from - now) {
                    Ok(e) => e,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        bail!("the load generator's processes ended without their results")
                    }
                }
            }
            Some(_) => match events.recv() {
                Ok(e) => e,
                Err(_) => bail!("the load generator's processes ended without their results"),
            },
        };
        match event {
            (i, ChildEvent::Done(r)) if results[i].is_none() => {
                results[i] = Some(*r);
                done += 1;
            }
            (i, ChildEvent::Done(_) | ChildEvent::Ready) => {
                return Err(children[i].failure(i, n, "unexpected output after the start"));
            }
            (i, ChildEvent::Broken(what)) => return Err(children[i].failure(i, n, &what)),
        }
    }
    let cpu_end = CpuSample::take(args.server_pid);
    let cpu_start = cpu_start.unwrap_or(cpu_end);
    drop(children);
    let wall = (cpu_end.at - cpu_start.at).as_secs_f64().max(1e-3);
    let own_cpu = (cpu_end.own_s - cpu_start.own_s).max(0.0);
    let parent = ProcessCpu {
        pid: std::process::id(),
        role: "parent".to_string(),
        users: 0,
        cpu_s: own_cpu,
        cpu_percent: 100.0 * own_cpu / wall,
        usable_cores,
    };
    let server = args
        .server_pid
        .map(|pid| (pid, cpu_start.server_s, cpu_end.server_s, wall));
    let results = results.into_iter().flatten().collect();
    let report = merge(args, size, results, vec![parent], server, cores);
    output(args, &report)
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
    println!(
        "  bench CPU   {:.2} s, {:.1}% of a core ({} cores here)",
        r.bench_cpu_s, r.bench_cpu_percent, r.cores
    );
    if r.bench_processes.len() > 1 {
        for p in &r.bench_processes {
            println!(
                "              pid {} {:<6} users {:<4} {:.2} s, {:.1}% of a core",
                p.pid, p.role, p.users, p.cpu_s, p.cpu_percent
            );
        }
    }
    if let Some(pid) = r.server_pid {
        match (r.server_cpu_s, r.server_cpu_percent) {
            (Some(s), Some(pc)) => println!(
                "  server CPU  pid {pid}: {s:.2} s, {pc:.1}% of a core; peak RSS {}",
                r.server_peak_rss_mb
                    .map_or("unknown".to_string(), |m| format!("{m:.1} MB"))
            ),
            _ => println!("  server CPU  pid {pid}: not measured"),
        }
    }
    if let Some(w) = &r.webrtc {
        print_webrtc(w);
    }
}

/// The WebRTC part of the table: the spread over users, then each user.
fn print_webrtc(w: &webrtc::Summary) {
    println!(
        "  mosaics/s   min {:.1}  median {:.1}  max {:.1} (per user)",
        w.mosaic_fps_min, w.mosaic_fps_median, w.mosaic_fps_max
    );
    println!(
        "  round trips {} frames read back from the mosaics; errors: encode {}  decode {}",
        w.round_trips, w.encode_errors, w.decode_errors
    );
    println!(
        "  bytes/s     out {:.1} kB  in {:.1} kB (median per user, UDP payloads)",
        w.bytes_out_per_s_median / 1e3,
        w.bytes_in_per_s_median / 1e3
    );
    if let Some(c) = w.server_cpu_percent_per_user {
        println!("  server CPU  {c:.1}% of a core per user");
    }
    println!(
        "  {:<8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>5} {:>6} {:>5}  seen",
        "user",
        "mosaic/s",
        "sent/s",
        "rtt p50",
        "rtt p99",
        "out kB/s",
        "in kB/s",
        "errs",
        "unread",
        "pli"
    );
    for u in &w.per_user {
        println!(
            "  {:<8} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>5} {:>6} {:>5}  {:?}",
            u.name,
            u.mosaic_fps,
            u.frames_sent_per_s,
            u.rtt_p50_ms.unwrap_or(f64::NAN),
            u.rtt_p99_ms.unwrap_or(f64::NAN),
            u.bytes_out_per_s / 1e3,
            u.bytes_in_per_s / 1e3,
            u.encode_errors + u.decode_errors,
            u.unreadable_tiles,
            u.plis_sent,
            u.users_seen
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn cpu(role: &str, users: usize, percent: f64, usable_cores: usize) -> ProcessCpu {
        ProcessCpu {
            pid: 1,
            role: role.to_string(),
            users,
            cpu_s: percent / 100.0,
            cpu_percent: percent,
            usable_cores,
        }
    }

    fn shard(latencies_ms: &[u64], answered: u64) -> ShardResult {
        ShardResult {
            seconds: 2.0,
            sent: answered,
            answered,
            errors: 0,
            skipped: 0,
            bytes_out: 10,
            bytes_in: 20,
            latencies_ns: latencies_ms.iter().map(|ms| ms * 1_000_000).collect(),
            cpu: cpu("child", 2, 10.0, 1),
            webrtc: Vec::new(),
        }
    }

    #[test]
    fn shares_cover_every_user_once() {
        for users in 1..20 {
            for n in 1..=users {
                let all: Vec<usize> = (0..n).flat_map(|i| shard_users(users, i, n)).collect();
                assert_eq!(all, (0..users).collect::<Vec<_>>());
                assert!((0..n).all(|i| !shard_users(users, i, n).is_empty()));
            }
        }
    }

    #[test]
    fn percentiles_are_over_every_latency_not_averaged() {
        let args = Cli::parse_from(["bench", "grpc://127.0.0.1:1", "--users", "4"]).bench;
        // One process fast, one slow: the merged p50 is a latency of the
        // slow one (the 6th of 10 samples), not a mean of the two medians.
        let fast = shard(&[1, 1, 1, 1], 4);
        let slow = shard(&[100, 100, 100, 100, 100, 100], 6);
        let r = merge(&args, (2, 2), vec![fast, slow], vec![], None, 2);
        assert_eq!(r.p50_ms, 100.0);
        assert_eq!(r.answered, 10);
        assert_eq!(r.bytes_in, 40);
        assert_eq!(r.rate, 5.0);
        assert_eq!(r.bench_processes.len(), 2);
        assert!((r.bench_cpu_s - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_busy_load_generator_is_warned_about() {
        assert!(busy_warnings(&[cpu("single", 3, 70.0, 1)], 2).is_empty());
        assert_eq!(busy_warnings(&[cpu("single", 3, 85.0, 1)], 2).len(), 1);
        // Two cores to use: 85% of one is not busy.
        assert!(busy_warnings(&[cpu("single", 3, 85.0, 2)], 2).is_empty());
        // Each child under its own limit, together over the machine's.
        let procs = [
            cpu("child", 2, 79.0, 1),
            cpu("child", 2, 79.0, 1),
            cpu("parent", 0, 5.0, 2),
        ];
        let w = busy_warnings(&procs, 2);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("processes used"), "{w:?}");
    }
}
