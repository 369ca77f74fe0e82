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
//! the room's mosaic without its frame being stored: a viewer is not in the room.
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
//! In the grid layout JPEG frames are decoded straight to their tile's size.
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

pub mod builtin;
pub mod label;
mod mosaic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use vchat_core::budget::{self, Budget, Held};
use vchat_core::jpeg::{self, MIME_JPEG};
use vchat_core::value::Kind;
use vchat_core::{
    Content, DocumentArray, Error, Executor, ListValue, MAX_NAME_BYTES, RequestContext, StreamId,
    Tensor, Value, async_trait, string_value,
};

use label::{DEFAULT_LABEL_CACHE_BYTES, Labeller};
pub use mosaic::{
    HIGHLIGHT_BGR, MosaicError, Part, Tile, checked_pixels, compose_grid, draw_border, grid_rects,
    grid_shape, height_at_width, resize, resize_to_height, resize_to_width, stack_horizontally,
    stack_vertically, width_at_height,
};

/// The jtype this executor registers under.
pub const JTYPE: &str = "VideoChatExecutor";
/// Default seconds without a frame after which a user leaves.
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 5.0;
/// The room of frames that carry no `tags.room`.
pub const DEFAULT_ROOM: &str = "";
/// Default most users in one room.
pub const DEFAULT_MAX_USERS: usize = 64;
/// Default canvas of the grid layout, `HxW`.
pub const DEFAULT_CANVAS: &str = "480x640";
/// Default quality of JPEG mosaics.
pub const DEFAULT_JPEG_QUALITY: u8 = jpeg::DEFAULT_QUALITY;
/// Default largest frame accepted, and stored after resizing, in pixels (4K UHD).
pub const DEFAULT_MAX_FRAME_PIXELS: usize = 3840 * 2160;
/// Default largest side of a room (its width in the vertical layout, its height
/// in the horizontal one), in pixels: the long side of 4K UHD.
pub const DEFAULT_MAX_SIDE: usize = 3840;
/// Default largest mosaic of one room, in pixels: 64 users (the default
/// `max_users`) of 640x480, 59 MB of BGR.
pub const DEFAULT_MAX_MOSAIC_PIXELS: usize = 64 * 640 * 480;
/// Default most rooms at once.
pub const DEFAULT_MAX_ROOMS: usize = 1024;
/// The response tag listing the room's users in mosaic order.
pub const PARTICIPANTS_TAG: &str = "participants";
/// The request tag choosing the response encoding: `jpeg` or `raw`.
pub const ACCEPT_TAG: &str = "accept";
/// The request tag of the name drawn on a user's tile (else `tags.user`).
pub const NAME_TAG: &str = "name";
/// The request tag (`true`) of a viewer: the answer is the room's mosaic, and
/// nothing of the request is stored, so the viewer is not in the room. The
/// gateway sets it for an access token with `canPublish: false`.
pub const VIEWER_TAG: &str = "viewer";

/// The request tag (`true`) of a user whose camera is paused: their tile is a
/// dark "paused" tile, whatever frame the request carries.
pub const PAUSED_TAG: &str = "paused";

/// How the frames of a room are arranged.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Top to bottom in join order, every frame at the room's width (the seed's
    /// mosaic, byte concatenation); a user alone gets their own frame back.
    #[default]
    Vertical,
    /// Left to right in join order, every frame at the room's height; a user alone
    /// gets their own frame back.
    Horizontal,
    /// Rows of tiles in a fixed canvas, each frame scaled to fit its tile: the
    /// response size is the canvas's, however many users there are.
    Grid,
}

/// `with:` of a VideoChatExecutor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoChatConfig {
    /// Seconds without a frame after which a user leaves the mosaic (their stream
    /// may still be open, e.g. a frozen client). Must be positive.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: f64,
    /// Most users in one room; a frame from one more user gets an ERROR status.
    #[serde(default = "default_max_users")]
    pub max_users: usize,
    /// `vertical` (default), `horizontal` or `grid`.
    #[serde(default)]
    pub layout: Layout,
    /// Size of the grid's canvas, `HxW` (grid layout only); at most
    /// `max_mosaic_pixels`.
    #[serde(default = "default_canvas")]
    pub canvas: String,
    /// Draw a coloured border around the requesting user's own tile.
    #[serde(default)]
    pub highlight_self: bool,
    /// Quality (1 to 100) of the JPEG mosaics sent to JPEG clients.
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    /// Largest frame, in pixels (height × width), both as received and as stored
    /// after resizing to the room's side; a larger one gets an ERROR status. JPEGs
    /// are checked before decoding.
    #[serde(default = "default_max_frame_pixels")]
    pub max_frame_pixels: usize,
    /// Largest side of a room, in pixels: its width in the vertical layout, its
    /// height in the horizontal one. A room takes its first user's side; a first
    /// frame larger than this is scaled down to it.
    #[serde(default = "default_max_side")]
    pub max_side: usize,
    /// Largest mosaic of one room, in pixels; a frame that would make its room's
    /// mosaic larger gets an ERROR status.
    #[serde(default = "default_max_mosaic_pixels")]
    pub max_mosaic_pixels: usize,
    /// Most rooms at once; a frame for one more room gets an ERROR status.
    #[serde(default = "default_max_rooms")]
    pub max_rooms: usize,
    /// At most this many mosaics composed per room per second, shared by every
    /// response in between; 0 (the default) composes one for every new frame.
    /// Not with `highlight_self`, whose mosaics differ per user.
    #[serde(default)]
    pub mosaic_fps: f64,
    /// Draw each user's name (`tags.name`, else `tags.user`) at the bottom-left
    /// of their tile, in every layout and for every client.
    #[serde(default = "default_labels")]
    pub labels: bool,
    /// Bytes of rasterized names kept for the labels (least recently used out
    /// first); a name not kept is rasterized again when drawn.
    #[serde(default = "default_label_cache_bytes")]
    pub label_cache_bytes: usize,
}

fn default_labels() -> bool {
    true
}
fn default_label_cache_bytes() -> usize {
    DEFAULT_LABEL_CACHE_BYTES
}

fn default_idle_timeout_s() -> f64 {
    DEFAULT_IDLE_TIMEOUT_S
}
fn default_max_users() -> usize {
    DEFAULT_MAX_USERS
}
fn default_canvas() -> String {
    DEFAULT_CANVAS.to_string()
}
fn default_jpeg_quality() -> u8 {
    DEFAULT_JPEG_QUALITY
}
fn default_max_frame_pixels() -> usize {
    DEFAULT_MAX_FRAME_PIXELS
}
fn default_max_side() -> usize {
    DEFAULT_MAX_SIDE
}
fn default_max_mosaic_pixels() -> usize {
    DEFAULT_MAX_MOSAIC_PIXELS
}
fn default_max_rooms() -> usize {
    DEFAULT_MAX_ROOMS
}

