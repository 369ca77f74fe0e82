//! The WebRTC door: the web client in real headless Chromium (a fake camera,
//! H.264 both ways) sharing a room with a gRPC `vchat-client`, and the WHIP
//! endpoint's handling of bad offers, tokens, limits and peers that never
//! connect, from a plain HTTP client.
//!
//! Screenshots are kept in target/e2e/webrtc-*/.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vchat_auth::{TokenSpec, mint};
use vchat_client::source::user_color;
use vchat_e2e::browser::{Chromium, Page};
use vchat_e2e::*;

/// Long enough for Chromium, the fake camera and three users to settle on a
/// shared two-core machine.
const BROWSER_PATIENCE: Duration = Duration::from_secs(90);
const SECRET: &str = "a-test-secret-of-at-least-32-bytes-long";

/// A chat Flow with the browser side and `extra` lines in its `with:`.
fn web_flow(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_file(
        dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\n{extra}executors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n      idle_timeout_s: 600\n",
            repo_root().join("executor/config.yml").display()
        ),
    )
}

/// A plain HTTP/1.1 exchange: status, headers (lower-case names) and body.
fn http(
    web: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let host = web.strip_prefix("http://").unwrap();
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before the whole body is sent.
    let _ = sock.write_all(body);
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A browser's offer of one H.264 video section, sendrecv.
fn offer(codec: &str) -> String {
    let fingerprint = (0..32)
        .map(|i| format!("{:02X}", i * 7 % 256))
        .collect::<Vec<_>>()
        .join(":");
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 102",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Ab1c",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=ice-options:trickle",
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=msid:- t0",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        &format!("a=rtpmap:102 {codec}/90000"),
        "a=rtcp-fb:102 nack",
        "a=rtcp-fb:102 nack pli",
        "a=rtcp-fb:102 ccm fir",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=ssrc:1111 cname:test",
        "",
    ]
    .join("\r\n")
}

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

/// The counters of a peer (`GET` of its Location), or `None` once it is gone.
fn peer_stats(web: &str, location: &str) -> Option<Value> {
    let (status, _, body) = http(web, "GET", location, &[], b"");
    match status {
        200 => Some(serde_json::from_str(&body).unwrap()),
        404 => None,
        s => panic!("GET {location}: {s} {body}"),
    }
}

#[test]
fn bad_offers_get_clear_errors() {
    let dir = scratch("webrtc-offers");
    let yml = web_flow(
        &dir,
        "  auth:\n    keys:\n      main: ${VCHAT_TEST_AUTH_SECRET}\n  webrtc:\n    max_sdp_bytes: 4096\n",
    );
    let flow = Flow::start_with_env(&yml, &[], &[("VCHAT_TEST_AUTH_SECRET", SECRET)]);
    let web = flow.web_url().to_string();
    let token = mint("main", SECRET.as_bytes(), &TokenSpec::new("ann", "r1")).unwrap();
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());

    let (s, _, body) = http(&web, "POST", "/whip", &[SDP, auth], b"hello, server");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("not an SDP offer"), "{body}");

    let (s, _, body) = http(&web, "POST", "/whip", &[SDP, auth], offer("VP8").as_bytes());
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("no H.264") && body.contains("VP8"), "{body}");

    let big = format!("{}a=x:{}\r\n", offer("H264"), "y".repeat(8000));
    let (s, _, body) = http(&web, "POST", "/whip", &[SDP, auth], big.as_bytes());
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("webrtc.max_sdp_bytes"), "{body}");

    let (s, _, body) = http(
        &web,
        "POST",
        "/whip",
        &[("Content-Type", "text/plain"), auth],
        offer("H264").as_bytes(),
    );
    assert_eq!(s, 415, "{body}");
    assert!(body.contains("application/sdp"), "{body}");

    let (s, _, body) = http(&web, "POST", "/whip", &[SDP], offer("H264").as_bytes());
    assert_eq!(s, 401, "no token: {body}");
    let wrong = mint(
        "main",
        b"another-secret-of-at-least-32-bytes-long",
        &TokenSpec::new("ann", "r1"),
    )
    .unwrap();
    let (s, _, body) = http(
        &web,
        "POST",
        &format!("/whip?access_token={wrong}"),
        &[SDP],
        offer("H264").as_bytes(),
    );
    assert_eq!(s, 401, "wrong token: {body}");

    let (s, _, body) = http(&web, "GET", "/whip", &[], b"");
    assert_eq!(s, 405, "{body}");
    let (s, _, _) = http(&web, "DELETE", "/whip/0123456789abcdef", &[], b"");
    assert_eq!(s, 404);

    // A good offer with a good token is answered: H.264, one host candidate
    // on the address the HTTP port was reached at, and a Location to leave.
    let (s, h, answer) = http(
        &web,
        "POST",
        "/whip",
        &[SDP, auth],
        offer("H264").as_bytes(),
    );
    assert_eq!(s, 201, "{answer}");
    assert_eq!(header(&h, "content-type"), Some("application/sdp"));
    assert!(answer.contains("H264/90000"), "{answer}");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(
        answer.contains("a=candidate:") && answer.contains("127.0.0.1"),
        "{answer}"
    );
    let location = header(&h, "location").unwrap().to_string();
    assert!(location.starts_with("/whip/"), "{location}");
    assert_eq!(peer_stats(&web, &location).unwrap()["connected"], false);
    let (s, _, _) = http(&web, "DELETE", &location, &[], b"");
    assert_eq!(s, 204);
    let deadline = Instant::now() + PATIENCE;
    while peer_stats(&web, &location).is_some() {
        assert!(Instant::now() < deadline, "the peer outlived its DELETE");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The gateway is fine after all of it.
    assert!(flow.stderr().contains("WebRTC"), "{}", flow.stderr());
}

