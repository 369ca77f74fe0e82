//! `vchat export kubernetes|docker-compose flow.yml OUT/`: a Flow as a cluster.
//!
//! Each in-process executor of the Flow becomes a service of its own (`vchat
//! executor`), one container per replica with a stable name
//! (`<executor>-<i>.<executor>`: a StatefulSet's pods behind a headless Service,
//! or one compose service per replica), and the gateway (`vchat flow`) a
//! stateless service in front of them, its Flow naming every executor by those
//! replica names. Each gateway maps a room to the same replica (rendezvous over
//! the names, see `vchat_gateway::discovery`), so gateways scale freely.
//!
//! Secrets (TLS, access-token keys, the executor links' shared secret) go into
//! Secrets or 0600 env files, never into a ConfigMap ([`secrets`]).
//!
//! The objects are built from the parsed Flow ([`Plan`]), then written as YAML
//! by serde-saphyr.

mod compose;
mod kubernetes;
mod plan;
mod secrets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use vchat_core::Registry;

pub(crate) use plan::{EXECUTOR_MEMORY_MB, Plan};
pub use secrets::EXECUTOR_SECRET_ENV;

/// Port of the gateway's gRPC door in the exported containers when the Flow
/// sets none (`with.port` absent or 0): Jina's export uses the same.
pub const DEFAULT_GATEWAY_PORT: u16 = 8080;
/// Port of the browser side (`protocol: websocket`) when the Flow sets none.
pub const DEFAULT_HTTP_PORT: u16 = 8081;
/// Port of the metrics endpoint (`monitoring: true`) when the Flow sets none.
pub const DEFAULT_MONITORING_PORT: u16 = 9090;
/// Port every executor container serves on (each in a pod of its own).
pub const EXECUTOR_PORT: u16 = 8080;
/// Gateway replicas unless `--gateway-replicas` says otherwise.
pub const DEFAULT_GATEWAY_REPLICAS: u32 = 2;
/// The image unless `--image` says otherwise.
pub const DEFAULT_IMAGE: &str = concat!("vchat:", env!("CARGO_PKG_VERSION"));
/// Where the Flow or executor YAML is mounted, and the containers' working
/// directory: paths in the command line are relative to it.
pub const CONFIG_DIR: &str = "/etc/vchat";
/// Where the gateway's TLS certificate and key are mounted.
pub const TLS_DIR: &str = "/var/run/vchat/tls";
/// Seconds a stopping gateway keeps finishing its requests in flight (the
/// gateway's own shutdown grace).
pub const GATEWAY_SHUTDOWN_GRACE_S: u64 = 10;
/// Seconds a pod being removed keeps serving before it is told to stop, so that
/// Services stop sending it new streams first.
pub const PRE_STOP_S: u64 = 5;
/// Seconds the cluster's DNS may keep answering with a pod that is gone
/// (CoreDNS's default TTL for Service records).
pub const DNS_TTL_S: u64 = 5;
/// Seconds a stopping executor pod keeps serving after it has left its
/// Service's DNS: until every gateway has looked the names up again
/// (`resolve_interval_s`) past the DNS cache, so that its rooms move to another
/// replica before it stops answering.
pub const EXECUTOR_PRE_STOP_S: u64 =
    vchat_core::config::DEFAULT_RESOLVE_INTERVAL_S as u64 + DNS_TTL_S + 2;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum Target {
    /// Kubernetes manifests and a kustomization.yaml (`kubectl apply -k OUT/`).
    ///
    /// Per in-process executor: a StatefulSet (one pod per replica, each with a
    /// stable DNS name `<executor>-<i>.<executor>`), its headless Service, a
    /// PodDisruptionBudget and a ConfigMap with its YAML. The gateway: a
    /// Deployment (stateless, --gateway-replicas pods), a Service, a
    /// PodDisruptionBudget and a ConfigMap with the gateway's Flow, which names
    /// every executor replica by its DNS name, so that every gateway sends a room
    /// to the same replica. TLS (`ssl_certfile`/`ssl_keyfile`): a Secret
    /// written with the certificate and key (mode 0600; keep OUT/ private).
    /// Access-token keys (`with.auth.keys`; `${VAR}` is read from this
    /// process's environment) and external executors' secrets: the Secret
    /// APP-auth. The executors require a shared secret that the export
    /// generates (the Secret APP-executor-secret), which the gateways send.
    /// Secrets reach the containers as environment variables, never ConfigMaps.
    /// Probes: Kubernetes' gRPC probe (a TCP probe for a TLS gateway).
    /// Monitoring on: Prometheus scrape annotations.
    Kubernetes(KubernetesArgs),
    /// One docker-compose.yml with the same topology: a service per executor
    /// replica, named as the pods would be, and --gateway-replicas gateways, each
    /// published on the host (the gRPC port, plus one per further gateway).
    /// Secrets go into env files under secrets/ (mode 0600).
    DockerCompose(ComposeArgs),
}

