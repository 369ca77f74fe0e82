//! A user's latest frame as a room keeps it: BGR pixels in the stacked
//! layouts; in a grid room the frame as it came (a JPEG, or BGR pixels),
//! turned into the YCbCr 4:2:0 picture the grid is composed in only when a
//! composition draws it.
//!
//! A camera at 30 fps in a room composed at `mosaic_fps: 15` sends two frames
//! per composition; decoding each as it arrives decoded the one a newer frame
//! replaces before anyone drew it. A kept JPEG is decoded once (to about its
//! cell's size, straight to its 4:2:0 planes): by its own request when it
//! will be drawn (spreading the work over requests), else by the first
//! composition that draws it; every later composition and every clone of the
//! room's snapshot shares the result.
//!
//! The frame's header and end marker are checked as it arrives (size, limits,
//! truncation: the sender gets an ERROR status then, as before), and so is its
//! data when its own request decodes it. Data that fails to decode only when
//! a composition draws it is drawn as a black tile, and the user's next frame
//! is answered with the reason, once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use vchat_core::budget::{Budget, Held};
use vchat_core::yuv::Yuv420;
use vchat_core::{Tensor, jpeg};

use crate::Frame;

/// A stored frame.
#[derive(Clone, Debug)]
pub(super) enum Picture {
    /// H×W×3 BGR pixels, as the stacked layouts keep them.
    Pixels(Frame),
    /// A grid room's frame as received (a JPEG, or BGR pixels), shared with
    /// the snapshots that will draw it, and its YCbCr 4:2:0 picture once
    /// one needed it.
    Kept(Arc<Kept>),
}

/// A grid room's frame as received, and its picture once drawn.
#[derive(Debug)]
pub(super) struct Kept {
    source: Source,
    height: usize,
    width: usize,
    /// Set by the first request that draws it: the picture (with what it
    /// takes from the budget), or why it could not be decoded.
    decoded: OnceLock<Result<(Arc<Yuv420>, Held), String>>,
    /// A decoding failure was told to its sender.
    told: AtomicBool,
}

#[derive(Debug)]
enum Source {
    Jpeg(Bytes),
    Bgr(Frame),
}

impl Picture {
    /// `data`, a JPEG of `(height, width)` (as [`jpeg::checked_dims`] read
    /// it), kept in a buffer of its own: a slice of the request would keep the
    /// whole request alive with it.
    pub(super) fn jpeg(data: &[u8], (height, width): (usize, usize)) -> Self {
        Self::kept(Source::Jpeg(Bytes::copy_from_slice(data)), height, width)
    }

    /// A grid room's BGR frame (in a buffer of its own), converted when drawn.
    pub(super) fn bgr(frame: Frame) -> Self {
        let (height, width) = frame.dims();
        Self::kept(Source::Bgr(frame), height, width)
    }

    fn kept(source: Source, height: usize, width: usize) -> Self {
        Picture::Kept(Arc::new(Kept {
            source,
            height,
            width,
            decoded: OnceLock::new(),
            told: AtomicBool::new(false),
        }))
    }

    /// `(height, width)`: the pixels', or as the JPEG declares.
    pub(super) fn dims(&self) -> (usize, usize) {
        match self {
            Picture::Pixels(f) => f.dims(),
            Picture::Kept(k) => (k.height, k.width),
        }
    }

    /// The bytes held for it: the pixels, or the frame as received (its
    /// picture, once drawn, is held by the picture).
    pub(super) fn stored_len(&self) -> usize {
        match self {
            Picture::Pixels(f) => f.pixels.len(),
            Picture::Kept(k) => match &k.source {
                Source::Jpeg(data) => data.len(),
                Source::Bgr(f) => f.pixels.len(),
            },
        }
    }

    /// The same frame as `other`: the same pixels, or the same JPEG bytes (a
    /// paused camera's source sends one frame again and again).
    pub(super) fn same_as(&self, other: &Picture) -> bool {
        match (self, other) {
            (Picture::Pixels(a), Picture::Pixels(b)) => a == b,
            (Picture::Kept(a), Picture::Kept(b)) => match (&a.source, &b.source) {
                (Source::Jpeg(a), Source::Jpeg(b)) => a == b,
                (Source::Bgr(a), Source::Bgr(b)) => a == b,
                _ => false,
            },
            _ => false,
        }
    }

    /// The frame as BGR pixels: the stacked layouts' own, or a grid's
    /// picture converted.
    pub(super) fn frame(&self, max_pixels: usize, budget: &'static Budget) -> Frame {
        match self {
            Picture::Pixels(f) => f.clone(),
            Picture::Kept(k) => match &k.source {
                Source::Bgr(f) => f.clone(),
                Source::Jpeg(_) => {
                    let p = self.planes((k.height, k.width), max_pixels, budget);
                    let (h, w) = p.dims();
                    Frame::new(Bytes::from(p.to_bgr()), h, w)
                }
            },
        }
    }

