//! Fuzzing of what a peer (or an operator's YAML) hands vchat-core: gRPC message
//! framing ([`wire`]), protobuf documents and tensors, JPEG headers and pixels, and
//! the Flow and executor loaders ([`config`]).
//!
//! Every property feeds both arbitrary bytes and structure-aware hostile input
//! (valid protobuf with hostile field values, JPEG headers with huge or zero
//! dimensions, shapes that disagree with their buffer or whose product overflows,
//! near-valid YAML), and asserts no panic and either a value that keeps its type's
//! promises or a clear error. A global allocator records the largest single
//! allocation, so that a decoder that trusts a declared size fails the property
//! instead of taking the machine's memory.
//!
//! Each property runs [`cases`] cases by default, or `PROPTEST_CASES` for longer
//! runs. Inputs that once broke a decoder are the `regression_*` tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_core::Stream;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tonic::Code;
use tonic::codegen::http::{HeaderMap, HeaderValue};
use vchat_core::config::{load_executor, load_flow};
use vchat_core::wire::{GrpcMessages, MessageReader};
use vchat_core::{Content, DType, Document, DocumentArray, Error, Struct, Tensor, Value, jpeg};
use vchat_proto::DataRequestProto;
use vchat_proto::docarray::{
    DenseNdArrayProto, DocumentArrayProto, DocumentProto, NdArrayProto, SparseNdArrayProto,
    document_proto, nd_array_proto,
};
use vchat_proto::jina::HeaderProto;
use vchat_proto::jina::data_request_proto::DataContentProto;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::prost::Message as _;

// ---------------------------------------------------------------------------
// Allocation tracking

/// The system allocator, noting the largest single allocation of each thread.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator is also called while a thread's locals are torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// `f()`, and the largest single allocation it made (on this thread).
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

// ---------------------------------------------------------------------------
// Case counts

/// `default` cases, unless `PROPTEST_CASES` asks for another number. The defaults
/// keep this file's properties within a few seconds each in a debug build, so that
/// they run in CI with every `cargo test`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // A failure is kept as a named regression test below, not in a file
        // beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// gRPC message framing

/// What a gRPC reader must make of `data`: the payloads of the whole messages in
/// it, then the error of the first bad prefix (if any), and whether a message
/// was left incomplete.
fn frames_model(data: &[u8], max: usize) -> (Vec<&[u8]>, Option<Code>, bool) {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < 5 {
            return (out, None, !rest.is_empty());
        }
        if rest[0] != 0 {
            return (out, Some(Code::Unimplemented), true);
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len > max {
            return (out, Some(Code::OutOfRange), true);
        }
        if rest.len() < 5 + len {
            return (out, None, true);
        }
        out.push(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
}

/// `data` cut at `cuts` (taken modulo its length), as pieces of DATA arrive.
fn split(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (data.len() + 1))
        .chain([0, data.len()])
        .collect();
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| Bytes::copy_from_slice(&data[w[0]..w[1]]))
        .collect()
}

/// The bytes of `buf`, read through its `Buf` methods.
fn read_all(mut buf: impl Buf) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.remaining());
    while buf.has_remaining() {
        let chunk = buf.chunk();
        assert!(!chunk.is_empty(), "a Buf with bytes left has a chunk");
        let n = chunk.len();
        out.extend_from_slice(chunk);
        buf.advance(n);
    }
    out
}

/// `payload` framed as one uncompressed gRPC message.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A body of DATA pieces, then optional trailers or a transport error.
struct Body {
    frames: VecDeque<Result<http_body::Frame<Bytes>, std::io::Error>>,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.frames.pop_front())
    }
}

/// How a body ends after its DATA.
#[derive(Debug, Clone)]
enum End {
    Clean,
    /// Trailers with this `grpc-status` and `grpc-message`.
    Trailers(String, String),
    /// The connection broke.
    Broken,
}

/// Every item `GrpcMessages` yields for `pieces` and `end`, polled to its end
/// (and once more: an ended stream stays ended).
fn grpc_messages(pieces: Vec<Bytes>, end: &End, max: usize) -> Vec<Result<Vec<u8>, tonic::Status>> {
    let mut frames: VecDeque<_> = pieces
        .into_iter()
        .map(|p| Ok(http_body::Frame::data(p)))
        .collect();
    match end {
        End::Clean => {}
        End::Trailers(status, message) => {
            let mut map = HeaderMap::new();
            for (k, v) in [("grpc-status", status), ("grpc-message", message)] {
                if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                    map.insert(k, v);
                }
            }
            frames.push_back(Ok(http_body::Frame::trailers(map)));
        }
        End::Broken => frames.push_back(Err(std::io::Error::other("connection reset"))),
    }
    let mut stream = GrpcMessages::new(Body { frames }, max);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut stream).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => out.push(item.map(read_all)),
            Poll::Ready(None) => break,
            Poll::Pending => panic!("a body that is always ready never leaves the stream pending"),
        }
        assert!(out.len() < 100_000, "the stream ends");
    }
    assert!(
        matches!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Ready(None)),
        "an ended stream stays ended"
    );
    out
}

fn status_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i32..20).prop_map(|c| c.to_string()),
        Just(String::new()),
        Just("99999999999999999999".to_string()),
        Just("-1".to_string()),
        "\\PC{0,8}",
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        Just(End::Clean),
        (status_text(), "\\PC{0,16}").prop_map(|(s, m)| End::Trailers(s, m)),
        Just(End::Broken),
    ]
}

/// Arbitrary bytes, or a stream of frames some of which have hostile prefixes.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let framed = vec(
        prop_oneof![
            3 => vec(any::<u8>(), 0..200).prop_map(|p| frame(&p)),
            1 => (any::<u8>(), any::<u32>(), vec(any::<u8>(), 0..16)).prop_map(|(flag, len, tail)| {
                let mut f = vec![flag];
                f.extend_from_slice(&len.to_be_bytes());
                f.extend_from_slice(&tail);
                f
            }),
        ],
        0..6,
    )
    .prop_map(|fs| fs.concat());
    prop_oneof![vec(any::<u8>(), 0..600), framed]
}

