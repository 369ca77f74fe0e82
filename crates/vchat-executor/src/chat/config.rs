//! The `with:` of a VideoChatExecutor: its keys, their defaults, and the checks
//! of their values.

use serde::Deserialize;
use vchat_core::jpeg;

use crate::label::DEFAULT_LABEL_CACHE_BYTES;
use crate::mosaic::checked_pixels;

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

impl VideoChatConfig {
    /// Checks every value; the grid's canvas, `(height, width)`, when they hold.
    pub fn validate(&self) -> Result<(usize, usize), String> {
        if !(self.idle_timeout_s.is_finite() && self.idle_timeout_s > 0.0) {
            return Err(format!(
                "with.idle_timeout_s must be a positive number of seconds, got {}",
                self.idle_timeout_s
            ));
        }
        if self.max_users == 0 {
            return Err("with.max_users must be at least 1".into());
        }
        let canvas = parse_size(&self.canvas).ok_or_else(|| {
            format!(
                "with.canvas must be HxW, e.g. 480x640, got {:?}",
                self.canvas
            )
        })?;
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(format!(
                "with.jpeg_quality must be 1 to 100, got {}",
                self.jpeg_quality
            ));
        }
        for (key, value) in [
            ("max_frame_pixels", self.max_frame_pixels),
            ("max_side", self.max_side),
            ("max_mosaic_pixels", self.max_mosaic_pixels),
            ("max_rooms", self.max_rooms),
        ] {
            if value == 0 {
                return Err(format!("with.{key} must be at least 1"));
            }
        }
        if self.layout == Layout::Grid
            && checked_pixels(canvas.0, canvas.1, self.max_mosaic_pixels).is_err()
        {
            return Err(format!(
                "with.canvas {}x{} is over max_mosaic_pixels ({})",
                canvas.0, canvas.1, self.max_mosaic_pixels
            ));
        }
        if !(self.mosaic_fps.is_finite() && self.mosaic_fps >= 0.0) {
            return Err(format!(
                "with.mosaic_fps must be 0 (off) or a positive rate, got {}",
                self.mosaic_fps
            ));
        }
        Ok(canvas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VideoChatExecutor;

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
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../executor/config.yml");
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
