//! Built-in executors beside the chat: simple frame filters, a deliberately slow
//! executor, frame statistics (extra outputs), and a test-pattern source (for
//! `receive` streams). Each has a `<Name>Config` (its `with:`) and a runtime type.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use vchat_core::{
    Document, DocumentArray, Error, Executor, RequestContext, SourceContext, SourceStream,
    StreamId, Tensor, Value, async_trait, number_value, value::Kind,
};

fn reject(name: &str, message: impl Into<String>) -> Error {
    Error::Rejected {
        executor: name.to_string(),
        message: message.into(),
    }
}

/// Applies `f` to the frame of every document that has one.
fn map_frames(
    name: &str,
    docs: &mut DocumentArray,
    mut f: impl FnMut(&Tensor, usize, usize) -> Result<Tensor, String>,
) -> Result<(), Error> {
    for doc in docs.iter_mut() {
        let Some(frame) = doc.tensor() else { continue };
        let (h, w) = frame.frame_dims().map_err(|m| reject(name, m))?;
        let out = f(frame, h, w).map_err(|m| reject(name, m))?;
        doc.set_tensor(out);
    }
    Ok(())
}

fn number_param(ctx: &RequestContext<'_>, key: &str) -> Option<Result<f64, String>> {
    ctx.parameters.get(key).map(|v| match v.kind {
        Some(Kind::NumberValue(n)) => Ok(n),
        _ => Err(format!("parameter {key} must be a number")),
    })
}

/// Frames seen and frames per second, per client stream.
#[derive(Default)]
struct StreamRate(Mutex<HashMap<StreamId, (u64, Instant)>>);

impl StreamRate {
    /// Counts a frame of `stream`: (frames so far, frames per second since its first).
    fn tick(&self, stream: StreamId) -> (u64, f64) {
        let mut streams = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = streams.entry(stream).or_insert((0, Instant::now()));
        *n += 1;
        let secs = since.elapsed().as_secs_f64();
        (
            *n,
            if secs > 0.0 {
                (*n - 1) as f64 / secs
            } else {
                0.0
            },
        )
    }

    fn forget(&self, stream: StreamId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&stream);
    }
}

/// `with:` of Passthrough: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughConfig {}

/// Returns every request unchanged: the baseline of a Flow.
pub struct Passthrough;

impl Passthrough {
    /// Builds it.
    pub fn new(_: PassthroughConfig, _: &str) -> Result<Self, String> {
        Ok(Passthrough)
    }
}

#[async_trait]
impl Executor for Passthrough {
    async fn process(&self, _: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        Ok(())
    }
}

/// Which way [`Flip`] mirrors.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlipAxis {
    /// Left to right (a selfie mirror).
    #[default]
    Horizontal,
    /// Upside down.
    Vertical,
    /// Both.
    Both,
}

/// `with:` of Flip.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlipConfig {
    /// `horizontal` (default), `vertical` or `both`.
    #[serde(default)]
    pub axis: FlipAxis,
}

/// Mirrors frames.
pub struct Flip {
    name: String,
    axis: FlipAxis,
}

impl Flip {
    /// Builds it.
    pub fn new(c: FlipConfig, name: &str) -> Result<Self, String> {
        Ok(Flip {
            name: name.into(),
            axis: c.axis,
        })
    }
}

/// `frame` mirrored about `axis`.
pub fn flip(frame: &Tensor, h: usize, w: usize, axis: FlipAxis) -> Tensor {
    let src = frame.data();
    let mut out = Vec::with_capacity(src.len());
    for y in 0..h {
        let sy = if matches!(axis, FlipAxis::Vertical | FlipAxis::Both) {
            h - 1 - y
        } else {
            y
        };
        let row = &src[sy * w * 3..(sy + 1) * w * 3];
        if matches!(axis, FlipAxis::Horizontal | FlipAxis::Both) {
            out.extend(row.chunks_exact(3).rev().flatten());
        } else {
            out.extend_from_slice(row);
        }
    }
    Tensor::image(h, w, 3, Bytes::from(out)).expect("same shape")
}

#[async_trait]
impl Executor for Flip {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        map_frames(&self.name, docs, |f, h, w| Ok(flip(f, h, w, self.axis)))
    }
}

