//! The browser side of a Flow: the web client in real headless Chromium (a fake
//! camera, driven over the DevTools protocol) sharing a room with a gRPC
//! `vchat-client`, and the WebSocket's handling of bad input, origins, limits
//! and TLS, from a plain WebSocket client.
//!
//! The pages here use the WebSocket (`?transport=ws`); the WebRTC transport has
//! its own tests in webrtc.rs.
//!
//! Screenshots and the pages' last mosaics are kept in target/e2e/browser-*/.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use vchat_client::source::user_color;
use vchat_e2e::browser::{Chromium, Page, WsClient, WsReply, base64_decode};
use vchat_e2e::*;

/// Long enough for Chromium, the fake camera and three users to settle on a
/// shared two-core machine.
const BROWSER_PATIENCE: Duration = Duration::from_secs(90);

/// A chat Flow with the browser side and `extra` lines in its `with:`. Its idle
/// timeout is far longer than any test: a user leaves only because their
/// stream ended, which is what the tests check.
fn web_flow(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_file(
        dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\n{extra}executors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n      idle_timeout_s: 600\n",
            repo_root().join("executor/config.yml").display()
        ),
    )
}

/// A solid-colour BGR `h`x`w` JPEG.
fn jpeg(color: [u8; 3], h: usize, w: usize) -> bytes::Bytes {
    let px: Vec<u8> = std::iter::repeat_n(color, h * w).flatten().collect();
    vchat_core::jpeg::encode_bgr(&px, h, w, 90).unwrap()
}

