//! `vchat export kubernetes|docker-compose`: every exported object read strictly
//! with the Kubernetes API's own types (a field they do not know is an error),
//! and checked for consistency: selectors and labels, probe and Service ports
//! against the containers, every ConfigMap and Secret referenced exists (and
//! every key of a Secret an env var names), no ConfigMap or compose file holds
//! a secret, the files of secrets are their owner's only, the gateways' Flow
//! names every executor replica by the name its pod has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodTemplateSpec, Probe, Secret, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vchat_core::config::{load_executor, load_flow};
use vchat_e2e::*;

/// `v` read as a `T`, and an error naming the first field of `v` that `T` does
/// not hold: k8s-openapi skips unknown fields, so what comes back out of `T`
/// must be exactly what went in.
fn strict<T: DeserializeOwned + serde::Serialize>(v: &Value) -> Result<T, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&t).map_err(|e| e.to_string())?;
    match difference(v, &back, "") {
        None => Ok(t),
        Some(path) => Err(format!(
            "`{path}` is not a field of {}",
            std::any::type_name::<T>()
        )),
    }
}

/// The path of the first value of `a` that `b` lacks or holds differently.
fn difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| match y.get(k) {
            Some(w) => difference(v, w, &format!("{at}.{k}")),
            None => Some(format!("{at}.{k}")),
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| difference(v, w, &format!("{at}[{i}]"))),
        _ if a == b => None,
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ => Some(at.to_string()),
    }
}

