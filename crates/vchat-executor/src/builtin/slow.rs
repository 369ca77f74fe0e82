//! Slow: a deliberately slow executor, for demos and tests of frame skipping and
//! backpressure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use vchat_core::{
    DocumentArray, Error, Executor, Registry, RequestContext, async_trait, number_value,
};

use super::common::{number_param, reject};

/// The jtype it registers under.
pub const JTYPE: &str = "Slow";
/// Default milliseconds per request.
pub const DEFAULT_DELAY_MS: u64 = 200;
/// Longest delay accepted, in `with:` or a request, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;

/// `with:` of Slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConfig {
    /// Milliseconds each request takes; the request parameter `delay_ms`
    /// overrides it.
    #[serde(default = "default_delay_ms")]
    pub delay_ms: u64,
}

fn default_delay_ms() -> u64 {
    DEFAULT_DELAY_MS
}

/// Takes `delay_ms` per request, one request at a time (like a model on one
/// device), then passes it through: for demos and tests of frame skipping and
/// backpressure. Reports `processed` (requests it ran) as an extra output.
pub struct Slow {
    name: String,
    delay: Duration,
    processed: AtomicU64,
    busy: tokio::sync::Mutex<()>,
}

impl Slow {
    /// Builds it.
    pub fn new(c: SlowConfig, name: &str) -> Result<Self, String> {
        if c.delay_ms > MAX_DELAY_MS {
            return Err(format!(
                "with.delay_ms must be at most {MAX_DELAY_MS}, got {}",
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
            Some(Ok(ms)) if (0.0..=MAX_DELAY_MS as f64).contains(&ms) => {
                Duration::from_secs_f64(ms / 1e3)
            }
            Some(_) => {
                return Err(reject(
                    &self.name,
                    format!("parameter delay_ms must be 0 to {MAX_DELAY_MS}"),
                ));
            }
        };
        let _one_at_a_time = self.busy.lock().await;
        tokio::time::sleep(delay).await;
        let n = self.processed.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.set_result("processed", number_value(n as f64));
        Ok(())
    }
}

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, Slow::new);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_checked() {
        assert!(Slow::new(SlowConfig { delay_ms: 100_000 }, "s").is_err());
    }
}