/// `with:` of Grayscale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrayscaleConfig {
    /// Share of gray, 0.0 (unchanged) to 1.0 (fully gray); the request parameter
    /// `mix` overrides it.
    #[serde(default = "one")]
    pub mix: f64,
}

fn one() -> f64 {
    1.0
}

/// Turns frames gray (BT.601 luma).
pub struct Grayscale {
    name: String,
    mix: f64,
}

impl Grayscale {
    /// Builds it.
    pub fn new(c: GrayscaleConfig, name: &str) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&c.mix) {
            return Err(format!(
                "with.mix must be between 0.0 and 1.0, got {}",
                c.mix
            ));
        }
        Ok(Grayscale {
            name: name.into(),
            mix: c.mix,
        })
    }
}

/// Each pixel moved `mix` of the way to its luma.
pub fn grayscale(frame: &Tensor, mix: f64) -> Tensor {
    let m = (mix * 256.0).round() as i32;
    let data: Vec<u8> = frame
        .data()
        .chunks_exact(3)
        .flat_map(|p| {
            let (b, g, r) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
            let y = (29 * b + 150 * g + 77 * r) >> 8;
            let blend = |c: i32| (c + (((y - c) * m) >> 8)) as u8;
            [blend(b), blend(g), blend(r)]
        })
        .collect();
    Tensor::new(frame.dtype(), frame.shape().to_vec(), Bytes::from(data)).expect("same shape")
}

#[async_trait]
impl Executor for Grayscale {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let mix = match number_param(ctx, "mix") {
            None => self.mix,
            Some(Ok(m)) if (0.0..=1.0).contains(&m) => m,
            Some(Ok(m)) => {
                return Err(reject(
                    &self.name,
                    format!("parameter mix must be 0.0 to 1.0, got {m}"),
                ));
            }
            Some(Err(e)) => return Err(reject(&self.name, e)),
        };
        map_frames(&self.name, docs, |f, _, _| Ok(grayscale(f, mix)))
    }
}

/// `with:` of Resize.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeConfig {
    /// Output height in pixels.
    pub height: usize,
    /// Output width in pixels.
    pub width: usize,
}

/// Resizes frames to a fixed size (nearest neighbour).
pub struct Resize {
    name: String,
    height: usize,
    width: usize,
}

/// Largest side of a [`Resize`] output, in pixels.
pub const RESIZE_MAX_SIDE: usize = 8192;

impl Resize {
    /// Builds it.
    pub fn new(c: ResizeConfig, name: &str) -> Result<Self, String> {
        let side = 1..=RESIZE_MAX_SIDE;
        if !side.contains(&c.height) || !side.contains(&c.width) {
            return Err(format!(
                "with.height and with.width must be 1 to {RESIZE_MAX_SIDE}, got {}x{}",
                c.height, c.width
            ));
        }
        Ok(Resize {
            name: name.into(),
            height: c.height,
            width: c.width,
        })
    }
}

/// `frame`, an `h`×`w` image, resized to `nh`×`nw` (nearest neighbour); an
/// error when `h`×`w` is not its shape or `nh`×`nw` is over
/// [`RESIZE_MAX_SIDE`] squared.
pub fn resize(frame: &Tensor, h: usize, w: usize, nh: usize, nw: usize) -> Result<Tensor, String> {
    let limit = RESIZE_MAX_SIDE * RESIZE_MAX_SIDE;
    let px = crate::mosaic::resize(frame.data(), h, w, nh, nw, limit).map_err(|e| e.to_string())?;
    Tensor::image(nh, nw, 3, px).map_err(|e| e.to_string())
}

#[async_trait]
impl Executor for Resize {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        map_frames(&self.name, docs, |f, h, w| {
            resize(f, h, w, self.height, self.width)
        })
    }
}

/// `with:` of Slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConfig {
    /// Milliseconds each request takes; the request parameter `delay_ms`
    /// overrides it.
    #[serde(default = "default_delay")]
    pub delay_ms: u64,
}

fn default_delay() -> u64 {
    200
}

