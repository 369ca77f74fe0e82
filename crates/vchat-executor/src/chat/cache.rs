//! The mosaic cache: a room state's composed mosaic and its JPEG, made once and
//! shared by every request that asks for that state; with `mosaic_fps`, shared
//! for a whole period whatever changed in it. A room keeps its [`Cached`]
//! mosaic; `room.rs` takes a request's [`Snapshot`] and remembers what it
//! composed. A grid room also keeps its [`GridCanvas`], so that a new room
//! state redraws only the tiles that changed in it.

use std::cell::Cell;

use bytes::Bytes;
use vchat_core::budget::Held;

use super::picture::Picture;
use crate::Frame;

/// A composed mosaic of one room state, kept so that every client asking for that
/// state shares one composition and one JPEG encoding.
#[derive(Default)]
pub(super) struct Cached {
    pub(super) version: u64,
    /// The users of the mosaic, in order.
    pub(super) participants: Vec<String>,
    pub(super) raw: Option<Frame>,
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
    pub(super) raw: Option<Frame>,
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
    /// The canvas, H×W×3 as the executor's `canvas` says.
    pub(super) pixels: Vec<u8>,
    /// The serial of the slot drawn in each cell, in mosaic order.
    pub(super) drawn: Vec<u64>,
    /// The room state it shows.
    pub(super) version: u64,
    pub(super) _held: Held,
}
