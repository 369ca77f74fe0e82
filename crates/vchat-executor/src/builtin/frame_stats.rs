//! FrameStats: frames analysed, not changed; brightness and frame rate as extra
//! outputs.

use serde::Deserialize;
use vchat_core::{
    Document, DocumentArray, Error, Executor, Registry, RequestContext, StreamId, Value,
    async_trait, number_value, value::Kind,
};

use super::common::{StreamRate, number_param, reject};

/// The jtype it registers under.
pub const JTYPE: &str = "FrameStats";
/// Default mean brightness above which a frame counts as bright.
pub const DEFAULT_THRESHOLD: f64 = 128.0;

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
    DEFAULT_THRESHOLD
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

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, FrameStats::new);
}
