//! Frame arithmetic of the mosaic: C-order uint8 H×W×3 buffers.

use bytes::{Bytes, BytesMut};

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

/// Resizes an `h`×`w`×3 frame to `new_w` wide, keeping the aspect ratio
/// (nearest neighbour). Returns the pixels and the new height (at least 1).
pub fn resize_to_width(src: &[u8], h: usize, w: usize, new_w: usize) -> (Bytes, usize) {
    let new_h = ((h as f64 * new_w as f64 / w as f64).round() as usize).max(1);
    let xs: Vec<usize> = (0..new_w).map(|x| x * w / new_w * 3).collect();
    let mut out = BytesMut::with_capacity(new_h * new_w * 3);
    for y in 0..new_h {
        let row = &src[(y * h / new_h) * w * 3..][..w * 3];
        for &sx in &xs {
            out.extend_from_slice(&row[sx..sx + 3]);
        }
    }
    (out.freeze(), new_h)
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
    }

    #[test]
    fn extreme_aspect_never_panics() {
        let src = vec![7u8; 1000 * 3];
        let (out, h) = resize_to_width(&src, 1, 1000, 3);
        assert_eq!((h, out.len()), (1, 9));
    }
}
