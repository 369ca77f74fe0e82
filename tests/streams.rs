//! Stream controls through the real binaries: receive streams paced by a source,
//! skip_frames against backpressure, max_fps, extra inputs changing mid-stream,
//! extra outputs beside frames, send-only streams, and the example Flows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vchat_core::value::Kind;
use vchat_core::{Struct, Value, number_value};
use vchat_e2e::*;
use vchat_proto::DataRequestProto;

fn example(name: &str) -> std::path::PathBuf {
    repo_root().join("examples/streams").join(name)
}

fn with_params(
    mut req: DataRequestProto,
    endpoint: &str,
    params: &[(&str, Value)],
) -> DataRequestProto {
    req.header.as_mut().unwrap().exec_endpoint = Some(endpoint.into());
    req.parameters = Some(Struct {
        fields: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    });
    req
}

fn is_skipped(r: &DataRequestProto) -> bool {
    r.parameters
        .as_ref()
        .and_then(|p| p.fields.get("__skipped__"))
        .is_some_and(|v| v.kind == Some(Kind::BoolValue(true)))
}

/// `parameters.__results__[executor][key]`.
fn result(r: &DataRequestProto, executor: &str, key: &str) -> Option<Value> {
    let all = r.parameters.as_ref()?.fields.get("__results__")?;
    let Some(Kind::StructValue(all)) = &all.kind else {
        return None;
    };
    let Some(Kind::StructValue(own)) = &all.fields.get(executor)?.kind else {
        return None;
    };
    own.fields.get(key).cloned()
}

