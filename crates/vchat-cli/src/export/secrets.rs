//! The secrets of an exported Flow, kept out of its ConfigMaps and compose
//! files: the access-token keys and external executors' secrets of the Flow
//! (read now, written into a Secret, and named in the gateways' Flow as
//! `${ENV}` that the containers get from it), and the one shared secret the
//! exported executors require of the gateways.

use std::collections::BTreeMap;

use anyhow::bail;

/// The environment variable holding the exported executors' shared secret, in
/// the executor containers (`--secret-env`) and in the gateways (their Flow's
/// `executor_secret`).
pub const EXECUTOR_SECRET_ENV: &str = "VCHAT_EXECUTOR_SECRET";

/// Random bytes of a generated executor secret (written as hex).
const EXECUTOR_SECRET_BYTES: usize = 32;

/// Variables the containers set themselves, which a secret may not take.
const RESERVED: [&str; 2] = ["RUST_LOG", EXECUTOR_SECRET_ENV];

/// Secret values of the source Flow, by the environment variable that carries
/// each into the gateway containers.
#[derive(Default)]
pub(crate) struct GatewaySecrets {
    pub env: BTreeMap<String, String>,
}

impl GatewaySecrets {
    /// Takes `value` as the Flow writes it (a literal, or `${VAR}` read from
    /// this process's environment) and returns the variable that carries it
    /// into the gateways, which the exported Flow names as `${ENV}`. `what` names the setting in errors; `literal_env` is
    /// the variable a literal travels in.
    pub(crate) fn take(
        &mut self,
        value: &str,
        what: &str,
        literal_env: &str,
    ) -> anyhow::Result<String> {
        let (preferred, secret) = match env_reference(value) {
            Some(var) => {
                let secret = std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "{what}: environment variable {var} is not set (named as ${{{var}}}); \
                         the export reads it to write its value into a Secret: set it in the \
                         environment of `vchat export` (e.g. `{var}=... vchat export ...`)"
                    )
                })?;
                (var.to_string(), secret)
            }
            None => (literal_env.to_string(), value.to_string()),
        };
        if secret.is_empty() {
            bail!("{what}: the secret is empty");
        }
        let env = self.name_for(&preferred, &secret);
        self.env.insert(env.clone(), secret);
        Ok(env)
    }

    /// `preferred` if it is a plain variable name that is free (or carries the
    /// same value), else one derived from it.
    fn name_for(&self, preferred: &str, secret: &str) -> String {
        let base = env_name(preferred);
        let mut name = base.clone();
        let mut n = 2;
        loop {
            let free = !RESERVED.contains(&name.as_str())
                && self.env.get(&name).is_none_or(|v| v == secret);
            if free {
                return name;
            }
            name = format!("{base}_{n}");
            n += 1;
        }
    }
}

/// `VAR` of a value written `${VAR}`, as the gateway reads it at start-up.
fn env_reference(value: &str) -> Option<&str> {
    value
        .trim()
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
}

/// `s` as an environment variable name that is also a valid key of a Secret:
/// uppercase letters, digits and `_`, not starting with a digit.
pub(crate) fn env_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

/// A new executor secret: random bytes from the operating system as hex.
pub(crate) fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; EXECUTOR_SECRET_BYTES];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for the executor secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The value of `name` in a file an earlier export wrote: a Kubernetes Secret
/// (`stringData`) or a compose env file (`NAME='value'`).
pub(crate) fn find_secret(text: &str, name: &str) -> Option<String> {
    let valid = |v: &str| v.len() >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
    let from_env = text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(name)?.strip_prefix('=')?;
        Some(v.trim_matches('\'').to_string())
    });
    let from_yaml = || {
        let doc: serde_json::Value = serde_saphyr::from_str(text).ok()?;
        doc.get("stringData")?
            .get(name)?
            .as_str()
            .map(str::to_string)
    };
    from_env.or_else(from_yaml).filter(|v| valid(v))
}

/// `NAME='value'` lines of a compose env file. Single quotes keep the value
/// literal (no `$` interpolation, no `#` comment); a value that holds a single
/// quote or a line break cannot be written so and is refused.
pub(crate) fn env_file(env: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut text = String::new();
    for (name, value) in env {
        if value.contains(['\'', '\n', '\r']) {
            bail!(
                "the secret in {name} holds a single quote or a line break, which a compose env \
                 file cannot carry literally; choose another secret"
            );
        }
        text.push_str(&format!("{name}='{value}'\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_files() {
        let mut s = GatewaySecrets::default();
        let lit = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            s.take(lit, "k", "VCHAT_AUTH_KEY_MAIN").unwrap(),
            "VCHAT_AUTH_KEY_MAIN"
        );
        // Another value wanting the same name gets another name.
        assert_eq!(
            s.take("other-secret", "k", "VCHAT_AUTH_KEY_MAIN").unwrap(),
            "VCHAT_AUTH_KEY_MAIN_2"
        );
        // The same value shares it; reserved names are not taken.
        assert_eq!(
            s.take(lit, "k", "VCHAT_AUTH_KEY_MAIN").unwrap(),
            "VCHAT_AUTH_KEY_MAIN"
        );
        assert_eq!(
            s.take("x", "k", EXECUTOR_SECRET_ENV).unwrap(),
            "VCHAT_EXECUTOR_SECRET_2"
        );
        let e = s
            .take(
                "${VCHAT_EXPORT_TEST_SURELY_UNSET}",
                "auth key \"main\"",
                "X",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("VCHAT_EXPORT_TEST_SURELY_UNSET is not set") && e.contains("vchat export"),
            "{e}"
        );
        assert_eq!(env_name("9-lives.key"), "_9_LIVES_KEY");
        let g = generate().unwrap();
        let env = format!("X=1\nVCHAT_EXECUTOR_SECRET='{g}'\n");
        assert_eq!(
            find_secret(&env, "VCHAT_EXECUTOR_SECRET").as_deref(),
            Some(g.as_str())
        );
        let yaml =
            format!("apiVersion: v1\nkind: Secret\nstringData:\n  VCHAT_EXECUTOR_SECRET: {g}\n");
        assert_eq!(
            find_secret(&yaml, "VCHAT_EXECUTOR_SECRET").as_deref(),
            Some(g.as_str())
        );
        assert_eq!(
            find_secret("VCHAT_EXECUTOR_SECRET='short'", "VCHAT_EXECUTOR_SECRET"),
            None
        );
        assert_eq!(g.len(), 64);
        assert_ne!(g, generate().unwrap());
        assert_eq!(
            env_file(&s.env).unwrap().lines().next().unwrap(),
            format!("VCHAT_AUTH_KEY_MAIN='{lit}'")
        );
        assert!(env_file(&BTreeMap::from([("A".into(), "it's".into())])).is_err());
    }
}
