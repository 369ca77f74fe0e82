//! A custom executor, complete: copy this crate to start your own.
//!
//! 1. A config struct (`with:` in YAML): serde, `deny_unknown_fields`, a doc comment
//!    and a default for every field.
//! 2. A runtime type implementing [`vchat_core::Executor`].
//! 3. [`register`], which adds it to a registry under its `jtype`, and a binary
//!    (`src/bin/vchat-posterize.rs`) that is the whole `vchat` CLI plus this
//!    executor.
//!
//! `PosterizeExecutor` reduces each colour channel to `levels` levels (2 to 256;
//! 256 leaves the frame as it is), the poster look. A client can change `levels`
//! per request with the parameter `levels` (or `parameters: {posterize: {levels:
//! ...}}` for this executor only).
//!
//! As in a Jina executor, whose frames are numpy arrays, the work is done on an
//! array: [`Tensor::image_view`] gives the frame as an `ndarray` view of its
//! pixels (no copy), and [`Tensor::from_array`] takes the array back.

use ndarray::{Array3, ArrayView3};
use serde::Deserialize;
use vchat_core::{DocumentArray, Error, Executor, Registry, RequestContext, Tensor, async_trait};

/// The jtype to name in YAML.
pub const JTYPE: &str = "PosterizeExecutor";
/// Default levels per channel.
pub const DEFAULT_LEVELS: u32 = 4;

/// `with:` of a PosterizeExecutor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosterizeConfig {
    /// Levels per colour channel, 2 to 256 (256: unchanged).
    #[serde(default = "default_levels")]
    pub levels: u32,
}

fn default_levels() -> u32 {
    DEFAULT_LEVELS
}

/// The runtime of a PosterizeExecutor.
pub struct PosterizeExecutor {
    name: String,
    levels: u32,
}

impl PosterizeExecutor {
    /// Builds the executor named `name` from its config.
    pub fn new(config: PosterizeConfig, name: &str) -> Result<Self, String> {
        let levels = check_levels(f64::from(config.levels)).map_err(|m| format!("with.{m}"))?;
        Ok(PosterizeExecutor {
            name: name.to_string(),
            levels,
        })
    }
}

fn check_levels(levels: f64) -> Result<u32, String> {
    if (2.0..=256.0).contains(&levels) && levels.fract() == 0.0 {
        Ok(levels as u32)
    } else {
        Err(format!(
            "levels must be a whole number from 2 to 256, got {levels}"
        ))
    }
}

/// Adds the executor to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(JTYPE, PosterizeExecutor::new);
}

/// `frame` (height × width × channels) with each channel rounded to the nearest
/// of `levels` evenly spaced values (`levels` from 2 to 256).
pub fn posterize(frame: ArrayView3<'_, u8>, levels: u32) -> Array3<u8> {
    let step = 255.0 / f64::from(levels.max(2) - 1);
    let table: Vec<u8> = (0..=255u32)
        .map(|v| ((f64::from(v) / step).round() * step).round().min(255.0) as u8)
        .collect();
    frame.mapv(|v| table[usize::from(v)])
}

#[async_trait]
impl Executor for PosterizeExecutor {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let reject = |message: String| Error::Rejected {
            executor: self.name.clone(),
            message,
        };
        let levels = match ctx.parameters.get("levels").and_then(|v| v.kind.as_ref()) {
            None => self.levels,
            Some(vchat_core::value::Kind::NumberValue(n)) => {
                check_levels(*n).map_err(|m| reject(format!("parameter {m}")))?
            }
            Some(_) => return Err(reject("parameter levels must be a number".into())),
        };
        for doc in docs.iter_mut() {
            let Some(frame) = doc.tensor() else { continue };
            frame.frame_dims().map_err(reject)?;
            let pixels = frame.image_view().map_err(|e| reject(e.to_string()))?;
            let out =
                Tensor::from_array(posterize(pixels, levels)).map_err(|e| reject(e.to_string()))?;
            doc.set_tensor(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;

    /// `posterize` on a tensor, as the executor runs it.
    fn on_tensor(t: &Tensor, levels: u32) -> Tensor {
        Tensor::from_array(posterize(t.image_view().unwrap(), levels)).unwrap()
    }

    #[test]
    fn four_levels_and_identity_at_256() {
        let t = Tensor::image(1, 1, 3, Bytes::from_static(&[200, 100, 30])).unwrap();
        assert_eq!(&on_tensor(&t, 4).data()[..], &[170, 85, 0]);
        assert_eq!(on_tensor(&t, 256), t);
    }

    #[test]
    fn config_and_registration() {
        assert!(PosterizeExecutor::new(PosterizeConfig { levels: 1 }, "p").is_err());
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
