//! Micro-benchmarks of the per-frame path: decode a request, compose a mosaic,
//! encode a response, JPEG. Run with `cargo bench -p vchat-cli --bench hot_path`
//! (BENCHMARKS.md has the figures and how they were taken).

use bytes::Bytes;
use divan::{Bencher, black_box};
use vchat_client::source::{textured, user_color};
use vchat_core::wire::encode_grpc_message;
use vchat_core::{Document, DocumentArray, RequestContext, StreamId, Tensor, jpeg};
use vchat_executor::{Frame, VideoChatConfig, VideoChatExecutor, compose_grid, stack_vertically};
use vchat_proto::jina::data_request_proto::DataContentProto;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::prost::Message;
use vchat_proto::{DataRequestProto, HeaderProto};

fn main() {
    divan::main();
}

const H: usize = 200;
const W: usize = 300;

fn frame(n: usize) -> Tensor {
    textured(user_color(&format!("user{n}")), H, W, n)
}

/// A request as a client sends it: one 200x300 frame, tagged with its user.
fn request(user: &str, tensor: Tensor) -> DataRequestProto {
    let mut doc = Document::with_tensor(tensor);
    doc.set_tag_str("user", user);
    DataRequestProto {
        header: Some(HeaderProto {
            request_id: "0123456789abcdef".into(),
            ..Default::default()
        }),
        data: Some(DataContentProto {
            documents: Some(Documents::Docs(DocumentArray(vec![doc]).into_proto())),
        }),
        ..Default::default()
    }
}

/// Protobuf decode of a request from one buffer, as the gateway's codec does:
/// the pixels stay a slice of the buffer.
#[divan::bench]
fn decode_request(b: Bencher) {
    let wire = Bytes::from(request("alice", frame(0)).encode_to_vec());
    b.counter(divan::counter::BytesCount::new(wire.len()))
        .bench(|| DataRequestProto::decode(black_box(wire.clone())).unwrap());
}

/// The vertical mosaic of `users` frames (byte concatenation).
#[divan::bench(args = [3, 10, 20])]
fn compose_vertical(b: Bencher, users: usize) {
    let parts: Vec<_> = (0..users)
        .map(|n| Frame::new(frame(n).data().clone(), H, W))
        .collect();
    b.counter(divan::counter::BytesCount::new(users * H * W * 3))
        .bench(|| stack_vertically(black_box(&parts), usize::MAX).unwrap());
}

/// The grid of `users` frames on a 480x640 canvas (scaling included).
#[divan::bench(args = [4, 25, 100])]
fn compose_grid_640x480(b: Bencher, users: usize) {
    let frames: Vec<Tensor> = (0..users).map(frame).collect();
    let tiles: Vec<_> = frames
        .iter()
        .map(|t| Frame::new(t.data().clone(), H, W))
        .collect();
    b.bench(|| compose_grid(black_box(&tiles), 480, 640, None, usize::MAX).unwrap());
}

fn mosaic_response(users: usize) -> DataRequestProto {
    let parts: Vec<_> = (0..users)
        .map(|n| Frame::new(frame(n).data().clone(), H, W))
        .collect();
    let mosaic = stack_vertically(&parts, usize::MAX).unwrap().pixels;
    let mosaic = Tensor::image(users * H, W, 3, mosaic.into_contiguous()).unwrap();
    request("alice", mosaic)
}

/// A response of a `users` mosaic encoded into one buffer (tonic's way).
#[divan::bench(args = [3, 10, 20])]
fn encode_response_copy(b: Bencher, users: usize) {
    let resp = mosaic_response(users);
    b.counter(divan::counter::BytesCount::new(resp.encoded_len()))
        .bench(|| black_box(&resp).encode_to_vec());
}

/// The same response as the gateway sends it: chunks sharing the pixels.
#[divan::bench(args = [3, 10, 20])]
fn encode_response_chunked(b: Bencher, users: usize) {
    let resp = mosaic_response(users);
    b.counter(divan::counter::BytesCount::new(resp.encoded_len()))
        .bench(|| encode_grpc_message(black_box(&resp)).unwrap());
}