#[test]
fn a_peer_that_never_connects_is_freed_in_time() {
    let dir = scratch("webrtc-ice");
    let yml = web_flow(
        &dir,
        "  monitoring: true\n  webrtc:\n    max_peers: 1\n    connect_timeout_s: 2\n",
    );
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    let metrics = flow.metrics_url().to_string();
    let (s, h, body) = http(
        &web,
        "POST",
        "/whip?user=ann",
        &[SDP],
        offer("H264").as_bytes(),
    );
    assert_eq!(s, 201, "{body}");
    let location = header(&h, "location").unwrap().to_string();
    let opened = Instant::now();
    assert_eq!(
        metric(&http_get(&metrics), "vchat_active_streams"),
        1.0,
        "the peer holds a stream"
    );
    // One peer is the limit: the next offer is refused, naming the setting.
    let (s, _, body) = http(
        &web,
        "POST",
        "/whip?user=bob",
        &[SDP],
        offer("H264").as_bytes(),
    );
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("webrtc.max_peers"), "{body}");
    // Nobody ever sends a STUN check: the peer is dropped after about 2 s.
    while peer_stats(&web, &location).is_some() {
        assert!(
            opened.elapsed() < Duration::from_secs(15),
            "a peer that never connected outlived connect_timeout_s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1500),
        "dropped before its timeout"
    );
    let deadline = Instant::now() + PATIENCE;
    while metric(&http_get(&metrics), "vchat_active_streams") != 0.0 {
        assert!(Instant::now() < deadline, "its stream was not freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its place is free again.
    let (s, _, body) = http(
        &web,
        "POST",
        "/whip?user=bob",
        &[SDP],
        offer("H264").as_bytes(),
    );
    assert_eq!(s, 201, "{body}");
    assert!(
        flow.stderr().contains("did not connect in time"),
        "{}",
        flow.stderr()
    );
}

/// RGB of a user's test-pattern colour (BGR).
fn rgb(bgr: [u8; 3]) -> String {
    format!("[{}, {}, {}]", bgr[2], bgr[1], bgr[0])
}

/// Frames of `location`'s peer the server processed per second, over `span`.
async fn server_fps(web: &str, location: &str, span: Duration) -> f64 {
    let count = |v: Value| v["frames_processed"].as_u64().unwrap();
    let a = count(peer_stats(web, location).unwrap());
    let t = Instant::now();
    tokio::time::sleep(span).await;
    let b = count(peer_stats(web, location).unwrap());
    (b - a) as f64 / t.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_tabs_and_a_grpc_client_share_a_room() {
    let dir = scratch("webrtc-browser");
    let yml = web_flow(&dir, "");
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    assert!(web.starts_with("http://127.0.0.1:"), "{web}");
    let chromium = Chromium::launch_with(&dir, &["--allow-loopback-in-peer-connection"]);
    let cdp = chromium.connect().await;

    // ann and bob stream their fake cameras (320x240) over WebRTC; carl a
    // 240x320 test pattern in his colour over gRPC: the vertical mosaic of
    // all three is 320x720.
    let mut pages = Vec::new();
    for name in ["ann", "bob"] {
        let page = Page::open(
            &cdp,
            name,
            &format!("{web}/?user={name}&room=r1&autojoin=1&fps=15"),
        )
        .await;
        let s = page
            .wait_for(
                "mosaics over WebRTC",
                "vchat.transport === 'webrtc' && vchat.frames > 5",
                BROWSER_PATIENCE,
            )
            .await;
        assert_eq!(s["state"], "streaming", "{s}");
        assert_eq!(
            page.eval("document.getElementById('transport').textContent")
                .await,
            "webrtc"
        );
        pages.push(page);
    }
    let mut carl_cmd = Command::new(bin("vchat-client"));
    carl_cmd.args([
        flow.addr(),
        "carl",
        "--headless",
        "--source",
        "test",
        "--room",
        "r1",
        "--size",
        "240x320",
        "--fps",
        "10",
    ]);
    let mut carl = Proc::spawn(carl_cmd);
    carl.wait_line("carl's mosaic of all three", |l| {
        l.starts_with("carl: sent ") && l.contains("mosaic 720x320")
    });
    let carl_colour = rgb(user_color("carl"));
    for page in &pages {
        // The received video is the three-tile mosaic, and carl's colour fills
        // much of it (his tile is a third).
        let s = page
            .wait_for(
                "a mosaic of all three",
                &format!(
                    "vchat.lastMosaic && vchat.lastMosaic.height === 720 && \
                     vchat.lastMosaic.width === 320 && \
                     vchatRtc.colourShare({carl_colour}, 40) > 0.15"
                ),
                BROWSER_PATIENCE,
            )
            .await;
        assert_eq!(s["errors"], 0, "{s}");
        page.screenshot(&dir.join(format!("{}.png", page.name)))
            .await;
    }
    // carl's own mosaic holds both cameras: the top two tiles are not his
    // colour (checked on the server's answer to him through his log line) and
    // the pages' videos hold three tiles' worth of height.
    let share = pages[0]
        .eval(&format!("vchatRtc.colourShare({carl_colour}, 40)"))
        .await
        .as_f64()
        .unwrap();
    assert!(share < 0.5, "carl's colour covers {share} of ann's mosaic");

    // bob's tab goes to the background (ann's is brought to the front): the
    // server still gets at least 10 of his frames per second.
    let bob_location = pages[1].eval("vchat.rtc.location").await;
    let bob_location = bob_location.as_str().unwrap().to_string();
    cdp.call(
        Some(pages[0].session()),
        "Page.bringToFront",
        serde_json::json!({}),
    )
    .await
    .unwrap();
    let fps = server_fps(&web, &bob_location, Duration::from_secs(5)).await;
    let visibility = pages[1].eval("document.visibilityState").await;
    assert!(
        fps >= 10.0,
        "bob's tab ({visibility}) reached the server at {fps:.1} frames/s"
    );

    // bob closes his tab: he leaves the room at once (the idle timeout is
    // 10 minutes), and the mosaics shrink to two tiles.
    let bob = pages.pop().unwrap();
    bob.close().await;
    carl.wait_line("carl's mosaic without bob", |l| {
        l.starts_with("carl: sent ") && l.contains("mosaic 480x320")
    });
    pages[0]
        .wait_for(
            "a mosaic without bob",
            "vchat.lastMosaic && vchat.lastMosaic.height === 480",
            BROWSER_PATIENCE,
        )
        .await;
    let deadline = Instant::now() + PATIENCE;
    while peer_stats(&web, &bob_location).is_some() {
        assert!(Instant::now() < deadline, "bob's peer outlived his tab");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, log) = carl.interrupt();
    assert!(status.success(), "{log}");
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_ws_forces_the_websocket() {
    let dir = scratch("webrtc-forced-ws");
    let yml = web_flow(&dir, "");
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    let chromium = Chromium::launch_with(&dir, &["--allow-loopback-in-peer-connection"]);
    let cdp = chromium.connect().await;
    let page = Page::open(
        &cdp,
        "ann",
        &format!("{web}/?user=ann&autojoin=1&fps=10&transport=ws"),
    )
    .await;
    let s = page
        .wait_for(
            "mosaics over the WebSocket",
            "vchat.transport === 'websocket' && vchat.frames > 2",
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(s["lastMosaic"]["participants"][0], "ann", "{s}");
    assert_eq!(
        page.eval("document.getElementById('transport').textContent")
            .await,
        "websocket"
    );
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_webrtc_falls_back_to_the_websocket() {
    let dir = scratch("webrtc-fallback");
    let yml = web_flow(&dir, "  webrtc:\n    enabled: false\n");
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    let chromium = Chromium::launch_with(&dir, &["--allow-loopback-in-peer-connection"]);
    let cdp = chromium.connect().await;
    let page = Page::open(&cdp, "ann", &format!("{web}/?user=ann&autojoin=1&fps=10")).await;
    let s = page
        .wait_for(
            "mosaics over the WebSocket",
            "vchat.transport === 'websocket' && vchat.frames > 2",
            BROWSER_PATIENCE,
        )
        .await;
    assert!(
        s["webrtcError"]
            .as_str()
            .is_some_and(|e| e.starts_with("405")),
        "{s}"
    );
    drop(chromium);
}

/// Width, height and frames per second of a camera.
type Shape = (u32, u32, u32);
/// Bytes per second, mosaics per second, round trip (ms) and CPU (cores).
type Measure = (f64, f64, Option<f64>, f64);

/// CPU seconds (user and system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces), from state on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One browser user alone in a room for `window` over `transport`: wire bytes
/// per second (both ways), mosaics per second, the page's frame round trip
/// (WebSocket only) and the gateway's CPU.
async fn one_user(
    cdp: &std::sync::Arc<vchat_e2e::browser::Cdp>,
    flow: &Flow,
    run: usize,
    transport: &str,
    (w, h, fps): Shape,
    window: Duration,
) -> Measure {
    let web = flow.web_url();
    let metrics = flow.metrics_url();
    let page = Page::open(
        cdp,
        "bench",
        &format!(
            "{web}/?user=u{run}&room=bench{run}&autojoin=1&fps={fps}&w={w}&h={h}&transport={transport}"
        ),
    )
    .await;
    page.wait_for("streaming", "vchat.frames > 10", BROWSER_PATIENCE)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wire = |page_state: &Value, text: &str| -> f64 {
        if transport == "webrtc" {
            page_state["bytesSent"].as_f64().unwrap_or(0.0)
                + page_state["bytesReceived"].as_f64().unwrap_or(0.0)
        } else {
            metric(text, "vchat_bytes_in_total") + metric(text, "vchat_bytes_out_total")
        }
    };
    let (s0, m0, c0, t0) = (
        page.state().await,
        http_get(metrics),
        cpu_seconds(flow.pid()),
        Instant::now(),
    );
    let mut latencies = Vec::new();
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(l) = page.state().await["latencyMs"].as_f64() {
            latencies.push(l);
        }
    }
    let (s1, m1, c1) = (
        page.state().await,
        http_get(metrics),
        cpu_seconds(flow.pid()),
    );
    let secs = t0.elapsed().as_secs_f64();
    let bytes = (wire(&s1, &m1) - wire(&s0, &m0)) / secs;
    let mosaics = (s1["frames"].as_f64().unwrap() - s0["frames"].as_f64().unwrap()) / secs;
    let cpu = (c1 - c0) / secs;
    let latency = (transport == "ws" && !latencies.is_empty()).then(|| median(latencies));
    if let Some(location) = s1["rtc"]["location"]
        .as_str()
        .filter(|_| transport == "webrtc")
    {
        println!(
            "{w}x{h}@{fps} run {run}: the gateway's counters {}",
            peer_stats(web, location).unwrap_or_default()
        );
    }
    page.eval("vchat.leave()").await;
    page.close().await;
    (bytes, mosaics, latency, cpu)
}

/// WebRTC (H.264) against the WebSocket (JPEG), one Chromium user at a time,
/// alternating, medians of 3 runs. Run with
/// `cargo test -p vchat-e2e --test webrtc -- --ignored --nocapture bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints a table, asserts nothing about speed"]
async fn bench_webrtc_against_websocket() {
    let dir = scratch("webrtc-bench");
    let yml = web_flow(&dir, "  monitoring: true\n");
    let flow = Flow::start(&yml, &[]);
    let chromium = Chromium::launch_with(&dir, &["--allow-loopback-in-peer-connection"]);
    let cdp = chromium.connect().await;
    let window = Duration::from_secs(8);
    let sizes = [(320, 240, 15), (640, 480, 30)];
    let mut results: Vec<(Shape, &str, Vec<Measure>)> = Vec::new();
    for size in sizes {
        for t in ["webrtc", "ws"] {
            results.push((size, t, Vec::new()));
        }
    }
    let mut run = 0;
    for _ in 0..3 {
        for r in results.iter_mut() {
            run += 1;
            let m = one_user(&cdp, &flow, run, r.1, r.0, window).await;
            r.2.push(m);
        }
    }
    println!(
        "| size @ fps | transport | bytes/s (both ways) | mosaics/s | frame round trip p50 | gateway CPU |"
    );
    println!("|---|---|---|---|---|---|");
    for ((w, h, fps), t, runs) in results {
        let b = median(runs.iter().map(|r| r.0).collect());
        let m = median(runs.iter().map(|r| r.1).collect());
        let lat: Vec<f64> = runs.iter().filter_map(|r| r.2).collect();
        let c = median(runs.iter().map(|r| r.3).collect());
        let lat = if lat.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0} ms", median(lat))
        };
        println!(
            "| {w}x{h} @ {fps} | {t} | {:.0} kB/s | {m:.1} | {lat} | {:.0} % |",
            b / 1000.0,
            c * 100.0
        );
    }
    drop(chromium);
}
