//! JPEG frames: what a compact client sends as a `blob` with `mime_type`
//! `image/jpeg`, converted from and to the BGR uint8 H×W×3 pixels of a raw frame.
//!
//! libjpeg-turbo (through the `turbojpeg` crate, built from the source it
//! bundles) encodes and decodes: measured against the pure-Rust jpeg-encoder
//! and jpeg-decoder in the micro-benchmarks (BENCHMARKS.md), it is the faster
//! on canvases, frames and tiles, and it shrinks while decoding. It parses what
//! peers send, so every declared size is checked before anything is allocated,
//! and a progressive JPEG has at most [`MAX_JPEG_SCANS`] scans.

use std::cell::RefCell;

use bytes::Bytes;

use crate::{Content, Document, Error, Tensor};

/// The MIME type of a JPEG frame.
pub const MIME_JPEG: &str = "image/jpeg";
/// Default JPEG quality (1 to 100).
pub const DEFAULT_QUALITY: u8 = 80;

/// Encodes BGR `h`×`w`×3 pixels as a JPEG of `quality` (clamped to 1..=100),
/// 4:2:0 below quality 90 and 4:4:4 from 90 on.
pub fn encode_bgr(pixels: &[u8], h: usize, w: usize, quality: u8) -> Result<Bytes, Error> {
    if h.checked_mul(w).and_then(|n| n.checked_mul(3)) != Some(pixels.len()) {
        return Err(Error::BadRequest(format!(
            "{} bytes are not a {h}x{w}x3 frame",
            pixels.len()
        )));
    }
    if h == 0 || w == 0 || h > 65535 || w > 65535 {
        return Err(Error::BadRequest(format!(
            "a {h}x{w} frame cannot be a JPEG (1 to 65535 pixels a side)"
        )));
    }
    let quality = quality.clamp(1, 100);
    let failed = |e: turbojpeg::Error| Error::BadRequest(format!("cannot encode JPEG: {e}"));
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            None => slot.insert(turbojpeg::Compressor::new().map_err(failed)?),
        };
        compressor.set_quality(i32::from(quality)).map_err(failed)?;
        compressor
            .set_subsamp(if quality < 90 {
                turbojpeg::Subsamp::Sub2x2
            } else {
                turbojpeg::Subsamp::None
            })
            .map_err(failed)?;
        let image = turbojpeg::Image {
            pixels,
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::BGR,
        };
        compressor
            .compress_to_vec(image)
            .map(Bytes::from)
            .map_err(failed)
    })
}

