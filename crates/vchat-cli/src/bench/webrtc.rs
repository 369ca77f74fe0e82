//! `vchat bench --transport webrtc`: simulated users over the gateway's WebRTC
//! door, each a peer connection of its own, as a browser's would be.
//!
//! Each user runs on a thread of its own: a `str0m` peer connection as the
//! offerer (one sendrecv H.264 video, one host candidate on the address that
//! reaches the gateway, its own UDP socket), signalled with `POST /whip`.
//! It sends a synthetic camera (the test pattern, and a barcode of the user's
//! number and the frame's) encoded with OpenH264 at --size and paced at --fps
//! by the clock, decodes every mosaic that comes back, and reads the barcodes
//! of the mosaic's tiles: its own gives the frame's round trip (captured →
//! the first mosaic holding it decoded), the others tell which users the
//! mosaic shows. A keyframe goes out when the gateway asks (PLI or FIR), and a
//! PLI when a mosaic cannot be decoded or was lost in part. Each peer is
//! deleted (`DELETE /whip/ID`) when the run ends, and every thread joined.
//!
//! The tiles are read where the chat's vertical layout (its default) puts
//! them: one under the other, each the camera's height scaled to the
//! mosaic's width. Other layouts give mosaics and bytes, but no round trips.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, UsageType};
use openh264::formats::{YUVSlices, YUVSource};
use serde::{Deserialize, Serialize};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use vchat_client::source::user_color;
use vchat_gateway::doors::webrtc::h264::{nal_units, sps_dimensions};

use vchat_gateway::doors::webrtc::WHIP_PATH as WHIP;

use super::{BenchArgs, CpuSample, ProcessCpu, ShardResult};

/// Most simulated WebRTC users in one run (each is a thread with an H.264
/// encoder and decoder of its own).
pub(super) const MAX_USERS: usize = 64;
/// Highest --fps over WebRTC.
pub(super) const MAX_FPS: f64 = 60.0;
/// Longest --duration over WebRTC, in seconds.
pub(super) const MAX_DURATION_S: f64 = 3600.0;
/// Largest camera (--size), in pixels per side.
pub(super) const MAX_SIDE: usize = 1920;
/// Narrowest camera: the barcode's blocks must stay at least 8 pixels wide.
pub(super) const MIN_WIDTH: usize = BITS * 8;
/// Lowest camera, in pixels.
pub(super) const MIN_HEIGHT: usize = 64;
/// Largest mosaic decoded, in pixels (the chat's default `max_mosaic_pixels`):
/// a larger one announced by the stream is not decoded.
const MAX_MOSAIC_PIXELS: usize = 19_660_800;
/// How long every user has to get its answer and connect (ICE and DTLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one signalling request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest signalling answer read.
const MAX_HTTP_RESPONSE: usize = 64 * 1024;
/// Largest datagram read.
const DATAGRAM: usize = 2048;
/// At most one keyframe request in this long.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Each user's thread looks at the run's state at least this often.
const TICK: Duration = Duration::from_millis(50);
/// Bits of a barcode: the user's number, then the frame's.
const BITS: usize = 24;
const USER_BITS: usize = 8;
const FRAME_MASK: u64 = 0xffff;
/// Frames whose send time is remembered to pair a barcode read back with it
/// (over 60 s at 60 fps); older ones are no round trip worth reporting.
const REMEMBERED: usize = 4096;
/// Bits per pixel of each frame the simulated camera sends: 320x240 at 15 fps
/// is about 115 kbit/s, 640x480 at 30 about 920 kbit/s (a browser's camera at
/// those sizes sends of that order).
const BITS_PER_PIXEL: f64 = 0.1;
const MIN_BITRATE: f64 = 64_000.0;
const MAX_BITRATE: f64 = 8_000_000.0;
/// Luma of a barcode's white and black blocks (video range).
const WHITE: u8 = 235;
const BLACK: u8 = 16;
/// Grain of the pattern's background, plus or minus.
const GRAIN: i32 = 12;

/// What one simulated user measured (per user in the report).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct UserResult {
    pub user: usize,
    pub name: String,
    pub room: Option<String>,
    /// The peer's resource on the gateway (`/whip/ID`).
    pub peer: String,
    /// Frames encoded and sent in the measured window, and per second.
    pub frames_sent: u64,
    pub frames_sent_per_s: f64,
    /// Frames due while the user's thread was behind: not sent.
    pub frames_skipped: u64,
    /// Mosaics decoded in the measured window, and per second.
    pub mosaics: u64,
    pub mosaic_fps: f64,
    /// The size of the last mosaic, HEIGHTxWIDTH.
    pub mosaic_size: String,
    /// Frames of the measured window read back from a mosaic, and their round
    /// trips (none without a sample).
    pub round_trips: u64,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    /// UDP payload bytes (RTP, RTCP, STUN, DTLS) in the measured window.
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub bytes_out_per_s: f64,
    pub bytes_in_per_s: f64,
    pub encode_errors: u64,
    pub decode_errors: u64,
    /// Tiles whose barcode could not be read (a picture mangled or mid-change).
    pub unreadable_tiles: u64,
    /// Keyframes the gateway asked for (PLI, FIR), and PLIs sent to it.
    pub keyframes_asked: u64,
    pub plis_sent: u64,
    /// The users whose barcodes this user's mosaics showed, over the whole run.
    pub users_seen: Vec<usize>,
    /// The gateway's counters of this peer at the end of the run (`GET
    /// /whip/ID`: pictures in, decoded, processed, mosaics encoded, dropped,
    /// sent), over the whole run.
    pub server: Option<serde_json::Value>,
    #[serde(skip)]
    pub rtts_ns: Vec<u64>,
}

