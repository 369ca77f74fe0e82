//! The codec of `jina.JinaRPC/Call`: prost encoding out; in, a decoder that answers
//! an oversized request with an error for that request instead of ending the stream.

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;
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

/// Codec for `Call` with a soft size limit (see [`Inbound::Oversized`]).
#[derive(Debug, Clone)]
pub struct CallCodec {
    limit: usize,
}

impl CallCodec {
    /// Requests over `limit` bytes become [`Inbound::Oversized`].
    pub fn new(limit: usize) -> Self {
        CallCodec { limit }
    }
}

impl Codec for CallCodec {
    type Encode = DataRequestProto;
    type Decode = Inbound;
    type Encoder = ProstEncoder<DataRequestProto>;
    type Decoder = CallDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CallDecoder { limit: self.limit }
    }
}

/// Decoder half of [`CallCodec`].
#[derive(Debug)]
pub struct CallDecoder {
    limit: usize,
}

impl Decoder for CallDecoder {
    type Item = Inbound;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, Status> {
        let size = buf.remaining();
        if size > self.limit {
            let header = HeaderOnly::decode(buf)
                .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))?
                .header
                .unwrap_or_default();
            return Ok(Some(Inbound::Oversized { header, size }));
        }
        // Taking the message as one `Bytes` makes every `bytes` field (frame pixels)
        // a slice of it: no copy.
        let bytes = buf.copy_to_bytes(size);
        DataRequestProto::decode(bytes)
            .map(|r| Some(Inbound::Request(r)))
            .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
