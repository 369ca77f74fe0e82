//! H.264 both ways with OpenH264: the size a peer's stream announces (its
//! sequence parameter set) checked before the decoder allocates for it, a
//! decoded picture as a BGR frame, and a BGR mosaic as an encoded picture.

use bytes::Bytes;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, UsageType, VuiConfig};
use openh264::formats::{YUVSlices, YUVSource};
use vchat_core::Tensor;
use vchat_core::yuv;
pub use vchat_core::yuv::Colour;
use vchat_core::yuv::{Planes, yuv420_to_bgr};

/// Bits per second the mosaic is encoded at, per pixel of a 30 fps picture:
/// 640x480 at about 1.2 Mbit/s, plenty for a mosaic of faces.
const BITS_PER_PIXEL_SECOND: u64 = 4;
/// Encoder bit rate bounds, bits per second.
const MIN_BITRATE: u64 = 200_000;
const MAX_BITRATE: u64 = 8_000_000;
/// The frame rate the encoder's rate control plans for.
const ENCODER_FPS: f32 = 30.0;

/// The NAL units of an Annex B byte stream (start codes removed).
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        // Skip to the byte after the next 00 00 01.
        loop {
            let start = rest.windows(3).position(|w| w == [0, 0, 1])?;
            rest = &rest[start + 3..];
            let end = rest
                .windows(3)
                .position(|w| w == [0, 0, 1] || w == [0, 0, 0])
                .unwrap_or(rest.len());
            let unit = &rest[..end];
            rest = &rest[end..];
            if !unit.is_empty() {
                return Some(unit);
            }
        }
    })
}

/// Reads the bits of an RBSP (emulation prevention bytes removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    zeros: usize,
    byte: usize,
    cur: u8,
    left: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            zeros: 0,
            byte: 0,
            cur: 0,
            left: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            let mut b = *self.data.get(self.byte)?;
            self.byte += 1;
            if self.zeros >= 2 && b == 3 {
                self.zeros = 0;
                b = *self.data.get(self.byte)?;
                self.byte += 1;
            }
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
            self.cur = b;
            self.left = 8;
            self.pos += 1;
        }
        self.left -= 1;
        Some(u32::from((self.cur >> self.left) & 1))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// Unsigned Exp-Golomb; at most 31 leading zeros (a 32-bit value).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let v = (1u64 << zeros) - 1 + u64::from(self.bits(zeros)?);
        u32::try_from(v).ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Width and height of the pictures a sequence parameter set (a NAL unit of
/// type 7, its header byte included) announces, cropping applied; `None` when
/// it cannot be read.
pub fn sps_dimensions(nal: &[u8]) -> Option<(usize, usize)> {
    sps_info(nal).map(|i| i.size)
}

/// What a sequence parameter set says of its pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// Width and height, cropping applied.
    pub size: (usize, usize),
    /// Its video signal type, when it has one.
    pub colour: Option<Colour>,
}

