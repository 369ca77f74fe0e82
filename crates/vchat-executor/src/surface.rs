//! What tiles, borders and names are drawn on: BGR pixels ([`Bgr`]), or a
//! YCbCr 4:2:0 picture ([`Yuv420`]), which is what a grid room composes in.
//!
//! The drawing code ([`crate::mosaic`]'s grid and border, [`crate::label`]'s
//! names) is written once against [`Surface`]: a surface scales a tile into a
//! rectangle and applies a [`Paint`] to a span of a row. Every paint is the
//! same operation on each channel of a BGR pixel, and, since JPEG's YCbCr is
//! an affine map of RGB around grey, it is the same operation on Y, and on Cb
//! and Cr around their neutral 128: a dark box darkens the chroma towards
//! grey as it darkens the luma towards black.
//!
//! In 4:2:0 a chroma sample belongs to the pixel at its top-left (even row,
//! even column): a paint or a tile sets the chroma of the samples whose pixel
//! it covers, so two tiles side by side never share a sample, whatever their
//! edges, and drawing them in any order gives the same picture.
//!
//! Paints clip to the surface: they allocate nothing and cannot fail.

use std::sync::Arc;

use vchat_core::yuv::{PlaneShape, Yuv420, ycc_of_bgr};

use crate::Frame;
use crate::mosaic::{MosaicError, check_tile_frame};

/// What a paint does to each pixel of its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    /// Sets the colour (BGR).
    Fill([u8; 3]),
    /// Darkens to two fifths, towards black (a label's box).
    Darken,
    /// Blends towards the grey `white` by `coverage` of 255 (a glyph's edge).
    Ink {
        /// How much of the pixel the glyph covers, 0 to 255.
        coverage: u8,
        /// The text's grey level.
        white: u8,
    },
}

impl Paint {
    /// The paint applied to `v`, a channel whose neutral value is `zero`
    /// (0 for B, G, R and Y; 128 for Cb and Cr) and whose fill is `fill`.
    fn apply(self, v: u8, zero: u8, fill: u8) -> u8 {
        match self {
            Paint::Fill(_) => fill,
            Paint::Darken => {
                let (v, z) = (i32::from(v), i32::from(zero));
                (z + (v - z) * 2 / 5) as u8
            }
            Paint::Ink { coverage, white } => {
                let (p, c) = (u32::from(v), u32::from(coverage));
                // Grey text moves a chroma sample towards its neutral value.
                let target = if zero == 0 { u32::from(white) } else { 128 };
                ((p * (255 - c) + target * c + 127) / 255) as u8
            }
        }
    }
}

/// A picture that tiles are scaled into and paints are applied to.
pub trait Surface {
    /// What is scaled into it.
    type Tile;
    /// `(height, width)` in pixels.
    fn size(&self) -> (usize, usize);
    /// The tile's `(height, width)`, when its pixels match it.
    fn tile_dims(tile: &Self::Tile) -> Result<(usize, usize), MosaicError>;
    /// Scales `tile` (checked by [`Self::tile_dims`]), nearest pixel, into
    /// the rectangle `(top, left, height, width)`, which lies within the
    /// surface (the caller checks both).
    fn place(&mut self, tile: &Self::Tile, rect: (usize, usize, usize, usize));
    /// Applies `paint` to the pixels `x0..x1` of row `y`, clipped.
    fn paint(&mut self, y: usize, x0: usize, x1: usize, paint: Paint);

    /// Blends the grey `white` over the pixels of `text` (top, left, height,
    /// width: a line of text) within `clip` (its tile), by `coverage` of each.
    fn ink(
        &mut self,
        clip: (usize, usize, usize, usize),
        text: (usize, usize, usize, usize),
        coverage: &dyn Fn(usize, usize) -> u8,
        white: u8,
    ) {
        let ((top, bottom), (left, right)) = overlap(clip, text);
        for y in top..bottom {
            for x in left..right {
                let coverage = coverage(y, x);
                if coverage > 0 {
                    self.paint(y, x, x + 1, Paint::Ink { coverage, white });
                }
            }
        }
    }
}

/// BGR pixels, `width` a row, as many whole rows as the buffer holds.
pub struct Bgr<'a> {
    pixels: &'a mut [u8],
    height: usize,
    width: usize,
}