    /// The frame as a YCbCr 4:2:0 picture: a kept frame decoded (once) to at
    /// least `fit` (height, width), or, if it cannot be, a black picture of
    /// its declared shape shrunk by 8.
    pub(super) fn planes(
        &self,
        fit: (usize, usize),
        max_pixels: usize,
        budget: &'static Budget,
    ) -> Arc<Yuv420> {
        let k = match self {
            Picture::Kept(k) => k,
            Picture::Pixels(f) => return Arc::new(planes_of(f)),
        };
        let decoded = k.decoded.get_or_init(|| {
            let planes = match &k.source {
                Source::Jpeg(data) => {
                    jpeg::decode_yuv420_to_fit(data, max_pixels, fit).map_err(|e| e.to_string())?
                }
                Source::Bgr(f) => planes_of(f),
            };
            let held = budget.hold(planes.data().len());
            Ok((Arc::new(planes), held))
        });
        match decoded {
            Ok((planes, _)) => planes.clone(),
            // checked_dims bounded the declared shape by max_pixels.
            Err(_) => Arc::new(black(k.height.div_ceil(8), k.width.div_ceil(8))),
        }
    }

    /// Why its JPEG could not be decoded, if a decoding was tried and failed.
    pub(super) fn failure(&self) -> Option<String> {
        match self {
            Picture::Kept(k) => k.decoded.get()?.as_ref().err().cloned(),
            Picture::Pixels(_) => None,
        }
    }

    /// Why its JPEG could not be decoded, the first time this is asked after
    /// a composition tried: what its sender is told.
    pub(super) fn untold_failure(&self) -> Option<String> {
        let Picture::Kept(k) = self else {
            return None;
        };
        match k.decoded.get() {
            Some(Err(e)) if !k.told.swap(true, Ordering::Relaxed) => Some(e.clone()),
            _ => None,
        }
    }

    /// A kept frame's decoded size, or why it could not be decoded; `None`
    /// until a composition drew it (and for pixels).
    #[cfg(test)]
    pub(super) fn decoded(&self) -> Option<Result<(usize, usize), String>> {
        let Picture::Kept(k) = self else {
            return None;
        };
        k.decoded
            .get()
            .map(|d| d.as_ref().map(|(p, _)| p.dims()).map_err(Clone::clone))
    }

    /// The BGR pixels, when they are stored as such.
    #[cfg(test)]
    pub(super) fn pixels(&self) -> Option<&Bytes> {
        match self {
            Picture::Pixels(f) => Some(f.bytes()),
            Picture::Kept(k) => match &k.source {
                Source::Bgr(f) => Some(f.bytes()),
                Source::Jpeg(_) => None,
            },
        }
    }
}

/// `frame` in YCbCr 4:2:0, black if its pixels do not match its size.
fn planes_of(frame: &Frame) -> Yuv420 {
    let (h, w) = frame.dims();
    Yuv420::from_bgr(frame.bytes(), h, w).unwrap_or_else(|| black(h, w))
}

/// A black picture of at least one pixel.
fn black(h: usize, w: usize) -> Yuv420 {
    Yuv420::black(h, w).unwrap_or_else(Yuv420::dot)
}

/// A frame as a request brings it.
pub(super) enum Received {
    /// Pixels; `owned` when they are in a buffer of their own (decoded here),
    /// not a slice of the request.
    Pixels { tensor: Tensor, owned: bool },
    /// A grid room's JPEG ([`Picture::Kept`]), checked by
    /// [`jpeg::checked_dims`], decoded ahead or when drawn.
    Kept(Picture),
}

impl Received {
    /// `(height, width)`, or why the tensor is not a frame.
    pub(super) fn dims(&self) -> Result<(usize, usize), String> {
        match self {
            Received::Pixels { tensor, .. } => tensor.frame_dims(),
            Received::Kept(p) => Ok(p.dims()),
        }
    }

    /// The frame as a tensor: a JPEG is decoded whole.
    pub(super) fn tensor(&self, max_pixels: usize) -> Result<Tensor, vchat_core::Error> {
        match self {
            Received::Pixels { tensor, .. } => Ok(tensor.clone()),
            Received::Kept(Picture::Pixels(f)) => f.clone().into_tensor(),
            Received::Kept(Picture::Kept(k)) => match &k.source {
                Source::Bgr(f) => f.clone().into_tensor(),
                Source::Jpeg(data) => jpeg::decode_bgr(data, max_pixels)
                    .and_then(|(px, h, w)| Tensor::image(h, w, 3, px)),
            },
        }
    }
}