/// A `users` mosaic from its frames to the chunks the gateway sends, as the
/// chat and the gRPC door do it: stacked as a rope, written as its pieces.
#[divan::bench(args = [3, 10, 20])]
fn compose_and_encode_vertical(b: Bencher, users: usize) {
    let parts: Vec<_> = (0..users)
        .map(|n| Frame::new(frame(n).data().clone(), H, W))
        .collect();
    let envelope = vchat_core::proto::request_from_proto(request("alice", frame(0))).0;
    b.counter(divan::counter::BytesCount::new(users * H * W * 3))
        .bench(|| {
            let mosaic = stack_vertically(black_box(&parts), usize::MAX).unwrap();
            let docs = DocumentArray(vec![Document::with_tensor(mosaic.into_tensor().unwrap())]);
            let reply = vchat_core::Reply::ok(docs);
            vchat_core::proto::reply_into_wire(envelope.clone(), reply)
                .encode()
                .unwrap()
        });
}

/// JPEG encode of a 200x300 camera-like frame (quality 80).
#[divan::bench]
fn jpeg_encode_200x300(b: Bencher) {
    let t = frame(1);
    b.bench(|| jpeg::encode_bgr(black_box(t.data()), H, W, 80).unwrap());
}

/// JPEG encode of a 480x640 grid (quality 80).
#[divan::bench]
fn jpeg_encode_480x640(b: Bencher) {
    let frames: Vec<Tensor> = (0..9).map(frame).collect();
    let tiles: Vec<_> = frames
        .iter()
        .map(|t| Frame::new(t.data().clone(), H, W))
        .collect();
    let grid = compose_grid(&tiles, 480, 640, None, usize::MAX).unwrap();
    b.bench(|| jpeg::encode_bgr(black_box(&grid), 480, 640, 80).unwrap());
}

/// JPEG decode of a 200x300 camera-like frame.
#[divan::bench]
fn jpeg_decode_200x300(b: Bencher) {
    let j = jpeg::encode_bgr(frame(1).data(), H, W, 80).unwrap();
    b.bench(|| jpeg::decode_bgr(black_box(&j), usize::MAX).unwrap());
}

/// One new frame through VideoChatExecutor in a room of `users`: store the
/// frame, compose the vertical mosaic, set the response.
#[divan::bench(args = [3, 10, 20])]
fn videochat_process(b: Bencher, users: usize) {
    let ex = VideoChatExecutor::new(VideoChatConfig::default(), "agg").unwrap();
    let params = Default::default();
    let results = Default::default();
    let run = |user: usize, tensor: Tensor| {
        let mut doc = Document::with_tensor(tensor);
        doc.set_tag_str("user", format!("user{user}"));
        let mut docs = DocumentArray(vec![doc]);
        let ctx = RequestContext {
            endpoint: "/",
            parameters: &params,
            stream: StreamId(user as u64),
            request_id: "r",
            results: &results,
        };
        futures::executor::block_on(vchat_core::Executor::process(&ex, &mut docs, &ctx)).unwrap();
        docs
    };
    for u in 0..users {
        run(u, frame(u));
    }
    // Two frames in turn: a repeated frame would be answered from the cache.
    let mine = [frame(0), frame(users)];
    let mut n = 0;
    b.bench_local(|| {
        n += 1;
        run(0, black_box(mine[n % 2].clone()))
    });
}

/// JPEG decode of a 200x300 frame for a tile of a 100-user grid (48x64).
#[divan::bench]
fn jpeg_decode_200x300_to_tile(b: Bencher) {
    let j = jpeg::encode_bgr(frame(1).data(), H, W, 80).unwrap();
    b.bench(|| jpeg::decode_bgr_to_fit(black_box(&j), usize::MAX, (48, 64)).unwrap());
}