/// The WebRTC part of the report: every user's figures and their spread.
#[derive(Debug, Default, Serialize)]
pub(super) struct Summary {
    /// Mosaics decoded per second: the lowest, the median and the highest
    /// over users.
    pub mosaic_fps_min: f64,
    pub mosaic_fps_median: f64,
    pub mosaic_fps_max: f64,
    /// Round trips measured, over every user (their p50 and p99 are the
    /// report's).
    pub round_trips: u64,
    /// Bytes per second sent and received, median over users.
    pub bytes_out_per_s_median: f64,
    pub bytes_in_per_s_median: f64,
    pub encode_errors: u64,
    pub decode_errors: u64,
    /// With --server-pid: the server's CPU divided by the users, in % of one
    /// core.
    pub server_cpu_percent_per_user: Option<f64>,
    pub per_user: Vec<UserResult>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

impl Summary {
    pub(super) fn of(mut per_user: Vec<UserResult>, server_cpu_percent: Option<f64>) -> Summary {
        per_user.sort_by_key(|u| u.user);
        let mut fps: Vec<f64> = per_user.iter().map(|u| u.mosaic_fps).collect();
        let min = fps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = fps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut out: Vec<f64> = per_user.iter().map(|u| u.bytes_out_per_s).collect();
        let mut inb: Vec<f64> = per_user.iter().map(|u| u.bytes_in_per_s).collect();
        let users = per_user.len().max(1) as f64;
        Summary {
            mosaic_fps_min: if per_user.is_empty() { f64::NAN } else { min },
            mosaic_fps_median: median(&mut fps),
            mosaic_fps_max: if per_user.is_empty() { f64::NAN } else { max },
            round_trips: per_user.iter().map(|u| u.round_trips).sum(),
            bytes_out_per_s_median: median(&mut out),
            bytes_in_per_s_median: median(&mut inb),
            encode_errors: per_user.iter().map(|u| u.encode_errors).sum(),
            decode_errors: per_user.iter().map(|u| u.decode_errors).sum(),
            server_cpu_percent_per_user: server_cpu_percent.map(|c| c / users),
            per_user,
        }
    }
}

/// Checks the settings that matter over WebRTC; the error names the option.
pub(super) fn check(args: &BenchArgs, (h, w): (usize, usize)) -> anyhow::Result<()> {
    if args.users > MAX_USERS {
        bail!("--users {} over WebRTC: at most {MAX_USERS}", args.users);
    }
    if !(args.fps > 0.0 && args.fps <= MAX_FPS) {
        bail!(
            "--fps {} over WebRTC: more than 0 and at most {MAX_FPS} (the camera is paced by the clock)",
            args.fps
        );
    }
    if args.duration > MAX_DURATION_S {
        bail!(
            "--duration {} over WebRTC: at most {MAX_DURATION_S} s",
            args.duration
        );
    }
    if !(MIN_WIDTH..=MAX_SIDE).contains(&w)
        || !(MIN_HEIGHT..=MAX_SIDE).contains(&h)
        || w % 2 == 1
        || h % 2 == 1
    {
        bail!(
            "--size {h}x{w} over WebRTC: even sides, {MIN_HEIGHT} to {MAX_SIDE} high and \
             {MIN_WIDTH} to {MAX_SIDE} wide (the barcode needs the width)"
        );
    }
    if args.count.is_some() {
        bail!("--count is not supported over WebRTC: use --duration");
    }
    if args.frames == "textured" {
        bail!("--frames textured is not supported over WebRTC: use pattern or solid");
    }
    if args.ca.is_some() {
        bail!("--ca is not supported over WebRTC: the load client signals over http://");
    }
    Ok(())
}

/// The gateway's HTTP port (`port_http`) from ADDR: `http://HOST:PORT`.
fn http_addr(addr: &str) -> anyhow::Result<(SocketAddr, String)> {
    let Some(rest) = addr.strip_prefix("http://") else {
        if addr.starts_with("https://") {
            bail!(
                "{addr}: the WebRTC load client signals over plain http:// only (run it on the \
                 gateway's machine, or on a port without TLS)"
            );
        }
        bail!(
            "{addr}: with --transport webrtc, ADDR is the gateway's HTTP port (port_http): \
             http://HOST:PORT"
        );
    };
    let host = rest.trim_end_matches('/');
    if host.contains('/') {
        bail!("{addr}: give http://HOST:PORT only, without a path");
    }
    let sock = host
        .to_socket_addrs()
        .with_context(|| format!("{addr}: cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{addr}: {host} has no address"))?;
    Ok((sock, host.to_string()))
}

/// The address of this machine that reaches `server`: where the users' UDP
/// sockets are bound and their candidates point.
fn local_ip(server: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let probe = UdpSocket::bind(any)?;
    // Connecting a UDP socket sends nothing: it only picks the route.
    probe
        .connect(server)
        .with_context(|| format!("no route to {server}"))?;
    Ok(probe.local_addr()?.ip())
}

/// One HTTP/1.1 exchange: status, headers (lower-case names), body.
struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn http(
    server: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpAnswer> {
    let mut sock = TcpStream::connect_timeout(&server, HTTP_TIMEOUT)
        .with_context(|| format!("cannot reach http://{host}"))?;
    sock.set_read_timeout(Some(HTTP_TIMEOUT))?;
    sock.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes())?;
    // The server may refuse (and close) before the body is sent.
    let _ = sock.write_all(body);
    let mut out = Vec::new();
    (&mut sock)
        .take(MAX_HTTP_RESPONSE as u64 + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("{method} {path}: no complete answer"))?;
    if out.len() > MAX_HTTP_RESPONSE {
        bail!("{method} {path}: an answer over {MAX_HTTP_RESPONSE} bytes");
    }
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: not an HTTP answer"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: no HTTP status"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Percent-encodes a query value.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// BT.601 video-range YUV of a BGR colour.
fn yuv_of([b, g, r]: [u8; 3]) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    let c = |x: i32| x.clamp(0, 255) as u8;
    (c(y), c(u), c(v))
}

/// The simulated camera of one user: I420 frames of its test pattern, each
/// stamped with a barcode of (user, frame number).
struct Camera {
    w: usize,
    h: usize,
    user: usize,
    colour: (u8, u8, u8),
    bar: bool,
    grain: Arc<[i8]>,
    yuv: Vec<u8>,
}

/// Width of a barcode block for frames `w` wide.
fn block(w: usize) -> usize {
    w / BITS
}

impl Camera {
    fn new(user: usize, name: &str, (h, w): (usize, usize), bar: bool, grain: Arc<[i8]>) -> Self {
        Camera {
            w,
            h,
            user,
            colour: yuv_of(user_color(name)),
            bar,
            grain,
            yuv: vec![0; w * h * 3 / 2],
        }
    }

