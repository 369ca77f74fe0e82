//! Built-in executors that work on frames as arrays (Flip, Grayscale), through
//! the real binary: the pixels that come back, and the error a frame that is
//! not an image array gets while its stream goes on.

use bytes::Bytes;
use vchat_core::{DType, Document, Tensor};
use vchat_e2e::*;

/// A 2×3 frame whose every pixel is its own colour: `[y, x, 10 * y + x + 100]`.
fn numbered(user: &str) -> Document {
    let px: Vec<u8> = (0..2u8)
        .flat_map(|y| (0..3u8).flat_map(move |x| [y, x, 10 * y + x + 100]))
        .collect();
    let mut doc = Document::with_tensor(Tensor::image(2, 3, 3, Bytes::from(px)).unwrap());
    doc.set_tag_str("user", user);
    doc
}

/// BT.601 luma of a BGR pixel, as the executors compute it.
fn luma([b, g, r]: [u8; 3]) -> u8 {
    ((29 * u32::from(b) + 150 * u32::from(g) + 77 * u32::from(r)) >> 8) as u8
}

fn pixels(t: &Tensor) -> Vec<[u8; 3]> {
    t.data().chunks(3).map(|p| [p[0], p[1], p[2]]).collect()
}

/// The frame `numbered` comes back as from a Flow of `executors` (YAML list
/// items), checked to be a success.
async fn through(executors: &str) -> Tensor {
    let dir = scratch("ndarray-filters");
    let yml = write_file(
        &dir,
        "flow.yml",
        &format!("jtype: Flow\nexecutors:\n{executors}"),
    );
    let flow = Flow::start(&yml, &[]);
    let mut stream = RawStream::connect(flow.addr()).await;
    let r = stream
        .send(request("1", vec![numbered("u").into_proto()]))
        .await;
    assert_eq!(status(&r).0, 0, "{:?}", status(&r));
    response_tensor(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_and_grayscale_answer_with_the_arrays_they_made() {
    let t = through("  - uses: Flip\n    name: flip\n    uses_with:\n      axis: both\n").await;
    assert_eq!(t.shape(), [2, 3, 3]);
    // Upside down and left to right; each pixel's channels in their order.
    assert_eq!(
        pixels(&t),
        [
            [1, 2, 112],
            [1, 1, 111],
            [1, 0, 110],
            [0, 2, 102],
            [0, 1, 101],
            [0, 0, 100]
        ]
    );

    let t = through("  - uses: Flip\n    name: flip\n  - uses: Grayscale\n    name: gray\n").await;
    let sent = pixels(numbered("u").tensor().unwrap());
    let expected: Vec<[u8; 3]> = (0..2)
        .flat_map(|y| (0..3).map(move |x| (y, x)))
        .map(|(y, x)| {
            let y = luma(sent[y * 3 + (2 - x)]);
            [y, y, y]
        })
        .collect();
    assert_eq!(pixels(&t), expected, "mirrored left to right, then gray");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_is_not_an_image_array_gets_an_error_and_the_stream_goes_on() {
    let dir = scratch("ndarray-errors");
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nexecutors:\n  - uses: Grayscale\n    name: gray\n",
    );
    let flow = Flow::start(&flow_yml, &[]);
    let mut stream = RawStream::connect(flow.addr()).await;
    let floats = Tensor::new(DType::F32, vec![2, 2, 3], Bytes::from(vec![0u8; 48])).unwrap();
    let mut doc = Document::with_tensor(floats);
    doc.set_tag_str("user", "u");
    let r = stream.send(request("1", vec![doc.into_proto()])).await;
    let (code, description) = status(&r);
    assert_eq!(code, 1, "ERROR, got {description:?}");
    assert!(description.contains("uint8"), "{description}");
    let flat = Tensor::new(DType::U8, vec![12], Bytes::from(vec![0u8; 12])).unwrap();
    let mut doc = Document::with_tensor(flat);
    doc.set_tag_str("user", "u");
    let r = stream.send(request("2", vec![doc.into_proto()])).await;
    assert_eq!(status(&r).0, 1, "{:?}", status(&r));
    // The same stream goes on with a frame.
    let r = stream
        .send(request(
            "3",
            vec![frame("u", [0, 0, 255], 4, 4).into_proto()],
        ))
        .await;
    assert_eq!(status(&r).0, 0, "{:?}", status(&r));
    assert_eq!(bands(&response_tensor(&r), 4), [[76, 76, 76]]);
}
