//! Layout dispatch: a room's tiles composed as the layout says (stacked top to
//! bottom, side by side, or a grid in a fixed canvas), with the requester's own
//! tile outlined and the grid's names drawn.

use bytes::{Bytes, BytesMut};
use vchat_core::jpeg;
use vchat_core::{Content, Document, Error};

use super::VideoChatExecutor;
use super::cache::{GridCanvas, Snapshot};
use super::config::Layout;
use super::picture::{Picture, Received};
use crate::Frame;
use crate::mosaic::{
    MosaicError, checked_pixels, compose_grid, draw_border, grid_rects, grid_shape,
    redraw_grid_tiles, stack_horizontally, stack_vertically,
};

impl VideoChatExecutor {
    /// The mosaic of `snap` as seen by its requester: `None` while the requester
    /// is alone in a layout that answers with the frame itself.
    pub(super) fn compose(&self, snap: &Snapshot) -> Result<Option<Frame>, Error> {
        let tiles = self.frames(&snap.tiles);
        let highlight = self
            .highlight_self
            .then_some(snap.me)
            .filter(|&me| me < tiles.len());
        let limit = self.max_mosaic_pixels;
        let failed = |e: MosaicError| self.reject(format!("cannot compose the mosaic: {e}"));
        let mosaic = match self.layout {
            // Alone, a labelled (or paused) user gets their stored tile back.
            Layout::Vertical | Layout::Horizontal
                if tiles.len() == 1
                    && (self.labels || snap.labels.first().is_some_and(|l| l.1)) =>
            {
                tiles[0].clone()
            }
            Layout::Vertical | Layout::Horizontal if tiles.len() < 2 => return Ok(None),
            // The users' frames themselves, in order: only a highlighted tile
            // is copied, to draw its border.
            Layout::Vertical => match highlight {
                None => stack_vertically(&tiles, limit).map_err(failed)?,
                Some(me) => {
                    let mut tiles = tiles.clone();
                    let own = &tiles[me];
                    let rect = (0, 0, own.height, own.width);
                    tiles[me] = outlined(own.clone(), rect);
                    stack_vertically(&tiles, limit).map_err(failed)?
                }
            },
            Layout::Horizontal => {
                let mosaic = stack_horizontally(&tiles, limit).map_err(failed)?;
                match highlight {
                    None => mosaic,
                    Some(me) => {
                        let left = tiles[..me].iter().map(|t| t.width).sum();
                        let rect = (0, left, mosaic.height, tiles[me].width);
                        outlined(mosaic, rect)
                    }
                }
            }
            // A mosaic shared by the room: its canvas patched where it changed.
            Layout::Grid if highlight.is_none() && snap.serials.len() == tiles.len() => {
                let (ch, cw) = self.canvas;
                let canvas = self
                    .patch_grid(snap, &tiles, snap.canvas.take())
                    .map_err(failed)?;
                let mosaic = Frame::new(Bytes::copy_from_slice(&canvas.pixels), ch, cw);
                snap.canvas.set(Some(canvas));
                mosaic
            }
            Layout::Grid => {
                let (ch, cw) = self.canvas;
                let data = compose_grid(&tiles, ch, cw, highlight, limit).map_err(failed)?;
                let data = if self.labels || snap.labels.iter().any(|l| l.1) {
                    let dims: Vec<(usize, usize)> = tiles.iter().map(Frame::dims).collect();
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

    /// The grid of `snap` in `kept` (the room's canvas as last composed, if
    /// any): only the cells whose tile changed since are drawn again, with their
    /// names, unless the room's users changed (another grid shape), which draws
    /// them all. The canvas is the one [`compose_grid`] and the names would make.
    fn patch_grid(
        &self,
        snap: &Snapshot,
        tiles: &[Frame],
        kept: Option<GridCanvas>,
    ) -> Result<GridCanvas, MosaicError> {
        let (ch, cw) = self.canvas;
        let n = tiles.len();
        let mut canvas = match kept {
            Some(c) if c.drawn.len() == n => c,
            Some(mut c) => {
                c.pixels.fill(0);
                c.drawn.clear();
                c
            }
            None => {
                let px = checked_pixels(ch, cw, self.max_mosaic_pixels)?;
                GridCanvas {
                    pixels: vec![0u8; px * 3],
                    drawn: Vec::new(),
                    version: 0,
                    _held: self.budget.hold(px * 3),
                }
            }
        };
        let redraw: Vec<usize> = (0..n)
            .filter(|&i| canvas.drawn.get(i) != Some(&snap.serials[i]))
            .collect();
        redraw_grid_tiles(
            &mut canvas.pixels,
            tiles,
            ch,
            cw,
            &redraw,
            self.max_mosaic_pixels,
        )?;
        let dims: Vec<(usize, usize)> = tiles.iter().map(Frame::dims).collect();
        let rects = grid_rects(&dims, ch, cw);
        for &i in &redraw {
            if let (Some(&rect), Some((name, paused))) = (rects.get(i), snap.labels.get(i)) {
                let shown = self.labels.then_some(name.as_str());
                self.labeller
                    .draw(&mut canvas.pixels, cw, rect, shown, *paused);
            }
        }
        canvas.drawn.clone_from(&snap.serials);
        canvas.version = snap.version;
        Ok(canvas)
    }

    /// The frame of `doc`, `None` when it has none: a grid room keeps a JPEG
    /// undecoded (checked as far as can be without decoding), the other
    /// layouts decode it.
    pub(super) fn received(&self, doc: &Document) -> Option<Result<Received, Error>> {
        match &doc.content {
            Some(Content::Blob(data)) if self.layout == Layout::Grid && jpeg::is_jpeg(doc) => Some(
                jpeg::checked_dims(data, self.max_frame_pixels)
                    .map(|dims| Received::Kept(Picture::jpeg(data, dims))),
            ),
            _ => jpeg::frame_of(doc, self.max_frame_pixels).map(|t| {
                t.map(|tensor| Received::Pixels {
                    owned: jpeg::is_jpeg(doc),
                    tensor,
                })
            }),
        }
    }

    /// The size of a cell of the grid of `users`.
    pub(super) fn cell(&self, users: usize) -> (usize, usize) {
        let (rows, cols) = grid_shape(users);
        (self.canvas.0 / rows, self.canvas.1 / cols)
    }

    /// The pixels of `tiles`: a grid's kept JPEGs decoded, each once, to
    /// about the size of their cell.
    pub(super) fn frames(&self, tiles: &[Picture]) -> Vec<Frame> {
        let cell = self.cell(tiles.len());
        tiles
            .iter()
            .map(|p| {
                let fit = if self.layout == Layout::Grid {
                    cell
                } else {
                    p.dims()
                };
                p.frame(fit, self.max_frame_pixels, self.budget)
            })
            .collect()
    }
}

/// `mosaic` with a border inside the rectangle `(top, left, height, width)`.
fn outlined(mosaic: Frame, rect: (usize, usize, usize, usize)) -> Frame {
    let mut m = BytesMut::from(mosaic.pixels.into_contiguous());
    draw_border(&mut m, mosaic.width, rect);
    Frame::new(m.freeze(), mosaic.height, mosaic.width)
}
