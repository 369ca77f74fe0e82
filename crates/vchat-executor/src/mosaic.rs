//! Frame arithmetic of the mosaic: C-order uint8 H×W×3 buffers.
//!
//! Every size here comes from a peer, so every function checks its input (each
//! buffer matches the dimensions given with it) and computes the size of what it
//! makes with checked arithmetic, against a pixel limit the caller passes, before
//! allocating anything: on any input a function returns a [`MosaicError`] or a
//! result within its limit, never panics and never asks for more memory than the
//! limit. [`draw_border`] allocates nothing and clips to its frame.

use std::fmt;

use bytes::{Bytes, BytesMut};

use vchat_core::Rope;

use crate::Frame;
use crate::surface::{Bgr, Paint, Surface, resize_into};

/// Colour of the border around a user's own tile (`highlight_self`), BGR green.
pub const HIGHLIGHT_BGR: [u8; 3] = [0, 200, 0];

/// Why a mosaic function refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MosaicError {
    /// The result would be `height`×`width` pixels (each saturated at
    /// `usize::MAX`), over the `limit` the caller set.
    TooLarge {
        /// Rows of the result.
        height: usize,
        /// Columns of the result.
        width: usize,
        /// The most pixels allowed.
        limit: usize,
    },
    /// A buffer does not match the dimensions given with it, a dimension is
    /// zero, or frames to stack do not share their side.
    BadInput(String),
}

