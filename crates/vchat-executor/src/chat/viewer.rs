//! Viewers: a request tagged `tags.viewer: true` (an access token without
//! `canPublish`) is answered with its room's mosaic as it is, and nothing of it is
//! stored, so the viewer is not in the room.

use vchat_core::value::Kind;
use vchat_core::{Document, Error};

use super::cache::{Mosaic, Snapshot};
use super::config::{PARTICIPANTS_TAG, VIEWER_TAG};
use super::encoding::Encoding;
use super::{VideoChatExecutor, participants_value};

/// Whether `doc` is a viewer's.
pub(super) fn is_viewer(doc: &Document) -> bool {
    matches!(
        doc.tags.get(VIEWER_TAG).and_then(|v| v.kind.as_ref()),
        Some(Kind::BoolValue(true))
    )
}

impl VideoChatExecutor {
    /// Answers a viewer's `doc` with `room`'s mosaic as it is, storing nothing:
    /// no frame when the room is empty.
    pub(super) fn view(&self, doc: &mut Document, room: &str) -> Result<(), Error> {
        let (_, output) = self.encodings(doc)?;
        let snap = self.lock().rooms.get(room).map(|r| Snapshot {
            version: r.version,
            participants: r.slots.iter().map(|s| s.user.clone()).collect(),
            // Nobody's tile is the viewer's.
            me: usize::MAX,
            tiles: r.slots.iter().map(|s| s.picture.clone()).collect(),
            labels: r.slots.iter().map(|s| (s.name.clone(), s.paused)).collect(),
            mosaic: None,
            jpeg: None,
            serials: r.slots.iter().map(|s| s.serial).collect(),
            canvas: None.into(),
        });
        doc.content = None;
        doc.mime_type.clear();
        let snap = snap.filter(|s| !s.tiles.is_empty());
        doc.set_tag(
            PARTICIPANTS_TAG,
            participants_value(snap.as_ref().map_or(&[][..], |s| &s.participants)),
        );
        let Some(snap) = snap else {
            return Ok(());
        };
        let mosaic = match self.compose(&snap)? {
            Some(m) => m,
            None => match self.frames(&snap.tiles).into_iter().next() {
                Some(f) => Mosaic::Bgr(f),
                None => return Ok(()),
            },
        };
        match output {
            Encoding::Raw => {
                let t = mosaic
                    .frame(self.budget)
                    .into_tensor()
                    .map_err(|e| self.reject(format!("internal: {e}")))?;
                doc.set_tensor(t);
            }
            Encoding::Jpeg => {
                let j = mosaic
                    .jpeg(self.quality)
                    .map_err(|e| self.reject(e.to_string()))?;
                doc.set_jpeg(j);
            }
        }
        Ok(())
    }
}
