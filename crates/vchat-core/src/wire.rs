//! gRPC messages on the wire without copying their pixels, both ways.
//!
//! tonic encodes each message into one contiguous buffer, and gathers each
//! received one into another: for a mosaic that is two copies of every pixel,
//! several MiB per response with many users. Here:
//!
//! - a message is encoded as a list of chunks ([`encode_grpc_message`]): the
//!   protobuf framing is written into small buffers, and every large `bytes` field
//!   (a tensor's buffer, a JPEG blob) becomes a chunk of its own that shares the
//!   sender's memory; HTTP/2 writes the chunks with vectored writes, so the
//!   pixels are copied once, by the kernel ([`GrpcBody`]);
//! - a received message is kept as the pieces of DATA it arrived in
//!   ([`MessageReader`], [`GrpcMessages`], [`Message`]); decoding it makes every
//!   `bytes` field that lies within one piece a slice of it. The sender above
//!   makes each large field a piece of its own, and a piece stays one HTTP/2
//!   DATA frame up to [`MAX_FRAME`](crate::MAX_FRAME), so the pixels arrive
//!   where the kernel put them;
//! - a tensor put together from pieces (a [`Rope`], such as a vertical mosaic
//!   of its users' stored frames) goes out as those pieces ([`Ropes`]): the
//!   bytes on the wire are the same as for the joined buffer, which is never
//!   made.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_core::Stream;
use tonic::Status;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use vchat_proto::prost::Message as ProstMessage;

use crate::rope::Rope;

/// `bytes` fields at least this long are shared, not copied; shorter ones are
/// cheaper to copy than to send as a chunk of their own.
pub const SHARE_MIN: usize = 4096;

/// Length of the region that rope stand-ins are cut from: the largest rope
/// sent as its pieces, plus the number of ropes in one message. Larger ropes
/// are joined. Above the largest mosaic the chat makes by default (64 users of
/// 640×480).
const STAND_IN_LEN: usize = 64 << 20;

/// Zeros that are never read: a stand-in is a slice of this region, told
/// apart from every other buffer by its address. The region lies in the
/// zero-initialised data of the program, which takes no memory until touched.
static STAND_IN: [u8; STAND_IN_LEN] = [0; STAND_IN_LEN];

/// The ropes of one message, each stood in for in the protobuf message by a
/// [`Bytes`] of its length: prost sizes and frames the message as for the
/// joined bytes, and [`ChunkedBuf`] writes the rope's pieces where prost puts
/// the stand-in. The stand-in of the `i`-th rope starts at `STAND_IN[i]`, so
/// that stand-ins of the same length differ.
///
/// A message holding stand-ins must be encoded with its `Ropes` (and nothing
/// else): its stand-ins read as zeros.
#[derive(Debug, Default)]
pub struct Ropes {
    ropes: Vec<Rope>,
}

impl Ropes {
    /// What goes in the message where `rope` belongs: a stand-in, or the bytes
    /// themselves when the rope is already in one piece, too short to be worth
    /// sending as pieces, or too long for a stand-in.
    pub fn stand_in(&mut self, rope: Rope) -> Bytes {
        let i = self.ropes.len();
        let fits = i
            .checked_add(rope.len())
            .is_some_and(|end| end <= STAND_IN_LEN);
        if rope.is_contiguous() || rope.len() < SHARE_MIN || !fits {
            return rope.into_contiguous();
        }
        let stand_in = Bytes::from_static(&STAND_IN[i..i + rope.len()]);
        self.ropes.push(rope);
        stand_in
    }

    /// The rope `bytes` stands in for, if it is one of these stand-ins.
    pub fn rope_of(&self, bytes: &[u8]) -> Option<&Rope> {
        let i = (bytes.as_ptr() as usize).checked_sub(STAND_IN.as_ptr() as usize)?;
        self.ropes.get(i).filter(|r| r.len() == bytes.len())
    }

    /// Whether there are no ropes.
    pub fn is_empty(&self) -> bool {
        self.ropes.is_empty()
    }
}

/// A [`BufMut`] that keeps large [`Bytes`] it is given as chunks of their own
/// instead of copying them, and writes the pieces of the [`Ropes`] whose
/// stand-ins it is given.
#[derive(Debug, Default)]
pub struct ChunkedBuf<'r> {
    chunks: Vec<Bytes>,
    current: BytesMut,
    ropes: Option<&'r Ropes>,
}

impl ChunkedBuf<'_> {
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
unsafe impl BufMut for ChunkedBuf<'_> {
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
            match self.ropes.and_then(|r| r.rope_of(src.chunk())) {
                Some(rope) => self.chunks.extend_from_slice(rope.pieces()),
                None => self.chunks.push(src.copy_to_bytes(n)),
            }
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
pub fn encode_grpc_message<M: ProstMessage>(msg: &M) -> Result<Vec<Bytes>, Status> {
    encode_grpc_message_with(msg, &Ropes::default())
}