fn max_message() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..300, Just(usize::MAX), Just(u32::MAX as usize)]
}

proptest! {
    #![proptest_config(cases(3000))]

    /// `MessageReader` splits any byte stream, however it is cut into pieces,
    /// exactly as the framing says, and never allocates by a declared length.
    #[test]
    fn message_reader_frames_any_bytes(
        data in wire_bytes(),
        cuts in vec(any::<usize>(), 0..12),
        max in max_message(),
    ) {
        let (want, want_err, partial) = frames_model(&data, max);
        let pieces = split(&data, &cuts);
        let ((got, err, left), largest) = largest_allocation(|| {
            let mut reader = MessageReader::new(max);
            let mut got = Vec::new();
            let mut err = None;
            'pieces: for piece in pieces {
                reader.push(piece);
                loop {
                    match reader.next_message() {
                        Ok(Some(m)) => got.push(read_all(m)),
                        Ok(None) => break,
                        Err(status) => {
                            err = Some(status);
                            break 'pieces;
                        }
                    }
                }
            }
            (got, err, reader.has_partial())
        });
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(err.as_ref().map(|s| s.code()), want_err);
        if let Some(status) = &err {
            prop_assert!(!status.message().is_empty());
        } else {
            prop_assert_eq!(left, partial);
        }
        prop_assert!(largest <= 2 * data.len() + 4096, "{largest} bytes allocated for {} bytes", data.len());
    }

    /// `GrpcMessages` over a body of those pieces: the same messages, then the
    /// sender's error, the transport's, or INTERNAL for a cut message; then the end.
    #[test]
    fn grpc_messages_end_clearly(
        data in wire_bytes(),
        cuts in vec(any::<usize>(), 0..12),
        max in max_message(),
        end in end(),
    ) {
        let (want, want_err, partial) = frames_model(&data, max);
        let items = grpc_messages(split(&data, &cuts), &end, max);
        let n_ok = items.iter().take_while(|i| i.is_ok()).count();
        prop_assert!(items.len() - n_ok <= 1, "an error is the last item");
        prop_assert_eq!(n_ok, want.len());
        for (g, w) in items.iter().zip(&want) {
            prop_assert_eq!(&g.as_ref().unwrap()[..], *w);
        }
        let err = items.get(n_ok).and_then(|i| i.as_ref().err());
        if let Some(e) = err {
            prop_assert!(!e.message().is_empty() || matches!(end, End::Trailers(..)), "{:?}", e);
        }
        if let Some(code) = want_err {
            prop_assert_eq!(err.map(|e| e.code()), Some(code), "a bad prefix is the error");
            return Ok(());
        }
        // What the sender's end says: Some(None) for a clean end, Some(Some(code))
        // for an error status; None where tonic's reading of the trailers decides.
        let sender = match &end {
            End::Clean => Some(None),
            End::Broken => None,
            End::Trailers(s, _) => match s.parse::<i32>() {
                Ok(0) if s == "0" => Some(None),
                Ok(c @ 1..=16) if *s == c.to_string() => Some(Some(Code::from_i32(c))),
                _ => None,
            },
        };
        match sender {
            Some(Some(code)) => prop_assert_eq!(err.map(|e| e.code()), Some(code)),
            Some(None) if partial => prop_assert_eq!(err.map(|e| e.code()), Some(Code::Internal)),
            Some(None) => prop_assert!(err.is_none(), "{:?}", err),
            None if matches!(end, End::Broken) => prop_assert!(err.is_some()),
            None => prop_assert!(err.is_some() || !partial, "a cut message is an error"),
        }
    }

    /// A received message reads as the bytes it was sent as, whatever mix of
    /// `advance`, `chunk` and `copy_to_bytes` its decoder uses.
    #[test]
    fn a_message_reads_like_its_bytes(
        payload in vec(any::<u8>(), 0..400),
        cuts in vec(any::<usize>(), 0..12),
        ops in vec((0u8..3, any::<usize>()), 0..20),
    ) {
        let mut reader = MessageReader::new(usize::MAX);
        for piece in split(&frame(&payload), &cuts) {
            reader.push(piece);
        }
        let mut msg = reader.next_message().unwrap().unwrap();
        let mut pos = 0;
        for (op, n) in ops {
            let n = n % (msg.remaining() + 1);
            match op {
                0 => {
                    msg.advance(n);
                    pos += n;
                }
                1 => {
                    let got = msg.copy_to_bytes(n);
                    prop_assert_eq!(&got[..], &payload[pos..pos + n]);
                    pos += n;
                }
                _ => {
                    let c = msg.chunk();
                    prop_assert_eq!(c, &payload[pos..pos + c.len()]);
                    prop_assert!(!c.is_empty() || pos == payload.len());
                }
            }
            prop_assert_eq!(msg.remaining(), payload.len() - pos);
        }
        prop_assert_eq!(read_all(msg), &payload[pos..]);
    }
}

// ---------------------------------------------------------------------------
// Tensors and documents

fn dtype_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "|u1", "<u1", "uint8", "B", "|b1", "bool", "?", "|i1", "<u2", "<i2", "<f2", "<u4",
            "<i4", "<f4", "<u8", "<i8", "<f8", "float64", ">u1", ">f4", "=i2", ">>u1", "<U4",
            "", "|", "<<", "u1\0", "UINT8",
        ])
        .prop_map(String::from),
        1 => "\\PC{0,6}",
    ]
}

