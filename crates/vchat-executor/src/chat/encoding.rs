//! Encoding negotiation: a request's frame comes as raw pixels or a JPEG, and
//! its answer goes out the same way unless `tags.accept` says otherwise. A JPEG
//! mosaic is encoded once per room state and shared.

use vchat_core::jpeg;
use vchat_core::{Document, Error, Tensor};

use super::VideoChatExecutor;
use super::cache::{Mosaic, Snapshot};
use super::config::ACCEPT_TAG;

/// The encoding of a frame or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// A uint8 H×W×3 tensor.
    Raw,
    /// A JPEG blob (`mime_type: image/jpeg`).
    Jpeg,
}

impl VideoChatExecutor {
    /// The encoding `doc`'s frame came in, and the one its answer goes out in.
    pub(super) fn encodings(&self, doc: &Document) -> Result<(Encoding, Encoding), Error> {
        let input = if jpeg::is_jpeg(doc) {
            Encoding::Jpeg
        } else {
            Encoding::Raw
        };
        let output = match doc.tag_str(ACCEPT_TAG) {
            None => input,
            Some(a) if a.eq_ignore_ascii_case("jpeg") => Encoding::Jpeg,
            Some(a) if a.eq_ignore_ascii_case("raw") => Encoding::Raw,
            Some(a) => {
                return Err(self.reject(format!(
                    "tags.accept must be \"jpeg\" or \"raw\", got {a:?}"
                )));
            }
        };
        Ok((input, output))
    }

    /// Answers `doc` with its own `frame` (its user is alone), in the encoding
    /// asked for.
    pub(super) fn answer_alone(
        &self,
        doc: &mut Document,
        frame: Tensor,
        (h, w): (usize, usize),
        (input, output): (Encoding, Encoding),
    ) -> Result<(), Error> {
        match (input, output) {
            (Encoding::Jpeg, Encoding::Raw) => doc.set_tensor(frame),
            (Encoding::Raw, Encoding::Jpeg) => {
                let j = jpeg::encode_bgr(frame.data(), h, w, self.quality)
                    .map_err(|e| self.reject(e.to_string()))?;
                doc.set_jpeg(j);
            }
            _ => {}
        }
        Ok(())
    }

    /// Answers `doc` with `mosaic` in `output`; a `shared` mosaic (the same for
    /// everyone in the room) and its JPEG are kept for the others.
    pub(super) fn answer_mosaic(
        &self,
        doc: &mut Document,
        room: &str,
        snap: &Snapshot,
        mosaic: Mosaic,
        output: Encoding,
        shared: bool,
    ) -> Result<(), Error> {
        match output {
            Encoding::Raw => {
                if shared {
                    self.remember(room, snap, &mosaic, None);
                }
                let t = mosaic
                    .frame(self.budget)
                    .into_tensor()
                    .map_err(|e| self.reject(format!("internal: {e}")))?;
                doc.set_tensor(t);
                doc.mime_type.clear();
            }
            Encoding::Jpeg => {
                let j = match &snap.jpeg {
                    Some(j) if shared => j.clone(),
                    _ => mosaic
                        .jpeg(self.quality)
                        .map_err(|e| self.reject(e.to_string()))?,
                };
                if shared {
                    self.remember(room, snap, &mosaic, Some(&j));
                }
                doc.set_jpeg(j);
            }
        }
        Ok(())
    }
}
