//! A response as the callbacks see it: status, documents, extra outputs, latency.

use std::collections::BTreeMap;
use std::time::Duration;

use vchat_core::{DocumentArray, Value};
use vchat_proto::DataRequestProto;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::jina::status_proto::StatusCode;

/// One response, as handed to the callbacks.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) proto: DataRequestProto,
    pub(crate) latency: Option<Duration>,
}

impl Response {
    /// The request id, the same as the request's.
    pub fn request_id(&self) -> &str {
        self.proto.header.as_ref().map_or("", |h| &h.request_id)
    }

    /// Whether the gateway reported an ERROR status for this request.
    pub fn is_error(&self) -> bool {
        self.proto
            .header
            .as_ref()
            .and_then(|h| h.status.as_ref())
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }

    /// The error description, when [`is_error`](Self::is_error).
    pub fn error(&self) -> Option<&str> {
        if !self.is_error() {
            return None;
        }
        self.proto
            .header
            .as_ref()
            .and_then(|h| h.status.as_ref())
            .map(|s| s.description.as_str())
    }

    /// The response documents.
    pub fn docs(&self) -> Result<DocumentArray, vchat_core::Error> {
        match self.proto.data.as_ref().and_then(|d| d.documents.as_ref()) {
            Some(Documents::Docs(da)) => DocumentArray::from_proto(da.clone()),
            _ => Ok(DocumentArray::new()),
        }
    }

    /// Whether the gateway answered without processing (frame skipping or
    /// `max_fps`): no frame, `parameters.__skipped__`.
    pub fn is_skipped(&self) -> bool {
        self.proto
            .parameters
            .as_ref()
            .and_then(|p| p.fields.get("__skipped__"))
            .is_some_and(|v| matches!(v.kind, Some(vchat_core::value::Kind::BoolValue(true))))
    }

    /// The executors' extra outputs (`parameters.__results__`), flattened to
    /// `executor.key = value`, sorted.
    pub fn results(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let Some(vchat_core::value::Kind::StructValue(all)) = self
            .proto
            .parameters
            .as_ref()
            .and_then(|p| p.fields.get("__results__"))
            .and_then(|v| v.kind.as_ref())
        else {
            return out;
        };
        for (executor, v) in &all.fields {
            match &v.kind {
                Some(vchat_core::value::Kind::StructValue(s)) => {
                    out.extend(
                        s.fields
                            .iter()
                            .map(|(k, v)| (format!("{executor}.{k}"), v.clone())),
                    );
                }
                _ => out.push((executor.clone(), v.clone())),
            }
        }
        out
    }

    /// The response parameters.
    pub fn parameters(&self) -> BTreeMap<String, Value> {
        self.proto
            .parameters
            .as_ref()
            .map(|p| p.fields.clone())
            .unwrap_or_default()
    }

    /// Time from sending the request to receiving this response.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// The wire message.
    pub fn proto(&self) -> &DataRequestProto {
        &self.proto
    }
}
