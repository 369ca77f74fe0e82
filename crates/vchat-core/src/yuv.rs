//! Pictures in YCbCr 4:2:0, the form a JPEG stores them in: a grid room
//! decodes its JPEG tiles to it and encodes its canvas from it, so neither
//! side converts colours or resamples chroma, and every copy moves half the
//! bytes of BGR.
//!
//! The colours are JPEG's (JFIF: BT.601, full range). The planes lie back to
//! back, Y then Cb then Cr, each row of each plane unpadded, the luma plane's
//! sides rounded up to even: the layout libjpeg-turbo reads and writes with a
//! row alignment of 1.

/// The most a side rounds up to: an even number of pixels.
fn even(side: usize) -> Option<usize> {
    side.checked_add(side & 1)
}

/// A YCbCr 4:2:0 picture of `height`×`width` pixels. Its buffer always
/// matches its size, so every plane access is in bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Yuv420 {
    height: usize,
    width: usize,
    data: Vec<u8>,
}

/// One plane of a [`Yuv420`]: its rows, its columns (its stride) and the
/// columns and rows that hold picture (the luma plane of an odd side has one
/// more, repeating its neighbour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneShape {
    /// Rows in the buffer.
    pub rows: usize,
    /// Bytes of a row in the buffer.
    pub stride: usize,
    /// Rows that show the picture.
    pub height: usize,
    /// Columns that show the picture.
    pub width: usize,
}

impl Yuv420 {
    /// The bytes of a `height`×`width` picture; `None` when a side is 0 or
    /// the size overflows.
    pub fn buffer_len(height: usize, width: usize) -> Option<usize> {
        if height == 0 || width == 0 {
            return None;
        }
        let (h, w) = (even(height)?, even(width)?);
        let luma = h.checked_mul(w)?;
        luma.checked_add(luma / 2)
    }

    /// A black picture (Y 0, Cb and Cr 128); `None` as for [`Self::buffer_len`].
    pub fn black(height: usize, width: usize) -> Option<Self> {
        let len = Self::buffer_len(height, width)?;
        let luma = len / 3 * 2;
        let mut data = vec![128u8; len];
        data[..luma].fill(0);
        Some(Yuv420 {
            height,
            width,
            data,
        })
    }

    /// A black picture of one pixel.
    pub fn dot() -> Self {
        Yuv420 {
            height: 1,
            width: 1,
            data: vec![0, 0, 0, 0, 128, 128],
        }
    }

    /// The picture in `data`, when it is the [`Self::buffer_len`] of the size.
    pub fn from_data(height: usize, width: usize, data: Vec<u8>) -> Option<Self> {
        (Self::buffer_len(height, width)? == data.len()).then_some(Yuv420 {
            height,
            width,
            data,
        })
    }

    /// `(height, width)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// The whole buffer, planes back to back.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The shape of the luma plane (`0`) or a chroma plane (`1`, `2`).
    pub fn plane_shape(&self, plane: usize) -> PlaneShape {
        // Within buffer_len, which was checked on construction.
        let (h, w) = (
            self.height + (self.height & 1),
            self.width + (self.width & 1),
        );
        if plane == 0 {
            PlaneShape {
                rows: h,
                stride: w,
                height: self.height,
                width: self.width,
            }
        } else {
            PlaneShape {
                rows: h / 2,
                stride: w / 2,
                height: h / 2,
                width: w / 2,
            }
        }
    }

    /// The three planes, Y, Cb and Cr.
    pub fn planes(&self) -> [&[u8]; 3] {
        let luma = self.data.len() / 3 * 2;
        let (y, c) = self.data.split_at(luma);
        let (u, v) = c.split_at(c.len() / 2);
        [y, u, v]
    }

    /// The three planes, Y, Cb and Cr, to write.
    pub fn planes_mut(&mut self) -> [&mut [u8]; 3] {
        let luma = self.data.len() / 3 * 2;
        let (y, c) = self.data.split_at_mut(luma);
        let (u, v) = c.split_at_mut(c.len() / 2);
        [y, u, v]
    }

    /// Converts BGR `height`×`width`×3 pixels, each chroma sample the mean
    /// of its 2x2 pixels; `None` when `pixels` is not that size.
    pub fn from_bgr(pixels: &[u8], height: usize, width: usize) -> Option<Self> {
        if height.checked_mul(width)?.checked_mul(3)? != pixels.len() {
            return None;
        }
        let mut out = Self::black(height, width)?;
        let [ys, us, vs] = out.planes_mut();
        let (yw, cw) = (even(width)?, even(width)? / 2);
        for (y, row) in pixels.chunks_exact(width * 3).enumerate() {
            for (x, p) in row.chunks_exact(3).enumerate() {
                ys[y * yw + x] = ycc_of_bgr([p[0], p[1], p[2]])[0];
            }
        }
        for cy in 0..height.div_ceil(2) {
            for cx in 0..width.div_ceil(2) {
                let mut sum = [0u32; 3];
                let mut n = 0u32;
                for y in 2 * cy..(2 * cy + 2).min(height) {
                    for x in 2 * cx..(2 * cx + 2).min(width) {
                        let p = &pixels[(y * width + x) * 3..][..3];
                        for (s, &v) in sum.iter_mut().zip(p) {
                            *s += u32::from(v);
                        }
                        n += 1;
                    }
                }
                let mean = sum.map(|s| ((s + n / 2) / n) as u8);
                let [_, cb, cr] = ycc_of_bgr(mean);
                us[cy * cw + cx] = cb;
                vs[cy * cw + cx] = cr;
            }
        }
        out.repeat_edges();
        Some(out)
    }

