//! Frame, mosaic and state bounds, and the memory ceiling, through the real
//! `vchat flow` binary: what a hostile peer sends gets an ERROR (or a refused
//! stream), and everyone else goes on.

use std::time::{Duration, Instant};

use vchat_core::Document;
use vchat_e2e::*;

const ALICE: [u8; 3] = [200, 40, 30];
const BOB: [u8; 3] = [30, 200, 40];
const CAROL: [u8; 3] = [40, 30, 200];

fn in_room(mut doc: Document, room: &str) -> Document {
    doc.set_tag_str("room", room);
    doc
}

/// A request of `docs`, with id `id`.
fn req(id: &str, docs: Vec<Document>) -> vchat_proto::DataRequestProto {
    request(id, docs.into_iter().map(Document::into_proto).collect())
}

fn assert_ok(resp: &vchat_proto::DataRequestProto, what: &str) {
    let (code, description) = status(resp);
    assert_eq!(code, 0, "{what}: {description}");
}

/// The ERROR description of `resp`, failing the test on anything else.
fn error_of(resp: &vchat_proto::DataRequestProto, what: &str) -> String {
    let (code, description) = status(resp);
    assert_eq!(code, 1, "{what}: expected ERROR, got {description:?}");
    description
}

/// A Flow of the chat executor with `uses_with` (indented YAML lines).
fn chat_flow(tag: &str, uses_with: &str) -> std::path::PathBuf {
    let dir = scratch(tag);
    let config = repo_root().join("executor/config.yml");
    write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nexecutors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n{uses_with}",
            config.display()
        ),
    )
}

