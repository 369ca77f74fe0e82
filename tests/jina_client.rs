//! The real Jina 3 Python client (installed by scripts/jina-venv.sh) streams frames
//! to `vchat flow` with request_size=1 and an on_done callback.

use std::process::Command;

use vchat_e2e::*;

const BOB: [u8; 3] = [0, 255, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jina_client_receives_mosaics_as_numpy_arrays() {
    let flow = Flow::start_default(&[]);
    // Bob (a Rust client) is already in the chat, and keeps streaming while the
    // Python client starts (however long that takes on a loaded machine, he must
    // not leave as idle).
    let mut bob = User::connect(flow.addr());
    assert!(!bob.send(frame("bob", BOB, 200, 300)).await.is_error());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let bob_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return bob,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    assert!(!bob.send(frame("bob", BOB, 200, 300)).await.is_error());
                }
            }
        }
    });

    let script = repo_root().join("tests/jina/post_frames.py");
    let out = tokio::process::Command::from(Command::new(jina_python()))
        .arg(&script)
        .args([flow.addr(), "pyalice", "5", "10,20,30"])
        .env("JINA_LOG_LEVEL", "ERROR")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "jina client failed:\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in:\n{stdout}\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{line}");
    let received = v["received"].as_array().unwrap();
    assert_eq!(received.len(), 5, "one on_done per request: {line}");
    for r in received {
        assert_eq!(r["shape"], serde_json::json!([400, 300, 3]), "{line}");
        assert_eq!(r["dtype"], "uint8");
        assert_eq!(
            r["bands"],
            serde_json::json!([[0, 255, 0], [10, 20, 30]]),
            "{line}"
        );
        assert_eq!(r["user"], "pyalice");
    }
    stop.send(()).unwrap();
    bob_task.await.unwrap().leave().await;
}
