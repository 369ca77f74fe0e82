//! VideoChatExecutor: the executor of the video chat.
//!
//! Per room (`tags.room`, default one shared room) it keeps the latest frame of each
//! user (`tags.user`) in join order, and answers every frame with the mosaic of all
//! present users' latest frames. With the default `vertical` layout this is the
//! seed's vertical concatenation, or the frame itself while its user is alone;
//! `horizontal` places frames side by side; `grid` composes into a fixed
//! `canvas`, so the response size never changes as users come and go.
//!
//! A user leaves the mosaic when their stream ends (the gateway calls
//! [`Executor::stream_closed`]) or after `idle_timeout_s` without a frame; a room
//! is dropped, with its cached mosaic, when its last user leaves. A room holds at
//! most `max_users`; one more is rejected with an ERROR status. Every response
//! carries `tags.participants`, the room's users in mosaic order.
//!
//! A stream is one user in one room: the first frame it gets in with binds it to
//! that user and room until it ends, and a frame of another user or room on it
//! (or a request whose documents name several) gets an ERROR status, so one
//! peer cannot fill a room with made-up names or wander between rooms. A newer
//! stream of a user already in the room takes over their tile; the older
//! stream's frames are then refused ("replaced by a newer connection"), and its
//! end leaves the newer one in place. A request tagged `tags.viewer: true` gets
//! the room's mosaic without its frame being stored: a viewer is not in the room
//! (see `viewer.rs`).
//!
//! Frames are uint8 H×W×3 BGR tensors, or JPEG blobs (`mime_type: image/jpeg`).
//! Each response is in the encoding its request used, unless `tags.accept` says
//! `jpeg` or `raw`; a JPEG mosaic is encoded once per room state and shared by
//! every JPEG client that asks for that state.
//!
//! ```yaml
//! jtype: VideoChatExecutor
//! with:
//!   idle_timeout_s: 5
//!   max_users: 64
//!   layout: grid        # vertical (default) | horizontal | grid
//!   canvas: 480x640     # grid only: the mosaic's fixed size, HxW
//!   highlight_self: true
//!   jpeg_quality: 80
//!   mosaic_fps: 30      # compose a room's mosaic at most 30 times a second
//!   max_frame_pixels: 8294400     # a frame, as received and as stored
//!   max_side: 3840                # a room's width (vertical) or height (horizontal)
//!   max_mosaic_pixels: 19660800   # a room's whole mosaic: 64 users of 640x480
//!   max_rooms: 1024
//!   labels: true                  # each user's name on their tile
//!   label_cache_bytes: 1048576    # rasterized names kept
//! ```
//!
//! ## Names on tiles
//!
//! With `labels` (the default) each tile carries its user's name (`tags.name`,
//! else `tags.user`) in a dark box at its bottom-left: the executor draws it, so
//! every client of every door (the native window, the browser page, a Jina
//! client) shows the same names without drawing anything. In the stacked
//! layouts the name is drawn once on each stored frame, so a mosaic is still a
//! concatenation; the grid draws it on each scaled tile. A request tagged
//! `tags.paused: true` (a client whose camera is paused, keeping its stream
//! alive) shows its user as a dark "paused" tile with the name, whatever frame
//! it carries.
//!
//! With `mosaic_fps`, a room's mosaic is composed (and JPEG-encoded) at most that
//! many times a second, and every response in between shares the latest one: the
//! work per second no longer grows with users × frame rate, which is what lets
//! one grid hold a hundred users. A response may then lag its own frame by up to
//! one period; `tags.participants` always lists the users of the mosaic sent.
//! In the grid layout a JPEG frame is kept as received (its header, size and
//! end marker checked) and decoded straight to about its cell's size: by its
//! own request when it will be drawn, else (with `mosaic_fps`, when its
//! user's next frame is due before the request that makes the room's next
//! composition) by the composition that draws it, if any: a frame replaced
//! before that is never decoded. The grid is composed in YCbCr 4:2:0, which
//! JPEG tiles decode to and the mosaic's JPEG is encoded from; a raw client
//! gets it converted to BGR, once per mosaic. A frame decoded by its own request that fails is refused with an
//! ERROR status; one that fails later is drawn black, and its sender's next
//! request is answered with the reason, once.
//!
//! ## Bounds
//!
//! Every buffer the executor makes is sized from a peer's frame, so each is
//! bounded before it is allocated: a frame as received (`max_frame_pixels`, for a
//! JPEG from its header, before decoding), the same frame resized to the room's
//! side (`max_frame_pixels` again: the 1-pixel-wide, 100,000-pixel-tall frame in a
//! 3840-wide room would be 384,000,000 rows), the room's side (`max_side`; a
//! first frame wider than that is scaled down to it), a room's mosaic
//! (`max_mosaic_pixels`, the grid's `canvas` too) and the number of rooms
//! (`max_rooms`). A frame over any of them gets an ERROR status naming the
//! setting, and nothing changes. What is held, stored frames and cached
//! mosaics, is counted in the process's [`vchat_core::budget`].
//!
//! ## Where things are
//!
//! `config` (the `with:` keys and their defaults), `identity` (who a request
//! is), `room` (the rooms' state and how a frame gets in), `layout` (the
//! mosaic of each layout), `picture` (a stored frame: pixels, or a grid's
//! JPEG decoded when drawn), `cache` (one mosaic and one JPEG per room state) and
//! `encoding` (raw or JPEG answers); this file ties them into the `Executor`.