impl fmt::Display for MosaicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MosaicError::TooLarge {
                height,
                width,
                limit,
            } => write!(
                f,
                "a {height}x{width} result is over the limit of {limit} pixels"
            ),
            MosaicError::BadInput(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for MosaicError {}

/// `h`×`w` pixels when they are at most `limit`, else [`MosaicError::TooLarge`].
pub fn checked_pixels(h: usize, w: usize, limit: usize) -> Result<usize, MosaicError> {
    match h.checked_mul(w) {
        // An allocation may not exceed isize::MAX bytes, whatever the limit.
        Some(px) if px <= limit && px.checked_mul(3).is_some_and(|b| b <= isize::MAX as usize) => {
            Ok(px)
        }
        _ => Err(MosaicError::TooLarge {
            height: h,
            width: w,
            limit,
        }),
    }
}

/// Checks that `src` is an `h`×`w`×3 frame.
fn check_frame(src: &[u8], h: usize, w: usize) -> Result<(), MosaicError> {
    check_len(src.len(), h, w)
}

/// Checks that a frame's pixels are its `height`×`width`×3.
pub(crate) fn check_tile_frame(frame: &Frame) -> Result<(), MosaicError> {
    check_len(frame.pixels.len(), frame.height, frame.width)
}

/// Checks that `len` bytes are an `h`×`w`×3 frame.
fn check_len(len: usize, h: usize, w: usize) -> Result<(), MosaicError> {
    if h == 0 || w == 0 {
        return Err(MosaicError::BadInput(format!(
            "a {h}x{w} frame has no pixels"
        )));
    }
    match h.checked_mul(w).and_then(|px| px.checked_mul(3)) {
        Some(n) if n == len => Ok(()),
        _ => Err(MosaicError::BadInput(format!(
            "{len} bytes are not a {h}x{w}x3 frame"
        ))),
    }
}

/// Stacks frames of equal width top to bottom. For C-order frames this is byte
/// concatenation, so the result's pixels are the frames' own, in order, as the
/// pieces of a rope: nothing is copied. Refused when the frames differ in width
/// or the result is over `max_pixels`.
pub fn stack_vertically(parts: &[Frame], max_pixels: usize) -> Result<Frame, MosaicError> {
    let width = parts
        .first()
        .map(|p| p.width)
        .ok_or_else(|| MosaicError::BadInput("no frames to stack".into()))?;
    let mut height = 0usize;
    for part in parts {
        let (h, w) = part.dims();
        check_len(part.pixels.len(), h, w)?;
        if w != width {
            return Err(MosaicError::BadInput(format!(
                "frames to stack vertically differ in width: {w} and {width}"
            )));
        }
        height = height.saturating_add(h);
    }
    checked_pixels(height, width, max_pixels)?;
    let pieces = parts
        .iter()
        .flat_map(|p| p.pixels.pieces().iter().cloned())
        .collect();
    // Within the pixel limit, so the lengths add up without overflow.
    let pixels = Rope::from_pieces(pieces)
        .ok_or_else(|| MosaicError::BadInput("frames too large to stack".into()))?;
    Ok(Frame::new(pixels, height, width))
}

/// Places frames of equal height side by side. One allocation, one copy per row
/// of each frame. Refused when the frames differ in height or the result is over
/// `max_pixels`.
pub fn stack_horizontally(parts: &[Frame], max_pixels: usize) -> Result<Frame, MosaicError> {
    let height = parts
        .first()
        .map(|p| p.height)
        .ok_or_else(|| MosaicError::BadInput("no frames to stack".into()))?;
    let mut width = 0usize;
    for part in parts {
        let (h, w) = part.dims();
        check_len(part.pixels.len(), h, w)?;
        if h != height {
            return Err(MosaicError::BadInput(format!(
                "frames to stack horizontally differ in height: {h} and {height}"
            )));
        }
        width = width.saturating_add(w);
    }
    checked_pixels(height, width, max_pixels)?;
    let mut out = BytesMut::with_capacity(height * width * 3);
    let sources: Vec<&[u8]> = parts.iter().map(|p| &p.bytes()[..]).collect();
    for y in 0..height {
        for (part, src) in parts.iter().zip(&sources) {
            let row = part.width * 3;
            out.extend_from_slice(&src[y * row..(y + 1) * row]);
        }
    }
    Ok(Frame::new(out.freeze(), height, width))
}

/// Resizes an `h`×`w`×3 frame to `new_h`×`new_w` (nearest neighbour), refused
/// when that is over `max_pixels`.
pub fn resize(
    src: &[u8],
    h: usize,
    w: usize,
    new_h: usize,
    new_w: usize,
    max_pixels: usize,
) -> Result<Bytes, MosaicError> {
    check_frame(src, h, w)?;
    if new_h == 0 || new_w == 0 {
        return Err(MosaicError::BadInput(format!(
            "cannot resize to {new_h}x{new_w}: no pixels"
        )));
    }
    let px = checked_pixels(new_h, new_w, max_pixels)?;
    let mut out = vec![0u8; px * 3];
    resize_into(src, (h, w), &mut out, new_w, (0, 0, new_h, new_w));
    Ok(Bytes::from(out))
}

/// `side × num / den`, rounded, at least 1 (saturating): the other side of a
/// frame scaled keeping its aspect ratio. `den` must not be 0.
fn scaled(side: usize, num: usize, den: usize) -> usize {
    let (s, n, d) = (side as u128, num as u128, den.max(1) as u128);
    // s * n < 2^128; the rounding term may not fit beside it, so round on the
    // quotient and remainder instead.
    let prod = s * n;
    let (q, r) = (prod / d, prod % d);
    let rounded = q + u128::from(r >= d - r);
    usize::try_from(rounded.max(1)).unwrap_or(usize::MAX)
}

/// The height of an `h`×`w` frame resized to `new_w` wide keeping its aspect
/// ratio: rounded, at least 1, saturating at `usize::MAX`.
pub fn height_at_width(h: usize, w: usize, new_w: usize) -> usize {
    scaled(h, new_w, w)
}

/// The width of an `h`×`w` frame resized to `new_h` high keeping its aspect
/// ratio: rounded, at least 1, saturating at `usize::MAX`.
pub fn width_at_height(h: usize, w: usize, new_h: usize) -> usize {
    scaled(w, new_h, h)
}

/// Resizes an `h`×`w`×3 frame to `new_w` wide, keeping the aspect ratio
/// (nearest neighbour). Returns the pixels and the new height (at least 1);
/// refused when the result is over `max_pixels`.
pub fn resize_to_width(
    src: &[u8],
    h: usize,
    w: usize,
    new_w: usize,
    max_pixels: usize,
) -> Result<(Bytes, usize), MosaicError> {
    check_frame(src, h, w)?;
    let new_h = height_at_width(h, w, new_w);
    Ok((resize(src, h, w, new_h, new_w, max_pixels)?, new_h))
}

/// Resizes an `h`×`w`×3 frame to `new_h` high, keeping the aspect ratio
/// (nearest neighbour). Returns the pixels and the new width (at least 1);
/// refused when the result is over `max_pixels`.
pub fn resize_to_height(
    src: &[u8],
    h: usize,
    w: usize,
    new_h: usize,
    max_pixels: usize,
) -> Result<(Bytes, usize), MosaicError> {
    check_frame(src, h, w)?;
    let new_w = width_at_height(h, w, new_h);
    Ok((resize(src, h, w, new_h, new_w, max_pixels)?, new_w))
}

/// Rows and columns of a grid of `n` tiles: as square as possible, wider than
/// high when it cannot be square.
pub fn grid_shape(n: usize) -> (usize, usize) {
    let n = n.max(1);
    let root = n.isqrt();
    let cols = if root * root >= n { root } else { root + 1 };
    (n.div_ceil(cols), cols)
}

/// Composes `tiles` in a `canvas_h`×`canvas_w` canvas (black), row by row in
/// order, each scaled to fit its cell keeping its aspect ratio and centred in it.
/// The tile at `highlight`, if any, gets a coloured border. The output size is
/// always the canvas's, however many tiles there are; refused when the canvas is
/// over `max_pixels` or a tile does not match its dimensions.
pub fn compose_grid(
    tiles: &[Frame],
    canvas_h: usize,
    canvas_w: usize,
    highlight: Option<usize>,
    max_pixels: usize,
) -> Result<Bytes, MosaicError> {
    let px = checked_pixels(canvas_h, canvas_w, max_pixels)?;
    let mut out = vec![0u8; px * 3];
    draw_grid(&mut Bgr::new(&mut out, canvas_w), tiles, highlight)?;
    Ok(Bytes::from(out))
}

/// Draws the grid of `tiles` on `canvas`, black, as [`compose_grid`] composes
/// it, with the border of `highlight`.
pub fn draw_grid<S: Surface>(
    canvas: &mut S,
    tiles: &[S::Tile],
    highlight: Option<usize>,
) -> Result<(), MosaicError> {
    let all: Vec<usize> = (0..tiles.len()).collect();
    redraw_grid_tiles(canvas, tiles, &all)?;
    let (h, w) = canvas.size();
    let dims = tiles
        .iter()
        .map(S::tile_dims)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(rect) = highlight.and_then(|i| grid_rects(&dims, h, w).get(i).copied()) {
        draw_border(canvas, rect);
    }
    Ok(())
}

/// The cells of a grid of `n` tiles in a `canvas_h`x`canvas_w` canvas,
/// `(top, left, height, width)` in order; none when they would have no
/// pixels. A tile of [`grid_rects`] lies within its cell.
pub fn grid_cells(n: usize, canvas_h: usize, canvas_w: usize) -> Vec<(usize, usize, usize, usize)> {
    let (rows, cols) = grid_shape(n);
    let (cell_h, cell_w) = (canvas_h / rows, canvas_w / cols);
    if cell_h == 0 || cell_w == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|i| ((i / cols) * cell_h, (i % cols) * cell_w, cell_h, cell_w))
        .collect()
}

