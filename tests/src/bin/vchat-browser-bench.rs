//! `vchat-browser-bench`: one run of the browser benchmark (bench/browser.sh).
//! Starts `VCHAT flow` (a chat Flow with the browser side and metrics), opens
//! USERS windows of the web client in headless Chromium, all in one room, each
//! with a stamped camera (bench/browser-camera.js), and after the warm-up
//! measures for SECS seconds, per user: bytes per second sent and received by
//! the page, frames painted and mosaics shown per second, the frame round trip
//! (a camera frame painted → the first mosaic shown that holds it), and the
//! server's CPU (its process tree's, from /proc) per user. Prints one JSON
//! object.
//!
//! ```sh
//! vchat-browser-bench --vchat target/release/vchat --users 4 --size 320x240 \
//!     --fps 15 --transport ws --secs 10 --warmup 3 [--with 'YAML lines']
//! ```
//!
//! `--transport` goes to the page as `?transport=`; `--with` adds lines to the
//! Flow's `with:` (for a door the page's transport needs).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vchat_e2e::browser::{Chromium, Page};
use vchat_e2e::{Flow, http_get, metric, repo_root, write_file};

/// The stamped camera and the counters, run in each page before its own script.
const CAMERA_JS: &str = include_str!("../../../bench/browser-camera.js");

/// How long everyone may take to join and see each other.
const PATIENCE: Duration = Duration::from_secs(90);

struct Args {
    vchat: PathBuf,
    users: usize,
    width: u32,
    height: u32,
    fps: f64,
    transport: String,
    secs: f64,
    warmup: f64,
    with: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        vchat: repo_root().join("target/release/vchat"),
        users: 4,
        width: 320,
        height: 240,
        fps: 15.0,
        transport: "ws".into(),
        secs: 10.0,
        warmup: 3.0,
        with: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--vchat" => args.vchat = value.into(),
            "--users" => args.users = value.parse().map_err(|e| bad(&e))?,
            "--size" => {
                let (w, h) = value.split_once('x').ok_or(bad(&"expected WxH"))?;
                args.width = w.parse().map_err(|e| bad(&e))?;
                args.height = h.parse().map_err(|e| bad(&e))?;
            }
            "--fps" => args.fps = value.parse().map_err(|e| bad(&e))?,
            "--transport" => args.transport = value,
            "--secs" => args.secs = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => args.warmup = value.parse().map_err(|e| bad(&e))?,
            "--with" => args.with = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(1..=16).contains(&args.users) {
        return Err("--users: 1 to 16 (the stamp has 4 bits for the user)".into());
    }
    if args.width < 80 || args.height < 60 {
        return Err("--size: at least 80x60".into());
    }
    Ok(args)
}

/// CPU seconds used so far by `pid` and every process under it.
fn tree_cpu_secs(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut used: HashMap<u32, u64> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, ... utime (14),
        // stime (15), counted from 1 over the whole line.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(utime), Some(stime)) = (num(1), num(11), num(12)) {
            parent.insert(p, ppid as u32);
            used.insert(p, utime + stime);
        }
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == pid {
                return true;
            }
            match parent.get(&p) {
                Some(&q) if q != 0 => p = q,
                _ => return false,
            }
        }
        false
    };
    used.iter()
        .filter(|(p, _)| in_tree(**p))
        .map(|(_, t)| *t as f64)
        .sum::<f64>()
        / ticks
}

