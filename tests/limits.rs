//! Streams and connections of the real gateway under abuse: streams per client
//! address, idle streams, peers that stop reading, the connection cap, the
//! handshake timeout, and metric label sets that peers cannot grow.

use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status, Streaming};
use vchat_e2e::*;
use vchat_proto::DataRequestProto;
use vchat_proto::jina::jina_rpc_client::JinaRpcClient;

const RED: [u8; 3] = [30, 30, 200];

/// Connects from a chosen loopback address, so that the gateway sees another
/// client address than 127.0.0.1.
#[derive(Clone)]
struct FromAddress(IpAddr);

impl tower_service::Service<Uri> for FromAddress {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let source = self.0;
        Box::pin(async move {
            let target: SocketAddr = format!(
                "{}:{}",
                uri.host().unwrap_or("127.0.0.1"),
                uri.port_u16().unwrap_or(80)
            )
            .parse()
            .map_err(std::io::Error::other)?;
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(source, 0))?;
            let stream = sock.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

fn endpoint(flow: &Flow) -> Endpoint {
    Endpoint::from_shared(flow.addr().replace("grpc://", "http://"))
        .unwrap()
        .connect_timeout(PATIENCE)
}

/// A channel to `flow` from the loopback address `source`.
async fn channel_from(flow: &Flow, source: &str) -> Channel {
    endpoint(flow)
        .connect_with_connector(FromAddress(source.parse().unwrap()))
        .await
        .expect("connect")
}

type Call = (
    mpsc::UnboundedSender<DataRequestProto>,
    Streaming<DataRequestProto>,
);

/// Opens `jina.JinaRPC/Call` on `channel`: the stream, or the status refusing it.
async fn open(channel: Channel) -> Result<Call, Status> {
    let mut client = JinaRpcClient::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    let call = client.call(UnboundedReceiverStream::new(rx));
    let responses = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call is answered in time")?
        .into_inner();
    Ok((tx, responses))
}

fn chat_request(id: &str, user: &str) -> DataRequestProto {
    request(id, vec![frame(user, RED, 20, 30).into_proto()])
}

/// Sends one frame on `call` and checks that its mosaic comes back.
async fn round_trip(call: &mut Call, user: &str) {
    call.0.send(chat_request("rt", user)).unwrap();
    let resp = tokio::time::timeout(PATIENCE, call.1.message())
        .await
        .expect("a response in time")
        .expect("the stream is open")
        .expect("a response");
    assert_eq!(status(&resp).0, 0, "{:?}", status(&resp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_per_address_cap_are_refused_while_another_address_connects() {
    let flow = Flow::start_default(&["--max-streams-per-ip", "2"]);
    let here = channel_from(&flow, "127.0.0.1").await;
    // Two idle streams: the address's whole allowance.
    let first = open(here.clone()).await.expect("first stream");
    let _second = open(here.clone()).await.expect("second stream");
    let refused = open(here.clone()).await.expect_err("a third is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_streams_per_ip") && refused.message().contains("127.0.0.1"),
        "{refused:?}"
    );

    // Another client address is not affected, and is served.
    let there = channel_from(&flow, "127.0.0.2").await;
    let mut other = open(there.clone()).await.expect("127.0.0.2 still connects");
    round_trip(&mut other, "bob").await;
    let _other2 = open(there).await.expect("127.0.0.2 has its own allowance");

    // A stream that ends gives its place back.
    drop(first);
    let mut again = None;
    for _ in 0..200 {
        match open(here.clone()).await {
            Ok(call) => {
                again = Some(call);
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("the ended stream's place is given back");
    round_trip(&mut again, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_ends_with_a_clear_status_and_frees_its_slot() {
    let flow = Flow::start_default(&["--stream-idle-timeout-s", "2", "--max-streams", "1"]);
    let channel = channel_from(&flow, "127.0.0.1").await;
    let mut idle = open(channel.clone()).await.expect("stream");
    round_trip(&mut idle, "alice").await;
    // Then nothing more is sent.
    let end = tokio::time::timeout(PATIENCE, idle.1.message())
        .await
        .expect("the idle stream ends in time")
        .expect_err("an error status, not a response or a clean end");
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert_eq!(end.message(), "no request for 2 s (stream_idle_timeout_s)");
    // max_streams is 1: the idle stream's slot is free for the next one.
    let mut next = open(channel).await.expect("the slot is free again");
    round_trip(&mut next, "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_waiting_on_its_responses_is_not_idle() {
    // A request in flight keeps a stream alive however long it takes: here a
    // receive stream, one request answered by frames for longer than the idle
    // timeout.
    let flow = Flow::start(
        &repo_root().join("examples/streams/receive.yml"),
        &["--stream-idle-timeout-s", "1"],
    );
    let channel = channel_from(&flow, "127.0.0.1").await;
    let (tx, mut responses) = open(channel).await.expect("stream");
    let mut req = request("watch", vec![]);
    req.header.as_mut().unwrap().exec_endpoint = Some("/watch".into());
    tx.send(req).unwrap();
    let started = std::time::Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let r = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("frames keep coming");
        match r {
            Ok(Some(_)) => frames += 1,
            other => panic!("the stream ended after {frames} frames: {other:?}"),
        }
    }
    assert!(frames > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_slot_reused() {
    let flow = Flow::start_default(&["--send-timeout-s", "2", "--max-streams", "1"]);
    // A window of 1 KiB that is never opened further: the client reads
    // nothing of its responses.
    let stuck = endpoint(&flow)
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap();
    let (tx, responses) = open(stuck).await.expect("stream");
    // The only slot is held: another stream is refused.
    let fresh = channel_from(&flow, "127.0.0.1").await;
    let refused = open(fresh.clone()).await.expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for i in 0..20 {
        tx.send(chat_request(&i.to_string(), "slow")).unwrap();
    }
    // The gateway gives up on the reader and frees the slot.
    let mut reused = None;
    for _ in 0..(PATIENCE.as_millis() / 100) {
        match open(fresh.clone()).await {
            Ok(call) => {
                reused = Some(call);
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reused = reused.expect("the non-reading stream's slot is reused");
    round_trip(&mut reused, "quick").await;
    assert!(
        flow.stderr()
            .contains("Peer not reading its responses; dropping it"),
        "{}",
        flow.stderr()
    );
    // What the slow client had received is all it gets: its stream is over.
    let mut responses = responses;
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the dropped stream ends");
    assert!(ended.is_err(), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_one_more_connection() {
    let flow = Flow::start_default(&["--max-connections", "2", "--handshake-timeout-s", "60"]);
    let addr = flow.addr().trim_start_matches("grpc://").to_string();
    // Two connections that have not even said hello take both places.
    let first = std::net::TcpStream::connect(&addr).unwrap();
    let _second = std::net::TcpStream::connect(&addr).unwrap();
    let third = async {
        let channel = endpoint(&flow).connect().await.map_err(|e| e.to_string())?;
        open(channel).await.map_err(|s| s.to_string())
    };
    let third = tokio::time::timeout(PATIENCE, third)
        .await
        .expect("the third connection is answered in time");
    assert!(third.is_err(), "a third connection is refused");
    // One closes: a new connection is served.
    drop(first);
    let mut served = None;
    for _ in 0..(PATIENCE.as_millis() / 100) {
        if let Ok(Ok(channel)) = tokio::time::timeout(PATIENCE, endpoint(&flow).connect()).await
            && let Ok(call) = open(channel).await
        {
            served = Some(call);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut served = served.expect("a place is free again");
    round_trip(&mut served, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_hello_is_closed() {
    let flow = Flow::start_default(&["--handshake-timeout-s", "1"]);
    let addr = flow.addr().trim_start_matches("grpc://").to_string();
    let closed = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        // The server's SETTINGS may come first; then the connection must end.
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("still open");
                }
                Err(_) => return Ok(()),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Ok(()), "a silent connection is closed");
    // The gateway still serves everyone else.
    let mut user = User::connect(flow.addr());
    assert!(!user.send(frame("alice", RED, 20, 30)).await.is_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_only_answers_pings_is_idle() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let flow = Flow::start_default(&["--http-port", "0", "--stream-idle-timeout-s", "2"]);
    let url = format!(
        "{}/ws?user=pinger",
        flow.web_url().replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut ticker = tokio::time::interval(Duration::from_millis(300));
    let close = tokio::time::timeout(PATIENCE, async {
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if ws.send(Message::Ping(Default::default())).await.is_err() {
                        return None;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        }
    })
    .await
    .expect("the idle WebSocket is closed in time")
    .expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(
        close.reason.as_str(),
        "no frame for 2 s (stream_idle_timeout_s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_endpoint_names_keep_the_metrics_bounded() {
    let flow = Flow::start_default(&["--port-monitoring", "0"]);
    let url = flow.metrics_url().to_string();
    let mut stream = RawStream::connect(flow.addr()).await;
    // One request to the Flow's own endpoint, so that its series exist.
    let resp = stream.send(chat_request("first", "alice")).await;
    assert_eq!(status(&resp).0, 0);
    let before = http_get(&url);
    for i in 0..1000 {
        let mut req = chat_request(&i.to_string(), "alice");
        req.header.as_mut().unwrap().exec_endpoint = Some(format!("/endpoint-{i}"));
        stream.send(req).await;
    }
    let after = http_get(&url);
    assert_eq!(
        metric(
            &after,
            "vchat_request_duration_seconds_count{endpoint=\"other\"}"
        ),
        1000.0
    );
    assert!(!after.contains("/endpoint-"), "{after}");
    // One histogram more (buckets, +Inf, sum, count), whatever the number of names.
    let (lines_before, lines_after) = (before.lines().count(), after.lines().count());
    assert!(
        lines_after <= lines_before + 15,
        "{lines_before} lines before, {lines_after} after:\n{after}"
    );
    assert!(after.len() < 16 * 1024, "{} bytes", after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_beyond_metrics_max_rooms_get_no_label_of_their_own() {
    let dir = scratch("limits-rooms");
    let yaml = format!(
        "jtype: Flow\nwith:\n  monitoring: true\n  metrics_max_rooms: 3\nexecutors:\n  - uses: {}\n    name: frameAggregator\n",
        repo_root().join("executor/config.yml").display()
    );
    let flow = Flow::start(&write_file(&dir, "flow.yml", &yaml), &[]);
    let url = flow.metrics_url().to_string();
    let mut streams = Vec::new();
    for i in 0..8 {
        let mut s = RawStream::connect(flow.addr()).await;
        let mut doc = frame(&format!("u{i}"), RED, 20, 30);
        doc.set_tag_str("room", format!("room-{i}"));
        let resp = s.send(request("r", vec![doc.into_proto()])).await;
        assert_eq!(status(&resp).0, 0, "{:?}", status(&resp));
        streams.push(s);
    }
    let text = http_get(&url);
    assert_eq!(
        metric(&text, "vchat_rooms{executor=\"frameAggregator\"}"),
        8.0
    );
    let labelled = text
        .lines()
        .filter(|l| l.starts_with("vchat_room_users{"))
        .count();
    assert_eq!(labelled, 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_past_the_per_address_cap_are_refused() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let flow = Flow::start_default(&["--http-port", "0", "--max-streams-per-ip", "1"]);
    let url = format!("{}/ws?user=a", flow.web_url().replace("http://", "ws://"));
    let (_first, _) = tokio_tungstenite::connect_async(url.clone()).await.unwrap();
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("max_streams_per_ip"), "{body}");
        }
        other => panic!("a second WebSocket from the address is refused: {other:?}"),
    }
    // The doors count apart: a gRPC stream from the same address is served.
    let mut call = open(channel_from(&flow, "127.0.0.1").await)
        .await
        .expect("gRPC stream");
    round_trip(&mut call, "grpc").await;
}