    /// Frame `n`: the user's colour with a fixed grain, a white bar that moves
    /// 4 pixels a frame (without it with `solid` frames), and at the top the
    /// barcode: each bit a block, and the same bit inverted below it, so a
    /// mangled band reads as nothing rather than as a wrong number.
    fn render(&mut self, n: u64) -> YUVSlices<'_> {
        let (w, h) = (self.w, self.h);
        let (y0, u0, v0) = self.colour;
        let bar_w = (w / 12).max(1);
        let bar_x = if self.bar {
            (n as usize * 4) % w
        } else {
            usize::MAX
        };
        let (ys, uv) = self.yuv.split_at_mut(w * h);
        for (row, line) in ys.chunks_exact_mut(w).enumerate() {
            let grain = &self.grain[row * w..][..w];
            for (x, px) in line.iter_mut().enumerate() {
                *px = if x >= bar_x && x < bar_x + bar_w {
                    WHITE
                } else {
                    (i32::from(y0) + i32::from(grain[x])).clamp(16, 235) as u8
                };
            }
        }
        let (us, vs) = uv.split_at_mut(w * h / 4);
        us.fill(u0);
        vs.fill(v0);
        // The band: grey chroma, black and white luma.
        let b = block(w);
        let value = ((self.user as u64) << 16) | (n & FRAME_MASK);
        for bit in 0..BITS {
            let one = (value >> (BITS - 1 - bit)) & 1 == 1;
            for (row, on) in [(0..b, one), (b..2 * b, !one)] {
                for r in row {
                    ys[r * w + bit * b..][..b].fill(if on { WHITE } else { BLACK });
                }
            }
        }
        for r in 0..b {
            us[r * (w / 2)..][..w / 2].fill(128);
            vs[r * (w / 2)..][..w / 2].fill(128);
        }
        let (ys, uv) = self.yuv.split_at(w * h);
        let (us, vs) = uv.split_at(w * h / 4);
        YUVSlices::new((ys, us, vs), (w, h), (w, w / 2, w / 2))
    }
}

/// The fixed grain of the pattern's background, shared by every user.
fn grain(w: usize, h: usize) -> Arc<[i8]> {
    let mut x: u32 = 0x9e37_79b9;
    (0..w * h)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((x % (2 * GRAIN as u32 + 1)) as i32 - GRAIN) as i8
        })
        .collect()
}

