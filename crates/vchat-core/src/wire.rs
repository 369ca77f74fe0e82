//! Responses of `Call` on the wire without copying their pixels.
//!
//! tonic encodes each response into one contiguous buffer: for a mosaic that is a
//! copy of every pixel, several MiB per response with many users. Here a response
//! is encoded as a list of chunks instead: the protobuf framing is written into
//! small buffers, and every large `bytes` field (a tensor's buffer, a JPEG blob)
//! becomes a chunk of its own that shares the executor's memory. HTTP/2 then
//! writes those chunks to the socket with vectored writes, so the pixels are
//! copied once, by the kernel.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use prost::Message;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};

/// `bytes` fields at least this long are shared, not copied; shorter ones are
/// cheaper to copy than to send as a chunk of their own.
pub const SHARE_MIN: usize = 4096;

/// A [`BufMut`] that keeps large [`Bytes`] it is given as chunks of their own
/// instead of copying them.
#[derive(Debug, Default)]
pub struct ChunkedBuf {
    chunks: Vec<Bytes>,
    current: BytesMut,
}

impl ChunkedBuf {
    /// The chunks written so far, in order.
    pub fn into_chunks(mut self) -> Vec<Bytes> {
        self.flush();
        self.chunks
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            self.chunks.push(self.current.split().freeze());
        }
    }
}

// SAFETY: every method forwards to the inner `BytesMut`, whose contract holds.
unsafe impl BufMut for ChunkedBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is the
        // inner buffer's.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.current.extend_from_slice(src);
    }

    /// prost writes `bytes` fields with `put(Bytes)`: a large one is taken as a
    /// chunk (`copy_to_bytes` of a `Bytes` shares it), the rest is copied.
    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        let n = src.remaining();
        if n >= SHARE_MIN {
            self.flush();
            self.chunks.push(src.copy_to_bytes(n));
        } else {
            while src.has_remaining() {
                let c = src.chunk();
                let len = c.len();
                self.current.extend_from_slice(c);
                src.advance(len);
            }
        }
    }
}

/// `msg` as one gRPC message (uncompressed: the 5-byte prefix, then the protobuf),
/// in chunks that share the message's large `bytes` fields.
pub fn encode_grpc_message<M: Message>(msg: &M) -> Result<Vec<Bytes>, Status> {
    let len = msg.encoded_len();
    let len32 = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("a {len}-byte response is too large")))?;
    let mut buf = ChunkedBuf::default();
    buf.current.reserve(512);
    buf.put_u8(0);
    buf.put_u32(len32);
    msg.encode_raw(&mut buf);
    Ok(buf.into_chunks())
}

/// The body of a gRPC response stream: each message as its chunks, then the
/// trailers (`grpc-status` 0 at the end, or the status of the first error, which
/// ends the stream as tonic does).
pub struct GrpcBody<S> {
    messages: S,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl<S> GrpcBody<S> {
    /// A body for `messages`.
    pub fn new(messages: S) -> Self {
        GrpcBody {
            messages,
            pending: VecDeque::new(),
            done: false,
        }
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", HeaderValue::from_static("13"));
    }
    map
}

impl<S, M> http_body::Body for GrpcBody<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: Message,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let end = match futures::ready!(Pin::new(&mut this.messages).poll_next(cx)) {
                Some(Ok(msg)) => match encode_grpc_message(&msg) {
                    Ok(chunks) => {
                        this.pending.extend(chunks);
                        continue;
                    }
                    Err(status) => status,
                },
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            this.done = true;
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&end)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

/// The response headers of a gRPC call whose messages come in `body`.
pub fn grpc_response<B>(body: B) -> http::Response<B> {
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use vchat_proto::DataRequestProto;
    use vchat_proto::docarray::{
        DenseNdArrayProto, DocumentArrayProto, DocumentProto, NdArrayProto, document_proto,
        nd_array_proto,
    };
    use vchat_proto::jina::data_request_proto::DataContentProto;
    use vchat_proto::jina::data_request_proto::data_content_proto::Documents;

    fn with_tensor(buffer: Bytes) -> DataRequestProto {
        let tensor = NdArrayProto {
            content: Some(nd_array_proto::Content::Dense(DenseNdArrayProto {
                buffer,
                shape: vec![100, 100, 3],
                dtype: "<u1".into(),
            })),
            ..Default::default()
        };
        let doc = DocumentProto {
            id: "d".into(),
            content: Some(document_proto::Content::Tensor(tensor)),
            ..Default::default()
        };
        DataRequestProto {
            data: Some(DataContentProto {
                documents: Some(Documents::Docs(DocumentArrayProto { docs: vec![doc] })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn large_buffers_are_shared_and_the_bytes_are_protobuf() {
        let pixels = Bytes::from(vec![7u8; 30_000]);
        let msg = with_tensor(pixels.clone());
        let chunks = encode_grpc_message(&msg).unwrap();
        assert!(
            chunks.iter().any(|c| c.as_ptr() == pixels.as_ptr()),
            "the pixels travel as a chunk of their own, not a copy"
        );
        let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(wire[0], 0, "uncompressed");
        let len = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 5);
        assert_eq!(DataRequestProto::decode(&wire[5..]).unwrap(), msg);
    }

    #[test]
    fn small_buffers_are_copied_into_one_chunk() {
        let msg = with_tensor(Bytes::from(vec![1u8; 100]));
        let chunks = encode_grpc_message(&msg).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            DataRequestProto::decode(&chunks[0][5..]).unwrap(),
            msg,
            "one chunk, prefix then message"
        );
    }
}
