//! Users joining and leaving rooms, and a stream being one user in one room.

use super::*;

#[tokio::test]
async fn mosaic_in_join_order() {
    let ex = executor(5.0);
    let mut a = frame("alice", 2, 3, 10);
    send(&ex, &mut a, 1).await.unwrap();
    assert_eq!(
        a[0].tensor().unwrap().shape(),
        &[2, 3, 3],
        "alone: own frame"
    );
    let mut b = frame("bob", 2, 3, 20);
    send(&ex, &mut b, 2).await.unwrap();
    assert_eq!(bands(&b, 2), vec![10, 20]);
    let mut c = frame("carol", 2, 3, 30);
    send(&ex, &mut c, 3).await.unwrap();
    let mut a2 = frame("alice", 2, 3, 11);
    send(&ex, &mut a2, 1).await.unwrap();
    assert_eq!(a2[0].tensor().unwrap().shape(), &[6, 3, 3]);
    assert_eq!(bands(&a2, 2), vec![11, 20, 30]);
    assert_eq!(participants(&a2), vec!["alice", "bob", "carol"]);
}

#[tokio::test]
async fn stream_end_removes_its_users() {
    let ex = executor(5.0);
    for (u, s, v) in [("alice", 1, 1), ("bob", 2, 2), ("carol", 3, 3)] {
        send(&ex, &mut frame(u, 1, 2, v), s).await.unwrap();
    }
    ex.stream_closed(StreamId(3)).await;
    assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice", "bob"]);
    let mut a = frame("alice", 1, 2, 9);
    send(&ex, &mut a, 1).await.unwrap();
    assert_eq!(bands(&a, 1), vec![9, 2]);
    assert_eq!(ex.users_per_room(), vec![(DEFAULT_ROOM.to_string(), 2)]);
}

#[tokio::test]
async fn idle_users_leave() {
    let ex = executor(0.05);
    send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
    send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let mut a = frame("alice", 1, 2, 3);
    send(&ex, &mut a, 1).await.unwrap();
    assert_eq!(a[0].tensor().unwrap().shape(), &[1, 2, 3]);
    assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice"]);
}

#[tokio::test]
async fn rooms_are_separate() {
    let ex = executor(5.0);
    let mut a = frame("alice", 1, 2, 1);
    a[0].set_tag_str("room", "r1");
    send(&ex, &mut a, 1).await.unwrap();
    let mut b = frame("bob", 1, 2, 2);
    b[0].set_tag_str("room", "r2");
    send(&ex, &mut b, 2).await.unwrap();
    assert_eq!(b[0].tensor().unwrap().shape(), &[1, 2, 3]);
    assert_eq!(participants(&b), vec!["bob"]);
    assert_eq!(ex.users("r1"), vec!["alice"]);
}

#[tokio::test]
async fn max_users_is_enforced_per_room() {
    let ex = with(VideoChatConfig {
        max_users: 2,
        ..Default::default()
    });
    send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
    send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
    let err = send(&ex, &mut frame("carol", 1, 2, 3), 3)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is full") && err.contains("max_users is 2"),
        "{err}"
    );
    // Present users go on; another room has room.
    send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
    // A refused frame binds nothing: carol's stream 3 may still join this
    // room later; another stream of hers gets into another room at once.
    let mut c = frame("carol", 1, 2, 3);
    c[0].set_tag_str("room", "other");
    send(&ex, &mut c, 4).await.unwrap();
    // Once someone leaves, carol gets in.
    ex.stream_closed(StreamId(1)).await;
    send(&ex, &mut frame("carol", 1, 2, 3), 3).await.unwrap();
    assert_eq!(ex.users(DEFAULT_ROOM), vec!["bob", "carol"]);
}

