//! Requests of `jina.JinaRPC/Call` decoded from their message bytes: an oversized
//! request becomes an error for that request instead of ending the stream.

use bytes::Buf;
use prost::Message;
use tonic::Status;
use vchat_proto::{DataRequestProto, HeaderProto};

/// One message read from a client stream.
#[derive(Debug)]
pub enum Inbound {
    /// A request within the size limit, decoded.
    Request(DataRequestProto),
    /// A request over the size limit: only its header was read, so that the error
    /// response carries its `request_id`.
    Oversized {
        /// The request's header.
        header: HeaderProto,
        /// Its encoded size in bytes.
        size: usize,
    },
}

/// Reads only field 1 (the header) of a `DataRequestProto`; prost skips the rest.
#[derive(Clone, PartialEq, Message)]
struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    header: Option<HeaderProto>,
}

/// Decodes one `Call` request from its message bytes. The pixels of its frames
/// stay slices of the buffers they arrived in (every protobuf `bytes` field is a
/// [`bytes::Bytes`]). A
/// request over `limit` bytes becomes [`Inbound::Oversized`], so that it gets an
/// ERROR response and the stream goes on.
pub fn decode_request(bytes: impl Buf, limit: usize) -> Result<Inbound, Status> {
    let size = bytes.remaining();
    let undecodable =
        |e: prost::DecodeError| Status::invalid_argument(format!("undecodable request: {e}"));
    if size > limit {
        let header = HeaderOnly::decode(bytes)
            .map_err(undecodable)?
            .header
            .unwrap_or_default();
        return Ok(Inbound::Oversized { header, size });
    }
    DataRequestProto::decode(bytes)
        .map(Inbound::Request)
        .map_err(undecodable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn oversized_requests_keep_their_header() {
        let req = DataRequestProto {
            header: Some(HeaderProto {
                request_id: "big".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = Bytes::from(req.encode_to_vec());
        match decode_request(bytes.clone(), 2).unwrap() {
            Inbound::Oversized { header, size } => {
                assert_eq!((header.request_id.as_str(), size), ("big", bytes.len()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_request(bytes, 1 << 20).unwrap(),
            Inbound::Request(_)
        ));
        let e = decode_request(Bytes::from_static(&[0xff, 0xff]), 100).unwrap_err();
        assert!(e.message().contains("undecodable request"), "{e}");
    }

    #[test]
    fn header_only_skips_the_rest() {
        let req = DataRequestProto {
            header: Some(HeaderProto {
                request_id: "abc".into(),
                ..Default::default()
            }),
            data: Some(vchat_proto::jina::data_request_proto::DataContentProto {
                documents: Some(
                    vchat_proto::jina::data_request_proto::data_content_proto::Documents::DocsBytes(
                        vec![0u8; 1000].into(),
                    ),
                ),
            }),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let h = HeaderOnly::decode(&bytes[..]).unwrap();
        assert_eq!(h.header.unwrap().request_id, "abc");
    }
}
