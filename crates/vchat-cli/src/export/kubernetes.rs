//! Kubernetes manifests of a [`Plan`]: one object per file, and a
//! kustomization.yaml listing them.

use serde_json::{Value, json};

use super::{
    CONFIG_DIR, EXECUTOR_PORT, EXECUTOR_PRE_STOP_S, EXECUTOR_SECRET_ENV, GATEWAY_SHUTDOWN_GRACE_S,
    OutFile, PRE_STOP_S, Plan, TLS_DIR, labels, yaml,
};

/// CPU a gateway or executor pod asks for, in millicores: one core holds 15
/// users at 30 fps of 200x300 raw frames in one room (63% of a core; the
/// gateway and the chat in one process, BENCHMARKS.md), so half a core is a
/// room of about ten. No CPU limit: a throttled pod misses frames.
pub const CPU_REQUEST_MILLIS: u32 = 500;
/// Memory a pod asks for, in MiB: 10 users at 30 fps for ten minutes peaked at
/// 84 MB (BENCHMARKS.md, soak), with room to spare.
pub const MEMORY_REQUEST_MB: usize = 128;

pub(crate) fn render(
    plan: &Plan,
    image: &str,
    namespace: Option<&str>,
    gateway_replicas: u32,
) -> anyhow::Result<Vec<OutFile>> {
    let mut objects: Vec<(String, Value, bool)> = Vec::new();
    let meta = |name: &str, component: &str| {
        let mut m = json!({ "name": name, "labels": labels(&plan.app, component) });
        if let Some(ns) = namespace {
            m["namespace"] = json!(ns);
        }
        m
    };
    if let Some(ns) = namespace {
        objects.push((
            "namespace.yaml".into(),
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
            false,
        ));
    }

    // The executors' shared secret and the Flow's own secrets, each in a
    // Secret that the containers read as environment variables.
    let executor_secret = executor_secret_name(&plan.app);
    let executor_secret_env = json!({
        "name": EXECUTOR_SECRET_ENV,
        "valueFrom": { "secretKeyRef": { "name": executor_secret, "key": EXECUTOR_SECRET_ENV } },
    });
    if let Some(value) = &plan.executor_secret {
        objects.push((
            executor_secret_file(&plan.app),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(&executor_secret, "executor"),
                "type": "Opaque",
                "stringData": { EXECUTOR_SECRET_ENV: value },
            }),
            true,
        ));
    }
    let auth_secret = format!("{}-auth", plan.app);
    if !plan.gateway_secrets.is_empty() {
        objects.push((
            format!("{auth_secret}-secret.yaml"),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(&auth_secret, "gateway"),
                "type": "Opaque",
                "stringData": plan.gateway_secrets,
            }),
            true,
        ));
    }

    for s in &plan.services {
        let config = format!("{}-config", s.dns);
        objects.push((
            format!("{}-configmap.yaml", s.dns),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(&config, &s.dns),
                "data": { "executor.yml": s.yaml },
            }),
            false,
        ));
        objects.push((
            format!("{}-service.yaml", s.dns),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta(&s.dns, &s.dns),
                "spec": {
                    // Headless: a DNS name per pod, `<name>-<i>.<name>`, which the
                    // gateways' Flow lists; no load balancing by Kubernetes.
                    "clusterIP": "None",
                    "selector": labels(&plan.app, &s.dns),
                    "ports": [{ "name": "grpc", "port": EXECUTOR_PORT, "targetPort": "grpc" }],
                },
            }),
            false,
        ));
        let container = json!({
            "name": "executor",
            "image": image,
            "command": ["vchat"],
            "args": s.args,
            "workingDir": CONFIG_DIR,
            "env": [{ "name": "RUST_LOG", "value": "info" }, executor_secret_env.clone()],
            "ports": [{ "name": "grpc", "containerPort": EXECUTOR_PORT }],
            "readinessProbe": grpc_probe(EXECUTOR_PORT, 5, 2),
            "livenessProbe": grpc_probe(EXECUTOR_PORT, 10, 3),
            "resources": resources(super::EXECUTOR_MEMORY_MB),
            // A terminating pod leaves its Service's DNS at once, but keeps
            // answering until the gateways have moved its rooms away.
            "lifecycle": { "preStop": { "sleep": { "seconds": EXECUTOR_PRE_STOP_S } } },
            "volumeMounts": [{ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true }],
        });
        objects.push((
            format!("{}-statefulset.yaml", s.dns),
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": meta(&s.dns, &s.dns),
                "spec": {
                    "serviceName": s.dns,
                    "replicas": s.replicas,
                    // Replicas are independent: start and replace them all at once.
                    "podManagementPolicy": "Parallel",
                    "selector": { "matchLabels": labels(&plan.app, &s.dns) },
                    "template": {
                        "metadata": { "labels": labels(&plan.app, &s.dns) },
                        "spec": {
                            "terminationGracePeriodSeconds": EXECUTOR_PRE_STOP_S + GATEWAY_SHUTDOWN_GRACE_S + 5,
                            "containers": [container],
                            "volumes": [{ "name": "config", "configMap": { "name": config } }],
                        },
                    },
                },
            }),
            false,
        ));
        objects.push((
            format!("{}-pdb.yaml", s.dns),
            json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta(&s.dns, &s.dns),
                "spec": {
                    // A drained replica's rooms restart on another: one at a time.
                    "maxUnavailable": 1,
                    "selector": { "matchLabels": labels(&plan.app, &s.dns) },
                },
            }),
            false,
        ));
    }

    let gw = "gateway".to_string();
    let gw_config = format!("{gw}-config");
    let gw_tls = format!("{gw}-tls");
    objects.push((
        "gateway-configmap.yaml".into(),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(&gw_config, "gateway"),
            "data": { "flow.yml": plan.gateway_flow },
        }),
        false,
    ));
    if let Some((cert, key)) = &plan.tls {
        objects.push((
            "gateway-tls-secret.yaml".into(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(&gw_tls, "gateway"),
                "type": "kubernetes.io/tls",
                "stringData": {
                    "tls.crt": String::from_utf8_lossy(cert),
                    "tls.key": String::from_utf8_lossy(key),
                },
            }),
            true,
        ));
    }
    let mut ports = vec![json!({ "name": "grpc", "containerPort": plan.grpc_port })];
    let mut service_ports =
        vec![json!({ "name": "grpc", "port": plan.grpc_port, "targetPort": "grpc" })];
    if let Some(p) = plan.http_port {
        ports.push(json!({ "name": "http", "containerPort": p }));
        service_ports.push(json!({ "name": "http", "port": p, "targetPort": "http" }));
    }
    if let Some(p) = plan.monitoring_port {
        ports.push(json!({ "name": "metrics", "containerPort": p }));
    }
    // Kubernetes' gRPC probe speaks plaintext only: a TLS gateway is probed by
    // its TCP accept.
    let (ready, live) = if plan.tls.is_some() {
        (
            tcp_probe(plan.grpc_port, 5, 2),
            tcp_probe(plan.grpc_port, 10, 3),
        )
    } else {
        (
            grpc_probe(plan.grpc_port, 5, 2),
            grpc_probe(plan.grpc_port, 10, 3),
        )
    };
    let mut mounts = vec![json!({ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true })];
    let mut volumes = vec![json!({ "name": "config", "configMap": { "name": gw_config } })];
    if plan.tls.is_some() {
        mounts.push(json!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }));
        volumes.push(json!({ "name": "tls", "secret": { "secretName": gw_tls } }));
    }
    let mut env = vec![json!({ "name": "RUST_LOG", "value": "info" })];
    if plan.executor_secret.is_some() {
        env.push(executor_secret_env);
    }
    for name in plan.gateway_secrets.keys() {
        env.push(json!({
            "name": name,
            "valueFrom": { "secretKeyRef": { "name": auth_secret, "key": name } },
        }));
    }
    let container = json!({
        "name": "gateway",
        "image": image,
        "command": ["vchat"],
        "args": plan.gateway_args,
        "workingDir": CONFIG_DIR,
        "env": env,
        "ports": ports,
        "readinessProbe": ready,
        "livenessProbe": live,
        "resources": resources(plan.gateway_memory_mb),
        // Endpoints drop a terminating pod asynchronously: keep serving while
        // they do, then SIGTERM makes the gateway refuse new streams and finish
        // its requests in flight.
        "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_S } } },
        "volumeMounts": mounts,
    });
    let mut pod_meta = json!({ "labels": labels(&plan.app, "gateway") });
    if let Some(p) = plan.monitoring_port {
        pod_meta["annotations"] = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": p.to_string(),
            "prometheus.io/path": "/metrics",
        });
    }
    objects.push((
        "gateway-deployment.yaml".into(),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(&gw, "gateway"),
            "spec": {
                "replicas": gateway_replicas,
                "selector": { "matchLabels": labels(&plan.app, "gateway") },
                "template": {
                    "metadata": pod_meta,
                    "spec": {
                        "terminationGracePeriodSeconds": PRE_STOP_S + GATEWAY_SHUTDOWN_GRACE_S + 5,
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
            },
        }),
        false,
    ));
    objects.push((
        "gateway-service.yaml".into(),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&gw, "gateway"),
            "spec": {
                "selector": labels(&plan.app, "gateway"),
                "ports": service_ports,
            },
        }),
        false,
    ));
    objects.push((
        "gateway-pdb.yaml".into(),
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(&gw, "gateway"),
            "spec": {
                "maxUnavailable": 1,
                "selector": { "matchLabels": labels(&plan.app, "gateway") },
            },
        }),
        false,
    ));

    let mut kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": objects.iter().map(|(f, ..)| f.clone()).collect::<Vec<_>>(),
    });
    if let Some(ns) = namespace {
        kustomization["namespace"] = json!(ns);
    }
    let mut files = Vec::new();
    for (path, v, secret) in &objects {
        files.push(OutFile {
            path: path.clone(),
            text: yaml(v)?,
            secret: *secret,
        });
    }
    files.push(OutFile {
        path: "kustomization.yaml".into(),
        text: yaml(&kustomization)?,
        secret: false,
    });
    Ok(files)
}

fn grpc_probe(port: u16, period_s: u32, failures: u32) -> Value {
    json!({ "grpc": { "port": port }, "periodSeconds": period_s, "failureThreshold": failures })
}

fn tcp_probe(port: u16, period_s: u32, failures: u32) -> Value {
    json!({ "tcpSocket": { "port": port }, "periodSeconds": period_s, "failureThreshold": failures })
}

fn resources(memory_limit_mb: usize) -> Value {
    json!({
        "requests": {
            "cpu": format!("{CPU_REQUEST_MILLIS}m"),
            "memory": format!("{MEMORY_REQUEST_MB}Mi"),
        },
        "limits": { "memory": format!("{memory_limit_mb}Mi") },
    })
}

/// The Secret that holds the executor secret.
fn executor_secret_name(app: &str) -> String {
    format!("{app}-executor-secret")
}

/// The file the executor secret's Secret is written to, in the output directory.
pub(crate) fn executor_secret_file(app: &str) -> String {
    format!("{}.yaml", executor_secret_name(app))
}