#[tokio::test]
async fn rooms_are_bounded_and_dropped_when_empty() {
    let ex = with(VideoChatConfig {
        max_rooms: 2,
        ..Default::default()
    });
    let in_room = |user: &str, room: &str| {
        let mut d = frame(user, 1, 2, 1);
        d[0].set_tag_str("room", room);
        d
    };
    send(&ex, &mut in_room("a", "r1"), 1).await.unwrap();
    send(&ex, &mut in_room("b", "r2"), 2).await.unwrap();
    let err = send(&ex, &mut in_room("c", "r3"), 3)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_rooms"), "{err}");
    // Existing rooms take more users.
    send(&ex, &mut in_room("c", "r2"), 4).await.unwrap();
    assert_eq!(ex.lock().rooms.len(), 2, "the refused room was not made");
    // The last user of r1 leaves: the room and its binding go.
    ex.stream_closed(StreamId(1)).await;
    assert!(!ex.lock().rooms.contains_key("r1"));
    assert!(!ex.lock().streams.contains_key(&StreamId(1)));
    send(&ex, &mut in_room("c", "r3"), 3).await.unwrap();
    // Every user gone: no room, no binding is left.
    for id in [2, 3, 4] {
        ex.stream_closed(StreamId(id)).await;
    }
    assert!(ex.lock().rooms.is_empty() && ex.lock().streams.is_empty());
    send(&ex, &mut in_room("e", "r2"), 6).await.unwrap();
    let names: Vec<String> = ex.users_per_room().into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["r2"]);
}

