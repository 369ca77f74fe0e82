//! A connection to a gateway: addresses, TLS, readiness.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vchat_proto::jina::jina_gateway_dry_run_rpc_client::JinaGatewayDryRunRpcClient;
use vchat_proto::jina::status_proto::StatusCode;

use crate::ClientError;

/// A connection to a gateway.
#[derive(Clone)]
pub struct Client {
    pub(crate) addr: String,
    pub(crate) channel: Channel,
}

/// `grpc://host:port` or `host:port` to an `http://` URI for tonic,
/// `grpcs://host:port` to an `https://` one.
fn endpoint_uri(addr: &str) -> Result<String, ClientError> {
    let (scheme, rest) = match addr.strip_prefix("grpcs://") {
        Some(rest) => ("https", rest),
        None => ("http", addr.strip_prefix("grpc://").unwrap_or(addr)),
    };
    if rest.contains("://") || rest.is_empty() {
        return Err(ClientError::Address(addr.to_string()));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| ClientError::Address(addr.to_string()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ClientError::Address(addr.to_string()));
    }
    Ok(format!("{scheme}://{rest}"))
}

impl Client {
    /// A client for `addr` (`grpc://host:port`, or `grpcs://host:port` for TLS
    /// checked against the system's root certificates). Connects lazily, on
    /// first use.
    pub fn new(addr: &str) -> Result<Self, ClientError> {
        Self::connect(addr, None)
    }

    /// A client for `grpcs://host:port` whose certificate is signed by the CA in
    /// `ca_pem` (a private CA, or a self-signed certificate), instead of the
    /// system's roots.
    pub fn with_ca(addr: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        if !addr.starts_with("grpcs://") {
            return Err(ClientError::Tls {
                addr: addr.to_string(),
                message: "a CA certificate is for grpcs:// addresses".into(),
            });
        }
        Self::connect(addr, Some(ca_pem))
    }

    /// [`new`](Self::new), or [`with_ca`](Self::with_ca) with the PEM file `ca`
    /// when one is given (the command lines' `--ca FILE`).
    pub fn open(addr: &str, ca: Option<&std::path::Path>) -> Result<Self, ClientError> {
        match ca {
            None => Self::new(addr),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ClientError::Tls {
                    addr: addr.to_string(),
                    message: format!("cannot read the CA certificate {}: {e}", path.display()),
                })?;
                Self::with_ca(addr, &pem)
            }
        }
    }

    fn connect(addr: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let uri = endpoint_uri(addr)?;
        let tls = uri.starts_with("https://");
        let mut endpoint =
            Endpoint::from_shared(uri).map_err(|_| ClientError::Address(addr.to_string()))?;
        if tls {
            let config = match ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(config).map_err(|e| ClientError::Tls {
                addr: addr.to_string(),
                message: format!("{e:?}"),
            })?;
        }
        let channel = endpoint
            .tcp_nodelay(true)
            .initial_stream_window_size(vchat_core::STREAM_WINDOW)
            .initial_connection_window_size(vchat_core::CONNECTION_WINDOW)
            .max_frame_size(vchat_core::MAX_FRAME)
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Client {
            addr: addr.to_string(),
            channel,
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn rpc_error(&self, status: tonic::Status) -> ClientError {
        ClientError::Rpc {
            addr: self.addr.clone(),
            status: Box::new(status),
        }
    }

    /// Asks the gateway whether its Flow is ready (`dry_run`).
    pub async fn dry_run(&self) -> Result<(), ClientError> {
        let mut c = JinaGatewayDryRunRpcClient::new(self.channel.clone());
        let status = c
            .dry_run(())
            .await
            .map_err(|s| self.rpc_error(s))?
            .into_inner();
        if status.code == StatusCode::Error as i32 {
            return Err(ClientError::NotReady {
                addr: self.addr.clone(),
                reason: status.description,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint_uri("grpc://127.0.0.1:80").unwrap(),
            "http://127.0.0.1:80"
        );
        assert_eq!(endpoint_uri("localhost:1").unwrap(), "http://localhost:1");
        assert_eq!(
            endpoint_uri("grpcs://example.org:443").unwrap(),
            "https://example.org:443"
        );
        assert!(Client::with_ca("grpc://x:1", b"").is_err());
        assert!(endpoint_uri("http://x:1").is_err());
        assert!(endpoint_uri("grpc://x").is_err());
        assert!(endpoint_uri("grpc://x:port").is_err());
        assert!(Client::new("nope").is_err());
    }
}
