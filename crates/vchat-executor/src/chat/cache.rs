//! The mosaic cache: a room state's composed mosaic and its JPEG, made once and
//! shared by every request that asks for that state; with `mosaic_fps`, shared
//! for a whole period whatever changed in it. A room keeps its [`Cached`]
//! mosaic; `room.rs` takes a request's [`Snapshot`] and remembers what it
//! composed.

use bytes::Bytes;
use vchat_core::budget::Held;

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
    pub(super) tiles: Vec<Frame>,
    /// The name on each tile and whether it is paused, in mosaic order.
    pub(super) labels: Vec<(String, bool)>,
    /// The cached mosaic of this state, if there is one.
    pub(super) raw: Option<Frame>,
    /// The cached JPEG of this state, if there is one.
    pub(super) jpeg: Option<Bytes>,
}
