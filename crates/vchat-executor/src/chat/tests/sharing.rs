//! Raw and JPEG clients, the shared mosaic, `mosaic_fps`, and the budget.

use super::*;

#[tokio::test]
async fn jpeg_and_raw_clients_share_a_room() {
    let ex = executor(5.0);
    let mut a = jpeg_frame("alice", 16, 16, 200);
    send(&ex, &mut a, 1).await.unwrap();
    assert!(jpeg::is_jpeg(&a[0]), "alone: own JPEG back");
    let mut b = frame("bob", 16, 16, 40);
    send(&ex, &mut b, 2).await.unwrap();
    let t = b[0].tensor().unwrap();
    assert_eq!(t.shape(), &[32, 16, 3]);
    assert!(t.data()[8 * 16 * 3].abs_diff(200) < 10);
    assert_eq!(t.data()[24 * 16 * 3], 40);
    let mut a = jpeg_frame("alice", 16, 16, 200);
    send(&ex, &mut a, 1).await.unwrap();
    let Some(Content::Blob(j)) = &a[0].content else {
        panic!("JPEG in, JPEG out");
    };
    assert_eq!(a[0].mime_type, MIME_JPEG);
    let (px, h, w) = jpeg::decode_bgr(j, 1 << 20).unwrap();
    assert_eq!((h, w), (32, 16));
    assert!(px[8 * 16 * 3].abs_diff(200) < 10);
    assert!(px[24 * 16 * 3].abs_diff(40) < 10);
    // tags.accept overrides the request's encoding.
    let mut b = frame("bob", 16, 16, 40);
    b[0].set_tag_str(ACCEPT_TAG, "jpeg");
    send(&ex, &mut b, 2).await.unwrap();
    assert!(jpeg::is_jpeg(&b[0]));
}

#[tokio::test]
async fn jpeg_mosaic_of_one_state_is_encoded_once() {
    let ex = executor(5.0);
    send(&ex, &mut jpeg_frame("alice", 8, 8, 100), 1)
        .await
        .unwrap();
    let mut b1 = jpeg_frame("bob", 8, 8, 50);
    send(&ex, &mut b1, 2).await.unwrap();
    // Bob's source is paused: the same frame again is the same room state.
    let mut b2 = jpeg_frame("bob", 8, 8, 50);
    send(&ex, &mut b2, 2).await.unwrap();
    let blob = |d: &DocumentArray| match &d[0].content {
        Some(Content::Blob(b)) => b.clone(),
        other => panic!("{other:?}"),
    };
    let (x, y) = (blob(&b1), blob(&b2));
    assert_eq!(x.as_ptr(), y.as_ptr(), "the cached encoding is shared");
}

#[tokio::test]
async fn mosaic_fps_shares_one_composition_per_period() {
    let ex = with(VideoChatConfig {
        mosaic_fps: 2.0,
        ..Default::default()
    });
    send(&ex, &mut frame("alice", 2, 2, 10), 1).await.unwrap();
    let mut first = frame("bob", 2, 2, 20);
    send(&ex, &mut first, 2).await.unwrap();
    assert_eq!(bands(&first, 2), vec![10, 20]);
    // Within the period: the mosaic composed for bob's frame serves, though
    // alice and carol sent newer frames; participants match that mosaic.
    let mut again = frame("alice", 2, 2, 11);
    send(&ex, &mut again, 1).await.unwrap();
    let mut carol = frame("carol", 2, 2, 30);
    send(&ex, &mut carol, 3).await.unwrap();
    for docs in [&again, &carol] {
        assert_eq!(bands(docs, 2), vec![10, 20]);
        assert_eq!(participants(docs), ["alice", "bob"]);
        let (a, b) = (docs[0].tensor().unwrap(), first[0].tensor().unwrap());
        assert_eq!(
            a.data().as_ptr(),
            b.data().as_ptr(),
            "shared, not recomposed"
        );
    }
    // After the period the next frame composes the room as it is now.
    tokio::time::sleep(Duration::from_millis(550)).await;
    let mut later = frame("bob", 2, 2, 21);
    send(&ex, &mut later, 2).await.unwrap();
    assert_eq!(bands(&later, 2), vec![11, 21, 30]);
    assert_eq!(participants(&later), ["alice", "bob", "carol"]);
    let err = VideoChatExecutor::new(
        VideoChatConfig {
            mosaic_fps: -1.0,
            ..Default::default()
        },
        "agg",
    );
    assert!(err.is_err_and(|e| e.contains("mosaic_fps")));
}

#[tokio::test]
async fn held_bytes_follow_frames_mosaics_and_leaving_users() {
    static BUDGET: Budget = Budget::new(usize::MAX);
    let ex = executor(5.0).with_budget(&BUDGET);
    send(&ex, &mut frame("alice", 2, 4, 1), 1).await.unwrap();
    assert_eq!(BUDGET.held(), 2 * 4 * 3, "alice's frame");
    send(&ex, &mut frame("bob", 2, 4, 2), 2).await.unwrap();
    assert_eq!(
        BUDGET.held(),
        2 * (2 * 4 * 3) + 4 * 4 * 3,
        "two frames, a mosaic"
    );
    // A new frame replaces the old one, and the mosaic of the old state goes.
    send(&ex, &mut frame("bob", 4, 8, 3), 2).await.unwrap();
    assert_eq!(BUDGET.held(), 2 * (2 * 4 * 3) + 4 * 4 * 3);
    ex.stream_closed(StreamId(2)).await;
    assert_eq!(BUDGET.held(), 2 * 4 * 3 + 4 * 4 * 3, "bob's frame gone");
    ex.stream_closed(StreamId(1)).await;
    assert_eq!(BUDGET.held(), 0, "the room and its mosaic gone");
    // The stored frame is a buffer of its own, not a slice of the request.
    let mut big = frame("carol", 2, 4, 5);
    let request = big[0].tensor().unwrap().data().clone();
    send(&ex, &mut big, 3).await.unwrap();
    let state = ex.lock();
    let stored = &state.rooms[DEFAULT_ROOM].slots[0].picture.pixels().unwrap();
    assert_ne!(stored.as_ptr(), request.as_ptr());
}