/// Takes `delay_ms` per request, one request at a time (like a model on one
/// device), then passes it through: for demos and tests of frame skipping and
/// backpressure. Reports `processed` (requests it ran) as an extra output.
pub struct Slow {
    name: String,
    delay: Duration,
    processed: std::sync::atomic::AtomicU64,
    busy: tokio::sync::Mutex<()>,
}

impl Slow {
    /// Builds it.
    pub fn new(c: SlowConfig, name: &str) -> Result<Self, String> {
        if c.delay_ms > 60_000 {
            return Err(format!(
                "with.delay_ms must be at most 60000, got {}",
                c.delay_ms
            ));
        }
        Ok(Slow {
            name: name.into(),
            delay: Duration::from_millis(c.delay_ms),
            processed: Default::default(),
            busy: tokio::sync::Mutex::new(()),
        })
    }
}

#[async_trait]
impl Executor for Slow {
    async fn process(&self, _: &mut DocumentArray, ctx: &RequestContext<'_>) -> Result<(), Error> {
        let delay = match number_param(ctx, "delay_ms") {
            None => self.delay,
            Some(Ok(ms)) if (0.0..=60_000.0).contains(&ms) => Duration::from_secs_f64(ms / 1e3),
            Some(_) => return Err(reject(&self.name, "parameter delay_ms must be 0 to 60000")),
        };
        let _one_at_a_time = self.busy.lock().await;
        tokio::time::sleep(delay).await;
        let n = self
            .processed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        ctx.set_result("processed", number_value(n as f64));
        Ok(())
    }
}

/// `with:` of FrameStats.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameStatsConfig {
    /// Mean brightness (0 to 255) above which a frame counts as bright; the request
    /// parameter `threshold` overrides it.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_threshold() -> f64 {
    128.0
}

/// Analyses frames without changing them; extra outputs per request: `mean`
/// (brightness), `bright` (mean over the threshold), `frames` and `fps` (of the
/// request's stream).
pub struct FrameStats {
    name: String,
    threshold: f64,
    rate: StreamRate,
}

impl FrameStats {
    /// Builds it.
    pub fn new(c: FrameStatsConfig, name: &str) -> Result<Self, String> {
        Ok(FrameStats {
            name: name.into(),
            threshold: c.threshold,
            rate: StreamRate::default(),
        })
    }
}

#[async_trait]
impl Executor for FrameStats {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let threshold = match number_param(ctx, "threshold") {
            None => self.threshold,
            Some(Ok(t)) => t,
            Some(Err(e)) => return Err(reject(&self.name, e)),
        };
        let Some(frame) = docs.iter().find_map(Document::tensor) else {
            return Ok(());
        };
        frame.frame_dims().map_err(|m| reject(&self.name, m))?;
        let data = frame.data();
        let mean =
            data.iter().map(|&b| u64::from(b)).sum::<u64>() as f64 / data.len().max(1) as f64;
        let (frames, fps) = self.rate.tick(ctx.stream);
        ctx.set_result("mean", number_value((mean * 10.0).round() / 10.0));
        ctx.set_result(
            "bright",
            Value {
                kind: Some(Kind::BoolValue(mean > threshold)),
            },
        );
        ctx.set_result("frames", number_value(frames as f64));
        ctx.set_result("fps", number_value((fps * 10.0).round() / 10.0));
        Ok(())
    }

    async fn stream_closed(&self, stream: StreamId) {
        self.rate.forget(stream);
    }
}

/// The stream of a source executor: frame `n` (made by `frame`) is due at start +
/// n / fps, deadlines from the start rather than from the previous frame, so
/// lateness never accumulates; each is the request's first document (its tags)
/// with a fresh id, the frame, and `tags.frame = n`. Ends after `limit` frames.
fn paced_source(
    ctx: &SourceContext,
    fps: f64,
    limit: Option<u64>,
    frame: impl Fn(u64) -> Tensor + Send + Sync + 'static,
) -> SourceStream {
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = tokio::time::Instant::now();
    let template = ctx.docs.first().cloned().unwrap_or_default();
    let frame = std::sync::Arc::new(frame);
    Box::pin(futures::stream::unfold(0u64, move |n| {
        let template = template.clone();
        let frame = frame.clone();
        async move {
            if limit.is_some_and(|l| n >= l) {
                return None;
            }
            tokio::time::sleep_until(start + period.mul_f64(n as f64)).await;
            let mut doc = template;
            doc.id = vchat_core::new_id();
            doc.set_tensor(frame(n));
            doc.set_tag("frame", number_value(n as f64));
            Some((Ok(DocumentArray(vec![doc])), n + 1))
        }
    }))
}

