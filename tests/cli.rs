//! The command lines: `vchat-client` headless with a snapshot, `vchat ping`, and
//! clear errors for bad configuration and unreachable servers.

use std::process::{Command, Stdio};

use vchat_client::source::user_color;
use vchat_e2e::*;

#[test]
fn two_headless_clients_see_each_other() {
    let flow = Flow::start_default(&[]);
    let dir = scratch("clients");
    let snap = dir.join("alice.png");
    let alice = Command::new(bin("vchat-client"))
        .args([
            flow.addr(),
            "alice",
            "--headless",
            "--source",
            "test",
            "--frames",
            "90",
            "--snapshot",
        ])
        .arg(&snap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bob joins after alice, so the mosaic order is alice, bob.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let bob = Command::new(bin("vchat-client"))
        .args([
            flow.addr(),
            "bob",
            "--headless",
            "--source",
            "test",
            "--frames",
            "150",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a = alice.wait_with_output().unwrap();
    let b = bob.wait_with_output().unwrap();
    let a_out = String::from_utf8_lossy(&a.stdout);
    assert!(
        a.status.success(),
        "alice: {a_out}\n{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert!(
        b.status.success(),
        "bob: {}",
        String::from_utf8_lossy(&b.stderr)
    );
    // Status lines, one per second, then the summary.
    let status: Vec<&str> = a_out
        .lines()
        .filter(|l| l.starts_with("alice: sent "))
        .collect();
    assert!(status.len() >= 2, "{a_out}");
    assert!(
        status
            .iter()
            .all(|l| l.contains(" recv ") && l.contains(" fps ") && l.contains(" p50 "))
    );
    assert!(
        a_out.contains("alice: done: 90 responses, 0 errors"),
        "{a_out}"
    );
    assert!(a_out.contains("mosaic 400x300"), "{a_out}");
    // Alice's newest mosaic: her pattern on top, bob's below.
    let png = decode_png(&snap);
    assert_eq!((png.0, png.1), (400, 300));
    assert!(share_of(&png, 0..200, user_color("alice"), 0) > 0.8);
    assert!(share_of(&png, 200..400, user_color("bob"), 0) > 0.8);
}

#[test]
fn ping_answers_zero_then_one() {
    let mut flow = Flow::start_default(&[]);
    let addr = flow.addr().to_string();
    let up = Command::new(bin("vchat"))
        .args(["ping", &addr])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stdout)
    );
    assert!(flow.interrupt().success());
    let down = Command::new(bin("vchat"))
        .args(["ping", &addr, "--timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stdout).contains("not ready"));
}

#[test]
fn ping_fails_while_an_external_executor_is_down() {
    let port = free_port();
    let dir = scratch("ping-external");
    let yml = dir.join("flow.yml");
    std::fs::write(
        &yml,
        format!(
            "jtype: Flow\nexecutors:\n  - name: frameAggregator\n    host: 127.0.0.1\n    port: {port}\n    external: true\n"
        ),
    )
    .unwrap();
    let flow = Flow::start(&yml, &[]);
    let ping = || {
        Command::new(bin("vchat"))
            .args(["ping", flow.addr(), "--timeout", "5"])
            .output()
            .unwrap()
    };
    // The gateway answers, its executor does not: not ready, and why.
    let down = ping();
    assert_eq!(down.status.code(), Some(1));
    let line = String::from_utf8_lossy(&down.stdout);
    assert!(
        line.contains("frameAggregator") && line.lines().count() == 1,
        "{line}"
    );
    // The executor comes up: ready.
    let executor = Flow::executor(&repo_root().join("executor/config.yml"), port);
    let mut ok = ping();
    for _ in 0..50 {
        if ok.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        ok = ping();
    }
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    drop(executor);
    assert_eq!(ping().status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_shutdown_starts() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut flow = Flow::start_default(&[]);
    let uri = flow.addr().replace("grpc://", "http://");
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    flow.signal_interrupt();
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("an update once shutdown starts")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    drop(health);
    assert!(flow.interrupt().success());
}

#[test]
fn a_jpeg_client_gets_jpeg_mosaics() {
    let flow = Flow::start_default(&[]);
    let dir = scratch("jpeg-client");
    let snap = dir.join("bob.png");
    let spawn = |user: &str, frames: &str, snapshot: Option<&std::path::Path>| {
        let mut c = Command::new(bin("vchat-client"));
        c.args([
            flow.addr(),
            user,
            "--headless",
            "--source",
            "test",
            "--encoding",
            "jpeg",
            "--quality",
            "90",
            "--frames",
            frames,
        ]);
        if let Some(s) = snapshot {
            c.arg("--snapshot").arg(s);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let alice = spawn("alice", "150", None);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let bob = spawn("bob", "60", Some(&snap));
    let bob = bob.wait_with_output().unwrap();
    let alice = alice.wait_with_output().unwrap();
    let out =
        String::from_utf8_lossy(&bob.stdout).to_string() + &String::from_utf8_lossy(&bob.stderr);
    assert!(bob.status.success(), "{out}");
    assert!(alice.status.success());
    assert!(out.contains("0 errors"), "{out}");
    // The snapshot is the decoded JPEG mosaic of both users: 2 × 200 rows.
    let png = decode_png(&snap);
    assert_eq!((png.0, png.1), (400, 300), "{out}");
}

#[test]
fn client_says_when_the_server_is_not_there() {
    // Find a port nobody listens on: bind, read it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin("vchat-client"))
        .args([
            &format!("grpc://127.0.0.1:{port}"),
            "alice",
            "--headless",
            "--source",
            "test",
            "--frames",
            "3",
            "--no-reconnect",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `vchat flow` running"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_flow_yaml_names_file_line_and_key() {
    let dir = scratch("badyaml");
    let flow = dir.join("flow.yml");
    std::fs::write(&flow, "jtype: Flow\nexecutors:\n  - uses: VideoChatExecutor\n    uses_with:\n      idle_timeout: 3\n").unwrap();
    let out = Command::new(bin("vchat"))
        .args(["flow", "--uses"])
        .arg(&flow)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flow.yml:5:"), "{err}");
    assert!(err.contains("idle_timeout"), "{err}");

    std::fs::write(&flow, "jtype: Flow\nexecutors:\n  - uses: NoSuchExecutor\n").unwrap();
    let out = Command::new(bin("vchat"))
        .args(["flow", "--uses"])
        .arg(&flow)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flow.yml:3:") && err.contains("unknown jtype `NoSuchExecutor`"),
        "{err}"
    );
}

#[test]
fn shipped_flow_and_executor_configs_load() {
    let spec = vchat_core::config::load_flow(&repo_root().join("flow.yml")).unwrap();
    assert_eq!(spec.executors.len(), 1);
    assert_eq!(spec.executors[0].name, "frameAggregator");
    assert_eq!(spec.executors[0].jtype, "VideoChatExecutor");
}

#[test]
fn mosaic_client_example_runs() {
    let flow = Flow::start_default(&[]);
    let out = Command::new(bin("mosaic_client"))
        .args([flow.addr(), "eve", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("mosaic Some([200, 300, 3])").count(),
        5,
        "{stdout}"
    );
    assert!(stdout.contains("5 responses, 0 errors"), "{stdout}");
}

/// A gateway whose log reader went away (stderr a pipe nobody reads) still stops
/// on SIGTERM: a log line it cannot write must not take the shutdown with it.
#[test]
fn a_gateway_with_a_closed_log_pipe_still_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin("vchat"))
        .args(["flow", "--uses"])
        .arg(repo_root().join("tests/flows/unlabelled.yml"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("vchat: listening on grpc://") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the Flow did not start"
        );
    }
    // Nobody reads its stderr (or stdout) any more.
    drop(child.stderr.take());
    drop(out);
    signal(&child, libc::SIGTERM);
    let deadline = std::time::Instant::now() + STOP_GRACE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        status.is_some(),
        "vchat flow still ran {STOP_GRACE:?} after SIGTERM"
    );
}
