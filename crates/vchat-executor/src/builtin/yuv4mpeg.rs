//! YUV4MPEG2 (`.y4m`) clips, read with the `y4m` crate and converted to BGR.
//!
//! The file names its own frame size, so the size is checked before the decoder
//! allocates a frame: the header line is read first, its width and height held
//! to [`MAX_WIDTH`]×[`MAX_HEIGHT`], and only then handed on with the rest of the
//! file.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

/// Widest frame of a clip (8K UHD).
pub const MAX_WIDTH: usize = 7680;
/// Tallest frame of a clip (8K UHD).
pub const MAX_HEIGHT: usize = 4320;
/// The frame rate of a clip whose header names none (or a zero one).
pub const DEFAULT_FPS: f64 = 30.0;
/// Longest header line read before giving up (the `y4m` crate's own bound).
const MAX_HEADER_BYTES: u64 = 1024;
/// The largest frame the decoder may allocate: 8-bit 4:4:4 at the largest size.
const MAX_FRAME_BYTES: usize = MAX_WIDTH * MAX_HEIGHT * 3;

/// A decoded YUV4MPEG2 file.
pub struct Y4m {
    /// Frame height.
    pub height: usize,
    /// Frame width.
    pub width: usize,
    /// The file's frame rate.
    pub fps: f64,
    /// Each frame, BGR.
    pub frames: Vec<Bytes>,
}

/// How the chroma planes of a clip are sampled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chroma {
    /// 4:2:0: one chroma sample per 2×2 pixels.
    Quarter,
    /// 4:4:4: one per pixel.
    Full,
}

