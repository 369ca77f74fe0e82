//! The mosaic cache: a room state's composed mosaic and its JPEG, made once and
//! shared by every request that asks for that state; with `mosaic_fps`, shared
//! for a whole period whatever changed in it.

use std::time::Instant;

use bytes::Bytes;
use vchat_core::budget::Held;

use super::VideoChatExecutor;
use super::room::Room;
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

impl VideoChatExecutor {
    /// What `user`'s request gets of `room` once its frame is stored: the cached
    /// mosaic when it is of the room's state (or, with `mosaic_fps`, within a
    /// period of the last composition), else the tiles to compose.
    pub(super) fn snapshot(&self, room: &mut Room, user: &str, now: Instant) -> Snapshot {
        let current = room.cache.version == room.version;
        // mosaic_fps: within one period of the last composition, the latest
        // mosaic serves, whatever changed since.
        let recent = self.mosaic_period.is_some_and(|p| {
            room.cache.raw.is_some() && room.composed_at.is_some_and(|t| now - t < p)
        });
        if recent && !current {
            return Snapshot {
                version: room.cache.version,
                participants: room.cache.participants.clone(),
                me: 0,
                tiles: Vec::new(),
                labels: Vec::new(),
                raw: room.cache.raw.clone(),
                jpeg: room.cache.jpeg.clone(),
            };
        }
        if self.mosaic_period.is_some() && !current {
            // This request composes; the others use the previous mosaic meanwhile.
            room.composed_at = Some(now);
        }
        let shared = current;
        Snapshot {
            version: room.version,
            participants: room.slots.iter().map(|s| s.user.clone()).collect(),
            me: room.slots.iter().position(|s| s.user == user).unwrap_or(0),
            tiles: room
                .slots
                .iter()
                .map(|s| Frame::new(s.frame.clone(), s.height, s.width))
                .collect(),
            labels: room
                .slots
                .iter()
                .map(|s| (s.name.clone(), s.paused))
                .collect(),
            raw: shared.then(|| room.cache.raw.clone()).flatten(),
            jpeg: shared.then(|| room.cache.jpeg.clone()).flatten(),
        }
    }

    /// Keeps a composed or encoded mosaic of `version` for others asking for it:
    /// while it is the room's state, or with `mosaic_fps` while no newer one is
    /// kept.
    pub(super) fn remember(&self, room: &str, snap: &Snapshot, raw: &Frame, jpeg: Option<&Bytes>) {
        let version = snap.version;
        let mut state = self.lock();
        let Some(room) = state.rooms.get_mut(room) else {
            return;
        };
        let latest = if self.mosaic_period.is_some() {
            version >= room.cache.version
        } else {
            version == room.version
        };
        if !latest {
            return;
        }
        if room.cache.version != version || room.cache.raw.is_none() {
            room.cache = Cached {
                version,
                participants: snap.participants.clone(),
                ..Cached::default()
            };
        }
        if room.cache.raw.is_none() {
            room.cache._held.push(self.budget.hold(raw.pixels.len()));
            room.cache.raw = Some(raw.clone());
        }
        if let Some(j) = jpeg
            && room.cache.jpeg.is_none()
        {
            room.cache._held.push(self.budget.hold(j.len()));
            room.cache.jpeg = Some(j.clone());
        }
    }
}
