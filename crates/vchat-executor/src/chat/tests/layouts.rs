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
        (alice.height, alice.width),
        (50, 75),
        "decoded at 1/4: the smallest scale that covers her 48x64 tile"
    );
    drop(state);
    let t = bob[0].tensor().unwrap();
    assert_eq!(t.shape(), [48, 64, 3]);
    // Alice's tile (left) is her grey, bob's (right) his.
    let px = |y: usize, x: usize| t.data()[(y * 64 + x) * 3];
    assert!(px(24, 16).abs_diff(200) < 10, "{}", px(24, 16));
    assert_eq!(px(24, 48), 50);
}