impl Default for VideoChatConfig {
    fn default() -> Self {
        VideoChatConfig {
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            max_users: DEFAULT_MAX_USERS,
            layout: Layout::Vertical,
            canvas: DEFAULT_CANVAS.to_string(),
            highlight_self: false,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            max_frame_pixels: DEFAULT_MAX_FRAME_PIXELS,
            max_side: DEFAULT_MAX_SIDE,
            max_mosaic_pixels: DEFAULT_MAX_MOSAIC_PIXELS,
            max_rooms: DEFAULT_MAX_ROOMS,
            mosaic_fps: 0.0,
            labels: true,
            label_cache_bytes: DEFAULT_LABEL_CACHE_BYTES,
        }
    }
}

/// Parses `HxW` (e.g. `480x640`).
pub fn parse_size(s: &str) -> Option<(usize, usize)> {
    let (h, w) = s.trim().split_once(['x', 'X'])?;
    let (h, w) = (h.trim().parse().ok()?, w.trim().parse().ok()?);
    (h > 0 && w > 0).then_some((h, w))
}

/// One user's place in a room.
struct Slot {
    user: String,
    /// The name on the tile.
    name: String,
    /// The camera is paused: the tile is a "paused" tile.
    paused: bool,
    stream: StreamId,
    /// The latest frame, as stored for the layout (at the room's width for
    /// vertical, at its height for horizontal, as received for grid), in a
    /// buffer of its own.
    frame: Bytes,
    height: usize,
    width: usize,
    last_seen: Instant,
    _held: Held,
}

/// A composed mosaic of one room state, kept so that every client asking for that
/// state shares one composition and one JPEG encoding.
#[derive(Default)]
struct Cached {
    version: u64,
    /// The users of the mosaic, in order.
    participants: Vec<String>,
    raw: Option<(Bytes, usize, usize)>,
    jpeg: Option<Bytes>,
    _held: Vec<Held>,
}

#[derive(Default)]
struct Room {
    /// The room's frame width (vertical) or height (horizontal): the first user's,
    /// at most `max_side`.
    side: usize,
    /// In join order.
    slots: Vec<Slot>,
    /// Bumped on every change of the room's frames or users.
    version: u64,
    cache: Cached,
    /// When a request last set out to compose this room's mosaic (`mosaic_fps`).
    composed_at: Option<Instant>,
}

impl Room {
    /// Removes the users without a frame for longer than `timeout`, but `keep`.
    fn drop_idle(&mut self, name: &str, now: Instant, timeout: Duration, keep: Option<&str>) {
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
struct Identity {
    user: String,
    room: String,
}

/// Everything an executor keeps, behind one lock.
#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// Each stream's identity, from its first frame that got in until it ends.
    streams: HashMap<StreamId, Identity>,
}

impl State {
    /// Removes idle users from every room, and the rooms left empty.
    fn sweep(&mut self, now: Instant, timeout: Duration) {
        self.rooms.retain(|name, room| {
            room.drop_idle(name, now, timeout, None);
            !room.slots.is_empty()
        });
    }
}

fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere must not take the chat down: the state is consistent
    // between statements, so a poisoned lock is still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The response encoding of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Raw,
    Jpeg,
}

/// What a request needs from its room, taken under the lock.
struct Snapshot {
    version: u64,
    participants: Vec<String>,
    me: usize,
    /// `(pixels, height, width)` of each user, in mosaic order.
    tiles: Vec<(Bytes, usize, usize)>,
    /// The name on each tile and whether it is paused, in mosaic order.
    labels: Vec<(String, bool)>,
    raw: Option<(Bytes, usize, usize)>,
    jpeg: Option<Bytes>,
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
        if !(config.idle_timeout_s.is_finite() && config.idle_timeout_s > 0.0) {
            return Err(format!(
                "with.idle_timeout_s must be a positive number of seconds, got {}",
                config.idle_timeout_s
            ));
        }
        if config.max_users == 0 {
            return Err("with.max_users must be at least 1".into());
        }
        let canvas = parse_size(&config.canvas).ok_or_else(|| {
            format!(
                "with.canvas must be HxW, e.g. 480x640, got {:?}",
                config.canvas
            )
        })?;
        if !(1..=100).contains(&config.jpeg_quality) {
            return Err(format!(
                "with.jpeg_quality must be 1 to 100, got {}",
                config.jpeg_quality
            ));
        }
        for (key, value) in [
            ("max_frame_pixels", config.max_frame_pixels),
            ("max_side", config.max_side),
            ("max_mosaic_pixels", config.max_mosaic_pixels),
            ("max_rooms", config.max_rooms),
        ] {
            if value == 0 {
                return Err(format!("with.{key} must be at least 1"));
            }
        }
        if config.layout == Layout::Grid
            && checked_pixels(canvas.0, canvas.1, config.max_mosaic_pixels).is_err()
        {
            return Err(format!(
                "with.canvas {}x{} is over max_mosaic_pixels ({})",
                canvas.0, canvas.1, config.max_mosaic_pixels
            ));
        }
        if !(config.mosaic_fps.is_finite() && config.mosaic_fps >= 0.0) {
            return Err(format!(
                "with.mosaic_fps must be 0 (off) or a positive rate, got {}",
                config.mosaic_fps
            ));
        }
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

    fn reject(&self, message: impl Into<String>) -> Error {
        Error::Rejected {
            executor: self.name.clone(),
            message: message.into(),
        }
    }

    /// The user and room of `doc`, checked.
    fn identity_of(&self, doc: &vchat_core::Document) -> Result<(String, String), Error> {
        let user = match doc.tag_str("user") {
            Some("") => return Err(self.reject("tags.user is empty")),
            Some(u) => u,
            None if doc.tags.contains_key("user") => {
                return Err(self.reject("tags.user must be a string"));
            }
            None => {
                return Err(self.reject("missing tags.user: every frame needs the tag user=<name>"));
            }
        };
        let room = match (doc.tag_str("room"), doc.tags.contains_key("room")) {
            (Some(r), _) => r,
            (None, false) => DEFAULT_ROOM,
            (None, true) => return Err(self.reject("tags.room must be a string")),
        };
        for (tag, name) in [("user", user), ("room", room)] {
            if name.len() > MAX_NAME_BYTES {
                return Err(self.reject(format!(
                    "tags.{tag} is {} bytes, over the limit of {MAX_NAME_BYTES} bytes",
                    name.len()
                )));
            }
        }
        Ok((user.to_string(), room.to_string()))
    }