#[tokio::test]
async fn idle_rooms_are_swept_without_new_frames() {
    let ex = executor(0.05);
    let mut a = frame("alice", 1, 2, 1);
    a[0].set_tag_str("room", "quiet");
    send(&ex, &mut a, 1).await.unwrap();
    assert_eq!(ex.users_per_room().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ex.users_per_room().is_empty() {
        assert!(Instant::now() < deadline, "the idle room was never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Her stream is still hers: she comes back in the same room only.
    let mut a = frame("alice", 1, 2, 1);
    a[0].set_tag_str("room", "quiet");
    send(&ex, &mut a, 1).await.unwrap();
    assert!(send(&ex, &mut frame("alice", 1, 2, 1), 1).await.is_err());
}

#[tokio::test]
async fn a_stream_is_one_user_in_one_room() {
    let ex = executor(5.0);
    send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
    let err = send(&ex, &mut frame("mallory", 1, 2, 1), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("this stream is \"alice\" in room \"\"")
            && err.contains("cannot change its user or room"),
        "{err}"
    );
    let mut elsewhere = frame("alice", 1, 2, 1);
    elsewhere[0].set_tag_str("room", "r2");
    assert!(send(&ex, &mut elsewhere, 1).await.is_err());
    // 64 made-up names on one stream: none gets in.
    for i in 0..64 {
        assert!(
            send(&ex, &mut frame(&format!("u{i}"), 1, 2, 1), 1)
                .await
                .is_err()
        );
    }
    assert_eq!(ex.users(DEFAULT_ROOM), ["alice"]);
    assert!(ex.users("r2").is_empty());
    // Its first identity goes on.
    let mut a = frame("alice", 1, 2, 7);
    send(&ex, &mut a, 1).await.unwrap();
    assert_eq!(participants(&a), ["alice"]);
    // Once the stream ends, its id binds nothing.
    ex.stream_closed(StreamId(1)).await;
    send(&ex, &mut frame("bob", 1, 2, 1), 1).await.unwrap();
}

#[tokio::test]
async fn a_request_names_one_user_in_one_room() {
    let ex = executor(5.0);
    let mut two_rooms = frame("alice", 1, 2, 1);
    let mut other = frame("alice", 1, 2, 1);
    other[0].set_tag_str("room", "r2");
    two_rooms.0.push(other.0.remove(0));
    let err = send(&ex, &mut two_rooms, 1).await.unwrap_err().to_string();
    assert!(err.contains("several rooms"), "{err}");
    let mut two_users = frame("alice", 1, 2, 1);
    two_users.0.push(frame("bob", 1, 2, 1).0.remove(0));
    let err = send(&ex, &mut two_users, 1).await.unwrap_err().to_string();
    assert!(err.contains("several users"), "{err}");
    assert!(ex.users_per_room().is_empty(), "nothing stored");
    assert!(ex.lock().streams.is_empty(), "nothing bound");
}

#[tokio::test]
async fn names_over_128_bytes_are_refused() {
    let ex = executor(5.0);
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    let err = send(&ex, &mut frame(&long, 1, 2, 1), 1).await.unwrap_err();
    assert!(err.to_string().contains("tags.user is 129 bytes"), "{err}");
    let mut d = frame("alice", 1, 2, 1);
    d[0].set_tag_str("room", &long);
    let err = send(&ex, &mut d, 1).await.unwrap_err();
    assert!(err.to_string().contains("tags.room is 129 bytes"), "{err}");
    let fits = "é".repeat(MAX_NAME_BYTES / 2);
    send(&ex, &mut frame(&fits, 1, 2, 1), 1).await.unwrap();
}

#[tokio::test]
async fn requests_of_an_unknown_stream_bind_nobody() {
    // A Jina gateway calling this executor in another process says nothing of
    // its client streams: all its users come as one unknown stream.
    let ex = executor(5.0);
    let unknown = StreamId::UNKNOWN.0;
    send(&ex, &mut frame("alice", 1, 2, 1), unknown)
        .await
        .unwrap();
    let mut b = frame("bob", 1, 2, 2);
    send(&ex, &mut b, unknown).await.unwrap();
    assert_eq!(participants(&b), ["alice", "bob"]);
    assert!(ex.lock().streams.is_empty());
}

#[tokio::test]
async fn a_newer_stream_of_a_user_replaces_the_older_one() {
    let ex = with(VideoChatConfig::default());
    send(&ex, &mut frame("alice", 4, 4, 10), 1).await.unwrap();
    send(&ex, &mut frame("bob", 4, 4, 20), 3).await.unwrap();
    // A second stream of alice takes her tile.
    send(&ex, &mut frame("alice", 4, 4, 30), 2).await.unwrap();
    let err = send(&ex, &mut frame("alice", 4, 4, 40), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("replaced by a newer connection of alice"),
        "{err}"
    );
    // The older stream's end leaves the newer one in place.
    ex.stream_closed(StreamId(1)).await;
    assert_eq!(ex.users(DEFAULT_ROOM), ["alice", "bob"]);
    let mut docs = frame("bob", 4, 4, 20);
    send(&ex, &mut docs, 3).await.unwrap();
    let t = docs[0].tensor().unwrap();
    assert_eq!(
        t.data()[0],
        30,
        "alice's tile holds the newer stream's frame"
    );
}

#[tokio::test]
async fn a_viewer_sees_the_room_without_being_in_it() {
    let ex = with(VideoChatConfig::default());
    let viewer = |value| {
        let mut d = frame("carol", 4, 4, value);
        d[0].set_tag(
            VIEWER_TAG,
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        );
        d
    };
    // An empty room: no frame comes back.
    let mut v = viewer(99);
    send(&ex, &mut v, 9).await.unwrap();
    assert!(v[0].content.is_none());
    send(&ex, &mut frame("alice", 4, 4, 10), 1).await.unwrap();
    send(&ex, &mut frame("bob", 4, 4, 20), 2).await.unwrap();
    let mut v = viewer(99);
    send(&ex, &mut v, 9).await.unwrap();
    assert_eq!(participants(&v), ["alice", "bob"]);
    let t = v[0].tensor().unwrap();
    assert_eq!(t.shape()[..2], [8, 4]);
    assert!(
        !t.data().contains(&99),
        "the viewer's frame is not in the mosaic"
    );
    assert_eq!(ex.users(DEFAULT_ROOM), ["alice", "bob"]);
    assert!(!ex.lock().streams.contains_key(&StreamId(9)));
}
