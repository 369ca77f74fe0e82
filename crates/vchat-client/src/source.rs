//! Where the client's frames come from. A [`FrameSource`] is read on its own
//! thread by [`crate::capture::Capture`], which hands the newest frame to the
//! sender; the OpenCV sources (webcam, video file) are in `vchat_client_app::cv`.

use bytes::Bytes;
use vchat_core::Tensor;

/// A producer of H×W×3 uint8 BGR frames.
pub trait FrameSource: Send {
    /// The next frame, `Ok(None)` at the end of the source, `Err` with a readable
    /// message when the source failed.
    fn next_frame(&mut self) -> Result<Option<Tensor>, String>;

    /// Frames per second the source delivers by itself (a camera's or a file's
    /// rate), used when `--fps` is not given; `None`: no rate of its own.
    fn native_fps(&self) -> Option<f64> {
        None
    }

    /// Whether [`next_frame`](Self::next_frame) waits for a device to deliver (a
    /// camera). A live source is read continuously, or its driver queues stale
    /// frames; other sources are read only when a frame is due.
    fn is_live(&self) -> bool {
        false
    }

    /// What the source is, for messages: `camera 0`, `clip.avi`, `test pattern`.
    fn describe(&self) -> String;
}

/// Frames per second of the test pattern when `--fps` is not given.
pub const TEST_PATTERN_FPS: f64 = 30.0;

/// A synthetic moving test pattern: a background in a colour derived from the
/// user's name, so every user is recognisable in the mosaic, and a white bar that
/// moves a few pixels per frame.
pub struct TestPattern {
    height: usize,
    width: usize,
    color: [u8; 3],
    bar: bool,
    frame: u64,
}

impl TestPattern {
    /// The pattern of `user`, `height`×`width`.
    pub fn new(user: &str, height: usize, width: usize) -> Self {
        TestPattern {
            height,
            width,
            color: user_color(user),
            bar: true,
            frame: 0,
        }
    }

    /// A plain frame of one BGR colour, no bar.
    pub fn solid(color: [u8; 3], height: usize, width: usize) -> Self {
        TestPattern {
            height,
            width,
            color,
            bar: false,
            frame: 0,
        }
    }

    /// The background colour (BGR).
    pub fn color(&self) -> [u8; 3] {
        self.color
    }

    /// Renders frame number `n`.
    pub fn render(&self, n: u64) -> Tensor {
        let (h, w) = (self.height, self.width);
        let mut row = Vec::with_capacity(w * 3);
        let bar_w = (w / 12).max(1);
        let bar_x = if self.bar {
            (n as usize * 4) % w
        } else {
            usize::MAX
        };
        for x in 0..w {
            let on_bar = x >= bar_x && x < bar_x + bar_w;
            row.extend_from_slice(if on_bar {
                &[255, 255, 255]
            } else {
                &self.color
            });
        }
        let mut data = Vec::with_capacity(h * w * 3);
        for _ in 0..h {
            data.extend_from_slice(&row);
        }
        Tensor::image(h, w, 3, Bytes::from(data)).expect("buffer matches shape")
    }
}

impl FrameSource for TestPattern {
    fn next_frame(&mut self) -> Result<Option<Tensor>, String> {
        let t = self.render(self.frame);
        self.frame += 1;
        Ok(Some(t))
    }

    fn native_fps(&self) -> Option<f64> {
        Some(TEST_PATTERN_FPS)
    }

    fn describe(&self) -> String {
        "test pattern".to_string()
    }
}

/// A bright, saturated BGR colour derived from `name` (FNV-1a hash to a hue).
pub fn user_color(name: &str) -> [u8; 3] {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let hue = f64::from(h % 360);
    let (s, v) = (0.85, 0.95);
    let c = v * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |f: f64| ((f + m) * 255.0).round() as u8;
    [to(b), to(g), to(r)]
}

/// A frame with gradients and pseudo-random grain, shifted by `n`: content whose
/// JPEG size is of the order of a webcam's, unlike flat test patterns.
pub fn textured(color: [u8; 3], h: usize, w: usize, n: usize) -> Tensor {
    let mut data = Vec::with_capacity(h * w * 3);
    let mut seed = 0x9e37_79b9u32 ^ (n as u32).wrapping_mul(2_654_435_761);
    for y in 0..h {
        for x in 0..w {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let grain = (seed % 24) as usize;
            let wave = ((x + 3 * n) * 96 / w.max(1) + (y * 64 / h.max(1))) % 96;
            for c in color {
                data.push(((c as usize * 2 / 3) + wave / 2 + grain).min(255) as u8);
            }
        }
    }
    Tensor::image(h, w, 3, Bytes::from(data)).expect("buffer matches shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_has_shape_and_moves() {
        let p = TestPattern::new("alice", 20, 30);
        let a = p.render(0);
        let b = p.render(1);
        assert_eq!(a.shape(), &[20, 30, 3]);
        assert_ne!(a.data(), b.data());
    }

    #[test]
    fn users_get_different_colours() {
        assert_ne!(user_color("alice"), user_color("bob"));
        assert_eq!(user_color("alice"), user_color("alice"));
    }

    #[test]
    fn solid_is_one_colour() {
        let t = TestPattern::solid([1, 2, 3], 2, 2).render(5);
        assert!(t.data().chunks(3).all(|p| p == [1, 2, 3]));
    }
}
