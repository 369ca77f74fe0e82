//! Pictures in YCbCr 4:2:0, the form a JPEG stores them in: a grid room
//! decodes its JPEG tiles to it and encodes its canvas from it, so neither
//! side converts colours or resamples chroma, and every copy moves half the
//! bytes of BGR.
//!
//! A [`Yuv420`]'s colours are JPEG's (JFIF: BT.601, full range). Its planes
//! lie back to back, Y then Cb then Cr, each row of each plane unpadded, the
//! luma plane's sides rounded up to even: the layout libjpeg-turbo reads and
//! writes with a row alignment of 1.
//!
//! [`bgr_to_yuv420`] and [`yuv420_to_bgr`] convert in any of the [`Colour`]s
//! a video stream declares (BT.601 or BT.709, full or limited range): the
//! WebRTC door's H.264 pictures and the grid's JPEG ones go through the same
//! code.

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
        let mut out = Self::black(height, width)?;
        if !bgr_to_yuv420(pixels, (width, height), Colour::JPEG, &mut out.data) {
            return None;
        }
        out.repeat_edges();
        Some(out)
    }

    /// The picture as BGR `height`×`width`×3 pixels, each chroma sample
    /// spread over its 2x2 pixels.
    pub fn to_bgr(&self) -> Vec<u8> {
        self.to_bgr_in(Colour::JPEG)
    }

    /// [`Self::to_bgr`] of planes whose samples are in `colour` (a video
    /// stream's) rather than JPEG's.
    pub fn to_bgr_in(&self, colour: Colour) -> Vec<u8> {
        let [y, u, v] = self.planes();
        let (ys, cs) = (self.plane_shape(0).stride, self.plane_shape(1).stride);
        let planes = Planes {
            y: (y, ys),
            u: (u, cs),
            v: (v, cs),
        };
        let mut out = vec![0u8; self.height * self.width * 3];
        // The planes are this picture's own: they fit.
        yuv420_to_bgr(&planes, (self.width, self.height), colour, &mut out);
        out
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
}

/// How samples map to colours: a video stream's video signal type (H.264
/// Annex E, ITU-T H.273), or JPEG's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour {
    /// `matrix_coefficients`: 1 BT.709, 5 or 6 BT.601, 2 unspecified, ...
    /// (anything but 1 is read as BT.601).
    pub matrix: u8,
    /// Samples span 0-255 rather than 16-235 (luma) and 16-240 (chroma).
    pub full_range: bool,
}

impl Colour {
    /// JPEG's (JFIF): BT.601, full range.
    pub const JPEG: Colour = Colour {
        matrix: 6,
        full_range: true,
    };

    /// The luma weights of red and blue.
    fn kr_kb(self) -> (f64, f64) {
        if self.matrix == 1 {
            (0.2126, 0.0722)
        } else {
            (0.299, 0.114)
        }
    }

    /// The luma and chroma scales of its range, and the luma offset.
    fn range(self) -> (f64, f64, i32) {
        if self.full_range {
            (1.0, 1.0, 0)
        } else {
            (219.0 / 255.0, 224.0 / 255.0, 16)
        }
    }
}

impl Default for Colour {
    /// What a video stream without a colour description is taken to be:
    /// BT.601, limited range (a webcam's usual).
    fn default() -> Self {
        Colour {
            matrix: 6,
            full_range: false,
        }
    }
}

