//! Reading Flow and executor YAML files: errors name the file, the line and the
//! key.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::executor::{ExecutorEntry, ExecutorFile, OneOrMany};
use super::*;
use crate::{ConfigError, Origin};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    jtype: Spanned<String>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    with: Option<FlowWith>,
    #[serde(default)]
    executors: Vec<Spanned<ExecutorEntry>>,
}

fn origin_of<T>(file: &Path, s: &Spanned<T>) -> Origin {
    Origin {
        file: file.to_path_buf(),
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

fn parse_yaml<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location();
        let origin = Origin {
            file: file.to_path_buf(),
            line: loc.map_or(0, |l| l.line()),
            column: loc.map_or(0, |l| l.column()),
        };
        // serde-saphyr's Display adds its own position and a source excerpt; the
        // origin already says where, so keep only the first line of the message.
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid YAML").to_string();
        ConfigError::new(origin, strip_position(&first))
    })
}

/// Removes serde-saphyr's "error: line X column Y: " prefix (or " at line X, column
/// Y" suffix), which the origin already says.
fn strip_position(msg: &str) -> String {
    let mut m = msg.strip_prefix("error: ").unwrap_or(msg);
    if m.starts_with("line ")
        && let Some(i) = m.find(": ")
    {
        m = &m[i + 2..];
    }
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file)
        .map_err(|e| ConfigError::new(Origin::file(file), format!("cannot read: {e}")))
}

fn with_values(file: &Path, map: Option<SpannedMap>) -> WithValues {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let o = origin_of(file, &v);
            (k, (v.value, o))
        })
        .collect()
}

/// `host:port` of every replica of an external executor: hosts and ports are one
/// value or lists; one list and one value pair every item with the value, two
/// lists pair item by item.
fn external_addresses(
    host: Option<OneOrMany<String>>,
    port: Option<OneOrMany<u16>>,
) -> Result<Vec<String>, String> {
    let (hosts, ports) = match (host, port) {
        (None, None) => return Ok(Vec::new()),
        (Some(h), Some(p)) => (h.into_vec(), p.into_vec()),
        (Some(_), None) => return Err("`host` given without `port`".into()),
        (None, Some(p)) => (vec!["127.0.0.1".to_string()], p.into_vec()),
    };
    let n = hosts.len().max(ports.len());
    if hosts.is_empty()
        || ports.is_empty()
        || (hosts.len() != n && hosts.len() != 1)
        || (ports.len() != n && ports.len() != 1)
    {
        return Err(format!(
            "{} host(s) and {} port(s) do not pair up",
            hosts.len(),
            ports.len()
        ));
    }
    Ok((0..n)
        .map(|i| {
            let h = &hosts[if hosts.len() == 1 { 0 } else { i }];
            let p = ports[if ports.len() == 1 { 0 } else { i }];
            let h = h.strip_prefix("grpc://").unwrap_or(h);
            format!("{h}:{p}")
        })
        .collect())
}

/// Whether `uses` names a YAML file (rather than a registered jtype).
fn is_path(uses: &str) -> bool {
    uses.ends_with(".yml") || uses.ends_with(".yaml") || uses.contains('/')
}

/// Reads an executor YAML (`jtype`, `with`, `metas`, `py_modules`).
pub fn load_executor(file: &Path) -> Result<ExecutorSpec, ConfigError> {
    let text = read(file)?;
    let parsed: ExecutorFile = parse_yaml(file, &text)?;
    let metas = parsed.metas.unwrap_or_default();
    let base = file.parent().unwrap_or(Path::new("."));
    let py_modules = parsed
        .py_modules
        .or(metas.py_modules)
        .map(|m| m.value.iter().map(|p| base.join(p)).collect())
        .unwrap_or_default();
    Ok(ExecutorSpec {
        name: metas
            .name
            .clone()
            .unwrap_or_else(|| parsed.jtype.value.clone()),
        jtype: parsed.jtype.value.clone(),
        jtype_origin: origin_of(file, &parsed.jtype),
        with: with_values(file, parsed.with),
        origin: Origin::file(file),
        py_modules,
        file: Some(file.to_path_buf()),
        deployment: Deployment {
            replicas: 1,
            retries: DEFAULT_RETRIES,
            ..Default::default()
        },
    })
}