/// Draws `tiles[i]` for each `i` of `redraw` in a canvas already holding a grid
/// of `tiles.len()` tiles (as [`draw_grid`] drew it, without highlight): its
/// cell is cleared to black and the tile placed as [`draw_grid`] places it,
/// so that the canvas is then the one [`draw_grid`] would draw of `tiles`.
/// Refused when the canvas has no pixels, an index is out of range or a tile
/// does not match its dimensions, before anything is drawn.
pub fn redraw_grid_tiles<S: Surface>(
    canvas: &mut S,
    tiles: &[S::Tile],
    redraw: &[usize],
) -> Result<(), MosaicError> {
    let (canvas_h, canvas_w) = canvas.size();
    if canvas_h == 0 || canvas_w == 0 {
        return Err(MosaicError::BadInput(format!(
            "a {canvas_h}x{canvas_w} canvas has no pixels"
        )));
    }
    let dims = tiles
        .iter()
        .map(S::tile_dims)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(&i) = redraw.iter().find(|&&i| i >= tiles.len()) {
        return Err(MosaicError::BadInput(format!(
            "no tile {i} of {} to redraw",
            tiles.len()
        )));
    }
    let rects = grid_rects(&dims, canvas_h, canvas_w);
    let cells = grid_cells(tiles.len(), canvas_h, canvas_w);
    for &i in redraw {
        let (Some(&rect), Some(&(top, left, ch, cw))) = (rects.get(i), cells.get(i)) else {
            continue;
        };
        // Black around the tile; the tile covers the rest.
        let (rt, rl, rh, rw) = rect;
        let black = Paint::Fill([0, 0, 0]);
        for y in top..top + ch {
            if (rt..rt + rh).contains(&y) {
                canvas.paint(y, left, rl, black);
                canvas.paint(y, rl + rw, left + cw, black);
            } else {
                canvas.paint(y, left, left + cw, black);
            }
        }
        // grid_rects keeps a tile within its cell, and so within the canvas.
        canvas.place(&tiles[i], rect);
    }
    Ok(())
}

