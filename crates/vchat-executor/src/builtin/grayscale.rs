//! Grayscale: each pixel moved part or all of the way to its luma (BT.601).

use serde::Deserialize;
use vchat_core::ndarray::{Array3, ArrayView3, Axis};
use vchat_core::{DocumentArray, Error, Executor, Registry, RequestContext, Tensor, async_trait};

use super::common::{map_arrays, number_param, reject};

/// The jtype it registers under.
pub const JTYPE: &str = "Grayscale";
/// Default share of gray: fully gray.
pub const DEFAULT_MIX: f64 = 1.0;

/// `with:` of Grayscale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrayscaleConfig {
    /// Share of gray, 0.0 (unchanged) to 1.0 (fully gray); the request parameter
    /// `mix` overrides it.
    #[serde(default = "default_mix")]
    pub mix: f64,
}

fn default_mix() -> f64 {
    DEFAULT_MIX
}

/// Turns frames gray (BT.601 luma).
pub struct Grayscale {
    name: String,
    mix: f64,
}

impl Grayscale {
    /// Builds it.
    pub fn new(c: GrayscaleConfig, name: &str) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&c.mix) {
            return Err(format!(
                "with.mix must be between 0.0 and 1.0, got {}",
                c.mix
            ));
        }
        Ok(Grayscale {
            name: name.into(),
            mix: c.mix,
        })
    }
}

/// Each BGR pixel of `frame` moved `mix` of the way to its luma; channels past
/// the third (alpha) are kept, and a frame of fewer than three is returned as it
/// is.
pub fn to_gray(frame: ArrayView3<'_, u8>, mix: f64) -> Array3<u8> {
    let mut out = frame.as_standard_layout().into_owned();
    if frame.dim().2 < 3 {
        return out;
    }
    let m = (mix * 256.0).round() as i32;
    for mut px in out.lanes_mut(Axis(2)) {
        let (b, g, r) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        let y = (29 * b + 150 * g + 77 * r) >> 8;
        let blend = |c: i32| (c + (((y - c) * m) >> 8)) as u8;
        px[0] = blend(b);
        px[1] = blend(g);
        px[2] = blend(r);
    }
    out
}

/// The image `frame` moved `mix` of the way to gray; an error when it is not a
/// uint8 image.
pub fn grayscale(frame: &Tensor, mix: f64) -> Result<Tensor, Error> {
    Tensor::from_array(to_gray(frame.image_view()?, mix))
}

#[async_trait]
impl Executor for Grayscale {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let mix = match number_param(ctx, "mix") {
            None => self.mix,
            Some(Ok(m)) if (0.0..=1.0).contains(&m) => m,
            Some(Ok(m)) => {
                return Err(reject(
                    &self.name,
                    format!("parameter mix must be 0.0 to 1.0, got {m}"),
                ));
            }
            Some(Err(e)) => return Err(reject(&self.name, e)),
        };
        map_arrays(&self.name, docs, |frame| to_gray(frame, mix))
    }
}

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, Grayscale::new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn gray_of_red() {
        let t = Tensor::image(1, 1, 3, Bytes::from_static(&[0, 0, 255])).unwrap();
        assert_eq!(&grayscale(&t, 1.0).unwrap().data()[..], &[76, 76, 76]);
        assert_eq!(grayscale(&t, 0.0).unwrap(), t);
    }

    #[test]
    fn mix_is_checked() {
        assert!(Grayscale::new(GrayscaleConfig { mix: 2.0 }, "g").is_err());
        let c: GrayscaleConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(c.mix, DEFAULT_MIX);
    }

    #[test]
    fn alpha_is_kept_and_one_channel_is_already_gray() {
        let bgra = Tensor::image(1, 1, 4, Bytes::from_static(&[0, 0, 255, 7])).unwrap();
        assert_eq!(&grayscale(&bgra, 1.0).unwrap().data()[..], &[76, 76, 76, 7]);
        let mono = Tensor::image(1, 2, 1, Bytes::from_static(&[3, 4])).unwrap();
        assert_eq!(grayscale(&mono, 1.0).unwrap(), mono);
    }
}