/// [`sps_dimensions`] and the colour description after them.
pub fn sps_info(nal: &[u8]) -> Option<SpsInfo> {
    if nal.first()? & 0x1f != 7 {
        return None;
    }
    let mut b = Bits::new(&nal[1..]);
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = b.ue()?;
        if chroma_format > 3 {
            return None;
        }
        if chroma_format == 3 {
            b.bit()?; // separate_colour_plane_flag
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + b.se()? + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            let cycle = b.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                b.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(b.ue()?) + 1;
    let height_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = u64::from(b.bit()?);
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let width = width_mbs * 16;
    let height = height_units * 16 * (2 - frame_mbs_only);
    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if b.bit()? == 1 {
        let (unit_x, unit_y) = match chroma_format {
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = (u64::from(b.ue()?) + u64::from(b.ue()?)) * unit_x;
        crop_y = (u64::from(b.ue()?) + u64::from(b.ue()?)) * unit_y;
    }
    let w = width.checked_sub(crop_x).filter(|w| *w > 0)?;
    let h = height.checked_sub(crop_y).filter(|h| *h > 0)?;
    let size = (usize::try_from(w).ok()?, usize::try_from(h).ok()?);
    Some(SpsInfo {
        size,
        colour: vui_colour(&mut b),
    })
}

/// The video signal type of the VUI that `b` is at, if it has one.
fn vui_colour(b: &mut Bits<'_>) -> Option<Colour> {
    if b.bit()? == 0 {
        return None; // vui_parameters_present_flag
    }
    if b.bit()? == 1 && b.bits(8)? == 255 {
        b.bits(16)?; // sar_width
        b.bits(16)?; // sar_height
    }
    if b.bit()? == 1 {
        b.bit()?; // overscan_appropriate_flag
    }
    if b.bit()? == 0 {
        return None; // video_signal_type_present_flag
    }
    b.bits(3)?; // video_format
    let full_range = b.bit()? == 1;
    let matrix = if b.bit()? == 1 {
        b.bits(8)?; // colour_primaries
        b.bits(8)?; // transfer_characteristics
        u8::try_from(b.bits(8)?).ok()?
    } else {
        2
    };
    Some(Colour { matrix, full_range })
}

/// Why the pictures of a `w`x`h` stream are refused as BGR frames over
/// `limit` bytes (`max_frame_bytes`).
pub fn too_large(w: usize, h: usize, limit: usize) -> Option<String> {
    match w.checked_mul(h).and_then(|p| p.checked_mul(3)) {
        Some(n) if n <= limit => None,
        n => Some(format!(
            "the H.264 stream's pictures are {w}x{h}, {} bytes as BGR frames, over the \
             limit of {limit} bytes (max_frame_bytes)",
            n.map_or_else(|| "too many".to_string(), |n| n.to_string())
        )),
    }
}

/// Decodes one peer's H.264 into BGR frames, refusing pictures over the frame
/// limit before the decoder sees their parameters.
pub struct FrameDecoder {
    decoder: Decoder,
    limit: usize,
    /// The last parameter set announced pictures over the limit: every access
    /// unit is dropped until one within it.
    refusing: Option<String>,
    /// How the stream's samples map to colours, from its latest SPS.
    colour: Colour,
}

/// What became of one access unit.
pub enum Decoded {
    /// A picture, as a BGR frame.
    Frame(Tensor),
    /// Nothing yet (no complete picture).
    Nothing,
    /// Not decodable: a keyframe is needed.
    Broken(String),
    /// Over the frame limit: dropped undecoded.
    TooLarge(String),
}

impl FrameDecoder {
    pub fn new(limit: usize) -> Result<Self, String> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        Ok(FrameDecoder {
            decoder,
            limit,
            refusing: None,
            colour: Colour::default(),
        })
    }

    /// Decodes one access unit (Annex B).
    pub fn decode(&mut self, au: &[u8]) -> Decoded {
        for nal in nal_units(au) {
            if nal.first().is_some_and(|h| h & 0x1f == 7) {
                let info = sps_info(nal);
                self.colour = info.and_then(|i| i.colour).unwrap_or_default();
                self.refusing = match info {
                    Some(SpsInfo { size: (w, h), .. }) => too_large(w, h, self.limit),
                    None => Some("an unreadable H.264 sequence parameter set".to_string()),
                };
            }
        }
        if let Some(why) = &self.refusing {
            return Decoded::TooLarge(why.clone());
        }
        let yuv = match self.decoder.decode(au) {
            Ok(Some(yuv)) => yuv,
            Ok(None) => return Decoded::Nothing,
            Err(e) => return Decoded::Broken(e.to_string()),
        };
        let (w, h) = yuv.dimensions();
        if let Some(why) = too_large(w, h, self.limit) {
            return Decoded::TooLarge(why);
        }
        let mut pixels = vec![0u8; w * h * 3];
        let (ys, us, vs) = yuv.strides();
        let planes = Planes {
            y: (yuv.y(), ys),
            u: (yuv.u(), us),
            v: (yuv.v(), vs),
        };
        if !yuv420_to_bgr(&planes, (w, h), self.colour, &mut pixels) {
            return Decoded::Broken(format!("a {w}x{h} picture with short planes"));
        }
        match Tensor::image(h, w, 3, Bytes::from(pixels)) {
            Ok(t) => Decoded::Frame(t),
            Err(e) => Decoded::Broken(e.to_string()),
        }
    }
}

/// Converts a `w`x`h` BGR picture (both even) to 4:2:0 in `out` (Y, then U,
/// then V, `w * h * 3 / 2` bytes) as the encoder's stream declares it: BT.601,
/// limited range (see [`yuv::bgr_to_yuv420`]).
fn bgr_to_yuv420(bgr: &[u8], (w, h): (usize, usize), out: &mut [u8]) -> bool {
    w % 2 == 0 && h % 2 == 0 && yuv::bgr_to_yuv420(bgr, (w, h), Colour::default(), out)
}

/// Encodes mosaics (BGR frames) for one peer.
pub struct FrameEncoder {
    encoder: Option<Encoder>,
    size: (usize, usize),
    keyframe: bool,
    /// The picture being encoded (4:2:0, planes one after the other),
    /// reused from mosaic to mosaic of one size.
    yuv: Vec<u8>,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        FrameEncoder {
            encoder: None,
            size: (0, 0),
            keyframe: true,
            yuv: Vec::new(),
        }
    }
}

