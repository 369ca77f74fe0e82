//! The chat window (OpenCV's highgui).

use std::marker::PhantomData;

use opencv::core::{self, Mat, Point, Scalar};
use opencv::highgui;
use opencv::prelude::*;
use vchat_client::sink::{Control, MosaicSink, Overlay};
use vchat_core::Tensor;

use super::capture::tensor_to_mat;
use super::cv_err;
use super::render::{draw_help, draw_overlay, draw_participants, draw_self_view, outlined};

/// The chat window: shows each mosaic with the overlay, the user's own camera
/// small in a corner, the room's users and, on `h`, the keys. It can be resized
/// and keeps the mosaic's aspect ratio. ESC or q, or closing the window, asks to
/// leave; `m` (pause the camera) and `[` `]` are handed to the caller.
pub struct Window {
    name: String,
    user: String,
    last: Option<Mat>,
    drawn_status: Option<String>,
    drawn_paused: bool,
    help: bool,
    /// The size of the mosaic last shown, `(width, height)`.
    shown: Option<(i32, i32)>,
    open: bool,
    // highgui is single-threaded: keep the window on the thread that opened it.
    _not_send: PhantomData<*const ()>,
}

impl Window {
    /// Opens a window titled `title` showing a blank `height`×`width` canvas until
    /// the first mosaic. Check for a display first ([`crate::display`]): OpenCV
    /// aborts the process when there is none.
    pub fn open(title: &str, height: usize, width: usize) -> Result<Self, String> {
        let err = cv_err("opening the window");
        highgui::named_window(
            title,
            highgui::WINDOW_NORMAL | highgui::WINDOW_KEEPRATIO | highgui::WINDOW_GUI_NORMAL,
        )
        .map_err(&err)?;
        highgui::resize_window(title, width as i32, height as i32).map_err(&err)?;
        let blank = Mat::new_rows_cols_with_default(
            height as i32,
            width as i32,
            core::CV_8UC3,
            Scalar::all(40.0),
        )
        .map_err(&err)?;
        let mut w = Window {
            name: title.to_string(),
            user: String::new(),
            last: Some(blank),
            drawn_status: None,
            drawn_paused: false,
            help: false,
            shown: Some((width as i32, height as i32)),
            open: true,
            _not_send: PhantomData,
        };
        w.redraw(&Overlay {
            results: String::new(),
            status: Some("connecting...".into()),
            ..Default::default()
        })?;
        Ok(w)
    }

    /// The chat's user, marked in the participants list.
    pub fn for_user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    fn redraw(&mut self, overlay: &Overlay) -> Result<(), String> {
        let Some(last) = &self.last else {
            return Ok(());
        };
        let mut img = last.try_clone().map_err(cv_err("drawing"))?;
        draw_overlay(&mut img, overlay)?;
        // Under the headline (and the results line, if any), which start at the left.
        let below = if overlay.results.is_empty() { 28 } else { 48 };
        draw_participants(&mut img, &overlay.participants, &self.user, below)?;
        if let Some(me) = &overlay.self_view {
            draw_self_view(&mut img, me, overlay.paused, overlay.status.is_some())?;
        }
        if self.help {
            draw_help(&mut img)?;
        } else {
            outlined(
                &mut img,
                "h: keys",
                Point::new(8, below + 10),
                0.4,
                Scalar::all(220.0),
            )
            .map_err(cv_err("drawing"))?;
        }
        let size = (img.cols(), img.rows());
        if self.shown.is_some_and(|s| s != size) {
            // The mosaic changed size (users came or went): the window follows,
            // at the zoom the user gave it.
            let (old_w, _) = self.shown.unwrap_or(size);
            let zoom = highgui::get_window_image_rect(&self.name)
                .ok()
                .filter(|r| r.width > 0 && old_w > 0)
                .map_or(1.0, |r| r.width as f64 / old_w as f64);
            let (w, h) = (
                (size.0 as f64 * zoom).round().max(1.0) as i32,
                (size.1 as f64 * zoom).round().max(1.0) as i32,
            );
            let _ = highgui::resize_window(&self.name, w, h);
        }
        self.shown = Some(size);
        highgui::imshow(&self.name, &img).map_err(cv_err("showing the mosaic"))?;
        self.drawn_status = overlay.status.clone();
        self.drawn_paused = overlay.paused;
        Ok(())
    }

    fn close(&mut self) {
        if self.open {
            self.open = false;
            let _ = highgui::destroy_window(&self.name);
            // Lets the backend process the close before the process goes on.
            let _ = highgui::wait_key(1);
        }
    }
}

impl MosaicSink for Window {
    fn mosaic(&mut self, frame: &Tensor, overlay: &Overlay) -> Result<(), String> {
        if !self.open {
            return Ok(());
        }
        self.last = Some(tensor_to_mat(frame)?);
        self.redraw(overlay)
    }

    fn poll(&mut self, overlay: &Overlay) -> Result<Control, String> {
        if !self.open {
            return Ok(Control::Close);
        }
        let key = highgui::wait_key(10).map_err(cv_err("reading the keyboard"))?;
        // ESC or q (any case, whatever the modifier bits above the low byte).
        if key >= 0 && matches!(key & 0xff, 27 | 0x71 | 0x51) {
            self.close();
            return Ok(Control::Close);
        }
        if key >= 0 && matches!(key & 0xff, 0x5b | 0x5d) {
            return Ok(Control::Key((key & 0xff) as u8));
        }
        if key >= 0 && matches!(key & 0xff, 0x6d | 0x4d) {
            return Ok(Control::Key(b'm'));
        }
        if key >= 0 && matches!(key & 0xff, 0x68 | 0x48) {
            self.help = !self.help;
            self.redraw(overlay)?;
            return Ok(Control::Continue);
        }
        let visible =
            highgui::get_window_property(&self.name, highgui::WND_PROP_VISIBLE).unwrap_or(0.0);
        if visible < 1.0 {
            self.open = false;
            return Ok(Control::Close);
        }
        if overlay.status != self.drawn_status || overlay.paused != self.drawn_paused {
            self.redraw(overlay)?;
        }
        Ok(Control::Continue)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.close();
        Ok(())
    }
}
