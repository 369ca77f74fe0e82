//! What is drawn on a mosaic (the overlay, the self-view, the participants, the
//! keys) and the contact sheet of the chat over time.

use opencv::core::{self, Mat, Point, Rect, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;
use vchat_client::sink::Overlay;
use vchat_core::Tensor;

use super::capture::{mat_to_tensor, tensor_to_mat};
use super::cv_err;

/// Width of one mosaic on a [`contact_sheet`].
pub const SHEET_CELL_W: usize = 240;
/// Mosaics per row of a [`contact_sheet`].
pub const SHEET_COLS: usize = 4;

/// One PNG-ready frame of `moments` (seconds since the start, mosaic) in rows
/// of [`SHEET_COLS`], each mosaic scaled to [`SHEET_CELL_W`] wide (at most
/// twice as tall) under its time: the chat over time at a glance.
pub fn contact_sheet(moments: &[(f64, Tensor)]) -> Result<Tensor, String> {
    let err = cv_err("making the contact sheet");
    if moments.is_empty() {
        return Err("no mosaic to put on a contact sheet".into());
    }
    const CAPTION: i32 = 22;
    const GAP: i32 = 6;
    let cell_w = SHEET_CELL_W as i32;
    let fitted: Vec<(i32, i32)> = moments
        .iter()
        .map(|(_, t)| {
            let (h, w) = (t.shape()[0] as f64, t.shape()[1] as f64);
            let scale = (cell_w as f64 / w).min(2.0 * cell_w as f64 / h);
            (
                ((w * scale).round() as i32).max(1),
                ((h * scale).round() as i32).max(1),
            )
        })
        .collect();
    let cell_h = fitted.iter().map(|f| f.1).max().unwrap_or(1);
    let cols = SHEET_COLS.min(moments.len()) as i32;
    let rows = moments.len().div_ceil(SHEET_COLS) as i32;
    let (sheet_w, sheet_h) = (
        cols * (cell_w + GAP) + GAP,
        rows * (cell_h + CAPTION + GAP) + GAP,
    );
    let mut sheet =
        Mat::new_rows_cols_with_default(sheet_h, sheet_w, core::CV_8UC3, Scalar::all(24.0))
            .map_err(&err)?;
    for (i, ((secs, t), (w, h))) in moments.iter().zip(&fitted).enumerate() {
        let (col, row) = (i as i32 % cols, i as i32 / cols);
        let x = GAP + col * (cell_w + GAP);
        let y = GAP + row * (cell_h + CAPTION + GAP);
        outlined(
            &mut sheet,
            &format!("{secs:.1} s"),
            Point::new(x + 2, y + CAPTION - 7),
            0.5,
            Scalar::all(230.0),
        )
        .map_err(&err)?;
        let src = tensor_to_mat(t)?;
        let mut small = Mat::default();
        imgproc::resize(
            &src,
            &mut small,
            Size::new(*w, *h),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )
        .map_err(&err)?;
        let mut roi = Mat::roi_mut(&mut sheet, Rect::new(x, y + CAPTION, *w, *h)).map_err(&err)?;
        small.copy_to(&mut roi).map_err(&err)?;
    }
    mat_to_tensor(&sheet, sheet_h as usize, sheet_w as usize)
}

/// Draws the overlay: FPS and latency at the top left (as the original Jina client
/// draws its FPS counter), a status message in a red band at the bottom.
pub fn draw_overlay(img: &mut Mat, overlay: &Overlay) -> Result<(), String> {
    let err = cv_err("drawing the overlay");
    let scale = 0.5;
    let text = |img: &mut Mat, s: &str, at: Point, color: Scalar| -> opencv::Result<()> {
        outlined(img, s, at, scale, color)
    };
    text(
        img,
        &overlay.headline(),
        Point::new(8, 20),
        Scalar::new(0.0, 255.0, 0.0, 0.0),
    )
    .map_err(&err)?;
    if !overlay.results.is_empty() {
        text(
            img,
            &overlay.results,
            Point::new(8, 40),
            Scalar::new(0.0, 255.0, 255.0, 0.0),
        )
        .map_err(&err)?;
    }
    if let Some(status) = &overlay.status {
        let (w, h) = (img.cols(), img.rows());
        let band = Rect::new(0, (h - 28).max(0), w, 28.min(h));
        imgproc::rectangle(
            img,
            band,
            Scalar::new(0.0, 0.0, 160.0, 0.0),
            -1,
            imgproc::LINE_8,
            0,
        )
        .map_err(&err)?;
        text(
            img,
            status,
            Point::new(8, h - 9),
            Scalar::new(255.0, 255.0, 255.0, 0.0),
        )
        .map_err(&err)?;
    }
    Ok(())
}

/// The keys of the chat window, as its help (`h`) lists them.
pub const HELP: [&str; 5] = [
    "h      show / hide this help",
    "m      pause / resume your camera",
    "] [    raise / lower the first --param",
    "q ESC  leave the chat",
    "drag the window's edge to resize it",
];

/// Text with a dark outline, readable on any background.
pub(super) fn outlined(
    img: &mut Mat,
    s: &str,
    at: Point,
    scale: f64,
    color: Scalar,
) -> opencv::Result<()> {
    let font = imgproc::FONT_HERSHEY_SIMPLEX;
    imgproc::put_text(
        img,
        s,
        at,
        font,
        scale,
        Scalar::all(0.0),
        3,
        imgproc::LINE_AA,
        false,
    )?;
    imgproc::put_text(img, s, at, font, scale, color, 1, imgproc::LINE_AA, false)
}

/// Darkens `rect` of `img` to a third, for text drawn over it.
fn shade(img: &mut Mat, rect: Rect) -> opencv::Result<()> {
    let rect = rect & Rect::new(0, 0, img.cols(), img.rows());
    if rect.width <= 0 || rect.height <= 0 {
        return Ok(());
    }
    let mut roi = Mat::roi_mut(img, rect)?;
    let mut dark = Mat::default();
    roi.convert_to(&mut dark, -1, 0.35, 0.0)?;
    dark.copy_to(&mut roi)
}

/// The user's own camera, small, in the bottom-right corner (above the status
/// band, if any), framed; dimmed and marked while paused.
pub fn draw_self_view(
    img: &mut Mat,
    me: &Tensor,
    paused: bool,
    status: bool,
) -> Result<(), String> {
    let err = cv_err("drawing the self-view");
    let (ih, iw) = (img.rows(), img.cols());
    let (h, w) = (me.shape()[0] as i32, me.shape()[1] as i32);
    let vw = (iw / 4).max(48).min(iw - 16);
    let vh = (vw * h / w.max(1)).max(1);
    let below = if status { 28 } else { 0 };
    let (x, y) = (iw - vw - 8, ih - vh - 8 - below);
    if vw < 16 || x < 0 || y < 0 {
        return Ok(());
    }
    let src = tensor_to_mat(me)?;
    let mut small = Mat::default();
    imgproc::resize(
        &src,
        &mut small,
        Size::new(vw, vh),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )
    .map_err(&err)?;
    let rect = Rect::new(x, y, vw, vh);
    {
        let mut roi = Mat::roi_mut(img, rect).map_err(&err)?;
        small.copy_to(&mut roi).map_err(&err)?;
    }
    let frame = if paused {
        shade(img, rect).map_err(&err)?;
        outlined(
            img,
            "paused (m)",
            Point::new(x + 4, y + vh / 2 + 5),
            0.45,
            Scalar::new(255.0, 255.0, 255.0, 0.0),
        )
        .map_err(&err)?;
        Scalar::new(0.0, 0.0, 220.0, 0.0)
    } else {
        Scalar::new(255.0, 255.0, 255.0, 0.0)
    };
    imgproc::rectangle(img, rect, frame, 1, imgproc::LINE_8, 0).map_err(&err)?;
    Ok(())
}

/// The room's users, in mosaic order, at the top right from row `top`; `me`
/// marked.
pub fn draw_participants(
    img: &mut Mat,
    users: &[String],
    me: &str,
    top: i32,
) -> Result<(), String> {
    if users.is_empty() {
        return Ok(());
    }
    let err = cv_err("drawing the participants");
    let mut lines = vec![format!("{} in the room", users.len())];
    const SHOWN: usize = 12;
    for u in users.iter().take(SHOWN) {
        let name: String = u.chars().take(24).collect();
        lines.push(if u == me {
            format!("{name} (you)")
        } else {
            name
        });
    }
    if users.len() > SHOWN {
        lines.push(format!("and {} more", users.len() - SHOWN));
    }
    let mut base = 0;
    let width = lines
        .iter()
        .filter_map(|l| {
            imgproc::get_text_size(l, imgproc::FONT_HERSHEY_SIMPLEX, 0.45, 1, &mut base).ok()
        })
        .map(|s| s.width)
        .max()
        .unwrap_or(0);
    let x = (img.cols() - width - 10).max(0);
    shade(
        img,
        Rect::new(x - 4, top, width + 10, 18 * lines.len() as i32 + 6),
    )
    .map_err(&err)?;
    for (i, l) in lines.iter().enumerate() {
        let color = if i == 0 {
            Scalar::new(0.0, 255.0, 255.0, 0.0)
        } else {
            Scalar::new(255.0, 255.0, 255.0, 0.0)
        };
        outlined(img, l, Point::new(x, top + 16 + 18 * i as i32), 0.45, color).map_err(&err)?;
    }
    Ok(())
}

/// The keys ([`HELP`]) in a shaded box in the middle of the frame.
pub fn draw_help(img: &mut Mat) -> Result<(), String> {
    let err = cv_err("drawing the help");
    let lines: Vec<&str> = std::iter::once("Keys").chain(HELP).collect();
    let line_h = 20;
    let (w, h) = (img.cols(), img.rows());
    let box_h = line_h * lines.len() as i32 + 12;
    let top = ((h - box_h) / 2).max(0);
    shade(img, Rect::new(0, top, w, box_h)).map_err(&err)?;
    for (i, l) in lines.iter().enumerate() {
        let color = if i == 0 {
            Scalar::new(0.0, 255.0, 255.0, 0.0)
        } else {
            Scalar::new(255.0, 255.0, 255.0, 0.0)
        };
        outlined(
            img,
            l,
            Point::new(12, top + 20 + line_h * i as i32),
            0.45,
            color,
        )
        .map_err(&err)?;
    }
    Ok(())
}
