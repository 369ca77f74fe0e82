//! Layout dispatch: a room's tiles composed as the layout says (stacked top to
//! bottom, side by side, or a grid in a fixed canvas), with the requester's own
//! tile outlined and the grid's names drawn.

use bytes::BytesMut;
use vchat_core::jpeg;
use vchat_core::{Content, Document, Error, Tensor};

use super::VideoChatExecutor;
use super::cache::Snapshot;
use super::config::Layout;
use crate::Frame;
use crate::mosaic::{
    MosaicError, compose_grid, draw_border, grid_rects, grid_shape, stack_horizontally,
    stack_vertically,
};

impl VideoChatExecutor {
    /// The mosaic of `snap` as seen by its requester: `None` while the requester
    /// is alone in a layout that answers with the frame itself.
    pub(super) fn compose(&self, snap: &Snapshot) -> Result<Option<Frame>, Error> {
        let highlight = self
            .highlight_self
            .then_some(snap.me)
            .filter(|&me| me < snap.tiles.len());
        let limit = self.max_mosaic_pixels;
        let failed = |e: MosaicError| self.reject(format!("cannot compose the mosaic: {e}"));
        let mosaic = match self.layout {
            // Alone, a labelled (or paused) user gets their stored tile back.
            Layout::Vertical | Layout::Horizontal
                if snap.tiles.len() == 1
                    && (self.labels || snap.labels.first().is_some_and(|l| l.1)) =>
            {
                snap.tiles[0].clone()
            }
            Layout::Vertical | Layout::Horizontal if snap.tiles.len() < 2 => return Ok(None),
            // The users' frames themselves, in order: only a highlighted tile
            // is copied, to draw its border.
            Layout::Vertical => match highlight {
                None => stack_vertically(&snap.tiles, limit).map_err(failed)?,
                Some(me) => {
                    let mut tiles = snap.tiles.clone();
                    let own = &tiles[me];
                    let rect = (0, 0, own.height, own.width);
                    tiles[me] = outlined(own.clone(), rect);
                    stack_vertically(&tiles, limit).map_err(failed)?
                }
            },
            Layout::Horizontal => {
                let mosaic = stack_horizontally(&snap.tiles, limit).map_err(failed)?;
                match highlight {
                    None => mosaic,
                    Some(me) => {
                        let left = snap.tiles[..me].iter().map(|t| t.width).sum();
                        let rect = (0, left, mosaic.height, snap.tiles[me].width);
                        outlined(mosaic, rect)
                    }
                }
            }
            Layout::Grid => {
                let (ch, cw) = self.canvas;
                let data = compose_grid(&snap.tiles, ch, cw, highlight, limit).map_err(failed)?;
                let data = if self.labels || snap.labels.iter().any(|l| l.1) {
                    let dims: Vec<(usize, usize)> = snap.tiles.iter().map(Frame::dims).collect();
                    let mut m = BytesMut::from(data);
                    for (rect, (name, paused)) in
                        grid_rects(&dims, ch, cw).into_iter().zip(&snap.labels)
                    {
                        let shown = self.labels.then_some(name.as_str());
                        self.labeller.draw(&mut m, cw, rect, shown, *paused);
                    }
                    m.freeze()
                } else {
                    data
                };
                Frame::new(data, ch, cw)
            }
        };
        Ok(Some(mosaic))
    }

    /// The frame of `doc`: a grid decodes a JPEG straight to about its tile's
    /// size in `room`, the other layouts decode it whole.
    pub(super) fn frame_of(
        &self,
        doc: &Document,
        room: &str,
        user: &str,
    ) -> Option<Result<Tensor, Error>> {
        let Some(Content::Blob(blob)) = &doc.content else {
            return jpeg::frame_of(doc, self.max_frame_pixels);
        };
        if self.layout != Layout::Grid || !jpeg::is_jpeg(doc) {
            return jpeg::frame_of(doc, self.max_frame_pixels);
        }
        let users = self.lock().rooms.get(room).map_or(1, |r| {
            r.slots.len() + usize::from(!r.slots.iter().any(|s| s.user == user))
        });
        let (rows, cols) = grid_shape(users);
        let cell = (self.canvas.0 / rows, self.canvas.1 / cols);
        Some(
            jpeg::decode_bgr_to_fit(blob, self.max_frame_pixels, cell)
                .and_then(|(px, h, w)| Tensor::image(h, w, 3, px)),
        )
    }
}

/// `mosaic` with a border inside the rectangle `(top, left, height, width)`.
fn outlined(mosaic: Frame, rect: (usize, usize, usize, usize)) -> Frame {
    let mut m = BytesMut::from(mosaic.pixels.into_contiguous());
    draw_border(&mut m, mosaic.width, rect);
    Frame::new(m.freeze(), mosaic.height, mosaic.width)
}
