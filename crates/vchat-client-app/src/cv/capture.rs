//! Frames from a webcam or a video file, and the conversions between OpenCV's
//! `Mat` and the chat's BGR tensors.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use opencv::core::{self, Mat, Scalar, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use vchat_client::source::FrameSource;
use vchat_core::Tensor;

use super::cv_err;

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
        let fps = native_rate(&cap);
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
        let fps = native_rate(&cap);
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

/// The frame rate a camera or a file reports, when it is a plausible one.
fn native_rate(cap: &videoio::VideoCapture) -> Option<f64> {
    cap.get(videoio::CAP_PROP_FPS)
        .ok()
        .filter(|f| *f > 0.0 && *f < 1000.0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cv::{quiet_logs, write_test_video};

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
        let mut to_the_end = VideoSource::file(&path, false, 24, 32).unwrap();
        let mut n = 0;
        while to_the_end.next_frame().unwrap().is_some() {
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
}
