//! Layout dispatch: a room's tiles composed as the layout says (stacked top to
//! bottom, side by side, or a grid in a fixed canvas), with the requester's own
//! tile outlined and the grid's names drawn. A grid is composed in YCbCr
//! 4:2:0, the form its JPEG tiles decode to and its JPEG encodes from.

use std::sync::Arc;

use bytes::BytesMut;
use vchat_core::yuv::Yuv420;
use vchat_core::{Content, Document, Error, jpeg};

use super::VideoChatExecutor;
use super::cache::{GridCanvas, Mosaic, Snapshot};
use super::config::Layout;
use super::picture::{Picture, Received};
use crate::Frame;
use crate::mosaic::{
    MosaicError, checked_pixels, draw_border, draw_grid, grid_rects, grid_shape, redraw_grid_tiles,
    stack_horizontally, stack_vertically,
};
use crate::surface::Bgr;

impl VideoChatExecutor {
    /// The mosaic of `snap` as seen by its requester: `None` while the requester
    /// is alone in a layout that answers with the frame itself.
    pub(super) fn compose(&self, snap: &Snapshot) -> Result<Option<Mosaic>, Error> {
        if self.layout == Layout::Grid {
            return self.compose_grid(snap).map(Some);
        }
        let tiles = self.frames(&snap.tiles);
        let highlight = self
            .highlight_self
            .then_some(snap.me)
            .filter(|&me| me < tiles.len());
        let limit = self.max_mosaic_pixels;
        let failed = |e: MosaicError| self.reject(format!("cannot compose the mosaic: {e}"));
        let mosaic = match self.layout {
            // Alone, a labelled (or paused) user gets their stored tile back.
            _ if tiles.len() == 1 && (self.labels || snap.labels.first().is_some_and(|l| l.1)) => {
                tiles[0].clone()
            }
            _ if tiles.len() < 2 => return Ok(None),
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
            _ => {
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
        };
        Ok(Some(Mosaic::Bgr(mosaic)))
    }

    /// The grid of `snap`, composed in YCbCr 4:2:0: the room's shared canvas
    /// patched where it changed, or, with a highlighted tile, a canvas of
    /// the requester's own.
    fn compose_grid(&self, snap: &Snapshot) -> Result<Mosaic, Error> {
        let failed = |e: MosaicError| self.reject(format!("cannot compose the mosaic: {e}"));
        let highlight = self
            .highlight_self
            .then_some(snap.me)
            .filter(|&me| me < snap.tiles.len());
        if highlight.is_none() && snap.serials.len() == snap.tiles.len() {
            let canvas = self.patch_grid(snap, snap.canvas.take()).map_err(failed)?;
            let mosaic = Mosaic::planes(canvas.picture.clone());
            snap.canvas.set(Some(canvas));
            return Ok(mosaic);
        }
        let mut canvas = self.black_canvas().map_err(failed)?;
        let tiles = self.planes(&snap.tiles);
        draw_grid(&mut canvas, &tiles, highlight).map_err(failed)?;
        let all: Vec<usize> = (0..tiles.len()).collect();
        self.label_grid(&mut canvas, snap, &tiles, &all);
        Ok(Mosaic::planes(canvas))
    }

    /// A black canvas of the executor's `canvas` size, within
    /// `max_mosaic_pixels`.
    fn black_canvas(&self) -> Result<Yuv420, MosaicError> {
        let (ch, cw) = self.canvas;
        checked_pixels(ch, cw, self.max_mosaic_pixels)?;
        Yuv420::black(ch, cw).ok_or(MosaicError::TooLarge {
            height: ch,
            width: cw,
            limit: self.max_mosaic_pixels,
        })
    }

    /// Draws the names (and pauses) of the cells `which` of the grid of
    /// `tiles` on `canvas`.
    fn label_grid(
        &self,
        canvas: &mut Yuv420,
        snap: &Snapshot,
        tiles: &[Arc<Yuv420>],
        which: &[usize],
    ) {
        if !self.labels && !snap.labels.iter().any(|l| l.1) {
            return;
        }
        let (ch, cw) = self.canvas;
        let dims: Vec<(usize, usize)> = tiles.iter().map(|t| t.dims()).collect();
        let rects = grid_rects(&dims, ch, cw);
        for &i in which {
            if let (Some(&rect), Some((name, paused))) = (rects.get(i), snap.labels.get(i)) {
                let shown = self.labels.then_some(name.as_str());
                self.labeller.draw(canvas, rect, shown, *paused);
            }
        }
    }

    /// The grid of `snap` in `kept` (the room's canvas as last composed, if
    /// any): only the cells whose tile changed since are drawn again, with their
    /// names, unless the room's users changed (another grid shape), which draws
    /// them all. The canvas is the one [`draw_grid`] and the names would make.
    fn patch_grid(
        &self,
        snap: &Snapshot,
        kept: Option<GridCanvas>,
    ) -> Result<GridCanvas, MosaicError> {
        let n = snap.tiles.len();
        let mut canvas = match kept {
            Some(c) if c.drawn.len() == n => c,
            Some(mut c) => {
                c.picture = self.black_canvas()?;
                c.drawn.clear();
                c
            }
            None => {
                let picture = self.black_canvas()?;
                let held = self.budget.hold(picture.data().len());
                GridCanvas {
                    picture,
                    drawn: Vec::new(),
                    version: 0,
                    _held: held,
                }
            }
        };
        let redraw: Vec<usize> = (0..n)
            .filter(|&i| canvas.drawn.get(i) != Some(&snap.serials[i]))
            .collect();
        // A cell not drawn again shows a frame decoded when it was: its
        // picture is shared, not decoded again.
        let tiles = self.planes(&snap.tiles);
        redraw_grid_tiles(&mut canvas.picture, &tiles, &redraw)?;
        self.label_grid(&mut canvas.picture, snap, &tiles, &redraw);
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

    /// The BGR pixels of a stacked layout's `tiles`.
    pub(super) fn frames(&self, tiles: &[Picture]) -> Vec<Frame> {
        tiles
            .iter()
            .map(|p| p.frame(self.max_frame_pixels, self.budget))
            .collect()
    }

    /// The pictures of a grid's `tiles`: kept frames decoded, each once, to
    /// about the size of their cell.
    pub(super) fn planes(&self, tiles: &[Picture]) -> Vec<Arc<Yuv420>> {
        let cell = self.cell(tiles.len());
        tiles
            .iter()
            .map(|p| p.planes(cell, self.max_frame_pixels, self.budget))
            .collect()
    }
}

/// `mosaic` with a border inside the rectangle `(top, left, height, width)`.
fn outlined(mosaic: Frame, rect: (usize, usize, usize, usize)) -> Frame {
    let mut m = BytesMut::from(mosaic.pixels.into_contiguous());
    draw_border(&mut Bgr::new(&mut m, mosaic.width), rect);
    Frame::new(m.freeze(), mosaic.height, mosaic.width)
}