/// The barcode values of the tiles of a vertical mosaic (Y plane `y`,
/// `mw`x`mh`, row stride `stride`) of frames `fw`x`fh`: `Some(value)` per
/// readable tile, `None` per unreadable one.
fn read_barcodes(
    y: &[u8],
    stride: usize,
    (mw, mh): (usize, usize),
    (fw, fh): (usize, usize),
) -> Vec<Option<u64>> {
    let scale = mw as f64 / fw as f64;
    let tile = (fh as f64 * scale).round() as usize;
    let b = block(fw) as f64;
    if tile == 0 || scale <= 0.0 {
        return Vec::new();
    }
    // The mean of a small square around a block's centre: one pixel may be
    // off after two lossy encodings, the middle of a block is not.
    let half = ((b * scale) / 4.0).floor().max(0.0) as usize;
    let luma = |cx: usize, cy: usize| -> Option<u32> {
        let (x0, x1) = (cx.checked_sub(half)?, cx + half);
        let (y0, y1) = (cy.checked_sub(half)?, cy + half);
        if x1 >= mw || y1 >= mh {
            return None;
        }
        let mut sum = 0u32;
        for yy in y0..=y1 {
            let row = y.get(yy * stride..)?;
            for xx in x0..=x1 {
                sum += u32::from(*row.get(xx)?);
            }
        }
        Some(sum / ((x1 - x0 + 1) * (y1 - y0 + 1)) as u32)
    };
    let threshold = (u32::from(WHITE) + u32::from(BLACK)) / 2;
    let mut out = Vec::new();
    let mut top = 0;
    while top + tile <= mh + 1 {
        let mut value = Some(0u64);
        for bit in 0..BITS {
            let cx = ((bit as f64 + 0.5) * b * scale) as usize;
            let upper = luma(cx, top + (0.5 * b * scale) as usize);
            let lower = luma(cx, top + (1.5 * b * scale) as usize);
            value = match (value, upper, lower) {
                (Some(v), Some(a), Some(c)) if (a > threshold) != (c > threshold) => {
                    Some((v << 1) | u64::from(a > threshold))
                }
                _ => None,
            };
        }
        out.push(value);
        top += tile;
    }
    out
}

fn percentile_ms(sorted: &[u64], p: f64) -> Option<f64> {
    let i = ((sorted.len().checked_sub(1)? as f64) * p).round() as usize;
    Some(sorted[i] as f64 / 1e6)
}

/// The clock of the run, set once every user is connected (and, in a child
/// process, once the parent says go).
struct Clock {
    start: OnceLock<Instant>,
    warmup: Duration,
    duration: Duration,
    stop: AtomicBool,
}

impl Clock {
    fn window(&self) -> Option<(Instant, Instant)> {
        let s = *self.start.get()?;
        let from = s + self.warmup;
        Some((from, from + self.duration))
    }
}

/// What the run is for every user.
struct Plan {
    server: SocketAddr,
    host: String,
    local: IpAddr,
    size: (usize, usize),
    fps: f64,
    users: usize,
    bar: bool,
    grain: Arc<[i8]>,
    clock: Clock,
}

/// One user: its name, room and token.
struct Who {
    user: usize,
    name: String,
    room: Option<String>,
    token: Option<String>,
}

enum Phase {
    Connected,
    Failed(String),
}