/// Where [`compose_grid`] places tiles of these `(height, width)`s in a
/// `canvas_h`×`canvas_w` canvas: `(top, left, height, width)` of each, in
/// order; none when the cells would have no pixels.
pub fn grid_rects(
    dims: &[(usize, usize)],
    canvas_h: usize,
    canvas_w: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let (rows, cols) = grid_shape(dims.len());
    let (cell_h, cell_w) = (canvas_h / rows, canvas_w / cols);
    if cell_h == 0 || cell_w == 0 {
        return Vec::new();
    }
    dims.iter()
        .enumerate()
        .map(|(i, &(h, w))| {
            // The larger of the two scales that fit: the tile's height at the
            // cell's width, else its width at the cell's height.
            let (th, tw) = match height_at_width(h, w, cell_w) {
                th if th <= cell_h => (th, cell_w),
                _ => (cell_h, width_at_height(h, w, cell_h).min(cell_w)),
            };
            let top = (i / cols) * cell_h + (cell_h - th) / 2;
            let left = (i % cols) * cell_w + (cell_w - tw) / 2;
            (top, left, th, tw)
        })
        .collect()
}

/// Draws a border inside the rectangle `(top, left, height, width)` of
/// `canvas`, in [`HIGHLIGHT_BGR`]. The part of the rectangle outside the
/// canvas is clipped: it allocates nothing and cannot fail.
pub fn draw_border<S: Surface>(canvas: &mut S, (top, left, h, w): (usize, usize, usize, usize)) {
    let (frame_h, frame_w) = canvas.size();
    if h == 0 || w == 0 {
        return;
    }
    let t = (h.min(w) / 40).clamp(1, 6);
    let (bottom, right) = (top.saturating_add(h), left.saturating_add(w));
    let (x0, x1) = (left.min(frame_w), right.min(frame_w));
    let green = Paint::Fill(HIGHLIGHT_BGR);
    for y in top..bottom.min(frame_h) {
        if y < top + t || y >= bottom - t {
            canvas.paint(y, x0, x1, green);
        } else {
            canvas.paint(y, x0, left.saturating_add(t).min(x1), green);
            canvas.paint(y, (right - t).max(x0).min(x1), x1, green);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: usize = usize::MAX;

    fn solid(h: usize, w: usize, v: u8) -> Frame {
        Frame::new(Bytes::from(vec![v; h * w * 3]), h, w)
    }

    /// A frame of a copy of `px`, whatever its size says.
    fn frame(px: &[u8], h: usize, w: usize) -> Frame {
        Frame::new(Bytes::copy_from_slice(px), h, w)
    }

    #[test]
    fn stacking_concatenates() {
        let f = stack_vertically(&[frame(&[1, 2, 3], 1, 1), frame(&[4, 5, 6], 1, 1)], ANY).unwrap();
        let (s, h, w) = (f.pixels.contiguous(), f.height, f.width);
        assert_eq!((&s[..], h, w), (&[1, 2, 3, 4, 5, 6][..], 2, 1));
    }

    #[test]
    fn horizontal_interleaves_rows() {
        // Two 2-row frames, 1 and 2 pixels wide.
        let f = stack_horizontally(&[solid(2, 1, 1), solid(2, 2, 2)], ANY).unwrap();
        let (out, h, w) = (f.pixels.contiguous(), f.height, f.width);
        assert_eq!((h, w), (2, 3));
        let firsts: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(firsts, vec![1, 2, 2, 1, 2, 2]);
    }

    #[test]
    fn resize_picks_the_nearest_source_pixel_at_any_scale() {
        for (h, w) in [(1, 1), (3, 7), (20, 30), (17, 5)] {
            let px: Vec<u8> = (0..h * w * 3).map(|i| (i * 7 % 253) as u8).collect();
            for (nh, nw) in [
                (1, 1),
                (h, w),
                (2 * h + 1, 3 * w),
                (h * 16 / 15, w * 32 / 30 + 1),
                (3, 2),
            ] {
                let out = resize(&px, h, w, nh, nw, 1 << 20).unwrap();
                for y in 0..nh {
                    for x in 0..nw {
                        let (sy, sx) = (y * h / nh, x * w / nw);
                        assert_eq!(
                            out[(y * nw + x) * 3..][..3],
                            px[(sy * w + sx) * 3..][..3],
                            "{h}x{w} to {nh}x{nw} at ({y}, {x})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn resize_halves_and_doubles() {
        // 2×2 frame: pixel values 0, 1 / 2, 3.
        let src: Vec<u8> = [0u8, 1, 2, 3].iter().flat_map(|&v| [v; 3]).collect();
        let (down, h) = resize_to_width(&src, 2, 2, 1, ANY).unwrap();
        assert_eq!((h, &down[..]), (1, &[0u8, 0, 0][..]));
        let (up, h) = resize_to_width(&src, 2, 2, 4, ANY).unwrap();
        assert_eq!(h, 4);
        let firsts: Vec<u8> = up.chunks(3).map(|p| p[0]).collect();
        assert_eq!(&firsts[..8], &[0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(&firsts[8..], &[2, 2, 3, 3, 2, 2, 3, 3]);
        let (tall, w) = resize_to_height(&src, 2, 2, 4, ANY).unwrap();
        assert_eq!((w, tall.len()), (4, 4 * 4 * 3));
    }

    #[test]
    fn scaled_sides_round_and_saturate() {
        assert_eq!(height_at_width(4, 8, 4), 2);
        assert_eq!(height_at_width(3, 2, 1), 2, "1.5 rounds up");
        assert_eq!(height_at_width(1, 1000, 3), 1, "at least 1");
        assert_eq!(height_at_width(100_000, 1, 3840), 384_000_000);
        assert_eq!(width_at_height(1, usize::MAX, usize::MAX), usize::MAX);
        assert_eq!(height_at_width(usize::MAX, 1, usize::MAX), usize::MAX);
    }

    #[test]
    fn extreme_aspect_never_panics() {
        let src = vec![7u8; 1000 * 3];
        let (out, h) = resize_to_width(&src, 1, 1000, 3, ANY).unwrap();
        assert_eq!((h, out.len()), (1, 9));
        let out = compose_grid(&[frame(&src, 1, 1000)], 10, 10, Some(0), ANY).unwrap();
        assert_eq!(out.len(), 300);
    }

    /// The shape that took the process down: 1 pixel wide, 100,000 tall, to a
    /// room 3840 wide, is refused before anything is allocated.
    #[test]
    fn a_tall_sliver_to_a_wide_room_is_refused() {
        let src = vec![1u8; 100_000 * 3];
        let limit = 3840 * 2160;
        let err = resize_to_width(&src, 100_000, 1, 3840, limit).unwrap_err();
        assert_eq!(
            err,
            MosaicError::TooLarge {
                height: 384_000_000,
                width: 3840,
                limit
            }
        );
        assert!(err.to_string().contains("over the limit of 8294400 pixels"));
        let err = resize_to_height(&vec![1u8; 100_000 * 3], 1, 100_000, 2160, limit);
        assert!(matches!(err, Err(MosaicError::TooLarge { .. })));
    }

    #[test]
    fn extreme_shapes_are_errors_not_panics() {
        let px = [0u8; 3];
        let huge = [usize::MAX, usize::MAX / 3, 1 << 32, (1 << 32) + 1, 0, 1];
        for &h in &huge {
            for &w in &huge {
                // Dimensions that do not match the buffer: always refused.
                if (h, w) != (1, 1) {
                    assert!(resize(&px, h, w, 1, 1, ANY).is_err(), "{h}x{w}");
                    assert!(resize_to_width(&px, h, w, 2, ANY).is_err());
                    assert!(stack_vertically(&[frame(&px, h, w)], ANY).is_err());
                    assert!(stack_horizontally(&[frame(&px, h, w)], ANY).is_err());
                    assert!(compose_grid(&[frame(&px, h, w)], 4, 4, None, ANY).is_err());
                }
                // Any output size: within the limit, or refused before allocating.
                let r = resize(&px, 1, 1, h, w, 1 << 20);
                assert_eq!(r.is_ok(), h > 0 && w > 0 && h.saturating_mul(w) <= 1 << 20);
                let _ = resize_to_width(&px, 1, 1, w, 1 << 20);
                let _ = resize_to_height(&px, 1, 1, h, 1 << 20);
                // Even with no limit, sizes past what memory can address are refused.
                if h.checked_mul(w).and_then(|p| p.checked_mul(3)).is_none() {
                    assert!(resize(&px, 1, 1, h, w, ANY).is_err());
                    assert!(compose_grid(&[], h, w, None, ANY).is_err());
                }
                let mut frame = [0u8; 4 * 4 * 3];
                draw_border(&mut Bgr::new(&mut frame, w), (h, w, h, w));
                draw_border(&mut Bgr::new(&mut frame, 4), (0, 0, h, w));
                draw_border(&mut Bgr::new(&mut frame, 4), (h, w, 2, 2));
            }
        }
        assert!(stack_vertically(&[], ANY).is_err());
        assert!(stack_horizontally(&[], ANY).is_err());
        assert_eq!(grid_shape(usize::MAX).1, 1 << 32);
    }

    #[test]
    fn stacks_over_the_limit_or_of_unequal_sides_are_refused() {
        let parts = [solid(2, 3, 1), solid(2, 3, 2)];
        assert!(stack_vertically(&parts, 12).is_ok());
        assert_eq!(
            stack_vertically(&parts, 11).unwrap_err(),
            MosaicError::TooLarge {
                height: 4,
                width: 3,
                limit: 11
            }
        );
        assert!(stack_horizontally(&parts, 11).is_err());
        assert!(stack_vertically(&[solid(2, 3, 1), solid(2, 4, 1)], ANY).is_err());
        assert!(stack_horizontally(&[solid(2, 3, 1), solid(3, 3, 1)], ANY).is_err());
        assert!(compose_grid(&[], 10, 10, None, 99).is_err(), "canvas limit");
    }

    #[test]
    fn border_is_clipped_to_the_frame() {
        let mut frame = vec![0u8; 4 * 4 * 3];
        draw_border(&mut Bgr::new(&mut frame, 4), (2, 2, 10, 10));
        let green = |y: usize, x: usize| frame[(y * 4 + x) * 3..][..3] == HIGHLIGHT_BGR;
        // The top and left edges are in the frame; the rest of the rectangle is not.
        assert!(green(2, 2) && green(2, 3) && green(3, 2));
        assert!(!green(3, 3), "inside the border");
        assert!(!green(0, 0) && !green(1, 1) && !green(3, 1));
    }

    #[test]
    fn grid_shapes() {
        assert_eq!(grid_shape(0), (1, 1));
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (1, 2));
        assert_eq!(grid_shape(3), (2, 2));
        assert_eq!(grid_shape(5), (2, 3));
        assert_eq!(grid_shape(9), (3, 3));
        assert_eq!(grid_shape(10), (3, 4));
    }

    #[test]
    fn grid_keeps_canvas_size_and_places_tiles() {
        let a = [10u8; 4 * 4 * 3];
        let b = [20u8; 4 * 4 * 3];
        let (a, b) = (frame(&a, 4, 4), frame(&b, 4, 4));
        for tiles in [vec![a.clone()], vec![a.clone(), b.clone()]] {
            let out = compose_grid(&tiles, 8, 16, None, ANY).unwrap();
            assert_eq!(out.len(), 8 * 16 * 3);
        }
        let out = compose_grid(&[a, b], 8, 16, Some(1), ANY).unwrap();
        // Left cell: a 8×8 tile of 10 centred; right cell: b with a border.
        assert_eq!(out[(4 * 16 + 4) * 3], 10);
        assert_eq!(out[(4 * 16 + 12) * 3], 20);
        assert_eq!(&out[(4 * 16 + 8) * 3..][..3], &HIGHLIGHT_BGR);
    }
}
