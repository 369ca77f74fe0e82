//! Frames over a bound are refused, and nothing changes.

use super::*;

#[tokio::test]
async fn bad_frames_are_rejected_without_changing_state() {
    let ex = with(VideoChatConfig {
        max_frame_pixels: 100,
        ..Default::default()
    });
    send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
    let mut no_user = frame("x", 1, 2, 1);
    no_user[0].tags.clear();
    let err = send(&ex, &mut no_user, 2).await.unwrap_err().to_string();
    assert!(err.contains("tags.user"), "{err}");
    let gray = Tensor::image(1, 2, 1, Bytes::from(vec![0u8; 2])).unwrap();
    let mut g = DocumentArray(vec![Document::with_tensor(gray)]);
    g[0].set_tag_str("user", "bob");
    let err = send(&ex, &mut g, 2).await.unwrap_err().to_string();
    assert!(err.contains("[height, width, 3]"), "{err}");
    let mut t = DocumentArray(vec![Document::new()]);
    t[0].set_tag_str("user", "bob");
    assert!(
        send(&ex, &mut t, 2)
            .await
            .unwrap_err()
            .to_string()
            .contains("no frame")
    );
    let err = send(&ex, &mut frame("bob", 20, 20, 1), 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_frame_pixels"), "{err}");
    let err = send(&ex, &mut jpeg_frame("bob", 20, 20, 1), 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit of 100 pixels"), "{err}");
    let mut bad = jpeg_frame("bob", 2, 2, 1);
    bad[0].content = Some(Content::Blob(Bytes::from_static(b"nope")));
    assert!(send(&ex, &mut bad, 2).await.is_err());
    assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice"]);
}

/// The first user's frame is 3840 wide; the second's, 1 wide and 100,000
/// tall, would be 384,000,000x3840 at the room's width.
#[tokio::test]
async fn a_sliver_resized_past_max_frame_pixels_is_refused_and_nothing_changes() {
    let ex = executor(5.0);
    send(&ex, &mut frame("alice", 2, 3840, 1), 1).await.unwrap();
    let err = send(&ex, &mut frame("bob", 100_000, 1, 2), 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("384000000x3840") && err.contains("max_frame_pixels"),
        "{err}"
    );
    assert_eq!(ex.users(DEFAULT_ROOM), ["alice"]);
    assert!(!ex.lock().streams.contains_key(&StreamId(2)), "no binding");
    // Bob's stream goes on, with a frame that fits.
    let mut b = frame("bob", 4, 8, 2);
    send(&ex, &mut b, 2).await.unwrap();
    assert_eq!(b[0].tensor().unwrap().shape(), [2 + 1920, 3840, 3]);
    // Horizontal: the same with heights.
    let ex = with(VideoChatConfig {
        layout: Layout::Horizontal,
        ..Default::default()
    });
    send(&ex, &mut frame("alice", 2160, 2, 1), 1).await.unwrap();
    let err = send(&ex, &mut frame("bob", 1, 50_000, 2), 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_frame_pixels"), "{err}");
    assert_eq!(ex.users(DEFAULT_ROOM), ["alice"]);
}

#[tokio::test]
async fn the_side_of_a_room_is_at_most_max_side() {
    let ex = with(VideoChatConfig {
        max_side: 8,
        ..Default::default()
    });
    let mut a = frame("alice", 2, 32, 1);
    send(&ex, &mut a, 1).await.unwrap();
    assert_eq!(a[0].tensor().unwrap().shape(), [2, 32, 3], "alone: as sent");
    let mut b = frame("bob", 4, 8, 2);
    send(&ex, &mut b, 2).await.unwrap();
    // Alice's frame was stored scaled down to the room's 8 columns.
    assert_eq!(b[0].tensor().unwrap().shape(), [1 + 4, 8, 3]);
}

#[tokio::test]
async fn a_frame_that_would_make_the_mosaic_too_large_is_refused() {
    let ex = with(VideoChatConfig {
        max_mosaic_pixels: 3 * 10 * 10,
        ..Default::default()
    });
    for (u, s) in [("a", 1), ("b", 2), ("c", 3)] {
        send(&ex, &mut frame(u, 10, 10, 1), s).await.unwrap();
    }
    let err = send(&ex, &mut frame("d", 10, 10, 1), 4)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("400 pixels") && err.contains("max_mosaic_pixels"),
        "{err}"
    );
    // A present user may not grow past it either, but may stay as they are.
    let err = send(&ex, &mut frame("c", 20, 10, 1), 3).await.unwrap_err();
    assert!(err.to_string().contains("max_mosaic_pixels"), "{err}");
    let mut c = frame("c", 10, 10, 3);
    send(&ex, &mut c, 3).await.unwrap();
    assert_eq!(c[0].tensor().unwrap().shape(), [30, 10, 3]);
    // A grid canvas must fit the limit.
    let err = VideoChatExecutor::new(
        VideoChatConfig {
            layout: Layout::Grid,
            canvas: "100000x100000".into(),
            ..Default::default()
        },
        "agg",
    )
    .err()
    .unwrap();
    assert!(err.contains("max_mosaic_pixels"), "{err}");
    let err = VideoChatExecutor::new(
        VideoChatConfig {
            layout: Layout::Grid,
            canvas: format!("{}x{}", usize::MAX, usize::MAX),
            ..Default::default()
        },
        "agg",
    );
    assert!(err.is_err());
}
