//! The Prometheus endpoint of `vchat flow`: its counters move as frames flow.

use vchat_e2e::*;

const ALICE: [u8; 3] = [200, 40, 30];
const BOB: [u8; 3] = [30, 200, 40];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_frames_flow() {
    let flow = Flow::start_default(&["--port-monitoring", "0"]);
    let url = flow.metrics_url().to_string();
    let before = http_get(&url);
    for name in [
        "vchat_requests_total",
        "vchat_request_failures_total",
        "vchat_frames_skipped_total",
        "vchat_streams_rejected_total",
        "vchat_bytes_in_total",
        "vchat_bytes_out_total",
        "vchat_active_streams",
        "vchat_room_users",
        "vchat_request_duration_seconds",
    ] {
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "{name} missing in\n{before}"
        );
    }
    assert_eq!(metric(&before, "vchat_requests_total"), 0.0);

    let mut alice = User::connect(flow.addr());
    let mut bob = User::connect(flow.addr());
    let mut alice_frame = frame("alice", ALICE, 20, 30);
    alice_frame.set_tag_str("room", "m");
    let mut bob_frame = frame("bob", BOB, 20, 30);
    bob_frame.set_tag_str("room", "m");
    for _ in 0..5 {
        alice.send(alice_frame.clone()).await;
        bob.send(bob_frame.clone()).await;
    }
    let mut bad = frame("x", BOB, 20, 30);
    bad.tags.clear();
    assert!(alice.send(bad).await.is_error());

    let during = http_get(&url);
    assert_eq!(metric(&during, "vchat_requests_total"), 11.0);
    assert_eq!(metric(&during, "vchat_request_failures_total"), 1.0);
    assert_eq!(metric(&during, "vchat_frames_skipped_total"), 0.0);
    assert_eq!(metric(&during, "vchat_active_streams"), 2.0);
    assert_eq!(
        metric(
            &during,
            "vchat_room_users{executor=\"frameAggregator\",room=\"m\"}"
        ),
        2.0
    );
    // Each request carries a 20×30×3 frame; each two-user mosaic is twice that.
    assert!(metric(&during, "vchat_bytes_in_total") > 10.0 * 1800.0);
    assert!(metric(&during, "vchat_bytes_out_total") > 10.0 * 1800.0);
    assert_eq!(
        metric(
            &during,
            "vchat_request_duration_seconds_count{endpoint=\"/\"}"
        ),
        11.0
    );

    alice.leave().await;
    bob.leave().await;
    // The streams' end is seen by the gateway a moment after the clients finish,
    // and the room's a moment after that (the executor is told from a task).
    let users = "vchat_room_users{executor=\"frameAggregator\",room=\"m\"}";
    let mut after = http_get(&url);
    for _ in 0..200 {
        if metric(&after, "vchat_active_streams") == 0.0 && metric(&after, users) == 0.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        after = http_get(&url);
    }
    assert_eq!(metric(&after, "vchat_active_streams"), 0.0);
    assert_eq!(metric(&after, users), 0.0);
}
