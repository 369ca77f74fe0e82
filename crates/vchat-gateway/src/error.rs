//! The errors of the gateway crate.

/// Errors of the gateway crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A socket could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}