/// A dimension: small, at a boundary, or anything.
fn dim() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..5,
        1 => Just(u32::MAX),
        1 => Just(65535),
        1 => Just(1 << 16),
        1 => any::<u32>(),
    ]
}

/// Bytes a (dtype, shape) pair needs, when that is small enough to send.
fn needed(dtype: &str, shape: &[u32]) -> Option<usize> {
    let size = DType::parse(dtype).map_or(1, DType::itemsize);
    shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d as usize))
        .filter(|&n| n <= 4096)
}

/// A dense tensor whose shape, dtype and buffer may or may not agree; when the
/// shape is small the buffer often matches, so valid tensors are covered too.
fn hostile_dense() -> impl Strategy<Value = DenseNdArrayProto> {
    (
        dtype_text(),
        vec(dim(), 0..6),
        0usize..80,
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(dtype, shape, other, matching, fill)| {
            let len = match (matching, needed(&dtype, &shape)) {
                (true, Some(n)) => n,
                _ => other,
            };
            DenseNdArrayProto {
                buffer: Bytes::from(vec![fill; len]),
                shape,
                dtype,
            }
        })
}

fn hostile_tensor() -> impl Strategy<Value = NdArrayProto> {
    prop_oneof![
        8 => hostile_dense().prop_map(|d| Some(nd_array_proto::Content::Dense(d))),
        1 => hostile_dense().prop_map(|d| Some(nd_array_proto::Content::Sparse(SparseNdArrayProto {
            indices: Some(d.clone()),
            values: Some(d),
            shape: vec![u32::MAX, 0],
        }))),
        1 => Just(None),
    ]
    .prop_map(|content| NdArrayProto {
        content,
        cls_name: "numpy".into(),
        parameters: None,
    })
}

fn hostile_value() -> impl Strategy<Value = Value> {
    use vchat_core::value::Kind;
    let leaf = prop_oneof![
        any::<f64>().prop_map(Kind::NumberValue),
        Just(Kind::NumberValue(f64::NAN)),
        Just(Kind::NumberValue(f64::INFINITY)),
        "\\PC{0,40}".prop_map(Kind::StringValue),
        any::<bool>().prop_map(Kind::BoolValue),
        Just(Kind::NullValue(0)),
    ]
    .prop_map(|k| Value { kind: Some(k) });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| Value {
                kind: Some(vchat_core::value::Kind::ListValue(vchat_core::ListValue {
                    values
                }))
            }),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4).prop_map(|fields| Value {
                kind: Some(vchat_core::value::Kind::StructValue(Struct { fields }))
            }),
        ]
    })
}

fn hostile_tags() -> impl Strategy<Value = Option<Struct>> {
    let key = prop_oneof![
        prop::sample::select(vec!["user", "room", "accept", "participants", ""])
            .prop_map(String::from),
        "\\PC{0,8}",
    ];
    prop::option::of(
        prop::collection::btree_map(key, hostile_value(), 0..5)
            .prop_map(|fields| Struct { fields }),
    )
}

fn hostile_document() -> impl Strategy<Value = DocumentProto> {
    let content = prop_oneof![
        4 => hostile_tensor().prop_map(|t| Some(document_proto::Content::Tensor(t))),
        2 => vec(any::<u8>(), 0..64).prop_map(|b| Some(document_proto::Content::Blob(b.into()))),
        1 => "\\PC{0,16}".prop_map(|t| Some(document_proto::Content::Text(t))),
        1 => Just(None),
    ];
    let leaf = (
        "\\PC{0,40}",
        content,
        hostile_tags(),
        prop::sample::select(vec!["image/jpeg", "IMAGE/JPEG", "", "text/plain"]),
        any::<f32>(),
        vec(any::<f32>(), 0..3),
        prop::option::of(hostile_tensor()),
    )
        .prop_map(
            |(id, content, tags, mime, weight, location, embedding)| DocumentProto {
                id,
                content,
                tags,
                mime_type: mime.into(),
                weight,
                location,
                embedding,
                granularity: u32::MAX,
                ..Default::default()
            },
        );
    leaf.prop_recursive(3, 12, 3, |inner| {
        (inner.clone(), vec(inner.clone(), 0..3), vec(inner, 0..2)).prop_map(
            |(mut d, chunks, matches)| {
                d.chunks = chunks;
                d.matches = matches;
                d
            },
        )
    })
}

/// The promises of a tensor that was accepted.
fn check_tensor(t: &Tensor) -> Result<(), TestCaseError> {
    let need = t
        .shape()
        .iter()
        .try_fold(t.dtype().itemsize(), |a, &d| a.checked_mul(d));
    prop_assert_eq!(
        need,
        Some(t.data().len()),
        "buffer matches shape × itemsize"
    );
    match t.frame_dims() {
        Ok((h, w)) => {
            prop_assert_eq!(t.shape(), &[h, w, 3][..]);
            prop_assert!(h > 0 && w > 0 && t.dtype() == DType::U8);
        }
        Err(m) => prop_assert!(!m.is_empty()),
    }
    let back = Tensor::from_proto(t.clone().into_proto());
    prop_assert_eq!(back.as_ref(), Ok(t), "a valid tensor survives the wire");
    Ok(())
}

