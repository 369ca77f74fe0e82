//! JPEG frames: what a compact client sends as a `blob` with `mime_type`
//! `image/jpeg`, converted from and to the BGR uint8 H×W×3 pixels of a raw frame.
//!
//! Pure Rust (zune-jpeg to decode, jpeg-encoder with SIMD to encode), so that
//! neither the executor nor the server needs a C codec library.

use bytes::Bytes;

use crate::{Content, Document, Error, Tensor};

/// The MIME type of a JPEG frame.
pub const MIME_JPEG: &str = "image/jpeg";
/// Default JPEG quality (1 to 100).
pub const DEFAULT_QUALITY: u8 = 80;

/// Encodes BGR `h`×`w`×3 pixels as a JPEG of `quality` (clamped to 1..=100).
pub fn encode_bgr(pixels: &[u8], h: usize, w: usize, quality: u8) -> Result<Bytes, Error> {
    if h.checked_mul(w).and_then(|n| n.checked_mul(3)) != Some(pixels.len()) {
        return Err(Error::BadRequest(format!(
            "{} bytes are not a {h}x{w}x3 frame",
            pixels.len()
        )));
    }
    let (Ok(h16), Ok(w16)) = (u16::try_from(h), u16::try_from(w)) else {
        return Err(Error::BadRequest(format!(
            "a {h}x{w} frame is too large for JPEG (65535 at most)"
        )));
    };
    let mut out = Vec::with_capacity(h * w / 4 + 1024);
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder
        .encode(pixels, w16, h16, jpeg_encoder::ColorType::Bgr)
        .map_err(|e| Error::BadRequest(format!("cannot encode JPEG: {e}")))?;
    Ok(Bytes::from(out))
}

/// Decodes a JPEG into BGR pixels: `(pixels, height, width)`. `max_pixels`
/// bounds the declared size before any pixel is decoded, so a tiny file cannot
/// ask for a huge buffer.
pub fn decode_bgr(data: &[u8], max_pixels: usize) -> Result<(Bytes, usize, usize), Error> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let side = max_pixels.clamp(1, 65535);
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::BGR)
        .set_max_width(side)
        .set_max_height(side);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(data, options);
    decoder
        .decode_headers()
        .map_err(|e| Error::BadRequest(format!("not a valid JPEG: {e}")))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| Error::BadRequest("not a valid JPEG: no dimensions".into()))?;
    if w.checked_mul(h).is_none_or(|px| px > max_pixels) {
        return Err(Error::BadRequest(format!(
            "a {h}x{w} JPEG is over the limit of {max_pixels} pixels"
        )));
    }
    let pixels = decoder
        .decode()
        .map_err(|e| Error::BadRequest(format!("not a valid JPEG: {e}")))?;
    if pixels.len() != h * w * 3 {
        return Err(Error::BadRequest(format!(
            "JPEG decoded to {} bytes, expected {h}x{w}x3",
            pixels.len()
        )));
    }
    Ok((Bytes::from(pixels), h, w))
}

/// Decodes a JPEG into BGR pixels at least `fit` (height, width) in one axis,
/// shrunk while decoding (by 1/2, 1/4 or 1/8, in the inverse DCT) when it is
/// at least twice as large: a thumbnail for a grid tile costs a fraction of a
/// full decode. Otherwise, or for JPEGs that are not colour, as [`decode_bgr`].
pub fn decode_bgr_to_fit(
    data: &[u8],
    max_pixels: usize,
    (fit_h, fit_w): (usize, usize),
) -> Result<(Bytes, usize, usize), Error> {
    let bad = |e: jpeg_decoder::Error| Error::BadRequest(format!("not a valid JPEG: {e}"));
    let mut decoder = jpeg_decoder::Decoder::new(data);
    decoder.read_info().map_err(bad)?;
    let Some(info) = decoder.info() else {
        return decode_bgr(data, max_pixels);
    };
    let (h, w) = (usize::from(info.height), usize::from(info.width));
    if w.checked_mul(h).is_none_or(|px| px > max_pixels) {
        return Err(Error::BadRequest(format!(
            "a {h}x{w} JPEG is over the limit of {max_pixels} pixels"
        )));
    }
    // `fit` comes from a configured canvas, however large: no overflow.
    let small = fit_h.max(1).saturating_mul(2) <= h && fit_w.max(1).saturating_mul(2) <= w;
    if !small || info.pixel_format != jpeg_decoder::PixelFormat::RGB24 {
        return decode_bgr(data, max_pixels);
    }
    // Both fit within u16: they are at most half the JPEG's own size.
    let (sw, sh) = decoder
        .scale(fit_w.max(1) as u16, fit_h.max(1) as u16)
        .map_err(bad)?;
    let (sh, sw) = (usize::from(sh), usize::from(sw));
    let mut pixels = decoder.decode().map_err(bad)?;
    if pixels.len() != sh * sw * 3 {
        return Err(Error::BadRequest(format!(
            "JPEG decoded to {} bytes, expected {sh}x{sw}x3",
            pixels.len()
        )));
    }
    for px in pixels.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    Ok((Bytes::from(pixels), sh, sw))
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
