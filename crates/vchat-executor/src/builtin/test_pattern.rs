//! TestPatternSource: a moving test pattern, for `receive` streams.

use bytes::Bytes;
use serde::Deserialize;
use vchat_core::{
    DocumentArray, Error, Executor, Registry, RequestContext, SourceContext, SourceStream, Tensor,
    async_trait, value::Kind,
};

use super::common::paced_source;

/// The jtype it registers under.
pub const JTYPE: &str = "TestPatternSource";
/// Default frame height.
pub const DEFAULT_HEIGHT: usize = 200;
/// Default frame width.
pub const DEFAULT_WIDTH: usize = 300;
/// Default frames per second.
pub const DEFAULT_FPS: f64 = 30.0;
/// Largest frame height (8K UHD).
pub const MAX_HEIGHT: usize = 4320;
/// Largest frame width (8K UHD).
pub const MAX_WIDTH: usize = 7680;

/// `with:` of TestPatternSource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPatternConfig {
    /// Frame height.
    #[serde(default = "default_height")]
    pub height: usize,
    /// Frame width.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Frames per second yielded (paced against the start time: no drift).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Frames to yield before ending; none: until the client goes away. The request
    /// parameter `frames` overrides it.
    #[serde(default)]
    pub frames: Option<u64>,
}

fn default_height() -> usize {
    DEFAULT_HEIGHT
}
fn default_width() -> usize {
    DEFAULT_WIDTH
}
fn default_fps() -> f64 {
    DEFAULT_FPS
}

/// A source: a moving test pattern (colour bars and a sweeping bar), for
/// `receive` streams. Each frame's tags carry `frame` (its number).
pub struct TestPatternSource {
    config: TestPatternConfig,
}

impl TestPatternSource {
    /// Builds it.
    pub fn new(c: TestPatternConfig, _: &str) -> Result<Self, String> {
        if !(c.fps > 0.0 && c.fps <= 1000.0) {
            return Err(format!(
                "with.fps must be above 0 and at most 1000, got {}",
                c.fps
            ));
        }
        if c.height == 0 || c.width == 0 || c.height > MAX_HEIGHT || c.width > MAX_WIDTH {
            return Err(format!(
                "with.height/width out of range: {}x{}",
                c.height, c.width
            ));
        }
        Ok(TestPatternSource { config: c })
    }
}

const BARS: [[u8; 3]; 7] = [
    [192, 192, 192],
    [0, 192, 192],
    [192, 192, 0],
    [0, 192, 0],
    [192, 0, 192],
    [0, 0, 192],
    [192, 0, 0],
];

/// Frame `n` of the pattern: seven colour bars and a white bar sweeping down.
/// `h` and `w` are within [`MAX_HEIGHT`] and [`MAX_WIDTH`] (checked by
/// [`TestPatternSource::new`]).
pub fn test_pattern(h: usize, w: usize, n: u64) -> Tensor {
    let mut row = Vec::with_capacity(w * 3);
    for x in 0..w {
        row.extend_from_slice(&BARS[x * 7 / w]);
    }
    let sweep = (n as usize * 4) % h;
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        if y >= sweep && y < sweep + (h / 20).max(1) {
            data.extend(std::iter::repeat_n(255u8, w * 3));
        } else {
            data.extend_from_slice(&row);
        }
    }
    Tensor::image(h, w, 3, Bytes::from(data)).expect("sized")
}

#[async_trait]
impl Executor for TestPatternSource {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        // Outside a `receive` stream: answer with one frame.
        for doc in docs.iter_mut() {
            doc.set_tensor(test_pattern(self.config.height, self.config.width, 0));
        }
        Ok(())
    }

    fn source(&self, ctx: SourceContext) -> Option<SourceStream> {
        let (h, w) = (self.config.height, self.config.width);
        let limit = match ctx.parameters.get("frames").and_then(|v| v.kind.as_ref()) {
            Some(Kind::NumberValue(n)) if *n >= 0.0 => Some(*n as u64),
            _ => self.config.frames,
        };
        Some(paced_source(&ctx, self.config.fps, limit, move |n| {
            test_pattern(h, w, n)
        }))
    }
}

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, TestPatternSource::new);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use vchat_core::number_value;

    #[tokio::test]
    async fn pattern_source_yields_numbered_frames() {
        let src = TestPatternSource::new(
            TestPatternConfig {
                height: 20,
                width: 30,
                fps: 200.0,
                frames: Some(5),
            },
            "src",
        )
        .unwrap();
        let ctx = SourceContext {
            endpoint: "/".into(),
            parameters: Default::default(),
            docs: DocumentArray::new(),
        };
        let frames: Vec<_> = src.source(ctx).unwrap().collect().await;
        assert_eq!(frames.len(), 5);
        let last = frames[4].as_ref().unwrap();
        assert_eq!(last[0].tensor().unwrap().shape(), &[20, 30, 3]);
        assert_eq!(last[0].tags["frame"], number_value(4.0));
    }

    #[test]
    fn rate_is_checked() {
        assert!(
            TestPatternSource::new(
                TestPatternConfig {
                    height: 1,
                    width: 1,
                    fps: 0.0,
                    frames: None
                },
                "t"
            )
            .is_err()
        );
    }
}
