//! The Flow's own envelope: a [`Request`] in, a [`Reply`] out. Every door (gRPC,
//! WebSocket) turns its transport's messages into Requests and Replies into
//! messages; the wire types appear only where the wire is ([`proto`](crate::proto)).

use std::collections::BTreeMap;

use prost_types::Value;

use crate::{DocumentArray, Error, new_id};

/// The endpoint of a request that names none, as Jina's client sends it.
pub const ROOT_ENDPOINT: &str = "/";

/// One request through a Flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The request's id; its replies carry it.
    pub id: String,
    /// The endpoint asked for (`/` when the client names none).
    pub endpoint: String,
    /// A regular expression of the executor names that process it; `None`: all.
    pub target_executor: Option<String>,
    /// Parameters, global keys and `parameters[<executor name>]` sections (see
    /// [`parameters_for`](crate::parameters_for)).
    pub parameters: BTreeMap<String, Value>,
    /// The documents: one per frame.
    pub docs: DocumentArray,
}

impl Request {
    /// A request for `endpoint` with a fresh id.
    pub fn new(endpoint: impl Into<String>, docs: DocumentArray) -> Self {
        Request {
            id: new_id(),
            endpoint: endpoint.into(),
            docs,
            ..Default::default()
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Processed.
    Ok,
    /// Not processed, on purpose (a newer frame was waiting, or the stream's frame
    /// rate cap): no documents come back. The reason is for logs.
    Skipped(String),
    /// Failed: the request only, the stream goes on.
    Error(Error),
}

/// What a Flow answers to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// How it ended.
    pub outcome: Outcome,
    /// The documents: the Flow's output, or on an error those the failing
    /// executor left (if any); `None` when nothing came back.
    pub docs: Option<DocumentArray>,
    /// The executors' extra outputs, by executor name.
    pub results: BTreeMap<String, Value>,
    /// The request's parameters, returned with its reply as Jina does.
    pub parameters: BTreeMap<String, Value>,
}

impl Reply {
    /// A processed request's reply.
    pub fn ok(docs: DocumentArray) -> Self {
        Reply {
            outcome: Outcome::Ok,
            docs: Some(docs),
            results: BTreeMap::new(),
            parameters: BTreeMap::new(),
        }
    }

    /// The reply to a request that failed with `e` before any executor ran.
    pub fn error(e: Error) -> Self {
        Reply {
            outcome: Outcome::Error(e),
            docs: None,
            results: BTreeMap::new(),
            parameters: BTreeMap::new(),
        }
    }

    /// The reply to a request that was not processed on purpose.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Reply {
            outcome: Outcome::Skipped(reason.into()),
            docs: None,
            results: BTreeMap::new(),
            parameters: BTreeMap::new(),
        }
    }

    /// The error, when the request failed.
    pub fn failure(&self) -> Option<&Error> {
        match &self.outcome {
            Outcome::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the request failed.
    pub fn is_error(&self) -> bool {
        matches!(self.outcome, Outcome::Error(_))
    }

    /// Whether the request was skipped.
    pub fn is_skipped(&self) -> bool {
        matches!(self.outcome, Outcome::Skipped(_))
    }

    /// The first document that came back, if any.
    pub fn first_doc(&self) -> Option<&crate::Document> {
        self.docs.as_ref().and_then(|d| d.first())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_told_apart() {
        let ok = Reply::ok(DocumentArray::new());
        assert!(!ok.is_error() && !ok.is_skipped() && ok.failure().is_none());
        let skipped = Reply::skipped("busy");
        assert!(skipped.is_skipped() && skipped.docs.is_none());
        let failed = Reply::error(Error::BadRequest("no".into()));
        assert!(failed.is_error());
        assert_eq!(failed.failure(), Some(&Error::BadRequest("no".into())));
    }

    #[test]
    fn new_requests_get_fresh_ids() {
        let a = Request::new("/", DocumentArray::new());
        let b = Request::new("/", DocumentArray::new());
        assert_eq!(a.endpoint, "/");
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 32);
    }
}