/// What reading a wire document must give: a value that keeps its promises, or
/// a BadRequest that says what is wrong.
fn check_document(proto: DocumentProto) -> Result<(), TestCaseError> {
    let expected_tensor_error = match &proto.content {
        Some(document_proto::Content::Tensor(t)) => tensor_error(t),
        _ => None,
    };
    match Document::from_proto(proto.clone()) {
        Ok(doc) => {
            prop_assert!(
                expected_tensor_error.is_none(),
                "accepted a bad tensor: {:?}",
                expected_tensor_error
            );
            if let Some(Content::Tensor(t)) = &doc.content {
                check_tensor(t)?;
            }
            prop_assert_eq!(&doc.id, &proto.id);
            // Everything but the content (its dtype is written as docarray writes
            // it) and the tags (an empty map is no map) comes back as it was.
            let tags = |p: &DocumentProto| {
                Struct {
                    fields: p.tags.clone().map(|s| s.fields).unwrap_or_default(),
                }
                .encode_to_vec()
            };
            let rest = |mut p: DocumentProto| {
                p.content = None;
                p.tags = None;
                p.encode_to_vec()
            };
            let back = doc.into_proto();
            prop_assert_eq!(tags(&back), tags(&proto));
            prop_assert_eq!(
                rest(back),
                rest(proto),
                "unmodelled fields come back unchanged"
            );
        }
        Err(Error::BadRequest(m)) => {
            prop_assert!(
                expected_tensor_error.is_some(),
                "refused a good document: {m}"
            );
            prop_assert!(
                m.contains(&format!("{:?}", proto.id)),
                "names the document: {m}"
            );
        }
        Err(other) => prop_assert!(false, "a document is a bad request or fine, not {other:?}"),
    }
    Ok(())
}

/// Why a wire tensor must be refused, by the rules of the README's Bad input table.
fn tensor_error(t: &NdArrayProto) -> Option<&'static str> {
    let Some(nd_array_proto::Content::Dense(d)) = &t.content else {
        return Some("not dense");
    };
    let Some(dtype) = DType::parse(&d.dtype) else {
        return Some("dtype");
    };
    if d.dtype.starts_with('>') && dtype.itemsize() > 1 {
        return Some("big-endian");
    }
    let need = d
        .shape
        .iter()
        .try_fold(dtype.itemsize(), |a, &x| a.checked_mul(x as usize));
    (need != Some(d.buffer.len())).then_some("buffer length")
}

proptest! {
    #![proptest_config(cases(3000))]

    /// Tensors: shape × dtype × buffer length, with overflowing products, unknown
    /// and big-endian dtypes, sparse and empty content.
    #[test]
    fn tensors_are_valid_or_refused(proto in hostile_tensor()) {
        let expected = tensor_error(&proto);
        match Tensor::from_proto(proto) {
            Ok(t) => {
                prop_assert!(expected.is_none(), "accepted: {expected:?}");
                check_tensor(&t)?;
            }
            Err(Error::BadRequest(m)) => {
                prop_assert!(expected.is_some(), "refused a valid tensor: {m}");
                prop_assert!(!m.is_empty());
            }
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }

    /// `Tensor::new` with any `usize` shape: the product is computed with checked
    /// arithmetic.
    #[test]
    fn tensor_shapes_never_overflow(
        shape in vec(prop_oneof![0usize..4, Just(usize::MAX), Just(1usize << 32), any::<usize>()], 0..6),
        len in 0usize..64,
    ) {
        let data = Bytes::from(vec![0u8; len]);
        match Tensor::new(DType::F64, shape.clone(), data) {
            Ok(t) => check_tensor(&t)?,
            Err(e) => prop_assert!(e.to_string().contains("tensor")),
        }
    }

    /// Documents with hostile tensors, tags, nested chunks and odd floats.
    #[test]
    fn documents_are_valid_or_refused(proto in hostile_document()) {
        check_document(proto)?;
    }

    /// Arbitrary bytes as a request: prost refuses what is not protobuf, and what
    /// decodes is read as documents as the gateway reads them.
    #[test]
    fn arbitrary_bytes_as_a_request(data in vec(any::<u8>(), 0..1500)) {
        let (decoded, largest) = largest_allocation(|| DataRequestProto::decode(&data[..]));
        prop_assert!(largest <= 4 * data.len() + 4096, "{largest} bytes allocated for {} bytes", data.len());
        if let Ok(req) = decoded
            && let Some(Documents::Docs(da)) = req.data.and_then(|d| d.documents)
        {
            for doc in da.docs {
                check_document(doc)?;
            }
        }
    }

    /// Hostile documents framed, cut into pieces and decoded in place, as the
    /// gateway receives them: the same request, and each document as above.
    #[test]
    fn framed_requests_decode_in_place(
        docs in vec(hostile_document(), 0..4),
        request_id in "\\PC{0,40}",
        cuts in vec(any::<usize>(), 0..10),
    ) {
        let req = DataRequestProto {
            header: Some(HeaderProto { request_id, ..Default::default() }),
            data: Some(DataContentProto {
                documents: Some(Documents::Docs(DocumentArrayProto { docs })),
            }),
            ..Default::default()
        };
        let wire = req.encode_to_vec();
        let mut reader = MessageReader::new(usize::MAX);
        for piece in split(&frame(&wire), &cuts) {
            reader.push(piece);
        }
        let got = DataRequestProto::decode(reader.next_message().unwrap().unwrap()).unwrap();
        prop_assert_eq!(got.encode_to_vec(), wire);
        if let Some(Documents::Docs(da)) = got.data.and_then(|d| d.documents) {
            let all_valid = da.docs.iter().all(|d| match &d.content {
                Some(document_proto::Content::Tensor(t)) => tensor_error(t).is_none(),
                _ => true,
            });
            prop_assert_eq!(DocumentArray::from_proto(da.clone()).is_ok(), all_valid);
            for doc in da.docs {
                check_document(doc)?;
            }
        }
    }
}

/// `depth` documents, each the only chunk of the one before, as protobuf bytes
/// written by hand (prost's own encoder would recurse as deep).
fn nested_chunks(depth: usize) -> Vec<u8> {
    let mut doc = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![(14 << 3) | 2];
        let mut len = doc.len();
        while len >= 0x80 {
            outer.push((len as u8) | 0x80);
            len >>= 7;
        }
        outer.push(len as u8);
        outer.extend_from_slice(&doc);
        doc = outer;
    }
    doc
}

