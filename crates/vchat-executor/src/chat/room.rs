//! The state of the chat's rooms: each user's latest frame in join order, who
//! each stream is, and how a new frame gets in (or is refused, changing
//! nothing).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vchat_core::budget::Held;
use vchat_core::{Error, StreamId};

use super::VideoChatExecutor;
use super::cache::{Cached, GridCanvas, Mosaic, Snapshot};
use super::config::Layout;
use super::picture::{Picture, Received};
use crate::Frame;
use crate::label;
use crate::mosaic::{checked_pixels, height_at_width, resize, width_at_height};
use crate::surface::Bgr;

/// How much earlier than the user's own next frame another user's must be
/// expected for [`VideoChatExecutor::drawn_soon`] to count on it: frame
/// times jitter by a few milliseconds.
const DRAWN_MARGIN: Duration = Duration::from_millis(2);

/// One user's place in a room.
pub(super) struct Slot {
    pub(super) user: String,
    /// The name on the tile.
    pub(super) name: String,
    /// The camera is paused: the tile is a "paused" tile.
    pub(super) paused: bool,
    pub(super) stream: StreamId,
    /// The latest frame, as stored for the layout (at the room's width for
    /// vertical, at its height for horizontal, as received for grid: a JPEG
    /// stays one until a composition draws it), in a buffer of its own.
    pub(super) picture: Picture,
    pub(super) last_seen: Instant,
    /// The time between its last two frames, once it has sent two.
    pub(super) interval: Option<Duration>,
    /// Changes with the tile's frame, name or pause: unique in its room, so
    /// the grid canvas knows which cells to redraw.
    pub(super) serial: u64,
    pub(super) _held: Held,
}

#[derive(Default)]
pub(super) struct Room {
    /// The room's frame width (vertical) or height (horizontal): the first user's,
    /// at most `max_side`.
    pub(super) side: usize,
    /// In join order.
    pub(super) slots: Vec<Slot>,
    /// Bumped on every change of the room's frames or users.
    pub(super) version: u64,
    pub(super) cache: Cached,
    /// When a request last set out to compose this room's mosaic (`mosaic_fps`).
    pub(super) composed_at: Option<Instant>,
    /// The last serial given to a slot.
    pub(super) serials: u64,
    /// The grid's canvas as last composed; out of the room while a request
    /// patches it.
    pub(super) canvas: Option<GridCanvas>,
}

impl Room {
    /// Removes the users without a frame for longer than `timeout`, but `keep`.
    pub(super) fn drop_idle(
        &mut self,
        name: &str,
        now: Instant,
        timeout: Duration,
        keep: Option<&str>,
    ) {
        let before = self.slots.len();
        self.slots.retain(|s| {
            let stay = keep == Some(s.user.as_str()) || now.duration_since(s.last_seen) <= timeout;
            if !stay {
                tracing::info!(room = name, user = %s.user, "User left (idle)");
            }
            stay
        });
        if self.slots.len() != before {
            self.version += 1;
        }
    }
}

/// The user and room a stream is.
pub(super) struct Identity {
    pub(super) user: String,
    pub(super) room: String,
}

/// Everything an executor keeps, behind one lock.
#[derive(Default)]
pub(super) struct State {
    pub(super) rooms: HashMap<String, Room>,
    /// Each stream's identity, from its first frame that got in until it ends.
    pub(super) streams: HashMap<StreamId, Identity>,
}

impl State {
    /// Removes idle users from every room, and the rooms left empty.
    pub(super) fn sweep(&mut self, now: Instant, timeout: Duration) {
        self.rooms.retain(|name, room| {
            room.drop_idle(name, now, timeout, None);
            !room.slots.is_empty()
        });
    }
}

pub(super) fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere must not take the chat down: the state is consistent
    // between statements, so a poisoned lock is still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every `timeout` (at most a second), drops idle users and empty rooms from
/// every room of `state`, until the executor is gone.
pub(super) async fn sweep_idle(state: std::sync::Weak<Mutex<State>>, timeout: Duration) {
    let mut tick = tokio::time::interval(timeout.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        lock_state(&state).sweep(Instant::now(), timeout);
    }
}