impl<'a> Bgr<'a> {
    /// The whole rows of `pixels`, `width` pixels each.
    pub fn new(pixels: &'a mut [u8], width: usize) -> Self {
        let height = width
            .checked_mul(3)
            .filter(|&r| r > 0)
            .map_or(0, |r| pixels.len() / r);
        Bgr {
            pixels,
            height,
            width: if height == 0 { 0 } else { width },
        }
    }
}

impl Surface for Bgr<'_> {
    type Tile = Frame;

    fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    fn tile_dims(tile: &Frame) -> Result<(usize, usize), MosaicError> {
        check_tile_frame(tile)?;
        Ok(tile.dims())
    }

    fn place(&mut self, tile: &Frame, rect: (usize, usize, usize, usize)) {
        let (h, w) = tile.dims();
        let src = Plane {
            data: tile.bytes(),
            height: h,
            width: w,
            stride: w * 3,
        };
        scale_into(&src, 3, self.pixels, self.width * 3, rect);
    }

    fn paint(&mut self, y: usize, x0: usize, x1: usize, paint: Paint) {
        let x1 = x1.min(self.width);
        if y >= self.height || x0 >= x1 {
            return;
        }
        let row = &mut self.pixels[(y * self.width + x0) * 3..(y * self.width + x1) * 3];
        match paint {
            Paint::Fill([0, 0, 0]) => row.fill(0),
            Paint::Fill(c) => row.chunks_exact_mut(3).for_each(|p| p.copy_from_slice(&c)),
            _ => row.iter_mut().for_each(|v| *v = paint.apply(*v, 0, 0)),
        }
    }
}

impl Surface for Yuv420 {
    /// Shared: a decoded tile is drawn by every composition that shows it.
    type Tile = Arc<Yuv420>;

    fn size(&self) -> (usize, usize) {
        self.dims()
    }

    fn tile_dims(tile: &Arc<Yuv420>) -> Result<(usize, usize), MosaicError> {
        // A Yuv420's buffer always matches its size.
        Ok(tile.dims())
    }

    fn place(&mut self, tile: &Arc<Yuv420>, (top, left, th, tw): (usize, usize, usize, usize)) {
        let shapes = [0, 1, 2].map(|p| (tile.plane_shape(p), self.plane_shape(p)));
        let sources = tile.planes();
        for (p, dst) in self.planes_mut().into_iter().enumerate() {
            let (from, to) = shapes[p];
            let src = Plane {
                data: sources[p],
                height: from.height,
                width: from.width,
                stride: from.stride,
            };
            let rect = if p == 0 {
                (top, left, th, tw)
            } else {
                // The samples whose top-left pixel the tile covers.
                let (t, l) = (top.div_ceil(2), left.div_ceil(2));
                let (b, r) = ((top + th).div_ceil(2), (left + tw).div_ceil(2));
                (t, l, b - t, r - l)
            };
            if rect.2 > 0 && rect.3 > 0 {
                scale_into(&src, 1, dst, to.stride, rect);
            }
        }
    }

    fn paint(&mut self, y: usize, x0: usize, x1: usize, paint: Paint) {
        let (h, w) = self.dims();
        let x1 = x1.min(w);
        if y >= h || x0 >= x1 {
            return;
        }
        let fill = match paint {
            Paint::Fill(c) => ycc_of_bgr(c),
            _ => [0, 128, 128],
        };
        let (PlaneShape { stride: ys, .. }, PlaneShape { stride: cs, .. }) =
            (self.plane_shape(0), self.plane_shape(1));
        let [luma, cb, cr] = self.planes_mut();
        for v in &mut luma[y * ys + x0..y * ys + x1] {
            *v = paint.apply(*v, 0, fill[0]);
        }
        if y.is_multiple_of(2) {
            let span = y / 2 * cs + x0.div_ceil(2)..y / 2 * cs + x1.div_ceil(2);
            for (plane, fill) in [(cb, fill[1]), (cr, fill[2])] {
                for v in &mut plane[span.clone()] {
                    *v = paint.apply(*v, 128, fill);
                }
            }
        }
    }

