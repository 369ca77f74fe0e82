//! Rooms, layouts, JPEG frames and limits through the real `vchat flow` binary.

use vchat_core::config::load_flow;
use vchat_e2e::*;

const ALICE: [u8; 3] = [200, 40, 30];
const BOB: [u8; 3] = [30, 200, 40];
const CAROL: [u8; 3] = [40, 30, 200];
const DAVE: [u8; 3] = [120, 120, 20];

fn in_room(mut doc: vchat_core::Document, room: &str) -> vchat_core::Document {
    doc.set_tag_str("room", room);
    doc
}

fn grid_flow() -> std::path::PathBuf {
    repo_root().join("examples/flows/grid.yml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_never_see_each_others_frames() {
    let flow = Flow::start_default(&[]);
    let mut users: Vec<(User, &str, [u8; 3], &str)> = vec![
        (User::connect(flow.addr()), "alice", ALICE, "red"),
        (User::connect(flow.addr()), "bob", BOB, "green"),
        (User::connect(flow.addr()), "carol", CAROL, "red"),
        (User::connect(flow.addr()), "dave", DAVE, "green"),
    ];
    for (u, name, color, room) in users.iter_mut() {
        u.send(in_room(frame(name, *color, 20, 30), room)).await;
    }
    for _ in 0..5 {
        for (u, name, color, room) in users.iter_mut() {
            let r = u.send(in_room(frame(name, *color, 20, 30), room)).await;
            assert!(!r.is_error(), "{:?}", r.error());
            let doc = &r.docs().unwrap()[0];
            let got = bands(doc.tensor().unwrap(), 20);
            let (want, names) = if *room == "red" {
                (vec![ALICE, CAROL], vec!["alice", "carol"])
            } else {
                (vec![BOB, DAVE], vec!["bob", "dave"])
            };
            assert_eq!(got, want, "{name} in {room}");
            assert_eq!(participants(doc), names);
        }
    }
    assert!(flow.stderr().contains("User joined"), "joins are logged");
    for (u, ..) in users {
        u.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_users_turns_the_fifth_away_with_an_error() {
    let flow = Flow::start(&grid_flow(), &[]);
    let mut users = Vec::new();
    for i in 0..4 {
        let mut u = User::connect(flow.addr());
        let r = u
            .send(in_room(frame(&format!("u{i}"), ALICE, 20, 30), "full"))
            .await;
        assert!(!r.is_error(), "{:?}", r.error());
        users.push(u);
    }
    let mut fifth = User::connect(flow.addr());
    let r = fifth.send(in_room(frame("u4", BOB, 20, 30), "full")).await;
    assert!(r.is_error());
    let e = r.error().unwrap();
    assert!(e.contains("is full") && e.contains("max_users is 4"), "{e}");
    // The others go on; another room takes the fifth.
    let r = users[0]
        .send(in_room(frame("u0", ALICE, 20, 30), "full"))
        .await;
    assert_eq!(participants(&r.docs().unwrap()[0]).len(), 4);
    // A stream is one user in one room: the fifth's refused stream stays free to
    // wait for this room, and another stream of theirs joins another room.
    let mut elsewhere = User::connect(flow.addr());
    let r = elsewhere
        .send(in_room(frame("u4", BOB, 20, 30), "other"))
        .await;
    assert!(!r.is_error(), "{:?}", r.error());
    // When one leaves, there is room again.
    users.pop().unwrap().leave().await;
    let mut tries = 0;
    loop {
        let r = fifth.send(in_room(frame("u4", BOB, 20, 30), "full")).await;
        if !r.is_error() {
            break;
        }
        tries += 1;
        assert!(tries < 200, "the room never made space: {:?}", r.error());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_responses_keep_their_size_as_users_join_and_leave() {
    let flow = Flow::start(&grid_flow(), &[]);
    let mut users = Vec::new();
    // Frames of several sizes: the grid scales each into its tile.
    for (i, (h, w)) in [(20, 30), (120, 160), (50, 50), (240, 100)]
        .into_iter()
        .enumerate()
    {
        let mut u = User::connect(flow.addr());
        let r = u.send(frame(&format!("u{i}"), CAROL, h, w)).await;
        assert!(!r.is_error(), "{:?}", r.error());
        assert_eq!(
            r.docs().unwrap()[0].tensor().unwrap().shape(),
            [480, 640, 3]
        );
        users.push((u, h, w));
    }
    while let Some((u, ..)) = users.pop() {
        u.leave().await;
        for (i, (u, h, w)) in users.iter_mut().enumerate() {
            let r = u.send(frame(&format!("u{i}"), CAROL, *h, *w)).await;
            assert_eq!(
                r.docs().unwrap()[0].tensor().unwrap().shape(),
                [480, 640, 3]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jpeg_client_and_a_raw_client_share_a_room() {
    let flow = Flow::start_default(&[]);
    // Bands of 48 rows: JPEG blocks (16 rows with 4:2:0 chroma) never straddle
    // two users, so every pixel can be checked.
    let mut raw = User::connect(flow.addr());
    let mut jpeg = User::connect(flow.addr());
    raw.send(frame("alice", ALICE, 48, 64)).await;
    let r = jpeg.send(jpeg_frame("bob", BOB, 48, 64)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    for _ in 0..3 {
        let r = raw.send(frame("alice", ALICE, 48, 64)).await;
        let (t, was_jpeg) = frame_of(&r.docs().unwrap()[0]);
        assert!(!was_jpeg, "a raw request gets a raw mosaic");
        assert_eq!(t.shape(), [96, 64, 3]);
        assert_eq!(bands(&t, 48)[0], ALICE, "raw frames stay exact");
        assert!(bands_close(&t, 48, &[ALICE, BOB], 12));

        let r = jpeg.send(jpeg_frame("bob", BOB, 48, 64)).await;
        let doc = &r.docs().unwrap()[0];
        assert_eq!(doc.mime_type, "image/jpeg");
        let (t, was_jpeg) = frame_of(doc);
        assert!(was_jpeg, "a JPEG request gets a JPEG mosaic");
        assert_eq!(t.shape(), [96, 64, 3]);
        assert!(bands_close(&t, 48, &[ALICE, BOB], 24));
        assert_eq!(participants(doc), ["alice", "bob"]);
    }
    raw.leave().await;
    jpeg.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_streams_over_the_limits_get_clear_errors() {
    let flow = Flow::start_default(&["--max-frame-bytes", "10000", "--max-streams", "1"]);
    let mut u = User::connect(flow.addr());
    let r = u.send(frame("alice", ALICE, 100, 100)).await;
    let e = r.error().expect("an ERROR status");
    assert!(e.contains("max_frame_bytes"), "{e}");
    let r = u.send(frame("alice", ALICE, 10, 10)).await;
    assert!(!r.is_error(), "the stream goes on");

    // A second stream while the first is open.
    let client = vchat_client::Client::new(flow.addr()).unwrap();
    let err = client
        .post(
            "/",
            futures::stream::iter([frame("bob", BOB, 10, 10)]),
            vchat_client::PostOptions::new().request_size(1),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("too many streams") && text.contains("max_streams"),
        "{text}"
    );
    match err {
        vchat_client::ClientError::Rpc { status, .. } => {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted)
        }
        other => panic!("{other:?}"),
    }
    u.leave().await;
}

#[test]
fn example_flows_load() {
    let grid = load_flow(&grid_flow()).unwrap();
    assert_eq!(grid.with.max_streams, Some(64));
    assert_eq!(grid.executors[0].with["layout"].0, "grid");
    let secure = load_flow(&repo_root().join("examples/flows/secure.yml")).unwrap();
    assert!(
        secure
            .with
            .ssl_certfile
            .unwrap()
            .ends_with("certs/fullchain.pem")
    );
    assert_eq!(secure.with.monitoring, Some(true));
    assert_eq!(secure.with.port_monitoring, Some(9090));
}
