//! OpenCV sources and sinks: webcam and video-file capture, the chat window,
//! and recording received mosaics to a video file.
//!
//! OpenCV's highgui must be used from one thread only: [`Window`] is not `Send`,
//! so it stays on the thread that created it (the client's main thread).

mod capture;
mod record;
mod render;
mod window;

pub use capture::{SourceSpec, VideoSource, mat_to_tensor, tensor_to_mat};
pub use record::{Recorder, write_test_video};
pub use render::{
    HELP, SHEET_CELL_W, SHEET_COLS, contact_sheet, draw_help, draw_overlay, draw_participants,
    draw_self_view,
};
pub use window::Window;

use opencv::core;

/// Only errors from OpenCV itself are shown; its warnings (a camera index that
/// does not exist, codec probing) would repeat what our own messages say.
pub fn quiet_logs() {
    let _ = core::set_log_level(core::LogLevel::LOG_LEVEL_ERROR);
}

fn cv_err(what: &str) -> impl Fn(opencv::Error) -> String + '_ {
    move |e| format!("{what}: {}", e.message)
}
