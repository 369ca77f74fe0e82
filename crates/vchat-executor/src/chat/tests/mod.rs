//! The chat through its `Executor` interface: frames in, mosaics out.

mod bounds;
mod canvas;
mod labels;
mod layouts;
mod rooms;
mod sharing;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vchat_core::budget::Budget;
use vchat_core::jpeg::{self, MIME_JPEG};
use vchat_core::value::Kind;
use vchat_core::{
    Content, Document, DocumentArray, Error, Executor, MAX_NAME_BYTES, RequestContext, StreamId,
    Tensor, Value,
};

use super::*;
use crate::label;
use crate::mosaic::HIGHLIGHT_BGR;

fn frame(user: &str, h: usize, w: usize, value: u8) -> DocumentArray {
    let t = Tensor::image(h, w, 3, Bytes::from(vec![value; h * w * 3])).unwrap();
    let mut d = Document::with_tensor(t);
    d.set_tag_str("user", user);
    DocumentArray(vec![d])
}

fn jpeg_frame(user: &str, h: usize, w: usize, value: u8) -> DocumentArray {
    let j = jpeg::encode_bgr(&vec![value; h * w * 3], h, w, 90).unwrap();
    let mut d = Document::new();
    d.content = Some(Content::Blob(j));
    d.mime_type = MIME_JPEG.into();
    d.set_tag_str("user", user);
    DocumentArray(vec![d])
}

async fn send(ex: &VideoChatExecutor, docs: &mut DocumentArray, stream: u64) -> Result<(), Error> {
    let params = BTreeMap::new();
    let results = Default::default();
    let ctx = RequestContext {
        endpoint: "/",
        parameters: &params,
        stream: StreamId(stream),
        request_id: "r",
        results: &results,
    };
    ex.process(docs, &ctx).await
}

/// Without labels: these tests compare exact pixel values.
fn with(config: VideoChatConfig) -> VideoChatExecutor {
    labelled(VideoChatConfig {
        labels: false,
        ..config
    })
}

fn labelled(config: VideoChatConfig) -> VideoChatExecutor {
    VideoChatExecutor::new(config, "agg").unwrap()
}

/// Pixels of the `h`x`w` tile at `(top, left)` of `t` that are pure white.
fn white_in(t: &Tensor, (top, left, h, w): (usize, usize, usize, usize)) -> usize {
    let width = t.shape()[1];
    (top..top + h)
        .flat_map(|y| (left..left + w).map(move |x| (y, x)))
        .filter(|&(y, x)| t.data()[(y * width + x) * 3..][..3] == [255, 255, 255])
        .count()
}

/// Pixels of full coverage in the rendering of `name` for a `tile_h` tile:
/// those a label turns pure white.
fn full_coverage(name: &str, tile_h: usize) -> usize {
    let m = label::render(&label::shown(name), label::label_px(tile_h)).unwrap();
    m.coverage.iter().filter(|&&c| c == 255).count()
}

fn executor(idle: f64) -> VideoChatExecutor {
    with(VideoChatConfig {
        idle_timeout_s: idle,
        ..Default::default()
    })
}

/// The value of the first byte of each `band`-row band of the answer.
fn bands(docs: &DocumentArray, band: usize) -> Vec<u8> {
    let t = docs[0].tensor().unwrap();
    let row = t.shape()[1] * 3;
    t.data().chunks(row * band).map(|c| c[0]).collect()
}

fn participants(docs: &DocumentArray) -> Vec<String> {
    match docs[0].tags[PARTICIPANTS_TAG].kind.as_ref() {
        Some(Kind::ListValue(l)) => l
            .values
            .iter()
            .map(|v| match v.kind.as_ref() {
                Some(Kind::StringValue(s)) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}