impl FrameEncoder {
    /// The next picture is a keyframe (a peer joined, lost one, or asked).
    pub fn want_keyframe(&mut self) {
        self.keyframe = true;
    }

    /// One `h`x`w` BGR frame as an H.264 access unit (Annex B); odd sizes lose
    /// their last row or column (4:2:0 needs even ones).
    pub fn encode(&mut self, bgr: &[u8], h: usize, w: usize) -> Result<Vec<u8>, String> {
        let (ew, eh) = (w & !1, h & !1);
        if ew < 16 || eh < 16 || w.checked_mul(h).and_then(|p| p.checked_mul(3)) != Some(bgr.len())
        {
            return Err(format!("a mosaic of {w}x{h} cannot be encoded"));
        }
        if self.encoder.is_none() || self.size != (ew, eh) {
            let bps = (ew as u64 * eh as u64 * BITS_PER_PIXEL_SECOND)
                .clamp(MIN_BITRATE, MAX_BITRATE) as u32;
            let config = EncoderConfig::new()
                .bitrate(BitRate::from_bps(bps))
                .max_frame_rate(FrameRate::from_hz(ENCODER_FPS))
                .usage_type(UsageType::CameraVideoRealTime)
                .skip_frames(false)
                // `bgr_to_yuv420` is BT.601, limited range: say so, or a
                // browser takes the stream for BT.709.
                .vui(VuiConfig::bt601());
            let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| format!("cannot start the H.264 encoder: {e}"))?;
            self.encoder = Some(encoder);
            self.size = (ew, eh);
            self.keyframe = true;
            self.yuv = vec![0; ew * eh * 3 / 2];
        }
        let cropped;
        let pixels = if (ew, eh) == (w, h) {
            bgr
        } else {
            cropped = bgr
                .chunks_exact(w * 3)
                .take(eh)
                .flat_map(|row| &row[..ew * 3])
                .copied()
                .collect::<Vec<u8>>();
            &cropped
        };
        let Some(encoder) = self.encoder.as_mut() else {
            return Err("no encoder".into());
        };
        if !bgr_to_yuv420(pixels, (ew, eh), &mut self.yuv) {
            return Err(format!("a mosaic of {w}x{h} cannot be converted"));
        }
        let (y, chroma) = self.yuv.split_at(ew * eh);
        let (u, v) = chroma.split_at(ew * eh / 4);
        let yuv = YUVSlices::new((y, u, v), (ew, eh), (ew, ew / 2, ew / 2));
        if std::mem::take(&mut self.keyframe) {
            encoder.force_intra_frame();
        }
        let out = encoder.encode(&yuv).map_err(|e| e.to_string())?;
        Ok(out.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: usize, h: usize, bgr: [u8; 3]) -> Vec<u8> {
        bgr.iter().copied().cycle().take(w * h * 3).collect()
    }

    #[test]
    fn an_encoded_frame_decodes_to_its_size_and_colour() {
        let mut enc = FrameEncoder::default();
        let au = enc.encode(&solid(64, 48, [200, 30, 40]), 48, 64).unwrap();
        let sps = nal_units(&au).find(|n| n[0] & 0x1f == 7).unwrap();
        assert_eq!(sps_dimensions(sps), Some((64, 48)));
        let mut dec = FrameDecoder::new(1 << 20).unwrap();
        let Decoded::Frame(t) = dec.decode(&au) else {
            panic!("no frame")
        };
        assert_eq!(t.frame_dims().unwrap(), (48, 64));
        let px = &t.data()[(24 * 64 + 32) * 3..][..3];
        for (got, want) in px.iter().zip([200u8, 30, 40]) {
            assert!(got.abs_diff(want) < 20, "{px:?}");
        }
    }

