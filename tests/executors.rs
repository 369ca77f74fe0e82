//! Pluggable executors through the real binaries: executors as services, a custom
//! Rust executor, Python (Jina) executors in a vchat Flow, a vchat executor in a
//! Jina Flow, external executors going down and coming back, room-sticky replicas.

use std::time::Duration;

use vchat_e2e::*;

const ALICE: [u8; 3] = [255, 0, 0];
const BOB: [u8; 3] = [0, 255, 0];

fn shape_of(r: &vchat_client::Response) -> Vec<usize> {
    r.docs().unwrap()[0].tensor().unwrap().shape().to_vec()
}

/// Sends alice's frames until the mosaic has `rows` rows (the gateway learns of a
/// stream's end asynchronously); returns the last response.
async fn until_rows(
    user: &mut User,
    name: &str,
    color: [u8; 3],
    rows: usize,
) -> vchat_client::Response {
    let mut r = user.send(frame(name, color, 200, 300)).await;
    for _ in 0..300 {
        if !r.is_error() && shape_of(&r)[0] == rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        r = user.send(frame(name, color, 200, 300)).await;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videochat_runs_as_its_own_service() {
    // Without labels: the bands are compared pixel by pixel.
    let executor = Flow::executor(&repo_root().join("tests/flows/unlabelled-executor.yml"), 0);
    let dir = scratch("remote");
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nexecutors:\n  - name: frameAggregator\n    host: 127.0.0.1\n    port: {}\n    external: true\n",
            executor.port()
        ),
    );
    let flow = Flow::start(&flow_yml, &[]);
    let mut alice = User::connect(flow.addr());
    let mut bob = User::connect(flow.addr());
    alice.send(frame("alice", ALICE, 200, 300)).await;
    let r = bob.send(frame("bob", BOB, 200, 300)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 200),
        [ALICE, BOB]
    );
    // Bob leaves: the executor in the other process hears of it from the gateway.
    bob.leave().await;
    let r = until_rows(&mut alice, "alice", ALICE, 200).await;
    assert_eq!(shape_of(&r), [200, 300, 3]);
    alice.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_executor_that_goes_away_and_comes_back() {
    let port = free_port();
    let dir = scratch("restart");
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nexecutors:\n  - name: frameAggregator\n    host: 127.0.0.1\n    port: {port}\n    external: true\n    timeout_send: 2000\n    retries: 1\n"
        ),
    );
    // The Flow starts while its executor is down: it must start anyway.
    let mut flow = Flow::start(&flow_yml, &[]);
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", ALICE, 20, 30)).await;
    assert!(r.is_error());
    assert!(
        r.error().unwrap().contains("unavailable"),
        "{:?}",
        r.error()
    );

    let executor = Flow::executor(&repo_root().join("executor/config.yml"), port);
    let r = alice.send(frame("alice", ALICE, 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    drop(executor);
    // Down again mid-stream: errors for the affected requests only, stream open.
    let r = alice.send(frame("alice", ALICE, 20, 30)).await;
    assert!(r.is_error());
    let _executor = Flow::executor(&repo_root().join("executor/config.yml"), port);
    let r = alice.send(frame("alice", ALICE, 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(shape_of(&r), [20, 30, 3]);
    alice.leave().await;
    assert!(flow.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_rust_executor_in_a_flow_with_parameters() {
    let flow = Flow::spawn(
        &bin("vchat-posterize"),
        &[
            "flow".as_ref(),
            "--uses".as_ref(),
            repo_root()
                .join("examples/posterize-executor/flow.yml")
                .as_os_str(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            "0".as_ref(),
        ],
    );
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", [200, 100, 30], 20, 30)).await;
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 20),
        [[170, 85, 0]]
    );
    alice.leave().await;

    // Parameters reach the executor: `levels: 256` for this executor only keeps
    // the colour, over the global `levels: 2`.
    let client = vchat_client::Client::new(flow.addr()).unwrap();
    let mut own = vchat_core::Struct::default();
    own.fields
        .insert("levels".into(), vchat_core::number_value(256.0));
    let mut params = std::collections::BTreeMap::new();
    params.insert("levels".into(), vchat_core::number_value(2.0));
    params.insert(
        "posterize".into(),
        vchat_core::Value {
            kind: Some(vchat_core::value::Kind::StructValue(own)),
        },
    );
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let options = || {
        let sink = got.clone();
        vchat_client::PostOptions::new()
            .request_size(1)
            .parameters(params.clone())
            .on_done(move |r| {
                sink.lock()
                    .unwrap()
                    .push(bands(r.docs().unwrap()[0].tensor().unwrap(), 20))
            })
    };
    // Alice's leave reaches the chat when her stream's end does, which may be
    // after bob's first frame: bob sends until the room is his alone.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        got.lock().unwrap().clear();
        let inputs = futures::stream::iter(vec![frame("bob", [200, 100, 30], 20, 30)]);
        client.post("/", inputs, options()).await.unwrap();
        let bands = got.lock().unwrap().clone();
        if bands.len() == 1 && bands[0].len() == 1 || std::time::Instant::now() > deadline {
            assert_eq!(bands, vec![vec![[200, 100, 30]]]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed's executor, word for word (also what bench/compare.sh runs in Jina).
const SEED_EXECUTOR: &str = include_str!("jina/seed/executor/executor.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_python_executor_runs_in_a_vchat_flow() {
    // The seed's own files: executor.py, executor/config.yml with py_modules, flow.yml.
    let dir = scratch("seed");
    write_file(&dir, "executor/executor.py", SEED_EXECUTOR);
    write_file(
        &dir,
        "executor/config.yml",
        include_str!("jina/seed/executor/config.yml"),
    );
    let flow_yml = write_file(&dir, "flow.yml", include_str!("jina/seed/flow.yml"));
    let python = jina_python();
    let flow = Flow::start(&flow_yml, &["--python", python.to_str().unwrap()]);
    let mut alice = User::connect(flow.addr());
    let mut bob = User::connect(flow.addr());
    let r = alice.send(frame("alice", ALICE, 200, 300)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(shape_of(&r), [200, 300, 3]);
    let r = bob.send(frame("bob", BOB, 200, 300)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 200),
        [ALICE, BOB]
    );
    alice.leave().await;
    bob.leave().await;
}

#[test]
fn a_python_executor_without_jina_is_a_clear_error() {
    let dir = scratch("nojina");
    write_file(&dir, "executor/executor.py", SEED_EXECUTOR);
    write_file(
        &dir,
        "executor/config.yml",
        "jtype: VideoChatExecutor\npy_modules:\n  - executor.py\n",
    );
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nexecutors:\n  - uses: executor/config.yml\n",
    );
    // An interpreter that exists but has no jina: the system one, isolated.
    let out = std::process::Command::new(bin("vchat"))
        .args(["flow", "--uses"])
        .arg(&flow_yml)
        .args(["--python", "/bin/false"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("py_modules") && err.contains("no `jina` module") && err.contains("--python"),
        "{err}"
    );
}

/// Kills a whole process group when dropped, also when the test fails.
struct KillGroup(Option<u32>);

impl KillGroup {
    /// The group led by `pid`, checked while it runs: never the test's own group.
    fn led_by(pid: u32) -> KillGroup {
        let pgrp = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(2)?
                    .parse()
                    .ok()
            });
        KillGroup((pgrp == Some(pid) && pid > 1).then_some(pid))
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vchat_executor_runs_in_a_jina_flow() {
    // Without labels: the bands are compared pixel by pixel.
    let executor = Flow::executor(&repo_root().join("tests/flows/unlabelled-executor.yml"), 0);
    let dir = scratch("jinaflow");
    let port = free_port();
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  protocol: grpc\n  port: {port}\nexecutors:\n  - name: frameAggregator\n    host: 127.0.0.1\n    port: {}\n    external: true\n",
            executor.port()
        ),
    );
    let mut jina = tokio::process::Command::new(jina_python())
        .args(["-m", "jina", "flow", "--uses"])
        .arg(&flow_yml)
        .env("JINA_LOG_LEVEL", "ERROR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        // Its own process group: `jina flow` forks its gateway and executor
        // runtimes, which outlive a kill of the parent alone.
        .process_group(0)
        .spawn()
        .unwrap();
    let _group = KillGroup::led_by(jina.id().expect("running"));
    let addr = format!("grpc://127.0.0.1:{port}");
    // Wait until the Jina gateway answers dry_run (importing Jina takes seconds).
    let client = vchat_client::Client::new(&addr).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while client.dry_run().await.is_err() {
        assert!(jina.try_wait().unwrap().is_none(), "jina flow exited");
        assert!(
            std::time::Instant::now() < deadline,
            "jina flow did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut alice = User::connect(&addr);
    let mut bob = User::connect(&addr);
    let r = alice.send(frame("alice", ALICE, 200, 300)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let r = bob.send(frame("bob", BOB, 200, 300)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 200),
        [ALICE, BOB]
    );
    // Jina's gateway keeps half-closed streams open: they end with the test.
    drop((alice, bob));
    let _ = jina.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_stick_to_one_replica() {
    let dir = scratch("replicas");
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nexecutors:\n  - uses: VideoChatExecutor\n    name: frameAggregator\n    replicas: 2\n",
    );
    let flow = Flow::start(&flow_yml, &[]);
    // Six rooms of two users each: with per-request spreading, a user would often
    // reach a replica that never saw the other member of the room.
    let mut users = Vec::new();
    for room in 0..6 {
        for (name, color) in [("alice", ALICE), ("bob", BOB)] {
            users.push((User::connect(flow.addr()), room, name, color));
        }
    }
    for _round in 0..3 {
        for (u, room, name, color) in users.iter_mut() {
            let mut doc = frame(name, *color, 20, 30);
            doc.set_tag_str("room", format!("room{room}"));
            u.send(doc).await;
        }
    }
    for (u, room, name, color) in users.iter_mut() {
        let mut doc = frame(name, *color, 20, 30);
        doc.set_tag_str("room", format!("room{room}"));
        let r = u.send(doc).await;
        assert_eq!(
            bands(r.docs().unwrap()[0].tensor().unwrap(), 20),
            [ALICE, BOB],
            "room{room} {name}"
        );
    }
    for (u, ..) in users {
        u.leave().await;
    }
}