#[test]
fn deeply_nested_documents_are_refused_not_a_stack_overflow() {
    // 2 MiB, the stack of a test thread and of a tokio worker.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            // prost stops at 100 levels: anything deeper is refused.
            for depth in [50, 99, 102, 1_000, 100_000] {
                let bytes = nested_chunks(depth);
                match DocumentProto::decode(&bytes[..]) {
                    Ok(proto) => {
                        assert!(depth < 100, "{depth} levels decoded");
                        let doc = Document::from_proto(proto).unwrap();
                        drop(doc.into_proto());
                    }
                    Err(e) => {
                        assert!(depth > 100, "{depth} levels refused: {e}");
                        assert!(e.to_string().contains("recursion limit"), "{depth}: {e}");
                    }
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---------------------------------------------------------------------------
// JPEG

/// A real 24×16 JPEG of `encode_bgr`.
fn sample_jpeg() -> &'static [u8] {
    static JPEG: OnceLock<Bytes> = OnceLock::new();
    JPEG.get_or_init(|| {
        let px: Vec<u8> = (0..16 * 24 * 3).map(|i| (i * 7 % 251) as u8).collect();
        jpeg::encode_bgr(&px, 16, 24, 75).unwrap()
    })
}

/// Where the SOF0 segment of `sample_jpeg` starts.
fn sof_offset(data: &[u8]) -> usize {
    data.windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline JPEG has SOF0")
}

/// `data` with its frame header saying `h`×`w` (and SOF `marker`).
fn with_dims(data: &[u8], marker: u8, h: u16, w: u16) -> Vec<u8> {
    let mut out = data.to_vec();
    let i = sof_offset(data);
    out[i + 1] = marker;
    out[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    out[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    out
}

/// The largest single allocation a decode may make: the output, and a few
/// planes (component rows, progressive coefficients) of the size the limit
/// allows, padded to whole blocks. Nothing in proportion to a declared size
/// over the limit.
fn jpeg_allocation_bound(max_pixels: usize) -> usize {
    let pixels = max_pixels.min(65535 * 65535);
    (pixels + 16 * 65536).saturating_mul(16) + (1 << 20)
}

/// What a JPEG decode must give: pixels of the size it says, within the limit.
fn check_decoded(
    r: &Result<(Bytes, usize, usize), Error>,
    max_pixels: usize,
) -> Result<(), TestCaseError> {
    match r {
        Ok((px, h, w)) => {
            prop_assert!(*h > 0 && *w > 0);
            prop_assert!(h * w <= max_pixels, "{h}x{w} over {max_pixels}");
            prop_assert_eq!(px.len(), h * w * 3);
        }
        Err(Error::BadRequest(m)) => prop_assert!(!m.is_empty()),
        Err(other) => prop_assert!(false, "{other:?}"),
    }
    Ok(())
}

fn max_pixels() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(64),
        Just(16 * 24),
        Just(4096),
        Just(1 << 16),
        Just(1 << 20),
    ]
}

fn fit() -> impl Strategy<Value = (usize, usize)> {
    let side = prop_oneof![
        0usize..30,
        Just(usize::MAX),
        Just(usize::MAX / 2 + 1),
        any::<usize>()
    ];
    (side.clone(), side)
}

/// A JPEG a peer could send: garbage, a real one with bytes changed, cut short,
/// or with a frame header of any size (zero, huge, 65535) and SOF type.
fn hostile_jpeg() -> impl Strategy<Value = Vec<u8>> {
    let edits = vec((any::<usize>(), any::<u8>()), 0..4);
    let dims = prop_oneof![Just(0u16), Just(1), Just(65535), Just(8), any::<u16>()];
    let sof = prop::sample::select(vec![0xC0u8, 0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCF]);
    prop_oneof![
        1 => vec(any::<u8>(), 0..300),
        1 => vec(any::<u8>(), 0..300).prop_map(|mut v| {
            v.splice(0..0, [0xFF, 0xD8, 0xFF]);
            v
        }),
        4 => (dims.clone(), dims, sof, edits, any::<usize>(), any::<bool>()).prop_map(
            |(h, w, marker, edits, cut, truncate)| {
                let mut v = with_dims(sample_jpeg(), marker, h, w);
                for (at, byte) in edits {
                    let n = v.len();
                    v[at % n] = byte;
                }
                if truncate {
                    v.truncate(cut % (v.len() + 1));
                }
                v
            },
        ),
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    /// Decoding any JPEG gives pixels within the limit or a clear error, and
    /// allocates no more than the limit allows, whatever the header declares.
    #[test]
    fn jpeg_decodes_within_the_limit(data in hostile_jpeg(), max in max_pixels(), fit in fit()) {
        let bound = jpeg_allocation_bound(max);
        let (r, largest) = largest_allocation(|| jpeg::decode_bgr(&data, max));
        check_decoded(&r, max)?;
        prop_assert!(largest <= bound, "decode_bgr allocated {largest} bytes, limit {max} pixels");
        let (r, largest) = largest_allocation(|| jpeg::decode_bgr_to_fit(&data, max, fit));
        check_decoded(&r, max)?;
        prop_assert!(largest <= bound, "decode_bgr_to_fit allocated {largest} bytes, limit {max} pixels");
        // Straight to 4:2:0 planes (the buffer sized from the header read):
        // the size the BGR decoder gives, or an error.
        let (planes, largest) = largest_allocation(|| jpeg::decode_yuv420_to_fit(&data, max, fit));
        prop_assert!(largest <= bound, "decode_yuv420_to_fit allocated {largest} bytes, limit {max} pixels");
        match (&planes, &r) {
            (Ok(p), Ok((_, h, w))) => prop_assert_eq!(p.dims(), (*h, *w)),
            (Ok(p), Err(e)) => prop_assert!(false, "{:?} decoded to planes, not to BGR: {e}", p.dims()),
            (Err(e), _) => prop_assert!(!e.to_string().is_empty()),
        }
        // What a grid keeps undecoded: a size within the limit, and the
        // size the full decoder gives whenever that decoder succeeds.
        if let Ok((h, w)) = jpeg::checked_dims(&data, max) {
            prop_assert!(h > 0 && w > 0 && h.saturating_mul(w) <= max);
            if let Ok((_, dh, dw)) = jpeg::decode_bgr(&data, max) {
                prop_assert_eq!((dh, dw), (h, w));
            }
        }
        let mut doc = Document::new();
        doc.content = Some(Content::Blob(Bytes::from(data)));
        doc.mime_type = jpeg::MIME_JPEG.into();
        match jpeg::frame_of(&doc, max) {
            Some(Ok(t)) => check_tensor(&t)?,
            Some(Err(e)) => prop_assert!(!e.to_string().is_empty()),
            None => prop_assert!(false, "a JPEG blob is a frame or an error"),
        }
    }

    /// Encoding refuses sizes that do not match or do not fit a JPEG, without
    /// overflowing on the way.
    #[test]
    fn jpeg_encode_checks_sizes(
        h in prop_oneof![0usize..20, Just(65536), Just(usize::MAX), any::<usize>()],
        w in prop_oneof![0usize..20, Just(65536), Just(usize::MAX), any::<usize>()],
        len in 0usize..1300,
        quality in any::<u8>(),
    ) {
        let px = vec![90u8; len];
        match jpeg::encode_bgr(&px, h, w, quality) {
            Ok(j) => {
                prop_assert_eq!(h.checked_mul(w).and_then(|n| n.checked_mul(3)), Some(len));
                let (back, bh, bw) = jpeg::decode_bgr(&j, 1 << 20).unwrap();
                prop_assert_eq!((back.len(), bh, bw), (len, h, w));
            }
            Err(e) => prop_assert!(e.to_string().contains("frame") || e.to_string().contains("JPEG"), "{e}"),
        }
    }
}

/// A JPEG of 100 bytes or so whose frame header says 65535×65535: refused from
/// its header, with no allocation anywhere near its declared 12 GiB.
#[test]
fn a_huge_header_on_a_tiny_jpeg_is_refused_before_allocating() {
    let mut tiny = vec![0xFF, 0xD8];
    // SOF0: 8 bits, 65535×65535, one component, 1×1 sampling, table 0.
    tiny.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0]);
    // SOS of that component, then scan bytes.
    tiny.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0]);
    tiny.resize(98, 0x55);
    tiny.extend_from_slice(&[0xFF, 0xD9]);
    let real = with_dims(sample_jpeg(), 0xC0, 65535, 65535);
    let progressive = with_dims(sample_jpeg(), 0xC2, 65535, 65535);
    for data in [&tiny, &real, &progressive] {
        for max in [8_294_400, 1 << 30] {
            let (r, largest) = largest_allocation(|| jpeg::decode_bgr(data, max));
            let e = r.unwrap_err().to_string();
            assert!(
                largest < 1 << 20,
                "decode_bgr allocated {largest} bytes: {e}"
            );
            let (r, largest) = largest_allocation(|| jpeg::decode_bgr_to_fit(data, max, (48, 64)));
            let e = r.unwrap_err().to_string();
            assert!(
                largest < 1 << 20,
                "decode_bgr_to_fit allocated {largest} bytes: {e}"
            );
            let (r, largest) =
                largest_allocation(|| jpeg::decode_yuv420_to_fit(data, max, (48, 64)));
            let e = r.unwrap_err().to_string();
            assert!(
                largest < 1 << 20,
                "decode_yuv420_to_fit allocated {largest} bytes: {e}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Flow and executor YAML

/// A fresh directory for one case's files.
fn case_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vchat-fuzz-{}", vchat_core::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Loads `flow` (with `executor` beside it as `ex.yml`) both as a Flow and as an
/// executor YAML, checking what a loaded Flow promises.
fn check_yaml(flow: &str, executor: &str) -> Result<(), TestCaseError> {
    let dir = case_dir();
    let flow_path = dir.join("flow.yml");
    std::fs::write(&flow_path, flow).unwrap();
    std::fs::write(dir.join("ex.yml"), executor).unwrap();
    let result = check_loaded(&flow_path);
    let executor = load_executor(&dir.join("ex.yml"));
    std::fs::remove_dir_all(&dir).ok();
    match executor {
        Ok(spec) => prop_assert_eq!(spec.deployment.replicas, 1),
        Err(e) => prop_assert!(e.to_string().contains("ex.yml"), "names the file: {e}"),
    }
    result
}

fn check_loaded(flow_path: &Path) -> Result<(), TestCaseError> {
    match load_flow(flow_path) {
        Ok(spec) => {
            let mut names: Vec<&str> = spec.executors.iter().map(|e| e.name.as_str()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), n, "executor names are unique");
            for e in &spec.executors {
                let d = &e.deployment;
                prop_assert!(d.replicas >= 1);
                prop_assert!(d.external.is_empty() || d.external.len() == d.replicas);
                prop_assert!(e.name != "gateway");
            }
            // As the gateway reads them: a positive `max_fps` is a gap between
            // frames, anything else no limit; `websocket_max_fps` a token rate.
            if let Some(f) = spec.with.max_fps
                && f > 0.0
            {
                prop_assert!(Duration::try_from_secs_f64(1.0 / f).is_ok(), "max_fps {f}");
            }
            if let Some(f) = spec.with.websocket_max_fps {
                prop_assert!(f > 0.0 && f.is_finite(), "websocket_max_fps {f}");
            }
        }
        Err(e) => {
            prop_assert!(!e.message.is_empty());
            prop_assert!(e.to_string().contains("yml"), "names the file: {e}");
        }
    }
    match load_executor(flow_path) {
        Ok(spec) => prop_assert_eq!(spec.deployment.replicas, 1),
        Err(e) => prop_assert!(!e.message.is_empty()),
    }
    Ok(())
}

/// A value an operator (or a typo) could write: numbers at and past every
/// boundary, odd floats, YAML oddities, nesting.
fn hostile_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "-1", "8", "65535", "65536", "4294967295", "4294967296",
            "9223372036854775807", "18446744073709551615", "18446744073709551616",
            "99999999999999999999999999999999", "-99999999999999999999", "1e400", "-1e400",
            "1e-300", "4.9e-324", "1e-20", "0.0", "-0.0", ".nan", ".inf", "-.inf", "0x7fffffff",
            "0o777", "1_000", "true", "~", "null", "''", "\"\"", "[]", "{}", "[1, 2]",
            "[grpc, websocket]", "websocket", "grpc", "room", "gateway", "[gateway]",
            "ex.yml", "./ex.yml", "nope/x.yml", "/", "VideoChatExecutor", "Flow",
            "!!binary aGk=", "*nowhere", "&a [*a]", "|\n  text", "\"\\u0000\"", "{a: [b, {c: d}]}",
        ])
        .prop_map(String::from),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => (1usize..200).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        1 => "[a-z_]{1,12}",
    ]
}