/// Runs `users` (of `args.users`) and returns this process's result and the
/// CPU samples at the measured window's two ends. `go`: in a child process,
/// the parent's start signal, awaited after every user is connected.
pub(super) fn run(
    args: &BenchArgs,
    (h, w): (usize, usize),
    users: std::ops::Range<usize>,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    server_pid: Option<u32>,
    quiet: bool,
) -> anyhow::Result<(ShardResult, CpuSample, CpuSample, Vec<UserResult>)> {
    let (server, host) = http_addr(&args.addr)?;
    let local = local_ip(server)?;
    let plan = Arc::new(Plan {
        server,
        host,
        local,
        size: (h, w),
        fps: args.fps,
        users: args.users,
        bar: args.frames != "solid",
        grain: grain(w, h),
        clock: Clock {
            start: OnceLock::new(),
            warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
            duration: Duration::from_secs_f64(args.duration),
            stop: AtomicBool::new(false),
        },
    });
    let role = if args.shard.is_some() {
        "child"
    } else {
        "single"
    };
    let (tx, phases) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(users.len());
    let n = users.len();
    for u in users.clone() {
        let who = Who {
            user: u,
            name: format!("user{u}"),
            room: room_of(args, u),
            token: args.token.get(u).cloned(),
        };
        let (p, tx) = (plan.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("vchat-bench-webrtc-{u}"))
            .spawn(move || user_thread(&p, who, tx));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // The users started so far leave before the error is told.
                plan.clock.stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e).context("cannot start a user's thread");
            }
        }
    }
    drop(tx);
    if !quiet {
        eprintln!("  connecting {n} WebRTC users to http://{}...", plan.host);
    }
    let outcome = coordinate(&plan, n, &phases, go, server_pid, quiet);
    plan.clock.stop.store(true, Ordering::Relaxed);
    let mut results = Vec::with_capacity(n);
    let mut failures = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("a user's thread panicked".to_string()),
        }
    }
    // Failures reported while it ran come first: the threads' own errors
    // repeat them.
    let (cpu_start, cpu_end) = outcome?;
    if !failures.is_empty() {
        failures.dedup();
        bail!(
            "{} of {n} WebRTC users failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    let wall = (cpu_end.at - cpu_start.at).as_secs_f64().max(1e-3);
    let own_cpu = (cpu_end.own_s - cpu_start.own_s).max(0.0);
    let mut latencies: Vec<u64> = results
        .iter()
        .flat_map(|r| r.rtts_ns.iter().copied())
        .collect();
    latencies.sort_unstable();
    let sum = |f: fn(&UserResult) -> u64| results.iter().map(f).sum::<u64>();
    let result = ShardResult {
        seconds: args.duration,
        sent: sum(|r| r.frames_sent),
        answered: sum(|r| r.round_trips),
        errors: sum(|r| r.encode_errors + r.decode_errors),
        skipped: sum(|r| r.frames_skipped),
        bytes_out: sum(|r| r.bytes_out),
        bytes_in: sum(|r| r.bytes_in),
        latencies_ns: latencies,
        cpu: ProcessCpu {
            pid: std::process::id(),
            role: role.to_string(),
            users: n,
            cpu_s: own_cpu,
            cpu_percent: 100.0 * own_cpu / wall,
            usable_cores: n.clamp(1, super::available_cores()),
        },
        webrtc: results.clone(),
    };
    Ok((result, cpu_start, cpu_end, results))
}

/// The room of user `u`, as the gRPC users get theirs.
fn room_of(args: &BenchArgs, u: usize) -> Option<String> {
    if !args.token.is_empty() {
        return None;
    }
    if args.rooms > 1 {
        let base = args.room.as_deref().unwrap_or("room");
        Some(format!("{base}-{}", u % args.rooms as usize))
    } else {
        args.room.clone()
    }
}

/// Waits for every user to connect, starts the clock, and samples the CPU at
/// both ends of the measured window; the first failure ends it.
fn coordinate(
    plan: &Plan,
    n: usize,
    phases: &Receiver<Phase>,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    server_pid: Option<u32>,
    quiet: bool,
) -> anyhow::Result<(CpuSample, CpuSample)> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut connected = 0;
    while connected < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match phases.recv_timeout(left) {
            Ok(Phase::Connected) => connected += 1,
            Ok(Phase::Failed(e)) => bail!("{e}"),
            Err(RecvTimeoutError::Timeout) => bail!(
                "{} of {n} WebRTC users did not connect within {} s (ICE and DTLS to the \
                 gateway's UDP port: is it reachable from here?)",
                n - connected,
                CONNECT_TIMEOUT.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!("the users' threads ended early"),
        }
    }
    if let Some(go) = go {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", super::READY)?;
        out.flush()?;
        drop(out);
        go.blocking_recv()
            .context("the parent process went away before the start")?;
    }
    let start = Instant::now();
    let _ = plan.clock.start.set(start);
    let (from, end) = plan.clock.window().expect("just set");
    if !quiet {
        eprintln!(
            "  all {n} connected; running for {:.1} s...",
            (end - start).as_secs_f64()
        );
    }
    let wait_until = |t: Instant| -> anyhow::Result<()> {
        loop {
            let left = t.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match phases.recv_timeout(left) {
                Ok(Phase::Failed(e)) => bail!("{e}"),
                Ok(Phase::Connected) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                // Every thread has ended: each says why when joined.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    return Ok(());
                }
            }
        }
    };
    wait_until(from)?;
    let cpu_start = CpuSample::take(server_pid);
    wait_until(end)?;
    let cpu_end = CpuSample::take(server_pid);
    Ok((cpu_start, cpu_end))
}

/// One user's whole life: offer, answer, connect, stream until the run
/// stops, then leave (`DELETE`) whatever happened.
fn user_thread(plan: &Plan, who: Who, phases: Sender<Phase>) -> Result<UserResult, String> {
    let mut peer = None;
    let mut outcome = connect_and_stream(plan, &who, &phases, &mut peer);
    if let Some(location) = &peer {
        if let Ok(r) = outcome.as_mut() {
            r.server = http(plan.server, &plan.host, "GET", location, &[], b"")
                .ok()
                .filter(|a| a.status == 200)
                .and_then(|a| serde_json::from_str(&a.body).ok());
        }
        let _ = http(plan.server, &plan.host, "DELETE", location, &[], b"");
    }
    match outcome {
        Ok(r) => Ok(r),
        Err(e) => {
            let e = format!("{}: {e:#}", who.name);
            let _ = phases.send(Phase::Failed(e.clone()));
            Err(e)
        }
    }
}

fn connect_and_stream(
    plan: &Plan,
    who: &Who,
    phases: &Sender<Phase>,
    peer: &mut Option<String>,
) -> anyhow::Result<UserResult> {
    let socket = UdpSocket::bind(SocketAddr::new(plan.local, 0))
        .with_context(|| format!("cannot bind a UDP socket on {}", plan.local))?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").context("no host candidate")?);
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().context("no SDP offer")?;
    // With a token, the gateway takes the user and room from it.
    let mut path = WHIP.to_string();
    if who.token.is_none() {
        path.push_str(&format!("?user={}", encode_query(&who.name)));
        if let Some(r) = &who.room {
            path.push_str(&format!("&room={}", encode_query(r)));
        }
    }
    let bearer = who.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/sdp")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let answer = http(
        plan.server,
        &plan.host,
        "POST",
        &path,
        &headers,
        offer.to_sdp_string().as_bytes(),
    )?;
    if answer.status != 201 {
        bail!(
            "the gateway refused the offer: {} {}",
            answer.status,
            answer.body.trim()
        );
    }
    *peer = answer.header("location").map(str::to_string);
    let location = peer
        .clone()
        .context("the gateway's answer has no Location")?;
    accept(&mut rtc, pending, &answer.body)?;
    let mut user = User::new(plan, who, mid, location)?;
    user.drive(plan, &mut rtc, &socket, local, phases)?;
    Ok(user.finish(plan))
}

