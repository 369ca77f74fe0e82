//! A gateway whose clients fall behind: frames waiting for a stream past
//! `max_outbox_bytes` are replaced by skipped replies, newest kept, so memory
//! stays flat, a slow reader gets the latest mosaic when it reads again, and the
//! others in its room are served as before.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;
use vchat_core::proto::is_skipped;
use vchat_e2e::*;
use vchat_proto::DataRequestProto;
use vchat_proto::jina::jina_rpc_client::JinaRpcClient;

/// Frame height and width: 176 KiB a frame, a mosaic of the whole room over
/// 1 MiB, so that a few waiting responses are tens of MiB.
const H: usize = 200;
const W: usize = 300;
const SLOW_USERS: usize = 6;
const FRAMES: usize = 60;

/// Peak RSS of process `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn color(user: usize, i: usize) -> [u8; 3] {
    [i as u8, 40 * user as u8, 200]
}

fn frame_request(id: &str, user: &str, color: [u8; 3]) -> DataRequestProto {
    request(id, vec![frame(user, color, H, W).into_proto()])
}

type Call = (
    mpsc::UnboundedSender<DataRequestProto>,
    Streaming<DataRequestProto>,
);

/// A `Call` stream on a connection of its own, with HTTP/2's default 64 KiB
/// stream window: a client that does not poll its responses takes nothing
/// after the first 64 KiB.
async fn open(flow: &Flow) -> Call {
    let channel = Endpoint::from_shared(flow.addr().replace("grpc://", "http://"))
        .unwrap()
        .connect_timeout(PATIENCE)
        .initial_stream_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = JinaRpcClient::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    let responses = tokio::time::timeout(PATIENCE, client.call(UnboundedReceiverStream::new(rx)))
        .await
        .expect("the call is answered in time")
        .expect("the stream is opened")
        .into_inner();
    (tx, responses)
}

async fn next(responses: &mut Streaming<DataRequestProto>) -> DataRequestProto {
    tokio::time::timeout(PATIENCE, responses.message())
        .await
        .expect("a response in time")
        .expect("the stream is open")
        .expect("a response")
}

/// Polls the Flow's metrics until `name` reaches `at_least`.
async fn metric_reaches(flow: &Flow, name: &str, at_least: f64) -> f64 {
    let started = Instant::now();
    loop {
        let url = flow.metrics_url().to_string();
        let text = tokio::task::spawn_blocking(move || http_get(&url))
            .await
            .unwrap();
        let value = metric(&text, name);
        if value >= at_least {
            return value;
        }
        assert!(
            started.elapsed() < PATIENCE * 3,
            "{name} is {value}, not {at_least}, in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_get_the_newest_mosaic_and_memory_stays_flat() {
    // send_timeout_s far off: the slow readers are behind, not gone.
    let flow = Flow::start_default(&["--port-monitoring", "0", "--send-timeout-s", "600"]);
    let pid = flow.pid();

    // A user who reads every answer before sending the next frame.
    let mut healthy = open(&flow).await;
    healthy
        .0
        .send(frame_request("h-join", "healthy", [0, 0, 0]))
        .unwrap();
    assert_eq!(status(&next(&mut healthy.1).await).0, 0);
    let baseline = peak_rss_kib(pid);

    // Slow users in the same room send frames at 30 fps and read nothing.
    let mut slow = Vec::new();
    for _ in 0..SLOW_USERS {
        slow.push(open(&flow).await);
    }
    let senders: Vec<_> = slow.iter().map(|(tx, _)| tx.clone()).collect();
    let sending = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for i in 0..FRAMES {
            tick.tick().await;
            for (u, tx) in senders.iter().enumerate() {
                tx.send(frame_request(
                    &format!("{u}-{i}"),
                    &format!("slow{u}"),
                    color(u, i),
                ))
                .unwrap();
            }
        }
    });

    // Meanwhile the healthy user gets every mosaic, whole, with the slow users
    // in it.
    let mut healthy_answers = 0;
    let mut widest = 0;
    while !sending.is_finished() {
        let id = format!("h-{healthy_answers}");
        healthy
            .0
            .send(frame_request(&id, "healthy", [0, 0, 0]))
            .unwrap();
        let resp = next(&mut healthy.1).await;
        assert_eq!(status(&resp).0, 0, "{:?}", status(&resp));
        assert!(!is_skipped(&resp), "the healthy user's mosaic was dropped");
        assert_eq!(resp.header.as_ref().unwrap().request_id, id);
        let tiles = response_tensor(&resp).shape()[0] / H;
        widest = widest.max(tiles);
        healthy_answers += 1;
    }
    sending.await.unwrap();
    assert!(healthy_answers > 0);
    assert_eq!(widest, SLOW_USERS + 1, "every slow user is in the mosaic");

    // Every request of the slow users is processed although none of them reads:
    // their streams go on taking frames instead of stalling.
    let total = (FRAMES * SLOW_USERS + healthy_answers + 1) as f64;
    metric_reaches(&flow, "vchat_requests_total", total).await;
    let dropped = metric_reaches(&flow, "vchat_frames_dropped_total", 1.0).await;

    // Without the bound each slow stream holds mosaics up to
    // max_stream_queue_bytes (8 MiB) and stops reading its requests, which wait
    // in its HTTP/2 window: over 50 MiB here. With it, about two mosaics each.
    let grown_mib = peak_rss_kib(pid).saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 48,
        "the gateway grew by {grown_mib} MiB with {SLOW_USERS} slow readers"
    );

    // Reading again, each slow user gets an answer to every request, in order;
    // most are skipped replies, and the last is the newest mosaic, showing its
    // last frame.
    let mut skipped_seen = 0;
    for (u, (tx, mut responses)) in slow.into_iter().enumerate() {
        drop(tx);
        let mut mosaics = Vec::new();
        for i in 0..FRAMES {
            let resp = next(&mut responses).await;
            assert_eq!(status(&resp).0, 0, "{:?}", status(&resp));
            assert_eq!(resp.header.as_ref().unwrap().request_id, format!("{u}-{i}"));
            if is_skipped(&resp) {
                skipped_seen += 1;
            } else {
                mosaics.push((i, resp));
            }
        }
        let (last, newest) = mosaics.last().expect("a mosaic");
        assert_eq!(*last, FRAMES - 1, "slow user {u}'s last answer is a mosaic");
        let tiles = bands(&response_tensor(newest), H);
        assert!(
            tiles.contains(&color(u, FRAMES - 1)),
            "the newest mosaic shows the user's last frame: {tiles:?}"
        );
        assert!(
            mosaics.len() <= FRAMES / 4,
            "slow user {u} got {} stale mosaics of {FRAMES}",
            mosaics.len()
        );
    }
    // Every dropped mosaic was counted.
    let url = flow.metrics_url().to_string();
    let text = tokio::task::spawn_blocking(move || http_get(&url))
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "vchat_frames_dropped_total"),
        skipped_seen as f64
    );
    assert!(dropped >= 1.0);

    // The healthy user is still served.
    healthy
        .0
        .send(frame_request("h-last", "healthy", [0, 0, 0]))
        .unwrap();
    let resp = next(&mut healthy.1).await;
    assert!(!is_skipped(&resp));
    assert_eq!(status(&resp).0, 0);
}