mod cache;
mod config;
mod encoding;
mod identity;
mod layout;
mod picture;
mod room;
#[cfg(test)]
mod tests;
mod viewer;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vchat_core::budget::{self, Budget};
use vchat_core::value::Kind;
use vchat_core::{
    DocumentArray, Error, Executor, ListValue, Registry, RequestContext, StreamId, Value,
    async_trait, string_value,
};

use crate::label::Labeller;
use crate::mosaic::checked_pixels;
pub use config::{
    ACCEPT_TAG, DEFAULT_CANVAS, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_MOSAIC_PIXELS, DEFAULT_MAX_ROOMS, DEFAULT_MAX_SIDE,
    DEFAULT_MAX_USERS, DEFAULT_ROOM, JTYPE, Layout, NAME_TAG, PARTICIPANTS_TAG, PAUSED_TAG,
    VIEWER_TAG, VideoChatConfig, parse_size,
};
use room::{State, lock_state, sweep_idle};

/// Adds the VideoChatExecutor to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, VideoChatExecutor::new);
}

/// The runtime of a VideoChatExecutor, built from a [`VideoChatConfig`].
pub struct VideoChatExecutor {
    name: String,
    idle_timeout: Duration,
    max_users: usize,
    layout: Layout,
    canvas: (usize, usize),
    highlight_self: bool,
    quality: u8,
    max_frame_pixels: usize,
    max_side: usize,
    max_mosaic_pixels: usize,
    max_rooms: usize,
    /// `1 / mosaic_fps`, when set and `highlight_self` is not.
    mosaic_period: Option<Duration>,
    labels: bool,
    labeller: Labeller,
    budget: &'static Budget,
    state: Arc<Mutex<State>>,
}

impl VideoChatExecutor {
    /// A new executor named `name` in its Flow. Within a Tokio runtime it also
    /// starts a task that drops idle users and empty rooms in rooms nobody sends
    /// to any more (it ends with the executor).
    pub fn new(config: VideoChatConfig, name: &str) -> Result<Self, String> {
        let canvas = config.validate()?;
        let idle_timeout = Duration::from_secs_f64(config.idle_timeout_s);
        let state = Arc::new(Mutex::new(State::default()));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep_idle(Arc::downgrade(&state), idle_timeout));
        }
        Ok(VideoChatExecutor {
            name: name.to_string(),
            idle_timeout,
            max_users: config.max_users,
            layout: config.layout,
            canvas,
            highlight_self: config.highlight_self,
            quality: config.jpeg_quality,
            max_frame_pixels: config.max_frame_pixels,
            max_side: config.max_side,
            max_mosaic_pixels: config.max_mosaic_pixels,
            max_rooms: config.max_rooms,
            mosaic_period: (config.mosaic_fps > 0.0 && !config.highlight_self)
                .then(|| Duration::from_secs_f64(1.0 / config.mosaic_fps)),
            labels: config.labels,
            labeller: Labeller::new(config.label_cache_bytes),
            budget: budget::global(),
            state,
        })
    }

    /// Accounts what this executor holds in `budget` instead of the process's
    /// [`budget::global`] (for an embedding that keeps its own count).
    pub fn with_budget(mut self, budget: &'static Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The users present in `room`, in mosaic order.
    pub fn users(&self, room: &str) -> Vec<String> {
        self.lock()
            .rooms
            .get(room)
            .map(|r| r.slots.iter().map(|s| s.user.clone()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.state)
    }

    /// What a user is told when their kept JPEG failed to decode as drawn.
    fn undecodable(&self, reason: &str) -> Error {
        self.reject(format!(
            "the frame could not be decoded, so it shows as a black tile ({reason})"
        ))
    }

    fn reject(&self, message: impl Into<String>) -> Error {
        Error::Rejected {
            executor: self.name.clone(),
            message: message.into(),
        }
    }
}

/// The room's participants as a list value.
fn participants_value(users: &[String]) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue {
            values: users.iter().map(|u| string_value(u.as_str())).collect(),
        })),
    }
}

