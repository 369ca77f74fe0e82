//! Annotate: text and the stream's frame rate written on each frame, with an
//! 8×8 bitmap font.

use bytes::Bytes;
use serde::Deserialize;
use vchat_core::{
    DocumentArray, Error, Executor, Registry, RequestContext, StreamId, Tensor, async_trait,
    number_value, value::Kind,
};

use super::common::{StreamRate, reject};

/// The jtype it registers under.
pub const JTYPE: &str = "Annotate";
/// Default glyph scale: 16-pixel glyphs.
pub const DEFAULT_SCALE: usize = 2;
/// Largest glyph scale.
pub const MAX_SCALE: usize = 16;

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
    #[serde(default = "enabled")]
    pub fps: bool,
    /// Glyph size: 8 pixels times `scale`, 1 to 16.
    #[serde(default = "default_scale")]
    pub scale: usize,
}

fn enabled() -> bool {
    true
}
fn default_scale() -> usize {
    DEFAULT_SCALE
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
        if c.scale == 0 || c.scale > MAX_SCALE {
            return Err(format!(
                "with.scale must be 1 to {MAX_SCALE}, got {}",
                c.scale
            ));
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

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, Annotate::new);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_draws_white_text() {
        let t = Tensor::image(20, 40, 3, Bytes::from(vec![0u8; 20 * 40 * 3])).unwrap();
        let out = draw_text(&t, 20, 40, 0, 0, 1, "A");
        assert!(out.data().contains(&255));
        assert_eq!(out.shape(), t.shape());
        // Off-frame text is clipped, not a panic.
        draw_text(&t, 20, 40, 39, 19, 4, "long text");
    }
}