    fn ink(
        &mut self,
        clip: (usize, usize, usize, usize),
        text: (usize, usize, usize, usize),
        coverage: &dyn Fn(usize, usize) -> u8,
        white: u8,
    ) {
        ink_yuv420(self, clip, text, coverage, white);
    }
}

/// Grey text in 4:2:0: each chroma sample whose pixel is in `clip` is
/// moved towards neutral by the most any pixel of its 2x2 block is covered,
/// so that a fully covered pixel is exactly grey, not tinted by the colour
/// under its neighbours.
fn ink_yuv420(
    canvas: &mut Yuv420,
    clip: (usize, usize, usize, usize),
    text: (usize, usize, usize, usize),
    coverage: &dyn Fn(usize, usize) -> u8,
    white: u8,
) {
    let (ch, cw) = canvas.dims();
    let ((top, bottom), (left, right)) = overlap(clip, (0, 0, ch, cw));
    let ((ty, by), (lx, rx)) = overlap((top, left, bottom - top, right - left), text);
    let (ys, cs) = (canvas.plane_shape(0).stride, canvas.plane_shape(1).stride);
    let [luma, cb, cr] = canvas.planes_mut();
    let covered = |y: usize, x: usize| {
        if (ty..by).contains(&y) && (lx..rx).contains(&x) {
            coverage(y, x)
        } else {
            0
        }
    };
    for y in ty..by {
        for x in lx..rx {
            let coverage = covered(y, x);
            if coverage > 0 {
                let v = &mut luma[y * ys + x];
                *v = Paint::Ink { coverage, white }.apply(*v, 0, 0);
            }
        }
    }
    // The samples whose pixel is in the clip and whose block meets the text.
    for cy in (ty / 2)..by.div_ceil(2) {
        for cx in (lx / 2)..rx.div_ceil(2) {
            let (y, x) = (2 * cy, 2 * cx);
            if !(top..bottom).contains(&y) || !(left..right).contains(&x) {
                continue;
            }
            let coverage = covered(y, x)
                .max(covered(y, x + 1))
                .max(covered(y + 1, x))
                .max(covered(y + 1, x + 1));
            if coverage > 0 {
                for plane in [&mut *cb, &mut *cr] {
                    let v = &mut plane[cy * cs + cx];
                    *v = Paint::Ink { coverage, white }.apply(*v, 128, 128);
                }
            }
        }
    }
}

/// The rows and columns two rectangles `(top, left, height, width)` share,
/// each as `(from, to)`, empty when they do not meet.
fn overlap(
    (t1, l1, h1, w1): (usize, usize, usize, usize),
    (t2, l2, h2, w2): (usize, usize, usize, usize),
) -> ((usize, usize), (usize, usize)) {
    let (top, left) = (t1.max(t2), l1.max(l2));
    let bottom = t1.saturating_add(h1).min(t2.saturating_add(h2)).max(top);
    let right = l1.saturating_add(w1).min(l2.saturating_add(w2)).max(left);
    ((top, bottom), (left, right))
}

/// A plane of `height` rows of `width` samples, `stride` bytes apart.
struct Plane<'a> {
    data: &'a [u8],
    height: usize,
    width: usize,
    stride: usize,
}

/// `i * from / to`, the source index of destination index `i`, without overflow
/// (`i < to`, so the result is below `from`).
pub(crate) fn source_index(i: usize, from: usize, to: usize) -> usize {
    // Lossless: u128 holds the product of two usizes, and the quotient is < from.
    (i as u128 * from as u128 / to as u128) as usize
}

