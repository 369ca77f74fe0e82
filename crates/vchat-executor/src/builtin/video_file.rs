//! VideoFileSource: the frames of a video file, for `receive` streams.

use std::sync::Arc;

use serde::Deserialize;
use vchat_core::{
    DocumentArray, Error, Executor, Registry, RequestContext, SourceContext, SourceStream, Tensor,
    async_trait,
};

use super::common::paced_source;
use super::yuv4mpeg::Y4m;

/// The jtype it registers under.
pub const JTYPE: &str = "VideoFileSource";

/// `with:` of VideoFileSource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoFileConfig {
    /// A YUV4MPEG2 (`.y4m`) file, 4:2:0 or 4:4:4 (e.g. `ffmpeg -i in.mp4 -pix_fmt
    /// yuv420p out.y4m`). A relative path is relative to the working directory.
    pub path: std::path::PathBuf,
    /// Frames per second yielded; default: the file's own rate.
    #[serde(default)]
    pub fps: Option<f64>,
    /// Start over at the end of the file instead of ending the stream.
    #[serde(default, rename = "loop")]
    pub looped: bool,
}

/// A source: the frames of a video file, as BGR, for `receive` streams.
pub struct VideoFileSource {
    video: Arc<Y4m>,
    fps: f64,
    looped: bool,
}

impl VideoFileSource {
    /// Builds it, reading the file now so that a bad file fails at start.
    pub fn new(c: VideoFileConfig, _: &str) -> Result<Self, String> {
        let video = Y4m::read(&c.path).map_err(|e| format!("with.path: {e}"))?;
        let fps = c.fps.unwrap_or(video.fps);
        if !(fps > 0.0 && fps <= 1000.0) {
            return Err(format!(
                "with.fps must be above 0 and at most 1000, got {fps}"
            ));
        }
        Ok(VideoFileSource {
            video: Arc::new(video),
            fps,
            looped: c.looped,
        })
    }
}

/// Frame `n` of `video`, from the start again past its end.
fn nth_frame(video: &Y4m, n: u64) -> Tensor {
    let data = video.frames[(n % video.frames.len() as u64) as usize].clone();
    // Every frame was converted at the clip's size, and a clip has frames.
    Tensor::image(video.height, video.width, 3, data).expect("sized")
}

#[async_trait]
impl Executor for VideoFileSource {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        for doc in docs.iter_mut() {
            doc.set_tensor(nth_frame(&self.video, 0));
        }
        Ok(())
    }

    fn source(&self, ctx: SourceContext) -> Option<SourceStream> {
        let video = self.video.clone();
        let limit = (!self.looped).then_some(video.frames.len() as u64);
        Some(paced_source(&ctx, self.fps, limit, move |n| {
            nth_frame(&video, n)
        }))
    }
}

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, VideoFileSource::new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::yuv4mpeg::tests::y4m_bytes;
    use futures::StreamExt;

    #[tokio::test]
    async fn y4m_frames_come_out_as_bgr_at_the_files_rate() {
        let path = std::env::temp_dir().join(format!("vchat-{}.y4m", vchat_core::new_id()));
        std::fs::write(&path, y4m_bytes(3)).unwrap();
        let src = VideoFileSource::new(
            VideoFileConfig {
                path: path.clone(),
                fps: Some(500.0),
                looped: false,
            },
            "v",
        )
        .unwrap();
        assert_eq!(src.video.fps, 25.0);
        let ctx = SourceContext {
            endpoint: "/".into(),
            parameters: Default::default(),
            docs: DocumentArray::new(),
        };
        let frames: Vec<_> = src.source(ctx).unwrap().collect().await;
        assert_eq!(frames.len(), 3);
        let f = frames[1].as_ref().unwrap()[0].tensor().unwrap().clone();
        assert_eq!(f.shape(), &[2, 4, 3]);
        assert_eq!(&f.data()[..3], &[90, 90, 90]);
        let err = VideoFileSource::new(
            VideoFileConfig {
                path: "/nonexistent.y4m".into(),
                fps: None,
                looped: false,
            },
            "v",
        )
        .err()
        .unwrap();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::write(&path, b"YUV4MPEG2 W4 H2 C422\nFRAME\n").unwrap();
        let err = VideoFileSource::new(
            VideoFileConfig {
                path: path.clone(),
                fps: None,
                looped: false,
            },
            "v",
        )
        .err()
        .unwrap();
        assert!(err.contains("4:2:0"), "{err}");
        let _ = std::fs::remove_file(path);
    }
}
