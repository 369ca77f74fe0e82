//! The registry: `jtype` name to constructor.
//!
//! Built-in executors are added by one explicit list (see the `vchat-cli` crate); a
//! custom executor crate adds itself with [`Registry::register`] in its own binary.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::ExecutorSpec;
use crate::{ConfigError, Executor};

type Constructor =
    Box<dyn Fn(&ExecutorSpec) -> Result<Arc<dyn Executor>, ConfigError> + Send + Sync>;

/// Maps `jtype` names to executor constructors.
#[derive(Default)]
pub struct Registry {
    constructors: BTreeMap<String, Constructor>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `jtype`, built from its config type `C` (deserialized from the
    /// `with:` mapping) by `build`. `C` should deny unknown fields so that a typo in
    /// the YAML is an error. `build` gets the executor's name in the Flow and returns
    /// the executor or a message saying which value is unusable.
    pub fn register<C, E, F>(&mut self, jtype: &str, build: F)
    where
        C: DeserializeOwned,
        E: Executor,
        F: Fn(C, &str) -> Result<E, String> + Send + Sync + 'static,
    {
        let jtype_name = jtype.to_string();
        let ctor = move |spec: &ExecutorSpec| -> Result<Arc<dyn Executor>, ConfigError> {
            let object: serde_json::Map<String, serde_json::Value> = spec
                .with
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            let config: C = serde_path_to_error::deserialize(serde_json::Value::Object(object))
                .map_err(|e| {
                    let key = e.path().iter().next().map(|s| s.to_string());
                    let origin = key
                        .as_ref()
                        .and_then(|k| spec.with.get(k))
                        .map(|(_, o)| o.clone())
                        .unwrap_or_else(|| spec.jtype_origin.clone());
                    let path = e.path().to_string();
                    let at = if path == "." {
                        String::new()
                    } else {
                        format!(".{path}")
                    };
                    ConfigError::new(
                        origin,
                        format!(
                            "executor `{}` ({}): with{at}: {}",
                            spec.name,
                            jtype_name,
                            e.inner()
                        ),
                    )
                })?;
            let executor = build(config, &spec.name).map_err(|m| {
                ConfigError::new(
                    spec.jtype_origin.clone(),
                    format!("executor `{}` ({}): {m}", spec.name, jtype_name),
                )
            })?;
            Ok(Arc::new(executor))
        };
        self.constructors.insert(jtype.to_string(), Box::new(ctor));
    }

    /// Whether `jtype` is registered.
    pub fn contains(&self, jtype: &str) -> bool {
        self.constructors.contains_key(jtype)
    }

    /// The registered jtypes, sorted.
    pub fn jtypes(&self) -> impl Iterator<Item = &str> {
        self.constructors.keys().map(String::as_str)
    }

    /// Builds the executor `spec` declares.
    pub fn build(&self, spec: &ExecutorSpec) -> Result<Arc<dyn Executor>, ConfigError> {
        match self.constructors.get(&spec.jtype) {
            Some(ctor) => ctor(spec),
            None => {
                let known: Vec<&str> = self.jtypes().collect();
                let hint = if spec.py_modules.is_empty() {
                    String::new()
                } else {
                    " (the YAML lists py_modules: it is a Python executor, served by Jina)"
                        .to_string()
                };
                Err(ConfigError::new(
                    spec.jtype_origin.clone(),
                    format!(
                        "executor `{}`: unknown jtype `{}`{hint}; registered: {}",
                        spec.name,
                        spec.jtype,
                        known.join(", ")
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DocumentArray, Error, Origin, RequestContext, config::WithValues};
    use async_trait::async_trait;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EchoConfig {
        #[serde(default)]
        times: u32,
    }

    struct Echo;

    #[async_trait]
    impl Executor for Echo {
        async fn process(
            &self,
            _: &mut DocumentArray,
            _: &RequestContext<'_>,
        ) -> Result<(), Error> {
            Ok(())
        }
    }

    fn spec(with: &[(&str, serde_json::Value, u64)]) -> ExecutorSpec {
        let with: WithValues = with
            .iter()
            .map(|(k, v, line)| {
                let o = Origin {
                    file: "flow.yml".into(),
                    line: *line,
                    column: 7,
                };
                (k.to_string(), (v.clone(), o))
            })
            .collect();
        ExecutorSpec {
            name: "echo0".into(),
            jtype: "Echo".into(),
            jtype_origin: Origin {
                file: "flow.yml".into(),
                line: 2,
                column: 9,
            },
            with,
            origin: Origin::file("flow.yml"),
            py_modules: vec![],
            file: None,
            deployment: Default::default(),
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("Echo", |c: EchoConfig, _name: &str| {
            if c.times > 10 {
                Err(format!("with.times: {} is more than 10", c.times))
            } else {
                Ok(Echo)
            }
        });
        r
    }

    #[test]
    fn unknown_with_key_points_at_its_line() {
        let err = registry()
            .build(&spec(&[("timez", serde_json::json!(3), 5)]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("flow.yml:5:7:"), "{err}");
        assert!(err.contains("timez"), "{err}");
    }

    #[test]
    fn wrong_type_and_invalid_value_are_errors() {
        let err = registry()
            .build(&spec(&[("times", serde_json::json!("x"), 6)]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("flow.yml:6:7:") && err.contains("with.times"),
            "{err}"
        );
        let err = registry()
            .build(&spec(&[("times", serde_json::json!(11), 6)]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("more than 10"), "{err}");
        assert!(
            registry()
                .build(&spec(&[("times", serde_json::json!(2), 6)]))
                .is_ok()
        );
    }

    #[test]
    fn unknown_jtype_lists_the_registered_ones() {
        let mut s = spec(&[]);
        s.jtype = "Nope".into();
        let err = registry().build(&s).err().unwrap().to_string();
        assert!(
            err.contains("unknown jtype `Nope`") && err.contains("Echo"),
            "{err}"
        );
    }
}
