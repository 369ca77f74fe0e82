//! The grid's canvas, patched where the room changed, against the whole
//! composition of the same room state.

use super::*;
use crate::chat::cache::Snapshot;

/// A small generator of test cases (xorshift), so every run is the same.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `room`'s mosaic composed whole, as without a kept canvas.
fn whole(ex: &VideoChatExecutor, room: &str) -> Vec<u8> {
    let snap = {
        let state = ex.lock();
        let r = &state.rooms[room];
        Snapshot {
            version: r.version,
            participants: r.slots.iter().map(|s| s.user.clone()).collect(),
            me: 0,
            tiles: r.slots.iter().map(|s| s.picture.clone()).collect(),
            labels: r.slots.iter().map(|s| (s.name.clone(), s.paused)).collect(),
            mosaic: None,
            jpeg: None,
            // No serials: the grid is composed whole.
            serials: Vec::new(),
            canvas: None.into(),
        }
    };
    let mosaic = ex.compose(&snap).unwrap().unwrap();
    mosaic.frame(ex.budget).bytes().to_vec()
}

/// A frame of `user` of random size and content, now and then paused or
/// renamed.
fn random_frame(rng: &mut Rng, user: usize) -> DocumentArray {
    let (h, w) = (1 + rng.below(40) as usize, 1 + rng.below(60) as usize);
    let px: Vec<u8> = (0..h * w * 3).map(|_| rng.below(256) as u8).collect();
    let mut d = Document::with_tensor(Tensor::image(h, w, 3, Bytes::from(px)).unwrap());
    d.set_tag_str("user", format!("u{user}"));
    if rng.below(6) == 0 {
        d.set_tag(
            PAUSED_TAG,
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        );
    }
    if rng.below(5) == 0 {
        d.set_tag_str(NAME_TAG, format!("name {}", rng.below(3)));
    }
    DocumentArray(vec![d])
}

#[tokio::test]
async fn a_patched_grid_is_the_whole_composition_of_the_same_room() {
    for labels in [true, false] {
        let ex = labelled(VideoChatConfig {
            layout: Layout::Grid,
            canvas: "96x128".into(),
            labels,
            highlight_self: false,
            ..Default::default()
        });
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut present = [false; 12];
        let mut patched = 0;
        for step in 0..600 {
            let user = rng.below(present.len() as u64) as usize;
            if present[user] && rng.below(8) == 0 {
                ex.stream_closed(StreamId(user as u64 + 1)).await;
                present[user] = false;
                continue;
            }
            let mut docs = random_frame(&mut rng, user);
            send(&ex, &mut docs, user as u64 + 1).await.unwrap();
            present[user] = true;
            let got = docs[0].tensor().unwrap().data().to_vec();
            assert_eq!(
                got,
                whole(&ex, DEFAULT_ROOM),
                "step {step}, labels {labels}: the patched canvas differs"
            );
            let state = ex.lock();
            let room = &state.rooms[DEFAULT_ROOM];
            patched += usize::from(room.canvas.is_some());
        }
        assert!(patched > 300, "the room kept its canvas ({patched})");
    }
}

/// Only the tile that changed is drawn again: the others' cells keep what the
/// canvas held, even where it was painted over behind the executor's back.
#[tokio::test]
async fn a_new_frame_redraws_only_its_own_cell() {
    let ex = with(VideoChatConfig {
        layout: Layout::Grid,
        canvas: "40x80".into(),
        ..Default::default()
    });
    send(&ex, &mut frame("a", 40, 40, 10), 1).await.unwrap();
    send(&ex, &mut frame("b", 40, 40, 20), 2).await.unwrap();
    // Mark a's cell in the kept canvas (its luma: grey 99 where a is grey
    // 10): a redraw of a would erase the mark.
    ex.lock()
        .rooms
        .get_mut(DEFAULT_ROOM)
        .unwrap()
        .canvas
        .as_mut()
        .unwrap()
        .picture
        .planes_mut()[0][0] = 99;
    let mut b = frame("b", 40, 40, 30);
    send(&ex, &mut b, 2).await.unwrap();
    let t = b[0].tensor().unwrap();
    assert_eq!(t.data()[0], 99, "a's cell was not drawn again");
    assert_eq!(t.data()[(20 * 80 + 60) * 3], 30, "b's cell was");
    // A third user changes the grid's shape: everything is drawn again.
    let mut c = frame("c", 40, 40, 40);
    send(&ex, &mut c, 3).await.unwrap();
    assert_eq!(
        c[0].tensor().unwrap().data().to_vec(),
        whole(&ex, DEFAULT_ROOM)
    );
}
