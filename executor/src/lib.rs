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
//! [`Executor::stream_closed`]) or after `idle_timeout_s` without a frame. A room
//! holds at most `max_users`; one more is rejected with an ERROR status. Every
//! response carries `tags.participants`, the room's users in mosaic order.
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
//! ```
//!
//! With `mosaic_fps`, a room's mosaic is composed (and JPEG-encoded) at most that
//! many times a second, and every response in between shares the latest one: the
//! work per second no longer grows with users × frame rate, which is what lets
//! one grid hold a hundred users. A response may then lag its own frame by up to
//! one period; `tags.participants` always lists the users of the mosaic sent.
//! In the grid layout JPEG frames are decoded straight to their tile's size.

pub mod builtin;
mod mosaic;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use vchat_core::jpeg::{self, MIME_JPEG};
use vchat_core::value::Kind;
use vchat_core::{
    Content, DocumentArray, Error, Executor, ListValue, RequestContext, StreamId, Tensor, Value,
    async_trait, string_value,
};

pub use mosaic::{
    HIGHLIGHT_BGR, compose_grid, draw_border, grid_shape, resize, resize_to_height,
    resize_to_width, stack_horizontally, stack_vertically,
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
/// Default largest frame accepted, in pixels (4K UHD).
pub const DEFAULT_MAX_FRAME_PIXELS: usize = 3840 * 2160;
/// The response tag listing the room's users in mosaic order.
pub const PARTICIPANTS_TAG: &str = "participants";
/// The request tag choosing the response encoding: `jpeg` or `raw`.
pub const ACCEPT_TAG: &str = "accept";

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
    /// Size of the grid's canvas, `HxW` (grid layout only).
    #[serde(default = "default_canvas")]
    pub canvas: String,
    /// Draw a coloured border around the requesting user's own tile.
    #[serde(default)]
    pub highlight_self: bool,
    /// Quality (1 to 100) of the JPEG mosaics sent to JPEG clients.
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    /// Largest frame accepted, in pixels (height × width); a larger one gets an
    /// ERROR status. JPEGs are checked before decoding.
    #[serde(default = "default_max_frame_pixels")]
    pub max_frame_pixels: usize,
    /// At most this many mosaics composed per room per second, shared by every
    /// response in between; 0 (the default) composes one for every new frame.
    /// Not with `highlight_self`, whose mosaics differ per user.
    #[serde(default)]
    pub mosaic_fps: f64,
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
            mosaic_fps: 0.0,
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
    stream: StreamId,
    /// The latest frame, as stored for the layout (at the room's width for
    /// vertical, at its height for horizontal, as received for grid).
    frame: Bytes,
    height: usize,
    width: usize,
    last_seen: Instant,
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
}

#[derive(Default)]
struct Room {
    /// The room's frame width (vertical) or height (horizontal): the first user's.
    side: usize,
    /// In join order.
    slots: Vec<Slot>,
    /// Bumped on every change of the room's frames or users.
    version: u64,
    cache: Cached,
    /// When a request last set out to compose this room's mosaic (`mosaic_fps`).
    composed_at: Option<Instant>,
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
    /// `1 / mosaic_fps`, when set and `highlight_self` is not.
    mosaic_period: Option<Duration>,
    rooms: Mutex<HashMap<String, Room>>,
}

