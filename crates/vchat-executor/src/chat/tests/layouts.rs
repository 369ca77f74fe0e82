//! The layouts: sizes, placement and the highlighted tile.

use super::*;

#[tokio::test]
async fn other_widths_are_resized_keeping_aspect() {
    let ex = executor(5.0);
    send(&ex, &mut frame("alice", 2, 4, 1), 1).await.unwrap();
    let mut b = frame("bob", 4, 8, 2);
    send(&ex, &mut b, 2).await.unwrap();
    // bob's 4×8 becomes 2×4: the mosaic is 4 rows of width 4.
    assert_eq!(b[0].tensor().unwrap().shape(), &[4, 4, 3]);
    assert_eq!(bands(&b, 2), vec![1, 2]);
}

#[tokio::test]
async fn horizontal_resizes_to_the_room_height() {
    let ex = with(VideoChatConfig {
        layout: Layout::Horizontal,
        ..Default::default()
    });
    send(&ex, &mut frame("alice", 2, 3, 1), 1).await.unwrap();
    let mut b = frame("bob", 4, 2, 2);
    send(&ex, &mut b, 2).await.unwrap();
    // bob's 4×2 becomes 2×1: 2 rows of 3 + 1 pixels.
    let t = b[0].tensor().unwrap();
    assert_eq!(t.shape(), &[2, 4, 3]);
    let row: Vec<u8> = t.data()[..4 * 3].chunks(3).map(|p| p[0]).collect();
    assert_eq!(row, vec![1, 1, 1, 2]);
}

#[tokio::test]
async fn grid_keeps_its_size_as_users_come_and_go() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "60x80".into(),
        ..Default::default()
    });
    for (i, u) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let mut d = frame(u, 30 + i * 7, 40, 10 * i as u8 + 10);
        send(&ex, &mut d, i as u64).await.unwrap();
        assert_eq!(d[0].tensor().unwrap().shape(), &[60, 80, 3]);
    }
    ex.stream_closed(StreamId(0)).await;
    let mut d = frame("b", 10, 10, 1);
    send(&ex, &mut d, 1).await.unwrap();
    assert_eq!(d[0].tensor().unwrap().shape(), &[60, 80, 3]);
    assert_eq!(participants(&d), vec!["b", "c", "d", "e"]);
}

#[tokio::test]
async fn highlight_marks_own_tile_only() {
    let ex = with(VideoChatConfig {
        highlight_self: true,
        ..Default::default()
    });
    send(&ex, &mut frame("alice", 40, 40, 50), 1).await.unwrap();
    let mut b = frame("bob", 40, 40, 60);
    send(&ex, &mut b, 2).await.unwrap();
    let t = b[0].tensor().unwrap();
    let px = |y: usize, x: usize| &t.data()[(y * 40 + x) * 3..][..3];
    assert_eq!(px(0, 0), &[50, 50, 50], "alice's tile has no border");
    assert_eq!(px(40, 0), &HIGHLIGHT_BGR, "bob's tile has one");
    assert_eq!(px(60, 20), &[60, 60, 60]);
}

#[tokio::test]
async fn grid_decodes_jpeg_frames_to_their_tile() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "48x64".into(),
        ..Default::default()
    });
    send(&ex, &mut jpeg_frame("alice", 200, 300, 200), 1)
        .await
        .unwrap();
    let mut bob = frame("bob", 20, 30, 50);
    bob[0].set_tag_str(ACCEPT_TAG, "raw");
    send(&ex, &mut bob, 2).await.unwrap();
    let state = ex.lock();
    let alice = &state.rooms[DEFAULT_ROOM].slots[0];
    assert_eq!(
        alice.picture.decoded(),
        Some(Ok((50, 75))),
        "decoded at 1/4: the smallest scale that covers her 48x32 cell"
    );
    drop(state);
    let t = bob[0].tensor().unwrap();
    assert_eq!(t.shape(), [48, 64, 3]);
    // Alice's tile (left) is her grey, bob's (right) his.
    let px = |y: usize, x: usize| t.data()[(y * 64 + x) * 3];
    assert!(px(24, 16).abs_diff(200) < 10, "{}", px(24, 16));
    assert_eq!(px(24, 48), 50);
}

/// A textured JPEG of `user`: its scan data is long enough to cut.
fn textured_jpeg(user: &str, h: usize, w: usize) -> (DocumentArray, Bytes) {
    let px: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 251) as u8).collect();
    let j = jpeg::encode_bgr(&px, h, w, 90).unwrap();
    let mut d = Document::new();
    d.set_jpeg(j.clone());
    d.set_tag_str("user", user);
    (DocumentArray(vec![d]), j)
}

#[tokio::test]
async fn a_grid_decodes_only_the_jpegs_a_composition_draws() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "48x64".into(),
        // One composition in the test's lifetime after the first.
        mosaic_fps: 0.01,
        ..Default::default()
    });
    send(&ex, &mut jpeg_frame("alice", 40, 60, 200), 1)
        .await
        .unwrap();
    let first = ex.lock().rooms[DEFAULT_ROOM].slots[0].picture.clone();
    assert_eq!(
        first.decoded(),
        Some(Ok((40, 60))),
        "drawn by the first mosaic"
    );
    // Within the period, frames are stored and answered with that mosaic.
    for value in [10, 20, 30] {
        let mut f = jpeg_frame("alice", 40, 60, value);
        send(&ex, &mut f, 1).await.unwrap();
        let stored = ex.lock().rooms[DEFAULT_ROOM].slots[0].picture.clone();
        assert_eq!(
            stored.decoded(),
            None,
            "frame {value}: not drawn, not decoded"
        );
        let t = jpeg::decode_bgr(f[0].jpeg().unwrap(), 1 << 20).unwrap();
        assert!(
            t.0[(24 * 64 + 32) * 3].abs_diff(200) < 10,
            "the first mosaic"
        );
    }
}

