//! The access control of a gateway: the keys of `with.auth` or of
//! `--auth-keys-file`, each secret read from the environment when written as
//! `${VAR}` and at least 32 bytes long, into one token verifier.

use std::collections::BTreeMap;
use std::path::Path;

use vchat_auth::{MIN_SECRET_BYTES, Verifier, expand_env};
use vchat_core::config::AuthConfig;

/// The verifier of the Flow's tokens; `None`: no keys anywhere, the gateway is
/// open. Keys of the file add to (and override) those of the YAML.
pub fn verifier(
    with: Option<&AuthConfig>,
    keys_file: Option<&Path>,
) -> Result<Option<Verifier>, String> {
    let mut keys: BTreeMap<String, String> = with.map(|a| a.keys.clone()).unwrap_or_default();
    if with.is_some_and(|a| a.keys.is_empty()) && keys_file.is_none() {
        return Err("with.auth names no key: list at least one under with.auth.keys".into());
    }
    if let Some(path) = keys_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the keys file {}: {e}", path.display()))?;
        keys.extend(parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    if keys.is_empty() && with.is_none() && keys_file.is_none() {
        return Ok(None);
    }
    let mut secrets = Vec::with_capacity(keys.len());
    for (id, value) in keys {
        let secret = expand_env(&value).map_err(|e| format!("auth key {id:?}: {e}"))?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "auth key {id:?}: the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed \
                 (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        secrets.push((id, secret));
    }
    Verifier::new(secrets).map(Some).map_err(|e| e.to_string())
}

/// `KEY_ID: SECRET` lines (`#` comments and blank lines skipped), as LiveKit's
/// key files.
fn parse_keys(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut keys = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: expected `KEY_ID: SECRET`", n + 1);
        let (id, secret) = line.split_once(':').ok_or_else(bad)?;
        let (id, secret) = (id.trim(), secret.trim().trim_matches('"'));
        if id.is_empty() || secret.is_empty() {
            return Err(bad());
        }
        keys.insert(id.to_string(), secret.to_string());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_files_and_short_secrets() {
        let keys =
            parse_keys("# keys\nmain: 0123456789abcdef0123456789abcdef\n\nold: \"x\"\n").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys["old"], "x");
        assert!(parse_keys("no colon here").is_err());
        let short = AuthConfig {
            keys: [("k".to_string(), "short".to_string())].into(),
        };
        let e = verifier(Some(&short), None).unwrap_err();
        assert!(e.contains("at least 32"), "{e}");
        assert!(verifier(None, None).unwrap().is_none());
    }
}