impl VideoChatExecutor {
    /// Stores `frame` as `user`'s latest and returns the room's state.
    pub(super) fn update(
        &self,
        room_name: &str,
        user: &str,
        stream: StreamId,
        frame: &Received,
        tile: &(String, bool),
    ) -> Result<Snapshot, Error> {
        let now = Instant::now();
        let mut state = self.lock();
        self.check_identity(&state.streams, stream, user, room_name)?;
        if !state.rooms.contains_key(room_name) && state.rooms.len() >= self.max_rooms {
            // Rooms whose users all went silent do not count.
            state.sweep(now, self.idle_timeout);
            if state.rooms.len() >= self.max_rooms {
                tracing::info!(
                    room = room_name,
                    user,
                    max_rooms = self.max_rooms,
                    "Room refused: too many rooms"
                );
                return Err(self.reject(format!(
                    "too many rooms: this executor holds at most {} at once (max_rooms); room \
                     {room_name:?} cannot open until another one empties",
                    self.max_rooms
                )));
            }
        }
        // One stream per user in a room: once a newer stream has taken the
        // user's tile, the older one (bound to the user already) is refused
        // instead of taking it back, so its end cannot remove the newer one.
        let taken = state
            .rooms
            .get(room_name)
            .is_some_and(|r| r.slots.iter().any(|s| s.user == user && s.stream != stream));
        if taken && stream != StreamId::UNKNOWN && state.streams.contains_key(&stream) {
            return Err(self.reject(format!("replaced by a newer connection of {user}")));
        }
        let room = state.rooms.entry(room_name.to_string()).or_default();
        let result = self.store(room, room_name, user, stream, frame, tile, now);
        // A refused first frame leaves no empty room behind.
        if room.slots.is_empty() {
            state.rooms.remove(room_name);
        }
        // Requests of an unknown stream come from many clients (a Jina gateway):
        // there is no one to bind.
        if result.is_ok() && stream != StreamId::UNKNOWN {
            state.streams.entry(stream).or_insert_with(|| Identity {
                user: user.to_string(),
                room: room_name.to_string(),
            });
        }
        result
    }

    /// Whether a frame of `user` arriving now will be drawn, as far as can be
    /// told before storing it: the number of users its room will have, when
    /// it will, `None` when it will most likely be replaced first.
    ///
    /// With `mosaic_fps`, the room's next composition is made by the first
    /// request at or after `composed_at + 1/mosaic_fps`. If the user's next
    /// frame (due one of their frame intervals from now) comes before then,
    /// or before any other user's (each due at their own interval), this
    /// frame is replaced before it is drawn. A wrong guess costs little
    /// either way: a frame not decoded now is decoded by the composition
    /// that draws it, so the guess leans that way.
    pub(super) fn drawn_soon(&self, room: &str, user: &str) -> Option<usize> {
        let state = self.lock();
        let Some(r) = state.rooms.get(room) else {
            return Some(1);
        };
        let slot = r.slots.iter().find(|s| s.user == user);
        let users = r.slots.len() + usize::from(slot.is_none());
        let (Some(period), Some(composed), Some(slot)) = (self.mosaic_period, r.composed_at, slot)
        else {
            return Some(users);
        };
        let now = Instant::now();
        let due = composed + period;
        if now >= due {
            // This request composes, or one already under way draws it.
            return Some(users);
        }
        let own_next = now + now.saturating_duration_since(slot.last_seen);
        // The first frame of another user at or after `due`; one whose
        // interval is not known yet may come at any time.
        let others_next = r
            .slots
            .iter()
            .filter(|s| s.user != user)
            .map(|s| match s.interval {
                Some(i) if !i.is_zero() => {
                    let next = s.last_seen + i;
                    let late = due.saturating_duration_since(next);
                    // Whole intervals until `due`, rounded up.
                    let k = late.as_nanos().div_ceil(i.as_nanos());
                    u32::try_from(k).map_or(Instant::now() + period * 2, |k| next + i * k)
                }
                _ => due,
            })
            .min();
        let composer = others_next.map_or(own_next, |o| o.min(own_next));
        (composer + DRAWN_MARGIN < own_next).then_some(users)
    }

