//! The video chat through the real `vchat flow` binary: three users, the mosaic in
//! join order, leaving, bad input, shutdown.

use std::time::Duration;

use bytes::Bytes;
use vchat_core::{DType, Tensor, string_value};
use vchat_e2e::*;
use vchat_proto::DocumentProto;
use vchat_proto::docarray::nd_array_proto;
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};

const ALICE: [u8; 3] = [255, 0, 0];
const BOB: [u8; 3] = [0, 255, 0];
const CAROL: [u8; 3] = [0, 0, 255];

fn shape(t: &Tensor) -> Vec<usize> {
    t.shape().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_get_the_mosaic_in_join_order_and_carol_leaves() {
    let flow = Flow::start_default(&[]);
    let mut alice = User::connect(flow.addr());
    let mut bob = User::connect(flow.addr());
    let mut carol = User::connect(flow.addr());

    // Alone, alice gets her own frame back.
    let r = alice.send(frame("alice", ALICE, 200, 300)).await;
    let t = r.docs().unwrap()[0].tensor().unwrap().clone();
    assert_eq!(shape(&t), [200, 300, 3]);
    assert_eq!(bands(&t, 200), [ALICE]);

    let r = bob.send(frame("bob", BOB, 200, 300)).await;
    let t = r.docs().unwrap()[0].tensor().unwrap().clone();
    assert_eq!(bands(&t, 200), [ALICE, BOB]);

    let r = carol.send(frame("carol", CAROL, 200, 300)).await;
    let t = r.docs().unwrap()[0].tensor().unwrap().clone();
    assert_eq!(shape(&t), [600, 300, 3]);
    assert_eq!(bands(&t, 200), [ALICE, BOB, CAROL]);

    // Every user's every response is the full mosaic, in join order, for many frames.
    for _ in 0..10 {
        for (u, name, c) in [
            (&mut alice, "alice", ALICE),
            (&mut bob, "bob", BOB),
            (&mut carol, "carol", CAROL),
        ] {
            let r = u.send(frame(name, c, 200, 300)).await;
            assert!(!r.is_error(), "{:?}", r.error());
            assert!(r.latency().is_some());
            let t = r.docs().unwrap()[0].tensor().unwrap().clone();
            assert_eq!(shape(&t), [600, 300, 3]);
            assert_eq!(bands(&t, 200), [ALICE, BOB, CAROL]);
        }
    }

    // Carol's stream ends: she leaves the mosaic. The gateway learns of it as the
    // stream closes, so allow it a moment, frame by frame.
    let summary = carol.leave().await;
    assert_eq!((summary.requests, summary.errors), (11, 0));
    let mut t = alice
        .send(frame("alice", ALICE, 200, 300))
        .await
        .docs()
        .unwrap()[0]
        .tensor()
        .unwrap()
        .clone();
    for _ in 0..200 {
        if shape(&t) == [400, 300, 3] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        t = alice
            .send(frame("alice", ALICE, 200, 300))
            .await
            .docs()
            .unwrap()[0]
            .tensor()
            .unwrap()
            .clone();
    }
    assert_eq!(shape(&t), [400, 300, 3]);
    assert_eq!(bands(&t, 200), [ALICE, BOB]);
    let r = bob.send(frame("bob", BOB, 200, 300)).await;
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 200),
        [ALICE, BOB]
    );
    alice.leave().await;
    bob.leave().await;
}