/// [`encode_grpc_message`] of a message whose stand-ins are for `ropes`.
pub fn encode_grpc_message_with<M: ProstMessage>(
    msg: &M,
    ropes: &Ropes,
) -> Result<Vec<Bytes>, Status> {
    let len = msg.encoded_len();
    let len32 = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("a {len}-byte response is too large")))?;
    let mut buf = ChunkedBuf {
        ropes: Some(ropes),
        ..ChunkedBuf::default()
    };
    buf.current.reserve(512);
    buf.put_u8(0);
    buf.put_u32(len32);
    msg.encode_raw(&mut buf);
    Ok(buf.into_chunks())
}

/// The body of a gRPC message stream: each message as its chunks. A response
/// body ([`GrpcBody::response`]) then ends with trailers (`grpc-status` 0, or
/// the status of the first error, which ends the stream as tonic does); a
/// request body ([`GrpcBody::request`]) just ends.
pub struct GrpcBody<S> {
    messages: S,
    pending: VecDeque<Bytes>,
    trailers: bool,
    done: bool,
}

impl<S> GrpcBody<S> {
    /// The body of a response stream of `messages`.
    pub fn response(messages: S) -> Self {
        GrpcBody {
            messages,
            pending: VecDeque::new(),
            trailers: true,
            done: false,
        }
    }

    /// The body of a request stream of `messages`: an error ends it early.
    pub fn request(messages: S) -> Self {
        GrpcBody {
            trailers: false,
            ..GrpcBody::response(messages)
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

/// A message that can be written as the chunks of one gRPC message.
pub trait Encode {
    /// The chunks (see [`encode_grpc_message`]).
    fn encode_chunks(&self) -> Result<Vec<Bytes>, Status>;
}

impl<M: ProstMessage> Encode for M {
    fn encode_chunks(&self) -> Result<Vec<Bytes>, Status> {
        encode_grpc_message(self)
    }
}

impl<S, M> http_body::Body for GrpcBody<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: Encode,
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
            let end = match Pin::new(&mut this.messages).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(msg))) => match msg.encode_chunks() {
                    Ok(chunks) => {
                        this.pending.extend(chunks);
                        continue;
                    }
                    Err(status) => status,
                },
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            this.done = true;
            if !this.trailers {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&end)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

/// The status refusing a call whose `grpc-encoding` header names a compression:
/// messages are read and written uncompressed.
pub fn compressed_call(headers: &HeaderMap) -> Option<Status> {
    let enc = headers.get("grpc-encoding")?;
    (enc.as_bytes() != b"identity").then(|| {
        let enc = String::from_utf8_lossy(enc.as_bytes());
        Status::unimplemented(format!(
            "requests compressed with {enc:?} are not supported: send them uncompressed"
        ))
    })
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

/// Splits the DATA of a gRPC stream, as it arrives, into [`Message`]s, without
/// copying: each is the pieces of DATA it arrived in.
#[derive(Debug)]
pub struct MessageReader {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    max: usize,
}

impl MessageReader {
    /// A reader that refuses messages over `max` bytes.
    pub fn new(max: usize) -> Self {
        MessageReader {
            chunks: VecDeque::new(),
            buffered: 0,
            max,
        }
    }

    /// Adds the next piece of DATA.
    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.buffered += data.len();
            self.chunks.push_back(data);
        }
    }

    /// Whether part of a message is waiting for the rest.
    pub fn has_partial(&self) -> bool {
        self.buffered > 0
    }

    /// The next whole message, if it has arrived. Errors: a compressed message,
    /// or one over the limit (known from its prefix, before it arrives).
    pub fn next_message(&mut self) -> Result<Option<Message>, Status> {
        if self.buffered < 5 {
            return Ok(None);
        }
        let mut head = [0u8; 5];
        let mut filled = 0;
        for chunk in &self.chunks {
            let n = (5 - filled).min(chunk.len());
            head[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            if filled == 5 {
                break;
            }
        }
        if head[0] != 0 {
            return Err(Status::unimplemented(
                "compressed gRPC messages are not supported: send them uncompressed",
            ));
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "a message of {len} bytes is over the limit of {} bytes",
                self.max
            )));
        }
        if self.buffered < 5 + len {
            return Ok(None);
        }
        self.take(5);
        Ok(Some(self.take(len)))
    }

    /// The next `len` buffered bytes (there are at least that many), as the
    /// pieces they arrived in.
    fn take(&mut self, len: usize) -> Message {
        self.buffered -= len;
        let mut parts = VecDeque::new();
        let mut left = len;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() > left {
                parts.push_back(front.split_to(left));
                left = 0;
            } else {
                left -= front.len();
                parts.extend(self.chunks.pop_front());
            }
        }
        Message {
            parts,
            remaining: len - left,
        }
    }
}

