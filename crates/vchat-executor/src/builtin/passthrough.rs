//! Passthrough: every request unchanged, the baseline of a Flow.

use serde::Deserialize;
use vchat_core::{DocumentArray, Error, Executor, Registry, RequestContext, async_trait};

/// The jtype it registers under.
pub const JTYPE: &str = "Passthrough";

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

/// Adds it to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, Passthrough::new);
}
