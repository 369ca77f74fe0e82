//! A frame's pixels with its size: what the mosaic and the chat's rooms hold.

use vchat_core::{DType, Error, Rope, Tensor};

/// A C-order height × width × 3 (BGR) frame: its pixels and its size.
///
/// The pixels are a [`Rope`]: a frame stacked from others (a vertical mosaic)
/// keeps theirs as its pieces instead of copying them. Any three values make one: the mosaic functions check that the pixels fit
/// the size before they use them, and [`Frame::into_tensor`] checks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Row by row, 3 bytes a pixel.
    pub pixels: Rope,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Frame {
    /// A frame of `pixels`, `height` rows of `width` pixels.
    pub fn new(pixels: impl Into<Rope>, height: usize, width: usize) -> Self {
        Frame {
            pixels: pixels.into(),
            height,
            width,
        }
    }

    /// The pixels of an H×W×3 uint8 tensor (no copy), or what it is instead.
    pub fn of_tensor(tensor: &Tensor) -> Result<Self, String> {
        let (height, width) = tensor.frame_dims()?;
        Ok(Frame::new(tensor.rope().clone(), height, width))
    }

    /// `(height, width)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Height × width, saturating.
    pub fn pixel_count(&self) -> usize {
        self.height.saturating_mul(self.width)
    }

    /// The frame as an H×W×3 uint8 tensor (no copy); an error when the pixels do
    /// not fit the size.
    pub fn into_tensor(self) -> Result<Tensor, Error> {
        Tensor::from_rope(DType::U8, vec![self.height, self.width, 3], self.pixels)
    }

    /// The pixels in one buffer (joined once if the frame is stacked).
    pub fn bytes(&self) -> &bytes::Bytes {
        self.pixels.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn tensor_round_trip_shares_the_pixels() {
        let px = Bytes::from(vec![5u8; 2 * 3 * 3]);
        let f = Frame::new(px.clone(), 2, 3);
        assert_eq!((f.dims(), f.pixel_count()), ((2, 3), 6));
        let t = f.clone().into_tensor().unwrap();
        assert_eq!(t.data().as_ptr(), px.as_ptr());
        assert_eq!(Frame::of_tensor(&t).unwrap(), f);
        let stacked = Rope::from_pieces(vec![px.clone(), px.clone()]).unwrap();
        let t = Frame::new(stacked, 4, 3).into_tensor().unwrap();
        assert_eq!(t.rope().pieces()[1].as_ptr(), px.as_ptr());
        assert!(Frame::new(px, 3, 3).into_tensor().is_err());
        let gray = Tensor::image(1, 1, 1, Bytes::from_static(&[0])).unwrap();
        assert!(Frame::of_tensor(&gray).is_err());
        assert_eq!(
            Frame::new(Bytes::new(), usize::MAX, 2).pixel_count(),
            usize::MAX
        );
    }
}
