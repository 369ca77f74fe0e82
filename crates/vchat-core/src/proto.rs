//! [`Request`] and [`Reply`] on Jina's wire (`DataRequestProto`), both ways: for
//! the places where the wire is (the gRPC door, the executor service, the client
//! of an executor in another process), and nowhere else.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost_types::{Struct, Value, value::Kind};
use tonic::Status;
use vchat_proto::docarray::{document_proto, nd_array_proto};
use vchat_proto::jina::RouteProto;
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::status_proto::{ExceptionProto, StatusCode};
use vchat_proto::prost::Message as _;
use vchat_proto::{DataRequestProto, HeaderProto, StatusProto};

use crate::request::ROOT_ENDPOINT;
use crate::wire::{Encode, Ropes, encode_grpc_message_with};
use crate::{Content, DocumentArray, Error, Outcome, Reply, Request, Tensor};

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

/// A reply on its way to the wire, its tensors still in the pieces they were
/// put together from (a vertical mosaic: its users' frames), so that encoding
/// it writes those pieces instead of a joined copy (see [`crate::wire::Ropes`]).
#[derive(Debug)]
pub struct WireReply {
    /// The wire reply, with stand-ins for the ropes' bytes.
    proto: DataRequestProto,
    ropes: Ropes,
}

impl WireReply {
    /// The length of the encoded message (the same as of the joined reply).
    pub fn encoded_len(&self) -> usize {
        self.proto.encoded_len()
    }

    /// The wire reply, its ropes' bytes stand-ins: for its header, status,
    /// parameters and the kind of its documents' content.
    pub fn proto(&self) -> &DataRequestProto {
        &self.proto
    }

    /// The gRPC message, as chunks that share the reply's buffers.
    pub fn encode(&self) -> Result<Vec<Bytes>, Status> {
        encode_grpc_message_with(&self.proto, &self.ropes)
    }

    /// The wire reply with its ropes joined (a copy of each).
    pub fn into_proto(self) -> DataRequestProto {
        let WireReply { mut proto, ropes } = self;
        if ropes.is_empty() {
            return proto;
        }
        if let Some(Documents::Docs(docs)) = proto.data.as_mut().and_then(|d| d.documents.as_mut())
        {
            for doc in &mut docs.docs {
                if let Some(document_proto::Content::Tensor(t)) = &mut doc.content
                    && let Some(nd_array_proto::Content::Dense(d)) = &mut t.content
                    && let Some(rope) = ropes.rope_of(&d.buffer)
                {
                    d.buffer = rope.contiguous().clone();
                }
            }
        }
        proto
    }
}

impl From<DataRequestProto> for WireReply {
    fn from(proto: DataRequestProto) -> Self {
        WireReply {
            proto,
            ropes: Ropes::default(),
        }
    }
}

impl Encode for WireReply {
    fn encode_chunks(&self) -> Result<Vec<Bytes>, Status> {
        self.encode()
    }
}

/// [`reply_into_proto`], keeping the reply's tensors in their pieces.
pub fn reply_into_wire(envelope: Envelope, mut reply: Reply) -> WireReply {
    let mut ropes = Ropes::default();
    for doc in reply.docs.iter_mut().flat_map(|d| d.iter_mut()) {
        if let Some(Content::Tensor(t)) = &mut doc.content
            && !t.rope().is_contiguous()
        {
            let stand_in = ropes.stand_in(t.rope().clone());
            // Same dtype, shape and length: cannot fail.
            if let Ok(s) = Tensor::new(t.dtype(), t.shape().to_vec(), stand_in) {
                *t = s;
            }
        }
    }
    WireReply {
        proto: reply_into_proto(envelope, reply),
        ropes,
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

    /// A reply of three documents: a rope of `pieces` (each `piece` bytes),
    /// nothing, and a tensor in one buffer.
    fn roped_reply(pieces: usize, piece: usize) -> (Reply, Vec<bytes::Bytes>) {
        let parts: Vec<bytes::Bytes> = (0..pieces)
            .map(|i| bytes::Bytes::from(vec![i as u8 + 1; piece]))
            .collect();
        let rope = crate::Rope::from_pieces(parts.clone()).unwrap();
        let rows = pieces * piece / 3;
        let stacked = Tensor::from_rope(crate::DType::U8, vec![rows, 1, 3], rope).unwrap();
        let whole = Tensor::image(1, 2, 3, bytes::Bytes::from_static(&[9; 6])).unwrap();
        let docs = vec![
            Document::with_tensor(stacked),
            Document::new(),
            Document::with_tensor(whole),
        ];
        (Reply::ok(DocumentArray(docs)), parts)
    }

    fn joined(chunks: &[bytes::Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn a_roped_reply_is_written_as_its_pieces_with_the_same_bytes() {
        let envelope = request_from_proto(wire(0)).0;
        let (reply, parts) = roped_reply(3, 6144);
        let wire_reply = reply_into_wire(envelope.clone(), reply.clone());
        let chunks = wire_reply.encode().unwrap();
        // (Joining a rope is shared by its clones: the plain message comes second.)
        let plain =
            crate::wire::encode_grpc_message(&reply_into_proto(envelope.clone(), reply.clone()))
                .unwrap();
        assert_eq!(
            joined(&chunks),
            joined(&plain),
            "the same bytes on the wire"
        );
        assert_eq!(
            wire_reply.encoded_len() + 5,
            chunks.iter().map(|c| c.len()).sum::<usize>()
        );
        // Each piece is a chunk of its own: shared, not copied.
        for p in &parts {
            assert!(
                chunks.iter().any(|c| c.as_ptr() == p.as_ptr()),
                "a piece was copied"
            );
        }
        // Joined for whoever needs a plain message.
        assert_eq!(
            wire_reply.into_proto(),
            reply_into_proto(envelope.clone(), reply)
        );
        // Pieces too small to be worth their own chunk are joined.
        let (small, _) = roped_reply(3, 6);
        let small_wire = reply_into_wire(envelope.clone(), small.clone());
        assert_eq!(
            joined(&small_wire.encode().unwrap()),
            joined(&crate::wire::encode_grpc_message(&reply_into_proto(envelope, small)).unwrap())
        );
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