/// The Y, U and V planes of a 4:2:0 picture, each with its stride.
pub struct Planes<'a> {
    /// Luma and its stride.
    pub y: (&'a [u8], usize),
    /// Cb and its stride.
    pub u: (&'a [u8], usize),
    /// Cr and its stride.
    pub v: (&'a [u8], usize),
}

/// Converts a `w`x`h` 4:2:0 picture to BGR in `out` (`w * h * 3` bytes) as
/// `colour` says: BT.709 (matrix 1) or BT.601 (any other), full or limited
/// range, in 14-bit fixed point, each chroma sample spread over its 2x2
/// pixels. Browsers describe their streams (Chromium: BT.709, full range);
/// reading them as BT.601 limited range stretched their contrast, clipped
/// it, and shifted their colours for everyone in the room. `false` when a
/// plane is shorter than its stride and size need.
pub fn yuv420_to_bgr(
    p: &Planes<'_>,
    (w, h): (usize, usize),
    colour: Colour,
    out: &mut [u8],
) -> bool {
    const ONE: f64 = 16384.0;
    // R = Y + rv Cr, G = Y - gu Cb - gv Cr, B = Y + bu Cb, on full-range samples.
    let (rv, gu, gv, bu) = if colour.matrix == 1 {
        (1.5748, 0.187324, 0.468124, 1.8556)
    } else {
        (1.402, 0.344136, 0.714136, 1.772)
    };
    // Limited range: luma 16-235, chroma 16-240 around 128.
    let (y_off, y_scale, c_scale) = if colour.full_range {
        (0, 1.0, 1.0)
    } else {
        (16, 255.0 / 219.0, 255.0 / 224.0)
    };
    let k = |c: f64| (c * ONE).round() as i32;
    let (ky, krv, kgu, kgv, kbu) = (
        k(y_scale),
        k(rv * c_scale),
        k(gu * c_scale),
        k(gv * c_scale),
        k(bu * c_scale),
    );
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let fits = |(plane, stride): (&[u8], usize), pw: usize, ph: usize| {
        stride >= pw
            && ph
                .checked_sub(1)
                .is_none_or(|last| last * stride + pw <= plane.len())
    };
    if out.len() != w * h * 3 || !fits(p.y, w, h) || !fits(p.u, cw, ch) || !fits(p.v, cw, ch) {
        return false;
    }
    let clamp = |v: i32| ((v + (1 << 13)) >> 14).clamp(0, 255) as u8;
    for (row, line) in out.chunks_exact_mut(w * 3).enumerate() {
        let yr = &p.y.0[row * p.y.1..][..w];
        let ur = &p.u.0[(row / 2) * p.u.1..][..cw];
        let vr = &p.v.0[(row / 2) * p.v.1..][..cw];
        for (x, px) in line.chunks_exact_mut(3).enumerate() {
            let y = (i32::from(yr[x]) - y_off) * ky;
            let cb = i32::from(ur[x / 2]) - 128;
            let cr = i32::from(vr[x / 2]) - 128;
            px[0] = clamp(y + kbu * cb);
            px[1] = clamp(y - kgu * cb - kgv * cr);
            px[2] = clamp(y + krv * cr);
        }
    }
    true
}

/// Converts a `w`x`h` BGR picture to 4:2:0 in `out` as `colour` says, in the
/// layout of a [`Yuv420`] (Y, then U, then V; for even sides, `w * h * 3 /
/// 2` bytes), in 16-bit fixed point, rounded: each chroma sample from the
/// mean of its 2x2 pixels (centred, as [`yuv420_to_bgr`] reads it back; an
/// odd side's last sample from its last pixels). OpenH264's own converter
/// truncates every sample instead: a mosaic came back half a level too dark
/// in luma and half a level low in both chroma planes, 1.5 levels too little
/// blue and 1.3 too little red, on every picture, before any encoding.
/// `false` when `bgr` or `out` is not the size of the picture.
pub fn bgr_to_yuv420(bgr: &[u8], (w, h): (usize, usize), colour: Colour, out: &mut [u8]) -> bool {
    let fits = w
        .checked_mul(h)
        .and_then(|px| px.checked_mul(3))
        .is_some_and(|n| n == bgr.len());
    if !fits || Yuv420::buffer_len(h, w) != Some(out.len()) {
        return false;
    }
    let (kr, kb) = colour.kr_kb();
    let (y_scale, c_scale, y_off) = colour.range();
    let k = |c: f64| (c * 65536.0).round() as i32;
    let (yr, yg, yb) = (
        k(y_scale * kr),
        k(y_scale * (1.0 - kr - kb)),
        k(y_scale * kb),
    );
    // Each chroma row sums to 0, so a grey has no colour.
    let (ur, ub) = (k(-c_scale * 0.5 * kr / (1.0 - kb)), k(c_scale * 0.5));
    let (vr, vb) = (k(c_scale * 0.5), k(-c_scale * 0.5 * kb / (1.0 - kr)));
    let (ug, vg) = (-(ur + ub), -(vr + vb));
    let (ys, cw) = (w + (w & 1), w.div_ceil(2));
    let (luma, chroma) = out.split_at_mut(ys * (h + (h & 1)));
    let (us, vs) = chroma.split_at_mut(chroma.len() / 2);
    for (yl, line) in luma.chunks_exact_mut(ys).zip(bgr.chunks_exact(w * 3)) {
        for (y, px) in yl.iter_mut().zip(line.chunks_exact(3)) {
            let [b, g, r] = [px[0], px[1], px[2]].map(i32::from);
            let v = (yr * r + yg * g + yb * b + (y_off << 16) + (1 << 15)) >> 16;
            *y = v.clamp(0, 255) as u8;
        }
    }
    for (cy, (ul, vl)) in us
        .chunks_exact_mut(cw)
        .zip(vs.chunks_exact_mut(cw))
        .enumerate()
    {
        // An odd side's last sample takes its last pixels twice.
        let top = &bgr[2 * cy * w * 3..][..w * 3];
        let bottom = &bgr[(2 * cy + 1).min(h - 1) * w * 3..][..w * 3];
        for (cx, (u, v)) in ul.iter_mut().zip(vl.iter_mut()).enumerate() {
            let (left, right) = (2 * cx * 3, (2 * cx + 1).min(w - 1) * 3);
            let sum = |c: usize| {
                i32::from(top[left + c])
                    + i32::from(top[right + c])
                    + i32::from(bottom[left + c])
                    + i32::from(bottom[right + c])
            };
            let (b, g, r) = (sum(0), sum(1), sum(2));
            // Sums of 4 pixels: 2 more bits to shift away.
            let cb = (ur * r + ug * g + ub * b + (128 << 18) + (1 << 17)) >> 18;
            let cr = (vr * r + vg * g + vb * b + (128 << 18) + (1 << 17)) >> 18;
            *u = cb.clamp(0, 255) as u8;
            *v = cr.clamp(0, 255) as u8;
        }
    }
    true
}

/// JPEG's Y, Cb and Cr of a BGR colour.
pub fn ycc_of_bgr(bgr: [u8; 3]) -> [u8; 3] {
    if bgr == [0, 0, 0] {
        return [0, 128, 128];
    }
    let [b, g, r] = bgr;
    let mut out = [0u8; 6];
    bgr_to_yuv420(
        &[b, g, r, b, g, r, b, g, r, b, g, r],
        (2, 2),
        Colour::JPEG,
        &mut out,
    );
    [out[0], out[4], out[5]]
}

/// The BGR colour of JPEG's Y, Cb and Cr.
pub fn bgr_of_ycc([y, cb, cr]: [u8; 3]) -> [u8; 3] {
    let planes = Planes {
        y: (&[y], 1),
        u: (&[cb], 1),
        v: (&[cr], 1),
    };
    let mut out = [0u8; 3];
    yuv420_to_bgr(&planes, (1, 1), Colour::JPEG, &mut out);
    out
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
        assert_eq!(ycc_of_bgr([0, 0, 0]), [0, 128, 128]);
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