const FLOW_WITH_KEYS: &[&str] = &[
    "host",
    "port",
    "protocol",
    "port_http",
    "websocket_origins",
    "websocket_max_fps",
    "prefetch",
    "max_message_bytes",
    "max_streams",
    "max_frame_bytes",
    "ssl_certfile",
    "ssl_keyfile",
    "monitoring",
    "port_monitoring",
    "max_fps",
    "endpoints",
    "prot0col",
    "max_fps",
    "max_fps",
    "websocket_max_fps",
];

const EXECUTOR_KEYS: &[&str] = &[
    "name",
    "uses",
    "uses_with",
    "uses_metas",
    "host",
    "port",
    "external",
    "replicas",
    "needs",
    "timeout_send",
    "retries",
    "route_by",
    "skip_frames",
    "nmae",
];

/// A Flow YAML that is nearly right: the real keys (and a typo now and then) with
/// hostile values, executors that name each other, and an executor file.
fn near_valid_flow() -> impl Strategy<Value = (String, String)> {
    let with = vec(
        (prop::sample::select(FLOW_WITH_KEYS), hostile_scalar()),
        0..5,
    );
    let executor = vec(
        (prop::sample::select(EXECUTOR_KEYS), hostile_scalar()),
        0..5,
    );
    let jtype = prop::sample::select(vec![
        "Flow",
        "Flow",
        "Flow",
        "flow",
        "VideoChatExecutor",
        "[Flow]",
    ]);
    let ex_with = vec(("[a-z_]{1,10}", hostile_scalar()), 0..4);
    (jtype, with, vec(executor, 0..4), ex_with, any::<bool>()).prop_map(
        |(jtype, with, executors, ex_with, flow_style)| {
            let mut y = format!("jtype: {jtype}\n");
            if !with.is_empty() {
                y.push_str("with:\n");
                for (k, v) in &with {
                    y.push_str(&format!("  {k}: {v}\n"));
                }
            }
            if !executors.is_empty() {
                y.push_str("executors:\n");
                for (i, e) in executors.iter().enumerate() {
                    if flow_style {
                        let fields: Vec<String> =
                            e.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                        y.push_str(&format!("  - {{name: e{i}, {}}}\n", fields.join(", ")));
                    } else {
                        y.push_str(&format!("  - name: e{i}\n"));
                        for (k, v) in e {
                            y.push_str(&format!("    {k}: {v}\n"));
                        }
                    }
                }
            }
            let mut ex = "jtype: VideoChatExecutor\nwith:\n".to_string();
            for (k, v) in &ex_with {
                ex.push_str(&format!("  {k}: {v}\n"));
            }
            (y, ex)
        },
    )
}