fn accept(rtc: &mut Rtc, pending: SdpPendingOffer, sdp: &str) -> anyhow::Result<()> {
    let answer = SdpAnswer::from_sdp_string(sdp).context("the gateway's answer is not SDP")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .context("the gateway's answer cannot be applied")
}

/// The state of one user while it streams.
struct User {
    who: usize,
    name: String,
    room: Option<String>,
    mid: Mid,
    location: String,
    camera: Camera,
    encoder: Encoder,
    decoder: Decoder,
    frame_size: (usize, usize),
    users: usize,
    pt: Option<Pt>,
    connected: bool,
    keyframe: bool,
    last_pli: Option<Instant>,
    /// Whether the last mosaic's stream announced a size over the limit.
    refusing: bool,
    next_frame: Option<Instant>,
    frame_no: u64,
    /// Send time of recent frames, by frame number modulo [`REMEMBERED`]:
    /// the frame number, when it was captured, and whether it was seen back.
    sent: Vec<(u64, Option<Instant>)>,
    r: UserResult,
    seen: BTreeSet<usize>,
}

impl User {
    fn new(plan: &Plan, who: &Who, mid: Mid, location: String) -> anyhow::Result<User> {
        let (h, w) = plan.size;
        let bps = (w as f64 * h as f64 * plan.fps * BITS_PER_PIXEL).clamp(MIN_BITRATE, MAX_BITRATE);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bps as u32))
            .max_frame_rate(FrameRate::from_hz(plan.fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .skip_frames(false);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .context("cannot start the H.264 encoder")?;
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .context("cannot start the H.264 decoder")?;
        Ok(User {
            who: who.user,
            name: who.name.clone(),
            room: who.room.clone(),
            mid,
            location,
            camera: Camera::new(who.user, &who.name, plan.size, plan.bar, plan.grain.clone()),
            encoder,
            decoder,
            frame_size: (w, h),
            users: plan.users,
            pt: None,
            connected: false,
            keyframe: true,
            last_pli: None,
            refusing: false,
            next_frame: None,
            frame_no: 0,
            sent: vec![(0, None); REMEMBERED],
            r: UserResult::default(),
            seen: BTreeSet::new(),
        })
    }

    /// Whether `t` is in the measured window.
    fn measured(plan: &Plan, t: Instant) -> bool {
        plan.clock
            .window()
            .is_some_and(|(from, end)| t >= from && t < end)
    }

    /// Runs the connection until the run stops.
    fn drive(
        &mut self,
        plan: &Plan,
        rtc: &mut Rtc,
        socket: &UdpSocket,
        local: SocketAddr,
        phases: &Sender<Phase>,
    ) -> anyhow::Result<()> {
        let plan_period = Duration::from_secs_f64(1.0 / plan.fps);
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            let timeout = loop {
                match rtc.poll_output().context("the peer connection failed")? {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let n = t.contents.len() as u64;
                        // A full socket buffer loses the datagram, as the
                        // network would.
                        if socket.send_to(&t.contents, t.destination).is_ok()
                            && Self::measured(plan, Instant::now())
                        {
                            self.r.bytes_out += n;
                        }
                    }
                    Output::Event(e) => self.on_event(rtc, e, plan, phases)?,
                }
            };
            if !rtc.is_alive() {
                bail!("the gateway ended the peer connection");
            }
            if plan.clock.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            if self.next_frame.is_none()
                && self.connected
                && let Some(start) = plan.clock.start.get()
            {
                // Users start spread over one frame period, as independent
                // cameras do.
                let offset = plan_period.mul_f64(self.who as f64 / self.users.max(1) as f64);
                self.next_frame = Some(*start + offset);
            }
            let mut wake = timeout.min(now + TICK);
            if let Some(t) = self.next_frame {
                wake = wake.min(t);
            }
            match socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    if Self::measured(plan, now) {
                        self.r.bytes_in += n as u64;
                    }
                    let Ok(contents) = buf[..n].try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: local,
                            contents,
                        },
                    );
                    if rtc.accepts(&input) {
                        rtc.handle_input(input)
                            .context("the peer connection failed")?;
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("the UDP socket failed"),
            }
            if now < wake {
                wait_readable(socket, wake - now);
                continue;
            }
            if let Some(due) = self.next_frame.filter(|t| now >= *t) {
                let behind = ((now - due).as_nanos() / plan_period.as_nanos().max(1)) as u32;
                self.next_frame = Some(due + plan_period * (behind + 1));
                if Self::measured(plan, now) {
                    self.r.frames_skipped += u64::from(behind);
                }
                self.send_frame(rtc, plan, now);
            }
            rtc.handle_input(Input::Timeout(Instant::now()))
                .context("the peer connection failed")?;
        }
    }

    fn on_event(
        &mut self,
        rtc: &mut Rtc,
        event: Event,
        plan: &Plan,
        phases: &Sender<Phase>,
    ) -> anyhow::Result<()> {
        match event {
            Event::Connected => {
                self.connected = true;
                self.pt = rtc.writer(self.mid).and_then(|w| {
                    let h264: Vec<_> = w
                        .payload_params()
                        .filter(|p| {
                            let s = p.spec();
                            s.codec == Codec::H264 && s.format.packetization_mode == Some(1)
                        })
                        .map(|p| (p.pt(), p.spec().format.profile_level_id))
                        .collect();
                    // OpenH264 writes the constrained baseline profile.
                    h264.iter()
                        .find(|(_, profile)| *profile == Some(0x42e01f))
                        .or(h264.first())
                        .map(|(pt, _)| *pt)
                });
                if self.pt.is_none() {
                    bail!("the gateway's answer has no H.264 to send");
                }
                let _ = phases.send(Phase::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                bail!("the gateway stopped answering (ICE disconnected)");
            }
            Event::KeyframeRequest(_) => {
                self.keyframe = true;
                self.r.keyframes_asked += 1;
            }
            Event::MediaData(data) => {
                if !data.contiguous {
                    self.request_keyframe(rtc);
                }
                self.on_mosaic(rtc, &data.data, plan);
            }
            _ => {}
        }
        Ok(())
    }

    fn request_keyframe(&mut self, rtc: &mut Rtc) {
        let now = Instant::now();
        if self.last_pli.is_some_and(|t| now - t < PLI_INTERVAL) {
            return;
        }
        let asked = rtc
            .writer(self.mid)
            .is_some_and(|mut w| w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok());
        if asked {
            self.last_pli = Some(now);
            self.r.plis_sent += 1;
        }
    }

    /// Decodes one access unit of the mosaic and reads its barcodes.
    fn on_mosaic(&mut self, rtc: &mut Rtc, au: &[u8], plan: &Plan) {
        for nal in nal_units(au) {
            if nal.first().is_some_and(|h| h & 0x1f == 7) {
                self.refusing = sps_dimensions(nal)
                    .is_none_or(|(w, h)| w.saturating_mul(h) > MAX_MOSAIC_PIXELS);
            }
        }
        let measuring = Self::measured(plan, Instant::now());
        if self.refusing {
            if measuring {
                self.r.decode_errors += 1;
            }
            return;
        }
        let yuv = match self.decoder.decode(au) {
            Ok(Some(yuv)) => yuv,
            Ok(None) => return,
            Err(_) => {
                if measuring {
                    self.r.decode_errors += 1;
                }
                self.request_keyframe(rtc);
                return;
            }
        };
        let now = Instant::now();
        let (mw, mh) = yuv.dimensions();
        let (stride, _, _) = yuv.strides();
        let codes = read_barcodes(yuv.y(), stride, (mw, mh), self.frame_size);
        let measuring = Self::measured(plan, now);
        if measuring {
            self.r.mosaics += 1;
        }
        self.r.mosaic_size = format!("{mh}x{mw}");
        for code in codes {
            let Some(value) = code else {
                if measuring {
                    self.r.unreadable_tiles += 1;
                }
                continue;
            };
            let user = (value >> 16) as usize & ((1 << USER_BITS) - 1);
            self.seen.insert(user);
            if user != self.who {
                continue;
            }
            let n = value & FRAME_MASK;
            let slot = &mut self.sent[n as usize % REMEMBERED];
            if slot.0 & FRAME_MASK != n {
                continue;
            }
            if let Some(at) = slot.1.take()
                && Self::measured(plan, at)
            {
                let rtt = now.saturating_duration_since(at);
                self.r
                    .rtts_ns
                    .push(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }

    /// Captures, encodes and writes the next frame.
    fn send_frame(&mut self, rtc: &mut Rtc, plan: &Plan, now: Instant) {
        let (Some(pt), true) = (self.pt, self.connected) else {
            return;
        };
        let n = self.frame_no;
        self.frame_no += 1;
        let captured = Instant::now();
        if std::mem::take(&mut self.keyframe) {
            self.encoder.force_intra_frame();
        }
        let yuv = self.camera.render(n);
        let au = match self.encoder.encode(&yuv) {
            Ok(bits) => bits.to_vec(),
            Err(_) => {
                if Self::measured(plan, now) {
                    self.r.encode_errors += 1;
                }
                self.keyframe = true;
                return;
            }
        };
        self.sent[n as usize % REMEMBERED] = (n, Some(captured));
        if au.is_empty() {
            return;
        }
        let Some(w) = rtc.writer(self.mid) else {
            return;
        };
        let micros = captured
            .saturating_duration_since(*plan.clock.start.get().unwrap_or(&captured))
            .as_micros() as u64;
        let time = MediaTime::from_90khz(micros.saturating_mul(9) / 100);
        if w.write(pt, captured, time, au).is_ok() && Self::measured(plan, captured) {
            self.r.frames_sent += 1;
        }
    }

    fn finish(mut self, plan: &Plan) -> UserResult {
        let secs = plan.clock.duration.as_secs_f64().max(1e-3);
        let mut r = std::mem::take(&mut self.r);
        r.rtts_ns.sort_unstable();
        r.user = self.who;
        r.name = self.name;
        r.room = self.room;
        r.peer = self.location;
        r.round_trips = r.rtts_ns.len() as u64;
        r.rtt_p50_ms = percentile_ms(&r.rtts_ns, 0.50);
        r.rtt_p99_ms = percentile_ms(&r.rtts_ns, 0.99);
        r.mosaic_fps = r.mosaics as f64 / secs;
        r.frames_sent_per_s = r.frames_sent as f64 / secs;
        r.bytes_out_per_s = r.bytes_out as f64 / secs;
        r.bytes_in_per_s = r.bytes_in as f64 / secs;
        r.users_seen = self.seen.into_iter().collect();
        r
    }
}

/// Blocks until `socket` has a datagram or `left` has passed.
fn wait_readable(socket: &UdpSocket, left: Duration) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut fd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut fd, 1, ms) };
    }
    #[cfg(not(unix))]
    {
        let _ = socket;
        std::thread::sleep(left.min(Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users' frames one under the other, as the chat's vertical mosaic
    /// stacks them: the I420 planes of `frames` concatenated.
    fn stack(frames: &[Vec<u8>], w: usize, h: usize) -> Vec<u8> {
        let (y, c) = (w * h, w * h / 4);
        let mut out = Vec::new();
        for plane in [0..y, y..y + c, y + c..y + 2 * c] {
            for f in frames {
                out.extend_from_slice(&f[plane.clone()]);
            }
        }
        out
    }

    #[test]
    fn barcodes_survive_h264_in_a_mosaic() {
        let (w, h) = (320, 240);
        let g = grain(w, h);
        let mut a = Camera::new(3, "user3", (h, w), true, g.clone());
        let mut b = Camera::new(7, "user7", (h, w), true, g);
        let mut enc = Encoder::with_api_config(
            OpenH264API::from_source(),
            EncoderConfig::new().bitrate(BitRate::from_bps(300_000)),
        )
        .unwrap();
        let mut dec =
            Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new()).unwrap();
        let mut read = Vec::new();
        for n in [0u64, 1, 2, 65535, 65536 + 9] {
            let _ = a.render(n);
            let _ = b.render(n + 100);
            let mosaic = stack(&[a.yuv.clone(), b.yuv.clone()], w, h);
            let src = YUVSlices::new(
                (
                    &mosaic[..w * h * 2],
                    &mosaic[w * h * 2..w * h * 5 / 2],
                    &mosaic[w * h * 5 / 2..],
                ),
                (w, 2 * h),
                (w, w / 2, w / 2),
            );
            let au = enc.encode(&src).unwrap().to_vec();
            let yuv = dec.decode(&au).unwrap().expect("a picture");
            let (stride, _, _) = yuv.strides();
            read.push(read_barcodes(yuv.y(), stride, yuv.dimensions(), (w, h)));
        }
        let want = |u: u64, n: u64| Some((u << 16) | (n & FRAME_MASK));
        assert_eq!(read[0], vec![want(3, 0), want(7, 100)]);
        assert_eq!(read[1], vec![want(3, 1), want(7, 101)]);
        assert_eq!(read[3], vec![want(3, 65535), want(7, 65635)]);
        assert_eq!(read[4], vec![want(3, 9), want(7, 109)]);
    }

    #[test]
    fn a_mangled_band_reads_as_nothing() {
        let (w, h) = (320, 240);
        let mut cam = Camera::new(1, "user1", (h, w), false, grain(w, h));
        let _ = cam.render(5);
        let y = cam.yuv[..w * h].to_vec();
        assert_eq!(
            read_barcodes(&y, w, (w, h), (w, h)),
            vec![Some((1 << 16) | 5)]
        );
        // A grey band (a tile with no barcode, or one mid-change) is no value.
        let mut grey = y.clone();
        grey[..w * 2 * block(w)].fill(128);
        assert_eq!(read_barcodes(&grey, w, (w, h), (w, h)), vec![None]);
        // A scaled-down mosaic (a narrower room) is read at its scale.
        let half: Vec<u8> = (0..h / 2)
            .flat_map(|r| (0..w / 2).map(move |c| (r, c)))
            .map(|(r, c)| y[2 * r * w + 2 * c])
            .collect();
        assert_eq!(
            read_barcodes(&half, w / 2, (w / 2, h / 2), (w, h)),
            vec![Some((1 << 16) | 5)]
        );
    }

    #[test]
    fn signalling_addresses_are_checked() {
        assert!(http_addr("http://127.0.0.1:8080").is_ok());
        assert!(http_addr("http://127.0.0.1:8080/").is_ok());
        let e = http_addr("grpc://127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("port_http"), "{e}");
        let e = http_addr("https://127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("http://"), "{e}");
        assert!(http_addr("http://127.0.0.1:1/whip").is_err());
        assert_eq!(encode_query("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