    /// The part of [`update`](Self::update) within the room.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        room: &mut Room,
        room_name: &str,
        user: &str,
        stream: StreamId,
        frame: &Received,
        (name, paused): &(String, bool),
        now: Instant,
    ) -> Result<Snapshot, Error> {
        let (h, w) = frame.dims().map_err(|m| self.reject(m))?;
        if let Some(e) = room
            .slots
            .iter()
            .find(|s| s.user == user)
            .and_then(|s| s.picture.untold_failure())
        {
            return Err(self.undecodable(&e));
        }
        let before = room.version;
        room.drop_idle(room_name, now, self.idle_timeout, Some(user));
        let present = room.slots.iter().any(|s| s.user == user);
        if !present && room.slots.len() >= self.max_users {
            let full = room.slots.len();
            tracing::info!(
                room = room_name,
                user,
                max_users = self.max_users,
                "Room full"
            );
            return Err(self.reject(format!(
                "room {room_name:?} is full: {full} users, max_users is {}",
                self.max_users
            )));
        }
        let alone = room.slots.iter().all(|s| s.user == user);
        let side = if alone && *paused && room.side > 0 {
            // A paused camera's stand-in frame is tiny: the room keeps its side.
            room.side
        } else if alone && *paused {
            // A room opened by a paused user: a tile of a usable size.
            let min = label::PAUSED_MIN_SIDE;
            match self.layout {
                Layout::Vertical => w.max(min).min(self.max_side),
                Layout::Horizontal => h.max(min).min(self.max_side),
                Layout::Grid => 0,
            }
        } else if alone {
            // The room takes this user's size, within max_side.
            match self.layout {
                Layout::Vertical => w.min(self.max_side),
                Layout::Horizontal => h.min(self.max_side),
                Layout::Grid => 0,
            }
        } else {
            room.side
        };
        // The stored frame's size, checked before anything is allocated.
        let (height, width) = match self.layout {
            Layout::Vertical if w != side => (height_at_width(h, w, side), side),
            Layout::Horizontal if h != side => (side, width_at_height(h, w, side)),
            _ => (h, w),
        };
        if checked_pixels(height, width, self.max_frame_pixels).is_err() {
            let (what, side_name) = match self.layout {
                Layout::Horizontal => ("height", height),
                _ => ("width", width),
            };
            return Err(self.reject(format!(
                "a {h}x{w} frame at the room's {what} of {side_name} would be {height}x{width} \
                 pixels, over the limit of {} pixels (max_frame_pixels)",
                self.max_frame_pixels
            )));
        }
        if self.layout != Layout::Grid && !alone {
            // Frames of one room share its side: the mosaic is the sum of them.
            let others: usize = room
                .slots
                .iter()
                .filter(|s| s.user != user)
                .map(|s| {
                    let (h, w) = s.picture.dims();
                    h.saturating_mul(w)
                })
                .fold(0, usize::saturating_add);
            let total = others.saturating_add(height * width);
            if total > self.max_mosaic_pixels {
                return Err(self.reject(format!(
                    "room {room_name:?} is full: its mosaic would be {total} pixels with this \
                     {height}x{width} frame, over the limit of {} pixels (max_mosaic_pixels)",
                    self.max_mosaic_pixels
                )));
            }
        }
        let picture = match frame {
            // A grid keeps a JPEG as it came (and labels tiles as it composes).
            Received::Kept(p) if self.layout == Layout::Grid => p.clone(),
            _ => {
                let px = self.stored_pixels(frame, (h, w), (height, width), name, *paused)?;
                let stored = Frame::new(px, height, width);
                if self.layout == Layout::Grid {
                    Picture::bgr(stored)
                } else {
                    Picture::Pixels(stored)
                }
            }
        };
        room.side = side;
        let mut changed = room.version != before;
        match room.slots.iter_mut().find(|s| s.user == user) {
            Some(slot) => {
                // A paused source sends the same frame again: the room state, and
                // so the cached mosaic others may share, stays the same.
                let new =
                    !slot.picture.same_as(&picture) || slot.name != *name || slot.paused != *paused;
                if new {
                    room.serials += 1;
                    slot.serial = room.serials;
                }
                changed |= new;
                slot.name.clone_from(name);
                slot.paused = *paused;
                slot._held = self.budget.hold(picture.stored_len());
                slot.picture = picture;
                slot.stream = stream;
                slot.interval = Some(now.saturating_duration_since(slot.last_seen));
                slot.last_seen = now;
            }
            None => {
                changed = true;
                tracing::info!(room = room_name, user, "User joined");
                room.serials += 1;
                room.slots.push(Slot {
                    user: user.to_string(),
                    name: name.clone(),
                    paused: *paused,
                    stream,
                    _held: self.budget.hold(picture.stored_len()),
                    picture,
                    last_seen: now,
                    interval: None,
                    serial: room.serials,
                });
            }
        }
        if changed {
            room.version = before + 1;
        }
        Ok(self.snapshot(room, user, now))
    }

    /// The pixels of `frame` (`(h, w)`) as a stacked layout stores them, at
    /// `(height, width)`, labelled, in a buffer of their own.
    fn stored_pixels(
        &self,
        frame: &Received,
        (h, w): (usize, usize),
        (height, width): (usize, usize),
        name: &str,
        paused: bool,
    ) -> Result<Bytes, Error> {
        let owned = matches!(frame, Received::Pixels { owned: true, .. });
        let frame = frame
            .tensor(self.max_frame_pixels)
            .map_err(|e| self.reject(e.to_string()))?;
        // The label goes on the stored frame, once per frame: the stacked
        // layouts' mosaics stay byte concatenations. A grid scales its tiles,
        // so it labels them as it composes.
        let labelled = self.layout != Layout::Grid && (self.labels || paused);
        Ok(if labelled {
            let mut px = if paused {
                vec![0u8; height * width * 3]
            } else if (height, width) != (h, w) {
                Vec::from(
                    resize(frame.data(), h, w, height, width, self.max_frame_pixels)
                        .map_err(|e| self.reject(e.to_string()))?,
                )
            } else {
                frame.data().to_vec()
            };
            let shown = self.labels.then_some(name);
            self.labeller.draw(
                &mut Bgr::new(&mut px, width),
                (0, 0, height, width),
                shown,
                paused,
            );
            Bytes::from(px)
        } else if (height, width) != (h, w) {
            resize(frame.data(), h, w, height, width, self.max_frame_pixels)
                .map_err(|e| self.reject(e.to_string()))?
        } else if owned {
            frame.data().clone()
        } else {
            // A slice of the request would keep the whole request in memory, out
            // of sight of the budget, for as long as the frame is the latest.
            Bytes::copy_from_slice(frame.data())
        })
    }
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
            room.cache.mosaic.is_some() && room.composed_at.is_some_and(|t| now - t < p)
        });
        if recent && !current {
            return Snapshot {
                version: room.cache.version,
                participants: room.cache.participants.clone(),
                me: 0,
                tiles: Vec::new(),
                labels: Vec::new(),
                mosaic: room.cache.mosaic.clone(),
                jpeg: room.cache.jpeg.clone(),
                serials: Vec::new(),
                canvas: None.into(),
            };
        }
        if self.mosaic_period.is_some() && !current {
            // This request composes; the others use the previous mosaic meanwhile.
            room.composed_at = Some(now);
        }
        let shared = current;
        let mosaic = shared.then(|| room.cache.mosaic.clone()).flatten();
        // The request that composes a shared grid patches the room's canvas.
        let canvas = if self.layout == Layout::Grid && !self.highlight_self && mosaic.is_none() {
            room.canvas.take()
        } else {
            None
        };
        Snapshot {
            version: room.version,
            participants: room.slots.iter().map(|s| s.user.clone()).collect(),
            me: room.slots.iter().position(|s| s.user == user).unwrap_or(0),
            tiles: room.slots.iter().map(|s| s.picture.clone()).collect(),
            labels: room
                .slots
                .iter()
                .map(|s| (s.name.clone(), s.paused))
                .collect(),
            mosaic,
            jpeg: shared.then(|| room.cache.jpeg.clone()).flatten(),
            serials: room.slots.iter().map(|s| s.serial).collect(),
            canvas: canvas.into(),
        }
    }

    /// Keeps a composed or encoded mosaic of `version` for others asking for it:
    /// while it is the room's state, or with `mosaic_fps` while no newer one is
    /// kept.
    pub(super) fn remember(
        &self,
        room: &str,
        snap: &Snapshot,
        mosaic: &Mosaic,
        jpeg: Option<&Bytes>,
    ) {
        let version = snap.version;
        let mut state = self.lock();
        let Some(room) = state.rooms.get_mut(room) else {
            return;
        };
        // The newest canvas stays, whether or not its mosaic is kept.
        if let Some(canvas) = snap.canvas.take()
            && room
                .canvas
                .as_ref()
                .is_none_or(|c| c.version < canvas.version)
        {
            room.canvas = Some(canvas);
        }
        let latest = if self.mosaic_period.is_some() {
            version >= room.cache.version
        } else {
            version == room.version
        };
        if !latest {
            return;
        }
        if room.cache.version != version || room.cache.mosaic.is_none() {
            room.cache = Cached {
                version,
                participants: snap.participants.clone(),
                ..Cached::default()
            };
        }
        if room.cache.mosaic.is_none() {
            room.cache._held.push(self.budget.hold(mosaic.len()));
            room.cache.mosaic = Some(mosaic.clone());
        }
        if let Some(j) = jpeg
            && room.cache.jpeg.is_none()
        {
            room.cache._held.push(self.budget.hold(j.len()));
            room.cache.jpeg = Some(j.clone());
        }
    }
}