/// One received message: the pieces of DATA it arrived in, read as one [`Buf`].
/// Decoding it with prost shares the pieces: a `bytes` field (a frame's pixels)
/// that lies within one piece becomes a slice of it, as the sender's
/// [`GrpcBody`] makes each large field a piece of its own; only a field split
/// across pieces is gathered, once, into a buffer of its exact size.
#[derive(Debug, Default)]
pub struct Message {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Buf for Message {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |p| &p[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a message");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                break;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(
            len <= self.remaining,
            "copy_to_bytes past the end of a message"
        );
        if let Some(front) = self.parts.front_mut()
            && front.len() >= len
        {
            self.remaining -= len;
            let out = front.split_to(len);
            if front.is_empty() {
                self.parts.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let chunk = self.chunk();
            let n = chunk.len().min(len - out.len());
            out.extend_from_slice(&chunk[..n]);
            self.advance(n);
        }
        out.freeze()
    }
}

/// The messages of a gRPC body (see [`MessageReader`] and [`Message`]).
/// A response's trailers with an error status end it with that error; a body
/// that ends inside a message ends with INTERNAL.
pub struct GrpcMessages<B> {
    body: B,
    reader: MessageReader,
    done: bool,
}

impl<B> GrpcMessages<B> {
    /// The messages of `body`, each at most `max` bytes.
    pub fn new(body: B, max: usize) -> Self {
        GrpcMessages {
            body,
            reader: MessageReader::new(max),
            done: false,
        }
    }
}

impl<B> Stream for GrpcMessages<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Message, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while !this.done {
            let ended = match this.reader.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Err(status) => Err(status),
                Ok(None) => match Pin::new(&mut this.body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            this.reader.push(data);
                            continue;
                        }
                        // Trailers: the end, with the sender's status.
                        Err(frame) => match frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .filter(|s| s.code() != tonic::Code::Ok)
                        {
                            Some(status) => Err(status),
                            None => Ok(()),
                        },
                    },
                    Poll::Ready(Some(Err(e))) => Err(Status::from_error(e.into())),
                    Poll::Ready(None) => Ok(()),
                },
            };
            this.done = true;
            let ended = ended.and_then(|()| match this.reader.has_partial() {
                true => Err(Status::internal("the stream ended inside a message")),
                false => Ok(()),
            });
            if let Err(status) = ended {
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Ready(None)
    }
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
    fn messages_within_one_piece_are_shared_and_split_ones_gathered() {
        let a = with_tensor(Bytes::from(vec![1u8; 20_000]));
        let b = with_tensor(Bytes::from(vec![2u8; 9_000]));
        let wire: Vec<u8> = [&a, &b]
            .iter()
            .flat_map(|m| encode_grpc_message(*m).unwrap())
            .flat_map(|c| c.to_vec())
            .collect();
        // All at once: each message is a slice of the one piece.
        let whole = Bytes::from(wire.clone());
        let mut r = MessageReader::new(1 << 20);
        r.push(whole.clone());
        let first = r.next_message().unwrap().unwrap();
        assert_eq!(
            first.chunk().as_ptr(),
            whole[5..].as_ptr(),
            "a slice, not a copy"
        );
        assert_eq!(DataRequestProto::decode(first).unwrap(), a);
        assert_eq!(
            DataRequestProto::decode(r.next_message().unwrap().unwrap()).unwrap(),
            b
        );
        assert!(r.next_message().unwrap().is_none() && !r.has_partial());
        // In pieces of 7 bytes: the same messages, gathered.
        let mut r = MessageReader::new(1 << 20);
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            r.push(Bytes::copy_from_slice(piece));
            while let Some(m) = r.next_message().unwrap() {
                got.push(DataRequestProto::decode(m).unwrap());
            }
        }
        assert_eq!(got, [a, b]);
        assert!(!r.has_partial());
    }

    /// As HTTP/2 delivers what [`GrpcBody`] sends: one piece of DATA per chunk.
    #[test]
    fn pixels_sent_as_a_piece_are_received_in_place() {
        let pixels = Bytes::from(vec![9u8; 50_000]);
        let msg = with_tensor(pixels.clone());
        let mut r = MessageReader::new(1 << 20);
        for chunk in encode_grpc_message(&msg).unwrap() {
            r.push(chunk);
        }
        let got = DataRequestProto::decode(r.next_message().unwrap().unwrap()).unwrap();
        assert_eq!(got, msg);
        let Some(Documents::Docs(da)) = got.data.unwrap().documents else {
            panic!("no docs")
        };
        let Some(document_proto::Content::Tensor(t)) = &da.docs[0].content else {
            panic!("no tensor")
        };
        let Some(nd_array_proto::Content::Dense(d)) = &t.content else {
            panic!("not dense")
        };
        assert_eq!(
            d.buffer.as_ptr(),
            pixels.as_ptr(),
            "the sender's pixels, never copied"
        );
    }

    #[test]
    fn oversized_and_compressed_messages_are_errors() {
        let mut r = MessageReader::new(100);
        r.push(Bytes::from_static(&[0, 0, 0, 1, 0]));
        let e = r.next_message().unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::OutOfRange,
            "known from the prefix alone"
        );
        let mut r = MessageReader::new(100);
        r.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert_eq!(
            r.next_message().unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let mut r = MessageReader::new(100);
        r.push(Bytes::from_static(&[0, 0, 0, 0, 0]));
        assert_eq!(
            r.next_message().unwrap().unwrap().remaining(),
            0,
            "an empty message"
        );
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
