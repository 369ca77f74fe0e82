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
//!
//! `--tap 1` also joins a gRPC client to the room (a black tile more in the
//! mosaic) that reads every page's tile in the raw mosaics it receives: the
//! picture as the server has it, after the page's encoder and the door's
//! decoder but before the way back, measured as the pages measure theirs
//! (`server_*` figures).

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
    tap: bool,
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
        tap: false,
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
            "--tap" => args.tap = value == "1" || value == "true",
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

/// The bench camera's still room (bench/browser-camera.js), grain pattern
/// `k` or none, as BGR: the same arithmetic as the page's, so the reference
/// matches what a page painted.
fn room(w: usize, h: usize, k: u32, grainless: bool) -> Vec<u8> {
    let mut seed = 0x9e37_79b9u32.wrapping_add(k.wrapping_mul(0x632b_e5ab));
    let mut grain = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        if grainless {
            0.0
        } else {
            f64::from(seed % 41) - 20.0
        }
    };
    let mut out = vec![0u8; w * h * 3];
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        let (x, y) = ((i % w) as f64, (i / w) as f64);
        let r = 120.0 + 60.0 * (x / 17.0 + y / 31.0).sin() + grain();
        let g = 110.0 + 50.0 * (x / 23.0 - y / 13.0).sin() + grain();
        let b = 100.0 + 40.0 * ((x + y) / 19.0).cos() + grain();
        for (c, v) in px.iter_mut().zip([b, g, r]) {
            // A Uint8ClampedArray rounds half to even.
            *c = v.round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The stamp of the `w`-wide BGR tile at `tile` (bench/browser-camera.js's
/// `read`), or `None`.
fn stamp(tile: &[u8], w: usize) -> Option<u32> {
    let block = w as f64 / 20.0;
    let mut value = 0u32;
    for b in 0..20 {
        let x = ((b as f64 + 0.5) * block).floor() as usize;
        let luma = |y: f64| {
            let i = (y.floor() as usize * w + x) * 3;
            tile.get(i..i + 3)
                .map(|p| p.iter().map(|&c| f64::from(c)).sum::<f64>() / 3.0)
        };
        let top = luma(block / 2.0)? > 128.0;
        let below = luma(block * 1.5)? > 128.0;
        if top == below {
            return None;
        }
        value = (value << 1) | u32::from(top);
    }
    Some(value)
}

/// The quality of `got` against `want` and `clean` (BGR tiles), over the
/// still part, as the page's `quality`: (PSNR, PSNR of 4x4 means, the same
/// against `clean`, mean error of R, G, B).
fn quality(got: &[u8], want: &[u8], clean: &[u8], w: usize, h: usize) -> (f64, f64, f64, [f64; 3]) {
    let block = w as f64 / 20.0;
    let still = |x: usize, y: usize| 4 * y < 3 * h && !(4 * y >= h && 4 * x >= w && 4 * x < 3 * w);
    let (mut se, mut n, mut se4, mut se_clean, mut n4) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut bias = [0.0; 3];
    let first = (((2.0 * block + 2.0) / 4.0).ceil() as usize) * 4;
    for by in (first..h.saturating_sub(3)).step_by(4) {
        for bx in (0..w.saturating_sub(3)).step_by(4) {
            if !(still(bx, by) && still(bx + 3, by + 3) && still(bx, by + 3) && still(bx + 3, by)) {
                continue;
            }
            let (mut sum, mut sum_clean) = ([0.0; 3], [0.0; 3]);
            for y in by..by + 4 {
                for x in bx..bx + 4 {
                    let i = (y * w + x) * 3;
                    // BGR here, R G B in the results.
                    for (c, j) in [2, 1, 0].into_iter().enumerate() {
                        let d = f64::from(got[i + j]) - f64::from(want[i + j]);
                        se += d * d;
                        sum[c] += d;
                        sum_clean[c] += f64::from(got[i + j]) - f64::from(clean[i + j]);
                    }
                    n += 3.0;
                }
            }
            for c in 0..3 {
                se4 += (sum[c] / 16.0).powi(2);
                se_clean += (sum_clean[c] / 16.0).powi(2);
                bias[c] += sum[c] / 16.0;
            }
            n4 += 3.0;
        }
    }
    let db = |se: f64, n: f64| 10.0 * (65025.0 / (se / n).max(1e-6)).log10();
    (
        db(se, n),
        db(se4, n4),
        db(se_clean, n4),
        bias.map(|b| 3.0 * b / n4),
    )
}

/// What the tap measured of the pages' tiles in the server's mosaics.
#[derive(Default)]
struct Tapped {
    psnr: Vec<f64>,
    psnr4: Vec<f64>,
    psnr4_clean: Vec<f64>,
    bias: Vec<[f64; 3]>,
    mosaics: usize,
}

/// Sends black frames into the room as user `tap` every 100 ms until `stop`,
/// reading the pages' tiles of each raw mosaic that comes back.
async fn tap(
    addr: String,
    (w, h): (usize, usize),
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    measuring: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Tapped {
    use std::sync::atomic::Ordering;
    let rooms: Vec<Vec<u8>> = (0..4).map(|k| room(w, h, k, false)).collect();
    let clean = room(w, h, 0, true);
    let mut user = vchat_e2e::User::connect(&addr);
    let mut out = Tapped::default();
    while !stop.load(Ordering::Relaxed) {
        let mut doc = vchat_e2e::frame("tap", [0, 0, 0], h, w);
        doc.set_tag_str("room", "bench");
        let r = user.send(doc).await;
        let docs = match r.docs() {
            Ok(d) if !r.is_error() => d,
            _ => continue,
        };
        if measuring.load(Ordering::Relaxed) {
            for d in docs.iter() {
                let Some(t) = d.tensor() else { continue };
                let Ok((mh, mw)) = t.frame_dims() else {
                    continue;
                };
                if mw != w {
                    continue;
                }
                out.mosaics += 1;
                for tile in t.data()[..(mh / h) * h * w * 3].chunks_exact(h * w * 3) {
                    let Some(id) = stamp(tile, w) else { continue };
                    let (p, p4, pc, b) =
                        quality(tile, &rooms[(id & 0xffff) as usize % 4], &clean, w, h);
                    out.psnr.push(p);
                    out.psnr4.push(p4);
                    out.psnr4_clean.push(pc);
                    out.bias.push(b);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    user.leave().await;
    out
}

/// The median of each channel of `v`.
fn median_bias(v: &[[f64; 3]]) -> Option<[f64; 3]> {
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut ch: Vec<f64> = v.iter().map(|b| b[c]).collect();
        ch.sort_by(f64::total_cmp);
        *o = percentile(&ch, 0.5)?;
    }
    Some(out)
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
                 psnr4Clean: b.psnr4Clean.splice(0), bias: b.bias.splice(0), \
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
    let tap_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tap_measuring = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tapping = args.tap.then(|| {
        tokio::spawn(tap(
            flow.addr().to_string(),
            (args.width as usize, args.height as usize),
            tap_stop.clone(),
            tap_measuring.clone(),
        ))
    });
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
    tap_measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let cpu0 = tree_cpu_secs(flow.pid());
    let m0 = server(&http_get(&metrics));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    let after = snapshot(&pages).await;
    let cpu1 = tree_cpu_secs(flow.pid());
    let m1 = server(&http_get(&metrics));
    let secs = t0.elapsed().as_secs_f64();
    tap_measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    tap_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tapped = match tapping {
        Some(t) => t.await.ok(),
        None => None,
    };

    let n = args.users as f64;
    let rate = |a: &Value, b: &Value, k: &str| {
        (a[k].as_f64().unwrap_or(0.0) - b[k].as_f64().unwrap_or(0.0)) / secs
    };
    let mut all_rtts = Vec::new();
    let mut all_psnr = Vec::new();
    let mut all_psnr4 = Vec::new();
    let mut all_psnr4_clean = Vec::new();
    let mut all_bias = Vec::new();
    let mut users = Vec::new();
    for ((p, b), a) in pages.iter().zip(&before).zip(&after) {
        let rtts = sorted(&a["rtts"]);
        all_rtts.extend_from_slice(&rtts);
        let psnr = sorted(&a["psnr"]);
        let psnr4 = sorted(&a["psnr4"]);
        all_psnr.extend_from_slice(&psnr);
        all_psnr4.extend_from_slice(&psnr4);
        let psnr4_clean = sorted(&a["psnr4Clean"]);
        all_psnr4_clean.extend_from_slice(&psnr4_clean);
        let bias: Vec<[f64; 3]> = a["bias"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|b| {
                        let b = b.as_array()?;
                        Some([
                            b.first()?.as_f64()?,
                            b.get(1)?.as_f64()?,
                            b.get(2)?.as_f64()?,
                        ])
                    })
                    .collect()
            })
            .unwrap_or_default();
        all_bias.extend_from_slice(&bias);
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
            "psnr4_clean_db_p50": percentile(&psnr4_clean, 0.5),
            "bias_rgb": median_bias(&bias),
        }));
    }
    all_rtts.sort_by(f64::total_cmp);
    all_psnr.sort_by(f64::total_cmp);
    all_psnr4.sort_by(f64::total_cmp);
    all_psnr4_clean.sort_by(f64::total_cmp);
    let tapped = tapped.map(|mut t| {
        for v in [&mut t.psnr, &mut t.psnr4, &mut t.psnr4_clean] {
            v.sort_by(f64::total_cmp);
        }
        json!({
            "mosaics": t.mosaics,
            "tiles": t.psnr.len(),
            "psnr_db_p50": percentile(&t.psnr, 0.5),
            "psnr4_db_p50": percentile(&t.psnr4, 0.5),
            "psnr4_clean_db_p50": percentile(&t.psnr4_clean, 0.5),
            "bias_rgb": median_bias(&t.bias),
        })
    });
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
            "psnr4_clean_db_p50": percentile(&all_psnr4_clean, 0.5),
            "bias_rgb": median_bias(&all_bias),
            "server_cpu_percent": cpu_per_user,
            "server_bytes_in_per_s": (m1.0 - m0.0) / secs / n,
            "server_bytes_out_per_s": (m1.1 - m0.1) / secs / n,
            "server_requests_per_s": (m1.2 - m0.2) / secs / n,
        },
        "users_detail": users,
        "server_view": tapped,
    });
    println!("{out}");
    drop(pages);
    drop(chromium);
    drop(flow);
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}
