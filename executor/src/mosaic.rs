//! Frame arithmetic of the mosaic: C-order uint8 H×W×3 buffers.

use bytes::{Bytes, BytesMut};

/// Colour of the border around a user's own tile (`highlight_self`), BGR green.
pub const HIGHLIGHT_BGR: [u8; 3] = [0, 200, 0];

/// Stacks frames of equal width vertically. For C-order frames this is byte
/// concatenation: one allocation, one copy per frame.
pub fn stack_vertically(parts: &[Bytes]) -> Bytes {
    let total = parts.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(total);
    for p in parts {
        out.extend_from_slice(p);
    }
    out.freeze()
}

/// Places frames of equal height side by side: `parts` are `(pixels, width)`.
/// One allocation, one copy per row of each frame.
pub fn stack_horizontally(parts: &[(Bytes, usize)], height: usize) -> (Bytes, usize) {
    let width: usize = parts.iter().map(|(_, w)| w).sum();
    let mut out = BytesMut::with_capacity(height * width * 3);
    for y in 0..height {
        for (p, w) in parts {
            out.extend_from_slice(&p[y * w * 3..(y + 1) * w * 3]);
        }
    }
    (out.freeze(), width)
}

/// Resizes an `h`×`w`×3 frame to `new_h`×`new_w` (nearest neighbour).
pub fn resize(src: &[u8], h: usize, w: usize, new_h: usize, new_w: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(new_h * new_w * 3);
    let xs: Vec<usize> = (0..new_w).map(|x| x * w / new_w * 3).collect();
    for y in 0..new_h {
        let row = &src[(y * h / new_h) * w * 3..][..w * 3];
        for &sx in &xs {
            out.extend_from_slice(&row[sx..sx + 3]);
        }
    }
    out.freeze()
}

/// Resizes an `h`×`w`×3 frame to `new_w` wide, keeping the aspect ratio
/// (nearest neighbour). Returns the pixels and the new height (at least 1).
pub fn resize_to_width(src: &[u8], h: usize, w: usize, new_w: usize) -> (Bytes, usize) {
    let new_h = ((h as f64 * new_w as f64 / w as f64).round() as usize).max(1);
    (resize(src, h, w, new_h, new_w), new_h)
}

/// Resizes an `h`×`w`×3 frame to `new_h` high, keeping the aspect ratio
/// (nearest neighbour). Returns the pixels and the new width (at least 1).
pub fn resize_to_height(src: &[u8], h: usize, w: usize, new_h: usize) -> (Bytes, usize) {
    let new_w = ((w as f64 * new_h as f64 / h as f64).round() as usize).max(1);
    (resize(src, h, w, new_h, new_w), new_w)
}

/// Rows and columns of a grid of `n` tiles: as square as possible, wider than
/// high when it cannot be square.
pub fn grid_shape(n: usize) -> (usize, usize) {
    let cols = (1..).find(|c| c * c >= n.max(1)).unwrap_or(1);
    let rows = n.max(1).div_ceil(cols);
    (rows, cols)
}

/// One frame to place in a grid: pixels, height, width.
pub type Tile<'a> = (&'a [u8], usize, usize);

