//! The `vchat` command line, as a library so that a binary with extra executors can
//! reuse it: build a [`Registry`] from [`builtin_registry`], register your own
//! executors, and hand over to [`main_with`].
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let mut registry = vchat_cli::builtin_registry();
//!     // registry.register("MyExecutor", |cfg: MyConfig, name| MyExecutor::new(cfg, name));
//!     vchat_cli::main_with(registry)
//! }
//! ```

mod bench;
mod executor;
mod export;
mod flow;
mod ping;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vchat_core::Registry;

/// The built-in executors: the chat and those of `vchat_executor::builtin`.
pub fn builtin_registry() -> Registry {
    let mut r = Registry::new();
    vchat_executor::register_all(&mut r);
    r
}

/// vchat: real-time video Flows over Jina's gRPC protocol.
#[derive(Parser, Debug)]
#[command(name = "vchat", version)]
struct Cli {
    /// Worker threads of the async runtime; 1 runs everything on one thread (no
    /// hand-offs between threads: the lowest latency while one core is enough).
    /// Default: one per CPU.
    #[arg(long, global = true, env = "VCHAT_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a gateway and the executors a Flow YAML names.
    Flow(flow::FlowArgs),
    /// Serve one executor over gRPC, for a vchat or Jina Flow to call.
    Executor(executor::ExecutorArgs),
    /// Exit 0 when the Flow at ADDR answers, 1 otherwise.
    Ping(ping::PingArgs),
    /// Write a Flow as Kubernetes manifests or a docker-compose.yml: each
    /// executor a service of its own with stable replica names, the gateways in
    /// front of them (see `vchat export kubernetes --help`).
    Export(export::ExportArgs),
    /// Simulate chat users against a gateway and report latency percentiles.
    ///
    /// Each user is its own `Call` stream sending one frame per request
    /// (request_size 1) at --fps, or as fast as answers come within --window. It
    /// speaks the Jina 3 protocol, so it measures vchat and Jina alike. Reported
    /// over the measured window (after --warmup): per-frame latency from sending
    /// a request to receiving its response (matched by request_id) as p50, p90,
    /// p99 and max; responses per second against the target rate; errors;
    /// skipped frames (due while a user's window was full, never sent); lost
    /// frames (sent, never answered); bytes out and in; the CPU of the load
    /// generator's own processes (with --server-pid, the server's too), so
    /// that a load generator short of CPU shows. A table by default, one JSON
    /// object with --json; a progress bar on stderr while it runs.
    ///
    /// With --transport webrtc (ADDR: the gateway's http://HOST:PORT), each
    /// user is a WebRTC peer connection (POST /whip) sending an H.264 camera
    /// whose frames carry a barcode, and decoding the mosaic that comes back:
    /// mosaics per second per user, the round trip of each frame read back
    /// from the mosaic, bytes both ways, and which users each mosaic showed.
    Bench(bench::BenchArgs),
    /// Print an access token for a Flow with access control (`with.auth`).
    ///
    /// The token is an HS256 JWT with LiveKit's claims: the identity (`sub`),
    /// a display name, the key id (`iss`), `exp` and `nbf`, and a `video` grant
    /// of one room (`roomJoin`, `canPublish`, `canSubscribe`). Its holder joins
    /// that room as that identity, and nothing else: give each user their own.
    /// The secret is read from an environment variable, never the command line:
    ///
    ///   export VCHAT_KEY_SECRET=$(openssl rand -hex 32)
    ///
    ///   vchat token --key main --secret-env VCHAT_KEY_SECRET --room standup --identity alice --name "Alice"
    ///
    /// Clients send it as `vchat-client --token T` (or VCHAT_TOKEN), gRPC metadata
    /// `authorization: Bearer T`, or the browser page's `?token=T`.
    Token(token::TokenArgs),
    /// Leads the process group of an executor the Flow starts (see
    /// `vchat_gateway::python`); stdin is the gateway's lifeline.
    #[command(name = vchat_gateway::SUPERVISE_COMMAND, hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(clap::Args, Debug)]
struct SuperviseArgs {
    /// How long the group has after SIGTERM before SIGKILL, in milliseconds.
    #[arg(long)]
    grace_ms: u64,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<std::ffi::OsString>,
}

/// Runs the supervisor: no async runtime and no logging set up, a process of its
/// own whose only job is the group's life and end.
#[cfg(unix)]
fn supervise(args: SuperviseArgs) -> ExitCode {
    let (program, rest) = args.command.split_first().expect("required by clap");
    let code = vchat_gateway::supervise(
        std::time::Duration::from_millis(args.grace_ms),
        program,
        rest,
    );
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(not(unix))]
fn supervise(_: SuperviseArgs) -> ExitCode {
    eprintln!("vchat: process groups need a Unix system");
    ExitCode::FAILURE
}

/// Keeps freed frame-sized buffers in the process for the next frame.
///
/// glibc serves allocations over a threshold (128 KiB at first, raised as such
/// blocks are freed) with fresh `mmap`s, and gives freed heap tops back to the
/// kernel: with frames and mosaics of hundreds of KiB to several MiB, every
/// request then faults in and zeroes new pages (a fifth of the gateway's CPU at
/// one unthrottled stream). From the heap, up to 32 MiB, and trimmed only past
/// 256 MiB free, the same memory serves frame after frame.
fn keep_frame_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread
    // starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Parses the command line and runs it with `registry`'s executors.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Supervise(args) => return supervise(args),
        command => Cli { command, ..cli },
    };
    keep_frame_buffers();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr a pipe nobody reads any
        // more) is dropped; reporting it on stderr would panic the task that
        // logged, e.g. the one that stops the server on SIGTERM.
        .log_internal_errors(false)
        .init();
    let rt = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vchat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Flow(args) => flow::run(args, registry).await,
            Command::Executor(args) => executor::run(args, registry).await,
            Command::Ping(args) => ping::run(args).await,
            Command::Export(args) => export::run(args, registry).await,
            Command::Bench(args) => bench::run(args, cli.threads).await,
            Command::Token(args) => token::run(args),
            // Handled above, before the runtime; kept for completeness.
            Command::Supervise(args) => Ok(supervise(args)),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vchat: {e:#}");
            ExitCode::FAILURE
        }
    }
}
