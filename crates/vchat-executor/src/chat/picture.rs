//! A user's latest frame as a room keeps it: pixels, or, in a grid room fed
//! JPEGs, the JPEG as received, decoded only when a composition draws it.
//!
//! A camera at 30 fps in a room composed at `mosaic_fps: 15` sends two frames
//! per composition; decoding each as it arrives decoded the one a newer frame
//! replaces before anyone drew it. A kept JPEG is decoded once (to about its
//! cell's size): by its own request when it will be drawn (spreading the work
//! over requests), else by the first composition that draws it; every later
//! composition and every clone of the room's snapshot shares the result.
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
use vchat_core::{Tensor, jpeg};

use crate::Frame;

/// A stored frame.
#[derive(Clone, Debug)]
pub(super) enum Picture {
    /// H×W×3 BGR pixels.
    Pixels(Frame),
    /// A JPEG as received, shared with the snapshots that will draw it.
    Jpeg(Arc<KeptJpeg>),
}

/// A JPEG kept undecoded, and its pixels once a composition needed them.
#[derive(Debug)]
pub(super) struct KeptJpeg {
    data: Bytes,
    height: usize,
    width: usize,
    /// Set by the first composition that draws it: the pixels (with what
    /// they take from the budget), or why it could not be decoded.
    decoded: OnceLock<Result<(Frame, Held), String>>,
    /// A decoding failure was told to its sender.
    told: AtomicBool,
}

impl Picture {
    /// `data`, a JPEG of `(height, width)` (as [`jpeg::checked_dims`] read
    /// it), kept in a buffer of its own: a slice of the request would keep the
    /// whole request alive with it.
    pub(super) fn jpeg(data: &[u8], (height, width): (usize, usize)) -> Self {
        Picture::Jpeg(Arc::new(KeptJpeg {
            data: Bytes::copy_from_slice(data),
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
            Picture::Jpeg(j) => (j.height, j.width),
        }
    }

    /// The bytes held for it: the pixels, or the JPEG (its pixels, once
    /// decoded, are held by the decoded frame).
    pub(super) fn stored_len(&self) -> usize {
        match self {
            Picture::Pixels(f) => f.pixels.len(),
            Picture::Jpeg(j) => j.data.len(),
        }
    }

    /// The same frame as `other`: the same pixels, or the same JPEG bytes (a
    /// paused camera's source sends one frame again and again).
    pub(super) fn same_as(&self, other: &Picture) -> bool {
        match (self, other) {
            (Picture::Pixels(a), Picture::Pixels(b)) => a == b,
            (Picture::Jpeg(a), Picture::Jpeg(b)) => a.data == b.data,
            _ => false,
        }
    }

    /// The frame's pixels: a kept JPEG decoded (once) to at least `fit`
    /// (height, width), or a black frame of its declared shape, shrunk by 8,
    /// if it cannot be decoded.
    pub(super) fn frame(
        &self,
        fit: (usize, usize),
        max_pixels: usize,
        budget: &'static Budget,
    ) -> Frame {
        let j = match self {
            Picture::Pixels(f) => return f.clone(),
            Picture::Jpeg(j) => j,
        };
        let decoded = j.decoded.get_or_init(|| {
            jpeg::decode_bgr_to_fit(&j.data, max_pixels, fit)
                .map(|(px, h, w)| {
                    let held = budget.hold(px.len());
                    (Frame::new(px, h, w), held)
                })
                .map_err(|e| e.to_string())
        });
        match decoded {
            Ok((frame, _)) => frame.clone(),
            Err(_) => {
                // checked_dims bounded the declared shape by max_pixels.
                let (h, w) = (j.height.div_ceil(8), j.width.div_ceil(8));
                Frame::new(Bytes::from(vec![0u8; h * w * 3]), h, w)
            }
        }
    }

    /// Why its JPEG could not be decoded, if a decoding was tried and failed.
    pub(super) fn failure(&self) -> Option<String> {
        match self {
            Picture::Jpeg(j) => j.decoded.get()?.as_ref().err().cloned(),
            Picture::Pixels(_) => None,
        }
    }

    /// Why its JPEG could not be decoded, the first time this is asked after
    /// a composition tried: what its sender is told.
    pub(super) fn untold_failure(&self) -> Option<String> {
        let Picture::Jpeg(j) = self else {
            return None;
        };
        match j.decoded.get() {
            Some(Err(e)) if !j.told.swap(true, Ordering::Relaxed) => Some(e.clone()),
            _ => None,
        }
    }

    /// A kept JPEG's decoded size, or why it could not be decoded; `None`
    /// until a composition drew it (and for pixels).
    #[cfg(test)]
    pub(super) fn decoded(&self) -> Option<Result<(usize, usize), String>> {
        let Picture::Jpeg(j) = self else {
            return None;
        };
        j.decoded
            .get()
            .map(|d| d.as_ref().map(|(f, _)| f.dims()).map_err(Clone::clone))
    }

    /// The pixels, when they are stored as such.
    #[cfg(test)]
    pub(super) fn pixels(&self) -> Option<&Bytes> {
        match self {
            Picture::Pixels(f) => Some(f.bytes()),
            Picture::Jpeg(_) => None,
        }
    }
}

/// A frame as a request brings it.
pub(super) enum Received {
    /// Pixels; `owned` when they are in a buffer of their own (decoded here),
    /// not a slice of the request.
    Pixels { tensor: Tensor, owned: bool },
    /// A grid room's JPEG ([`Picture::Jpeg`]), checked by
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
            Received::Kept(Picture::Jpeg(j)) => jpeg::decode_bgr(&j.data, max_pixels)
                .and_then(|(px, h, w)| Tensor::image(h, w, 3, px)),
        }
    }
}