/// A frame whose user's next one is due before anyone else's (after the
/// room's next composition is due) is replaced before a composition draws
/// it: it is kept undecoded. Alice sends every ~150 ms, bob every ~300 ms,
/// the room composes at most every 100 ms.
#[tokio::test]
async fn a_frame_replaced_before_the_next_composer_comes_is_not_decoded_ahead() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "48x64".into(),
        mosaic_fps: 10.0,
        ..Default::default()
    });
    let start = tokio::time::Instant::now();
    let at = |ms: u64| tokio::time::sleep_until(start + Duration::from_millis(ms));
    let decoded =
        |ex: &VideoChatExecutor, i: usize| ex.lock().rooms[DEFAULT_ROOM].slots[i].picture.decoded();
    send(&ex, &mut jpeg_frame("bob", 40, 60, 90), 2)
        .await
        .unwrap();
    send(&ex, &mut jpeg_frame("alice", 40, 60, 10), 1)
        .await
        .unwrap();
    at(150).await;
    // Her request composes (the period is over): drawn.
    send(&ex, &mut jpeg_frame("alice", 40, 60, 20), 1)
        .await
        .unwrap();
    assert!(decoded(&ex, 1).is_some());
    at(300).await;
    // Bob's composes; his interval is now 300 ms.
    send(&ex, &mut jpeg_frame("bob", 40, 60, 80), 2)
        .await
        .unwrap();
    // Alice's next (due at ~450) comes after the next composition is due
    // (~400), but before bob's (~600): hers composes, and draws that one.
    send(&ex, &mut jpeg_frame("alice", 40, 60, 30), 1)
        .await
        .unwrap();
    assert_eq!(decoded(&ex, 1), None, "not decoded ahead");
    at(450).await;
    let mut next = jpeg_frame("alice", 40, 60, 40);
    send(&ex, &mut next, 1).await.unwrap();
    assert!(decoded(&ex, 1).is_some(), "drawn by her own request");
}

/// A JPEG with a header and an end marker, its scan cut short in between.
fn cut_scan(good: &Bytes) -> Bytes {
    let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut cut = good[..sos + (good.len() - sos) / 3].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    Bytes::from(cut)
}

#[tokio::test]
async fn a_jpeg_drawn_at_once_is_decoded_by_its_request_and_refused_if_bad() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "64x192".into(),
        ..Default::default()
    });
    let (_, good) = textured_jpeg("alice", 64, 96);
    send(&ex, &mut frame("bob", 64, 96, 90), 2).await.unwrap();
    let mut bad = jpeg_frame("alice", 64, 96, 0);
    bad[0].set_jpeg(cut_scan(&good));
    let err = send(&ex, &mut bad, 1).await.unwrap_err().to_string();
    assert!(err.contains("not a valid JPEG"), "{err}");
    assert_eq!(ex.users(DEFAULT_ROOM), ["bob"], "nothing kept");
}

#[tokio::test]
async fn a_grid_refuses_a_truncated_jpeg_before_keeping_it() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        ..Default::default()
    });
    let (mut f, good) = textured_jpeg("alice", 64, 96);
    f[0].set_jpeg(good.slice(..good.len() / 2));
    let err = send(&ex, &mut f, 1).await.unwrap_err().to_string();
    assert!(err.contains("end-of-image"), "{err}");
    assert!(ex.users(DEFAULT_ROOM).is_empty(), "nothing kept");
}

#[tokio::test]
async fn a_bad_jpeg_drawn_later_is_a_black_tile_and_its_sender_is_told_once() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "64x192".into(),
        labels: false,
        mosaic_fps: 5.0,
        ..Default::default()
    });
    let (mut first, good) = textured_jpeg("alice", 64, 96);
    send(&ex, &mut frame("bob", 64, 96, 90), 2).await.unwrap();
    send(&ex, &mut first, 1).await.unwrap();
    // Right after her first, within bob's period: a newer frame of hers is
    // due before the next mosaic, so this one is kept undecoded.
    let mut bad = jpeg_frame("alice", 64, 96, 0);
    bad[0].set_jpeg(cut_scan(&good));
    send(&ex, &mut bad, 1).await.unwrap();
    let kept = ex.lock().rooms[DEFAULT_ROOM].slots[1].picture.clone();
    assert_eq!(kept.decoded(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Bob's request draws it: his cell (left, he came first) as it was,
    // alice's black.
    let mut b = frame("bob", 64, 96, 90);
    b[0].set_tag_str(ACCEPT_TAG, "raw");
    send(&ex, &mut b, 2).await.unwrap();
    let t = b[0].tensor().unwrap();
    let px = |y: usize, x: usize| t.data()[(y * 192 + x) * 3];
    assert_eq!((px(32, 48), px(32, 144)), (90, 0));
    // Her next frame is answered with the reason, once; the one after is in.
    let (mut next, _) = textured_jpeg("alice", 64, 96);
    let err = send(&ex, &mut next, 1).await.unwrap_err().to_string();
    assert!(err.contains("could not be decoded"), "{err}");
    let (mut again, _) = textured_jpeg("alice", 64, 96);
    send(&ex, &mut again, 1).await.unwrap();
}