/// Scales `src`, `bpp` bytes a sample (nearest sample), into the rectangle
/// `(top, left, height, width)` of `dst`, whose rows are `dst_stride` bytes
/// apart; the callers check that both hold what they say.
fn scale_into(
    src: &Plane<'_>,
    bpp: usize,
    dst: &mut [u8],
    dst_stride: usize,
    (top, left, th, tw): (usize, usize, usize, usize),
) {
    // The row's source samples as runs `(destination byte, source byte,
    // bytes)` of neighbours that stay neighbours: scaled up (a 200x300 frame
    // in a 240x320 cell), a row is a few runs of about fifteen samples,
    // copied whole, instead of 320 copies of a sample.
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for x in 0..tw {
        let sx = source_index(x, src.width, tw) * bpp;
        match runs.last_mut() {
            Some((d, s, len)) if *s + *len == sx && *d + *len == x * bpp => *len += bpp,
            _ => runs.push((x * bpp, sx, bpp)),
        }
    }
    let row_at = |y: usize| (top + y) * dst_stride + left * bpp;
    let mut previous: Option<(usize, usize)> = None;
    for y in 0..th {
        let sy = source_index(y, src.height, th);
        let at = row_at(y);
        match previous {
            // Scaled up, rows repeat: copy the row already made.
            Some((py, from)) if py == sy => dst.copy_within(from..from + tw * bpp, at),
            _ => {
                let row = &src.data[sy * src.stride..][..src.width * bpp];
                let out = &mut dst[at..at + tw * bpp];
                for &(d, s, len) in &runs {
                    out[d..d + len].copy_from_slice(&row[s..s + len]);
                }
            }
        }
        previous = Some((sy, at));
    }
}

/// Scales a checked `h`×`w`×3 frame into the rectangle of `dst`, a frame
/// `dst_w` pixels wide that holds it (the callers check both).
pub(crate) fn resize_into(
    src: &[u8],
    (h, w): (usize, usize),
    dst: &mut [u8],
    dst_w: usize,
    rect: (usize, usize, usize, usize),
) {
    let plane = Plane {
        data: src,
        height: h,
        width: w,
        stride: w * 3,
    };
    scale_into(&plane, 3, dst, dst_w * 3, rect);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn paints_are_one_operation_in_either_colour_space() {
        let colour = [40u8, 150, 220];
        let mut bgr = vec![0u8; 4 * 4 * 3];
        for p in bgr.chunks_exact_mut(3) {
            p.copy_from_slice(&colour);
        }
        let mut yuv = Yuv420::from_bgr(&bgr, 4, 4).unwrap();
        let mut surface = Bgr::new(&mut bgr, 4);
        for paint in [
            Paint::Darken,
            Paint::Ink {
                coverage: 128,
                white: 255,
            },
            Paint::Fill([10, 200, 30]),
        ] {
            for y in 0..4 {
                surface.paint(y, 0, 4, paint);
                yuv.paint(y, 0, 4, paint);
            }
            let (a, b) = (&surface.pixels[..3], &yuv.to_bgr()[..3]);
            for (x, y) in a.iter().zip(b) {
                assert!(
                    x.abs_diff(*y) <= 3,
                    "{paint:?}: BGR {a:?}, through YCbCr {b:?}"
                );
            }
        }
    }

    #[test]
    fn tiles_side_by_side_never_share_a_chroma_sample() {
        // Two tiles meeting on an odd column: drawn in either order, the
        // same picture.
        let red = Arc::new(Yuv420::from_bgr(&[0, 0, 255].repeat(9), 3, 3).unwrap());
        let blue = Arc::new(Yuv420::from_bgr(&[255, 0, 0].repeat(9), 3, 3).unwrap());
        let mut one = Yuv420::black(6, 10).unwrap();
        let mut two = one.clone();
        one.place(&red, (1, 0, 5, 5));
        one.place(&blue, (1, 5, 5, 5));
        two.place(&blue, (1, 5, 5, 5));
        two.place(&red, (1, 0, 5, 5));
        assert_eq!(one, two);
        let px = one.to_bgr();
        let at = |y: usize, x: usize| &px[(y * 10 + x) * 3..][..3];
        assert!(
            at(2, 0)[2] > 200 && at(2, 8)[0] > 200,
            "{:?} {:?}",
            at(2, 0),
            at(2, 8)
        );
        assert_eq!(at(0, 0), [0, 0, 0], "above the tiles");
        // Paints and tiles clip, whatever they are given.
        one.paint(100, 0, 5, Paint::Darken);
        one.paint(0, 7, usize::MAX, Paint::Fill([1, 2, 3]));
        let mut empty = Bgr::new(&mut [], 0);
        empty.paint(0, 0, 10, Paint::Darken);
        assert_eq!(empty.size(), (0, 0));
        let frame = Frame::new(Bytes::from(vec![0u8; 5]), 1, 2);
        assert!(Bgr::tile_dims(&frame).is_err());
    }
}
