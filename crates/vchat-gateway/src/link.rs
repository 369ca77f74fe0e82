//! The link between a gateway and an external `vchat executor`: TLS on the
//! gateway's channel (`tls: true` on the executor in the Flow) and a shared
//! secret on every call (the Flow's `executor_secret`, which `vchat executor
//! --secret-env VAR` requires).
//!
//! The secret travels as `authorization: Bearer <secret>` metadata on every
//! `process_single_data` call (frames and `/_vchat/stream_closed` alike),
//! `endpoint_discovery` and `_status`; the executor answers a call without it
//! with UNAUTHENTICATED. Health checks and reflection stay open: they carry no
//! data and change nothing.

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig};
use tonic::{Request, Status};

/// The environment variable naming a PEM file of extra CA certificates that the
/// gateway trusts for `tls: true` executors (besides the system's roots).
pub const EXECUTOR_CA_ENV: &str = "VCHAT_EXECUTOR_CA";

/// How an executor's server protects its link.
#[derive(Clone, Default)]
pub struct LinkOptions {
    /// Every call must carry this secret.
    pub secret: Option<String>,
    /// PEM certificate chain and private key: serve over TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for LinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkOptions")
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Adds the shared secret to a call to an executor.
pub(crate) fn authorize<T>(req: &mut Request<T>, secret: Option<&str>) {
    if let Some(secret) = secret
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {secret}"))
    {
        req.metadata_mut().insert("authorization", v);
    }
}

/// The server side: refuses a call without `secret` (compared in constant time).
pub(crate) fn require(
    secret: Option<String>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(secret) = &secret else {
            return Ok(req);
        };
        let sent = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(vchat_auth::bearer)
            .unwrap_or("");
        if same(sent.as_bytes(), secret.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "this executor requires the Flow's executor_secret (`authorization: Bearer` \
                 metadata) on every call",
            ))
        }
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The TLS settings of the gateway's channel to an executor: the system's
/// roots, and the CAs of [`EXECUTOR_CA_ENV`] when set.
pub(crate) fn client_tls() -> Result<ClientTlsConfig, String> {
    let mut config = ClientTlsConfig::new().with_native_roots();
    if let Some(path) = std::env::var_os(EXECUTOR_CA_ENV) {
        let pem = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read {EXECUTOR_CA_ENV}={}: {e}",
                std::path::Path::new(&path).display()
            )
        })?;
        config = config.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_required_when_set() {
        let mut check = require(Some("s3cret".into()));
        assert!(check(Request::new(())).is_err());
        let mut r = Request::new(());
        authorize(&mut r, Some("s3cret"));
        assert!(check(r).is_ok());
        let mut r = Request::new(());
        authorize(&mut r, Some("s3creT"));
        assert_eq!(check(r).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(require(None)(Request::new(())).is_ok());
    }
}
