//! A hostile peer, for the abuse benchmark (`bench/abuse.sh`) and for trying a
//! gateway's defences by hand. From each source address it is given it:
//!
//! - holds idle `Call` streams that never send a request (reopened when the
//!   gateway ends or refuses them),
//! - holds idle TCP connections that never speak HTTP/2,
//! - sends the bad-input catalogue on one stream (every entry must come back as
//!   an ERROR status),
//! - runs slow readers: streams that send valid frames and never read a response.
//!
//! It prints one JSON object: what each attack got back. Every loop is bounded by
//! `--duration`; it only ever connects to the address it is given.
//!
//! ```sh
//! abuse grpc://127.0.0.1:12345 --from 127.0.0.2,127.0.0.3 --idle-streams 8 --duration 30
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use vchat_core::{Document, Tensor};
use vchat_proto::docarray::{document_proto, nd_array_proto};
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::jina_rpc_client::JinaRpcClient;
use vchat_proto::{DataRequestProto, DocumentArrayProto, DocumentProto, HeaderProto};

const USAGE: &str = "usage: abuse grpc://HOST:PORT [--from IP,IP,...] [--idle-streams N] \
[--idle-conns N] [--slow-readers N] [--bad-per-s R] [--duration S]

  --from          source addresses to connect from, one set of attacks each
                  (default 127.0.0.2; all must be local addresses, e.g. 127.0.0.0/8)
  --idle-streams  idle Call streams held per source address (default 8)
  --idle-conns    idle TCP connections held per source address (default 8)
  --slow-readers  streams per source address that send and never read (default 2)
  --bad-per-s     bad requests per second per source address (default 30)
  --duration      seconds to attack, then exit (default 30)";

struct Args {
    addr: String,
    from: Vec<IpAddr>,
    idle_streams: usize,
    idle_conns: usize,
    slow_readers: usize,
    bad_per_s: f64,
    duration: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut words = std::env::args().skip(1);
    let mut args = Args {
        addr: String::new(),
        from: vec!["127.0.0.2".parse()?],
        idle_streams: 8,
        idle_conns: 8,
        slow_readers: 2,
        bad_per_s: 30.0,
        duration: Duration::from_secs(30),
    };
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .with_context(|| format!("{word} needs a value\n{USAGE}"))
        };
        match word.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--from" => {
                args.from = value()?
                    .split(',')
                    .map(|s| s.trim().parse().with_context(|| format!("--from: {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--idle-streams" => args.idle_streams = value()?.parse()?,
            "--idle-conns" => args.idle_conns = value()?.parse()?,
            "--slow-readers" => args.slow_readers = value()?.parse()?,
            "--bad-per-s" => args.bad_per_s = value()?.parse()?,
            "--duration" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            s if args.addr.is_empty() => args.addr = s.to_string(),
            s => bail!("unexpected argument {s}\n{USAGE}"),
        }
    }
    if args.addr.is_empty() {
        bail!("{USAGE}");
    }
    if args.from.iter().any(|ip| !ip.is_loopback()) {
        bail!("--from: only loopback addresses (this tool attacks local test servers only)");
    }
    Ok(args)
}

/// Outcomes, by attack and then by what came back.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Tally {
    fn add(&self, attack: &str, outcome: impl Into<String>) {
        let mut outcomes = self.0.lock().unwrap();
        *outcomes
            .entry(attack.to_string())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }
}

fn outcome(status: &tonic::Status) -> String {
    // The message names the limit; keep its first words so the tally groups.
    let msg: String = status.message().chars().take(60).collect();
    format!("{:?}: {msg}", status.code())
}

