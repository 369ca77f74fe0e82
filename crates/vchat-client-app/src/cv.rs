//! OpenCV sources and sinks (the `opencv` feature): webcam and video-file
//! capture, the chat window, and recording received mosaics to a video file.
//!
//! OpenCV's highgui must be used from one thread only: [`Window`] is not `Send`,
//! so it stays on the thread that created it (the client's main thread).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use opencv::core::{self, Mat, Point, Rect, Scalar, Size};
use opencv::prelude::*;
use opencv::{highgui, imgproc, videoio};
use vchat_core::Tensor;

use vchat_client::sink::{Control, MosaicSink, Overlay};
use vchat_client::source::FrameSource;

/// Only errors from OpenCV itself are shown; its warnings (a camera index that
/// does not exist, codec probing) would repeat what our own messages say.
pub fn quiet_logs() {
    let _ = core::set_log_level(core::LogLevel::LOG_LEVEL_ERROR);
}

fn cv_err(what: &str) -> impl Fn(opencv::Error) -> String + '_ {
    move |e| format!("{what}: {}", e.message)
}

/// Where frames come from, as `--source` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `test`: the synthetic pattern.
    Test,
    /// A number: a camera index (0 is the default webcam).
    Camera(i32),
    /// Anything else: a video file.
    File(PathBuf),
}

impl SourceSpec {
    /// Parses `--source`.
    pub fn parse(s: &str) -> SourceSpec {
        if s == "test" {
            SourceSpec::Test
        } else if let Ok(i) = s.parse::<i32>() {
            SourceSpec::Camera(i)
        } else {
            SourceSpec::File(PathBuf::from(s))
        }
    }
}

/// A webcam or a video file through `cv::VideoCapture`, frames resized to the
/// chat's size and converted to BGR uint8.
pub struct VideoSource {
    cap: videoio::VideoCapture,
    what: String,
    camera: bool,
    looping: bool,
    height: usize,
    width: usize,
    fps: Option<f64>,
    first: Option<Mat>,
    raw: Mat,
}

// SAFETY: a VideoCapture may be moved to another thread; it is only ever used by
// one thread at a time (the capture thread owns it).
unsafe impl Send for VideoSource {}

impl VideoSource {
    /// Opens camera `index`. Fails when there is none or it is busy.
    pub fn camera(index: i32, height: usize, width: usize) -> Result<Self, String> {
        let what = format!("camera {index}");
        let cap = videoio::VideoCapture::new(index, videoio::CAP_ANY).map_err(cv_err(&what))?;
        if !cap.is_opened().unwrap_or(false) {
            return Err(format!(
                "no camera at index {index}: is a webcam connected, and not used by another program? \
                 (on Linux the cameras are /dev/video*; --source test streams a test pattern)"
            ));
        }
        let fps = cap
            .get(videoio::CAP_PROP_FPS)
            .ok()
            .filter(|f| *f > 0.0 && *f < 1000.0);
        Ok(VideoSource {
            cap,
            what,
            camera: true,
            looping: false,
            height,
            width,
            fps,
            first: None,
            raw: Mat::default(),
        })
    }

    /// Opens a video file and reads its first frame, so an unreadable file fails
    /// here with a clear message. `looping`: start over at the end.
    pub fn file(path: &Path, looping: bool, height: usize, width: usize) -> Result<Self, String> {
        let what = path.display().to_string();
        // OpenCV says nothing useful about a missing or unreadable file.
        std::fs::File::open(path).map_err(|e| format!("cannot read {what}: {e}"))?;
        let name = path
            .to_str()
            .ok_or_else(|| format!("{what}: the path is not UTF-8"))?;
        let mut cap =
            videoio::VideoCapture::from_file(name, videoio::CAP_ANY).map_err(cv_err(&what))?;
        if !cap.is_opened().unwrap_or(false) {
            return Err(format!(
                "cannot open {what} as a video: not a video file, or in a format this OpenCV cannot decode"
            ));
        }
        let mut first = Mat::default();
        if !cap.read(&mut first).unwrap_or(false) || first.empty() {
            return Err(format!("{what} has no video frames OpenCV can decode"));
        }
        let fps = cap
            .get(videoio::CAP_PROP_FPS)
            .ok()
            .filter(|f| *f > 0.0 && *f < 1000.0);
        Ok(VideoSource {
            cap,
            what,
            camera: false,
            looping,
            height,
            width,
            fps,
            first: Some(first),
            raw: Mat::default(),
        })
    }

    fn read_raw(&mut self) -> Result<bool, String> {
        if let Some(first) = self.first.take() {
            self.raw = first;
            return Ok(true);
        }
        let ok = self.cap.read(&mut self.raw).map_err(cv_err(&self.what))?;
        Ok(ok && !self.raw.empty())
    }
}

