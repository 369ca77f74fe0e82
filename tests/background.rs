//! A browser tab behind another keeps sending its camera over the WebSocket at
//! the rate of one in front: real headless Chromium with its own handling of
//! background tabs (page timers slowed to about one a second), a fake camera,
//! two tabs in one room, and the rate counted by the server (the `seq` it gives
//! each frame of a connection), while a third user of the room checks that the
//! background tab's tile keeps changing.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use vchat_e2e::browser::{Chromium, Page, WsClient};
use vchat_e2e::*;

/// Long enough for Chromium, the fake camera and the users to settle on a
/// shared two-core machine.
const BROWSER_PATIENCE: Duration = Duration::from_secs(90);

/// How long the third user watches the room.
const WATCH: Duration = Duration::from_secs(8);

/// How often the third user sends a frame (and so gets a mosaic): faster than
/// the tabs send, so that each new frame of theirs is seen.
const WATCH_FPS: f64 = 25.0;

/// The frame size of every user: the vertical mosaic's tiles are then all
/// 240 rows, at multiples of the JPEG's 16-row blocks, so a tile's decoded
/// pixels (but those at its edges) change only when its user's frame does.
const H: usize = 240;
const W: usize = 320;
/// Rows at the top and bottom of a tile left out of the comparison.
const EDGE: usize = 16;

fn web_flow(dir: &Path) -> std::path::PathBuf {
    write_file(
        dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\nexecutors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n      idle_timeout_s: 600\n",
            repo_root().join("executor/config.yml").display()
        ),
    )
}