fn read_yaml(p: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The secrets of [`rich_flow`]: an access-token key written in the YAML, one
/// and an external executor's secret read from the exporting environment.
const LITERAL_KEY: &str = "literal-key-0123456789abcdef0123456789";
const ENV_KEY: (&str, &str) = ("EXPORT_TEST_KEY", "env-key-0123456789abcdef0123456789abc");
const ENV_LINK: (&str, &str) = ("EXPORT_TEST_LINK", "env-link-secret-of-the-outside-one");
const SOURCE_SECRETS: [&str; 3] = [LITERAL_KEY, ENV_KEY.1, ENV_LINK.1];

/// Runs `vchat export ...` with [`rich_flow`]'s variables set, asserting success.
fn export(args: &[&str]) -> String {
    let out = Command::new(bin("vchat"))
        .arg("export")
        .args(args)
        .envs([ENV_KEY, ENV_LINK])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vchat export {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Flow with everything the export has to carry: two in-process executors
/// (the chat with three replicas, a stateless one), an external one (over TLS,
/// with a secret), `needs`, TLS, monitoring, the browser door and access-token
/// keys.
fn rich_flow(dir: &Path) -> PathBuf {
    let (_, cert, key) = test_certificates(dir);
    std::fs::rename(&cert, dir.join("cert.pem")).unwrap();
    std::fs::rename(&key, dir.join("key.pem")).unwrap();
    let chat = repo_root().join("executor/config.yml");
    write_file(
        dir,
        "flow.yml",
        &format!(
            "jtype: Flow\n\
             with:\n  port: 9443\n  protocol: [grpc, websocket]\n  monitoring: true\n  \
             ssl_certfile: cert.pem\n  ssl_keyfile: key.pem\n  max_streams: 77\n  max_message_bytes: 9000000\n  \
             auth:\n    keys:\n      main: {LITERAL_KEY}\n      next: ${{{}}}\n\
             executors:\n\
             \x20 - name: flipper\n    uses: Flip\n\
             \x20 - name: frame_Aggregator\n    uses: {}\n    replicas: 3\n    needs: [flipper]\n    uses_with:\n      max_users: 7\n\
             \x20 - name: outside\n    host: [10.1.2.3, 10.1.2.4]\n    port: 61000\n    external: true\n    route_by: room\n    timeout_send: 1500\n    \
             tls: true\n    executor_secret: ${{{}}}\n",
            ENV_KEY.0,
            chat.display(),
            ENV_LINK.0,
        ),
    )
}

/// Every object of a Kubernetes export, by kind and name.
#[derive(Default)]
struct Objects {
    files: BTreeSet<String>,
    deployments: BTreeMap<String, Deployment>,
    statefulsets: BTreeMap<String, StatefulSet>,
    services: BTreeMap<String, Service>,
    configmaps: BTreeMap<String, ConfigMap>,
    secrets: BTreeMap<String, Secret>,
    pdbs: BTreeMap<String, PodDisruptionBudget>,
    namespaces: BTreeSet<String>,
    kustomization: Value,
    /// The files of Secrets.
    secret_files: BTreeSet<String>,
}

fn read_export(out: &Path) -> Objects {
    let mut o = Objects::default();
    for entry in std::fs::read_dir(out).unwrap() {
        let p = entry.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        let v = read_yaml(&p);
        if file == "kustomization.yaml" {
            o.kustomization = v;
            continue;
        }
        o.files.insert(file.clone());
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let at = |e: String| format!("{file} ({kind} {name}): {e}");
        match kind.as_str() {
            "Deployment" => {
                o.deployments
                    .insert(name.clone(), strict(&v).map_err(at).unwrap());
            }
            "StatefulSet" => {
                o.statefulsets
                    .insert(name.clone(), strict(&v).map_err(at).unwrap());
            }
            "Service" => {
                o.services
                    .insert(name.clone(), strict(&v).map_err(at).unwrap());
            }
            "ConfigMap" => {
                o.configmaps
                    .insert(name.clone(), strict(&v).map_err(at).unwrap());
            }
            "Secret" => {
                o.secrets
                    .insert(name.clone(), strict(&v).map_err(at).unwrap());
                o.secret_files.insert(file.clone());
            }
            "PodDisruptionBudget" => {
                o.pdbs.insert(name.clone(), strict(&v).map_err(at).unwrap());
            }
            "Namespace" => {
                strict::<Namespace>(&v).map_err(at).unwrap();
                o.namespaces.insert(name);
            }
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    o
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata.as_ref().unwrap().labels.clone().unwrap()
}

fn probe_port(p: &Probe) -> IntOrString {
    if let Some(g) = &p.grpc {
        IntOrString::Int(g.port)
    } else if let Some(t) = &p.tcp_socket {
        t.port.clone()
    } else {
        panic!("a probe that is neither gRPC nor TCP: {p:?}")
    }
}

fn has_port(c: &Container, port: &IntOrString) -> bool {
    c.ports.iter().flatten().any(|p| match port {
        IntOrString::Int(n) => p.container_port == *n,
        IntOrString::String(s) => p.name.as_deref() == Some(s),
    })
}

/// Checks every workload's pod against the rest of the export; returns the
/// pod templates by workload name.
fn check_workloads(o: &Objects, namespace: Option<&str>) -> BTreeMap<String, PodTemplateSpec> {
    let mut pods = BTreeMap::new();
    for (name, d) in &o.deployments {
        let spec = &d.spec;
        pods.insert(name.clone(), spec.template.clone());
        let sel = spec.selector.match_labels.clone().unwrap();
        assert!(
            labels_match(&sel, &pod_labels(&spec.template)),
            "Deployment {name}: selector does not match its pods"
        );
    }
    for (name, s) in &o.statefulsets {
        let spec = &s.spec;
        pods.insert(name.clone(), spec.template.clone());
        let sel = spec.selector.match_labels.clone().unwrap();
        assert!(
            labels_match(&sel, &pod_labels(&spec.template)),
            "StatefulSet {name}: selector does not match its pods"
        );
        let svc = o
            .services
            .get(&spec.service_name.clone().unwrap())
            .unwrap_or_else(|| panic!("StatefulSet {name}: no Service {:?}", spec.service_name));
        assert_eq!(
            svc.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None"),
            "StatefulSet {name}: its Service is headless"
        );
    }
    for (name, t) in &pods {
        let spec = t.spec.as_ref().unwrap();
        assert!(
            spec.termination_grace_period_seconds.unwrap() >= 10,
            "{name}: streams get time to drain"
        );
        let c = &spec.containers[0];
        // A stopping pod keeps serving while it leaves the Service (preStop),
        // then finishes what is in flight: the grace covers both.
        let pre_stop = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.sleep.as_ref())
            .unwrap_or_else(|| panic!("{name}: a preStop pause"))
            .seconds;
        assert!(
            spec.termination_grace_period_seconds.unwrap() >= pre_stop + 10,
            "{name}: the grace covers the preStop pause and the shutdown"
        );
        for probe in [&c.readiness_probe, &c.liveness_probe] {
            let port = probe_port(probe.as_ref().unwrap_or_else(|| panic!("{name}: probes")));
            assert!(
                has_port(c, &port),
                "{name}: probe port {port:?} is no container port"
            );
        }
        let res = c.resources.as_ref().unwrap();
        assert!(
            res.requests.as_ref().unwrap().contains_key("cpu"),
            "{name}: a CPU request"
        );
        assert!(
            res.limits.as_ref().unwrap().contains_key("memory"),
            "{name}: a memory limit"
        );
        let volumes = spec.volumes.clone().unwrap_or_default();
        for m in c.volume_mounts.iter().flatten() {
            let v = volumes
                .iter()
                .find(|v| v.name == m.name)
                .unwrap_or_else(|| panic!("{name}: mount {} has no volume", m.name));
            if let Some(cm) = &v.config_map {
                assert!(
                    o.configmaps.contains_key(&cm.name),
                    "{name}: ConfigMap {} is not exported",
                    cm.name
                );
            }
            if let Some(s) = &v.secret {
                let s = s.secret_name.as_ref().unwrap();
                assert!(
                    o.secrets.contains_key(s),
                    "{name}: Secret {s} is not exported"
                );
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else {
                continue;
            };
            let r = from
                .secret_key_ref
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: env {} from a Secret", e.name));
            let secret = o.secrets.get(&r.name).unwrap_or_else(|| {
                panic!("{name}: env {}: Secret {} is not exported", e.name, r.name)
            });
            assert!(
                secret_value(secret, &r.key).is_some(),
                "{name}: env {}: Secret {} has no key {}",
                e.name,
                r.name,
                r.key
            );
        }
        if let Some(ann) = t.metadata.as_ref().unwrap().annotations.as_ref() {
            let port: i32 = ann["prometheus.io/port"].parse().unwrap();
            assert_eq!(ann["prometheus.io/scrape"], "true");
            assert!(
                has_port(c, &IntOrString::Int(port)),
                "{name}: scrape port is no container port"
            );
        }
    }
    for (name, s) in &o.services {
        let spec = s.spec.as_ref().unwrap();
        let sel = spec.selector.clone().unwrap();
        let targets: Vec<&PodTemplateSpec> = pods
            .values()
            .filter(|t| labels_match(&sel, &pod_labels(t)))
            .collect();
        assert_eq!(
            targets.len(),
            1,
            "Service {name}: selects one workload's pods"
        );
        let c = &targets[0].spec.as_ref().unwrap().containers[0];
        for p in spec.ports.iter().flatten() {
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            assert!(
                has_port(c, &target),
                "Service {name}: target port {target:?} is no container port"
            );
            if let IntOrString::String(n) = &target {
                let cp = c
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                    .unwrap();
                assert_eq!(
                    cp.container_port, p.port,
                    "Service {name}: port {n} is the container's"
                );
            }
        }
    }
    for (name, pdb) in &o.pdbs {
        let sel = pdb
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone()
            .unwrap();
        assert_eq!(
            pods.values()
                .filter(|t| labels_match(&sel, &pod_labels(t)))
                .count(),
            1,
            "PodDisruptionBudget {name}: selects one workload"
        );
    }
    let all_meta = o
        .deployments
        .values()
        .map(|d| &d.metadata)
        .chain(o.statefulsets.values().map(|s| &s.metadata))
        .chain(o.services.values().map(|s| &s.metadata))
        .chain(o.configmaps.values().map(|s| &s.metadata))
        .chain(o.secrets.values().map(|s| &s.metadata))
        .chain(o.pdbs.values().map(|s| &s.metadata));
    for m in all_meta {
        assert_eq!(m.namespace.as_deref(), namespace, "{:?}: namespace", m.name);
    }
    let listed: BTreeSet<String> = o.kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed, o.files,
        "kustomization.yaml lists every object file"
    );
    assert_eq!(o.kustomization["namespace"].as_str(), namespace);
    pods
}

/// The value of `key` in a Secret.
fn secret_value(s: &Secret, key: &str) -> Option<String> {
    s.string_data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .or_else(|| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8(b.0.clone()).unwrap())
        })
}

/// No ConfigMap holds a value of a Secret or any of `source` (the secrets of
/// the Flow), and every Secret's file is its owner's only.
fn check_secrets(o: &Objects, out: &Path, source: &[&str]) {
    let mut secrets: Vec<String> = source.iter().map(|s| s.to_string()).collect();
    for s in o.secrets.values() {
        for k in s.string_data.iter().flat_map(|d| d.keys()) {
            secrets.push(secret_value(s, k).unwrap());
        }
    }
    for (name, cm) in &o.configmaps {
        for (file, text) in cm.data.iter().flatten() {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.trim()),
                    "ConfigMap {name} ({file}) holds a secret"
                );
            }
        }
    }
    #[cfg(unix)]
    for file in &o.secret_files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is its owner's only");
    }
}

