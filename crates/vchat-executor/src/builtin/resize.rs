//! Resize: frames scaled to a fixed size (nearest neighbour).

use serde::Deserialize;
use vchat_core::{DocumentArray, Error, Executor, Registry, RequestContext, Tensor, async_trait};

use super::common::map_frames;

/// The jtype it registers under.
pub const JTYPE: &str = "Resize";
/// Largest side of a [`Resize`] output, in pixels.
pub const RESIZE_MAX_SIDE: usize = 8192;

/// `with:` of Resize.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeConfig {
    /// Output height in pixels.
    pub height: usize,
    /// Output width in pixels.
    pub width: usize,
}

/// Resizes frames to a fixed size (nearest neighbour).
pub struct Resize {
    name: String,
    height: usize,
    width: usize,
}

impl Resize {
    /// Builds it.
    pub fn new(c: ResizeConfig, name: &str) -> Result<Self, String> {
        let side = 1..=RESIZE_MAX_SIDE;
        if !side.contains(&c.height) || !side.contains(&c.width) {
            return Err(format!(
                "with.height and with.width must be 1 to {RESIZE_MAX_SIDE}, got {}x{}",
                c.height, c.width
            ));
        }
        Ok(Resize {
            name: name.into(),
            height: c.height,
            width: c.width,
        })
    }
}

/// `frame`, an `h`×`w` image, resized to `nh`×`nw` (nearest neighbour); an
/// error when `h`×`w` is not its shape or `nh`×`nw` is over
/// [`RESIZE_MAX_SIDE`] squared.
pub fn resize(frame: &Tensor, h: usize, w: usize, nh: usize, nw: usize) -> Result<Tensor, String> {
    let limit = RESIZE_MAX_SIDE * RESIZE_MAX_SIDE;
    let px = crate::mosaic::resize(frame.data(), h, w, nh, nw, limit).map_err(|e| e.to_string())?;
    Tensor::image(nh, nw, 3, px).map_err(|e| e.to_string())
}

#[async_trait]
impl Executor for Resize {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        map_frames(&self.name, docs, |f, h, w| {
            resize(f, h, w, self.height, self.width)
        })
    }
}

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, Resize::new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn resizes() {
        // 1x2 frame: pixel values 1 then 2.
        let t = Tensor::image(1, 2, 3, Bytes::from_static(&[1, 1, 1, 2, 2, 2])).unwrap();
        let big = resize(&t, 1, 2, 2, 4).unwrap();
        assert_eq!(big.shape(), &[2, 4, 3]);
        assert_eq!(
            big.data().chunks(3).map(|p| p[0]).collect::<Vec<_>>(),
            [1, 1, 2, 2, 1, 1, 2, 2]
        );
        // A shape that is not the frame's, or an output past the limit: errors.
        assert!(resize(&t, 2, 2, 2, 4).is_err());
        assert!(resize(&t, usize::MAX, 2, 2, 4).is_err());
        assert!(resize(&t, 1, 2, 100_000, 100_000).is_err());
    }

    #[test]
    fn sides_are_checked() {
        assert!(
            Resize::new(
                ResizeConfig {
                    height: 0,
                    width: 3
                },
                "r"
            )
            .is_err()
        );
    }
}