impl FrameSource for VideoSource {
    fn next_frame(&mut self) -> Result<Option<Tensor>, String> {
        if !self.read_raw()? {
            if self.camera {
                return Err(format!(
                    "{} stopped delivering frames (unplugged, or taken by another program?)",
                    self.what
                ));
            }
            if !self.looping {
                return Ok(None);
            }
            // Start over; a file whose rewind yields nothing is not loopable.
            let rewound = self
                .cap
                .set(videoio::CAP_PROP_POS_FRAMES, 0.0)
                .unwrap_or(false);
            if !rewound || !self.read_raw()? {
                return Err(format!("{}: cannot loop, rewinding failed", self.what));
            }
        }
        mat_to_tensor(&self.raw, self.height, self.width).map(Some)
    }

    fn native_fps(&self) -> Option<f64> {
        self.fps
    }

    fn is_live(&self) -> bool {
        self.camera
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// Any 8-bit 1-, 3- or 4-channel Mat to an H×W×3 BGR tensor of the given size.
pub fn mat_to_tensor(mat: &Mat, height: usize, width: usize) -> Result<Tensor, String> {
    let err = cv_err("converting a frame");
    let mut bgr = Mat::default();
    let src = match mat.channels() {
        3 => mat,
        1 => {
            imgproc::cvt_color_def(mat, &mut bgr, imgproc::COLOR_GRAY2BGR).map_err(&err)?;
            &bgr
        }
        4 => {
            imgproc::cvt_color_def(mat, &mut bgr, imgproc::COLOR_BGRA2BGR).map_err(&err)?;
            &bgr
        }
        n => return Err(format!("frames with {n} channels are not supported")),
    };
    if src.depth() != core::CV_8U {
        return Err("only 8-bit frames are supported".to_string());
    }
    let mut resized = Mat::default();
    let size = Size::new(width as i32, height as i32);
    let out = if src.size().map_err(&err)? == size {
        src
    } else {
        imgproc::resize(src, &mut resized, size, 0.0, 0.0, imgproc::INTER_AREA).map_err(&err)?;
        &resized
    };
    let out = if out.is_continuous() {
        out.data_bytes().map_err(&err)?.to_vec()
    } else {
        out.try_clone()
            .map_err(&err)?
            .data_bytes()
            .map_err(&err)?
            .to_vec()
    };
    Tensor::image(height, width, 3, Bytes::from(out)).map_err(|e| e.to_string())
}

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

/// An H×W×3 uint8 tensor to a new (owned) BGR Mat.
pub fn tensor_to_mat(t: &Tensor) -> Result<Mat, String> {
    let (h, w) = t.frame_dims()?;
    let err = cv_err("converting a mosaic");
    let mut m =
        Mat::new_rows_cols_with_default(h as i32, w as i32, core::CV_8UC3, Scalar::all(0.0))
            .map_err(&err)?;
    m.data_bytes_mut().map_err(&err)?.copy_from_slice(t.data());
    Ok(m)
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
fn outlined(img: &mut Mat, s: &str, at: Point, scale: f64, color: Scalar) -> opencv::Result<()> {
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

/// Records received mosaics to a video file. The file's frame size is the first
/// mosaic's; later mosaics of another size (users joined or left) are scaled to
/// fit it, keeping their aspect ratio, on a black background.
pub struct Recorder {
    path: PathBuf,
    fps: f64,
    writer: Option<videoio::VideoWriter>,
    size: Size,
    frames: u64,
}

impl Recorder {
    /// A recorder writing to `path` at `fps`: MJPG for `.avi` (and anything else),
    /// `mp4v` for `.mp4` / `.mov`. Fails at once when the file cannot be created.
    pub fn new(path: &Path, fps: f64) -> Result<Self, String> {
        std::fs::File::create(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Recorder {
            path: path.to_path_buf(),
            fps: if fps > 0.0 && fps.is_finite() {
                fps
            } else {
                30.0
            },
            writer: None,
            size: Size::default(),
            frames: 0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn open(&mut self, size: Size) -> Result<(), String> {
        let ext = self
            .path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let code = if ext == "mp4" || ext == "mov" {
            ['m', 'p', '4', 'v']
        } else {
            ['M', 'J', 'P', 'G']
        };
        let what = format!("recording to {}", self.path.display());
        let fourcc = videoio::VideoWriter::fourcc(code[0], code[1], code[2], code[3])
            .map_err(cv_err(&what))?;
        let name = self
            .path
            .to_str()
            .ok_or_else(|| format!("{what}: the path is not UTF-8"))?;
        let writer =
            videoio::VideoWriter::new(name, fourcc, self.fps, size, true).map_err(cv_err(&what))?;
        if !writer.is_opened().unwrap_or(false) {
            return Err(format!(
                "cannot record to {}: OpenCV has no writer for this file type (use .avi)",
                self.path.display()
            ));
        }
        self.writer = Some(writer);
        self.size = size;
        Ok(())
    }
}

impl MosaicSink for Recorder {
    fn mosaic(&mut self, frame: &Tensor, _overlay: &Overlay) -> Result<(), String> {
        let mat = tensor_to_mat(frame)?;
        let size = mat.size().map_err(cv_err("recording"))?;
        if self.writer.is_none() {
            self.open(size)?;
        }
        let err = cv_err("recording");
        let fitted;
        let out = if size == self.size {
            &mat
        } else {
            let scale = (f64::from(self.size.width) / f64::from(size.width))
                .min(f64::from(self.size.height) / f64::from(size.height));
            let inner = Size::new(
                ((f64::from(size.width) * scale) as i32).clamp(1, self.size.width),
                ((f64::from(size.height) * scale) as i32).clamp(1, self.size.height),
            );
            let mut scaled = Mat::default();
            imgproc::resize(&mat, &mut scaled, inner, 0.0, 0.0, imgproc::INTER_AREA)
                .map_err(&err)?;
            let mut canvas = Mat::new_size_with_default(self.size, core::CV_8UC3, Scalar::all(0.0))
                .map_err(&err)?;
            let at = Rect::new(
                (self.size.width - inner.width) / 2,
                (self.size.height - inner.height) / 2,
                inner.width,
                inner.height,
            );
            let mut roi = Mat::roi_mut(&mut canvas, at).map_err(&err)?;
            scaled.copy_to(&mut roi).map_err(&err)?;
            fitted = canvas;
            &fitted
        };
        self.writer
            .as_mut()
            .expect("opened above")
            .write(out)
            .map_err(&err)?;
        self.frames += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(mut w) = self.writer.take() {
            w.release().map_err(cv_err("finishing the recording"))?;
        }
        Ok(())
    }
}

/// Writes `frames` solid-colour frames per colour of `colors` (BGR) to `path`
/// (MJPG): a small video file for tests and demos.
pub fn write_test_video(
    path: &Path,
    colors: &[[u8; 3]],
    frames: usize,
    height: usize,
    width: usize,
) -> Result<(), String> {
    let mut rec = Recorder::new(path, 30.0)?;
    for c in colors {
        let data: Vec<u8> = std::iter::repeat_n(*c, height * width).flatten().collect();
        let t = Tensor::image(height, width, 3, Bytes::from(data)).map_err(|e| e.to_string())?;
        for _ in 0..frames {
            rec.mosaic(&t, &Overlay::default())?;
        }
    }
    rec.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(SourceSpec::parse("test"), SourceSpec::Test);
        assert_eq!(SourceSpec::parse("1"), SourceSpec::Camera(1));
        assert_eq!(
            SourceSpec::parse("a.avi"),
            SourceSpec::File(PathBuf::from("a.avi"))
        );
    }

    #[test]
    fn video_file_round_trip_and_loop() {
        quiet_logs();
        let path = std::env::temp_dir().join(format!("vchat-cv-{}.avi", vchat_core::new_id()));
        write_test_video(&path, &[[200, 30, 30]], 3, 48, 64).unwrap();
        let mut src = VideoSource::file(&path, true, 24, 32).unwrap();
        assert!(!src.is_live());
        for _ in 0..7 {
            let t = src.next_frame().unwrap().expect("looping never ends");
            assert_eq!(t.shape(), &[24, 32, 3]);
            let px = &t.data()[..3];
            assert!(px[0] > 150 && px[1] < 80 && px[2] < 80, "{px:?}");
        }
        let mut once = VideoSource::file(&path, false, 24, 32).unwrap();
        let mut n = 0;
        while once.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unreadable_files_are_clear_errors() {
        let missing = VideoSource::file(Path::new("/nonexistent/x.avi"), false, 2, 2);
        assert!(
            missing
                .err()
                .unwrap()
                .starts_with("cannot read /nonexistent/x.avi")
        );
        let junk = std::env::temp_dir().join(format!("vchat-junk-{}.avi", vchat_core::new_id()));
        std::fs::write(&junk, b"not a video").unwrap();
        quiet_logs();
        let err = VideoSource::file(&junk, false, 2, 2).err().unwrap();
        assert!(
            err.contains("cannot open") || err.contains("no video frames"),
            "{err}"
        );
        let _ = std::fs::remove_file(&junk);
    }

    #[test]
    fn recorder_fits_other_sizes_into_the_first() {
        let path = std::env::temp_dir().join(format!("vchat-rec-{}.avi", vchat_core::new_id()));
        let mut rec = Recorder::new(&path, 10.0).unwrap();
        let one = |h: usize| Tensor::image(h, 40, 3, Bytes::from(vec![255u8; h * 40 * 3])).unwrap();
        rec.mosaic(&one(20), &Overlay::default()).unwrap();
        rec.mosaic(&one(40), &Overlay::default()).unwrap();
        rec.finish().unwrap();
        assert_eq!(rec.frames(), 2);
        let src = VideoSource::file(&path, false, 20, 40).unwrap();
        assert_eq!(src.describe(), path.display().to_string());
        let _ = std::fs::remove_file(&path);
    }
}
