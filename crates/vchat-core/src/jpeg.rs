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

use crate::yuv::Yuv420;
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
    let failed = |e: turbojpeg::Error| Error::BadRequest(format!("cannot encode JPEG: {e}"));
    with_compressor(quality, |compressor| {
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

/// Runs `f` with this thread's compressor, made on first use, set to
/// `quality` (clamped to 1..=100).
fn with_compressor<T>(
    quality: u8,
    f: impl FnOnce(&mut turbojpeg::Compressor) -> Result<T, Error>,
) -> Result<T, Error> {
    let failed = |e: turbojpeg::Error| Error::BadRequest(format!("cannot encode JPEG: {e}"));
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            None => slot.insert(turbojpeg::Compressor::new().map_err(failed)?),
        };
        compressor
            .set_quality(i32::from(quality.clamp(1, 100)))
            .map_err(failed)?;
        f(compressor)
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

/// A declared `h`x`w` JPEG has pixels, and no more than `max_pixels`.
fn within_limit(h: usize, w: usize, max_pixels: usize) -> Result<(), Error> {
    if h == 0 || w == 0 || w.checked_mul(h).is_none_or(|px| px > max_pixels) {
        return Err(Error::BadRequest(format!(
            "a {h}x{w} JPEG is over the limit of {max_pixels} pixels"
        )));
    }
    Ok(())
}

fn not_jpeg(e: turbojpeg::Error) -> Error {
    Error::BadRequest(format!("not a valid JPEG: {e}"))
}

/// Runs `f` with this thread's decompressor, made on first use.
fn with_decompressor<T>(
    f: impl FnOnce(&mut turbojpeg::Decompressor) -> Result<T, Error>,
) -> Result<T, Error> {
    DECOMPRESSOR.with(|d| {
        let mut slot = d.borrow_mut();
        let decompressor = match &mut *slot {
            Some(d) => d,
            None => {
                let mut d = turbojpeg::Decompressor::new().map_err(not_jpeg)?;
                d.set_scan_limit(MAX_JPEG_SCANS).map_err(not_jpeg)?;
                slot.insert(d)
            }
        };
        f(decompressor)
    })
}

/// Reads `data`'s header into `decompressor`, checks its size against
/// `max_pixels` and sets the scaling `pick` chooses (1, 2, 4 or 8, from the
/// declared `(height, width)`): the header and the scaled `(height, width)`.
fn scaled_header(
    decompressor: &mut turbojpeg::Decompressor,
    data: &[u8],
    max_pixels: usize,
    pick: impl FnOnce(usize, usize) -> usize,
) -> Result<(turbojpeg::DecompressHeader, usize, usize), Error> {
    let header = decompressor.read_header(data).map_err(not_jpeg)?;
    let (h, w) = (header.height, header.width);
    within_limit(h, w, max_pixels)?;
    // Lossless JPEGs cannot be scaled.
    let denom = if header.is_lossless { 1 } else { pick(h, w) };
    let scale = turbojpeg::ScalingFactor::new(1, denom);
    decompressor.set_scaling_factor(scale).map_err(not_jpeg)?;
    let scaled = header.scaled(scale);
    Ok((header, scaled.height, scaled.width))
}

/// Decodes `data` into BGR pixels, shrunk by `denom` (1, 2, 4 or 8) in the
/// inverse DCT: `(pixels, height, width)`. The declared size is checked against
/// `max_pixels` before anything is allocated.
fn decode_scaled(
    data: &[u8],
    max_pixels: usize,
    pick: impl FnOnce(usize, usize) -> usize,
) -> Result<(Bytes, usize, usize), Error> {
    with_decompressor(|decompressor| {
        let (_, sh, sw) = scaled_header(decompressor, data, max_pixels, pick)?;
        // At most h×w×3, checked above.
        let mut pixels = vec![0u8; sh * sw * 3];
        let image = turbojpeg::Image {
            pixels: &mut pixels[..],
            width: sw,
            pitch: sw * 3,
            height: sh,
            format: turbojpeg::PixelFormat::BGR,
        };
        decompressor.decompress(data, image).map_err(not_jpeg)?;
        Ok((Bytes::from(pixels), sh, sw))
    })
}

/// The smallest scaling (1/8, 1/4 or 1/2, else 1) of an `h`x`w` JPEG that is
/// still at least `fit` in both axes; the scaled size rounds up, as
/// libjpeg-turbo's does.
fn fitting_denom((fit_h, fit_w): (usize, usize), h: usize, w: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&d| h.div_ceil(d) >= fit_h.max(1) && w.div_ceil(d) >= fit_w.max(1))
        .unwrap_or(1)
}

/// Decodes a JPEG into a YCbCr 4:2:0 picture at least `fit` (height, width)
/// in both axes, shrunk while decoding as [`decode_bgr_to_fit`] does. A 4:2:0
/// YCbCr JPEG (what cameras, browsers and this crate's encoder make) is
/// decoded straight to its planes, without converting colours or resampling
/// chroma; any other is decoded to BGR and converted. The declared size is
/// checked against `max_pixels` before anything is allocated.
pub fn decode_yuv420_to_fit(
    data: &[u8],
    max_pixels: usize,
    fit: (usize, usize),
) -> Result<Yuv420, Error> {
    let planes = with_decompressor(|decompressor| {
        let (header, sh, sw) = scaled_header(decompressor, data, max_pixels, |h, w| {
            fitting_denom(fit, h, w)
        })?;
        // libjpeg-turbo writes the planes of the subsampling the frame header
        // says: the header read must be this stream's own (see checked_dims),
        // and of the layout the buffer is sized for.
        let direct = header.subsamp == turbojpeg::Subsamp::Sub2x2
            && header.colorspace == turbojpeg::Colorspace::YCbCr
            && frame_size(data) == Some((header.height, header.width));
        if !direct {
            return Ok(None);
        }
        let len = Yuv420::buffer_len(sh, sw)
            .filter(|&n| turbojpeg::yuv_pixels_len(sw, 1, sh, header.subsamp).ok() == Some(n))
            .ok_or_else(|| Error::BadRequest(format!("a {sh}x{sw} JPEG has no 4:2:0 layout")))?;
        let mut pixels = vec![0u8; len];
        let image = turbojpeg::YuvImage {
            pixels: &mut pixels[..],
            width: sw,
            align: 1,
            height: sh,
            subsamp: header.subsamp,
        };
        decompressor
            .decompress_to_yuv(data, image)
            .map_err(not_jpeg)?;
        let mut planes = Yuv420::from_data(sh, sw, pixels);
        if let Some(p) = &mut planes {
            p.repeat_edges();
        }
        Ok(planes)
    })?;
    match planes {
        Some(p) => Ok(p),
        None => {
            let (px, h, w) = decode_bgr_to_fit(data, max_pixels, fit)?;
            Yuv420::from_bgr(&px, h, w)
                .ok_or_else(|| Error::BadRequest(format!("a {h}x{w} JPEG has no 4:2:0 layout")))
        }
    }
}

/// Encodes a YCbCr 4:2:0 picture as a JPEG of `quality` (clamped to 1..=100).
pub fn encode_yuv420(picture: &Yuv420, quality: u8) -> Result<Bytes, Error> {
    let (h, w) = picture.dims();
    if h > 65535 || w > 65535 {
        return Err(Error::BadRequest(format!(
            "a {h}x{w} frame cannot be a JPEG (1 to 65535 pixels a side)"
        )));
    }
    let failed = |e: turbojpeg::Error| Error::BadRequest(format!("cannot encode JPEG: {e}"));
    with_compressor(quality, |compressor| {
        let image = turbojpeg::YuvImage {
            pixels: picture.data(),
            width: w,
            align: 1,
            height: h,
            subsamp: turbojpeg::Subsamp::Sub2x2,
        };
        compressor
            .compress_yuv_to_vec(image)
            .map(Bytes::from)
            .map_err(failed)
    })
}

/// The `(height, width)` a JPEG declares, checked as far as can be without
/// decoding it: a header libjpeg-turbo reads, a size within `max_pixels`, and
/// an end-of-image marker (a truncated frame has none). What is kept to be
/// decoded later passes this first; its entropy-coded data can still be bad.
pub fn checked_dims(data: &[u8], max_pixels: usize) -> Result<(usize, usize), Error> {
    // libjpeg-turbo takes a stream of tables alone (no frame) for a header,
    // and leaves the previous header's size in place: the frame's own marker
    // must be there, and say the same.
    let declared = frame_size(data).ok_or_else(|| {
        Error::BadRequest("not a valid JPEG: no frame header before the first scan".into())
    })?;
    let header = with_decompressor(|d| d.read_header(data).map_err(not_jpeg))?;
    let (h, w) = (header.height, header.width);
    if (h, w) != declared {
        return Err(Error::BadRequest(format!(
            "not a valid JPEG: its frame header says {}x{}, its decoder {h}x{w}",
            declared.0, declared.1
        )));
    }
    within_limit(h, w, max_pixels)?;
    // Encoders may pad after the marker; nothing but zeros may follow it.
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if !data[..end].ends_with(&[0xFF, 0xD9]) {
        return Err(Error::BadRequest(
            "not a valid JPEG: it has no end-of-image marker (truncated?)".into(),
        ));
    }
    Ok((h, w))
}

/// `(height, width)` of the frame header (SOFn) that comes before the first
/// scan, walking the marker segments from the start: `None` without one.
fn frame_size(data: &[u8]) -> Option<(usize, usize)> {
    let u16_at = |i: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *data.get(i)?,
            *data.get(i + 1)?,
        ])))
    };
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        if *data.get(at)? != 0xFF {
            return None;
        }
        // Fill bytes may come before a marker.
        while *data.get(at + 1)? == 0xFF {
            at += 1;
        }
        let marker = *data.get(at + 1)?;
        match marker {
            // Markers without a segment.
            0x01 | 0xD0..=0xD7 => at += 2,
            // A scan before any frame header.
            0xDA | 0xD9 => return None,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Some((u16_at(at + 5)?, u16_at(at + 7)?));
            }
            _ => at = at.checked_add(2 + u16_at(at + 2)?)?,
        }
    }
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
    fit: (usize, usize),
) -> Result<(Bytes, usize, usize), Error> {
    decode_scaled(data, max_pixels, |h, w| fitting_denom(fit, h, w))
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
    fn checked_dims_reads_the_header_and_wants_the_end_marker() {
        let px: Vec<u8> = (0..20 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let j = encode_bgr(&px, 20, 30, 80).unwrap();
        assert_eq!(checked_dims(&j, 600).unwrap(), (20, 30));
        let mut padded = j.to_vec();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(checked_dims(&padded, 600).unwrap(), (20, 30));
        let over = checked_dims(&j, 599).unwrap_err().to_string();
        assert!(over.contains("over the limit"), "{over}");
        let cut = checked_dims(&j[..j.len() - 10], 600)
            .unwrap_err()
            .to_string();
        assert!(cut.contains("end-of-image"), "{cut}");
        assert!(checked_dims(b"\xff\xd8 not a jpeg \xff\xd9", 600).is_err());
    }

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

    /// A picture of colour blocks of 8x8 with a gradient: what a camera
    /// sends, without the edges a codec smears.
    fn blocks(h: usize, w: usize) -> Vec<u8> {
        (0..h * w)
            .flat_map(|i| {
                let (y, x) = (i / w, i % w);
                [(x / 8 * 40 % 256) as u8, (y / 8 * 50 % 256) as u8, 120]
            })
            .collect()
    }

    fn mean_error(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.len() as f64
    }

    #[test]
    fn planes_come_straight_from_a_420_jpeg_and_go_back_into_one() {
        for (h, w) in [(64, 96), (33, 47), (1, 1), (200, 300)] {
            let px = blocks(h, w);
            let jpeg = encode_bgr(&px, h, w, 85).unwrap();
            let yuv = decode_yuv420_to_fit(&jpeg, 1 << 20, (h, w)).unwrap();
            assert_eq!(yuv.dims(), (h, w));
            // The padding of an odd side is the picture's edge, not what
            // the decoder's buffers held before.
            let noise: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8 * 13; 4096]).collect();
            drop(noise);
            assert_eq!(decode_yuv420_to_fit(&jpeg, 1 << 20, (h, w)).unwrap(), yuv);
            let [luma, _, _] = yuv.planes();
            let stride = yuv.plane_shape(0).stride;
            if w % 2 == 1 {
                assert_eq!(luma[w], luma[w - 1], "{h}x{w}");
            }
            if h % 2 == 1 {
                assert_eq!(luma[h * stride], luma[(h - 1) * stride], "{h}x{w}");
            }
            // The planes are the JPEG's own: converting them gives what the
            // BGR decoder gives, within what its smoother chroma changes at
            // the blocks' edges (a swapped or shifted plane is tens off).
            let (bgr, _, _) = decode_bgr(&jpeg, 1 << 20).unwrap();
            let e = mean_error(&yuv.to_bgr(), &bgr);
            assert!(e < 6.0, "{h}x{w}: {e}");
            // A second generation through the planes loses no more than
            // one through BGR pixels does.
            let again = encode_yuv420(&yuv, 85).unwrap();
            let (back, bh, bw) = decode_bgr(&again, 1 << 20).unwrap();
            assert_eq!((bh, bw), (h, w));
            let through_bgr = encode_bgr(&bgr, h, w, 85).unwrap();
            let (bgr_back, _, _) = decode_bgr(&through_bgr, 1 << 20).unwrap();
            let (e, e_bgr) = (mean_error(&back, &px), mean_error(&bgr_back, &px));
            assert!(e < 6.0 && e <= e_bgr + 1.0, "{h}x{w}: {e} against {e_bgr}");
        }
    }

    #[test]
    fn other_jpegs_are_converted_and_shrunk_as_asked() {
        let (h, w) = (200, 300);
        let px = blocks(h, w);
        // 4:4:4 (quality 90 and up) takes the converting path.
        let jpeg = encode_bgr(&px, h, w, 95).unwrap();
        let yuv = decode_yuv420_to_fit(&jpeg, 1 << 20, (h, w)).unwrap();
        assert!(mean_error(&yuv.to_bgr(), &px) < 4.0);
        // Shrunk in the inverse DCT, either way.
        for q in [80, 95] {
            let jpeg = encode_bgr(&px, h, w, q).unwrap();
            let small = decode_yuv420_to_fit(&jpeg, 1 << 20, (48, 64)).unwrap();
            assert_eq!(small.dims(), (50, 75), "quality {q}");
        }
        let jpeg = encode_bgr(&px, h, w, 80).unwrap();
        assert!(decode_yuv420_to_fit(&jpeg, 100, (10, 10)).is_err());
        assert!(decode_yuv420_to_fit(b"garbage", 1 << 20, (10, 10)).is_err());
        assert!(decode_yuv420_to_fit(&jpeg[..jpeg.len() / 2], 1 << 20, (10, 10)).is_err());
        // A stream of tables alone is not taken for the last frame decoded.
        let tables = {
            let sos = jpeg.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
            let mut t = jpeg[..sos].to_vec();
            let sof = t.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
            let len = usize::from(u16::from_be_bytes([t[sof + 2], t[sof + 3]]));
            t.drain(sof..sof + 2 + len);
            t.extend_from_slice(&[0xFF, 0xD9]);
            t
        };
        assert!(decode_yuv420_to_fit(&tables, 1 << 20, (10, 10)).is_err());
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
