//! `vchat bench`: its own CPU beside the server's, and `--processes N`, users
//! split across child processes whose results the parent merges.

use std::process::Command;
use std::time::{Duration, Instant};

use vchat_e2e::*;

/// Bytes of one 200x300 raw frame, a user's tile in a vertical mosaic.
const FRAME_BYTES: f64 = 200.0 * 300.0 * 3.0;

/// `vchat bench ADDR ARGS...` with a marker in its environment, so that its
/// children can be found among other tests' processes.
fn bench(addr: &str, marker: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin("vchat"));
    c.arg("bench")
        .arg(addr)
        .args(args)
        .env("VCHAT_BENCH_TEST", marker);
    c
}

/// The live processes started with `marker` other than `parent`.
fn children(marker: &str, parent: u32) -> Vec<u32> {
    processes_with_env("VCHAT_BENCH_TEST", marker)
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| pid != parent)
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_processes_merge_four_users_in_one_room() {
    let flow = Flow::start_default(&[]);
    let marker = vchat_core::new_id();
    let pid = flow.pid().to_string();
    let out = bench(
        flow.addr(),
        &marker,
        &[
            "--processes",
            "2",
            "--users",
            "4",
            "--room",
            "merged",
            "--fps",
            "10",
            "--count",
            "5",
            "--warmup",
            "1",
            "--duration",
            "60",
            "--server-pid",
            &pid,
            "--json",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // Each of the 4 users sent its 5 measured frames, and all 20 came back.
    assert_eq!(v["users"], 4, "{stdout}");
    assert_eq!(v["sent"], 20, "{stdout}");
    assert_eq!(v["answered"], 20, "{stdout}");
    assert_eq!(v["errors"], 0, "{stdout}");
    assert_eq!(v["lost"], 0, "{stdout}");
    // The users have names of their own in the one room: the mosaics hold 4
    // tiles, not the 2 of one process's users (or of two names shared).
    let per_response = v["bytes_in"].as_f64().unwrap() / 20.0;
    assert!(
        per_response > 3.5 * FRAME_BYTES && per_response < 4.5 * FRAME_BYTES,
        "{per_response} bytes per response: {stdout}"
    );
    let (p50, p99, max) = (
        v["p50_ms"].as_f64().unwrap(),
        v["p99_ms"].as_f64().unwrap(),
        v["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{stdout}");
    // The parent, then each child with its share of the users and its CPU.
    let procs = v["bench_processes"].as_array().unwrap();
    let roles: Vec<&str> = procs.iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["parent", "child", "child"], "{stdout}");
    let users: Vec<u64> = procs.iter().map(|p| p["users"].as_u64().unwrap()).collect();
    assert_eq!(users, [0, 2, 2], "{stdout}");
    let mut pids: Vec<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{stdout}");
    let cpu: Vec<f64> = procs.iter().map(|p| p["cpu_s"].as_f64().unwrap()).collect();
    // CPU times are counted in clock ticks: a short run may round to 0.
    assert!(cpu.iter().all(|c| c.is_finite() && *c >= 0.0), "{stdout}");
    let total = v["bench_cpu_s"].as_f64().unwrap();
    assert!((total - cpu.iter().sum::<f64>()).abs() < 1e-9, "{stdout}");
    // The server measured over the same window.
    assert_eq!(v["server_pid"].as_u64(), Some(u64::from(flow.pid())));
    assert!(v["server_cpu_s"].as_f64().unwrap() >= 0.0, "{stdout}");
    assert!(v["server_peak_rss_mb"].as_f64().unwrap() > 1.0, "{stdout}");
    // The children are gone with the parent.
    assert!(children(&marker, 0).is_empty());
}

#[test]
fn users_spread_over_rooms() {
    let flow = Flow::start_default(&[]);
    let out = bench(
        flow.addr(),
        "rooms",
        &[
            "--processes",
            "2",
            "--users",
            "6",
            "--rooms",
            "3",
            "--fps",
            "10",
            "--count",
            "3",
            "--warmup",
            "1",
            "--duration",
            "60",
            "--json",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["answered"], 18, "{stdout}");
    // Two users a room, whichever process runs them: mosaics of 2 tiles.
    let per_response = v["bytes_in"].as_f64().unwrap() / 18.0;
    assert!(
        per_response > 1.5 * FRAME_BYTES && per_response < 2.5 * FRAME_BYTES,
        "{per_response} bytes per response: {stdout}"
    );
}

#[test]
fn one_process_reports_its_cpu_in_the_table() {
    let flow = Flow::start_default(&[]);
    let pid = flow.pid().to_string();
    let out = bench(
        flow.addr(),
        "table",
        &[
            "--users",
            "2",
            "--fps",
            "10",
            "--count",
            "3",
            "--warmup",
            "0.5",
            "--server-pid",
            &pid,
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("bench CPU"), "{stdout}");
    assert!(
        stdout.contains(&format!("server CPU  pid {pid}:")),
        "{stdout}"
    );
    assert!(stdout.contains("peak RSS"), "{stdout}");
}

#[test]
fn a_server_pid_that_is_not_running_is_refused() {
    let flow = Flow::start_default(&[]);
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let out = bench(
        flow.addr(),
        "no-server",
        &["--users", "1", "--server-pid", &gone_pid.to_string()],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--server-pid {gone_pid}")),
        "{stderr}"
    );
}

#[test]
fn children_that_cannot_connect_are_reported() {
    let addr = format!("grpc://127.0.0.1:{}", free_port());
    let out = bench(
        &addr,
        "refused",
        &[
            "--processes",
            "2",
            "--users",
            "2",
            "--duration",
            "1",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("load generator process") && stderr.contains("of 2"),
        "{stderr}"
    );
    // The child's own words, not just that it failed.
    assert!(stderr.contains("streams failed"), "{stderr}");
    assert!(out.stdout.is_empty(), "no result on stdout");
}

#[test]
fn a_child_killed_during_the_run_is_reported() {
    let flow = Flow::start_default(&[]);
    let marker = vchat_core::new_id();
    let mut parent = Proc::spawn(bench(
        flow.addr(),
        &marker,
        &[
            "--processes",
            "2",
            "--users",
            "4",
            "--fps",
            "10",
            "--duration",
            "120",
        ],
    ));
    parent.wait_line("of the run starting", |l| l.contains("running 4 users"));
    let kids = children(&marker, parent.pid());
    assert_eq!(kids.len(), 2, "{kids:?}");
    // SAFETY: kill(2) on a process of this test.
    unsafe {
        libc::kill(kids[1] as libc::pid_t, libc::SIGKILL);
    }
    let (status, log) = parent.wait();
    assert!(!status.success(), "{log}");
    assert!(log.contains("load generator process"), "{log}");
    assert!(log.contains("signal: 9"), "{log}");
    // The other child is stopped with the parent.
    wait_for("the other child's exit", || children(&marker, 0).is_empty());
}

#[test]
fn no_child_outlives_a_killed_parent() {
    let flow = Flow::start_default(&[]);
    let marker = vchat_core::new_id();
    let mut parent = Proc::spawn(bench(
        flow.addr(),
        &marker,
        &[
            "--processes",
            "3",
            "--users",
            "3",
            "--fps",
            "10",
            "--duration",
            "120",
        ],
    ));
    parent.wait_line("of the run starting", |l| l.contains("running 3 users"));
    let parent_pid = parent.pid();
    assert_eq!(children(&marker, parent_pid).len(), 3);
    // SIGKILL: the parent runs no code of its own on the way out.
    // SAFETY: kill(2) on a process of this test.
    unsafe {
        libc::kill(parent_pid as libc::pid_t, libc::SIGKILL);
    }
    let (_, log) = parent.wait();
    wait_for("the children's exit", || {
        children(&marker, parent_pid).is_empty()
    });
    drop(log);
}