/// `with:` of TestPatternSource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPatternConfig {
    /// Frame height.
    #[serde(default = "default_h")]
    pub height: usize,
    /// Frame width.
    #[serde(default = "default_w")]
    pub width: usize,
    /// Frames per second yielded (paced against the start time: no drift).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Frames to yield before ending; none: until the client goes away. The request
    /// parameter `frames` overrides it.
    #[serde(default)]
    pub frames: Option<u64>,
}

fn default_h() -> usize {
    200
}
fn default_w() -> usize {
    300
}
fn default_fps() -> f64 {
    30.0
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
        if c.height == 0 || c.width == 0 || c.height > 4320 || c.width > 7680 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn flips_and_resizes() {
        // 1x2 frame: pixel values 1 then 2.
        let t = Tensor::image(1, 2, 3, Bytes::from_static(&[1, 1, 1, 2, 2, 2])).unwrap();
        assert_eq!(
            &flip(&t, 1, 2, FlipAxis::Horizontal).data()[..],
            &[2, 2, 2, 1, 1, 1]
        );
        assert_eq!(flip(&t, 1, 2, FlipAxis::Vertical), t);
        let big = resize(&t, 1, 2, 2, 4).unwrap();
        assert_eq!(big.shape(), &[2, 4, 3]);
        assert_eq!(
            big.data().chunks(3).map(|p| p[0]).collect::<Vec<_>>(),
            [1, 1, 2, 2, 1, 1, 2, 2]
        );
        // A shape that is not the frame's, or an output past the limit: errors.
        assert!(resize(&t, 2, 2, 2, 4).is_err());
        assert!(resize(&t, usize::MAX, 2, 2, 4).is_err());
        assert!(resize(&t, 1, 2, 100_000, 100_000).is_err());
    }

    #[test]
    fn gray_of_red() {
        let t = Tensor::image(1, 1, 3, Bytes::from_static(&[0, 0, 255])).unwrap();
        assert_eq!(&grayscale(&t, 1.0).data()[..], &[76, 76, 76]);
        assert_eq!(grayscale(&t, 0.0), t);
    }

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
    fn configs_check_their_values() {
        assert!(Slow::new(SlowConfig { delay_ms: 100_000 }, "s").is_err());
        assert!(
            Resize::new(
                ResizeConfig {
                    height: 0,
                    width: 3
                },
                "r"
            )
            .is_err()
        );
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
        assert!(Grayscale::new(GrayscaleConfig { mix: 2.0 }, "g").is_err());
    }
}

/// Draws `text` on `frame` at (`x`, `y`), 8×8 glyphs scaled by `scale`, white with
/// a dark shadow so that it reads on any background. Characters outside ASCII
/// are drawn as `?`.
pub fn draw_text(
    frame: &Tensor,
    h: usize,
    w: usize,
    x: usize,
    y: usize,
    scale: usize,
    text: &str,
) -> Tensor {
    use font8x8::UnicodeFonts;
    let mut data = frame.data().to_vec();
    let scale = scale.max(1);
    let mut put = |px: usize, py: usize, c: u8| {
        if px < w && py < h {
            let i = (py * w + px) * 3;
            data[i..i + 3].copy_from_slice(&[c, c, c]);
        }
    };
    for (shadow, color) in [(1, 0u8), (0, 255u8)] {
        for (n, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let px = x + (n * 8 + col) * scale + dx + shadow;
                            let py = y + row * scale + dy + shadow;
                            put(px, py, color);
                        }
                    }
                }
            }
        }
    }
    Tensor::image(h, w, 3, Bytes::from(data)).expect("same shape")
}

