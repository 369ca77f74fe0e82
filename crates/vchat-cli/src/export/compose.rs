//! One docker-compose.yml of a [`Plan`], and the configuration it mounts.
//!
//! Compose has no StatefulSet: each executor replica is a service of its own,
//! reachable under the same name a pod would have (`<executor>-<i>.<executor>`,
//! a network alias), so the gateway's Flow is the very one of the Kubernetes
//! export.

use serde_json::{Map, json};

use std::collections::BTreeMap;

use super::{
    CONFIG_DIR, EXECUTOR_SECRET_ENV, GATEWAY_SHUTDOWN_GRACE_S, OutFile, PRE_STOP_S, Plan, TLS_DIR,
    secrets, yaml,
};

/// Host ports of gateway `i` are its container ports plus `i` times this.
pub const HOST_PORT_STEP: u16 = 100;

const NETWORK: &str = "vchat";

/// The env file of the executor services: their shared secret.
pub(crate) const EXECUTOR_ENV_FILE: &str = "secrets/executor.env";
/// The env file of the gateways: the executors' secret and the Flow's own.
const GATEWAY_ENV_FILE: &str = "secrets/gateway.env";

pub(crate) fn render(plan: &Plan, image: &str, gateways: u32) -> anyhow::Result<Vec<OutFile>> {
    let mut files = Vec::new();
    let mut services = Map::new();
    let mut executors = Vec::new();
    // Secrets travel in env files (mode 0600) that the services name, so that
    // docker-compose.yml and the mounted Flow hold none.
    let mut gateway_env = plan.gateway_secrets.clone();
    if let Some(value) = &plan.executor_secret {
        let env = BTreeMap::from([(EXECUTOR_SECRET_ENV.to_string(), value.clone())]);
        files.push(OutFile {
            path: EXECUTOR_ENV_FILE.into(),
            text: secrets::env_file(&env)?,
            secret: true,
        });
        gateway_env.extend(env);
    }
    if !gateway_env.is_empty() {
        files.push(OutFile {
            path: GATEWAY_ENV_FILE.into(),
            text: secrets::env_file(&gateway_env)?,
            secret: true,
        });
    }
    for s in &plan.services {
        let config = format!("{}/executor.yml", s.dns);
        files.push(OutFile {
            path: config.clone(),
            text: s.yaml.clone(),
            secret: false,
        });
        for i in 0..s.replicas {
            let name = format!("{}-{i}", s.dns);
            services.insert(
                name.clone(),
                json!({
                    "image": image,
                    "entrypoint": ["vchat"],
                    "command": s.args,
                    "working_dir": CONFIG_DIR,
                    "environment": { "RUST_LOG": "info" },
                    "env_file": [format!("./{EXECUTOR_ENV_FILE}")],
                    "hostname": name,
                    "networks": { NETWORK: { "aliases": [format!("{name}.{}", s.dns)] } },
                    "volumes": [format!("./{config}:{CONFIG_DIR}/executor.yml:ro")],
                    "stop_grace_period": format!("{}s", GATEWAY_SHUTDOWN_GRACE_S + 5),
                    "restart": "unless-stopped",
                }),
            );
            executors.push(name);
        }
    }
    files.push(OutFile {
        path: "gateway/flow.yml".into(),
        text: plan.gateway_flow.clone(),
        secret: false,
    });
    let mut volumes = vec![json!(format!(
        "./gateway/flow.yml:{CONFIG_DIR}/flow.yml:ro"
    ))];
    if let Some((cert, key)) = &plan.tls {
        for (file, bytes) in [("tls.crt", cert), ("tls.key", key)] {
            files.push(OutFile {
                path: format!("gateway/tls/{file}"),
                text: String::from_utf8_lossy(bytes).into_owned(),
                secret: true,
            });
        }
        volumes.push(json!(format!("./gateway/tls:{TLS_DIR}:ro")));
    }
    let container_ports: Vec<u16> = [Some(plan.grpc_port), plan.http_port, plan.monitoring_port]
        .into_iter()
        .flatten()
        .collect();
    for g in 0..gateways {
        let offset = u16::try_from(g)
            .ok()
            .and_then(|g| g.checked_mul(HOST_PORT_STEP))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--gateway-replicas {gateways} is too many for compose's host ports"
                )
            })?;
        let ports = container_ports
            .iter()
            .map(|p| {
                p.checked_add(offset)
                    .map(|h| json!({ "target": p, "published": h.to_string(), "protocol": "tcp" }))
                    .ok_or_else(|| {
                        anyhow::anyhow!("gateway {g}: host port {p} + {offset} is over 65535")
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut service = json!({
            "image": image,
            "entrypoint": ["vchat"],
            "command": plan.gateway_args,
            "working_dir": CONFIG_DIR,
            "environment": { "RUST_LOG": "info" },
            "networks": [NETWORK],
            "ports": ports,
            "volumes": volumes,
            "depends_on": executors,
            "stop_grace_period": format!("{}s", PRE_STOP_S + GATEWAY_SHUTDOWN_GRACE_S + 5),
            "restart": "unless-stopped",
        });
        if !gateway_env.is_empty() {
            service["env_file"] = json!([format!("./{GATEWAY_ENV_FILE}")]);
        }
        if plan.tls.is_none() {
            service["healthcheck"] = json!({
                "test": ["CMD", "vchat", "ping", format!("grpc://127.0.0.1:{}", plan.grpc_port)],
                "interval": "10s",
                "timeout": "5s",
                "retries": 3,
            });
        }
        services.insert(format!("gateway-{g}"), service);
    }
    let compose = json!({
        "name": plan.app,
        "services": services,
        "networks": { NETWORK: {} },
    });
    files.push(OutFile {
        path: "docker-compose.yml".into(),
        text: yaml(&compose)?,
        secret: false,
    });
    Ok(files)
}