async fn channel(addr: &str, from: IpAddr) -> anyhow::Result<Channel> {
    let uri = addr.replace("grpc://", "http://");
    Ok(Endpoint::from_shared(uri)?
        .local_address(Some(from))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

fn request(id: &str, docs: Vec<DocumentProto>) -> DataRequestProto {
    DataRequestProto {
        header: Some(HeaderProto {
            request_id: id.to_string(),
            exec_endpoint: Some("/".into()),
            ..Default::default()
        }),
        data: Some(DataContentProto {
            documents: Some(Documents::Docs(DocumentArrayProto { docs })),
        }),
        ..Default::default()
    }
}

fn frame(user: &str, room: &str, h: usize, w: usize) -> DocumentProto {
    let data = Bytes::from(vec![128u8; h * w * 3]);
    let mut doc = Document::with_tensor(Tensor::image(h, w, 3, data).expect("valid frame"));
    doc.set_tag_str("user", user);
    doc.set_tag_str("room", room);
    doc.into_proto()
}

/// A frame whose tensor fields are set directly, as no honest client would.
fn raw(user: &str, room: &str, dtype: &str, shape: Vec<u32>, len: usize) -> DocumentProto {
    let mut doc = frame(user, room, 1, 1);
    if let Some(document_proto::Content::Tensor(t)) = &mut doc.content
        && let Some(nd_array_proto::Content::Dense(d)) = &mut t.content
    {
        d.dtype = dtype.to_string();
        d.shape = shape;
        d.buffer = Bytes::from(vec![7u8; len]);
    }
    doc
}

/// The bad-input catalogue: (name, request). Every one must be answered with
/// an ERROR status on a stream that goes on.
fn catalogue(room: &str) -> Vec<(&'static str, DataRequestProto)> {
    let mut no_user = frame("x", room, 4, 4);
    if let Some(tags) = &mut no_user.tags {
        tags.fields.remove("user");
    }
    let long_name = "n".repeat(300);
    vec![
        (
            "truncated buffer",
            request(
                "t",
                vec![raw("mallory", room, "|u1", vec![200, 300, 3], 999)],
            ),
        ),
        (
            "wrong dtype",
            request(
                "d",
                vec![raw("mallory", room, "<f4", vec![10, 10, 3], 1200)],
            ),
        ),
        (
            "wrong shape",
            request(
                "s",
                vec![raw("mallory", room, "|u1", vec![200, 300], 60_000)],
            ),
        ),
        (
            "overflowing shape",
            request(
                "o",
                vec![raw("mallory", room, "|u1", vec![u32::MAX, u32::MAX, 3], 12)],
            ),
        ),
        ("missing user tag", request("u", vec![no_user])),
        (
            "tall sliver",
            request("tall", vec![frame("mallory", room, 100_000, 1)]),
        ),
        (
            "two rooms",
            request(
                "r",
                vec![
                    frame("mallory", room, 4, 4),
                    frame("mallory", "elsewhere", 4, 4),
                ],
            ),
        ),
        (
            "long name",
            request("n", vec![frame(&long_name, room, 4, 4)]),
        ),
    ]
}

/// Aborts a helper task when its owner is done.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Idle streams from `from`: each opens `Call` and sends nothing; when the
/// gateway ends or refuses it, it is opened again after a pause.
async fn idle_stream(addr: String, from: IpAddr, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        let attempt = async {
            let mut client = JinaRpcClient::new(channel(&addr, from).await?);
            let (_tx, rx) = mpsc::channel::<DataRequestProto>(1);
            let mut responses = client.call(ReceiverStream::new(rx)).await?.into_inner();
            let opened = Instant::now();
            let ended = tokio::time::timeout_at(until.into(), responses.message()).await;
            anyhow::Ok((opened.elapsed(), ended))
        };
        match attempt.await {
            Ok((_, Err(_))) => tally.add("idle stream", "held until the end of the run"),
            Ok((held, Ok(Err(status)))) => tally.add(
                "idle stream",
                format!("{} (after {}s)", outcome(&status), held.as_secs()),
            ),
            Ok((_, Ok(Ok(_)))) => tally.add("idle stream", "ended without a status"),
            Err(e) => match e.downcast_ref::<tonic::Status>() {
                Some(status) => tally.add("idle stream", format!("refused: {}", outcome(status))),
                None => tally.add("idle stream", format!("connect failed: {e}")),
            },
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Idle connections from `from`: TCP connections that never send a byte.
async fn idle_conn(addr: String, from: IpAddr, until: Instant, tally: Arc<Tally>) {
    let Some(target) = addr
        .trim_start_matches("grpc://")
        .parse::<SocketAddr>()
        .ok()
    else {
        tally.add("idle connection", "address is not IP:PORT");
        return;
    };
    while Instant::now() < until {
        let socket = match from {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let conn = async {
            let socket = socket?;
            socket.bind(SocketAddr::new(from, 0))?;
            socket.connect(target).await
        };
        match conn.await {
            Ok(mut stream) => {
                use tokio::io::AsyncReadExt;
                let opened = Instant::now();
                let mut buf = [0u8; 4096];
                // Drains what the server says (its settings frame) and waits for
                // it to hang up.
                let closed = tokio::time::timeout_at(until.into(), async {
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                match closed {
                    Ok(()) => tally.add(
                        "idle connection",
                        format!("closed by the server after {}s", opened.elapsed().as_secs()),
                    ),
                    Err(_) => tally.add("idle connection", "held until the end of the run"),
                }
            }
            Err(e) => tally.add("idle connection", format!("connect failed: {}", e.kind())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The bad-input catalogue, again and again on one stream, at `per_s` requests a
/// second. A SUCCESS for any of it is a failure of the gateway.
async fn bad_input(addr: String, from: IpAddr, per_s: f64, until: Instant, tally: Arc<Tally>) {
    let room = format!("abuse-{from}");
    while Instant::now() < until {
        let run = async {
            let mut client =
                JinaRpcClient::new(channel(&addr, from).await?).max_decoding_message_size(64 << 20);
            let (tx, rx) = mpsc::channel::<DataRequestProto>(4);
            let mut responses = client.call(ReceiverStream::new(rx)).await?.into_inner();
            // Another user's wide frame first, so that the tall sliver must be
            // resized to the room's width; that user keeps sending (a user
            // without frames leaves the room) while the catalogue runs.
            let (wide_tx, wide_rx) = mpsc::channel::<DataRequestProto>(1);
            let mut wide = client.clone();
            let mut wide_responses = wide.call(ReceiverStream::new(wide_rx)).await?.into_inner();
            wide_tx
                .send(request("wide", vec![frame("wide", &room, 2, 3840)]))
                .await?;
            wide_responses.message().await?;
            let wide_room = room.clone();
            let _wide = AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let req = request("wide", vec![frame("wide", &wide_room, 2, 3840)]);
                    if wide_tx.send(req).await.is_err() {
                        break;
                    }
                    match wide_responses.message().await {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }));
            let gap = Duration::from_secs_f64(1.0 / per_s.max(0.1));
            for (name, req) in catalogue(&room).into_iter().cycle() {
                if Instant::now() >= until {
                    break;
                }
                tx.send(req).await?;
                match responses.message().await? {
                    Some(resp) => {
                        let code = resp.header.and_then(|h| h.status).map_or(0, |s| s.code);
                        let got = if code == 1 { "ERROR" } else { "NOT REFUSED" };
                        tally.add("bad input", format!("{name}: {got}"));
                    }
                    None => bail!("the stream ended"),
                }
                tokio::time::sleep(gap).await;
            }
            anyhow::Ok(())
        };
        if let Err(e) = run.await {
            let what = match e.downcast_ref::<tonic::Status>() {
                Some(status) => outcome(status),
                None => e.to_string(),
            };
            tally.add("bad input", format!("stream ended: {what}"));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A stream that sends a valid 480x640 frame 30 times a second and never reads
/// a response: the gateway must drop it rather than queue for it.
async fn slow_reader(addr: String, from: IpAddr, n: usize, until: Instant, tally: Arc<Tally>) {
    let room = format!("slow-{from}-{n}");
    while Instant::now() < until {
        let run = async {
            let mut client = JinaRpcClient::new(channel(&addr, from).await?);
            let (tx, rx) = mpsc::channel::<DataRequestProto>(1);
            // Opened, and its responses never read: they pile up in the server.
            let responses = client.call(ReceiverStream::new(rx)).await?.into_inner();
            let opened = Instant::now();
            let user = format!("slow{n}");
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            loop {
                tick.tick().await;
                if Instant::now() >= until {
                    drop(responses);
                    return anyhow::Ok(None);
                }
                let req = request("slow", vec![frame(&user, &room, 480, 640)]);
                // A full channel means the gateway stopped reading us: wait, up
                // to the end of the run, for it to drop the stream.
                match tokio::time::timeout_at(until.into(), tx.send(req)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ok(Some(opened.elapsed())),
                    Err(_) => return Ok(Some(Duration::MAX)),
                }
            }
        };
        match run.await {
            Ok(None) => tally.add("slow reader", "held until the end of the run"),
            Ok(Some(Duration::MAX)) => tally.add(
                "slow reader",
                "stalled: the server stopped reading it but kept the stream",
            ),
            Ok(Some(after)) => tally.add(
                "slow reader",
                format!("dropped by the server (~{}0s)", after.as_secs() / 10),
            ),
            Err(e) => tally.add("slow reader", format!("refused: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let until = Instant::now() + args.duration;
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for &from in &args.from {
        for _ in 0..args.idle_streams {
            tasks.push(tokio::spawn(idle_stream(
                args.addr.clone(),
                from,
                until,
                tally.clone(),
            )));
        }
        for _ in 0..args.idle_conns {
            tasks.push(tokio::spawn(idle_conn(
                args.addr.clone(),
                from,
                until,
                tally.clone(),
            )));
        }
        for n in 0..args.slow_readers {
            tasks.push(tokio::spawn(slow_reader(
                args.addr.clone(),
                from,
                n,
                until,
                tally.clone(),
            )));
        }
        if args.bad_per_s > 0.0 {
            tasks.push(tokio::spawn(bad_input(
                args.addr.clone(),
                from,
                args.bad_per_s,
                until,
                tally.clone(),
            )));
        }
    }
    // Every task ends by itself at `until`; a stuck one is abandoned shortly after.
    let grace = tokio::time::Instant::from_std(until) + Duration::from_secs(10);
    for task in tasks {
        let _ = tokio::time::timeout_at(grace, task).await;
    }
    let outcomes = tally.0.lock().unwrap();
    let not_refused: u64 = outcomes
        .get("bad input")
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.ends_with("NOT REFUSED"))
                .map(|(_, v)| v)
                .sum()
        })
        .unwrap_or(0);
    let json = serde_json::json!({ "outcomes": *outcomes, "bad_input_not_refused": not_refused });
    println!("{json}");
    Ok(())
}
