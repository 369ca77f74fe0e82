//! `vchat bench --transport webrtc`: the real load client against the real
//! `vchat flow` on loopback. Every simulated user is a peer connection that
//! sends an H.264 camera stamped with barcodes and reads them back from the
//! mosaic: the report shows mosaics for every user, round trips measured, and
//! every user's tile in everyone's mosaic; a gateway that refuses a user ends
//! the run with its reason and a non-zero exit, leaving no peer behind.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use vchat_e2e::*;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes-long";

/// A chat Flow with the browser side and WebRTC on a free UDP port, and
/// `extra` lines in its `with:`.
fn webrtc_flow(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_file(
        dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\n  webrtc:\n    udp_port: 0\n{extra}executors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n      idle_timeout_s: 600\n",
            repo_root().join("executor/config.yml").display()
        ),
    )
}

/// `vchat bench WEB --transport webrtc ARGS...`, run to its end.
fn bench(web: &str, args: &[&str]) -> Output {
    let mut c = Command::new(bin("vchat"));
    c.args(["bench", web, "--transport", "webrtc"]).args(args);
    c.output().expect("run vchat bench")
}

/// The status of `GET path` on the gateway's HTTP port.
fn get_status(web: &str, path: &str) -> u16 {
    let host = web.strip_prefix("http://").unwrap();
    let mut sock = std::net::TcpStream::connect(host).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = sock.read_to_string(&mut out);
    out.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Waits until every peer of the report is gone from the gateway, and checks
/// that each left by its `DELETE`, not by going silent (which the gateway
/// logs as a disconnection, seconds later).
fn peers_are_deleted(flow: &Flow, report: &Value) {
    let web = flow.web_url();
    for u in report["webrtc"]["per_user"].as_array().unwrap() {
        let peer = u["peer"].as_str().unwrap();
        assert!(peer.starts_with("/whip/"), "{u}");
        let deadline = Instant::now() + PATIENCE;
        while get_status(web, peer) != 404 {
            assert!(Instant::now() < deadline, "{peer} outlived the run");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let log = flow.stderr();
    assert!(!log.contains("WebRTC peer disconnected"), "{log}");
}

/// Checks one run's report of `users` users in one room.
fn check_report(out: &Output, users: usize) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!(v["transport"], "webrtc", "{v}");
    assert_eq!(v["users"], users, "{v}");
    let w = &v["webrtc"];
    let per_user = w["per_user"].as_array().unwrap();
    assert_eq!(per_user.len(), users, "{v}");
    let everyone: Vec<Value> = (0..users).map(Value::from).collect();
    for u in per_user {
        // Frames went out, mosaics came back and were decoded, and the
        // user's own barcode was read back from them.
        assert!(u["frames_sent"].as_u64().unwrap() > 0, "{u}");
        assert!(u["mosaics"].as_u64().unwrap() > 0, "{u}");
        assert!(u["mosaic_fps"].as_f64().unwrap() > 0.0, "{u}");
        assert!(u["round_trips"].as_u64().unwrap() > 0, "{u}");
        assert!(u["rtt_p50_ms"].as_f64().unwrap() > 0.0, "{u}");
        assert!(u["bytes_out"].as_u64().unwrap() > 0, "{u}");
        assert!(u["bytes_in"].as_u64().unwrap() > 0, "{u}");
        // Its mosaic is the whole room: a 240x320 tile per user, each
        // user's barcode read in it.
        assert_eq!(u["mosaic_size"], format!("{}x320", 240 * users), "{u}");
        assert_eq!(u["users_seen"].as_array().unwrap(), &everyone, "{u}");
        // The gateway's own counters of the peer agree that it streamed.
        assert!(u["server"]["frames_processed"].as_u64().unwrap() > 0, "{u}");
        assert!(u["server"]["mosaics_out"].as_u64().unwrap() > 0, "{u}");
    }
    assert!(w["round_trips"].as_u64().unwrap() > 0, "{v}");
    assert!(w["mosaic_fps_min"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["p50_ms"].as_f64().unwrap() > 0.0, "{v}");
    v
}

#[test]
fn three_webrtc_users_see_each_other_and_measure_round_trips() {
    let dir = scratch("webrtc-bench-three");
    let flow = Flow::start(&webrtc_flow(&dir, ""), &[]);
    let web = flow.web_url().to_string();
    let pid = flow.pid().to_string();
    let out = bench(
        &web,
        &[
            "--users",
            "3",
            "--size",
            "240x320",
            "--fps",
            "10",
            "--warmup",
            "1",
            "--duration",
            "3",
            "--room",
            "r1",
            "--server-pid",
            &pid,
            "--json",
        ],
    );
    let v = check_report(&out, 3);
    // The server was measured, and its CPU divided among the users.
    assert!(v["server_cpu_s"].as_f64().is_some(), "{v}");
    assert!(v["server_peak_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["webrtc"]["server_cpu_percent_per_user"]
            .as_f64()
            .is_some(),
        "{v}"
    );
    assert_eq!(v["bench_processes"][0]["role"], "single", "{v}");
    peers_are_deleted(&flow, &v);
}

#[test]
fn two_processes_merge_their_webrtc_users() {
    let dir = scratch("webrtc-bench-processes");
    let flow = Flow::start(&webrtc_flow(&dir, ""), &[]);
    let web = flow.web_url().to_string();
    let out = bench(
        &web,
        &[
            "--users",
            "2",
            "--processes",
            "2",
            "--size",
            "240x320",
            "--fps",
            "10",
            "--warmup",
            "1",
            "--duration",
            "2",
            "--json",
        ],
    );
    let v = check_report(&out, 2);
    let roles: Vec<&str> = v["bench_processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["parent", "child", "child"], "{v}");
    peers_are_deleted(&flow, &v);
}

#[test]
fn a_refusing_gateway_ends_the_run_with_its_reason() {
    let dir = scratch("webrtc-bench-refused");
    let flow = Flow::start(&webrtc_flow(&dir, "    max_peers: 1\n"), &[]);
    let web = flow.web_url().to_string();
    let out = bench(
        &web,
        &["--users", "2", "--size", "240x320", "--fps", "10", "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no report on a refusal");
    assert!(
        stderr.contains("503") && stderr.contains("webrtc.max_peers"),
        "{stderr}"
    );
    // The user that got in left again: the one place is free.
    let deadline = Instant::now() + PATIENCE;
    while !flow.stderr().contains("WebRTC peer left") {
        assert!(Instant::now() < deadline, "{}", flow.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = bench(
        &web,
        &[
            "--users",
            "1",
            "--size",
            "240x320",
            "--fps",
            "10",
            "--warmup",
            "0.5",
            "--duration",
            "1",
            "--json",
        ],
    );
    check_report(&out, 1);

    // Over the bounds: refused before anything starts.
    let out = bench(&web, &["--users", "65"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("at most 64"),
        "{stderr}"
    );
    let out = bench(&web, &["--fps", "0"]);
    assert!(!out.status.success());
    let out = bench(flow.addr(), &["--users", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("http://HOST:PORT"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_token_is_refused_with_401() {
    let dir = scratch("webrtc-bench-token");
    let yml = webrtc_flow(
        &dir,
        "  auth:\n    keys:\n      main: ${VCHAT_TEST_AUTH_SECRET}\n",
    );
    let flow = Flow::start_with_env(&yml, &[], &[("VCHAT_TEST_AUTH_SECRET", SECRET)]);
    let web = flow.web_url().to_string();
    let wrong = vchat_auth::mint(
        "main",
        b"another-secret-of-at-least-32-bytes-long",
        &vchat_auth::TokenSpec::new("ann", "r1"),
    )
    .unwrap();
    let out = bench(&web, &["--users", "1", "--token", &wrong, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refused the offer: 401"), "{stderr}");
    // The right token streams, as its identity.
    let right = vchat_auth::mint(
        "main",
        SECRET.as_bytes(),
        &vchat_auth::TokenSpec::new("ann", "r1"),
    )
    .unwrap();
    let out = bench(
        &web,
        &[
            "--users",
            "1",
            "--token",
            &right,
            "--size",
            "240x320",
            "--fps",
            "10",
            "--warmup",
            "0.5",
            "--duration",
            "1",
            "--json",
        ],
    );
    check_report(&out, 1);
}