thread_local! {
    /// Made once per thread: a compressor's set-up costs as much as encoding a
    /// small frame.
    static COMPRESSOR: RefCell<Option<turbojpeg::Compressor>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

/// The most scans a progressive JPEG may have: each scan is another pass over
/// the whole image, so a small file of many scans would cost a lot of CPU.
pub const MAX_JPEG_SCANS: u32 = 100;

/// Decodes `data` into BGR pixels, shrunk by `denom` (1, 2, 4 or 8) in the
/// inverse DCT: `(pixels, height, width)`. The declared size is checked against
/// `max_pixels` before anything is allocated.
fn decode_scaled(
    data: &[u8],
    max_pixels: usize,
    pick: impl FnOnce(usize, usize) -> usize,
) -> Result<(Bytes, usize, usize), Error> {
    let bad = |e: turbojpeg::Error| Error::BadRequest(format!("not a valid JPEG: {e}"));
    DECOMPRESSOR.with(|d| {
        let mut slot = d.borrow_mut();
        let decompressor = match &mut *slot {
            Some(d) => d,
            None => {
                let mut d = turbojpeg::Decompressor::new().map_err(bad)?;
                d.set_scan_limit(MAX_JPEG_SCANS).map_err(bad)?;
                slot.insert(d)
            }
        };
        let header = decompressor.read_header(data).map_err(bad)?;
        let (h, w) = (header.height, header.width);
        if h == 0 || w == 0 || w.checked_mul(h).is_none_or(|px| px > max_pixels) {
            return Err(Error::BadRequest(format!(
                "a {h}x{w} JPEG is over the limit of {max_pixels} pixels"
            )));
        }
        // Lossless JPEGs cannot be scaled.
        let denom = if header.is_lossless { 1 } else { pick(h, w) };
        let scale = turbojpeg::ScalingFactor::new(1, denom);
        decompressor.set_scaling_factor(scale).map_err(bad)?;
        let scaled = header.scaled(scale);
        let (sh, sw) = (scaled.height, scaled.width);
        // At most h×w×3, checked above.
        let mut pixels = vec![0u8; sh * sw * 3];
        let image = turbojpeg::Image {
            pixels: &mut pixels[..],
            width: sw,
            pitch: sw * 3,
            height: sh,
            format: turbojpeg::PixelFormat::BGR,
        };
        decompressor.decompress(data, image).map_err(bad)?;
        Ok((Bytes::from(pixels), sh, sw))
    })
}

/// Decodes a JPEG into BGR pixels: `(pixels, height, width)`. `max_pixels`
/// bounds the declared size before any pixel is decoded, so a tiny file cannot
/// ask for a huge buffer.
pub fn decode_bgr(data: &[u8], max_pixels: usize) -> Result<(Bytes, usize, usize), Error> {
    decode_scaled(data, max_pixels, |_, _| 1)
}

/// Decodes a JPEG into BGR pixels at least `fit` (height, width) in both axes,
/// shrunk while decoding (by 1/2, 1/4 or 1/8, in the inverse DCT) as far as
/// that still holds: a thumbnail for a grid tile costs a fraction of a full
/// decode. A JPEG less than twice `fit` in either axis is decoded whole.
pub fn decode_bgr_to_fit(
    data: &[u8],
    max_pixels: usize,
    (fit_h, fit_w): (usize, usize),
) -> Result<(Bytes, usize, usize), Error> {
    decode_scaled(data, max_pixels, |h, w| {
        // The scaled size rounds up, as libjpeg-turbo's does.
        [8, 4, 2]
            .into_iter()
            .find(|&d| h.div_ceil(d) >= fit_h.max(1) && w.div_ceil(d) >= fit_w.max(1))
            .unwrap_or(1)
    })
}

/// The frame a document carries, as a BGR tensor: its tensor, or its JPEG blob
/// decoded. `None` when it has neither.
pub fn frame_of(doc: &Document, max_pixels: usize) -> Option<Result<Tensor, Error>> {
    match &doc.content {
        Some(Content::Tensor(t)) => Some(Ok(t.clone())),
        Some(Content::Blob(b)) if is_jpeg(doc) => {
            Some(decode_bgr(b, max_pixels).and_then(|(px, h, w)| Tensor::image(h, w, 3, px)))
        }
        _ => None,
    }
}

/// Whether `doc` holds a JPEG blob (its MIME type says so).
pub fn is_jpeg(doc: &Document) -> bool {
    doc.jpeg().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_colours_close() {
        let (h, w) = (16, 24);
        let mut px = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            for _ in 0..w {
                // BGR: top half blue, bottom half red.
                px.extend_from_slice(if y < h / 2 {
                    &[200, 30, 20]
                } else {
                    &[20, 40, 210]
                });
            }
        }
        let jpeg = encode_bgr(&px, h, w, 90).unwrap();
        assert!(jpeg.len() < px.len());
        let (out, oh, ow) = decode_bgr(&jpeg, 1 << 20).unwrap();
        assert_eq!((oh, ow), (h, w));
        let top = &out[(2 * w + 3) * 3..][..3];
        let bottom = &out[((h - 2) * w + 3) * 3..][..3];
        for (got, want) in [(top, [200u8, 30, 20]), (bottom, [20, 40, 210])] {
            for c in 0..3 {
                assert!(got[c].abs_diff(want[c]) < 20, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn decoding_to_fit_shrinks_and_keeps_colours() {
        let (h, w) = (200, 300);
        let px: Vec<u8> = (0..h * w).flat_map(|_| [200u8, 30, 20]).collect();
        let jpeg = encode_bgr(&px, h, w, 90).unwrap();
        let (out, oh, ow) = decode_bgr_to_fit(&jpeg, 1 << 20, (48, 64)).unwrap();
        assert_eq!(
            (oh, ow),
            (50, 75),
            "1/4 is the smallest scale that still fits"
        );
        for got in out.chunks(3) {
            for (g, want) in got.iter().zip([200u8, 30, 20]) {
                assert!(g.abs_diff(want) < 20, "{got:?} is BGR (200, 30, 20)");
            }
        }
        let (_, fh, fw) = decode_bgr_to_fit(&jpeg, 1 << 20, (150, 100)).unwrap();
        assert_eq!((fh, fw), (h, w), "less than half: decoded at full size");
        assert!(
            decode_bgr_to_fit(&jpeg, 100, (10, 10)).is_err(),
            "pixel limit"
        );
        assert!(decode_bgr_to_fit(b"garbage", 1 << 20, (10, 10)).is_err());
        let (_, fh, fw) = decode_bgr_to_fit(&jpeg, 1 << 20, (usize::MAX, usize::MAX)).unwrap();
        assert_eq!((fh, fw), (h, w), "a huge tile: decoded at full size");
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let jpeg = encode_bgr(&[0u8; 10 * 10 * 3], 10, 10, 50).unwrap();
        assert!(
            decode_bgr(&jpeg, 99)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert!(decode_bgr(b"not a jpeg", 1 << 20).is_err());
        assert!(encode_bgr(&[0u8; 5], 1, 2, 50).is_err());
    }
}