    /// The name on the tile of `doc`'s user (`tags.name`, else `user`), and
    /// whether their camera is paused (`tags.paused`), checked.
    fn tile_of(&self, doc: &vchat_core::Document, user: &str) -> Result<(String, bool), Error> {
        let name = match (doc.tag_str(NAME_TAG), doc.tags.contains_key(NAME_TAG)) {
            (Some(n), _) if n.len() > MAX_NAME_BYTES => {
                return Err(self.reject(format!(
                    "tags.{NAME_TAG} is {} bytes, over the limit of {MAX_NAME_BYTES} bytes",
                    n.len()
                )));
            }
            (Some(n), _) if !n.is_empty() => n,
            (Some(_), _) | (None, false) => user,
            (None, true) => return Err(self.reject("tags.name must be a string")),
        };
        let paused = match doc.tags.get(PAUSED_TAG).map(|v| v.kind.as_ref()) {
            None | Some(None) => false,
            Some(Some(Kind::BoolValue(b))) => *b,
            Some(Some(_)) => return Err(self.reject("tags.paused must be true or false")),
        };
        Ok((name.to_string(), paused))
    }

    /// `Err` when `stream` is already someone else, or somewhere else (never for
    /// [`StreamId::UNKNOWN`], which is not bound).
    fn check_identity(
        &self,
        streams: &HashMap<StreamId, Identity>,
        stream: StreamId,
        user: &str,
        room: &str,
    ) -> Result<(), Error> {
        match streams.get(&stream) {
            Some(id) if id.user != user || id.room != room => {
                // Not at info: a peer could make one line per frame it sends.
                tracing::debug!(
                    stream = stream.0,
                    user = %id.user,
                    room = %id.room,
                    other_user = user,
                    other_room = room,
                    "Frame refused: a stream cannot change its user or room"
                );
                Err(self.reject(format!(
                    "this stream is {:?} in room {:?}; a stream cannot change its user or room \
                     (got {user:?} in room {room:?}): open another stream",
                    id.user, id.room
                )))
            }
            _ => Ok(()),
        }
    }

    /// Stores `frame` as `user`'s latest and returns the room's state. `owned`:
    /// the frame's buffer is its own (decoded here), not a slice of a request
    /// that would be kept alive with it.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        room_name: &str,
        user: &str,
        stream: StreamId,
        frame: &Tensor,
        (h, w): (usize, usize),
        owned: bool,
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
        let result = self.store(
            room,
            room_name,
            user,
            stream,
            frame,
            (h, w),
            owned,
            tile,
            now,
        );
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

    /// The part of [`update`](Self::update) within the room.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        room: &mut Room,
        room_name: &str,
        user: &str,
        stream: StreamId,
        frame: &Tensor,
        (h, w): (usize, usize),
        owned: bool,
        (name, paused): &(String, bool),
        now: Instant,
    ) -> Result<Snapshot, Error> {
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
                .map(|s| s.height * s.width)
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
        // The label goes on the stored frame, once per frame: the stacked
        // layouts' mosaics stay byte concatenations. A grid scales its tiles,
        // so it labels them as it composes.
        let labelled = self.layout != Layout::Grid && (self.labels || *paused);
        let data = if labelled {
            let mut px = if *paused {
                vec![0u8; height * width * 3]
            } else if (height, width) != (h, w) {
                Vec::from(
                    resize(frame.data(), h, w, height, width, self.max_frame_pixels)
                        .map_err(|e| self.reject(e.to_string()))?,
                )
            } else {
                frame.data().to_vec()
            };
            let shown = self.labels.then_some(name.as_str());
            self.labeller
                .draw(&mut px, width, (0, 0, height, width), shown, *paused);
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
        };
        room.side = side;
        let mut changed = room.version != before;
        match room.slots.iter_mut().find(|s| s.user == user) {
            Some(slot) => {
                // A paused source sends the same frame again: the room state, and
                // so the cached mosaic others may share, stays the same.
                changed |= (slot.height, slot.width) != (height, width)
                    || slot.frame != data
                    || slot.name != *name
                    || slot.paused != *paused;
                slot.name.clone_from(name);
                slot.paused = *paused;
                slot._held = self.budget.hold(data.len());
                slot.frame = data;
                slot.height = height;
                slot.width = width;
                slot.stream = stream;
                slot.last_seen = now;
            }
            None => {
                changed = true;
                tracing::info!(room = room_name, user, "User joined");
                room.slots.push(Slot {
                    user: user.to_string(),
                    name: name.clone(),
                    paused: *paused,
                    stream,
                    _held: self.budget.hold(data.len()),
                    frame: data,
                    height,
                    width,
                    last_seen: now,
                });
            }
        }
        if changed {
            room.version = before + 1;
        }
        let current = room.cache.version == room.version;
        // mosaic_fps: within one period of the last composition, the latest
        // mosaic serves, whatever changed since.
        let recent = self.mosaic_period.is_some_and(|p| {
            room.cache.raw.is_some() && room.composed_at.is_some_and(|t| now - t < p)
        });
        if recent && !current {
            return Ok(Snapshot {
                version: room.cache.version,
                participants: room.cache.participants.clone(),
                me: 0,
                tiles: Vec::new(),
                labels: Vec::new(),
                raw: room.cache.raw.clone(),
                jpeg: room.cache.jpeg.clone(),
            });
        }
        if self.mosaic_period.is_some() && !current {
            // This request composes; the others use the previous mosaic meanwhile.
            room.composed_at = Some(now);
        }
        let shared = current;
        Ok(Snapshot {
            version: room.version,
            participants: room.slots.iter().map(|s| s.user.clone()).collect(),
            me: room.slots.iter().position(|s| s.user == user).unwrap_or(0),
            tiles: room
                .slots
                .iter()
                .map(|s| (s.frame.clone(), s.height, s.width))
                .collect(),
            labels: room
                .slots
                .iter()
                .map(|s| (s.name.clone(), s.paused))
                .collect(),
            raw: shared.then(|| room.cache.raw.clone()).flatten(),
            jpeg: shared.then(|| room.cache.jpeg.clone()).flatten(),
        })
    }

    /// The frame of `doc`: a grid decodes a JPEG straight to about its tile's
    /// size in `room`, the other layouts decode it whole.
    fn frame_of(
        &self,
        doc: &vchat_core::Document,
        room: &str,
        user: &str,
    ) -> Option<Result<Tensor, Error>> {
        let Some(Content::Blob(blob)) = &doc.content else {
            return jpeg::frame_of(doc, self.max_frame_pixels);
        };
        if self.layout != Layout::Grid || !jpeg::is_jpeg(doc) {
            return jpeg::frame_of(doc, self.max_frame_pixels);
        }
        let users = self.lock().rooms.get(room).map_or(1, |r| {
            r.slots.len() + usize::from(!r.slots.iter().any(|s| s.user == user))
        });
        let (rows, cols) = grid_shape(users);
        let cell = (self.canvas.0 / rows, self.canvas.1 / cols);
        Some(
            jpeg::decode_bgr_to_fit(blob, self.max_frame_pixels, cell)
                .and_then(|(px, h, w)| Tensor::image(h, w, 3, px)),
        )
    }

    /// Keeps a composed or encoded mosaic of `version` for others asking for it:
    /// while it is the room's state, or with `mosaic_fps` while no newer one is
    /// kept.
    fn remember(
        &self,
        room: &str,
        snap: &Snapshot,
        raw: &(Bytes, usize, usize),
        jpeg: Option<&Bytes>,
    ) {
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
            room.cache._held.push(self.budget.hold(raw.0.len()));
            room.cache.raw = Some(raw.clone());
        }
        if let Some(j) = jpeg
            && room.cache.jpeg.is_none()
        {
            room.cache._held.push(self.budget.hold(j.len()));
            room.cache.jpeg = Some(j.clone());
        }
    }

    /// The mosaic of `snap` as seen by its requester: `None` while the requester
    /// is alone in a layout that answers with the frame itself.
    fn compose(&self, snap: &Snapshot) -> Result<Option<(Bytes, usize, usize)>, Error> {
        let highlight = self
            .highlight_self
            .then_some(snap.me)
            .filter(|&me| me < snap.tiles.len());
        let limit = self.max_mosaic_pixels;
        let failed = |e: MosaicError| self.reject(format!("cannot compose the mosaic: {e}"));
        let mosaic = match self.layout {
            // Alone, a labelled (or paused) user gets their stored tile back.
            Layout::Vertical | Layout::Horizontal
                if snap.tiles.len() == 1
                    && (self.labels || snap.labels.first().is_some_and(|l| l.1)) =>
            {
                snap.tiles[0].clone()
            }
            Layout::Vertical | Layout::Horizontal if snap.tiles.len() < 2 => return Ok(None),
            Layout::Vertical => {
                let (data, height, width) = stack_vertically(&snap.tiles, limit).map_err(failed)?;
                let data = match highlight {
                    None => data,
                    Some(me) => {
                        let top = snap.tiles[..me].iter().map(|t| t.1).sum();
                        let mut m = BytesMut::from(data);
                        draw_border(&mut m, width, (top, 0, snap.tiles[me].1, width));
                        m.freeze()
                    }
                };
                (data, height, width)
            }
            Layout::Horizontal => {
                let (data, height, width) =
                    stack_horizontally(&snap.tiles, limit).map_err(failed)?;
                let data = match highlight {
                    None => data,
                    Some(me) => {
                        let left = snap.tiles[..me].iter().map(|t| t.2).sum();
                        let mut m = BytesMut::from(data);
                        draw_border(&mut m, width, (0, left, height, snap.tiles[me].2));
                        m.freeze()
                    }
                };
                (data, height, width)
            }
            Layout::Grid => {
                let tiles: Vec<Tile<'_>> =
                    snap.tiles.iter().map(|t| (&t.0[..], t.1, t.2)).collect();
                let (ch, cw) = self.canvas;
                let data = compose_grid(&tiles, ch, cw, highlight, limit).map_err(failed)?;
                let data = if self.labels || snap.labels.iter().any(|l| l.1) {
                    let dims: Vec<(usize, usize)> = snap.tiles.iter().map(|t| (t.1, t.2)).collect();
                    let mut m = BytesMut::from(data);
                    for (rect, (name, paused)) in
                        grid_rects(&dims, ch, cw).into_iter().zip(&snap.labels)
                    {
                        let shown = self.labels.then_some(name.as_str());
                        self.labeller.draw(&mut m, cw, rect, shown, *paused);
                    }
                    m.freeze()
                } else {
                    data
                };
                (data, ch, cw)
            }
        };
        Ok(Some(mosaic))
    }
}

