//! `vchat flow --uses flow.yml`: serve a Flow until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use vchat_core::Registry;
use vchat_core::config::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PREFETCH, load_flow};
use vchat_gateway::{BuildOptions, CallLimits, CancellationToken, FlowRuntime, Gateway};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct FlowArgs {
    /// The Flow YAML (`jtype: Flow`); executor paths in it are relative to it.
    #[arg(long)]
    uses: PathBuf,
    /// Port to listen on (overrides `with.port`); 0 picks a free port.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on (overrides `with.host`; default 0.0.0.0).
    #[arg(long)]
    host: Option<String>,
    /// Requests of one stream processed at once, at most (overrides `with.prefetch`).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Largest request in bytes; larger ones get an ERROR status
    /// (overrides `with.max_message_bytes`; default 64 MiB).
    #[arg(long)]
    max_message_bytes: Option<usize>,
    /// Python interpreter with Jina 3 installed, to run Python executors
    /// (executor YAMLs with `py_modules`).
    #[arg(long, env = "VCHAT_PYTHON", default_value = "python3")]
    python: PathBuf,
}

pub async fn run(args: FlowArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let spec = load_flow(&args.uses)?;
    let options = BuildOptions {
        python: args.python.clone(),
    };
    let flow = FlowRuntime::build(&spec, &registry, &options).await?;
    let host = args
        .host
        .or(spec.with.host.clone())
        .unwrap_or_else(|| "0.0.0.0".to_string());
    let port = args.port.or(spec.with.port).unwrap_or(0);
    let limits = CallLimits {
        prefetch: args
            .prefetch
            .or(spec.with.prefetch)
            .unwrap_or(DEFAULT_PREFETCH)
            .max(1),
        max_message_bytes: args
            .max_message_bytes
            .or(spec.with.max_message_bytes)
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        max_fps: spec.with.max_fps,
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let local = listener.local_addr()?;
    print_panel(
        &spec
            .executors
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        local,
        started,
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    let server = tokio::spawn(Gateway::new(flow, limits).serve(listener, shutdown.clone()));
    shutdown.cancelled().await;
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {
            tracing::info!("Stopped");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(join)) => Err(anyhow::anyhow!("gateway task failed: {join}")),
        Err(_) => {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "Streams still open after the grace period; exiting"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Jina-style endpoint panel, then one machine-readable line.
fn print_panel(executors: &[&str], local: SocketAddr, started: Instant) {
    let connect = if local.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
    } else {
        local
    };
    println!(
        "vchat {}: Flow is ready to serve ({:.0} ms)",
        vchat_gateway::VERSION,
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("  Protocol   GRPC");
    println!("  Executors  {}", executors.join(" -> "));
    println!("  Local      grpc://{connect}");
    if local.ip().is_unspecified() {
        println!(
            "  Network    grpc://<this machine's address>:{}",
            local.port()
        );
    }
    println!("vchat: listening on grpc://{connect}");
}

pub(crate) async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("Cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
