//! [`Request`] and [`Reply`] on Jina's wire (`DataRequestProto`), both ways: for
//! the places where the wire is (the gRPC door, the executor service, the client
//! of an executor in another process), and nowhere else.

use std::collections::BTreeMap;

use prost_types::{Struct, Value, value::Kind};
use vchat_proto::jina::RouteProto;
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::status_proto::{ExceptionProto, StatusCode};
use vchat_proto::{DataRequestProto, HeaderProto, StatusProto};

use crate::request::ROOT_ENDPOINT;
use crate::{DocumentArray, Error, Outcome, Reply, Request};

/// Parameter key flagging a reply as skipped (no frame; see `skip_frames`).
pub const SKIPPED_PARAMETER: &str = "__skipped__";
/// Parameter key of the executors' extra outputs, by executor name (as in Jina).
pub const RESULTS_PARAMETER: &str = "__results__";

/// What a wire request carries besides its [`Request`]: returned, as received, in
/// every reply to it (with the reply's status).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    /// The request's header.
    pub header: HeaderProto,
    /// The request's routes.
    pub routes: Vec<RouteProto>,
}

impl Envelope {
    /// The envelope of a request that has only a header (one read without its
    /// body, e.g. because it is too large).
    pub fn of_header(header: HeaderProto) -> Self {
        Envelope {
            header,
            routes: Vec::new(),
        }
    }

    /// The endpoint the request asks for.
    pub fn endpoint(&self) -> &str {
        endpoint(&self.header)
    }
}

/// The endpoint a wire header asks for: `exec_endpoint`, or `/`.
pub fn endpoint(header: &HeaderProto) -> &str {
    header.exec_endpoint.as_deref().unwrap_or(ROOT_ENDPOINT)
}

/// Splits a wire request into its envelope and its [`Request`]; a request that
/// cannot be one (pickled documents, an invalid tensor) is its error [`Reply`].
pub fn request_from_proto(proto: DataRequestProto) -> (Envelope, Result<Request, Reply>) {
    let DataRequestProto {
        header,
        parameters,
        routes,
        data,
    } = proto;
    let header = header.unwrap_or_default();
    let parameters = parameters.map(|p| p.fields).unwrap_or_default();
    let docs = match data.and_then(|d| d.documents) {
        None => Ok(DocumentArray::new()),
        Some(Documents::Docs(da)) => DocumentArray::from_proto(da),
        Some(Documents::DocsBytes(_)) => Err(Error::BadRequest(
            "data.docs_bytes (pickled documents) is not supported: send data.docs".into(),
        )),
    };
    let request = match docs {
        Ok(docs) => Ok(Request {
            id: header.request_id.clone(),
            endpoint: endpoint(&header).to_string(),
            target_executor: header.target_executor.clone().filter(|t| !t.is_empty()),
            parameters,
            docs,
        }),
        Err(e) => Err(Reply {
            parameters,
            ..Reply::error(e)
        }),
    };
    (Envelope { header, routes }, request)
}

/// The wire reply: `envelope` with the reply's status, documents and parameters
/// (the request's, plus `__skipped__` and `__results__` when they apply).
pub fn reply_into_proto(envelope: Envelope, reply: Reply) -> DataRequestProto {
    let Envelope { mut header, routes } = envelope;
    let Reply {
        outcome,
        docs,
        results,
        mut parameters,
    } = reply;
    match &outcome {
        Outcome::Ok => {}
        Outcome::Skipped(reason) => {
            tracing::trace!(reason, "Skipped");
            parameters.insert(SKIPPED_PARAMETER.to_string(), bool_value(true));
        }
        Outcome::Error(e) => header.status = Some(error_status(e)),
    }
    if !results.is_empty() {
        parameters.insert(RESULTS_PARAMETER.to_string(), struct_value(results));
    }
    DataRequestProto {
        header: Some(header),
        parameters: (!parameters.is_empty()).then_some(Struct { fields: parameters }),
        routes,
        data: docs.map(docs_content),
    }
}

/// A [`Request`] as a wire request (to an executor in another process).
pub fn request_into_proto(request: Request) -> DataRequestProto {
    DataRequestProto {
        header: Some(HeaderProto {
            request_id: request.id,
            exec_endpoint: Some(request.endpoint),
            target_executor: request.target_executor,
            ..Default::default()
        }),
        parameters: (!request.parameters.is_empty()).then_some(Struct {
            fields: request.parameters,
        }),
        routes: Vec::new(),
        data: Some(docs_content(request.docs)),
    }
}

