//! Built-in executors beside the chat, one per file: simple frame filters
//! ([`mod@flip`], [`mod@grayscale`], [`mod@resize`], [`annotate`]), a deliberately slow
//! executor ([`slow`]), frame statistics as extra outputs ([`frame_stats`]), and
//! sources for `receive` streams ([`mod@test_pattern`], [`video_file`]). Each file
//! holds a `<Name>Config` (its `with:`), the runtime type, its tests and a
//! `register`; [`register_all`] is the one list of them.
//!
//! The filters read like a Jina executor: a frame comes in as an
//! [`vchat_core::ndarray::ArrayView3`] over its pixels
//! and goes out as an array (see [`flip::mirror`]).

pub mod annotate;
mod common;
pub mod flip;
pub mod frame_stats;
pub mod grayscale;
pub mod passthrough;
pub mod resize;
pub mod slow;
pub mod test_pattern;
pub mod video_file;
pub mod yuv4mpeg;

use vchat_core::Registry;

pub use annotate::{Annotate, AnnotateConfig, draw_text};
pub use flip::{Flip, FlipAxis, FlipConfig, flip, mirror};
pub use frame_stats::{FrameStats, FrameStatsConfig};
pub use grayscale::{Grayscale, GrayscaleConfig, grayscale, to_gray};
pub use passthrough::{Passthrough, PassthroughConfig};
pub use resize::{RESIZE_MAX_SIDE, Resize, ResizeConfig, resize};
pub use slow::{Slow, SlowConfig};
pub use test_pattern::{TestPatternConfig, TestPatternSource, test_pattern};
pub use video_file::{VideoFileConfig, VideoFileSource};
pub use yuv4mpeg::Y4m;

/// Adds every built-in executor beside the chat to `registry`.
pub fn register_all(registry: &mut Registry) {
    passthrough::register(registry);
    flip::register(registry);
    grayscale::register(registry);
    resize::register(registry);
    slow::register(registry);
    frame_stats::register(registry);
    annotate::register(registry);
    test_pattern::register(registry);
    video_file::register(registry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_all_lists_every_builtin_once() {
        let mut r = Registry::new();
        register_all(&mut r);
        let mut names: Vec<&str> = r.jtypes().collect();
        names.sort_unstable();
        let mut expected = [
            annotate::JTYPE,
            flip::JTYPE,
            frame_stats::JTYPE,
            grayscale::JTYPE,
            passthrough::JTYPE,
            resize::JTYPE,
            slow::JTYPE,
            test_pattern::JTYPE,
            video_file::JTYPE,
        ];
        expected.sort_unstable();
        assert_eq!(names, expected);
    }
}
