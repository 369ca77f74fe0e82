//! Recording received mosaics to a video file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use opencv::core::{self, Mat, Rect, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::videoio;
use vchat_client::sink::{MosaicSink, Overlay};
use vchat_core::Tensor;

use super::capture::tensor_to_mat;
use super::cv_err;

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
    use crate::cv::VideoSource;
    use vchat_client::source::FrameSource;

    #[test]
    fn recorder_fits_other_sizes_into_the_first() {
        let path = std::env::temp_dir().join(format!("vchat-rec-{}.avi", vchat_core::new_id()));
        let mut rec = Recorder::new(&path, 10.0).unwrap();
        let white =
            |h: usize| Tensor::image(h, 40, 3, Bytes::from(vec![255u8; h * 40 * 3])).unwrap();
        rec.mosaic(&white(20), &Overlay::default()).unwrap();
        rec.mosaic(&white(40), &Overlay::default()).unwrap();
        rec.finish().unwrap();
        assert_eq!(rec.frames(), 2);
        let src = VideoSource::file(&path, false, 20, 40).unwrap();
        assert_eq!(src.describe(), path.display().to_string());
        let _ = std::fs::remove_file(&path);
    }
}