/// A frame document whose tensor fields are set directly, bypassing validation.
fn raw_doc(user: Option<&str>, dtype: &str, shape: Vec<u32>, buffer: Vec<u8>) -> DocumentProto {
    let mut doc = frame("x", [1, 2, 3], 1, 1).into_proto();
    match &mut doc.content {
        Some(vchat_proto::docarray::document_proto::Content::Tensor(t)) => match &mut t.content {
            Some(nd_array_proto::Content::Dense(d)) => {
                d.dtype = dtype.to_string();
                d.shape = shape;
                d.buffer = Bytes::from(buffer);
            }
            _ => unreachable!(),
        },
        _ => unreachable!(),
    }
    let tags = doc.tags.get_or_insert_with(Default::default);
    tags.fields.clear();
    if let Some(u) = user {
        tags.fields.insert("user".into(), string_value(u));
    }
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_an_error_status_and_nothing_else_breaks() {
    let mut flow = Flow::start_default(&["--max-message-bytes", "1000000"]);
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", ALICE, 200, 300)).await;
    assert!(!r.is_error());
    let mut bob = RawStream::connect(flow.addr()).await;
    let good = || request("good", vec![frame("bob", BOB, 200, 300).into_proto()]);
    let r = bob.send(good()).await;
    assert_eq!(status(&r).0, 0);
    assert_eq!(bands(&response_tensor(&r), 200), [ALICE, BOB]);

    let frame_len = 200 * 300 * 3;
    let mut docs_bytes = request("pickled", vec![]);
    docs_bytes.data = Some(DataContentProto {
        documents: Some(Documents::DocsBytes(Bytes::from_static(b"\x80\x04pickle"))),
    });
    let cases: Vec<(&str, vchat_proto::DataRequestProto, &str)> = vec![
        (
            "truncated buffer",
            request(
                "truncated",
                vec![raw_doc(
                    Some("bob"),
                    "|u1",
                    vec![200, 300, 3],
                    vec![0; 1000],
                )],
            ),
            "1000 bytes",
        ),
        (
            "float32 dtype",
            request(
                "float",
                vec![raw_doc(Some("bob"), "<f4", vec![10, 10, 3], vec![0; 1200])],
            ),
            "uint8",
        ),
        (
            "unknown dtype",
            request(
                "weird",
                vec![raw_doc(Some("bob"), "<U7", vec![1], vec![0; 7])],
            ),
            "unknown tensor dtype",
        ),
        (
            "two-dimensional frame",
            request(
                "gray",
                vec![raw_doc(Some("bob"), "|u1", vec![200, 300], vec![0; 60000])],
            ),
            "[height, width, 3]",
        ),
        (
            "missing user tag",
            request(
                "nouser",
                vec![raw_doc(None, "|u1", vec![200, 300, 3], vec![0; frame_len])],
            ),
            "tags.user",
        ),
        ("docs_bytes", docs_bytes, "docs_bytes"),
        (
            "oversized message",
            request("huge", vec![frame("bob", BOB, 1000, 1000).into_proto()]),
            "over the limit of 1000000 bytes",
        ),
    ];
    for (what, req, expect) in cases {
        let id = req.header.as_ref().unwrap().request_id.clone();
        let r = bob.send(req).await;
        let (code, description) = status(&r);
        assert_eq!(code, 1, "{what}: expected ERROR, got {description:?}");
        assert!(
            description.contains(expect),
            "{what}: {description:?} lacks {expect:?}"
        );
        assert_eq!(
            r.header.as_ref().unwrap().request_id,
            id,
            "{what}: request_id echoed"
        );
        // The stream goes on: the next good request succeeds.
        let r = bob.send(good()).await;
        assert_eq!(
            status(&r).0,
            0,
            "{what}: next good request failed: {:?}",
            status(&r)
        );
        // And alice still sees the same two users.
        let r = alice.send(frame("alice", ALICE, 200, 300)).await;
        assert_eq!(
            bands(r.docs().unwrap()[0].tensor().unwrap(), 200),
            [ALICE, BOB],
            "{what}"
        );
    }
    // A frame of another width joins resized to the room's width.
    let r = bob
        .send(request(
            "wide",
            vec![frame("bob", BOB, 100, 600).into_proto()],
        ))
        .await;
    assert_eq!(status(&r).0, 0);
    assert_eq!(response_tensor(&r).shape(), [250, 300, 3]);
    assert_eq!(bob.close().await.unwrap(), None);
    alice.leave().await;
    assert!(flow.is_running());
    assert!(!flow.stderr().contains("panicked"), "{}", flow.stderr());
    assert!(flow.interrupt().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_open_streams_cleanly_and_exits_zero() {
    let mut flow = Flow::start_default(&[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    let r = raw
        .send(request(
            "a",
            vec![frame("alice", ALICE, 20, 30).into_proto()],
        ))
        .await;
    assert_eq!(status(&r).0, 0);
    let status = flow.interrupt();
    assert!(status.success(), "exit status {status:?}");
    // The open stream was ended by the server with an OK status, not broken.
    assert_eq!(raw.next().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_keep_request_order_with_pipelining() {
    let flow = Flow::start_default(&[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    // Send 50 requests without waiting, then read 50 responses in order.
    let ids: Vec<String> = (0..50).map(|i| format!("req{i:02}")).collect();
    let t = Tensor::new(DType::U8, vec![10, 10, 3], Bytes::from(vec![9u8; 300])).unwrap();
    let mut first = None;
    for id in &ids {
        let mut doc = vchat_core::Document::with_tensor(t.clone());
        doc.set_tag_str("user", "p");
        let r = request(id, vec![doc.into_proto()]);
        if first.is_none() {
            first = Some(raw.send(r).await);
        } else {
            raw.send_no_wait(r);
        }
    }
    assert_eq!(first.unwrap().header.unwrap().request_id, "req00");
    for id in &ids[1..] {
        let r = raw.next().await.unwrap().unwrap();
        assert_eq!(&r.header.unwrap().request_id, id);
    }
}