    #[test]
    fn colours_keep_their_channels_at_every_width() {
        // Wide enough for the vector path, and an odd width for the scalar
        // one; blue, green and red apart so a swap shows.
        for (w, h) in [(320, 48), (66, 48)] {
            let mut enc = FrameEncoder::default();
            let bgr = [30, 90, 220];
            let mut dec = FrameDecoder::new(1 << 22).unwrap();
            let Decoded::Frame(t) = dec.decode(&enc.encode(&solid(w, h, bgr), h, w).unwrap())
            else {
                panic!("no frame")
            };
            let px = &t.data()[((h / 2) * w + w / 2) * 3..][..3];
            for (got, want) in px.iter().zip(bgr) {
                assert!(got.abs_diff(want) < 12, "{w}x{h}: {px:?}");
            }
        }
    }

    /// Chromium 120's SPS for its 640x480 camera stream over WebRTC.
    const CHROMIUM_SPS: [u8; 18] = [
        0x67, 0x42, 0xc0, 0x1e, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd3, 0x70, 0x10, 0xd0, 0x10, 0x78,
        0x44, 0x23, 0x50,
    ];

    #[test]
    fn the_colour_description_is_read_from_the_sps() {
        let chromium = sps_info(&CHROMIUM_SPS).unwrap();
        assert_eq!(chromium.size, (640, 480));
        let bt709_full = Colour {
            matrix: 1,
            full_range: true,
        };
        assert_eq!(chromium.colour, Some(bt709_full));
        // Ours says what its converter does: BT.601, limited range.
        let mut enc = FrameEncoder::default();
        let au = enc.encode(&solid(64, 48, [10, 20, 30]), 48, 64).unwrap();
        let sps = nal_units(&au).find(|n| n[0] & 0x1f == 7).unwrap();
        let ours = sps_info(sps).unwrap().colour.unwrap();
        assert!(matches!(ours.matrix, 5 | 6) && !ours.full_range, "{ours:?}");
        // Cut anywhere, an SPS is read or refused, never a panic.
        for n in 0..CHROMIUM_SPS.len() {
            let _ = sps_info(&CHROMIUM_SPS[..n]);
        }
    }