/// The numbers of a JSON array, sorted.
fn sorted(v: &Value) -> Vec<f64> {
    let mut out: Vec<f64> = v
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    out.sort_by(f64::total_cmp);
    out
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

/// What each page counted so far.
async fn snapshot(pages: &[Page]) -> Vec<Value> {
    let mut out = Vec::new();
    for p in pages {
        out.push(
            p.eval(
                "(async () => { const b = window.vchatBench; const bytes = await b.bytes(); \
                 return { sent: bytes.sent, received: bytes.received, painted: b.painted, \
                 mosaics: b.mosaics, unreadable: b.unreadable, rtts: b.rtts.splice(0), \
                 psnr: b.psnr.splice(0), psnr4: b.psnr4.splice(0), \
                 visibility: document.visibilityState, encoder: await b.encoder(), \
                 framesSent: window.vchat ? window.vchat.sent : null }; })()",
            )
            .await,
        );
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vchat-browser-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("vchat-browser-bench-{}", vchat_core::new_id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let yml = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\n  monitoring: true\n{}executors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n      idle_timeout_s: 600\n",
            args.with
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>(),
            repo_root().join("executor/config.yml").display()
        ),
    );
    let flow = {
        use std::ffi::OsStr;
        let a = [
            OsStr::new("flow"),
            OsStr::new("--uses"),
            yml.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("127.0.0.1"),
            OsStr::new("--port"),
            OsStr::new("0"),
        ];
        Flow::spawn(&args.vchat, &a)
    };
    let web = flow.web_url().to_string();
    // Peer connections to the gateway on 127.0.0.1, for a WebRTC page.
    let chromium = Chromium::launch_with(&dir, &["--allow-loopback-in-peer-connection"]);
    let cdp = chromium.connect().await;
    let mut pages = Vec::new();
    for i in 0..args.users {
        let url = format!(
            "{web}/?user=u{i}&room=bench&autojoin=1&fps={}&w={}&h={}&transport={}&bench_user={i}",
            args.fps, args.width, args.height, args.transport
        );
        pages.push(Page::open_with_script(&cdp, &format!("u{i}"), &url, CAMERA_JS).await);
    }
    // Everyone sees a mosaic holding their own stamped frame.
    for p in &pages {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = p
                .try_eval("window.vchatBench ? window.vchatBench.rtts.length : 0")
                .await;
            if r.as_ref().ok().and_then(Value::as_u64).unwrap_or(0) > 0 {
                break;
            }
            if Instant::now() > deadline {
                let bench = p
                    .try_eval(
                        "JSON.stringify({ ...window.vchatBench, peers: undefined, \
                         rtts: undefined })",
                    )
                    .await;
                eprintln!(
                    "vchat-browser-bench: {} never saw its own frame; window.vchat = {}, \
                     window.vchatBench = {bench:?}",
                    p.name,
                    p.state().await
                );
                drop(chromium);
                let _ = std::fs::remove_dir_all(&dir);
                return ExitCode::FAILURE;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let metrics = flow.metrics_url().to_string();
    let server = |text: &str| {
        (
            metric(text, "vchat_bytes_in_total"),
            metric(text, "vchat_bytes_out_total"),
            metric(text, "vchat_requests_total"),
        )
    };
    let before = snapshot(&pages).await;
    let cpu0 = tree_cpu_secs(flow.pid());
    let m0 = server(&http_get(&metrics));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    let after = snapshot(&pages).await;
    let cpu1 = tree_cpu_secs(flow.pid());
    let m1 = server(&http_get(&metrics));
    let secs = t0.elapsed().as_secs_f64();

    let n = args.users as f64;
    let rate = |a: &Value, b: &Value, k: &str| {
        (a[k].as_f64().unwrap_or(0.0) - b[k].as_f64().unwrap_or(0.0)) / secs
    };
    let mut all_rtts = Vec::new();
    let mut all_psnr = Vec::new();
    let mut all_psnr4 = Vec::new();
    let mut users = Vec::new();
    for ((p, b), a) in pages.iter().zip(&before).zip(&after) {
        let rtts = sorted(&a["rtts"]);
        all_rtts.extend_from_slice(&rtts);
        let psnr = sorted(&a["psnr"]);
        let psnr4 = sorted(&a["psnr4"]);
        all_psnr.extend_from_slice(&psnr);
        all_psnr4.extend_from_slice(&psnr4);
        users.push(json!({
            "user": p.name,
            "visibility": a["visibility"],
            "encoder": a["encoder"],
            "bytes_sent_per_s": rate(a, b, "sent"),
            "bytes_received_per_s": rate(a, b, "received"),
            "frames_sent_per_s": rate(a, b, "framesSent"),
            "camera_fps": rate(a, b, "painted"),
            "mosaics_per_s": rate(a, b, "mosaics"),
            "own_frames_seen_per_s": rtts.len() as f64 / secs,
            "unreadable_tiles": a["unreadable"].as_f64().unwrap_or(0.0) - b["unreadable"].as_f64().unwrap_or(0.0),
            "rtt_ms_p50": percentile(&rtts, 0.5),
            "rtt_ms_p90": percentile(&rtts, 0.9),
            "psnr_db_p50": percentile(&psnr, 0.5),
            "psnr4_db_p50": percentile(&psnr4, 0.5),
        }));
    }
    all_rtts.sort_by(f64::total_cmp);
    all_psnr.sort_by(f64::total_cmp);
    all_psnr4.sort_by(f64::total_cmp);
    let mean = |k: &str| users.iter().filter_map(|u| u[k].as_f64()).sum::<f64>() / n;
    let cpu_per_user = (cpu1 - cpu0) / secs * 100.0 / n;
    let out = json!({
        "transport": args.transport,
        "users": args.users,
        "size": format!("{}x{}", args.width, args.height),
        "fps": args.fps,
        "secs": secs,
        "per_user": {
            "bytes_sent_per_s": mean("bytes_sent_per_s"),
            "bytes_received_per_s": mean("bytes_received_per_s"),
            "frames_sent_per_s": mean("frames_sent_per_s"),
            "mosaics_per_s": mean("mosaics_per_s"),
            "own_frames_seen_per_s": mean("own_frames_seen_per_s"),
            "rtt_ms_p50": percentile(&all_rtts, 0.5),
            "rtt_ms_p90": percentile(&all_rtts, 0.9),
            "psnr_db_p50": percentile(&all_psnr, 0.5),
            "psnr_db_p10": percentile(&all_psnr, 0.1),
            "psnr4_db_p50": percentile(&all_psnr4, 0.5),
            "psnr4_db_p10": percentile(&all_psnr4, 0.1),
            "server_cpu_percent": cpu_per_user,
            "server_bytes_in_per_s": (m1.0 - m0.0) / secs / n,
            "server_bytes_out_per_s": (m1.1 - m0.1) / secs / n,
            "server_requests_per_s": (m1.2 - m0.2) / secs / n,
        },
        "users_detail": users,
    });
    println!("{out}");
    drop(pages);
    drop(chromium);
    drop(flow);
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