/// A wire reply read back: its documents, or the error it carries. Pickled
/// documents and invalid tensors are errors too.
pub fn reply_from_proto(proto: DataRequestProto) -> Result<DocumentArray, Error> {
    if let Some(s) = proto.header.as_ref().and_then(|h| h.status.as_ref())
        && s.code == StatusCode::Error as i32
    {
        return Err(Error::Failed {
            executor: s
                .exception
                .as_ref()
                .map(|x| x.executor.clone())
                .unwrap_or_default(),
            message: s.description.clone(),
        });
    }
    match proto.data.and_then(|d| d.documents) {
        Some(Documents::Docs(d)) => DocumentArray::from_proto(d),
        Some(Documents::DocsBytes(_)) => Err(Error::BadRequest(
            "data.docs_bytes (pickled documents) is not supported".into(),
        )),
        None => Ok(DocumentArray::new()),
    }
}

/// Whether a wire reply carries an ERROR status.
pub fn is_error(proto: &DataRequestProto) -> bool {
    proto
        .header
        .as_ref()
        .and_then(|h| h.status.as_ref())
        .is_some_and(|s| s.code == StatusCode::Error as i32)
}

/// Whether a wire reply is flagged skipped.
pub fn is_skipped(proto: &DataRequestProto) -> bool {
    proto
        .parameters
        .as_ref()
        .is_some_and(|p| p.fields.contains_key(SKIPPED_PARAMETER))
}

/// The ERROR status Jina's client reports for `e`.
pub fn error_status(e: &Error) -> StatusProto {
    let description = e.to_string();
    StatusProto {
        code: StatusCode::Error as i32,
        exception: Some(ExceptionProto {
            name: e.name().to_string(),
            args: vec![description.clone()],
            stacks: Vec::new(),
            executor: e.executor().unwrap_or_default().to_string(),
        }),
        description,
    }
}

fn docs_content(docs: DocumentArray) -> DataContentProto {
    DataContentProto {
        documents: Some(Documents::Docs(docs.into_proto())),
    }
}

/// A boolean `google.protobuf.Value`.
pub fn bool_value(b: bool) -> Value {
    Value {
        kind: Some(Kind::BoolValue(b)),
    }
}

/// A `google.protobuf.Value` holding a Struct of `fields`.
pub fn struct_value(fields: BTreeMap<String, Value>) -> Value {
    Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Document, string_value};

    fn wire(docs: usize) -> DataRequestProto {
        let mut params = BTreeMap::new();
        params.insert("k".to_string(), string_value("v"));
        DataRequestProto {
            header: Some(HeaderProto {
                request_id: "r1".into(),
                target_executor: Some(String::new()),
                ..Default::default()
            }),
            parameters: Some(Struct { fields: params }),
            routes: vec![RouteProto {
                executor: "gateway".into(),
                ..Default::default()
            }],
            data: Some(docs_content(DocumentArray(
                (0..docs).map(|_| Document::new()).collect(),
            ))),
        }
    }

    #[test]
    fn a_request_and_its_reply_keep_the_envelope_and_parameters() {
        let (envelope, request) = request_from_proto(wire(2));
        let request = request.unwrap();
        assert_eq!(request.id, "r1");
        assert_eq!(request.endpoint, "/");
        assert_eq!(request.target_executor, None, "an empty target is none");
        assert_eq!(request.docs.len(), 2);
        let mut reply = Reply::ok(request.docs);
        reply.parameters = request.parameters;
        let back = reply_into_proto(envelope, reply);
        assert_eq!(back.header.as_ref().unwrap().request_id, "r1");
        assert_eq!(back.routes.len(), 1);
        assert_eq!(back.parameters.unwrap().fields["k"], string_value("v"));
        assert!(!is_error(&wire(0)));
    }

    #[test]
    fn pickled_documents_are_an_error_reply_that_keeps_the_parameters() {
        let mut w = wire(0);
        w.data = Some(DataContentProto {
            documents: Some(Documents::DocsBytes(vec![1, 2].into())),
        });
        let (envelope, request) = request_from_proto(w);
        let reply = request.unwrap_err();
        let back = reply_into_proto(envelope, reply);
        assert!(is_error(&back));
        assert!(back.parameters.unwrap().fields.contains_key("k"));
        assert!(back.data.is_none());
    }

    #[test]
    fn skipped_and_results_are_parameters() {
        let mut reply = Reply::skipped("busy");
        reply.results.insert("a".into(), string_value("x"));
        let back = reply_into_proto(Envelope::default(), reply);
        assert!(is_skipped(&back));
        let fields = back.parameters.unwrap().fields;
        assert!(fields.contains_key(RESULTS_PARAMETER));
    }

    #[test]
    fn an_error_reply_reads_back_as_an_error() {
        let back = reply_into_proto(
            Envelope::default(),
            Reply::error(Error::BadRequest("nope".into())),
        );
        let e = reply_from_proto(back).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