proptest! {
    #![proptest_config(cases(800))]

    /// Any text as a Flow and as an executor YAML: a spec or an error that names
    /// the file.
    #[test]
    fn yaml_of_any_text(text in prop_oneof!["\\PC{0,300}", vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned())]) {
        check_yaml(&text, &text)?;
    }

    /// Near-valid Flows with hostile values: a Flow that keeps its promises (unique
    /// names, at least one replica, usable rates) or an error that names the file.
    #[test]
    fn near_valid_flows((flow, executor) in near_valid_flow()) {
        check_yaml(&flow, &executor)?;
    }

    /// `retries` is read as given, or refused: never wrapped around.
    #[test]
    fn retries_are_never_wrapped(r in prop_oneof![any::<i64>(), 0i64..10, Just(u32::MAX as i64), Just(u32::MAX as i64 + 1)]) {
        let dir = case_dir();
        let f = dir.join("flow.yml");
        std::fs::write(&f, format!("jtype: Flow\nexecutors:\n  - uses: X\n    retries: {r}\n")).unwrap();
        let loaded = load_flow(&f);
        std::fs::remove_dir_all(&dir).ok();
        match (u32::try_from(r), loaded) {
            (Ok(want), Ok(spec)) => prop_assert_eq!(spec.executors[0].deployment.retries, want),
            (Err(_), Ok(spec)) if r < 0 => prop_assert_eq!(
                spec.executors[0].deployment.retries,
                vchat_core::config::DEFAULT_RETRIES
            ),
            (Err(_), Err(e)) if r >= 0 => prop_assert!(e.to_string().contains("retries"), "{e}"),
            (want, got) => prop_assert!(false, "retries {r}: {want:?} but {got:?}"),
        }
    }
}