/// The gateways' Flow, read by vchat's own loader: every in-process executor is
/// named by its StatefulSet's pod DNS names and container port.
fn check_gateway_flow(o: &Objects, dir: &Path) -> vchat_core::config::FlowSpec {
    let d = &o.deployments["gateway"];
    let c = &&d.spec.template.spec.as_ref().unwrap().containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(c.command.clone().unwrap(), ["vchat"]);
    assert_eq!(args[..2], ["flow", "--uses"]);
    let cm = o
        .configmaps
        .values()
        .find(|cm| cm.data.as_ref().is_some_and(|d| d.contains_key(&args[2])))
        .expect("the Flow's ConfigMap");
    let flow = write_file(
        dir,
        "gateway/flow.yml",
        &cm.data.as_ref().unwrap()[&args[2]],
    );
    let spec = load_flow(&flow).unwrap();
    for (name, s) in &o.statefulsets {
        let sts = &s.spec;
        let port = sts.template.spec.as_ref().unwrap().containers[0]
            .ports
            .as_ref()
            .unwrap()[0]
            .container_port;
        let e = spec
            .executors
            .iter()
            .find(|e| {
                e.deployment
                    .external
                    .first()
                    .is_some_and(|a| a.starts_with(&format!("{name}-0.")))
            })
            .unwrap_or_else(|| {
                panic!("no executor of the gateway's Flow names StatefulSet {name}")
            });
        let want: Vec<String> = (0..sts.replicas.unwrap())
            .map(|i| format!("{name}-{i}.{}:{port}", sts.service_name.as_ref().unwrap()))
            .collect();
        assert_eq!(e.deployment.external, want, "executor {}", e.name);
        // The executor requires the secret the gateways send it, both from
        // the same variable of the same Secret.
        let secret_env = "VCHAT_EXECUTOR_SECRET";
        assert_eq!(
            e.deployment.secret.as_deref(),
            Some(format!("${{{secret_env}}}").as_str()),
            "executor {}",
            e.name
        );
        let c = &sts.template.spec.as_ref().unwrap().containers[0];
        let args = c.args.clone().unwrap();
        assert!(
            args.windows(2).any(|w| w == ["--secret-env", secret_env]),
            "{args:?}"
        );
        let from_secret = |c: &Container| {
            c.env
                .iter()
                .flatten()
                .find(|v| v.name == secret_env)
                .and_then(|v| v.value_from.as_ref()?.secret_key_ref.clone())
                .map(|r| (r.name, r.key))
        };
        let gateway_c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        assert!(
            from_secret(c).is_some(),
            "{name}: {secret_env} from a Secret"
        );
        assert_eq!(
            from_secret(c),
            from_secret(gateway_c),
            "{name} and the gateway"
        );
        // The executor's own YAML, from its ConfigMap, as its container reads it.
        assert_eq!(args[..3], ["executor", "--uses", "executor.yml"]);
        let mount = c.volume_mounts.as_ref().unwrap()[0].mount_path.clone();
        assert_eq!(
            c.working_dir.as_deref(),
            Some(mount.as_str()),
            "relative paths are the mount's"
        );
        let yml = o
            .configmaps
            .values()
            .find_map(|cm| {
                cm.data
                    .as_ref()?
                    .get("executor.yml")
                    .filter(|_| cm.metadata.name.as_deref() == Some(&format!("{name}-config")))
            })
            .unwrap();
        let ex = load_executor(&write_file(dir, &format!("{name}/executor.yml"), yml)).unwrap();
        assert_eq!(ex.name, e.name);
    }
    spec
}