#[async_trait]
impl Executor for VideoChatExecutor {
    /// A room's frames must all reach the same replica to be composed together.
    fn route_by(&self) -> Option<&str> {
        Some("room")
    }

    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let Some((user, room)) = self.request_identity(docs)? else {
            return Ok(());
        };
        if docs.iter().any(viewer::is_viewer) {
            for doc in docs.iter_mut() {
                self.view(doc, &room)?;
            }
            return Ok(());
        }
        // Before decoding anything; `update` checks again under its lock.
        self.check_identity(&self.lock().streams, ctx.stream, &user, &room)?;
        for doc in docs.iter_mut() {
            let (input, output) = self.encodings(doc)?;
            if let Some(t) = doc.tensor() {
                let (h, w) = t.frame_dims().map_err(|m| self.reject(m))?;
                if checked_pixels(h, w, self.max_frame_pixels).is_err() {
                    return Err(self.reject(format!(
                        "a {h}x{w} frame is over the limit of {} pixels (max_frame_pixels)",
                        self.max_frame_pixels
                    )));
                }
            }
            let frame = match self.received(doc) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(self.reject(e.to_string())),
                None => {
                    return Err(self.reject(
                        "document has no frame: send each frame as a uint8 [height, width, 3] \
                         tensor, or a JPEG blob with mime_type image/jpeg",
                    ));
                }
            };
            let dims = frame.dims().map_err(|m| self.reject(m))?;
            // A kept JPEG that will be drawn is decoded now, by its own
            // request, outside the lock: the work is spread over requests as
            // they come, and a frame that does not decode is refused before
            // anything changes.
            if let picture::Received::Kept(picture) = &frame
                && let Some(users) = self.drawn_soon(&room, &user)
            {
                picture.planes(self.cell(users), self.max_frame_pixels, self.budget);
                if let Some(e) = picture.failure() {
                    return Err(self.reject(e));
                }
            }
            let tile = self.tile_of(doc, &user)?;
            let snap = self.update(&room, &user, ctx.stream, &frame, &tile)?;
            doc.set_tag(PARTICIPANTS_TAG, participants_value(&snap.participants));
            // Composition and encoding happen outside the lock.
            let shared = !self.highlight_self;
            let mosaic = match &snap.mosaic {
                Some(m) if shared => Some(m.clone()),
                _ => self.compose(&snap)?,
            };
            match mosaic {
                // Alone: the frame itself, in the encoding asked for.
                None => {
                    let frame = frame
                        .tensor(self.max_frame_pixels)
                        .map_err(|e| self.reject(e.to_string()))?;
                    self.answer_alone(doc, frame, dims, (input, output))?
                }
                Some(m) => self.answer_mosaic(doc, &room, &snap, m, output, shared)?,
            }
            // Its own frame, drawn by this very request, did not decode.
            if let Some(e) = snap.tiles.get(snap.me).and_then(|p| p.untold_failure()) {
                return Err(self.undecodable(&e));
            }
        }
        Ok(())
    }

    async fn stream_closed(&self, stream: StreamId) {
        let mut state = self.lock();
        state.streams.remove(&stream);
        state.rooms.retain(|name, room| {
            let before = room.slots.len();
            room.slots.retain(|s| {
                let gone = s.stream == stream;
                if gone {
                    tracing::info!(room = %name, user = %s.user, "User left (stream ended)");
                }
                !gone
            });
            if room.slots.len() != before {
                room.version += 1;
            }
            !room.slots.is_empty()
        });
    }

    fn users_per_room(&self) -> Vec<(String, usize)> {
        self.lock()
            .rooms
            .iter()
            .map(|(name, room)| (name.clone(), room.slots.len()))
            .collect()
    }
}
