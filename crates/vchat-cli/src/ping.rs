//! `vchat ping ADDR`: is the Flow there and ready?

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use vchat_client::Client;

#[derive(Args, Debug)]
pub struct PingArgs {
    /// Gateway address: grpc://HOST:PORT, or grpcs://HOST:PORT for TLS.
    addr: String,
    /// CA certificate (PEM) for grpcs:// [default: the system's roots].
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

pub async fn run(args: PingArgs) -> anyhow::Result<ExitCode> {
    let client = Client::open(&args.addr, args.ca.as_deref())?;
    let wait = Duration::from_secs_f64(args.timeout.max(0.0));
    match tokio::time::timeout(wait, client.dry_run()).await {
        Ok(Ok(())) => {
            println!("{}: ready", args.addr);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => {
            // The gateway's own reason when it answered; the whole error otherwise.
            let reason = match &e {
                vchat_client::ClientError::NotReady { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            println!("{}: not ready: {reason}", args.addr);
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            println!(
                "{}: not ready: no answer within {:.1} s",
                args.addr, args.timeout
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