/// Reads a Flow YAML and the executor YAMLs it names (paths relative to the Flow
/// file).
pub fn load_flow(file: &Path) -> Result<FlowSpec, ConfigError> {
    let text = read(file)?;
    let parsed: FlowFile = parse_yaml(file, &text)?;
    let _ = parsed.version;
    if parsed.jtype.value != "Flow" {
        return Err(ConfigError::new(
            origin_of(file, &parsed.jtype),
            format!(
                "jtype: expected `Flow`, got `{}` (an executor YAML is served with `vchat executor --uses`)",
                parsed.jtype.value
            ),
        ));
    }
    let mut with = parsed.with.unwrap_or_default();
    if with.ssl_certfile.is_some() != with.ssl_keyfile.is_some() {
        return Err(ConfigError::new(
            Origin::file(file),
            "with.ssl_certfile and with.ssl_keyfile go together: give both, or neither",
        ));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    for p in [&mut with.ssl_certfile, &mut with.ssl_keyfile]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
    if let Some(p) = with
        .protocol
        .iter()
        .find(|p| !PROTOCOLS.iter().any(|known| p.eq_ignore_ascii_case(known)))
    {
        return Err(ConfigError::new(
            Origin::file(file),
            format!("with.protocol: `{p}` is not served; use `grpc` and/or `websocket`"),
        ));
    }
    if let Some(f) = with.websocket_max_fps
        && !(f > 0.0 && f.is_finite())
    {
        return Err(ConfigError::new(
            Origin::file(file),
            format!("with.websocket_max_fps must be a positive number, got {f}"),
        ));
    }
    // A stream's frames are at least 1/max_fps seconds apart (0 or less: no
    // limit). A rate so small that this gap is no Duration (1e-300) is refused
    // here, not found when a stream opens.
    if let Some(f) = with.max_fps
        && f > 0.0
        && std::time::Duration::try_from_secs_f64(1.0 / f).is_err()
    {
        return Err(ConfigError::new(
            Origin::file(file),
            format!("with.max_fps: {f} frames per second is too small to be a rate"),
        ));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut executors: Vec<ExecutorSpec> = Vec::new();
    for (i, entry) in parsed.executors.into_iter().enumerate() {
        let entry_origin = origin_of(file, &entry);
        let entry = entry.value;
        let name = entry
            .name
            .clone()
            .or(entry.uses_metas.as_ref().and_then(|m| m.name.clone()))
            .unwrap_or_else(|| format!("executor{i}"));
        let at = |msg: String| {
            ConfigError::new(entry_origin.clone(), format!("executor `{name}`: {msg}"))
        };
        let mut spec = match &entry.uses {
            Some(uses) if is_path(&uses.value) => {
                let path = base.join(&uses.value);
                if !path.is_file() {
                    return Err(ConfigError::new(
                        origin_of(file, uses),
                        format!(
                            "uses: executor file `{}` not found (paths are relative to the Flow file)",
                            path.display()
                        ),
                    ));
                }
                load_executor(&path)?
            }
            Some(uses) => ExecutorSpec {
                name: uses.value.clone(),
                jtype: uses.value.clone(),
                jtype_origin: origin_of(file, uses),
                with: WithValues::new(),
                origin: origin_of(file, uses),
                py_modules: Vec::new(),
                file: None,
                deployment: Deployment::default(),
            },
            None => ExecutorSpec {
                name: name.clone(),
                jtype: String::new(),
                jtype_origin: entry_origin.clone(),
                with: WithValues::new(),
                origin: entry_origin.clone(),
                py_modules: Vec::new(),
                file: None,
                deployment: Deployment::default(),
            },
        };
        spec.name = name.clone();
        spec.origin = entry_origin.clone();
        spec.with.extend(with_values(file, entry.uses_with));
        let external = external_addresses(entry.host, entry.port).map_err(at)?;
        if entry.external == Some(true) && external.is_empty() {
            return Err(at("external: true needs `host` and `port`".into()));
        }
        if external.is_empty() && entry.uses.is_none() {
            return Err(at("needs `uses` (an executor YAML or jtype), or `host` and `port` of an external executor".into()));
        }
        let dns_replicas = entry.dns_replicas.unwrap_or(false);
        if dns_replicas && external.len() != 1 {
            return Err(at(format!(
                "dns_replicas: true needs one `host` and one `port` (a name whose addresses are the replicas), got {} address(es)",
                external.len()
            )));
        }
        if dns_replicas && entry.replicas.is_some() {
            return Err(at(
                "dns_replicas: true finds the replicas in DNS; leave `replicas` out".into(),
            ));
        }
        let resolve_interval = match entry.resolve_interval_s {
            None => None,
            Some(s)
                if s.is_finite()
                    && (RESOLVE_INTERVAL_RANGE_S.0..=RESOLVE_INTERVAL_RANGE_S.1).contains(&s) =>
            {
                Some(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => {
                return Err(at(format!(
                    "resolve_interval_s must be between {} and {} seconds, got {s}",
                    RESOLVE_INTERVAL_RANGE_S.0, RESOLVE_INTERVAL_RANGE_S.1
                )));
            }
        };
        if resolve_interval.is_some() && external.is_empty() {
            return Err(at(
                "resolve_interval_s applies to an external executor (`host` and `port`)".into(),
            ));
        }
        if !external.is_empty() && entry.replicas.is_some_and(|r| r != external.len()) {
            return Err(at(format!(
                "replicas: {} but {} external address(es) given; list one host/port per replica",
                entry.replicas.unwrap_or(0),
                external.len()
            )));
        }
        if external.is_empty() && (entry.tls.is_some() || entry.executor_secret.is_some()) {
            return Err(at(
                "`tls` and `executor_secret` are settings of an external executor (`host` and `port`)"
                    .into(),
            ));
        }
        let retries = match entry.retries {
            None => DEFAULT_RETRIES,
            Some(r) if r < 0 => DEFAULT_RETRIES,
            Some(r) => u32::try_from(r)
                .map_err(|_| at(format!("retries: {r} is more than {}", u32::MAX)))?,
        };
        spec.deployment = Deployment {
            replicas: if external.is_empty() {
                entry.replicas.unwrap_or(1)
            } else {
                external.len()
            },
            external,
            needs: entry.needs.map(OneOrMany::into_vec).unwrap_or_default(),
            route_by: entry.route_by,
            timeout_send: entry.timeout_send.map(std::time::Duration::from_millis),
            retries,
            skip_frames: entry.skip_frames.unwrap_or(false),
            max_response_bytes: entry.max_response_bytes,
            keepalive_interval: entry
                .keepalive_interval_s
                .map(std::time::Duration::from_secs),
            keepalive_timeout: entry
                .keepalive_timeout_s
                .map(std::time::Duration::from_secs),
            tls: entry.tls.unwrap_or(false),
            secret: entry.executor_secret,
            resolve_interval,
            dns_replicas,
            stop_grace: match entry.stop_grace_s {
                None => None,
                Some(g) if g.is_finite() && (0.0..=3600.0).contains(&g) => {
                    Some(std::time::Duration::from_secs_f64(g))
                }
                Some(g) => {
                    return Err(at(format!(
                        "stop_grace_s must be between 0 and 3600 seconds, got {g}"
                    )));
                }
            },
        };
        if spec.deployment.replicas == 0 {
            return Err(at("replicas must be at least 1".into()));
        }
        if executors.iter().any(|e| e.name == spec.name) || spec.name == "gateway" {
            return Err(ConfigError::new(
                entry_origin,
                format!(
                    "executors[{i}]: name `{}` is used twice (or is `gateway`)",
                    spec.name
                ),
            ));
        }
        executors.push(spec);
    }
    for e in &executors {
        for need in &e.deployment.needs {
            if need != "gateway" && !executors.iter().any(|o| &o.name == need) {
                return Err(ConfigError::new(
                    e.origin.clone(),
                    format!(
                        "executor `{}`: needs `{need}`, which is not an executor of this Flow",
                        e.name
                    ),
                ));
            }
        }
    }
    Ok(FlowSpec {
        file: file.to_path_buf(),
        with,
        executors,
    })
}
