//! `vchat flow --uses flow.yml`: serve a Flow until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use vchat_core::Registry;
use vchat_core::budget::DEFAULT_MAX_MEMORY_MB;
use vchat_core::config::{
    DEFAULT_HANDSHAKE_TIMEOUT_S, DEFAULT_KEEPALIVE_INTERVAL_S, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STREAM_QUEUE_BYTES, DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_IP,
    DEFAULT_METRICS_MAX_ROOMS, DEFAULT_MONITORING_HOST, DEFAULT_PREFETCH, DEFAULT_SEND_TIMEOUT_S,
    DEFAULT_STREAM_IDLE_TIMEOUT_S, load_flow,
};
use vchat_gateway::{
    BuildOptions, CallLimits, CancellationToken, ConnLimits, FlowRuntime, Gateway, WebOptions,
};

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
    /// Most streams open at once; one more is refused with RESOURCE_EXHAUSTED
    /// (overrides `with.max_streams`; default 256).
    #[arg(long)]
    max_streams: Option<usize>,
    /// Largest frame (tensor or blob) in bytes; larger ones get an ERROR status
    /// (overrides `with.max_frame_bytes`; default 3840*2160*3).
    #[arg(long)]
    max_frame_bytes: Option<usize>,
    /// Most streams at once from one client address (IPv4, or IPv6 /64), per
    /// door; one more is refused with RESOURCE_EXHAUSTED (overrides
    /// `with.max_streams_per_ip`; default 16).
    #[arg(long)]
    max_streams_per_ip: Option<usize>,
    /// Most TCP connections open at once on the gRPC port; one more is closed at
    /// once (overrides `with.max_connections`; default 1024).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most streams open at once on one HTTP/2 connection (overrides
    /// `with.max_concurrent_streams`; default 16).
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Seconds a stream may go without a request before it is ended (overrides
    /// `with.stream_idle_timeout_s`; default 30).
    #[arg(long)]
    stream_idle_timeout_s: Option<f64>,
    /// Seconds a gRPC peer may take none of its responses before it is dropped
    /// (overrides `with.send_timeout_s`; default 20).
    #[arg(long)]
    send_timeout_s: Option<f64>,
    /// Most bytes of responses waiting for one gRPC stream's peer (overrides
    /// `with.max_stream_queue_bytes`; default 8 MiB).
    #[arg(long)]
    max_stream_queue_bytes: Option<usize>,
    /// Seconds a new connection has for its TLS handshake and HTTP/2 preface
    /// (overrides `with.handshake_timeout_s`; default 10).
    #[arg(long)]
    handshake_timeout_s: Option<f64>,
    /// Ceiling in MiB on the memory held for users' frames, rooms' mosaics,
    /// requests in flight and responses waiting for their peers; over it, new
    /// streams are refused with RESOURCE_EXHAUSTED (overrides
    /// `with.max_memory_mb`; default 1024).
    #[arg(long)]
    max_memory_mb: Option<usize>,
    /// PEM certificate chain: serve over TLS, for grpcs:// clients (overrides
    /// `with.ssl_certfile`; needs --ssl-keyfile).
    #[arg(long, requires = "ssl_keyfile")]
    ssl_certfile: Option<PathBuf>,
    /// PEM private key of --ssl-certfile (overrides `with.ssl_keyfile`).
    #[arg(long, requires = "ssl_certfile")]
    ssl_keyfile: Option<PathBuf>,
    /// Serve Prometheus metrics at http://HOST:N/metrics (overrides
    /// `with.port_monitoring` and turns `with.monitoring` on; 0 picks a free port).
    #[arg(long)]
    port_monitoring: Option<u16>,
    /// Serve the web client and its WebSocket (protocol `websocket`) on this port
    /// (overrides `with.port_http` and turns the protocol on; 0 picks a free port).
    #[arg(long)]
    http_port: Option<u16>,
    /// Python interpreter with Jina 3 installed, to run Python executors
    /// (executor YAMLs with `py_modules`).
    #[arg(long, env = "VCHAT_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// Access control from a file of `KEY_ID: SECRET` lines (added to
    /// `with.auth.keys`): every stream then needs an access token (`vchat token`).
    #[arg(long)]
    auth_keys_file: Option<PathBuf>,
    /// Address the metrics endpoint listens on (overrides
    /// `with.monitoring_host`; default 127.0.0.1, this machine only).
    #[arg(long)]
    monitoring_host: Option<String>,
}