/// A reader that counts the bytes read through it, so that an end of file in
/// the middle of a frame is told apart from one between frames (the `y4m`
/// crate reports both as its end of file).
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl Y4m {
    /// Reads and converts every frame of a `.y4m` file (small clips: the whole file
    /// is held as BGR).
    pub fn read(path: &Path) -> Result<Y4m, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Y4m::from_reader(BufReader::new(file))
            .map_err(|m| format!("{}: not a usable YUV4MPEG2 file: {m}", path.display()))
    }

    /// Reads and converts every frame of a YUV4MPEG2 stream.
    pub fn from_reader(mut reader: impl BufRead) -> Result<Y4m, String> {
        let mut header = Vec::new();
        reader
            .by_ref()
            .take(MAX_HEADER_BYTES)
            .read_until(b'\n', &mut header)
            .map_err(|e| format!("cannot read the header: {e}"))?;
        let (width, height, has_rate) = check_header(&header)?;
        let read = Rc::new(Cell::new(0));
        let counted = Counted {
            inner: Cursor::new(header).chain(reader),
            read: read.clone(),
        };
        let limits = y4m::Limits {
            bytes: MAX_FRAME_BYTES,
        };
        let mut decoder =
            y4m::Decoder::new_with_limits(counted, limits).map_err(|e| e.to_string())?;
        let chroma = match decoder.get_colorspace() {
            y4m::Colorspace::C420
            | y4m::Colorspace::C420jpeg
            | y4m::Colorspace::C420paldv
            | y4m::Colorspace::C420mpeg2 => Chroma::Quarter,
            y4m::Colorspace::C444 => Chroma::Full,
            other => {
                return Err(format!(
                    "colour space {other:?} (only 8-bit 4:2:0 and 4:4:4)"
                ));
            }
        };
        let rate = decoder.get_framerate();
        let fps = if has_rate && rate.num > 0 && rate.den > 0 {
            rate.num as f64 / rate.den as f64
        } else {
            DEFAULT_FPS
        };
        let mut frames = Vec::new();
        loop {
            let before = read.get();
            match decoder.read_frame() {
                Ok(f) => frames.push(to_bgr(
                    [f.get_y_plane(), f.get_u_plane(), f.get_v_plane()],
                    height,
                    width,
                    chroma,
                )),
                Err(y4m::Error::EOF) if read.get() == before => break,
                Err(y4m::Error::EOF) => return Err("truncated frame".into()),
                Err(y4m::Error::ParseError(_)) => return Err("frame header is not FRAME".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
        if frames.is_empty() {
            return Err("no frames".into());
        }
        Ok(Y4m {
            height,
            width,
            fps,
            frames,
        })
    }
}

/// The width and height of a header line, within the limits, and whether it
/// names a frame rate.
fn check_header(line: &[u8]) -> Result<(usize, usize, bool), String> {
    let line = line.strip_suffix(b"\n").ok_or("no header")?;
    let line = std::str::from_utf8(line).map_err(|_| "header is not text")?;
    let mut parts = line.split(' ');
    if parts.next() != Some("YUV4MPEG2") {
        return Err("missing YUV4MPEG2 signature".into());
    }
    let (mut width, mut height, mut has_rate) = (0usize, 0usize, false);
    for p in parts {
        let (k, v) = p.split_at(1.min(p.len()));
        match k {
            "W" => width = v.parse().map_err(|_| "bad width")?,
            "H" => height = v.parse().map_err(|_| "bad height")?,
            "F" => has_rate = true,
            _ => {}
        }
    }
    if width == 0 || height == 0 || width > MAX_WIDTH || height > MAX_HEIGHT {
        return Err("width and height missing or out of range".into());
    }
    Ok((width, height, has_rate))
}

/// One frame's planes as BGR (BT.601, full range).
fn to_bgr([y, u, v]: [&[u8]; 3], h: usize, w: usize, chroma: Chroma) -> Bytes {
    let cw = match chroma {
        Chroma::Quarter => w.div_ceil(2),
        Chroma::Full => w,
    };
    let mut bgr = Vec::with_capacity(h * w * 3);
    for row in 0..h {
        for col in 0..w {
            let ci = match chroma {
                Chroma::Full => row * w + col,
                Chroma::Quarter => (row / 2) * cw + col / 2,
            };
            let (yy, uu, vv) = (
                f32::from(y[row * w + col]),
                f32::from(u[ci]) - 128.0,
                f32::from(v[ci]) - 128.0,
            );
            let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
            bgr.extend_from_slice(&[
                c(yy + 1.772 * uu),
                c(yy - 0.344_136 * uu - 0.714_136 * vv),
                c(yy + 1.402 * vv),
            ]);
        }
    }
    Bytes::from(bgr)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 4:2:0 clip of `n` frames, 4×2, every pixel one grey level per frame.
    pub(crate) fn y4m_bytes(n: usize) -> Vec<u8> {
        let mut out = b"YUV4MPEG2 W4 H2 F25:1 Ip A1:1 C420jpeg\n".to_vec();
        for i in 0..n {
            out.extend_from_slice(b"FRAME\n");
            out.extend(std::iter::repeat_n(50 + i as u8 * 40, 8));
            out.extend(std::iter::repeat_n(128u8, 4));
        }
        out
    }

    fn parse(bytes: &[u8]) -> Result<Y4m, String> {
        Y4m::from_reader(bytes)
    }

    #[test]
    fn frames_are_bgr_at_the_files_rate() {
        let v = parse(&y4m_bytes(3)).unwrap();
        assert_eq!((v.height, v.width, v.fps, v.frames.len()), (2, 4, 25.0, 3));
        assert_eq!(&v.frames[1][..3], &[90, 90, 90]);
        let no_rate = b"YUV4MPEG2 W2 H2 C444\nFRAME\n............";
        assert_eq!(parse(no_rate).unwrap().fps, DEFAULT_FPS);
    }

    #[test]
    fn a_truncated_or_malformed_clip_is_an_error() {
        let whole = y4m_bytes(2);
        for cut in [whole.len() - 1, whole.len() - 12, whole.len() - 15] {
            let err = parse(&whole[..cut]).err().unwrap();
            assert!(err.contains("truncated"), "{cut}: {err}");
        }
        let mut junk = y4m_bytes(1);
        junk.extend_from_slice(b"FRAMX\n");
        assert!(parse(&junk).is_err());
        assert_eq!(parse(&y4m_bytes(0)).err().unwrap(), "no frames");
        assert!(parse(b"").err().unwrap().contains("no header"));
        assert!(parse(b"MPEG W4 H2\n").err().unwrap().contains("signature"));
        let ten_bit = parse(b"YUV4MPEG2 W4 H2 C420p10\nFRAME\n").err().unwrap();
        assert!(ten_bit.contains("only 8-bit"), "{ten_bit}");
    }

    /// Sizes past the limits, and past what usize holds, are refused from the
    /// header alone: nothing is allocated for them.
    #[test]
    fn frame_size_is_checked_before_allocating() {
        for header in [
            "YUV4MPEG2 W7681 H2 C444\n",
            "YUV4MPEG2 W4 H4321 C444\n",
            "YUV4MPEG2 W4294967296 H4294967296 C444\n",
            "YUV4MPEG2 W99999999999999999999999 H2\n",
            "YUV4MPEG2 W0 H2\n",
            "YUV4MPEG2 H2\n",
        ] {
            let err = parse(header.as_bytes()).err().unwrap();
            assert!(
                err.contains("out of range") || err.contains("bad width"),
                "{header}: {err}"
            );
        }
        let long = format!("YUV4MPEG2 W4 H2 {}\n", "X".repeat(2000));
        assert!(parse(long.as_bytes()).is_err());
    }
}
