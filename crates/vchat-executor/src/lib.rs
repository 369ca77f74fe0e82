//! vchat-executor: the executors vchat ships.
//!
//! - [`chat`]: the `VideoChatExecutor`, every user's latest frame in a room,
//!   answered with the mosaic of them all (its config, room state, layouts,
//!   mosaic cache and encodings, one file each).
//! - [`builtin`]: the other built-in executors, one file each.
//! - The frame arithmetic of the mosaic ([`stack_vertically`], [`compose_grid`],
//!   [`resize`], ...) on [`Frame`]s, every size checked before anything is
//!   allocated.
//! - [`label`]: the names drawn on tiles.
//! - [`surface`]: what tiles, borders and names are drawn on, BGR pixels or a
//!   YCbCr 4:2:0 picture (a grid room's canvas).
//!
//! [`register_all`] adds them all to a registry. This crate has no feature flags.

pub mod builtin;
pub mod chat;
mod frame;
pub mod label;
mod mosaic;
pub mod surface;

pub use chat::{
    ACCEPT_TAG, DEFAULT_CANVAS, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_MOSAIC_PIXELS, DEFAULT_MAX_ROOMS, DEFAULT_MAX_SIDE,
    DEFAULT_MAX_USERS, DEFAULT_ROOM, JTYPE, Layout, NAME_TAG, PARTICIPANTS_TAG, PAUSED_TAG,
    VIEWER_TAG, VideoChatConfig, VideoChatExecutor, parse_size, register,
};
pub use frame::Frame;
pub use mosaic::{
    HIGHLIGHT_BGR, MosaicError, checked_pixels, compose_grid, draw_border, draw_grid, grid_rects,
    grid_shape, height_at_width, resize, resize_to_height, resize_to_width, stack_horizontally,
    stack_vertically, width_at_height,
};

/// Adds every executor of this crate to `registry`: the chat and the built-ins.
pub fn register_all(registry: &mut vchat_core::Registry) {
    register(registry);
    builtin::register_all(registry);
}
