//! `vchat token`: mint an access token for a Flow with `with.auth`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use vchat_auth::TokenSpec;

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Key id: a key of the Flow's `with.auth.keys` (the token's `iss`).
    #[arg(long)]
    key: String,
    /// Environment variable holding the key's secret (at least 32 bytes), so
    /// that the secret is not on the command line.
    #[arg(long, value_name = "VAR")]
    secret_env: String,
    /// The one room the token lets its holder into.
    #[arg(long)]
    room: String,
    /// Who the holder is: their `tags.user` in the room (the token's `sub`).
    #[arg(long)]
    identity: String,
    /// The name on the holder's tile; default: the identity.
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "6h", value_parser = parse_ttl)]
    ttl: Duration,
    /// A viewer: sees the room's mosaic without appearing in it (canPublish false).
    #[arg(long)]
    receive_only: bool,
    /// Frames are acknowledged without mosaics (canSubscribe false).
    #[arg(long)]
    send_only: bool,
}

/// `90`, `90s`, `15m`, `6h`, `2d`.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 15m, 6h or 2d"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        u => return Err(format!("unknown unit {u:?}: use s, m, h or d")),
    };
    match n.checked_mul(unit_s) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        Some(_) => Err("the ttl must be longer than 0".into()),
        None => Err(format!("{s:?} is too long")),
    }
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let secret = std::env::var(&args.secret_env)
        .with_context(|| format!("environment variable {} is not set", args.secret_env))?;
    anyhow::ensure!(
        !(args.receive_only && args.send_only),
        "--receive-only and --send-only together would grant neither sending nor receiving"
    );
    let spec = TokenSpec {
        identity: args.identity,
        name: args.name,
        room: args.room,
        ttl: args.ttl,
        can_publish: !args.receive_only,
        can_subscribe: !args.send_only,
    };
    let token = vchat_auth::mint(&args.key, secret.as_bytes(), &spec)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(2 * 86_400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }
}
