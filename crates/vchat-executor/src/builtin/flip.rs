//! Flip: frames mirrored left to right, upside down, or both.

use serde::Deserialize;
use vchat_core::ndarray::{Array3, ArrayView3, s};
use vchat_core::{DocumentArray, Error, Executor, Registry, RequestContext, Tensor, async_trait};

use super::common::map_arrays;

/// The jtype it registers under.
pub const JTYPE: &str = "Flip";

/// Which way [`Flip`] mirrors.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlipAxis {
    /// Left to right (a selfie mirror).
    #[default]
    Horizontal,
    /// Upside down.
    Vertical,
    /// Both.
    Both,
}

/// `with:` of Flip.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlipConfig {
    /// `horizontal` (default), `vertical` or `both`.
    #[serde(default)]
    pub axis: FlipAxis,
}

/// Mirrors frames.
pub struct Flip {
    name: String,
    axis: FlipAxis,
}

impl Flip {
    /// Builds it.
    pub fn new(c: FlipConfig, name: &str) -> Result<Self, String> {
        Ok(Flip {
            name: name.into(),
            axis: c.axis,
        })
    }
}

/// `frame` (height × width × channels) mirrored about `axis`: a reversed view,
/// copied once into a new array.
pub fn mirror(frame: ArrayView3<'_, u8>, axis: FlipAxis) -> Array3<u8> {
    let mirrored = match axis {
        FlipAxis::Horizontal => frame.slice_move(s![.., ..;-1, ..]),
        FlipAxis::Vertical => frame.slice_move(s![..;-1, .., ..]),
        FlipAxis::Both => frame.slice_move(s![..;-1, ..;-1, ..]),
    };
    mirrored.as_standard_layout().into_owned()
}

/// The image `frame` mirrored about `axis`; an error when it is not a uint8
/// image.
pub fn flip(frame: &Tensor, axis: FlipAxis) -> Result<Tensor, Error> {
    Tensor::from_array(mirror(frame.image_view()?, axis))
}

#[async_trait]
impl Executor for Flip {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        map_arrays(&self.name, docs, |frame| mirror(frame, self.axis))
    }
}

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, Flip::new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn flips() {
        // 1x2 frame: pixel values 1 then 2.
        let t = Tensor::image(1, 2, 3, Bytes::from_static(&[1, 1, 1, 2, 2, 2])).unwrap();
        assert_eq!(
            &flip(&t, FlipAxis::Horizontal).unwrap().data()[..],
            &[2, 2, 2, 1, 1, 1]
        );
        assert_eq!(flip(&t, FlipAxis::Vertical).unwrap(), t);
    }

    #[test]
    fn channels_keep_their_order_and_rows_their_place() {
        // 2x2, each pixel [y, x, 9].
        let px: Vec<u8> = (0..2u8)
            .flat_map(|y| (0..2u8).flat_map(move |x| [y, x, 9]))
            .collect();
        let t = Tensor::image(2, 2, 3, Bytes::from(px)).unwrap();
        let h = flip(&t, FlipAxis::Horizontal).unwrap();
        assert_eq!(&h.data()[..], &[0, 1, 9, 0, 0, 9, 1, 1, 9, 1, 0, 9]);
        let v = flip(&t, FlipAxis::Vertical).unwrap();
        assert_eq!(&v.data()[..], &[1, 0, 9, 1, 1, 9, 0, 0, 9, 0, 1, 9]);
        let both = flip(&t, FlipAxis::Both).unwrap();
        assert_eq!(&both.data()[..], &[1, 1, 9, 1, 0, 9, 0, 1, 9, 0, 0, 9]);
        let f = Tensor::new(vchat_core::DType::F32, vec![1], Bytes::from(vec![0; 4])).unwrap();
        assert!(flip(&f, FlipAxis::Both).is_err());
    }
}
