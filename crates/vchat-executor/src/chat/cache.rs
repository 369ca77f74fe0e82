//! The mosaic cache: a room state's composed mosaic and its JPEG, made once and
//! shared by every request that asks for that state; with `mosaic_fps`, shared
//! for a whole period whatever changed in it. A room keeps its [`Cached`]
//! mosaic; `room.rs` takes a request's [`Snapshot`] and remembers what it
//! composed. A grid room also keeps its [`GridCanvas`], so that a new room
//! state redraws only the tiles that changed in it.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use vchat_core::budget::{Budget, Held};
use vchat_core::yuv::Yuv420;
use vchat_core::{Error, jpeg};

use super::picture::Picture;
use crate::Frame;

/// A composed mosaic: the stacked layouts' BGR pixels, or a grid's canvas in
/// YCbCr 4:2:0, encoded as it is and converted to BGR (once) for the raw
/// clients that ask.
#[derive(Clone, Debug)]
pub(super) enum Mosaic {
    Bgr(Frame),
    Yuv(Arc<Planes>),
}

/// A grid's mosaic, and its BGR pixels once a raw client asked.
#[derive(Debug)]
pub(super) struct Planes {
    picture: Yuv420,
    bgr: OnceLock<(Frame, Held)>,
}

impl Mosaic {
    /// A grid's mosaic of `picture`.
    pub(super) fn planes(picture: Yuv420) -> Self {
        Mosaic::Yuv(Arc::new(Planes {
            picture,
            bgr: OnceLock::new(),
        }))
    }

    /// The bytes it holds, before any conversion.
    pub(super) fn len(&self) -> usize {
        match self {
            Mosaic::Bgr(f) => f.pixels.len(),
            Mosaic::Yuv(p) => p.picture.data().len(),
        }
    }

    /// The mosaic as BGR pixels: a grid's converted once, the conversion
    /// held in `budget` for as long as the mosaic is.
    pub(super) fn frame(&self, budget: &'static Budget) -> Frame {
        match self {
            Mosaic::Bgr(f) => f.clone(),
            Mosaic::Yuv(p) => {
                let (frame, _) = p.bgr.get_or_init(|| {
                    let (h, w) = p.picture.dims();
                    let px = p.picture.to_bgr();
                    let held = budget.hold(px.len());
                    (Frame::new(Bytes::from(px), h, w), held)
                });
                frame.clone()
            }
        }
    }

    /// The mosaic as a JPEG of `quality`.
    pub(super) fn jpeg(&self, quality: u8) -> Result<Bytes, Error> {
        match self {
            Mosaic::Bgr(f) => jpeg::encode_bgr(f.bytes(), f.height, f.width, quality),
            Mosaic::Yuv(p) => jpeg::encode_yuv420(&p.picture, quality),
        }
    }
}

/// A composed mosaic of one room state, kept so that every client asking for that
/// state shares one composition and one JPEG encoding.
#[derive(Default)]
pub(super) struct Cached {
    pub(super) version: u64,
    /// The users of the mosaic, in order.
    pub(super) participants: Vec<String>,
    pub(super) mosaic: Option<Mosaic>,
    pub(super) jpeg: Option<Bytes>,
    pub(super) _held: Vec<Held>,
}

/// What a request needs from its room, taken under the lock.
pub(super) struct Snapshot {
    pub(super) version: u64,
    pub(super) participants: Vec<String>,
    /// The requester's place in the mosaic.
    pub(super) me: usize,
    /// Each user's frame, in mosaic order.
    pub(super) tiles: Vec<Picture>,
    /// The name on each tile and whether it is paused, in mosaic order.
    pub(super) labels: Vec<(String, bool)>,
    /// The cached mosaic of this state, if there is one.
    pub(super) mosaic: Option<Mosaic>,
    /// The cached JPEG of this state, if there is one.
    pub(super) jpeg: Option<Bytes>,
    /// Each tile's [`Slot::serial`](super::room::Slot::serial), in mosaic order.
    pub(super) serials: Vec<u64>,
    /// The room's grid canvas, taken out of the room by the request that
    /// composes, patched outside the lock and put back with the mosaic.
    pub(super) canvas: Cell<Option<GridCanvas>>,
}

/// A grid room's canvas as last composed (without a highlighted tile), with
/// what each cell shows: a new room state redraws only the cells whose frame,
/// name or pause changed, and the result is the canvas a whole composition
/// would make. A change of the room's users (and so of the grid's shape)
/// draws it whole again.
pub(super) struct GridCanvas {
    /// The canvas, of the executor's `canvas` size.
    pub(super) picture: Yuv420,
    /// The serial of the slot drawn in each cell, in mosaic order.
    pub(super) drawn: Vec<u64>,
    /// The room state it shows.
    pub(super) version: u64,
    pub(super) _held: Held,
}