    /// `bgr` as (Y, Cb, Cr) samples of `colour`, by the standards' formulas.
    fn forward(bgr: [u8; 3], colour: Colour) -> [u8; 3] {
        let [b, g, r] = bgr.map(f64::from);
        let (kr, kb) = if colour.matrix == 1 {
            (0.2126, 0.0722)
        } else {
            (0.299, 0.114)
        };
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let (cb, cr) = ((b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr)));
        let (y, cb, cr) = if colour.full_range {
            (y, cb + 128.0, cr + 128.0)
        } else {
            (
                16.0 + y * 219.0 / 255.0,
                128.0 + cb * 224.0 / 255.0,
                128.0 + cr * 224.0 / 255.0,
            )
        };
        [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as u8)
    }

    #[test]
    fn pictures_are_read_in_the_colours_their_stream_describes() {
        let colours = [
            [0, 0, 255],
            [0, 255, 0],
            [255, 0, 0],
            [128, 128, 128],
            [90, 140, 220],
            [0, 0, 0],
            [255, 255, 255],
        ];
        for matrix in [1, 6] {
            for full_range in [false, true] {
                let colour = Colour { matrix, full_range };
                for bgr in colours {
                    let [y, u, v] = forward(bgr, colour);
                    let (ys, us, vs) = ([y; 8], [u; 2], [v; 2]);
                    let planes = Planes {
                        y: (&ys, 4),
                        u: (&us, 2),
                        v: (&vs, 2),
                    };
                    let mut out = [0u8; 4 * 2 * 3];
                    assert!(yuv420_to_bgr(&planes, (4, 2), colour, &mut out));
                    for px in out.chunks_exact(3) {
                        for c in 0..3 {
                            assert!(px[c].abs_diff(bgr[c]) <= 3, "{colour:?} {bgr:?}: {px:?}");
                        }
                    }
                }
                // Read as the default (BT.601 limited), a BT.709 full-range
                // light grey comes out lighter: the contrast stretched, as
                // reading every stream the same way did.
                if (matrix, full_range) == (1, true) {
                    let [y, u, v] = forward([200, 200, 200], colour);
                    let planes = Planes {
                        y: (&[y; 8][..], 4),
                        u: (&[u; 2][..], 2),
                        v: (&[v; 2][..], 2),
                    };
                    let mut out = [0u8; 24];
                    assert!(yuv420_to_bgr(&planes, (4, 2), Colour::default(), &mut out));
                    assert!(out.iter().all(|&c| c >= 210), "{out:?}");
                }
            }
        }
        // Planes too short for their size: refused, no panic.
        let planes = Planes {
            y: (&[0u8; 7][..], 4),
            u: (&[0u8; 2][..], 2),
            v: (&[0u8; 2][..], 2),
        };
        assert!(!yuv420_to_bgr(
            &planes,
            (4, 2),
            Colour::default(),
            &mut [0u8; 24]
        ));
    }

    #[test]
    fn odd_mosaics_are_cropped_and_cropping_is_read() {
        let mut enc = FrameEncoder::default();
        let au = enc.encode(&solid(81, 41, [0, 0, 0]), 41, 81).unwrap();
        let sps = nal_units(&au).find(|n| n[0] & 0x1f == 7).unwrap();
        assert_eq!(sps_dimensions(sps), Some((80, 40)));
        assert!(enc.encode(&[0; 10], 2, 2).is_err());
        assert!(enc.encode(&[0; 10], 100, 100).is_err());
    }

    #[test]
    fn pictures_over_the_limit_are_refused_before_decoding() {
        let mut enc = FrameEncoder::default();
        let au = enc.encode(&solid(64, 48, [1, 2, 3]), 48, 64).unwrap();
        let mut dec = FrameDecoder::new(64 * 48 * 3 - 1).unwrap();
        match dec.decode(&au) {
            Decoded::TooLarge(m) => assert!(m.contains("max_frame_bytes"), "{m}"),
            _ => panic!("decoded over the limit"),
        }
        assert!(too_large(usize::MAX, 2, usize::MAX).is_some());
        assert!(too_large(640, 480, 640 * 480 * 3).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut dec = FrameDecoder::new(1 << 20).unwrap();
        for seed in 0u32..200 {
            let mut x = seed.wrapping_mul(2654435761) | 1;
            let mut data = vec![0, 0, 0, 1, 0x67];
            for _ in 0..(seed % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                data.push(x as u8);
            }
            let _ = sps_dimensions(&data[4..]);
            let _ = dec.decode(&data);
        }
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 0, 1, 9, 0, 0, 1, 7, 1]).count(), 2);
    }

    /// The bench camera's still room (bench/browser-camera.js): smooth colour
    /// waves plus grain pattern `k` of +-`grain` a channel, as BGR.
    fn room(w: usize, h: usize, k: u32, grain: f64) -> Vec<u8> {
        let mut seed = 0x9e37_79b9u32.wrapping_add(k.wrapping_mul(0x632b_e5ab));
        let mut noise = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            f64::from(seed % 41) / 20.0 - 1.0
        };
        let mut out = vec![0u8; w * h * 3];
        for (i, px) in out.chunks_exact_mut(3).enumerate() {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            let r = 120.0 + 60.0 * (x / 17.0 + y / 31.0).sin() + grain * noise();
            let g = 110.0 + 50.0 * (x / 23.0 - y / 13.0).sin() + grain * noise();
            let b = 100.0 + 40.0 * ((x + y) / 19.0).cos() + grain * noise();
            for (c, v) in px.iter_mut().zip([b, g, r]) {
                *c = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }

    /// A camera frame as the bench paints it: room pattern `id % 4`, sharp
    /// moving colour blocks in the middle, the barcode band on top.
    fn camera(rooms: &[Vec<u8>], (w, h): (usize, usize), id: usize) -> Vec<u8> {
        let mut f = rooms[id % rooms.len()].clone();
        for y in h / 4..3 * h / 4 {
            for x in w / 4..3 * w / 4 {
                let c = match ((x + 3 * id) / 16 + (y + id) / 16) % 3 {
                    0 => [40, 200, 60],
                    1 => [220, 60, 30],
                    _ => [30, 90, 230],
                };
                f[(y * w + x) * 3..][..3].copy_from_slice(&c);
            }
        }
        let block = w / 20;
        for b in 0..20 {
            let one = (id >> (19 - b)) & 1 == 1;
            for y in 0..2 * block {
                let white = (y < block) == one;
                for x in b * block..(b + 1) * block {
                    f[(y * w + x) * 3..][..3].fill(if white { 255 } else { 0 });
                }
            }
        }
        f
    }

    /// PSNR (dB) of 4x4-pixel means of `got` against `want` over the bench's
    /// still part (under the band, beside and above the middle), and the mean
    /// signed error of each channel (B, G, R) there.
    fn psnr4(got: &[u8], want: &[u8], (w, h): (usize, usize)) -> (f64, [f64; 3]) {
        let still =
            |x: usize, y: usize| 4 * y < 3 * h && !(4 * y >= h && 4 * x >= w && 4 * x < 3 * w);
        let (mut se, mut n, mut bias) = (0.0, 0.0, [0.0; 3]);
        for by in ((2 * (w / 20) + 2).div_ceil(4) * 4..h - 3).step_by(4) {
            for bx in (0..w - 3).step_by(4) {
                if !(still(bx, by)
                    && still(bx + 3, by + 3)
                    && still(bx + 3, by)
                    && still(bx, by + 3))
                {
                    continue;
                }
                let mut sum = [0.0; 3];
                for y in by..by + 4 {
                    for x in bx..bx + 4 {
                        for (c, s) in sum.iter_mut().enumerate() {
                            let i = (y * w + x) * 3 + c;
                            *s += f64::from(got[i]) - f64::from(want[i]);
                        }
                    }
                }
                for (s, b) in sum.iter().zip(bias.iter_mut()) {
                    se += (s / 16.0).powi(2);
                    *b += s / 16.0;
                }
                n += 1.0;
            }
        }
        let db = 10.0 * (65025.0 / (se / (3.0 * n)).max(1e-9)).log10();
        (db, bias.map(|b| b / n))
    }

    fn round_trip(bgr: &[u8], (w, h): (usize, usize)) -> Vec<u8> {
        let mut yuv = vec![0u8; w * h * 3 / 2];
        assert!(bgr_to_yuv420(bgr, (w, h), &mut yuv));
        read_back(yuv, (w, h))
    }

    /// A `w`x`h` 4:2:0 picture (planes one after the other) as the door
    /// reads a stream that says nothing of its colours.
    fn read_back(yuv: Vec<u8>, (w, h): (usize, usize)) -> Vec<u8> {
        yuv::Yuv420::from_data(h, w, yuv)
            .expect("a whole 4:2:0 picture")
            .to_bgr_in(Colour::default())
    }

    #[test]
    fn the_door_s_colour_conversions_keep_the_camera_pattern() {
        // BGR -> 4:2:0 -> BGR without a codec: only rounding is left (about
        // 60 dB in 4x4 means). OpenH264's converter, which truncates, came
        // back at 46.6 dB, 1.5 levels short of blue and 1.3 of red.
        let size = (320, 240);
        let rooms: Vec<_> = (0..4).map(|k| room(size.0, size.1, k, 20.0)).collect();
        let frame = camera(&rooms, size, 8);
        let (db, bias) = psnr4(&round_trip(&frame, size), &rooms[0], size);
        assert!(db > 55.0, "{db:.2} dB");
        assert!(bias.iter().all(|b| b.abs() < 0.25), "{bias:?}");
        // Greys stay grey, the extremes stay in range, and a mean of 2x2
        // pixels is a mean of their colours.
        for v in [0u8, 1, 16, 127, 128, 200, 254, 255] {
            let grey = vec![v; 4 * 2 * 3];
            let mut yuv = [0u8; 12];
            assert!(bgr_to_yuv420(&grey, (4, 2), &mut yuv));
            assert!(yuv[8..].iter().all(|&c| c == 128), "{v}: {yuv:?}");
            assert!(
                round_trip(&grey, (4, 2))
                    .iter()
                    .all(|&c| c.abs_diff(v) <= 1),
                "{v}"
            );
        }
        // Odd sizes and short buffers are refused, not read past.
        assert!(!bgr_to_yuv420(&[0; 18], (3, 2), &mut [0; 9]));
        assert!(!bgr_to_yuv420(&[0; 23], (4, 2), &mut [0; 12]));
        assert!(!bgr_to_yuv420(&[0; 24], (4, 2), &mut [0; 11]));
    }

    #[test]
    fn sharp_colour_edges_keep_their_place() {
        // Random colours in 8x8 blocks: the converter's chroma (the mean of
        // 2x2 pixels) read back sample by sample lands on the same pixels, so
        // 4x4 means keep their colours (52 dB); a chroma plane shifted by one
        // pixel, as a siting mismatch would be at worst, loses over 20 dB.
        let (w, h) = (64, 48);
        let mut seed = 12345u32;
        let mut blocks = vec![[0u8; 3]; (w / 8) * (h / 8)];
        for c in &mut blocks {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *c = [seed as u8, (seed >> 8) as u8, (seed >> 16) as u8];
        }
        let pic: Vec<u8> = (0..w * h)
            .flat_map(|i| blocks[(i / w / 8) * (w / 8) + (i % w) / 8])
            .collect();
        let mean_db = |got: &[u8]| {
            let mut se = 0.0;
            for by in (0..h).step_by(4) {
                for bx in (0..w).step_by(4) {
                    for c in 0..3 {
                        let d: f64 = (by..by + 4)
                            .flat_map(|y| (bx..bx + 4).map(move |x| (y * w + x) * 3 + c))
                            .map(|i| f64::from(got[i]) - f64::from(pic[i]))
                            .sum();
                        se += (d / 16.0).powi(2);
                    }
                }
            }
            10.0 * (65025.0 / (se / (3 * w * h / 16) as f64).max(1e-9)).log10()
        };
        let mut yuv = vec![0u8; w * h * 3 / 2];
        assert!(bgr_to_yuv420(&pic, (w, h), &mut yuv));
        let read = |yuv: &[u8]| read_back(yuv.to_vec(), (w, h));
        let db = mean_db(&read(&yuv));
        assert!(db > 45.0, "{db:.2} dB");
        let mut shifted = yuv.clone();
        for plane in shifted[w * h..].chunks_exact_mut(w / 2) {
            plane.rotate_right(1);
        }
        let worse = mean_db(&read(&shifted));
        assert!(worse < db - 10.0, "{worse:.2} against {db:.2} dB");
    }

    #[test]
    fn the_camera_pattern_survives_the_door_s_codec() {
        // Encoded and decoded at the door's bitrate, 30 frames of the bench's
        // camera (its grain changing each frame): about 35 dB in 4x4 means
        // against each frame's own grain, 36.6 against the room without it
        // (320x240). A floor far below, for a colour, siting or range bug
        // (the room read as BT.709 full range scores about 30 dB).
        let size = (320, 240);
        let rooms: Vec<_> = (0..4).map(|k| room(size.0, size.1, k, 20.0)).collect();
        let clean = room(size.0, size.1, 0, 0.0);
        let mut enc = FrameEncoder::default();
        let mut dec = FrameDecoder::new(1 << 22).unwrap();
        let mut last = None;
        for id in 0..32 {
            let au = enc
                .encode(&camera(&rooms, size, id), size.1, size.0)
                .unwrap();
            if let Decoded::Frame(t) = dec.decode(&au) {
                last = Some((id, t));
            }
        }
        let (id, t) = last.expect("no frame decoded");
        let (db, bias) = psnr4(t.data(), &rooms[id % 4], size);
        assert!(db > 31.0, "{db:.2} dB against its grain");
        assert!(bias.iter().all(|b| b.abs() < 2.0), "{bias:?}");
        let (clean_db, _) = psnr4(t.data(), &clean, size);
        assert!(
            clean_db > 32.0,
            "{clean_db:.2} dB against the room without grain"
        );
    }

    /// 4:2:0 pictures of `frames` through OpenH264 at `bps` (planned for
    /// 30 fps, as the door's) and back to BGR; and the bytes it took.
    fn through_openh264(
        frames: &[Vec<u8>],
        (w, h): (usize, usize),
        bps: u32,
    ) -> (Vec<Vec<u8>>, usize) {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bps))
            .max_frame_rate(FrameRate::from_hz(ENCODER_FPS))
            .usage_type(UsageType::CameraVideoRealTime)
            .skip_frames(false)
            .vui(VuiConfig::bt601());
        let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
        let mut dec = FrameDecoder::new(1 << 24).unwrap();
        let mut yuv = vec![0u8; w * h * 3 / 2];
        let (mut out, mut bytes) = (Vec::new(), 0);
        for f in frames {
            assert!(bgr_to_yuv420(f, (w, h), &mut yuv));
            let (y, chroma) = yuv.split_at(w * h);
            let (u, v) = chroma.split_at(w * h / 4);
            let au = enc
                .encode(&YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2)))
                .unwrap()
                .to_vec();
            bytes += au.len();
            match dec.decode(&au) {
                Decoded::Frame(t) => out.push(t.data().to_vec()),
                _ => out.push(out.last().cloned().unwrap_or_else(|| vec![0; w * h * 3])),
            }
        }
        (out, bytes)
    }

    /// Not a check: the table of what each stage of the bench's picture path
    /// leaves of its camera picture, offline (BENCHMARKS.md). Run with
    /// `cargo test -p vchat-gateway --lib quality_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn quality_table() {
        for (w, h, fps) in [(640usize, 480usize, 30usize), (320, 240, 15)] {
            let size = (w, h);
            let step = 30 / fps;
            let rooms: Vec<_> = (0..4).map(|k| room(w, h, k, 20.0)).collect();
            let clean = room(w, h, 0, 0.0);
            let ids: Vec<usize> = (0..90).map(|i| i * step).collect();
            let frames: Vec<_> = ids.iter().map(|&id| camera(&rooms, size, id)).collect();
            let secs = 90.0 / fps as f64;
            let score = |out: &[Vec<u8>]| {
                let mut a: Vec<f64> = Vec::new();
                let mut c: Vec<f64> = Vec::new();
                for (f, id) in out.iter().zip(&ids).skip(30) {
                    a.push(psnr4(f, &rooms[id % 4], size).0);
                    c.push(psnr4(f, &clean, size).0);
                }
                a.sort_by(f64::total_cmp);
                c.sort_by(f64::total_cmp);
                (a[a.len() / 2], c[c.len() / 2])
            };
            let mut jpeg = (Vec::new(), 0, 0);
            for f in &frames {
                let j1 = vchat_core::jpeg::encode_bgr(f, h, w, 70).unwrap();
                let (d1, _, _) = vchat_core::jpeg::decode_bgr(&j1, 1 << 24).unwrap();
                let j2 = vchat_core::jpeg::encode_bgr(&d1, h, w, 80).unwrap();
                let (d2, _, _) = vchat_core::jpeg::decode_bgr(&j2, 1 << 24).unwrap();
                jpeg.1 += j1.len();
                jpeg.2 += j2.len();
                jpeg.0.push(d2.to_vec());
            }
            let (g, c) = score(&jpeg.0);
            let kb = |b: usize| b as f64 / secs / 1000.0;
            eprintln!(
                "{w}x{h} @ {fps}: JPEG q70 then q80: {g:.2} dB, {c:.2} dB without grain, {:.0} + {:.0} KB/s",
                kb(jpeg.1),
                kb(jpeg.2)
            );
            let door = (w * h) as u32 * BITS_PER_PIXEL_SECOND as u32;
            // A page's sender: Chromium's 1.7 Mbit/s at 640x480 @ 30.
            let page = (1_700_000.0 * (w * h) as f64 / (640.0 * 480.0)) as u32;
            for x in [1u32, 2, 4, 8] {
                let (one, b1) = through_openh264(&frames, size, door * x);
                let (g1, c1) = score(&one);
                let (first, bp) = through_openh264(&frames, size, page * x);
                let (two, b2) = through_openh264(&first, size, door * x);
                let (g2, c2) = score(&two);
                eprintln!(
                    "{w}x{h} @ {fps}: x{x}: door alone {g1:.2} / {c1:.2} dB, {:.0} KB/s; page then door {g2:.2} / {c2:.2} dB, {:.0} + {:.0} KB/s",
                    kb(b1),
                    kb(bp),
                    kb(b2)
                );
            }
        }
    }
}
