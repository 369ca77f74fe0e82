//! Test frames in known colours, and checks of the mosaics and screenshots that
//! come back.

use std::path::Path;

use bytes::Bytes;
use vchat_core::{Document, Tensor};

/// A solid-colour H×W×3 frame (BGR) tagged with `user`.
pub fn frame(user: &str, color: [u8; 3], h: usize, w: usize) -> Document {
    let data: Vec<u8> = std::iter::repeat_n(color, h * w).flatten().collect();
    let mut doc = Document::with_tensor(Tensor::image(h, w, 3, Bytes::from(data)).unwrap());
    doc.set_tag_str("user", user);
    doc
}

/// The colour of each `band`-row band of a frame, checking each band is uniform.
pub fn bands(t: &Tensor, band: usize) -> Vec<[u8; 3]> {
    let row = t.shape()[1] * 3;
    t.data()
        .chunks(row * band)
        .map(|c| {
            let first = [c[0], c[1], c[2]];
            assert!(c.chunks(3).all(|p| p == first), "band is not one colour");
            first
        })
        .collect()
}

/// A solid-colour H×W frame (BGR) tagged with `user`, sent as a JPEG blob.
pub fn jpeg_frame(user: &str, color: [u8; 3], h: usize, w: usize) -> Document {
    let data: Vec<u8> = std::iter::repeat_n(color, h * w).flatten().collect();
    let mut doc = Document::new();
    doc.content = Some(vchat_core::Content::Blob(
        vchat_core::jpeg::encode_bgr(&data, h, w, 90).unwrap(),
    ));
    doc.mime_type = vchat_core::jpeg::MIME_JPEG.into();
    doc.set_tag_str("user", user);
    doc
}

/// The frame of a response document, a tensor or a decoded JPEG, and whether
/// it came as JPEG.
pub fn frame_of(doc: &Document) -> (Tensor, bool) {
    let jpeg = vchat_core::jpeg::is_jpeg(doc);
    let t = vchat_core::jpeg::frame_of(doc, 1 << 26)
        .expect("a frame")
        .expect("a valid frame");
    (t, jpeg)
}

/// Whether every pixel of the `band`-row bands of `t` is within `tolerance` of
/// the colour given for that band (for JPEG, which is lossy). The 4 rows next to
/// each edge of a band are not checked: a decoder's chroma upsampling blends the
/// rows on both sides of a boundary between two users.
pub fn bands_close(t: &Tensor, band: usize, colors: &[[u8; 3]], tolerance: u8) -> bool {
    const EDGE: usize = 4;
    let row = t.shape()[1] * 3;
    let chunks: Vec<&[u8]> = t.data().chunks(row * band).collect();
    chunks.len() == colors.len()
        && chunks.iter().zip(colors).all(|(c, want)| {
            let inner = &c[EDGE.min(band / 4) * row..c.len() - EDGE.min(band / 4) * row];
            inner
                .chunks(3)
                .all(|p| (0..3).all(|i| p[i].abs_diff(want[i]) <= tolerance))
        })
}

/// `tags.participants` of a response document.
pub fn participants(doc: &Document) -> Vec<String> {
    use vchat_core::value::Kind;
    match doc.tags.get("participants").and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(l)) => l
            .values
            .iter()
            .filter_map(|v| match v.kind.as_ref() {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        other => panic!("no tags.participants list: {other:?}"),
    }
}

/// Decodes a PNG file: (height, width, RGB pixels).
pub fn decode_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.height as usize, info.width as usize, buf)
}

/// Share of the pixels in rows `rows` of a decoded RGB PNG (see [`decode_png`])
/// within `tolerance` of `bgr` in every channel.
pub fn share_of(
    png: &(usize, usize, Vec<u8>),
    rows: std::ops::Range<usize>,
    bgr: [u8; 3],
    tolerance: u8,
) -> f64 {
    let (_, w, data) = png;
    let rgb = [bgr[2], bgr[1], bgr[0]];
    let px: Vec<&[u8]> = data[rows.start * w * 3..rows.end * w * 3]
        .chunks(3)
        .collect();
    let close = |p: &[u8]| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= tolerance);
    px.iter().filter(|p| close(p)).count() as f64 / px.len() as f64
}
