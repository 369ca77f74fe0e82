//! `vchat executor --uses executor/config.yml --port N`: one executor as a service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use vchat_core::Registry;
use vchat_core::config::{DEFAULT_MAX_MESSAGE_BYTES, load_executor};
use vchat_gateway::{CancellationToken, FlowRuntime, Node, serve_executor_with};

#[derive(Args, Debug)]
pub struct ExecutorArgs {
    /// The executor YAML (`jtype`, `with`, `metas`).
    #[arg(long)]
    uses: PathBuf,
    /// Port to listen on; 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Name of the executor (default: `metas.name`, else the jtype).
    #[arg(long)]
    name: Option<String>,
    /// Largest request in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Environment variable holding a shared secret that every call must carry
    /// (the Flow's `executor_secret` on this executor); without it, anyone who
    /// reaches the port can send frames and end streams.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// PEM certificate chain: serve over TLS (`tls: true` on the executor in the
    /// Flow); needs --ssl-keyfile.
    #[arg(long, requires = "ssl_keyfile")]
    ssl_certfile: Option<PathBuf>,
    /// PEM private key of --ssl-certfile.
    #[arg(long, requires = "ssl_certfile")]
    ssl_keyfile: Option<PathBuf>,
}

pub async fn run(args: ExecutorArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    let mut spec = load_executor(&args.uses)?;
    if let Some(n) = args.name {
        spec.name = n;
    }
    if !spec.py_modules.is_empty() {
        bail!(
            "{} lists py_modules: a Python executor is served by Jina (`jina executor --uses {}`), not by vchat",
            args.uses.display(),
            args.uses.display()
        );
    }
    let secret = match &args.secret_env {
        Some(var) => {
            let s = std::env::var(var)
                .with_context(|| format!("environment variable {var} (--secret-env) is not set"))?;
            anyhow::ensure!(
                !s.is_empty(),
                "environment variable {var} (--secret-env) is empty"
            );
            Some(s)
        }
        None => None,
    };
    let tls = match (&args.ssl_certfile, &args.ssl_keyfile) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
            };
            Some((read(cert, "certificate")?, read(key, "private key")?))
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
    let link = vchat_gateway::LinkOptions { secret, tls };
    let executor = registry.build(&spec)?;
    let flow = FlowRuntime::new(vec![Node::new(spec.name.clone(), executor)]);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let local = listener.local_addr()?;
    let shown = if local.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
    } else {
        local
    };
    let shutdown = CancellationToken::new();
    crate::flow::on_signal(&shutdown)?;
    println!(
        "vchat {}: executor `{}` ({}) is ready",
        vchat_gateway::VERSION,
        spec.name,
        spec.jtype
    );
    println!("vchat: listening on {scheme}://{shown}");
    serve_executor_with(flow, args.max_message_bytes, listener, shutdown, link).await?;
    Ok(ExitCode::SUCCESS)
}