/// `with:` of Annotate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotateConfig {
    /// Text drawn in the top-left corner; the request parameter `text` overrides
    /// it. `{user}` is replaced by the frame's `tags.user`.
    #[serde(default)]
    pub text: String,
    /// Also draw the stream's frames per second.
    #[serde(default = "yes")]
    pub fps: bool,
    /// Glyph size: 8 pixels times `scale`.
    #[serde(default = "two")]
    pub scale: usize,
}

fn yes() -> bool {
    true
}
fn two() -> usize {
    2
}

/// Writes text and the stream's frame rate on each frame; reports `fps` as an
/// extra output.
pub struct Annotate {
    name: String,
    config: AnnotateConfig,
    rate: StreamRate,
}

impl Annotate {
    /// Builds it.
    pub fn new(c: AnnotateConfig, name: &str) -> Result<Self, String> {
        if c.scale == 0 || c.scale > 16 {
            return Err(format!("with.scale must be 1 to 16, got {}", c.scale));
        }
        Ok(Annotate {
            name: name.into(),
            config: c,
            rate: StreamRate::default(),
        })
    }
}

#[async_trait]
impl Executor for Annotate {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let template = match ctx.parameters.get("text").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(t)) => t.clone(),
            Some(_) => return Err(reject(&self.name, "parameter text must be a string")),
            None => self.config.text.clone(),
        };
        let (_, fps) = self.rate.tick(ctx.stream);
        let scale = self.config.scale;
        for doc in docs.iter_mut() {
            let Some(frame) = doc.tensor() else { continue };
            let (h, w) = frame.frame_dims().map_err(|m| reject(&self.name, m))?;
            let text = template.replace("{user}", doc.tag_str("user").unwrap_or(""));
            let mut out = draw_text(frame, h, w, 4, 4, scale, &text);
            if self.config.fps {
                out = draw_text(
                    &out,
                    h,
                    w,
                    4,
                    4 + 10 * scale,
                    scale,
                    &format!("{fps:.1} fps"),
                );
            }
            doc.set_tensor(out);
        }
        ctx.set_result("fps", number_value((fps * 10.0).round() / 10.0));
        Ok(())
    }

    async fn stream_closed(&self, stream: StreamId) {
        self.rate.forget(stream);
    }
}

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
    video: std::sync::Arc<Y4m>,
    fps: f64,
    looped: bool,
}

/// A decoded YUV4MPEG2 file.
pub struct Y4m {
    /// Frame height.
    pub height: usize,
    /// Frame width.
    pub width: usize,
    /// The file's frame rate.
    pub fps: f64,
    /// Each frame, BGR.
    pub frames: Vec<Bytes>,
}