/// Composes `tiles` in a `canvas_h`×`canvas_w` canvas (black), row by row in
/// order, each scaled to fit its cell keeping its aspect ratio and centred in it.
/// The tile at `highlight`, if any, gets a coloured border. The output size is
/// always the canvas's, however many tiles there are.
pub fn compose_grid(
    tiles: &[Tile<'_>],
    canvas_h: usize,
    canvas_w: usize,
    highlight: Option<usize>,
) -> Bytes {
    let mut out = vec![0u8; canvas_h * canvas_w * 3];
    let (rows, cols) = grid_shape(tiles.len());
    let (cell_h, cell_w) = (canvas_h / rows, canvas_w / cols);
    if cell_h == 0 || cell_w == 0 {
        return Bytes::from(out);
    }
    for (i, &(px, h, w)) in tiles.iter().enumerate() {
        let scale = (cell_h as f64 / h as f64).min(cell_w as f64 / w as f64);
        let th = ((h as f64 * scale).round() as usize).clamp(1, cell_h);
        let tw = ((w as f64 * scale).round() as usize).clamp(1, cell_w);
        let scaled = resize(px, h, w, th, tw);
        let top = (i / cols) * cell_h + (cell_h - th) / 2;
        let left = (i % cols) * cell_w + (cell_w - tw) / 2;
        for y in 0..th {
            let dst = ((top + y) * canvas_w + left) * 3;
            out[dst..dst + tw * 3].copy_from_slice(&scaled[y * tw * 3..(y + 1) * tw * 3]);
        }
        if highlight == Some(i) {
            draw_border(&mut out, canvas_w, (top, left, th, tw));
        }
    }
    Bytes::from(out)
}

/// Draws a border inside the rectangle `(top, left, height, width)` of a frame
/// `frame_w` pixels wide, in [`HIGHLIGHT_BGR`].
pub fn draw_border(
    frame: &mut [u8],
    frame_w: usize,
    (top, left, h, w): (usize, usize, usize, usize),
) {
    let t = (h.min(w) / 40).clamp(1, 6);
    for y in top..top + h {
        for x in left..left + w {
            let edge = y < top + t || y >= top + h - t || x < left + t || x >= left + w - t;
            if edge {
                let i = (y * frame_w + x) * 3;
                frame[i..i + 3].copy_from_slice(&HIGHLIGHT_BGR);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_concatenates() {
        let s = stack_vertically(&[
            Bytes::from_static(&[1, 2, 3]),
            Bytes::from_static(&[4, 5, 6]),
        ]);
        assert_eq!(&s[..], &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn horizontal_interleaves_rows() {
        // Two 2-row frames, 1 and 2 pixels wide.
        let a = Bytes::from(vec![1u8; 2 * 3]);
        let b = Bytes::from(vec![2u8; 2 * 2 * 3]);
        let (out, w) = stack_horizontally(&[(a, 1), (b, 2)], 2);
        assert_eq!(w, 3);
        let firsts: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(firsts, vec![1, 2, 2, 1, 2, 2]);
    }

    #[test]
    fn resize_halves_and_doubles() {
        // 2×2 frame: pixel values 0, 1 / 2, 3.
        let src: Vec<u8> = [0u8, 1, 2, 3].iter().flat_map(|&v| [v; 3]).collect();
        let (down, h) = resize_to_width(&src, 2, 2, 1);
        assert_eq!((h, &down[..]), (1, &[0u8, 0, 0][..]));
        let (up, h) = resize_to_width(&src, 2, 2, 4);
        assert_eq!(h, 4);
        let firsts: Vec<u8> = up.chunks(3).map(|p| p[0]).collect();
        assert_eq!(&firsts[..8], &[0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(&firsts[8..], &[2, 2, 3, 3, 2, 2, 3, 3]);
        let (tall, w) = resize_to_height(&src, 2, 2, 4);
        assert_eq!((w, tall.len()), (4, 4 * 4 * 3));
    }

    #[test]
    fn extreme_aspect_never_panics() {
        let src = vec![7u8; 1000 * 3];
        let (out, h) = resize_to_width(&src, 1, 1000, 3);
        assert_eq!((h, out.len()), (1, 9));
        let out = compose_grid(&[(&src, 1, 1000)], 10, 10, Some(0));
        assert_eq!(out.len(), 300);
    }

    #[test]
    fn grid_shapes() {
        assert_eq!(grid_shape(1), (1, 1));
        assert_eq!(grid_shape(2), (1, 2));
        assert_eq!(grid_shape(3), (2, 2));
        assert_eq!(grid_shape(5), (2, 3));
        assert_eq!(grid_shape(9), (3, 3));
    }

    #[test]
    fn grid_keeps_canvas_size_and_places_tiles() {
        let a = [10u8; 4 * 4 * 3];
        let b = [20u8; 4 * 4 * 3];
        for tiles in [vec![(&a[..], 4, 4)], vec![(&a[..], 4, 4), (&b[..], 4, 4)]] {
            let out = compose_grid(&tiles, 8, 16, None);
            assert_eq!(out.len(), 8 * 16 * 3);
        }
        let out = compose_grid(&[(&a[..], 4, 4), (&b[..], 4, 4)], 8, 16, Some(1));
        // Left cell: a 8×8 tile of 10 centred; right cell: b with a border.
        assert_eq!(out[(4 * 16 + 4) * 3], 10);
        assert_eq!(out[(4 * 16 + 12) * 3], 20);
        assert_eq!(&out[(4 * 16 + 8) * 3..][..3], &HIGHLIGHT_BGR);
    }
}