#[derive(Args, Debug)]
struct KubernetesArgs {
    /// The Flow YAML.
    flow: PathBuf,
    /// Directory to write the manifests to (created if missing).
    out: PathBuf,
    /// Container image with the `vchat` binary (see the Dockerfile).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Namespace of every object (set in the kustomization.yaml); default: the
    /// one `kubectl` is pointed at.
    #[arg(long)]
    namespace: Option<String>,
    /// Gateway pods.
    #[arg(long, default_value_t = DEFAULT_GATEWAY_REPLICAS)]
    gateway_replicas: u32,
}

#[derive(Args, Debug)]
struct ComposeArgs {
    /// The Flow YAML.
    flow: PathBuf,
    /// Directory to write docker-compose.yml and the configuration to.
    out: PathBuf,
    /// Container image with the `vchat` binary (see the Dockerfile).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Gateway containers.
    #[arg(long, default_value_t = DEFAULT_GATEWAY_REPLICAS)]
    gateway_replicas: u32,
}

pub async fn run(args: ExportArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    match args.target {
        Target::Kubernetes(a) => {
            anyhow::ensure!(
                a.gateway_replicas >= 1,
                "--gateway-replicas must be at least 1"
            );
            let mut plan = Plan::new(&a.flow, &registry)?;
            plan.keep_executor_secret(&a.out.join(kubernetes::executor_secret_file(&plan.app)))?;
            let files =
                kubernetes::render(&plan, &a.image, a.namespace.as_deref(), a.gateway_replicas)?;
            write_all(&a.out, &files)?;
            println!(
                "vchat: wrote {} files to {}; apply with `kubectl apply -k {}`",
                files.len(),
                a.out.display(),
                a.out.display()
            );
        }
        Target::DockerCompose(a) => {
            anyhow::ensure!(
                a.gateway_replicas >= 1,
                "--gateway-replicas must be at least 1"
            );
            let mut plan = Plan::new(&a.flow, &registry)?;
            plan.keep_executor_secret(&a.out.join(compose::EXECUTOR_ENV_FILE))?;
            let files = compose::render(&plan, &a.image, a.gateway_replicas)?;
            write_all(&a.out, &files)?;
            println!(
                "vchat: wrote {} files to {}; start with `docker compose -f {} up`",
                files.len(),
                a.out.display(),
                a.out.join("docker-compose.yml").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A file to write: its path under OUT/, its text, and whether it holds a
/// secret (written readable by its owner only).
pub(crate) struct OutFile {
    pub path: String,
    pub text: String,
    pub secret: bool,
}

fn write_all(out: &Path, files: &[OutFile]) -> anyhow::Result<()> {
    for f in files {
        let p = out.join(&f.path);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_file(&p, &f.text, f.secret)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

#[cfg(unix)]
fn write_file(p: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(p)?;
    // The mode above applies to a new file only: one left by an earlier
    // export keeps its own, so a secret's file is narrowed before it is written.
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_file(p: &Path, text: &str, _secret: bool) -> std::io::Result<()> {
    std::fs::write(p, text)
}

/// YAML text of `v`.
pub(crate) fn yaml(v: &Value) -> anyhow::Result<String> {
    serde_saphyr::to_string(v).context("cannot write YAML")
}

/// `name` as a DNS label (RFC 1123: lowercase letters, digits and `-`, at most
/// 63, starting and ending alphanumeric), short enough for `-<replica>` suffixes.
pub(crate) fn dns_label(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(50);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("x{s}")
    } else {
        s
    }
}

/// Labels shared by an object and its pods.
pub(crate) fn labels(app: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), component.to_string()),
        ("app.kubernetes.io/part-of".to_string(), app.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_valid() {
        assert_eq!(dns_label("frameAggregator"), "frameaggregator");
        assert_eq!(dns_label("my_exec.v2"), "my-exec-v2");
        assert_eq!(dns_label("9lives"), "x9lives");
        assert_eq!(dns_label("--"), "x");
        assert!(dns_label(&"a".repeat(200)).len() <= 50);
    }
}