/// Nesting far past anything a Flow needs, in every place a YAML value may nest:
/// refused with an error, never a stack overflow (on a 2 MiB stack, as a test
/// thread or a tokio worker has).
#[test]
fn deeply_nested_yaml_is_refused_not_a_stack_overflow() {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let depth = 100_000;
            let flow_seq = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let flow_map = format!("{}{}", "{a: ".repeat(depth), "}".repeat(depth));
            let block: String = (0..1_000)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect();
            let dashes: String = (0..1_000)
                .map(|i| format!("{}-\n", " ".repeat(i)))
                .collect();
            let texts = [
                format!("jtype: Flow\nversion: {flow_seq}\n"),
                format!(
                    "jtype: Flow\nexecutors:\n  - uses: X\n    uses_with:\n      a: {flow_map}\n"
                ),
                format!("jtype: Flow\nversion:\n{block}"),
                format!("jtype: Flow\nversion:\n{dashes}"),
                format!("jtype: VideoChatExecutor\nwith:\n  a: {flow_seq}\n"),
                flow_seq.clone(),
            ];
            for text in texts {
                let dir = case_dir();
                let f = dir.join("flow.yml");
                std::fs::write(&f, &text).unwrap();
                let flow = load_flow(&f);
                let executor = load_executor(&f);
                std::fs::remove_dir_all(&dir).ok();
                assert!(flow.is_err(), "{:?}", &text[..40.min(text.len())]);
                assert!(executor.is_err(), "{:?}", &text[..40.min(text.len())]);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Aliases that expand exponentially ("billion laughs") are refused by the
/// parser's budget instead of filling memory.
#[test]
fn alias_bombs_are_refused() {
    let mut y = "jtype: Flow\nversion:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
    for i in 1..7 {
        let p = i - 1;
        y.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let dir = case_dir();
    let f = dir.join("flow.yml");
    std::fs::write(&f, y).unwrap();
    let (r, largest) = largest_allocation(|| load_flow(&f));
    std::fs::remove_dir_all(&dir).ok();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("budget breached"), "{e}");
    assert!(largest < 64 << 20, "{largest} bytes for an alias bomb");
}

#[test]
fn executor_with_values_of_every_kind_are_kept_as_json() {
    let dir = case_dir();
    let f = dir.join("ex.yml");
    std::fs::write(
        &f,
        "jtype: VideoChatExecutor\nwith:\n  big: 99999999999999999999999\n  neg: -18446744073709551616\n  nan: .nan\n  inf: .inf\n",
    )
    .unwrap();
    let r = load_executor(&f);
    std::fs::remove_dir_all(&dir).ok();
    match r {
        Ok(spec) => {
            let with: BTreeMap<_, _> = spec
                .with
                .iter()
                .map(|(k, (v, _))| (k.as_str(), v))
                .collect();
            assert!(with.contains_key("big"), "{with:?}");
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
}

// ---------------------------------------------------------------------------
// Regressions: inputs the properties above once failed on

/// `encode_bgr` computed `h * w * 3` unchecked: a height of `usize::MAX`
/// overflowed (a panic in debug builds, a wrong size in release ones).
#[test]
fn regression_encode_huge_height() {
    let e = jpeg::encode_bgr(&[], usize::MAX, 1, 0).unwrap_err();
    assert!(e.to_string().contains("not a"), "{e}");
    assert!(jpeg::encode_bgr(&[0; 3], 1 << 62, 4, 80).is_err());
}

/// `decode_bgr_to_fit` doubled the tile size unchecked: a tile of `usize::MAX`
/// rows overflowed. A tile that large asks for no shrinking.
#[test]
fn regression_decode_to_fit_a_huge_tile() {
    for fit in [(usize::MAX, 0), (0, usize::MAX), (usize::MAX / 2 + 1, 1)] {
        let (px, h, w) = jpeg::decode_bgr_to_fit(sample_jpeg(), 4096, fit).unwrap();
        assert_eq!((px.len(), h, w), (16 * 24 * 3, 16, 24));
    }
}

/// `retries: 4294967296` was cast to u32 and became 0 retries, silently.
#[test]
fn regression_retries_past_u32() {
    let dir = case_dir();
    let f = dir.join("flow.yml");
    std::fs::write(
        &f,
        "jtype: Flow\nexecutors:\n  - uses: X\n    retries: 4294967296\n",
    )
    .unwrap();
    let e = load_flow(&f).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        e.to_string()
            .contains("retries: 4294967296 is more than 4294967295"),
        "{e}"
    );
    assert_eq!(e.origin.line, 3, "{e}");
}

/// An empty tensor of shape `[0, usize::MAX]` was accepted, then sent as
/// `[0, 4294967295]`: the wire carries uint32 dimensions.
#[test]
fn regression_tensor_dimension_past_u32() {
    let e = Tensor::new(DType::F64, vec![0, usize::MAX], Bytes::new()).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    let t = Tensor::new(DType::F64, vec![0, u32::MAX as usize], Bytes::new()).unwrap();
    assert_eq!(Tensor::from_proto(t.clone().into_proto()).unwrap(), t);
}

/// `max_fps: 1e-300` loaded, then every stream's frame gap `1 / max_fps`
/// (`Duration::from_secs_f64`) panicked when it opened. Refused when loading;
/// 0 (no limit) still loads.
#[test]
fn regression_max_fps_too_small_for_a_gap() {
    let dir = case_dir();
    let f = dir.join("flow.yml");
    std::fs::write(&f, "jtype: Flow\nwith:\n  max_fps: 1e-300\n").unwrap();
    let tiny = load_flow(&f);
    std::fs::write(&f, "jtype: Flow\nwith:\n  max_fps: 0\n").unwrap();
    let zero = load_flow(&f);
    std::fs::remove_dir_all(&dir).ok();
    let e = tiny.unwrap_err().to_string();
    assert!(e.contains("max_fps") && e.contains("too small"), "{e}");
    assert_eq!(zero.unwrap().with.max_fps, Some(0.0));
}
