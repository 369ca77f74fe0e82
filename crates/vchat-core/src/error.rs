//! The errors of vchat-core. They become a `StatusProto` (per request) or a
//! `tonic::Status` (per call) only at the gRPC boundary, in vchat-gateway.

use std::fmt;
use std::path::PathBuf;

/// What went wrong while handling one request.
///
/// Each variant is answered with an ERROR status on that request only: the stream
/// goes on and other requests are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed: a tensor whose buffer does not match its shape and
    /// dtype, an unsupported encoding, a message over the size limit.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request is well-formed but not what the executor accepts (wrong dtype or
    /// shape, a missing tag).
    #[error("{executor}: {message}")]
    Rejected {
        /// Name of the executor (its `name` in the Flow, or its jtype).
        executor: String,
        /// What the executor expected.
        message: String,
    },
    /// The request was not processed because a newer one from the same stream was
    /// waiting for a busy executor (`skip_frames`), or because the stream's
    /// `max_fps` was reached. Answered as SUCCESS, flagged skipped, with no docs.
    #[error("skipped: {0}")]
    Skipped(String),
    /// The executor failed while processing a valid request.
    #[error("{executor} failed: {message}")]
    Failed {
        /// Name of the executor.
        executor: String,
        /// What failed.
        message: String,
    },
}

impl Error {
    /// A short exception name for `StatusProto.exception.name`, as Jina reports the
    /// Python exception class.
    pub fn name(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "BadRequest",
            Error::Rejected { .. } => "Rejected",
            Error::Failed { .. } => "ExecutorFailed",
            Error::Skipped(_) => "Skipped",
        }
    }

    /// The executor the error came from, if any.
    pub fn executor(&self) -> Option<&str> {
        match self {
            Error::Rejected { executor, .. } | Error::Failed { executor, .. } => Some(executor),
            Error::BadRequest(_) | Error::Skipped(_) => None,
        }
    }
}

/// Where in a YAML file a configuration value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The YAML file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
}

impl Origin {
    /// The start of `file`, for errors about the file as a whole.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Origin {
            file: file.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        Ok(())
    }
}

/// A Flow or executor configuration that cannot be used, with the place it was read
/// from: `flow.yml:4:5: executors[0]: unknown key `nmae``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    /// File, line and column of the offending value (line 0 when the whole file is at
    /// fault, e.g. it cannot be read).
    pub origin: Origin,
    /// What is wrong, naming the key.
    pub message: String,
}

impl ConfigError {
    /// An error at `origin`.
    pub fn new(origin: Origin, message: impl Into<String>) -> Self {
        ConfigError {
            origin,
            message: message.into(),
        }
    }
}