impl VideoChatExecutor {
    /// Answers a viewer's `doc` with `room`'s mosaic as it is, storing nothing:
    /// no frame when the room is empty.
    fn view(&self, doc: &mut vchat_core::Document, room: &str) -> Result<(), Error> {
        let output = match doc.tag_str(ACCEPT_TAG) {
            Some(a) if a.eq_ignore_ascii_case("raw") => Encoding::Raw,
            Some(a) if a.eq_ignore_ascii_case("jpeg") => Encoding::Jpeg,
            _ if jpeg::is_jpeg(doc) => Encoding::Jpeg,
            _ => Encoding::Raw,
        };
        let snap = self.lock().rooms.get(room).map(|r| Snapshot {
            version: r.version,
            participants: r.slots.iter().map(|s| s.user.clone()).collect(),
            // Nobody's tile is the viewer's.
            me: usize::MAX,
            tiles: r
                .slots
                .iter()
                .map(|s| (s.frame.clone(), s.height, s.width))
                .collect(),
            labels: r.slots.iter().map(|s| (s.name.clone(), s.paused)).collect(),
            raw: None,
            jpeg: None,
        });
        doc.content = None;
        doc.mime_type.clear();
        let snap = snap.filter(|s| !s.tiles.is_empty());
        doc.set_tag(
            PARTICIPANTS_TAG,
            participants_value(snap.as_ref().map_or(&[][..], |s| &s.participants)),
        );
        let Some(snap) = snap else {
            return Ok(());
        };
        let (data, h, w) = match self.compose(&snap)? {
            Some(m) => m,
            None => snap.tiles[0].clone(),
        };
        match output {
            Encoding::Raw => {
                let t = Tensor::image(h, w, 3, data)
                    .map_err(|e| self.reject(format!("internal: {e}")))?;
                doc.set_tensor(t);
            }
            Encoding::Jpeg => {
                let j = jpeg::encode_bgr(&data, h, w, self.quality)
                    .map_err(|e| self.reject(e.to_string()))?;
                doc.content = Some(Content::Blob(j));
                doc.mime_type = MIME_JPEG.to_string();
            }
        }
        Ok(())
    }
}