/// How often each named user's tile changed in the mosaics a third user got
/// while sending frames for [`WATCH`], per second.
async fn tile_rates(web: &str, room: &str, users: &[&str]) -> Vec<f64> {
    let url = format!(
        "{}/ws?user=watcher&room={room}",
        web.replacen("http", "ws", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    let mut watcher = WsClient::new(ws);
    assert_eq!(watcher.status().await["type"], "hello");
    let px: Vec<u8> = std::iter::repeat_n([90u8, 90, 90], H * W)
        .flatten()
        .collect();
    let frame = vchat_core::jpeg::encode_bgr(&px, H, W, 90).unwrap();
    let mut last: Vec<Option<Vec<u8>>> = vec![None; users.len()];
    let mut changes = vec![0u32; users.len()];
    let period = Duration::from_secs_f64(1.0 / WATCH_FPS);
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < WATCH {
        watcher.send_binary(frame.clone()).await;
        let (status, mosaic) = watcher.reply().await;
        next = (next + period).max(Instant::now());
        let Some(mosaic) = mosaic else {
            // Over the rate cap after a late reply: the next frame gets one.
            assert_eq!(status["type"], "rate_limited", "{status}");
            tokio::time::sleep_until(next.into()).await;
            continue;
        };
        let names: Vec<&str> = status["participants"]
            .as_array()
            .unwrap_or_else(|| panic!("no participants in {status}"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let (pixels, h, w) = vchat_core::jpeg::decode_bgr(&mosaic, 1 << 24).unwrap();
        assert_eq!((h, w), (H * names.len(), W), "{status}");
        for (i, user) in users.iter().enumerate() {
            let at = names
                .iter()
                .position(|n| n == user)
                .unwrap_or_else(|| panic!("{user} is not in the mosaic: {status}"));
            // Rows near a tile's edge take colour from the next tile (the
            // decoder's chroma upsampling reaches across): the rows between.
            let tile = pixels[(at * H + EDGE) * W * 3..((at + 1) * H - EDGE) * W * 3].to_vec();
            if last[i].as_ref().is_some_and(|t| *t != tile) {
                changes[i] += 1;
            }
            last[i] = Some(tile);
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let secs = started.elapsed().as_secs_f64();
    watcher.close().await;
    changes.iter().map(|&n| f64::from(n) / secs).collect()
}

/// Two tabs of the page (`capture` added to its URL) join one room over the
/// WebSocket; the second is brought to the front, and the first, now in the
/// background with its timers slowed, must still send 10 frames a second.
async fn background_tab_keeps_sending(name: &str, capture: &str) {
    let dir = scratch(name);
    let flow = Flow::start(&web_flow(&dir), &[]);
    let web = flow.web_url().to_string();
    let chromium = Chromium::launch_throttling_background_tabs(&dir);
    let cdp = chromium.connect().await;
    // The page asks for 20 frames a second, so that the 10 asserted hold on a
    // busy machine; `transport=ws` keeps it on the WebSocket should it have
    // another way.
    let url = |user: &str| {
        format!("{web}/?user={user}&room=bg&autojoin=1&fps=20&w={W}&h={H}&transport=ws{capture}")
    };
    let behind = Page::open(&cdp, "behind", &url("behind")).await;
    behind
        .wait_for("a first mosaic", "vchat.frames > 0", BROWSER_PATIENCE)
        .await;
    let front = Page::open(&cdp, "front", &url("front")).await;
    cdp.call(Some(front.session()), "Page.bringToFront", json!({}))
        .await
        .unwrap();
    front
        .wait_for(
            "a mosaic of both tabs",
            "vchat.lastMosaic && vchat.lastMosaic.participants.join() === 'behind,front'",
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(front.eval("document.visibilityState").await, "visible");
    assert_eq!(behind.eval("document.visibilityState").await, "hidden");
    // The background tab's page timers really are slowed: three timers of
    // 10 ms one after the other take a second or more.
    let chained = behind
        .eval(
            "new Promise((done) => { const t0 = performance.now(); let n = 0; \
             const tick = () => (++n === 3 ? done(performance.now() - t0) : setTimeout(tick, 10)); \
             setTimeout(tick, 10); })",
        )
        .await
        .as_f64()
        .unwrap();
    assert!(
        chained >= 900.0,
        "three 10 ms timers took {chained} ms in the background tab: not throttled, so this test proves nothing"
    );

    // The server numbers the frames of each connection (`seq` of its
    // replies): how many it received from each tab while a third user of the
    // room watched how often each tab's tile changed.
    let received = async || {
        let seq = "vchat.lastMosaic.seq";
        let behind = behind.eval(seq).await.as_f64().unwrap();
        let front = front.eval(seq).await.as_f64().unwrap();
        (behind, front, Instant::now())
    };
    let before = received().await;
    let rates = tile_rates(&web, "bg", &["behind", "front"]).await;
    let after = received().await;
    let secs = (after.2 - before.2).as_secs_f64();
    let (behind_fps, front_fps) = ((after.0 - before.0) / secs, (after.1 - before.1) / secs);
    let (behind_seen, front_seen) = (rates[0], rates[1]);
    let s = behind.state().await;
    eprintln!(
        "{name}: the server received {behind_fps:.1} frames a second from the background tab \
         and {front_fps:.1} from the front one; their tiles changed {behind_seen:.1} and \
         {front_seen:.1} times a second (capture {}; three 10 ms timers took {chained:.0} ms)",
        s["capture"]
    );
    assert_eq!(behind.eval("document.visibilityState").await, "hidden");
    assert_eq!(s["state"], "streaming", "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert!(
        behind_fps >= 10.0,
        "the server received {behind_fps:.1} frames/s from the background tab \
         ({front_fps:.1} from the front one): {s}"
    );
    // And they were new pictures, not one picture again and again: the third
    // user saw the background tab's tile change about as often as the front
    // one's (both sampled alike, however fast the third user could go).
    assert!(
        behind_seen >= front_seen / 2.0 && behind_seen > 0.0,
        "the background tab's tile changed {behind_seen:.1} times a second, the front one's \
         {front_seen:.1}: {s}"
    );
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_tab_keeps_its_frame_rate_over_the_websocket() {
    background_tab_keeps_sending("background", "").await;
}

/// The same with the capture of browsers without MediaStreamTrackProcessor:
/// the `<video>`'s picture at each tick of a Worker's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_tab_keeps_its_frame_rate_with_the_worker_clock() {
    background_tab_keeps_sending("background-clock", "&capture=clock").await;
}