fn participants(status: &Value) -> Vec<String> {
    status["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("no participants in {status}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Share of the pixels of rows `rows` of BGR `pixels` (width `w`) within
/// `tolerance` of `bgr`.
fn share(
    pixels: &[u8],
    w: usize,
    rows: std::ops::Range<usize>,
    bgr: [u8; 3],
    tolerance: u8,
) -> f64 {
    let px = &pixels[rows.start * w * 3..rows.end * w * 3];
    let close = px
        .chunks(3)
        .filter(|p| p.iter().zip(bgr).all(|(a, b)| a.abs_diff(b) <= tolerance))
        .count();
    close as f64 / (px.len() / 3) as f64
}

/// `ws://` of a Flow's `http://` address, with `query`.
fn ws_url(web: &str, query: &str) -> String {
    format!("{}/ws?{query}", web.replacen("http", "ws", 1))
}

type Plain = tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>;

async fn connect(url: &str) -> WsClient<Plain> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    WsClient::new(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_tabs_and_a_grpc_client_share_a_room() {
    let dir = scratch("browser");
    let yml = web_flow(&dir, "");
    let mut flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    assert!(web.starts_with("http://127.0.0.1:"), "{web}");
    let chromium = Chromium::launch(&dir);
    let cdp = chromium.connect().await;

    // ann and bob join from the browser (320x240 frames from the fake camera),
    // carl from the gRPC client (a 240x320 test pattern): every frame has the
    // same width, so the vertical mosaic of all three is 720x320.
    // They join one after the other, so the mosaic's order is ann, bob, carl.
    let ann = Page::open(
        &cdp,
        "ann",
        &format!("{web}/?user=ann&room=r1&autojoin=1&fps=10&transport=ws"),
    )
    .await;
    ann.wait_for("a first mosaic", "vchat.frames > 0", BROWSER_PATIENCE)
        .await;
    let bob = Page::open(
        &cdp,
        "bob",
        &format!("{web}/?user=bob&room=r1&autojoin=1&fps=10&transport=ws"),
    )
    .await;
    bob.wait_for(
        "a mosaic with ann",
        "vchat.lastMosaic && vchat.lastMosaic.participants.join() === 'ann,bob'",
        BROWSER_PATIENCE,
    )
    .await;
    let mut carl_cmd = Command::new(bin("vchat-client"));
    carl_cmd.args([
        flow.addr(),
        "carl",
        "--headless",
        "--source",
        "test",
        "--room",
        "r1",
        "--size",
        "240x320",
        "--fps",
        "10",
    ]);
    let mut carl = Proc::spawn(carl_cmd);
    let all_three = "vchat.lastMosaic && vchat.lastMosaic.participants.length === 3";
    for page in [&ann, &bob] {
        let s = page
            .wait_for("a mosaic of all three", all_three, BROWSER_PATIENCE)
            .await;
        let m = &s["lastMosaic"];
        assert_eq!(
            (m["width"].as_u64(), m["height"].as_u64()),
            (Some(320), Some(720)),
            "{}: {s}",
            page.name
        );
        assert_eq!(m["participants"], json!(["ann", "bob", "carl"]), "{s}");
        assert_eq!(s["state"], "streaming", "{s}");
        assert!(s["sent"].as_u64() >= s["frames"].as_u64(), "{s}");
        page.screenshot(&dir.join(format!("{}.png", page.name)))
            .await;
        let png = decode_png(&dir.join(format!("{}.png", page.name)));
        assert!(png.0 > 700 && png.1 > 300, "screenshot {}x{}", png.0, png.1);
    }
    // The gRPC user gets the same room's mosaic.
    carl.wait_line("carl's mosaic of all three", |l| {
        l.starts_with("carl: sent ") && l.contains("mosaic 720x320")
    });

    // ann's newest mosaic, as the page received it: carl's test pattern (his
    // colour, mostly) is the bottom third.
    let b64 = ann.eval("vchat.lastMosaicBase64()").await;
    let jpeg_bytes = base64_decode(b64.as_str().unwrap());
    std::fs::write(dir.join("ann-mosaic.jpg"), &jpeg_bytes).unwrap();
    let (px, h, w) = vchat_core::jpeg::decode_bgr(&jpeg_bytes, 1 << 24).unwrap();
    assert_eq!((h, w), (720, 320));
    let carl_share = share(&px, w, 490..710, user_color("carl"), 40);
    assert!(
        carl_share > 0.5,
        "carl's colour covers {carl_share} of his tile"
    );
    let in_ann_tile = share(&px, w, 10..230, user_color("carl"), 40);
    assert!(
        in_ann_tile < 0.2,
        "carl's colour covers {in_ann_tile} of ann's tile"
    );

    // bob closes his tab: his stream ends, he leaves (the idle timeout is
    // 10 minutes), and the others' mosaics shrink to two.
    bob.close().await;
    let s = ann
        .wait_for(
            "a mosaic without bob",
            "vchat.lastMosaic.participants.join() === 'ann,carl'",
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(s["lastMosaic"]["height"], 480, "{s}");
    carl.wait_line("carl's mosaic without bob", |l| {
        l.starts_with("carl: sent ") && l.contains("mosaic 480x320")
    });
    // carl stops: ann is alone and gets her own frame back.
    let (status, log) = carl.interrupt();
    assert!(status.success(), "{log}");
    let s = ann
        .wait_for(
            "her own frame",
            "vchat.lastMosaic.participants.join() === 'ann'",
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(
        (
            s["lastMosaic"]["width"].as_u64(),
            s["lastMosaic"]["height"].as_u64()
        ),
        (Some(320), Some(240)),
        "{s}"
    );
    assert_eq!(s["errors"], 0, "{s}");
    ann.screenshot(&dir.join("ann-alone.png")).await;

    // The server goes away: the page says so and keeps trying to reconnect.
    let status = flow.interrupt();
    assert!(status.success(), "{}", flow.stderr());
    let s = ann
        .wait_for(
            "the server going away",
            "vchat.state === 'reconnecting' && vchat.closes.length > 0",
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(s["closes"][0]["code"], 1001, "{s}");
    // It retries, and says why each time.
    let s = ann
        .wait_for("a retry", "vchat.reconnects >= 2", BROWSER_PATIENCE)
        .await;
    let notices: Vec<&str> = s["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("The server is shutting down; reconnecting in")),
        "{s}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("Cannot reach the server; reconnecting in")),
        "{s}"
    );
    assert_eq!(s["state"], "reconnecting", "{s}");
    ann.screenshot(&dir.join("ann-server-gone.png")).await;

    // The server comes back where it was: the page streams again by itself.
    let frames = s["frames"].as_u64().unwrap();
    let web_port = web.rsplit(':').next().unwrap().to_string();
    let _again = Flow::start_on_port(&yml, flow.port(), &["--http-port", &web_port]);
    let s = ann
        .wait_for(
            "streaming again",
            &format!("vchat.state === 'streaming' && vchat.frames > {frames} + 3"),
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(s["lastMosaic"]["participants"], json!(["ann"]), "{s}");
    assert_eq!(s["message"], "", "{s}");
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_camera_is_denied_says_so_and_sends_nothing() {
    let dir = scratch("browser-denied");
    // The example Flow, on free ports.
    let flow = Flow::start(
        &repo_root().join("examples/flows/browser.yml"),
        &["--http-port", "0"],
    );
    let chromium = Chromium::launch_denying_camera(&dir);
    let cdp = chromium.connect().await;
    let dora = Page::open(
        &cdp,
        "dora",
        &format!("{}/?user=dora&autojoin=1&transport=ws", flow.web_url()),
    )
    .await;
    let s = dora
        .wait_for(
            "the camera refusal",
            "vchat.state === 'error'",
            BROWSER_PATIENCE,
        )
        .await;
    assert_eq!(s["lastError"]["name"], "NotAllowedError", "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("Camera access was denied"),
        "{s}"
    );
    assert_eq!(s["sent"], 0, "{s}");
    assert!(s["closes"].as_array().unwrap().is_empty(), "{s}");
    let shown = dora
        .eval("document.getElementById('message').textContent")
        .await;
    assert_eq!(shown, s["message"], "the message is on the page");
    dora.screenshot(&dir.join("dora-denied.png")).await;
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_answers_bad_input_with_errors_and_goes_on() {
    let dir = scratch("browser-bad");
    let yml = web_flow(&dir, "  max_frame_bytes: 200000\n  monitoring: true\n");
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();

    // The page and its script are served by the binary itself.
    let page = http_get(&format!("{web}/"));
    assert!(
        page.contains("<title>vchat</title>") && page.contains("/app.js"),
        "{page}"
    );
    let script = http_get(&format!("{web}/app.js"));
    assert!(script.contains("window.vchat = vchat"), "{script}");

    let mut dan = connect(&ws_url(&web, "user=dan&room=t")).await;
    let hello = dan.status().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["user"], "dan");
    assert_eq!(hello["max_frame_bytes"], 200000);

    // Not a JPEG: an error for that frame, and the connection goes on.
    dan.send_binary(&b"\x89PNG\r\n\x1a\n not a jpeg"[..]).await;
    let (s, _) = dan.reply().await;
    assert_eq!(
        (s["type"].as_str(), s["seq"].as_u64()),
        (Some("error"), Some(1)),
        "{s}"
    );
    assert!(
        s["error"].as_str().unwrap().starts_with("not a JPEG"),
        "{s}"
    );
    // A JPEG that does not decode: the executor's error.
    dan.send_binary(&b"\xff\xd8\xff\xe0 truncated"[..]).await;
    let (s, _) = dan.reply().await;
    assert_eq!(s["seq"], 2, "{s}");
    assert!(
        s["error"].as_str().unwrap().contains("not a valid JPEG"),
        "{s}"
    );
    // Over max_frame_bytes.
    let mut big = vec![0u8; 300_000];
    big[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    dan.send_binary(big).await;
    let (s, _) = dan.reply().await;
    assert_eq!(s["seq"], 3, "{s}");
    assert!(
        s["error"].as_str().unwrap().contains(
            "a frame of 300000 bytes is over the limit of 200000 bytes (max_frame_bytes)"
        ),
        "{s}"
    );
    // Text is not read.
    dan.send_text("{\"hello\": 1}").await;
    let (s, _) = dan.reply().await;
    assert_eq!(s["type"], "error", "{s}");
    assert!(s.get("seq").is_none(), "{s}");
    // A good frame still works.
    dan.send_binary(jpeg([200, 30, 30], 24, 32)).await;
    let (s, mosaic) = dan.reply().await;
    assert_eq!(
        (s["type"].as_str(), s["seq"].as_u64()),
        (Some("mosaic"), Some(4)),
        "{s}"
    );
    assert_eq!(participants(&s), ["dan"]);
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(32), Some(24))
    );
    let (_, h, w) = vchat_core::jpeg::decode_bgr(&mosaic.unwrap(), 1 << 20).unwrap();
    assert_eq!((h, w), (24, 32));

    // No user: the chat says what is missing.
    let mut anon = connect(&ws_url(&web, "room=t")).await;
    anon.status().await;
    anon.send_binary(jpeg([30, 200, 30], 24, 32)).await;
    let (s, _) = anon.reply().await;
    assert!(
        s["error"].as_str().unwrap().contains("missing tags.user"),
        "{s}"
    );

    // eve joins, then her connection breaks without a close: she leaves.
    let mut eve = connect(&ws_url(&web, "user=eve&room=t")).await;
    eve.status().await;
    eve.send_binary(jpeg([30, 30, 200], 24, 32)).await;
    let (s, _) = eve.reply().await;
    assert_eq!(participants(&s), ["dan", "eve"]);
    drop(eve.into_inner());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        dan.send_binary(jpeg([200, 30, 30], 24, 32)).await;
        let (s, _) = dan.reply().await;
        if participants(&s) == ["dan"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "eve never left: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A clean close ends the stream too.
    dan.close().await;

    // Every frame was counted: 7 requests at least (4 of dan before the text,
    // anon's, eve's, dan's last), 4 of them failed.
    let text = http_get(flow.metrics_url());
    assert!(metric(&text, "vchat_requests_total") >= 7.0, "{text}");
    assert!(
        metric(&text, "vchat_request_failures_total") >= 4.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_refuses_other_origins() {
    let dir = scratch("browser-origin");
    let yml = web_flow(&dir, "  websocket_origins: [https://chat.example.org]\n");
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    let host = web.strip_prefix("http://").unwrap().to_string();
    let with_origin = |origin: &str| {
        let mut req = ws_url(&web, "user=oz").into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
        req
    };
    for bad in ["http://evil.example", "null", &format!("https://{host}")] {
        match tokio_tungstenite::connect_async(with_origin(bad)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{bad}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                assert!(body.contains("may not open this WebSocket"), "{body}");
            }
            other => panic!("origin {bad} must be refused, got {:?}", other.map(|_| ())),
        }
    }
    // The page's own origin, and one from the allow-list.
    for good in [
        format!("http://{host}"),
        "https://chat.example.org".to_string(),
    ] {
        let (ws, _) = tokio_tungstenite::connect_async(with_origin(&good))
            .await
            .unwrap_or_else(|e| panic!("origin {good} must be let in: {e}"));
        let mut ws = WsClient::new(ws);
        assert_eq!(ws.status().await["type"], "hello");
        ws.close().await;
    }
    // Not a WebSocket at all.
    let plain = std::net::TcpStream::connect(&host).unwrap();
    let resp = raw_http(plain, &host, "/ws");
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    let resp = raw_http(std::net::TcpStream::connect(&host).unwrap(), &host, "/nope");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

/// The raw response to `GET path`.
fn raw_http(mut sock: std::net::TcpStream, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_rate_limits_each_connection() {
    let dir = scratch("browser-rate");
    let yml = web_flow(&dir, "  websocket_max_fps: 2\n");
    let flow = Flow::start(&yml, &[]);
    let mut fay = connect(&ws_url(flow.web_url(), "user=fay")).await;
    assert_eq!(fay.status().await["max_fps"], 2.0);
    // Ten frames at once: a burst of one second's worth (2) is processed, the
    // rest answered rate_limited; one reply each, in order.
    let frame = jpeg([90, 90, 200], 16, 16);
    for _ in 0..10 {
        fay.send_binary(frame.clone()).await;
    }
    let mut kinds = Vec::new();
    for seq in 1..=10 {
        let (s, _) = fay.reply().await;
        assert_eq!(s["seq"], seq, "{s}");
        kinds.push(s["type"].as_str().unwrap().to_string());
    }
    let processed = kinds.iter().filter(|k| *k == "mosaic").count();
    let limited = kinds.iter().filter(|k| *k == "rate_limited").count();
    assert_eq!(processed + limited, 10, "{kinds:?}");
    assert!((1..=4).contains(&processed), "{kinds:?}");
    assert_eq!(kinds[0], "mosaic", "{kinds:?}");
    // A second later the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fay.send_binary(frame).await;
    let (s, m) = fay.reply().await;
    assert_eq!(
        (s["type"].as_str(), s["seq"].as_u64()),
        (Some("mosaic"), Some(11)),
        "{s}"
    );
    assert!(m.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_far_over_the_limit_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = scratch("browser-huge");
    let yml = web_flow(&dir, "  max_frame_bytes: 1000\n  max_message_bytes: 1000\n");
    let flow = Flow::start(&yml, &[]);
    let host = flow.web_url().strip_prefix("http://").unwrap().to_string();
    // By hand, so that the test can announce a huge frame and send only its
    // start: the server must refuse it from the header, without reading it all.
    let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    tcp.write_all(
        format!(
            "GET /ws?user=gil HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Over twice the limit and 16 MiB over it: a binary frame of 17 MiB, masked
    // as a client's must be.
    let size: u64 = 17 << 20;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&size.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    tcp.write_all(&frame).await.unwrap();
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let mut gil = WsClient::new(ws);
    assert_eq!(gil.status().await["type"], "hello");
    match gil.next().await {
        WsReply::Closed(code, reason) => {
            assert_eq!(code, 1009, "{reason}");
            assert!(reason.contains("over the limit of 1000 bytes"), "{reason}");
        }
        other => panic!("expected the connection to close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_flow_serves_the_web_client_over_https_and_wss() {
    use std::sync::Arc;
    let dir = scratch("browser-tls");
    let (ca, _, _) = test_certificates(&dir);
    let yml = web_flow(
        &dir,
        "  ssl_certfile: server.pem\n  ssl_keyfile: server.key\n",
    );
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    assert!(web.starts_with("https://127.0.0.1:"), "{web}");
    let host = web.strip_prefix("https://").unwrap().to_string();

    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        for c in CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = |connector: tokio_rustls::TlsConnector, host: String| async move {
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    };

    // wss:// with the CA: the chat works.
    let stream = tls(connector.clone(), host.clone()).await.unwrap();
    let url = format!(
        "wss://localhost:{}/ws?user=hal&room=s",
        host.rsplit(':').next().unwrap()
    );
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let mut hal = WsClient::new(ws);
    assert_eq!(hal.status().await["type"], "hello");
    hal.send_binary(jpeg([40, 160, 220], 24, 32)).await;
    let (s, m) = hal.reply().await;
    assert_eq!(s["type"], "mosaic", "{s}");
    assert_eq!(participants(&s), ["hal"]);
    assert!(m.is_some());

    // The page over https.
    let mut stream = tls(connector.clone(), host.clone()).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("<title>vchat</title>"), "{out}");
    }

    // Plain ws:// to the TLS port is refused.
    let plain = format!("ws://{host}/ws?user=eve");
    assert!(tokio_tungstenite::connect_async(plain).await.is_err());
    hal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_pinged() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = scratch("browser-ping");
    let flow = Flow::start(&web_flow(&dir, ""), &[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(flow.web_url(), "user=ida"))
        .await
        .unwrap();
    // The hello, then nothing from this side: after 15 s the server checks the
    // peer is still there (the client library answers with a pong).
    let started = std::time::Instant::now();
    let pinged = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(m) = ws.next().await {
            if let Message::Ping(_) = m.unwrap() {
                return started.elapsed();
            }
        }
        panic!("the connection ended without a ping");
    })
    .await
    .expect("a ping within 40 s");
    assert!(pinged >= Duration::from_secs(14), "pinged after {pinged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_streams_over_https_and_wss_with_the_flows_certificate() {
    let dir = scratch("browser-https");
    test_certificates(&dir);
    let yml = web_flow(
        &dir,
        "  ssl_certfile: server.pem\n  ssl_keyfile: server.key\n",
    );
    let flow = Flow::start(&yml, &[]);
    let web = flow.web_url().to_string();
    assert!(web.starts_with("https://127.0.0.1:"), "{web}");
    let chromium = Chromium::launch_accepting_any_certificate(&dir);
    let cdp = chromium.connect().await;
    let jo = Page::open(
        &cdp,
        "jo",
        &format!("{web}/?user=jo&room=tls&autojoin=1&transport=ws"),
    )
    .await;
    let s = jo
        .wait_for("a mosaic over wss", "vchat.frames > 2", BROWSER_PATIENCE)
        .await;
    assert_eq!(s["lastMosaic"]["participants"], json!(["jo"]), "{s}");
    assert_eq!(jo.eval("location.protocol").await, "https:");
    assert_eq!(jo.eval("window.isSecureContext").await, true);
    jo.screenshot(&dir.join("jo-https.png")).await;
    // The same page over plain http is not served on the TLS port.
    let plain = Page::open(&cdp, "plain", &web.replace("https://", "http://")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(plain.eval("typeof window.vchat").await, "undefined");
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_count_against_max_streams() {
    let dir = scratch("browser-streams");
    let flow = Flow::start(
        &web_flow(&dir, "  max_streams: 1\n  monitoring: true\n"),
        &[],
    );
    let url = ws_url(flow.web_url(), "user=kim");
    let mut kim = connect(&url).await;
    kim.status().await;
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("at most 1 at once (max_streams)"), "{body}");
        }
        other => panic!(
            "a second connection must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    let text = http_get(flow.metrics_url());
    assert_eq!(metric(&text, "vchat_streams_rejected_total"), 1.0, "{text}");
    assert_eq!(metric(&text, "vchat_active_streams"), 1.0, "{text}");
    // Once kim leaves, there is room again.
    kim.close().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut lee = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break WsClient::new(ws),
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no room after kim left: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(lee.status().await["type"], "hello");
}
