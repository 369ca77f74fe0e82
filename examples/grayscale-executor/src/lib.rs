//! A custom executor, complete: copy this crate to start your own.
//!
//! 1. A config struct (`with:` in YAML): serde, `deny_unknown_fields`, a doc comment
//!    and a default for every field.
//! 2. A runtime type implementing [`vchat_core::Executor`].
//! 3. [`register`], which adds it to a registry under its `jtype`, and a binary
//!    (`src/bin/vchat-grayscale.rs`) that is the whole `vchat` CLI plus this
//!    executor.
//!
//! `GrayscaleExecutor` turns frames gray: `mix` 1.0 is fully gray, 0.0 leaves the
//! frame as it is. A client can change `mix` per request with the parameter `mix`
//! (or `parameters: {grayscale: {mix: ...}}` for this executor only).

use bytes::Bytes;
use serde::Deserialize;
use vchat_core::{DocumentArray, Error, Executor, Registry, RequestContext, Tensor, async_trait};

/// The jtype to name in YAML.
pub const JTYPE: &str = "GrayscaleExecutor";
/// Default share of gray.
pub const DEFAULT_MIX: f64 = 1.0;

/// `with:` of a GrayscaleExecutor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrayscaleConfig {
    /// Share of gray in the output, 0.0 (unchanged) to 1.0 (fully gray).
    #[serde(default = "default_mix")]
    pub mix: f64,
}

fn default_mix() -> f64 {
    DEFAULT_MIX
}

/// The runtime of a GrayscaleExecutor.
pub struct GrayscaleExecutor {
    name: String,
    mix: f64,
}

impl GrayscaleExecutor {
    /// Builds the executor named `name` from its config.
    pub fn new(config: GrayscaleConfig, name: &str) -> Result<Self, String> {
        check_mix(config.mix).map_err(|m| format!("with.{m}"))?;
        Ok(GrayscaleExecutor {
            name: name.to_string(),
            mix: config.mix,
        })
    }
}

fn check_mix(mix: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&mix) {
        Ok(mix)
    } else {
        Err(format!("mix must be between 0.0 and 1.0, got {mix}"))
    }
}

/// Adds the executor to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, GrayscaleExecutor::new);
}

/// `frame` with each pixel moved `mix` of the way to its luma (BT.601).
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
impl Executor for GrayscaleExecutor {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let reject = |message: String| Error::Rejected {
            executor: self.name.clone(),
            message,
        };
        let mix = match ctx.parameters.get("mix").and_then(|v| v.kind.as_ref()) {
            None => self.mix,
            Some(prost_kind) => match prost_kind {
                vchat_core::value::Kind::NumberValue(n) => {
                    check_mix(*n).map_err(|m| reject(format!("parameter {m}")))?
                }
                _ => return Err(reject("parameter mix must be a number".into())),
            },
        };
        for doc in docs.iter_mut() {
            let Some(frame) = doc.tensor() else { continue };
            frame.frame_dims().map_err(reject)?;
            let gray = grayscale(frame, mix);
            doc.set_tensor(gray);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mix_is_gray_and_zero_is_identity() {
        let t = Tensor::image(1, 1, 3, Bytes::from_static(&[255, 0, 0])).unwrap();
        let g = grayscale(&t, 1.0);
        assert_eq!(&g.data()[..], &[28, 28, 28]);
        assert_eq!(grayscale(&t, 0.0), t);
    }

    #[test]
    fn config_and_registration() {
        assert!(GrayscaleExecutor::new(GrayscaleConfig { mix: 1.5 }, "g").is_err());
        let mut r = Registry::new();
        register(&mut r);
        assert!(r.contains(JTYPE));
    }

    #[test]
    fn example_flow_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flow.yml");
        let spec = vchat_core::config::load_flow(&path).unwrap();
        assert_eq!(spec.executors[0].jtype, JTYPE);
        assert_eq!(spec.executors[1].jtype, "VideoChatExecutor");
        let mut r = vchat_cli::builtin_registry();
        register(&mut r);
        for e in &spec.executors {
            r.build(e).unwrap();
        }
    }
}
