//! Names on tiles, and paused users.

use super::*;

#[tokio::test]
async fn every_tile_carries_its_name_in_every_layout() {
    for layout in [Layout::Vertical, Layout::Horizontal, Layout::Grid] {
        let ex = labelled(VideoChatConfig {
            layout,
            canvas: "480x640".into(),
            ..Default::default()
        });
        send(&ex, &mut frame("alice", 240, 320, 100), 1)
            .await
            .unwrap();
        let mut b = frame("bob", 240, 320, 60);
        send(&ex, &mut b, 2).await.unwrap();
        let t = b[0].tensor().unwrap();
        // Each user's tile, and the tile height their label was sized for.
        let (tiles, tile_h) = match layout {
            Layout::Vertical => ([(0, 0, 240, 320), (240, 0, 240, 320)], 240),
            Layout::Horizontal => ([(0, 0, 240, 320), (0, 320, 240, 320)], 240),
            Layout::Grid => ([(120, 0, 240, 320), (120, 320, 240, 320)], 240),
        };
        for (tile, name) in tiles.into_iter().zip(["alice", "bob"]) {
            assert_eq!(
                white_in(t, tile),
                full_coverage(name, tile_h),
                "{layout:?}: {name}'s label"
            );
            // Only the bottom of the tile is written on.
            let (top, left, h, w) = tile;
            assert_eq!(white_in(t, (top, left, h / 2, w)), 0);
        }
        assert_ne!(full_coverage("alice", 240), full_coverage("bob", 240));
    }
}

#[tokio::test]
async fn a_user_alone_sees_their_name_and_tags_name_wins_over_the_user_id() {
    let ex = labelled(VideoChatConfig::default());
    let mut a = frame("u-1", 240, 320, 100);
    a[0].set_tag_str(NAME_TAG, "Alice Doe");
    send(&ex, &mut a, 1).await.unwrap();
    let t = a[0].tensor().unwrap();
    assert_eq!(t.shape(), [240, 320, 3]);
    assert_eq!(
        white_in(t, (0, 0, 240, 320)),
        full_coverage("Alice Doe", 240)
    );
    assert_eq!(
        participants(&a),
        ["u-1"],
        "the user id still names the stream"
    );
    let mut long = frame("u-1", 240, 320, 100);
    long[0].set_tag_str(NAME_TAG, "n".repeat(MAX_NAME_BYTES + 1));
    let err = send(&ex, &mut long, 1).await.unwrap_err().to_string();
    assert!(err.contains("tags.name is 129 bytes"), "{err}");
    let mut odd = frame("u-1", 240, 320, 100);
    odd[0].set_tag_str(NAME_TAG, "🙂\u{0}名前\u{10FFFF}");
    send(&ex, &mut odd, 1).await.unwrap();
}

#[tokio::test]
async fn labels_are_drawn_on_the_stored_frame_once() {
    let ex = labelled(VideoChatConfig::default());
    send(&ex, &mut frame("alice", 240, 320, 100), 1)
        .await
        .unwrap();
    send(&ex, &mut frame("bob", 240, 320, 60), 2).await.unwrap();
    let state = ex.lock();
    let slots = &state.rooms[DEFAULT_ROOM].slots;
    let t = Tensor::image(240, 320, 3, slots[0].picture.pixels().unwrap().clone()).unwrap();
    assert_eq!(white_in(&t, (0, 0, 240, 320)), full_coverage("alice", 240));
}

#[tokio::test]
async fn a_room_opened_by_a_paused_user_has_a_usable_side() {
    let paused = |user: &str, h, w| {
        let mut p = frame(user, h, w, 200);
        p[0].set_tag(
            PAUSED_TAG,
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        );
        p
    };
    let ex = labelled(VideoChatConfig::default());
    let mut b = paused("bob", 30, 40);
    send(&ex, &mut b, 1).await.unwrap();
    assert_eq!(b[0].tensor().unwrap().shape(), [240, 320, 3]);
    let mut a = frame("alice", 240, 320, 100);
    send(&ex, &mut a, 2).await.unwrap();
    assert_eq!(a[0].tensor().unwrap().shape(), [480, 320, 3]);
    // Paused after streaming: the room keeps the camera's side.
    let ex = labelled(VideoChatConfig::default());
    send(&ex, &mut frame("carol", 480, 640, 100), 1)
        .await
        .unwrap();
    let mut c = paused("carol", 60, 80);
    send(&ex, &mut c, 1).await.unwrap();
    assert_eq!(c[0].tensor().unwrap().shape(), [480, 640, 3]);
}

#[tokio::test]
async fn a_paused_user_is_a_dark_tile_with_their_name() {
    for layout in [Layout::Vertical, Layout::Grid] {
        let ex = labelled(VideoChatConfig {
            layout,
            ..Default::default()
        });
        send(&ex, &mut frame("alice", 240, 320, 100), 1)
            .await
            .unwrap();
        // A tiny frame stands for the paused camera.
        let mut p = frame("bob", 3, 4, 200);
        p[0].set_tag(
            PAUSED_TAG,
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        );
        send(&ex, &mut p, 2).await.unwrap();
        let t = p[0].tensor().unwrap().clone();
        let bob = match layout {
            Layout::Vertical => (240, 0, 240, 320),
            _ => (120, 320, 240, 320),
        };
        let w = t.shape()[1];
        let (top, left, h, tw) = bob;
        assert_eq!(&t.data()[(top * w + left) * 3..][..3], &label::PAUSED_BGR);
        assert!(white_in(&t, bob) >= full_coverage("bob", 240));
        // The word, in the middle of the tile.
        let middle = (top + h / 2 - 12..top + h / 2 + 12)
            .flat_map(|y| (left + tw / 2 - 40..left + tw / 2 + 40).map(move |x| (y, x)))
            .filter(|&(y, x)| t.data()[(y * w + x) * 3] >= 150)
            .count();
        assert!(middle > 30, "{layout:?}: {middle}");
        // Back from the pause: the camera again.
        let mut b = frame("bob", 240, 320, 60);
        send(&ex, &mut b, 2).await.unwrap();
        let t = b[0].tensor().unwrap();
        assert_eq!(t.data()[(top * w + left) * 3], 60);
        let mut bad = frame("bob", 240, 320, 60);
        bad[0].set_tag_str(PAUSED_TAG, "yes");
        assert!(send(&ex, &mut bad, 2).await.is_err());
    }
}