/// Every `timeout` (at most a second), drops idle users and empty rooms from
/// every room of `state`, until the executor is gone.
async fn sweep_idle(state: std::sync::Weak<Mutex<State>>, timeout: Duration) {
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
        // One request is one user in one room, checked before anything changes.
        let mut who: Option<(String, String)> = None;
        for doc in docs.iter() {
            let (user, room) = self.identity_of(doc)?;
            match &who {
                None => who = Some((user, room)),
                Some((u, _)) if *u != user => {
                    return Err(self.reject(format!(
                        "a request carries frames of several users ({u:?} and {user:?}): \
                         send each user's frames on a stream of their own"
                    )));
                }
                Some((_, r)) if *r != room => {
                    return Err(self.reject(format!(
                        "a request names several rooms ({r:?} and {room:?}): a stream is one \
                         user in one room"
                    )));
                }
                Some(_) => {}
            }
        }
        let Some((user, room)) = who else {
            return Ok(());
        };
        if docs.iter().any(|d| {
            matches!(
                d.tags.get(VIEWER_TAG).and_then(|v| v.kind.as_ref()),
                Some(Kind::BoolValue(true))
            )
        }) {
            for doc in docs.iter_mut() {
                self.view(doc, &room)?;
            }
            return Ok(());
        }
        // Before decoding anything; `update` checks again under its lock.
        self.check_identity(&self.lock().streams, ctx.stream, &user, &room)?;
        for doc in docs.iter_mut() {
            let input = if jpeg::is_jpeg(doc) {
                Encoding::Jpeg
            } else {
                Encoding::Raw
            };
            let output = match doc.tag_str(ACCEPT_TAG) {
                None => input,
                Some(a) if a.eq_ignore_ascii_case("jpeg") => Encoding::Jpeg,
                Some(a) if a.eq_ignore_ascii_case("raw") => Encoding::Raw,
                Some(a) => {
                    return Err(self.reject(format!(
                        "tags.accept must be \"jpeg\" or \"raw\", got {a:?}"
                    )));
                }
            };
            if let Some(t) = doc.tensor() {
                let (h, w) = t.frame_dims().map_err(|m| self.reject(m))?;
                if checked_pixels(h, w, self.max_frame_pixels).is_err() {
                    return Err(self.reject(format!(
                        "a {h}x{w} frame is over the limit of {} pixels (max_frame_pixels)",
                        self.max_frame_pixels
                    )));
                }
            }
            let frame = match self.frame_of(doc, &room, &user) {
                Some(Ok(t)) => t,
                Some(Err(e)) => return Err(self.reject(e.to_string())),
                None => {
                    return Err(self.reject(
                        "document has no frame: send each frame as a uint8 [height, width, 3] \
                         tensor, or a JPEG blob with mime_type image/jpeg",
                    ));
                }
            };
            let dims = frame.frame_dims().map_err(|m| self.reject(m))?;
            let owned = input == Encoding::Jpeg;
            let tile = self.tile_of(doc, &user)?;
            let snap = self.update(&room, &user, ctx.stream, &frame, dims, owned, &tile)?;
            doc.set_tag(PARTICIPANTS_TAG, participants_value(&snap.participants));
            // Composition and encoding happen outside the lock.
            let shared = !self.highlight_self;
            let mosaic = match &snap.raw {
                Some(raw) if shared => Some(raw.clone()),
                _ => self.compose(&snap)?,
            };
            let Some(mosaic) = mosaic else {
                // Alone: the frame itself, in the encoding asked for.
                match (input, output) {
                    (Encoding::Jpeg, Encoding::Raw) => doc.set_tensor(frame),
                    (Encoding::Raw, Encoding::Jpeg) => {
                        let (h, w) = dims;
                        let j = jpeg::encode_bgr(frame.data(), h, w, self.quality)
                            .map_err(|e| self.reject(e.to_string()))?;
                        doc.content = Some(Content::Blob(j));
                        doc.mime_type = MIME_JPEG.to_string();
                    }
                    _ => {}
                }
                continue;
            };
            match output {
                Encoding::Raw => {
                    if shared {
                        self.remember(&room, &snap, &mosaic, None);
                    }
                    let (data, h, w) = mosaic;
                    let t = Tensor::image(h, w, 3, data)
                        .map_err(|e| self.reject(format!("internal: {e}")))?;
                    doc.set_tensor(t);
                    doc.mime_type.clear();
                }
                Encoding::Jpeg => {
                    let j = match &snap.jpeg {
                        Some(j) if shared => j.clone(),
                        _ => jpeg::encode_bgr(&mosaic.0, mosaic.1, mosaic.2, self.quality)
                            .map_err(|e| self.reject(e.to_string()))?,
                    };
                    if shared {
                        self.remember(&room, &snap, &mosaic, Some(&j));
                    }
                    doc.content = Some(Content::Blob(j));
                    doc.mime_type = MIME_JPEG.to_string();
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vchat_core::Document;

    fn frame(user: &str, h: usize, w: usize, value: u8) -> DocumentArray {
        let t = Tensor::image(h, w, 3, Bytes::from(vec![value; h * w * 3])).unwrap();
        let mut d = Document::with_tensor(t);
        d.set_tag_str("user", user);
        DocumentArray(vec![d])
    }

    fn jpeg_frame(user: &str, h: usize, w: usize, value: u8) -> DocumentArray {
        let j = jpeg::encode_bgr(&vec![value; h * w * 3], h, w, 90).unwrap();
        let mut d = Document::new();
        d.content = Some(Content::Blob(j));
        d.mime_type = MIME_JPEG.into();
        d.set_tag_str("user", user);
        DocumentArray(vec![d])
    }

    async fn send(
        ex: &VideoChatExecutor,
        docs: &mut DocumentArray,
        stream: u64,
    ) -> Result<(), Error> {
        let params = BTreeMap::new();
        let results = Default::default();
        let ctx = RequestContext {
            endpoint: "/",
            parameters: &params,
            stream: StreamId(stream),
            request_id: "r",
            results: &results,
        };
        ex.process(docs, &ctx).await
    }

    /// Without labels: these tests compare exact pixel values.
    fn with(config: VideoChatConfig) -> VideoChatExecutor {
        labelled(VideoChatConfig {
            labels: false,
            ..config
        })
    }

    fn labelled(config: VideoChatConfig) -> VideoChatExecutor {
        VideoChatExecutor::new(config, "agg").unwrap()
    }

    /// Pixels of the `h`x`w` tile at `(top, left)` of `t` that are pure white.
    fn white_in(t: &Tensor, (top, left, h, w): (usize, usize, usize, usize)) -> usize {
        let width = t.shape()[1];
        (top..top + h)
            .flat_map(|y| (left..left + w).map(move |x| (y, x)))
            .filter(|&(y, x)| t.data()[(y * width + x) * 3..][..3] == [255, 255, 255])
            .count()
    }

    /// Pixels of full coverage in the rendering of `name` for a `tile_h` tile:
    /// those a label turns pure white.
    fn full_coverage(name: &str, tile_h: usize) -> usize {
        let m = label::render(&label::shown(name), label::label_px(tile_h)).unwrap();
        m.coverage.iter().filter(|&&c| c == 255).count()
    }

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
        let t = Tensor::image(240, 320, 3, slots[0].frame.clone()).unwrap();
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
    async fn a_newer_stream_of_a_user_replaces_the_older_one() {
        let ex = with(VideoChatConfig::default());
        send(&ex, &mut frame("alice", 4, 4, 10), 1).await.unwrap();
        send(&ex, &mut frame("bob", 4, 4, 20), 3).await.unwrap();
        // A second stream of alice takes her tile.
        send(&ex, &mut frame("alice", 4, 4, 30), 2).await.unwrap();
        let err = send(&ex, &mut frame("alice", 4, 4, 40), 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("replaced by a newer connection of alice"),
            "{err}"
        );
        // The older stream's end leaves the newer one in place.
        ex.stream_closed(StreamId(1)).await;
        assert_eq!(ex.users(DEFAULT_ROOM), ["alice", "bob"]);
        let mut docs = frame("bob", 4, 4, 20);
        send(&ex, &mut docs, 3).await.unwrap();
        let t = docs[0].tensor().unwrap();
        assert_eq!(
            t.data()[0],
            30,
            "alice's tile holds the newer stream's frame"
        );
    }

    #[tokio::test]
    async fn a_viewer_sees_the_room_without_being_in_it() {
        let ex = with(VideoChatConfig::default());
        let viewer = |value| {
            let mut d = frame("carol", 4, 4, value);
            d[0].set_tag(
                VIEWER_TAG,
                Value {
                    kind: Some(Kind::BoolValue(true)),
                },
            );
            d
        };
        // An empty room: no frame comes back.
        let mut v = viewer(99);
        send(&ex, &mut v, 9).await.unwrap();
        assert!(v[0].content.is_none());
        send(&ex, &mut frame("alice", 4, 4, 10), 1).await.unwrap();
        send(&ex, &mut frame("bob", 4, 4, 20), 2).await.unwrap();
        let mut v = viewer(99);
        send(&ex, &mut v, 9).await.unwrap();
        assert_eq!(participants(&v), ["alice", "bob"]);
        let t = v[0].tensor().unwrap();
        assert_eq!(t.shape()[..2], [8, 4]);
        assert!(
            !t.data().contains(&99),
            "the viewer's frame is not in the mosaic"
        );
        assert_eq!(ex.users(DEFAULT_ROOM), ["alice", "bob"]);
        assert!(!ex.lock().streams.contains_key(&StreamId(9)));
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

    fn executor(idle: f64) -> VideoChatExecutor {
        with(VideoChatConfig {
            idle_timeout_s: idle,
            ..Default::default()
        })
    }

    /// The value of the first byte of each `band`-row band of the answer.
    fn bands(docs: &DocumentArray, band: usize) -> Vec<u8> {
        let t = docs[0].tensor().unwrap();
        let row = t.shape()[1] * 3;
        t.data().chunks(row * band).map(|c| c[0]).collect()
    }

    fn participants(docs: &DocumentArray) -> Vec<String> {
        match docs[0].tags[PARTICIPANTS_TAG].kind.as_ref() {
            Some(Kind::ListValue(l)) => l
                .values
                .iter()
                .map(|v| match v.kind.as_ref() {
                    Some(Kind::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn mosaic_in_join_order() {
        let ex = executor(5.0);
        let mut a = frame("alice", 2, 3, 10);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(
            a[0].tensor().unwrap().shape(),
            &[2, 3, 3],
            "alone: own frame"
        );
        let mut b = frame("bob", 2, 3, 20);
        send(&ex, &mut b, 2).await.unwrap();
        assert_eq!(bands(&b, 2), vec![10, 20]);
        let mut c = frame("carol", 2, 3, 30);
        send(&ex, &mut c, 3).await.unwrap();
        let mut a2 = frame("alice", 2, 3, 11);
        send(&ex, &mut a2, 1).await.unwrap();
        assert_eq!(a2[0].tensor().unwrap().shape(), &[6, 3, 3]);
        assert_eq!(bands(&a2, 2), vec![11, 20, 30]);
        assert_eq!(participants(&a2), vec!["alice", "bob", "carol"]);
    }

    #[tokio::test]
    async fn stream_end_removes_its_users() {
        let ex = executor(5.0);
        for (u, s, v) in [("alice", 1, 1), ("bob", 2, 2), ("carol", 3, 3)] {
            send(&ex, &mut frame(u, 1, 2, v), s).await.unwrap();
        }
        ex.stream_closed(StreamId(3)).await;
        assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice", "bob"]);
        let mut a = frame("alice", 1, 2, 9);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(bands(&a, 1), vec![9, 2]);
        assert_eq!(ex.users_per_room(), vec![(DEFAULT_ROOM.to_string(), 2)]);
    }

    #[tokio::test]
    async fn idle_users_leave() {
        let ex = executor(0.05);
        send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
        send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let mut a = frame("alice", 1, 2, 3);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(a[0].tensor().unwrap().shape(), &[1, 2, 3]);
        assert_eq!(ex.users(DEFAULT_ROOM), vec!["alice"]);
    }

    #[tokio::test]
    async fn rooms_are_separate() {
        let ex = executor(5.0);
        let mut a = frame("alice", 1, 2, 1);
        a[0].set_tag_str("room", "r1");
        send(&ex, &mut a, 1).await.unwrap();
        let mut b = frame("bob", 1, 2, 2);
        b[0].set_tag_str("room", "r2");
        send(&ex, &mut b, 2).await.unwrap();
        assert_eq!(b[0].tensor().unwrap().shape(), &[1, 2, 3]);
        assert_eq!(participants(&b), vec!["bob"]);
        assert_eq!(ex.users("r1"), vec!["alice"]);
    }

    #[tokio::test]
    async fn max_users_is_enforced_per_room() {
        let ex = with(VideoChatConfig {
            max_users: 2,
            ..Default::default()
        });
        send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
        send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
        let err = send(&ex, &mut frame("carol", 1, 2, 3), 3)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is full") && err.contains("max_users is 2"),
            "{err}"
        );
        // Present users go on; another room has room.
        send(&ex, &mut frame("bob", 1, 2, 2), 2).await.unwrap();
        // A refused frame binds nothing: carol's stream 3 may still join this
        // room later; another stream of hers gets into another room at once.
        let mut c = frame("carol", 1, 2, 3);
        c[0].set_tag_str("room", "other");
        send(&ex, &mut c, 4).await.unwrap();
        // Once someone leaves, carol gets in.
        ex.stream_closed(StreamId(1)).await;
        send(&ex, &mut frame("carol", 1, 2, 3), 3).await.unwrap();
        assert_eq!(ex.users(DEFAULT_ROOM), vec!["bob", "carol"]);
    }

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
    async fn jpeg_and_raw_clients_share_a_room() {
        let ex = executor(5.0);
        let mut a = jpeg_frame("alice", 16, 16, 200);
        send(&ex, &mut a, 1).await.unwrap();
        assert!(jpeg::is_jpeg(&a[0]), "alone: own JPEG back");
        let mut b = frame("bob", 16, 16, 40);
        send(&ex, &mut b, 2).await.unwrap();
        let t = b[0].tensor().unwrap();
        assert_eq!(t.shape(), &[32, 16, 3]);
        assert!(t.data()[8 * 16 * 3].abs_diff(200) < 10);
        assert_eq!(t.data()[24 * 16 * 3], 40);
        let mut a = jpeg_frame("alice", 16, 16, 200);
        send(&ex, &mut a, 1).await.unwrap();
        let Some(Content::Blob(j)) = &a[0].content else {
            panic!("JPEG in, JPEG out");
        };
        assert_eq!(a[0].mime_type, MIME_JPEG);
        let (px, h, w) = jpeg::decode_bgr(j, 1 << 20).unwrap();
        assert_eq!((h, w), (32, 16));
        assert!(px[8 * 16 * 3].abs_diff(200) < 10);
        assert!(px[24 * 16 * 3].abs_diff(40) < 10);
        // tags.accept overrides the request's encoding.
        let mut b = frame("bob", 16, 16, 40);
        b[0].set_tag_str(ACCEPT_TAG, "jpeg");
        send(&ex, &mut b, 2).await.unwrap();
        assert!(jpeg::is_jpeg(&b[0]));
    }

    #[tokio::test]
    async fn jpeg_mosaic_of_one_state_is_encoded_once() {
        let ex = executor(5.0);
        send(&ex, &mut jpeg_frame("alice", 8, 8, 100), 1)
            .await
            .unwrap();
        let mut b1 = jpeg_frame("bob", 8, 8, 50);
        send(&ex, &mut b1, 2).await.unwrap();
        // Bob's source is paused: the same frame again is the same room state.
        let mut b2 = jpeg_frame("bob", 8, 8, 50);
        send(&ex, &mut b2, 2).await.unwrap();
        let blob = |d: &DocumentArray| match &d[0].content {
            Some(Content::Blob(b)) => b.clone(),
            other => panic!("{other:?}"),
        };
        let (x, y) = (blob(&b1), blob(&b2));
        assert_eq!(x.as_ptr(), y.as_ptr(), "the cached encoding is shared");
    }

    #[tokio::test]
    async fn mosaic_fps_shares_one_composition_per_period() {
        let ex = with(VideoChatConfig {
            mosaic_fps: 2.0,
            ..Default::default()
        });
        send(&ex, &mut frame("alice", 2, 2, 10), 1).await.unwrap();
        let mut first = frame("bob", 2, 2, 20);
        send(&ex, &mut first, 2).await.unwrap();
        assert_eq!(bands(&first, 2), vec![10, 20]);
        // Within the period: the mosaic composed for bob's frame serves, though
        // alice and carol sent newer frames; participants match that mosaic.
        let mut again = frame("alice", 2, 2, 11);
        send(&ex, &mut again, 1).await.unwrap();
        let mut carol = frame("carol", 2, 2, 30);
        send(&ex, &mut carol, 3).await.unwrap();
        for docs in [&again, &carol] {
            assert_eq!(bands(docs, 2), vec![10, 20]);
            assert_eq!(participants(docs), ["alice", "bob"]);
            let (a, b) = (docs[0].tensor().unwrap(), first[0].tensor().unwrap());
            assert_eq!(
                a.data().as_ptr(),
                b.data().as_ptr(),
                "shared, not recomposed"
            );
        }
        // After the period the next frame composes the room as it is now.
        tokio::time::sleep(Duration::from_millis(550)).await;
        let mut later = frame("bob", 2, 2, 21);
        send(&ex, &mut later, 2).await.unwrap();
        assert_eq!(bands(&later, 2), vec![11, 21, 30]);
        assert_eq!(participants(&later), ["alice", "bob", "carol"]);
        let err = VideoChatExecutor::new(
            VideoChatConfig {
                mosaic_fps: -1.0,
                ..Default::default()
            },
            "agg",
        );
        assert!(err.is_err_and(|e| e.contains("mosaic_fps")));
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

    #[test]
    fn config_parses_and_rejects_bad_values() {
        let c: VideoChatConfig = serde_saphyr::from_str(
            "idle_timeout_s: 2.5\nlayout: grid\ncanvas: 240x320\nmax_users: 4\nhighlight_self: true\n",
        )
        .unwrap();
        assert_eq!(c.idle_timeout_s, 2.5);
        assert_eq!(c.layout, Layout::Grid);
        assert_eq!(parse_size(&c.canvas), Some((240, 320)));
        assert!(c.labels, "on by default");
        let off: VideoChatConfig =
            serde_saphyr::from_str("labels: false\nlabel_cache_bytes: 0\n").unwrap();
        assert!(!off.labels && off.label_cache_bytes == 0);
        assert!(serde_saphyr::from_str::<VideoChatConfig>("idle: 1\n").is_err());
        assert!(serde_saphyr::from_str::<VideoChatConfig>("layout: diagonal\n").is_err());
        for bad in [
            VideoChatConfig {
                idle_timeout_s: 0.0,
                ..Default::default()
            },
            VideoChatConfig {
                max_users: 0,
                ..Default::default()
            },
            VideoChatConfig {
                canvas: "big".into(),
                ..Default::default()
            },
            VideoChatConfig {
                jpeg_quality: 0,
                ..Default::default()
            },
        ] {
            assert!(VideoChatExecutor::new(bad, "x").is_err());
        }
    }

    #[test]
    fn shipped_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yml");
        let spec = vchat_core::config::load_executor(std::path::Path::new(path)).unwrap();
        assert_eq!(spec.jtype, JTYPE);
        assert_eq!(spec.with["idle_timeout_s"].0, 5);
        // The shipped values are the defaults: the seed's behaviour.
        let object: serde_json::Map<String, serde_json::Value> = spec
            .with
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let config: VideoChatConfig =
            serde_json::from_value(serde_json::Value::Object(object)).unwrap();
        assert_eq!(config, VideoChatConfig::default());
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

    #[tokio::test]
    async fn rooms_are_bounded_and_dropped_when_empty() {
        let ex = with(VideoChatConfig {
            max_rooms: 2,
            ..Default::default()
        });
        let in_room = |user: &str, room: &str| {
            let mut d = frame(user, 1, 2, 1);
            d[0].set_tag_str("room", room);
            d
        };
        send(&ex, &mut in_room("a", "r1"), 1).await.unwrap();
        send(&ex, &mut in_room("b", "r2"), 2).await.unwrap();
        let err = send(&ex, &mut in_room("c", "r3"), 3)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_rooms"), "{err}");
        // Existing rooms take more users.
        send(&ex, &mut in_room("c", "r2"), 4).await.unwrap();
        assert_eq!(ex.lock().rooms.len(), 2, "the refused room was not made");
        // The last user of r1 leaves: the room and its binding go.
        ex.stream_closed(StreamId(1)).await;
        assert!(!ex.lock().rooms.contains_key("r1"));
        assert!(!ex.lock().streams.contains_key(&StreamId(1)));
        send(&ex, &mut in_room("c", "r3"), 3).await.unwrap();
        // Every user gone: no room, no binding is left.
        for id in [2, 3, 4] {
            ex.stream_closed(StreamId(id)).await;
        }
        assert!(ex.lock().rooms.is_empty() && ex.lock().streams.is_empty());
        send(&ex, &mut in_room("e", "r2"), 6).await.unwrap();
        let names: Vec<String> = ex.users_per_room().into_iter().map(|r| r.0).collect();
        assert_eq!(names, ["r2"]);
    }

    #[tokio::test]
    async fn idle_rooms_are_swept_without_new_frames() {
        let ex = executor(0.05);
        let mut a = frame("alice", 1, 2, 1);
        a[0].set_tag_str("room", "quiet");
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(ex.users_per_room().len(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ex.users_per_room().is_empty() {
            assert!(Instant::now() < deadline, "the idle room was never dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Her stream is still hers: she comes back in the same room only.
        let mut a = frame("alice", 1, 2, 1);
        a[0].set_tag_str("room", "quiet");
        send(&ex, &mut a, 1).await.unwrap();
        assert!(send(&ex, &mut frame("alice", 1, 2, 1), 1).await.is_err());
    }

    #[tokio::test]
    async fn a_stream_is_one_user_in_one_room() {
        let ex = executor(5.0);
        send(&ex, &mut frame("alice", 1, 2, 1), 1).await.unwrap();
        let err = send(&ex, &mut frame("mallory", 1, 2, 1), 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("this stream is \"alice\" in room \"\"")
                && err.contains("cannot change its user or room"),
            "{err}"
        );
        let mut elsewhere = frame("alice", 1, 2, 1);
        elsewhere[0].set_tag_str("room", "r2");
        assert!(send(&ex, &mut elsewhere, 1).await.is_err());
        // 64 made-up names on one stream: none gets in.
        for i in 0..64 {
            assert!(
                send(&ex, &mut frame(&format!("u{i}"), 1, 2, 1), 1)
                    .await
                    .is_err()
            );
        }
        assert_eq!(ex.users(DEFAULT_ROOM), ["alice"]);
        assert!(ex.users("r2").is_empty());
        // Its first identity goes on.
        let mut a = frame("alice", 1, 2, 7);
        send(&ex, &mut a, 1).await.unwrap();
        assert_eq!(participants(&a), ["alice"]);
        // Once the stream ends, its id binds nothing.
        ex.stream_closed(StreamId(1)).await;
        send(&ex, &mut frame("bob", 1, 2, 1), 1).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_names_one_user_in_one_room() {
        let ex = executor(5.0);
        let mut two_rooms = frame("alice", 1, 2, 1);
        let mut other = frame("alice", 1, 2, 1);
        other[0].set_tag_str("room", "r2");
        two_rooms.0.push(other.0.remove(0));
        let err = send(&ex, &mut two_rooms, 1).await.unwrap_err().to_string();
        assert!(err.contains("several rooms"), "{err}");
        let mut two_users = frame("alice", 1, 2, 1);
        two_users.0.push(frame("bob", 1, 2, 1).0.remove(0));
        let err = send(&ex, &mut two_users, 1).await.unwrap_err().to_string();
        assert!(err.contains("several users"), "{err}");
        assert!(ex.users_per_room().is_empty(), "nothing stored");
        assert!(ex.lock().streams.is_empty(), "nothing bound");
    }

    #[tokio::test]
    async fn names_over_128_bytes_are_refused() {
        let ex = executor(5.0);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let err = send(&ex, &mut frame(&long, 1, 2, 1), 1).await.unwrap_err();
        assert!(err.to_string().contains("tags.user is 129 bytes"), "{err}");
        let mut d = frame("alice", 1, 2, 1);
        d[0].set_tag_str("room", &long);
        let err = send(&ex, &mut d, 1).await.unwrap_err();
        assert!(err.to_string().contains("tags.room is 129 bytes"), "{err}");
        let fits = "é".repeat(MAX_NAME_BYTES / 2);
        send(&ex, &mut frame(&fits, 1, 2, 1), 1).await.unwrap();
    }

    #[tokio::test]
    async fn held_bytes_follow_frames_mosaics_and_leaving_users() {
        static BUDGET: Budget = Budget::new(usize::MAX);
        let ex = executor(5.0).with_budget(&BUDGET);
        send(&ex, &mut frame("alice", 2, 4, 1), 1).await.unwrap();
        assert_eq!(BUDGET.held(), 2 * 4 * 3, "alice's frame");
        send(&ex, &mut frame("bob", 2, 4, 2), 2).await.unwrap();
        assert_eq!(
            BUDGET.held(),
            2 * (2 * 4 * 3) + 4 * 4 * 3,
            "two frames, a mosaic"
        );
        // A new frame replaces the old one, and the mosaic of the old state goes.
        send(&ex, &mut frame("bob", 4, 8, 3), 2).await.unwrap();
        assert_eq!(BUDGET.held(), 2 * (2 * 4 * 3) + 4 * 4 * 3);
        ex.stream_closed(StreamId(2)).await;
        assert_eq!(BUDGET.held(), 2 * 4 * 3 + 4 * 4 * 3, "bob's frame gone");
        ex.stream_closed(StreamId(1)).await;
        assert_eq!(BUDGET.held(), 0, "the room and its mosaic gone");
        // The stored frame is a buffer of its own, not a slice of the request.
        let mut big = frame("carol", 2, 4, 5);
        let request = big[0].tensor().unwrap().data().clone();
        send(&ex, &mut big, 3).await.unwrap();
        let state = ex.lock();
        let stored = &state.rooms[DEFAULT_ROOM].slots[0].frame;
        assert_ne!(stored.as_ptr(), request.as_ptr());
    }

    #[tokio::test]
    async fn requests_of_an_unknown_stream_bind_nobody() {
        // A Jina gateway calling this executor in another process says nothing of
        // its client streams: all its users come as one unknown stream.
        let ex = executor(5.0);
        let unknown = StreamId::UNKNOWN.0;
        send(&ex, &mut frame("alice", 1, 2, 1), unknown)
            .await
            .unwrap();
        let mut b = frame("bob", 1, 2, 2);
        send(&ex, &mut b, unknown).await.unwrap();
        assert_eq!(participants(&b), ["alice", "bob"]);
        assert!(ex.lock().streams.is_empty());
    }
}
