//! `vchat flow --uses flow.yml`: serve a Flow until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use vchat_core::Registry;
use vchat_core::config::load_flow;
use vchat_gateway::config::{GatewayConfig, Overrides};
use vchat_gateway::{BuildOptions, CancellationToken, FlowRuntime};

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
    /// Most bytes of frames waiting for one gRPC stream's peer before the older
    /// ones are replaced by skipped replies (overrides `with.max_outbox_bytes`;
    /// default 2 MiB).
    #[arg(long)]
    max_outbox_bytes: Option<usize>,
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

impl FlowArgs {
    /// The settings given on the command line.
    fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
            prefetch: self.prefetch,
            max_message_bytes: self.max_message_bytes,
            max_streams: self.max_streams,
            max_frame_bytes: self.max_frame_bytes,
            max_streams_per_ip: self.max_streams_per_ip,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            stream_idle_timeout_s: self.stream_idle_timeout_s,
            send_timeout_s: self.send_timeout_s,
            max_stream_queue_bytes: self.max_stream_queue_bytes,
            max_outbox_bytes: self.max_outbox_bytes,
            handshake_timeout_s: self.handshake_timeout_s,
            max_memory_mb: self.max_memory_mb,
            ssl_certfile: self.ssl_certfile.clone(),
            ssl_keyfile: self.ssl_keyfile.clone(),
            port_monitoring: self.port_monitoring,
            monitoring_host: self.monitoring_host.clone(),
            http_port: self.http_port,
            auth_keys_file: self.auth_keys_file.clone(),
        }
    }
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
    let config = GatewayConfig::resolve(&spec.with, &args.overrides())
        .map_err(|m| anyhow::anyhow!("{}: {m}", args.uses.display()))?;
    vchat_core::budget::global().set_limit_mb(config.max_memory_mb);
    let flow = FlowRuntime::build(&spec, &registry, &options).await?;
    let bound = config.bind(flow).await.map_err(|m| anyhow::anyhow!(m))?;
    let scheme = if config.tls.is_some() {
        "grpcs"
    } else {
        "grpc"
    };
    let web_scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let shutdown = CancellationToken::new();
    on_signal(&shutdown)?;
    print_panel(
        &spec
            .executors
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        bound.grpc,
        scheme,
        bound.web.map(|a| (a, web_scheme)),
        bound.metrics,
        started,
    );

    let flow = bound.gateway.flow();
    let server = tokio::spawn(bound.gateway.serve(bound.listener, shutdown.clone()));
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

/// What the Flow serves and where, on stdout; the last line, `vchat: listening
/// on ...`, says it is ready.
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

/// Cancels `shutdown` on SIGTERM or SIGINT (Ctrl-C elsewhere).
pub(crate) fn on_signal(shutdown: &CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed here, before the caller says it is ready: a SIGTERM from
        // then on stops the server gracefully instead of killing it outright.
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut int =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // Shutdown first: nothing after a signal may keep the server up.
            shutdown.cancel();
            tracing::info!("{name}");
        });
    }
    #[cfg(not(unix))]
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        });
    }
    Ok(())
}