/// The case that took the whole gateway down: in a room 3840 pixels wide, a
/// frame 1 pixel wide and 100,000 tall would be resized to 384,000,000 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliver_in_a_wide_room_gets_an_error_and_the_gateway_serves_on() {
    let mut flow = Flow::start_default(&[]);
    let mut alice = RawStream::connect(flow.addr()).await;
    let r = alice
        .send(req(
            "a1",
            vec![in_room(frame("alice", ALICE, 4, 3840), "wide")],
        ))
        .await;
    assert_ok(&r, "alice's 4K-wide frame");
    let mut bob = RawStream::connect(flow.addr()).await;
    let r = bob
        .send(req(
            "sliver",
            vec![in_room(frame("bob", BOB, 100_000, 1), "wide")],
        ))
        .await;
    let e = error_of(&r, "the sliver");
    assert!(
        e.contains("384000000x3840") && e.contains("max_frame_pixels"),
        "{e}"
    );
    assert_eq!(r.header.as_ref().unwrap().request_id, "sliver");
    // The room is as it was: alice alone gets her own frame back.
    let r = alice
        .send(req(
            "a2",
            vec![in_room(frame("alice", ALICE, 4, 3840), "wide")],
        ))
        .await;
    assert_ok(&r, "alice after the sliver");
    assert_eq!(response_tensor(&r).shape(), [4, 3840, 3]);
    // Bob's stream goes on, with a frame that fits the room.
    let r = bob
        .send(req("b2", vec![in_room(frame("bob", BOB, 2, 1920), "wide")]))
        .await;
    assert_ok(&r, "bob's next frame");
    assert_eq!(bands(&response_tensor(&r), 4), [ALICE, BOB]);
    // A new user in another room is served.
    let mut carol = User::connect(flow.addr());
    let r = carol
        .send(in_room(frame("carol", CAROL, 20, 30), "other"))
        .await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(participants(&r.docs().unwrap()[0]), ["carol"]);
    carol.leave().await;
    assert_eq!(alice.close().await.unwrap(), None);
    assert_eq!(bob.close().await.unwrap(), None);
    assert!(flow.is_running());
    assert!(!flow.stderr().contains("panicked"), "{}", flow.stderr());
    assert!(flow.interrupt().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_two_rooms_is_refused() {
    let flow = Flow::start_default(&[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    let r = raw
        .send(req(
            "two",
            vec![
                in_room(frame("alice", ALICE, 20, 30), "r1"),
                in_room(frame("alice", ALICE, 20, 30), "r2"),
            ],
        ))
        .await;
    let e = error_of(&r, "two rooms");
    assert!(e.contains("several rooms"), "{e}");
    let r = raw
        .send(req(
            "users",
            vec![frame("alice", ALICE, 20, 30), frame("bob", BOB, 20, 30)],
        ))
        .await;
    let e = error_of(&r, "two users");
    assert!(e.contains("several users"), "{e}");
    // Nothing was stored, and the stream may still become one user in one room.
    let r = raw
        .send(req(
            "one",
            vec![in_room(frame("alice", ALICE, 20, 30), "r2")],
        ))
        .await;
    assert_ok(&r, "one room");
    let mut bob = User::connect(flow.addr());
    let r = bob.send(in_room(frame("bob", BOB, 20, 30), "r1")).await;
    assert_eq!(participants(&r.docs().unwrap()[0]), ["bob"], "r1 is empty");
    bob.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cannot_change_its_user_or_room() {
    let flow = Flow::start_default(&[]);
    let mut alice = RawStream::connect(flow.addr()).await;
    let r = alice
        .send(req("a", vec![in_room(frame("alice", ALICE, 20, 30), "r1")]))
        .await;
    assert_ok(&r, "alice");
    let r = alice
        .send(req("m", vec![in_room(frame("mallory", BOB, 20, 30), "r1")]))
        .await;
    let e = error_of(&r, "another user");
    assert!(
        e.contains("this stream is \"alice\" in room \"r1\"")
            && e.contains("cannot change its user or room"),
        "{e}"
    );
    let r = alice
        .send(req("r", vec![in_room(frame("alice", ALICE, 20, 30), "r2")]))
        .await;
    error_of(&r, "another room");
    // One stream cannot fill a room with made-up names.
    for i in 0..64 {
        let r = alice
            .send(req(
                &format!("fake{i}"),
                vec![in_room(frame(&format!("fake{i}"), BOB, 20, 30), "r1")],
            ))
            .await;
        error_of(&r, "a made-up name");
    }
    // Its first identity still works, and the room holds only real users.
    let mut bob = User::connect(flow.addr());
    let r = bob.send(in_room(frame("bob", BOB, 20, 30), "r1")).await;
    assert_eq!(participants(&r.docs().unwrap()[0]), ["alice", "bob"]);
    let r = alice
        .send(req(
            "a2",
            vec![in_room(frame("alice", ALICE, 20, 30), "r1")],
        ))
        .await;
    assert_ok(&r, "alice again");
    assert_eq!(bands(&response_tensor(&r), 20), [ALICE, BOB]);
    bob.leave().await;
    assert_eq!(alice.close().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_over_128_bytes_are_refused() {
    let flow = Flow::start_default(&[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    let long = "n".repeat(129);
    let r = raw.send(req("u", vec![frame(&long, ALICE, 20, 30)])).await;
    let e = error_of(&r, "long user");
    assert!(
        e.contains("tags.user is 129 bytes") && e.contains("128"),
        "{e}"
    );
    let r = raw
        .send(req(
            "r",
            vec![in_room(frame("alice", ALICE, 20, 30), &long)],
        ))
        .await;
    let e = error_of(&r, "long room");
    assert!(e.contains("tags.room is 129 bytes"), "{e}");
    let r = raw
        .send(req("ok", vec![frame(&"n".repeat(128), ALICE, 20, 30)]))
        .await;
    assert_ok(&r, "128 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rooms_turns_a_new_room_away_until_one_empties() {
    let flow = Flow::start(&chat_flow("bounds-rooms", "      max_rooms: 2\n"), &[]);
    let mut first = User::connect(flow.addr());
    let r = first.send(in_room(frame("a", ALICE, 20, 30), "r1")).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let mut second = User::connect(flow.addr());
    let r = second.send(in_room(frame("b", BOB, 20, 30), "r2")).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let mut third = User::connect(flow.addr());
    let r = third.send(in_room(frame("c", CAROL, 20, 30), "r3")).await;
    let e = r.error().expect("a third room is refused");
    assert!(e.contains("max_rooms") && e.contains("at most 2"), "{e}");
    // Existing rooms still take users.
    let r = third.send(in_room(frame("c", CAROL, 20, 30), "r2")).await;
    assert_eq!(participants(&r.docs().unwrap()[0]), ["b", "c"]);
    // When r1's last user leaves, the room goes and a new one may open.
    first.leave().await;
    let mut fourth = User::connect(flow.addr());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = fourth.send(in_room(frame("d", ALICE, 20, 30), "r3")).await;
        if !r.is_error() {
            assert_eq!(participants(&r.docs().unwrap()[0]), ["d"]);
            break;
        }
        assert!(Instant::now() < deadline, "r1 never went: {:?}", r.error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for u in [second, third, fourth] {
        u.leave().await;
    }
}

/// Polls `metrics_url` until `vchat_memory_held_bytes` satisfies `pred`.
async fn held_bytes_until(metrics_url: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = metric(&http_get(metrics_url), "vchat_memory_held_bytes");
        if pred(held) {
            return held;
        }
        assert!(Instant::now() < deadline, "held bytes stayed at {held}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_memory_mb_new_streams_are_refused() {
    let mut flow = Flow::start_default(&[
        "--max-memory-mb",
        "1",
        "--port-monitoring",
        "0",
        "--http-port",
        "0",
    ]);
    let metrics_url = flow.metrics_url().to_string();
    assert_eq!(
        metric(&http_get(&metrics_url), "vchat_memory_held_bytes"),
        0.0
    );
    // Two 480x640 users: their frames and the room's mosaic, 3.5 MiB.
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", ALICE, 480, 640)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let mut bob = User::connect(flow.addr());
    let r = bob.send(frame("bob", BOB, 480, 640)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let held = held_bytes_until(&metrics_url, |b| b > 1048576.0).await;
    assert_eq!(held, 4.0 * 480.0 * 640.0 * 3.0, "two frames and a mosaic");
    // A new stream is refused, with the setting named.
    let err = match RawStream::try_connect(flow.addr()).await {
        Err(status) => status,
        Ok(mut s) => match s.next().await {
            Err(status) => status,
            other => panic!("a new stream must be refused, got {other:?}"),
        },
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_memory_mb"), "{}", err.message());
    // And the WebSocket door answers 503 at the handshake.
    let ws = format!("{}/ws?user=dan", flow.web_url().replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(ws.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("max_memory_mb"), "{body}");
        }
        other => panic!("the WebSocket must be refused, got {:?}", other.map(|_| ())),
    }
    // Streams already open go on.
    let r = alice.send(frame("alice", ALICE, 480, 640)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(participants(&r.docs().unwrap()[0]), ["alice", "bob"]);
    // Once they leave, what they held is freed and new streams are welcome.
    alice.leave().await;
    bob.leave().await;
    held_bytes_until(&metrics_url, |b| b == 0.0).await;
    let mut carol = RawStream::connect(flow.addr()).await;
    let r = carol
        .send(req("c", vec![frame("carol", CAROL, 20, 30)]))
        .await;
    assert_ok(&r, "carol after the room emptied");
    assert_eq!(carol.close().await.unwrap(), None);
    assert!(flow.interrupt().success());
}