impl Y4m {
    /// Reads and converts every frame of a `.y4m` file (small clips: the whole file
    /// is held as BGR).
    pub fn read(path: &std::path::Path) -> Result<Y4m, String> {
        let raw =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let bad = |m: &str| format!("{}: not a usable YUV4MPEG2 file: {m}", path.display());
        let nl = raw
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header"))?;
        let header = std::str::from_utf8(&raw[..nl]).map_err(|_| bad("header is not text"))?;
        let mut parts = header.split(' ');
        if parts.next() != Some("YUV4MPEG2") {
            return Err(bad("missing YUV4MPEG2 signature"));
        }
        let (mut w, mut h, mut fps, mut chroma) = (0usize, 0usize, 30.0, "420".to_string());
        for p in parts {
            let (k, v) = p.split_at(1.min(p.len()));
            match k {
                "W" => w = v.parse().map_err(|_| bad("bad width"))?,
                "H" => h = v.parse().map_err(|_| bad("bad height"))?,
                "F" => {
                    let (n, d) = v.split_once(':').ok_or_else(|| bad("bad frame rate"))?;
                    let (n, d): (f64, f64) = (
                        n.parse().map_err(|_| bad("bad frame rate"))?,
                        d.parse().map_err(|_| bad("bad frame rate"))?,
                    );
                    if d > 0.0 && n > 0.0 {
                        fps = n / d;
                    }
                }
                "C" => chroma = v.to_string(),
                _ => {}
            }
        }
        if w == 0 || h == 0 || w > 7680 || h > 4320 {
            return Err(bad("width and height missing or out of range"));
        }
        let (cw, ch) = if chroma.starts_with("420") {
            (w.div_ceil(2), h.div_ceil(2))
        } else if chroma.starts_with("444") {
            (w, h)
        } else {
            return Err(bad(&format!(
                "colour space C{chroma} (only 4:2:0 and 4:4:4)"
            )));
        };
        let plane = w * h;
        let frame_len = plane + 2 * cw * ch;
        let mut frames = Vec::new();
        let mut at = nl + 1;
        while at < raw.len() {
            let line_end = raw[at..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| bad("truncated frame header"))?;
            if !raw[at..].starts_with(b"FRAME") {
                return Err(bad("frame header is not FRAME"));
            }
            let start = at + line_end + 1;
            let data = raw
                .get(start..start + frame_len)
                .ok_or_else(|| bad("truncated frame"))?;
            let (y, rest) = data.split_at(plane);
            let (u, v) = rest.split_at(cw * ch);
            let mut bgr = Vec::with_capacity(plane * 3);
            for row in 0..h {
                for col in 0..w {
                    let ci = if cw == w {
                        row * w + col
                    } else {
                        (row / 2) * cw + col / 2
                    };
                    let (yy, uu, vv) = (
                        f32::from(y[row * w + col]),
                        f32::from(u[ci]) - 128.0,
                        f32::from(v[ci]) - 128.0,
                    );
                    let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
                    bgr.extend_from_slice(&[
                        c(yy + 1.772 * uu),
                        c(yy - 0.344_136 * uu - 0.714_136 * vv),
                        c(yy + 1.402 * vv),
                    ]);
                }
            }
            frames.push(Bytes::from(bgr));
            at = start + frame_len;
        }
        if frames.is_empty() {
            return Err(bad("no frames"));
        }
        Ok(Y4m {
            height: h,
            width: w,
            fps,
            frames,
        })
    }
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
            video: std::sync::Arc::new(video),
            fps,
            looped: c.looped,
        })
    }

    fn frame(&self, n: usize) -> Tensor {
        let v = &self.video;
        Tensor::image(v.height, v.width, 3, v.frames[n % v.frames.len()].clone()).expect("sized")
    }
}

#[async_trait]
impl Executor for VideoFileSource {
    async fn process(&self, docs: &mut DocumentArray, _: &RequestContext<'_>) -> Result<(), Error> {
        for doc in docs.iter_mut() {
            doc.set_tensor(self.frame(0));
        }
        Ok(())
    }

    fn source(&self, ctx: SourceContext) -> Option<SourceStream> {
        let video = self.video.clone();
        let limit = (!self.looped).then_some(video.frames.len() as u64);
        Some(paced_source(&ctx, self.fps, limit, move |n| {
            let data = video.frames[(n % video.frames.len() as u64) as usize].clone();
            Tensor::image(video.height, video.width, 3, data).expect("sized")
        }))
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use futures::StreamExt;

    /// A 4:2:0 clip of `n` frames, 4×2, every pixel one grey level per frame.
    pub(crate) fn y4m_bytes(n: usize) -> Vec<u8> {
        let mut out = b"YUV4MPEG2 W4 H2 F25:1 Ip A1:1 C420jpeg\n".to_vec();
        for i in 0..n {
            out.extend_from_slice(b"FRAME\n");
            out.extend(std::iter::repeat_n(50 + i as u8 * 40, 8));
            out.extend(std::iter::repeat_n(128u8, 4));
        }
        out
    }

    #[test]
    fn annotate_draws_white_text() {
        let t = Tensor::image(20, 40, 3, Bytes::from(vec![0u8; 20 * 40 * 3])).unwrap();
        let out = draw_text(&t, 20, 40, 0, 0, 1, "A");
        assert!(out.data().contains(&255));
        assert_eq!(out.shape(), t.shape());
        // Off-frame text is clipped, not a panic.
        draw_text(&t, 20, 40, 39, 19, 4, "long text");
    }

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
                path,
                fps: None,
                looped: false,
            },
            "v",
        )
        .err()
        .unwrap();
        assert!(err.contains("4:2:0"), "{err}");
    }
}