pub async fn run(args: FlowArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let spec = load_flow(&args.uses)?;
    let options = BuildOptions {
        python: args.python.clone(),
        // This very binary leads each Python executor's process group (its
        // hidden supervise subcommand), so that the group goes with the Flow
        // even when the Flow is killed with SIGKILL.
        supervisor: std::env::current_exe().ok(),
    };
    let max_memory_mb = args
        .max_memory_mb
        .or(spec.with.max_memory_mb)
        .unwrap_or(DEFAULT_MAX_MEMORY_MB);
    anyhow::ensure!(
        max_memory_mb > 0,
        "max_memory_mb must be at least 1 (MiB), got 0"
    );
    vchat_core::budget::global().set_limit_mb(max_memory_mb);
    // Before the executors start: a bad key is a configuration error.
    let verifier = crate::auth::verifier(spec.with.auth.as_ref(), args.auth_keys_file.as_deref())?;
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
        max_streams: args
            .max_streams
            .or(spec.with.max_streams)
            .unwrap_or(DEFAULT_MAX_STREAMS)
            .max(1),
        max_frame_bytes: args
            .max_frame_bytes
            .or(spec.with.max_frame_bytes)
            .unwrap_or(DEFAULT_MAX_FRAME_BYTES),
        max_streams_per_ip: args
            .max_streams_per_ip
            .or(spec.with.max_streams_per_ip)
            .unwrap_or(DEFAULT_MAX_STREAMS_PER_IP)
            .max(1),
        stream_idle_timeout: seconds(
            "stream_idle_timeout_s",
            args.stream_idle_timeout_s
                .or(spec.with.stream_idle_timeout_s)
                .unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT_S),
        )?,
        send_timeout: seconds(
            "send_timeout_s",
            args.send_timeout_s
                .or(spec.with.send_timeout_s)
                .unwrap_or(DEFAULT_SEND_TIMEOUT_S),
        )?,
        max_stream_queue_bytes: args
            .max_stream_queue_bytes
            .or(spec.with.max_stream_queue_bytes)
            .unwrap_or(DEFAULT_MAX_STREAM_QUEUE_BYTES)
            .max(1),
    };
    let conn_limits = ConnLimits {
        max_connections: args
            .max_connections
            .or(spec.with.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .max(1),
        max_concurrent_streams: args
            .max_concurrent_streams
            .or(spec.with.max_concurrent_streams)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS)
            .max(1),
        handshake_timeout: seconds(
            "handshake_timeout_s",
            args.handshake_timeout_s
                .or(spec.with.handshake_timeout_s)
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_S),
        )?,
        keepalive_interval: seconds(
            "keepalive_interval_s",
            spec.with
                .keepalive_interval_s
                .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL_S),
        )?,
    };
    let tls = match (
        args.ssl_certfile.or(spec.with.ssl_certfile.clone()),
        args.ssl_keyfile.or(spec.with.ssl_keyfile.clone()),
    ) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
            };
            Some((read(&cert, "certificate")?, read(&key, "private key")?))
        }
        _ => None,
    };
    let monitoring = args.port_monitoring.is_some() || spec.with.monitoring.unwrap_or(false);
    let port_monitoring = args
        .port_monitoring
        .or(spec.with.port_monitoring)
        .unwrap_or(0);
    let monitoring_host = args
        .monitoring_host
        .or(spec.with.monitoring_host.clone())
        .unwrap_or_else(|| DEFAULT_MONITORING_HOST.to_string());
    let websocket = args.http_port.is_some() || spec.with.serves_websocket();
    let port_http = args.http_port.or(spec.with.port_http).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let local = listener.local_addr()?;
    let mut gateway = Gateway::new(flow, limits)
        .connections(conn_limits)
        .metrics_max_rooms(
            spec.with
                .metrics_max_rooms
                .unwrap_or(DEFAULT_METRICS_MAX_ROOMS),
        );
    match verifier {
        Some(v) => {
            tracing::info!("Access control on: every stream needs an access token");
            gateway = gateway.auth(v);
        }
        None => tracing::warn!(
            "Access control off (no with.auth): anyone who reaches the gateway joins any room \
             under any name"
        ),
    }
    let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
    let mut web_addr = None;
    if websocket {
        let w = tokio::net::TcpListener::bind((host.as_str(), port_http))
            .await
            .with_context(|| format!("cannot listen on {host}:{port_http} for the web client"))?;
        web_addr = Some(w.local_addr()?);
        let options = WebOptions {
            origins: spec.with.websocket_origins.clone(),
            max_fps: spec
                .with
                .websocket_max_fps
                .unwrap_or(WebOptions::default().max_fps),
        };
        gateway = gateway.web(w, options);
    }
    let web_scheme = if tls.is_some() { "https" } else { "http" };
    if let Some((cert, key)) = tls {
        gateway = gateway.tls(cert, key);
    }
    let mut metrics_addr = None;
    if monitoring {
        let m = tokio::net::TcpListener::bind((monitoring_host.as_str(), port_monitoring))
            .await
            .with_context(|| {
                format!("cannot listen on {monitoring_host}:{port_monitoring} for metrics")
            })?;
        metrics_addr = Some(m.local_addr()?);
        gateway = gateway.monitoring(m);
    }
    print_panel(
        &spec
            .executors
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        local,
        scheme,
        web_addr.map(|a| (a, web_scheme)),
        metrics_addr,
        started,
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    let flow = gateway.flow();
    let server = tokio::spawn(gateway.serve(listener, shutdown.clone()));
    shutdown.cancelled().await;
    let served = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
    // Bounded by each executor's stop grace; the supervisors would finish the
    // job after this process's exit anyway, but a stopped Flow leaves nothing.
    flow.stop_processes().await;
    match served {
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

/// A duration setting in seconds: positive and finite, or an error naming it.
fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0 * 365.0) {
        anyhow::bail!("{name} must be a positive number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Jina-style endpoint panel, then one machine-readable line.
fn print_panel(
    executors: &[&str],
    local: SocketAddr,
    scheme: &str,
    web: Option<(SocketAddr, &str)>,
    metrics: Option<SocketAddr>,
    started: Instant,
) {
    let loopback = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
        } else {
            a
        }
    };
    let connect = loopback(local);
    println!(
        "vchat {}: Flow is ready to serve ({:.0} ms)",
        vchat_gateway::VERSION,
        started.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "  Protocol   {}",
        if web.is_some() {
            "GRPC, WEBSOCKET"
        } else {
            "GRPC"
        }
    );
    println!("  Executors  {}", executors.join(" -> "));
    println!("  Local      {scheme}://{connect}");
    if local.ip().is_unspecified() {
        println!(
            "  Network    {scheme}://<this machine's address>:{}",
            local.port()
        );
    }
    if let Some((w, web_scheme)) = web {
        println!("  Browser    {web_scheme}://{}/", loopback(w));
        if w.ip().is_unspecified() {
            println!(
                "  Browser    {web_scheme}://<this machine's address>:{}/",
                w.port()
            );
        }
    }
    if let Some(m) = metrics {
        println!("  Metrics    http://{}/metrics", loopback(m));
        println!("vchat: metrics on http://{}/metrics", loopback(m));
    }
    // The web line comes before the gRPC one, so that whoever waits for the
    // gRPC line has seen every address.
    if let Some((w, web_scheme)) = web {
        println!("vchat: listening on {web_scheme}://{}", loopback(w));
    }
    println!("vchat: listening on {scheme}://{connect}");
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
