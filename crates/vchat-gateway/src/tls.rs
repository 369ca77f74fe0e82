//! TLS for the gateway's doors: rustls with ring, one certificate for every port.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::error::GatewayError;

/// A TLS acceptor for the PEM certificate chain and key (the Flow's
/// `ssl_certfile` and `ssl_keyfile`), speaking HTTP/1.1.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, GatewayError> {
    tls_acceptor_for(cert_pem, key_pem, b"http/1.1")
}

/// A TLS acceptor for the PEM certificate chain and key that offers `alpn`
/// (`h2` on the gRPC port).
pub(crate) fn tls_acceptor_for(
    cert_pem: &[u8],
    key_pem: &[u8],
    alpn: &[u8],
) -> Result<TlsAcceptor, GatewayError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| GatewayError::Tls(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| GatewayError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