#[test]
fn kubernetes_export_parses_strictly_and_agrees_with_itself() {
    let dir = scratch("export-k8s");
    let flow = rich_flow(&dir);
    let out = dir.join("out");
    let said = export(&[
        "kubernetes",
        flow.to_str().unwrap(),
        out.to_str().unwrap(),
        "--namespace",
        "chat",
        "--image",
        "registry.example.org/vchat:1",
    ]);
    assert!(said.contains("kubectl apply -k"), "{said}");
    let o = read_export(&out);
    let pods = check_workloads(&o, Some("chat"));
    assert_eq!(o.namespaces, BTreeSet::from(["chat".to_string()]));
    assert_eq!(
        o.statefulsets.keys().collect::<Vec<_>>(),
        ["flipper", "frame-aggregator"],
        "one StatefulSet per in-process executor, named as a DNS label"
    );
    assert_eq!(o.statefulsets["frame-aggregator"].spec.replicas, Some(3));
    assert_eq!(o.deployments["gateway"].spec.replicas, Some(2));
    for t in pods.values() {
        assert_eq!(
            t.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("registry.example.org/vchat:1")
        );
    }
    let gw = &pods["gateway"];
    let c = &gw.spec.as_ref().unwrap().containers[0];
    let ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("grpc".into(), 9443),
            ("http".into(), 8081),
            ("metrics".into(), 9090)
        ])
    );
    // TLS: the gRPC probe has no TLS, so the gateway's is a TCP one; the
    // certificate and key come from a Secret.
    assert!(c.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    let secret = &o.secrets["gateway-tls"];
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let cert = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    assert_eq!(secret.string_data.as_ref().unwrap()["tls.crt"], cert);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("gateway-tls-secret.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key's file is its owner's only");
    }
    assert!(
        o.statefulsets["flipper"]
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .readiness_probe
            .as_ref()
            .unwrap()
            .grpc
            .is_some()
    );

    let spec = check_gateway_flow(&o, &dir);
    check_secrets(&o, &out, &SOURCE_SECRETS);
    let w = &spec.with;
    assert_eq!(
        (w.port, w.max_streams, w.monitoring),
        (Some(9443), Some(77), Some(true))
    );
    // Every access-token key is a variable of the gateway's environment, set
    // from the Secret <app>-auth to the value the Flow gave.
    let keys = &w.auth.as_ref().unwrap().keys;
    let env_of = |c: &Container, var: &str| {
        let r = c
            .env
            .iter()
            .flatten()
            .find(|v| v.name == var)
            .unwrap_or_else(|| panic!("env {var}"))
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        secret_value(&o.secrets[&r.name], &r.key).map(|v| (r.name, v))
    };
    let var = |v: &str| {
        v.strip_prefix("${")
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{v} names a variable"))
            .to_string()
    };
    assert_eq!(keys.len(), 2);
    for (id, want) in [("main", LITERAL_KEY), ("next", ENV_KEY.1)] {
        assert_eq!(
            env_of(c, &var(&keys[id])),
            Some(("flow-auth".to_string(), want.to_string())),
            "key {id}"
        );
    }
    assert_eq!(o.secrets["flow-auth"].type_.as_deref(), Some("Opaque"));
    let generated =
        secret_value(&o.secrets["flow-executor-secret"], "VCHAT_EXECUTOR_SECRET").unwrap();
    assert!(
        generated.len() == 64 && generated.chars().all(|c| c.is_ascii_hexdigit()),
        "a random executor secret"
    );
    assert!(!said.contains(&generated), "the secret is not printed");
    assert!(w.serves_websocket());
    let cert_path = w.ssl_certfile.clone().unwrap();
    let tls_mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "tls")
        .unwrap();
    assert_eq!(cert_path, Path::new(&tls_mount.mount_path).join("tls.crt"));
    let names: Vec<&str> = spec.executors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["flipper", "frame_Aggregator", "outside"]);
    let chat = &spec.executors[1].deployment;
    assert_eq!(
        chat.route_by.as_deref(),
        Some("room"),
        "the chat's rooms stay on one replica"
    );
    assert_eq!(chat.needs, ["flipper"]);
    let outside = &spec.executors[2].deployment;
    assert_eq!(outside.external, ["10.1.2.3:61000", "10.1.2.4:61000"]);
    assert_eq!(
        outside.timeout_send,
        Some(std::time::Duration::from_millis(1500))
    );
    // The external executor keeps its TLS and its own secret, through the
    // gateway's environment.
    assert!(outside.tls);
    assert_eq!(
        env_of(c, &var(outside.secret.as_ref().unwrap())),
        Some(("flow-auth".to_string(), ENV_LINK.1.to_string()))
    );
    // uses_with reaches the executor's own YAML; max_message_bytes its flags.
    let yml = &o.configmaps["frame-aggregator-config"]
        .data
        .as_ref()
        .unwrap()["executor.yml"];
    let ex = load_executor(&write_file(&dir, "chat.yml", yml)).unwrap();
    assert_eq!(ex.with["max_users"].0, serde_json::json!(7));
    let args = o.statefulsets["flipper"]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.windows(2)
            .any(|w| w == ["--max-message-bytes", "9000000"]),
        "{args:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_misspelled_field_is_an_error() {
    let dir = scratch("export-strict");
    let out = dir.join("out");
    export(&[
        "kubernetes",
        repo_root().join("flow.yml").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let good = read_yaml(&out.join("gateway-deployment.yaml"));
    strict::<Deployment>(&good).unwrap();
    let mut bad = good.clone();
    let c = &mut bad["spec"]["template"]["spec"]["containers"][0];
    let ports = c["ports"].take();
    c["port"] = ports;
    let e = strict::<Deployment>(&bad).unwrap_err();
    assert!(e.contains("containers[0].port"), "{e}");
    let mut bad = good.clone();
    bad["spec"]["replica"] = serde_json::json!(2);
    let e = strict::<Deployment>(&bad).unwrap_err();
    assert!(e.contains(".spec.replica"), "{e}");
    // A field of the wrong type is refused by the types themselves.
    let mut bad = good;
    bad["spec"]["replicas"] = serde_json::json!("two");
    assert!(strict::<Deployment>(&bad).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn kubectl_kustomize_builds_the_export() {
    let Ok(version) = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("kubectl is not installed: the kustomize check is skipped");
        return;
    };
    assert!(version.status.success(), "kubectl version --client");
    let dir = scratch("export-kustomize");
    let flow = rich_flow(&dir);
    let out = dir.join("out");
    export(&[
        "kubernetes",
        flow.to_str().unwrap(),
        out.to_str().unwrap(),
        "--namespace",
        "chat",
    ]);
    let built = Command::new("kubectl")
        .args(["kustomize"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    for kind in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        assert!(
            text.contains(&format!("kind: {kind}\n")),
            "{kind} in the build"
        );
    }
    for doc in text.split("\n---\n") {
        if !doc.contains("kind: Namespace\n") {
            assert!(
                format!("{doc}\n").contains("\n  namespace: chat\n"),
                "every namespaced object is in `chat`:\n{doc}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The part of the compose file format the export writes; anything else in the
/// file is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeFile {
    name: String,
    services: BTreeMap<String, ComposeService>,
    networks: BTreeMap<String, BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeService {
    image: String,
    entrypoint: Vec<String>,
    command: Vec<String>,
    working_dir: String,
    environment: BTreeMap<String, String>,
    #[serde(default)]
    env_file: Vec<String>,
    #[serde(default)]
    hostname: Option<String>,
    networks: ComposeNetworks,
    #[serde(default)]
    ports: Vec<ComposePort>,
    volumes: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    stop_grace_period: String,
    restart: String,
    #[serde(default)]
    healthcheck: Option<ComposeHealth>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ComposeNetworks {
    Names(Vec<String>),
    Aliases(BTreeMap<String, ComposeAliases>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeAliases {
    aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposePort {
    target: u16,
    published: String,
    protocol: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ComposeHealth {
    test: Vec<String>,
    interval: String,
    timeout: String,
    retries: u32,
}

#[test]
fn compose_export_parses_strictly_and_agrees_with_itself() {
    let dir = scratch("export-compose");
    let flow = rich_flow(&dir);
    let out = dir.join("out");
    export(&[
        "docker-compose",
        flow.to_str().unwrap(),
        out.to_str().unwrap(),
        "--gateway-replicas",
        "3",
    ]);
    let text = std::fs::read_to_string(out.join("docker-compose.yml")).unwrap();
    let compose: ComposeFile = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(compose.name, "flow");
    let names: Vec<&str> = compose.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "flipper-0",
            "frame-aggregator-0",
            "frame-aggregator-1",
            "frame-aggregator-2",
            "gateway-0",
            "gateway-1",
            "gateway-2"
        ]
    );
    let mut aliases = BTreeSet::new();
    let mut published = BTreeSet::new();
    for (name, s) in &compose.services {
        assert_eq!(s.entrypoint, ["vchat"]);
        assert!(!s.image.is_empty() && !s.restart.is_empty() && s.stop_grace_period.ends_with('s'));
        assert_eq!(
            s.environment.get("RUST_LOG").map(String::as_str),
            Some("info")
        );
        match &s.networks {
            ComposeNetworks::Aliases(m) => {
                for (net, a) in m {
                    assert!(compose.networks.contains_key(net), "{name}: network {net}");
                    aliases.extend(a.aliases.iter().cloned());
                }
                assert_eq!(s.hostname.as_deref(), Some(name.as_str()));
            }
            ComposeNetworks::Names(n) => n
                .iter()
                .for_each(|net| assert!(compose.networks.contains_key(net))),
        }
        for v in &s.volumes {
            let (host, rest) = v.split_once(':').unwrap();
            assert!(out.join(host).exists(), "{name}: volume {host} is exported");
            assert!(rest.starts_with('/'), "{name}: {v}");
        }
        for d in &s.depends_on {
            assert!(compose.services.contains_key(d), "{name}: depends on {d}");
        }
        for p in &s.ports {
            assert_eq!(p.protocol, "tcp");
            assert!(
                published.insert(p.published.clone()),
                "{name}: host port {} twice",
                p.published
            );
            let _ = p.target;
        }
        if let Some(h) = &s.healthcheck {
            assert!(h.test.iter().any(|t| t == "ping"));
        }
        for f in &s.env_file {
            let vars = read_env_file(&out.join(f));
            assert!(
                vars.contains_key("VCHAT_EXECUTOR_SECRET"),
                "{name}: {f} holds the executors' secret"
            );
        }
    }
    // The gateways' Flow names each executor replica by an alias of its service.
    let gw = &compose.services["gateway-0"];
    assert_eq!(gw.command[..2], ["flow", "--uses"]);
    let flow_mount = gw
        .volumes
        .iter()
        .find(|v| v.contains(&format!("{}/{}", gw.working_dir, gw.command[2])))
        .unwrap();
    let spec = load_flow(&out.join(flow_mount.split_once(':').unwrap().0)).unwrap();
    for e in &spec.executors[..2] {
        for a in &e.deployment.external {
            let host = a.rsplit_once(':').unwrap().0;
            assert!(aliases.contains(host), "{a} is no service alias");
        }
    }
    assert_eq!(spec.executors[1].deployment.external.len(), 3);
    check_compose_secrets(&compose, &out, &spec);
    // The key is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("gateway/tls/tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `NAME='value'` lines of a compose env file, checked to be its owner's only.
fn read_env_file(p: &Path) -> BTreeMap<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is its owner's only", p.display());
    }
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Every secret the gateways' Flow names (`${VAR}`) is in the gateways' env
/// file, every executor service gets the gateways' executor secret, and no
/// secret is in the compose file or a mounted file that is not an env file.
fn check_compose_secrets(compose: &ComposeFile, out: &Path, spec: &vchat_core::config::FlowSpec) {
    let gw = &compose.services["gateway-0"];
    assert_eq!(gw.env_file.len(), 1, "the gateways' env file");
    let gw_env = read_env_file(&out.join(&gw.env_file[0]));
    let named = spec.with.auth.iter().flat_map(|a| a.keys.values()).chain(
        spec.executors
            .iter()
            .filter_map(|e| e.deployment.secret.as_ref()),
    );
    for v in named {
        let var = v
            .strip_prefix("${")
            .and_then(|v| v.strip_suffix('}'))
            .unwrap();
        assert!(gw_env.contains_key(var), "{var} in the gateways' env file");
    }
    for (name, s) in &compose.services {
        if s.command[0] == "executor" {
            assert!(
                s.command
                    .windows(2)
                    .any(|w| w == ["--secret-env", "VCHAT_EXECUTOR_SECRET"])
            );
            let env = read_env_file(&out.join(&s.env_file[0]));
            assert_eq!(
                env["VCHAT_EXECUTOR_SECRET"], gw_env["VCHAT_EXECUTOR_SECRET"],
                "{name} and the gateways share the secret"
            );
        }
    }
    let mut files = vec![out.join("docker-compose.yml")];
    for s in compose.services.values() {
        files.extend(
            s.volumes
                .iter()
                .map(|v| out.join(v.split_once(':').unwrap().0)),
        );
    }
    for f in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(f).unwrap();
        for secret in gw_env.values() {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a secret",
                f.display()
            );
        }
    }
}

#[test]
fn the_auth_example_exports_its_key_from_the_environment() {
    let dir = scratch("export-auth");
    let flow = repo_root().join("examples/flows/auth.yml");
    let key = "0123456789abcdef0123456789abcdef-the-example";
    let run = |target: &str, out: &Path, key: Option<&str>| {
        let mut cmd = Command::new(bin("vchat"));
        cmd.args(["export", target]).arg(&flow).arg(out);
        cmd.env_remove("VCHAT_KEY_SECRET");
        if let Some(k) = key {
            cmd.env("VCHAT_KEY_SECRET", k);
        }
        cmd.output().unwrap()
    };
    // Unset: refused, naming the variable and where to set it; nothing written.
    let refused = run("kubernetes", &dir.join("none"), None);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        e.contains("VCHAT_KEY_SECRET is not set") && e.contains("vchat export"),
        "{e}"
    );
    assert!(!dir.join("none").exists());

    let out = dir.join("k8s");
    let done = run("kubernetes", &out, Some(key));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(!String::from_utf8_lossy(&done.stdout).contains(key));
    let o = read_export(&out);
    check_workloads(&o, None);
    let spec = check_gateway_flow(&o, &dir);
    check_secrets(&o, &out, &[key]);
    assert_eq!(spec.with.auth.unwrap().keys["main"], "${VCHAT_KEY_SECRET}");
    assert_eq!(
        secret_value(&o.secrets["auth-auth"], "VCHAT_KEY_SECRET").as_deref(),
        Some(key)
    );

    let out = dir.join("compose");
    let done = run("docker-compose", &out, Some(key));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let compose: ComposeFile =
        serde_saphyr::from_str(&std::fs::read_to_string(out.join("docker-compose.yml")).unwrap())
            .unwrap();
    let spec = load_flow(&out.join("gateway/flow.yml")).unwrap();
    check_compose_secrets(&compose, &out, &spec);
    assert_eq!(
        read_env_file(&out.join("secrets/gateway.env"))["VCHAT_KEY_SECRET"],
        key
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_repository_flows_export() {
    for flow in [
        "flow.yml",
        "examples/flows/grid.yml",
        "examples/flows/browser.yml",
    ] {
        let dir = scratch("export-examples");
        export(&[
            "kubernetes",
            repo_root().join(flow).to_str().unwrap(),
            dir.join("k8s").to_str().unwrap(),
        ]);
        let o = read_export(&dir.join("k8s"));
        check_workloads(&o, None);
        check_gateway_flow(&o, &dir);
        check_secrets(&o, &dir.join("k8s"), &[]);
        export(&[
            "docker-compose",
            repo_root().join(flow).to_str().unwrap(),
            dir.join("compose").to_str().unwrap(),
        ]);
        let _: ComposeFile = serde_saphyr::from_str(
            &std::fs::read_to_string(dir.join("compose/docker-compose.yml")).unwrap(),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn what_cannot_be_exported_is_refused_with_a_reason() {
    let dir = scratch("export-refused");
    write_file(
        &dir,
        "py/config.yml",
        "jtype: MyExecutor\npy_modules: [my.py]\n",
    );
    let flow = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nexecutors:\n  - uses: py/config.yml\n    name: py\n",
    );
    let out = Command::new(bin("vchat"))
        .args(["export", "kubernetes"])
        .arg(&flow)
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("executor `py` is a Python executor"), "{e}");
    let out = Command::new(bin("vchat"))
        .args(["export", "docker-compose", "no-such-flow.yml", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-flow.yml"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn export_help_explains_the_topology() {
    let out = Command::new(bin("vchat"))
        .args(["export", "kubernetes", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "StatefulSet",
        "headless Service",
        "Deployment",
        "PodDisruptionBudget",
        "kustomization.yaml",
        "--namespace",
        "--image",
        "--gateway-replicas",
    ] {
        assert!(help.contains(word), "{word} in:\n{help}");
    }
    let out = Command::new(bin("vchat"))
        .args(["export", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("kubernetes") && help.contains("docker-compose"),
        "{help}"
    );
}

#[test]
fn a_second_export_into_the_same_directory_keeps_the_executor_secret() {
    let dir = scratch("export-again");
    let flow = rich_flow(&dir);
    let (k8s, compose) = (dir.join("k8s"), dir.join("compose"));
    let k8s_secret = || {
        let o = read_export(&k8s);
        secret_value(&o.secrets["flow-executor-secret"], "VCHAT_EXECUTOR_SECRET").unwrap()
    };
    let compose_secret =
        || read_env_file(&compose.join("secrets/executor.env"))["VCHAT_EXECUTOR_SECRET"].clone();
    for (target, out) in [("kubernetes", &k8s), ("docker-compose", &compose)] {
        export(&[target, flow.to_str().unwrap(), out.to_str().unwrap()]);
    }
    let (first_k8s, first_compose) = (k8s_secret(), compose_secret());
    assert_ne!(first_k8s, first_compose, "each new export makes its own");
    for (target, out) in [("kubernetes", &k8s), ("docker-compose", &compose)] {
        export(&[target, flow.to_str().unwrap(), out.to_str().unwrap()]);
    }
    // Pods restarted after the second apply still share the running ones' secret.
    assert_eq!(k8s_secret(), first_k8s);
    assert_eq!(compose_secret(), first_compose);
    // Into a fresh directory: a new one.
    let fresh = dir.join("fresh");
    export(&[
        "kubernetes",
        flow.to_str().unwrap(),
        fresh.to_str().unwrap(),
    ]);
    let o = read_export(&fresh);
    let new = secret_value(&o.secrets["flow-executor-secret"], "VCHAT_EXECUTOR_SECRET").unwrap();
    assert_ne!(new, first_k8s);
}