#[test]
fn example_flows_load() {
    for f in ["receive.yml", "skip_frames.yml", "send.yml", "max_fps.yml"] {
        let spec =
            vchat_core::config::load_flow(&example(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let registry = vchat_cli_registry();
        for e in &spec.executors {
            registry.build(e).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}

fn vchat_cli_registry() -> vchat_core::Registry {
    vchat_cli::builtin_registry()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_stream_is_paced_by_its_source() {
    let flow = Flow::start(&example("receive.yml"), &[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    let started = Instant::now();
    // One request; 45 frames at 30 fps come back, all with its id.
    let first = raw
        .send(with_params(
            request("watch", vec![]),
            "/watch",
            &[("frames", number_value(45.0))],
        ))
        .await;
    assert_eq!(status(&first).0, 0, "{:?}", status(&first));
    assert_eq!(response_tensor(&first).shape(), [240, 320, 3]);
    let mut n = 1;
    while let Some(r) = raw.next().await.unwrap() {
        assert_eq!(r.header.as_ref().unwrap().request_id, "watch");
        n += 1;
        if n == 45 {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(n, 45);
    // Paced, not as fast as possible: 44 frame periods at 30 fps is 1.47 s. Only a
    // lower bound: a loaded machine may be slower, never faster.
    assert!(
        elapsed >= Duration::from_millis(1400),
        "45 frames in {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vchat_client_renders_a_receive_stream() {
    let flow = Flow::start(&example("receive.yml"), &[]);
    let out = tokio::process::Command::new(bin("vchat-client"))
        .args([
            flow.addr(),
            "viewer",
            "--mode",
            "receive",
            "--endpoint",
            "/watch",
            "--headless",
            "--duration",
            "2.5",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recv: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.split(" recv ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(recv.iter().any(|&n| n >= 20), "{stdout}");
    assert!(
        stdout.contains("sent 1 ") && stdout.contains("mosaic 240x320"),
        "{stdout}"
    );
}

/// Sends `n` small frames `gap` apart without waiting for answers, then reads all
/// answers; returns them with their latency (send to receive).
async fn burst(addr: &str, n: usize, gap: Duration) -> Vec<(DataRequestProto, Duration)> {
    let mut raw = RawStream::connect(addr).await;
    let mut sent_at = Vec::new();
    let reader = {
        let mut raw_rx = raw.take_responses();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Some(r)) = raw_rx.message().await {
                got.push((r, Instant::now()));
            }
            got
        })
    };
    for i in 0..n {
        sent_at.push(Instant::now());
        raw.send_no_wait(request(
            &format!("r{i:03}"),
            vec![frame("u", [9, 9, 9], 10, 10).into_proto()],
        ));
        tokio::time::sleep(gap).await;
    }
    drop(raw);
    let got = tokio::time::timeout(PATIENCE * 2, reader)
        .await
        .expect("answers in time")
        .unwrap();
    got.into_iter()
        .map(|(r, at)| {
            let i: usize = r.header.as_ref().unwrap().request_id[1..].parse().unwrap();
            (r, at - sent_at[i])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_frames_bounds_latency_where_queueing_would_not() {
    let dir = scratch("skip");
    let slow = |skip: bool| {
        format!(
            "jtype: Flow\nexecutors:\n  - uses: Slow\n    name: slow\n    skip_frames: {skip}\n    uses_with:\n      delay_ms: 100\n"
        )
    };
    let with_skip = Flow::start(&write_file(&dir, "skip.yml", &slow(true)), &[]);
    let without = Flow::start(&write_file(&dir, "queue.yml", &slow(false)), &[]);
    // 30 frames at 50 fps into an executor that takes 100 ms each.
    let skipping = burst(with_skip.addr(), 30, Duration::from_millis(20)).await;
    let queueing = burst(without.addr(), 30, Duration::from_millis(20)).await;

    // Every request is answered either way (Jina's one response per request).
    assert_eq!((skipping.len(), queueing.len()), (30, 30));
    // Without skipping every frame is processed: 30 x 100 ms, so the last answer
    // waited for the whole queue.
    assert!(queueing.iter().all(|(r, _)| !is_skipped(r)));
    let last_queued = queueing.last().unwrap().1;
    assert!(
        last_queued >= Duration::from_millis(2000),
        "{last_queued:?}"
    );
    // With skipping, most are answered as skipped, and the handler ran far fewer
    // times than there were frames.
    let processed: Vec<&(DataRequestProto, Duration)> =
        skipping.iter().filter(|(r, _)| !is_skipped(r)).collect();
    assert!(processed.len() < 20, "{} processed", processed.len());
    assert!(processed.len() >= 2);
    let runs = processed
        .iter()
        .filter_map(|(r, _)| match result(r, "slow", "processed")?.kind {
            Some(Kind::NumberValue(n)) => Some(n),
            _ => None,
        })
        .fold(0.0, f64::max);
    assert_eq!(
        runs as usize,
        processed.len(),
        "the handler ran once per processed frame"
    );
    // The newest frame is processed without waiting behind the whole burst.
    let last = skipping.last().unwrap();
    assert!(!is_skipped(&last.0));
    assert!(
        last.1 < last_queued,
        "skipping {:?} vs queueing {last_queued:?}",
        last.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fps_caps_the_frames_a_client_receives() {
    let dir = scratch("maxfps");
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nwith:\n  max_fps: 10\nexecutors:\n  - uses: Passthrough\n",
    );
    let flow = Flow::start(&flow_yml, &[]);
    let started = Instant::now();
    let answers = burst(flow.addr(), 40, Duration::from_millis(10)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let with_frames = answers.iter().filter(|(r, _)| !is_skipped(r)).count();
    assert_eq!(answers.len(), 40);
    // At most one frame per 100 ms of the stream (plus the first).
    assert!(
        (with_frames as f64) <= elapsed * 10.0 + 1.0,
        "{with_frames} frames in {elapsed:.2} s"
    );
    assert!((1..40).contains(&with_frames));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_change_mid_stream_and_results_come_back() {
    let dir = scratch("params");
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nexecutors:\n  - uses: Grayscale\n    name: gray\n  - uses: FrameStats\n    name: stats\n",
    );
    let flow = Flow::start(&flow_yml, &[]);
    let client = vchat_client::Client::new(flow.addr()).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(BTreeMap::new());
    let (frames_tx, frames_rx) = tokio::sync::mpsc::channel(1);
    let (resp_tx, mut responses) = tokio::sync::mpsc::unbounded_channel();
    let options = vchat_client::PostOptions::new()
        .request_size(1)
        .live_parameters(rx)
        .on_done(move |r| {
            let _ = resp_tx.send(r.clone());
        });
    let task = tokio::spawn(client.post(
        "/",
        tokio_stream::wrappers::ReceiverStream::new(frames_rx),
        options,
    ));
    let ask = |mix: f64, threshold: f64| {
        let mut p = BTreeMap::new();
        p.insert("mix".to_string(), number_value(mix));
        p.insert("threshold".to_string(), number_value(threshold));
        tx.send(p).unwrap();
    };
    // A red frame: its mean brightness is 85, gray (mix 1) or not (mix 0).
    ask(0.0, 50.0);
    frames_tx
        .send(frame("u", [0, 0, 255], 10, 10))
        .await
        .unwrap();
    let r = responses.recv().await.unwrap();
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 10),
        [[0, 0, 255]]
    );
    let results: BTreeMap<String, Value> = r.results().into_iter().collect();
    assert_eq!(results["stats.bright"].kind, Some(Kind::BoolValue(true)));
    assert_eq!(results["stats.mean"], number_value(85.0));

    // New extra inputs on the same stream change both executors' behaviour.
    ask(1.0, 100.0);
    frames_tx
        .send(frame("u", [0, 0, 255], 10, 10))
        .await
        .unwrap();
    let r = responses.recv().await.unwrap();
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 10),
        [[76, 76, 76]]
    );
    let results: BTreeMap<String, Value> = r.results().into_iter().collect();
    assert_eq!(results["stats.bright"].kind, Some(Kind::BoolValue(false)));
    assert_eq!(results["stats.frames"], number_value(2.0));
    drop(frames_tx);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_stream_gets_acknowledgements_and_extra_outputs() {
    let flow = Flow::start(&example("send.yml"), &[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    let r = raw
        .send(with_params(
            request("a1", vec![frame("u", [200, 200, 200], 10, 10).into_proto()]),
            "/analyse",
            &[],
        ))
        .await;
    assert_eq!(status(&r).0, 0);
    assert_eq!(
        result(&r, "stats", "bright").unwrap().kind,
        Some(Kind::BoolValue(true))
    );
    // The document comes back without its frame, tags intact.
    let Some(vchat_proto::jina::data_request_proto::data_content_proto::Documents::Docs(da)) =
        r.data.and_then(|d| d.documents)
    else {
        panic!("no docs")
    };
    assert!(da.docs[0].content.is_none());
    assert!(
        da.docs[0]
            .tags
            .as_ref()
            .unwrap()
            .fields
            .contains_key("user")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_file_plays_annotated_to_a_receive_stream() {
    let dir = scratch("y4m");
    // Three 64x48 4:2:0 frames, grey levels 60, 120, 180.
    let mut clip = b"YUV4MPEG2 W64 H48 F30:1 Ip A1:1 C420jpeg\n".to_vec();
    for level in [60u8, 120, 180] {
        clip.extend_from_slice(b"FRAME\n");
        clip.extend(std::iter::repeat_n(level, 64 * 48));
        clip.extend(std::iter::repeat_n(128u8, 2 * 32 * 24));
    }
    let clip_path = dir.join("clip.y4m");
    std::fs::write(&clip_path, clip).unwrap();
    let flow_yml = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  endpoints:\n    /play: receive\nexecutors:\n  - uses: VideoFileSource\n    uses_with:\n      path: {}\n  - uses: Annotate\n    uses_with:\n      text: hi\n      scale: 1\n",
            clip_path.display()
        ),
    );
    let flow = Flow::start(&flow_yml, &[]);
    let mut raw = RawStream::connect(flow.addr()).await;
    let first = raw
        .send(with_params(request("play", vec![]), "/play", &[]))
        .await;
    let mut frames = vec![response_tensor(&first)];
    for _ in 0..2 {
        frames.push(response_tensor(&raw.next().await.unwrap().unwrap()));
    }
    // The whole clip, once (no loop): once we stop sending, the stream ends with
    // no fourth frame.
    assert_eq!(raw.close().await.unwrap(), None);
    for (t, level) in frames.iter().zip([60u8, 120, 180]) {
        assert_eq!(t.shape(), [48, 64, 3]);
        // The bottom-right pixel is the clip's; the text is drawn top-left.
        assert_eq!(&t.data()[t.data().len() - 3..], &[level, level, level]);
        assert!(t.data()[..64 * 3 * 12].contains(&255), "no text drawn");
    }
}