    /// Sets the luma plane's padding (the extra column and row of an odd
    /// side) to the picture's last column and row. libjpeg-turbo leaves
    /// whatever its buffers held there, which may be another picture's.
    pub fn repeat_edges(&mut self) {
        let (h, w) = self.dims();
        let PlaneShape { rows, stride, .. } = self.plane_shape(0);
        let [ys, _, _] = self.planes_mut();
        if stride > w {
            for row in ys.chunks_exact_mut(stride).take(h) {
                row[w] = row[w - 1];
            }
        }
        if rows > h {
            let (done, pad) = ys.split_at_mut(h * stride);
            pad[..stride].copy_from_slice(&done[(h - 1) * stride..]);
        }
    }

    /// The picture as BGR `height`×`width`×3 pixels, each chroma sample
    /// spread over its 2x2 pixels.
    pub fn to_bgr(&self) -> Vec<u8> {
        let [ys, us, vs] = self.planes();
        let (yw, cw) = (self.plane_shape(0).stride, self.plane_shape(1).stride);
        let mut out = vec![0u8; self.height * self.width * 3];
        for (y, row) in out.chunks_exact_mut(self.width * 3).enumerate() {
            let (luma, cb, cr) = (&ys[y * yw..], &us[y / 2 * cw..], &vs[y / 2 * cw..]);
            for (x, p) in row.chunks_exact_mut(3).enumerate() {
                p.copy_from_slice(&bgr_of_ycc([luma[x], cb[x / 2], cr[x / 2]]));
            }
        }
        out
    }
}

/// 16-bit fixed point.
const ONE: i32 = 1 << 16;

/// JPEG's Y, Cb and Cr of a BGR colour.
pub fn ycc_of_bgr([b, g, r]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let round = ONE / 2;
    let y = (19595 * r + 38470 * g + 7471 * b + round) >> 16;
    let cb = (-11059 * r - 21709 * g + 32768 * b + 128 * ONE + round) >> 16;
    let cr = (32768 * r - 27439 * g - 5329 * b + 128 * ONE + round) >> 16;
    [y, cb, cr].map(|v| v.clamp(0, 255) as u8)
}

/// The BGR colour of JPEG's Y, Cb and Cr.
pub fn bgr_of_ycc([y, cb, cr]: [u8; 3]) -> [u8; 3] {
    let (y, cb, cr) = (i32::from(y) * ONE, i32::from(cb) - 128, i32::from(cr) - 128);
    let round = ONE / 2;
    let r = (y + 91881 * cr + round) >> 16;
    let g = (y - 22554 * cb - 46802 * cr + round) >> 16;
    let b = (y + 116130 * cb + round) >> 16;
    [b, g, r].map(|v| v.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_even_and_never_overflow() {
        assert_eq!(Yuv420::buffer_len(2, 2), Some(6));
        assert_eq!(Yuv420::buffer_len(3, 5), Some(4 * 6 + 2 * 2 * 3));
        assert_eq!(Yuv420::buffer_len(0, 5), None);
        assert_eq!(Yuv420::buffer_len(usize::MAX, 1), None);
        assert_eq!(Yuv420::buffer_len(1 << 40, 1 << 40), None);
        assert!(Yuv420::from_data(2, 2, vec![0; 5]).is_none());
        assert!(Yuv420::from_bgr(&[0; 8], 1, 3).is_none());
    }

    #[test]
    fn colours_survive_a_round_trip() {
        for c in [
            [0, 0, 0],
            [255, 255, 255],
            [0, 0, 255],
            [0, 255, 0],
            [255, 0, 0],
            [40, 90, 200],
        ] {
            let back = bgr_of_ycc(ycc_of_bgr(c));
            for (a, b) in c.iter().zip(back) {
                assert!(a.abs_diff(b) <= 2, "{c:?} came back {back:?}");
            }
        }
        assert_eq!(ycc_of_bgr([128, 128, 128]), [128, 128, 128]);
    }

    #[test]
    fn pictures_of_any_size_convert_both_ways() {
        for (h, w) in [(1, 1), (1, 2), (3, 5), (4, 4), (7, 2)] {
            // Flat colour blocks of 2x2, so chroma subsampling loses nothing.
            let px: Vec<u8> = (0..h * w)
                .flat_map(|i| {
                    let (y, x) = (i / w, i % w);
                    [(x / 2 * 60) as u8, (y / 2 * 70) as u8, 200]
                })
                .collect();
            let yuv = Yuv420::from_bgr(&px, h, w).unwrap();
            assert_eq!(yuv.dims(), (h, w));
            assert_eq!(yuv.data().len(), Yuv420::buffer_len(h, w).unwrap());
            let back = yuv.to_bgr();
            assert_eq!(back.len(), px.len());
            for (a, b) in px.iter().zip(&back) {
                assert!(a.abs_diff(*b) <= 2, "{h}x{w}: {px:?} came back {back:?}");
            }
        }
        assert_eq!(Yuv420::dot(), Yuv420::black(1, 1).unwrap());
        let black = Yuv420::black(3, 3).unwrap();
        assert!(black.to_bgr().iter().all(|&v| v == 0));
        assert_eq!(black.plane_shape(1).stride, 2);
    }
}
