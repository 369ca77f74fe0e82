//! The client library's error type.

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not `grpc://host:port`, `grpcs://host:port` or `host:port`.
    #[error("invalid address {0:?}: expected grpc://HOST:PORT or grpcs://HOST:PORT")]
    Address(String),
    /// The gateway answered `dry_run`, but its Flow is not ready (an external
    /// executor does not answer).
    #[error("{addr}: {reason}")]
    NotReady {
        /// The gateway address.
        addr: String,
        /// The gateway's reason.
        reason: String,
    },
    /// The TLS settings (a `--ca` file) cannot be used.
    #[error("TLS for {addr}: {message}")]
    Tls {
        /// The gateway address.
        addr: String,
        /// What is wrong.
        message: String,
    },
    /// The connection failed or broke.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        /// The gateway address.
        addr: String,
        /// What failed.
        source: tonic::transport::Error,
    },
    /// The server ended the call with an error status.
    #[error("{addr}: {status}")]
    Rpc {
        /// The gateway address.
        addr: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
}

impl ClientError {
    /// Whether the gateway could not be reached or went away (as opposed to
    /// refusing the call): worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            ),
            ClientError::NotReady { .. } => true,
            ClientError::Address(_) | ClientError::Tls { .. } => false,
        }
    }
}