impl VideoChatExecutor {
    /// A new executor named `name` in its Flow.
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
        if config.max_frame_pixels == 0 {
            return Err("with.max_frame_pixels must be at least 1".into());
        }
        if !(config.mosaic_fps.is_finite() && config.mosaic_fps >= 0.0) {
            return Err(format!(
                "with.mosaic_fps must be 0 (off) or a positive rate, got {}",
                config.mosaic_fps
            ));
        }
        Ok(VideoChatExecutor {
            name: name.to_string(),
            idle_timeout: Duration::from_secs_f64(config.idle_timeout_s),
            max_users: config.max_users,
            layout: config.layout,
            canvas,
            highlight_self: config.highlight_self,
            quality: config.jpeg_quality,
            max_frame_pixels: config.max_frame_pixels,
            mosaic_period: (config.mosaic_fps > 0.0 && !config.highlight_self)
                .then(|| Duration::from_secs_f64(1.0 / config.mosaic_fps)),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// The users present in `room`, in mosaic order.
    pub fn users(&self, room: &str) -> Vec<String> {
        self.lock()
            .get(room)
            .map(|r| r.slots.iter().map(|s| s.user.clone()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // A panic elsewhere must not take the chat down: the map is consistent
        // between statements, so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reject(&self, message: impl Into<String>) -> Error {
        Error::Rejected {
            executor: self.name.clone(),
            message: message.into(),
        }
    }

    /// Stores `frame` as `user`'s latest and returns the room's state.
    fn update(
        &self,
        room_name: &str,
        user: &str,
        stream: StreamId,
        frame: &Tensor,
        (h, w): (usize, usize),
    ) -> Result<Snapshot, Error> {
        let now = Instant::now();
        let mut rooms = self.lock();
        let room = rooms.entry(room_name.to_string()).or_default();
        let timeout = self.idle_timeout;
        let before = room.slots.len();
        room.slots.retain(|s| {
            let keep = s.user == user || now.duration_since(s.last_seen) <= timeout;
            if !keep {
                tracing::info!(room = room_name, user = %s.user, "User left (idle)");
            }
            keep
        });
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
        if room.slots.iter().all(|s| s.user == user) {
            // Alone (or first): the room takes this user's size.
            room.side = match self.layout {
                Layout::Vertical => w,
                Layout::Horizontal => h,
                Layout::Grid => 0,
            };
        }
        let (data, height, width) = match self.layout {
            Layout::Vertical if w != room.side => {
                let (d, nh) = resize_to_width(frame.data(), h, w, room.side);
                (d, nh, room.side)
            }
            Layout::Horizontal if h != room.side => {
                let (d, nw) = resize_to_height(frame.data(), h, w, room.side);
                (d, room.side, nw)
            }
            _ => (frame.data().clone(), h, w),
        };
        let mut changed = room.slots.len() != before;
        match room.slots.iter_mut().find(|s| s.user == user) {
            Some(slot) => {
                // A paused source sends the same frame again: the room state, and
                // so the cached mosaic others may share, stays the same.
                changed |= (slot.height, slot.width) != (height, width) || slot.frame != data;
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
                    stream,
                    frame: data,
                    height,
                    width,
                    last_seen: now,
                });
            }
        }
        if changed {
            room.version += 1;
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
        let users = self.lock().get(room).map_or(1, |r| {
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
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room) else {
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
        room.cache.raw.get_or_insert_with(|| raw.clone());
        if let Some(j) = jpeg {
            room.cache.jpeg.get_or_insert_with(|| j.clone());
        }
    }

    /// The mosaic of `snap` as seen by its requester: `None` while the requester
    /// is alone in a layout that answers with the frame itself.
    fn compose(&self, snap: &Snapshot) -> Option<(Bytes, usize, usize)> {
        let highlight = self.highlight_self.then_some(snap.me);
        match self.layout {
            Layout::Vertical | Layout::Horizontal if snap.tiles.len() < 2 => None,
            Layout::Vertical => {
                let width = snap.tiles[0].2;
                let height = snap.tiles.iter().map(|t| t.1).sum();
                let parts: Vec<Bytes> = snap.tiles.iter().map(|t| t.0.clone()).collect();
                let data = stack_vertically(&parts);
                let data = match highlight {
                    None => data,
                    Some(me) => {
                        let top = snap.tiles[..me].iter().map(|t| t.1).sum();
                        let mut m = BytesMut::from(data);
                        draw_border(&mut m, width, (top, 0, snap.tiles[me].1, width));
                        m.freeze()
                    }
                };
                Some((data, height, width))
            }
            Layout::Horizontal => {
                let height = snap.tiles[0].1;
                let parts: Vec<(Bytes, usize)> =
                    snap.tiles.iter().map(|t| (t.0.clone(), t.2)).collect();
                let (data, width) = stack_horizontally(&parts, height);
                let data = match highlight {
                    None => data,
                    Some(me) => {
                        let left = snap.tiles[..me].iter().map(|t| t.2).sum();
                        let mut m = BytesMut::from(data);
                        draw_border(&mut m, width, (0, left, height, snap.tiles[me].2));
                        m.freeze()
                    }
                };
                Some((data, height, width))
            }
            Layout::Grid => {
                let tiles: Vec<mosaic::Tile<'_>> =
                    snap.tiles.iter().map(|t| (&t.0[..], t.1, t.2)).collect();
                let (ch, cw) = self.canvas;
                Some((compose_grid(&tiles, ch, cw, highlight), ch, cw))
            }
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
        for doc in docs.iter_mut() {
            let user = match doc.tag_str("user") {
                Some("") => return Err(self.reject("tags.user is empty")),
                Some(u) => u.to_string(),
                None if doc.tags.contains_key("user") => {
                    return Err(self.reject("tags.user must be a string"));
                }
                None => {
                    return Err(
                        self.reject("missing tags.user: every frame needs the tag user=<name>")
                    );
                }
            };
            let room = match (doc.tag_str("room"), doc.tags.contains_key("room")) {
                (Some(r), _) => r.to_string(),
                (None, false) => DEFAULT_ROOM.to_string(),
                (None, true) => return Err(self.reject("tags.room must be a string")),
            };
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
                if h * w > self.max_frame_pixels {
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
            let snap = self.update(&room, &user, ctx.stream, &frame, dims)?;
            doc.set_tag(PARTICIPANTS_TAG, participants_value(&snap.participants));
            // Composition and encoding happen outside the lock.
            let shared = !self.highlight_self;
            let mosaic = match &snap.raw {
                Some(raw) if shared => Some(raw.clone()),
                _ => self.compose(&snap),
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
        let mut rooms = self.lock();
        rooms.retain(|name, room| {
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

    fn with(config: VideoChatConfig) -> VideoChatExecutor {
        VideoChatExecutor::new(config, "agg").unwrap()
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
        let mut c = frame("carol", 1, 2, 3);
        c[0].set_tag_str("room", "other");
        send(&ex, &mut c, 3).await.unwrap();
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
        let rooms = ex.lock();
        let alice = &rooms[DEFAULT_ROOM].slots[0];
        assert_eq!(
            (alice.height, alice.width),
            (50, 75),
            "decoded at 1/4: the smallest scale that covers her 48x64 tile"
        );
        drop(rooms);
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
}
