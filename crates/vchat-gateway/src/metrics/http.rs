//! The metrics port: HTTP/1.1 by hyper, one request per connection.
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` (any query), `GET /` | 200, the metrics as Prometheus text (0.0.4) |
//! | `GET` of another path | 404 |
//! | any other method | 405 |
//!
//! A connection has [`HEAD_TIMEOUT`] from its accept for its request head (at
//! most [`MAX_HEAD_BYTES`]); it is closed after the answer. At most
//! [`MAX_CONNECTIONS`] are open at once; one more is closed as it is accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Metrics;
use crate::flow::FlowRuntime;

/// A new connection must send its whole request head within this.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head; a scraper's GET is a few hundred bytes. Over it, the
/// answer is 431.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most connections open at once on the metrics port: a Prometheus or two
/// scrape it, one connection each; past this, a connection is closed at once,
/// so that a peer cannot hold the port's memory and tasks by opening many.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` on `listener` until `shutdown`; then stops accepting,
/// finishes the answers being written and returns.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    flow: Arc<FlowRuntime>,
    shutdown: CancellationToken,
) {
    serve(listener, metrics, flow, shutdown, HEAD_TIMEOUT).await
}

async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    flow: Arc<FlowRuntime>,
    shutdown: CancellationToken,
    head_timeout: Duration,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((sock, peer)) = crate::conn::accept(&listener, &shutdown, "metrics").await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = MAX_CONNECTIONS, "Metrics connection refused: too many open");
            continue;
        };
        let (metrics, flow, shutdown) = (metrics.clone(), flow.clone(), shutdown.clone());
        tracker.spawn(async move {
            serve_connection(sock, peer, metrics, flow, shutdown, head_timeout).await;
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection(
    sock: TcpStream,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    flow: Arc<FlowRuntime>,
    shutdown: CancellationToken,
    head_timeout: Duration,
) {
    // The answer is written at once and the connection closed: the last
    // segment must not wait for the scraper's delayed ACK.
    let _ = sock.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let response = answer(&req, &metrics, &flow);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // A scrape is one request: no idle connections to hold.
        .keep_alive(false)
        .serve_connection(TokioIo::new(sock), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "Metrics connection failed");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, flow: &FlowRuntime) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let uri = req.uri();
    let scrape = uri.path() == "/metrics" || (uri.path() == "/" && uri.query().is_none());
    if !scrape {
        return plain(StatusCode::NOT_FOUND, "see /metrics\n");
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render(flow))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Generous: only a hang fails the tests.
    const PATIENCE: Duration = Duration::from_secs(30);

    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(head_timeout: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            metrics.clone(),
            Arc::new(FlowRuntime::new(Vec::new())),
            shutdown.clone(),
            head_timeout,
        ));
        Server {
            addr,
            metrics,
            shutdown,
            task,
        }
    }

    /// Sends `request` as is and reads until the server closes the connection.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(PATIENCE, sock.read_to_end(&mut out))
            .await
            .expect("the server closes the connection after its answer")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn head_of(response: &str) -> &str {
        response.split_once("\r\n\r\n").expect("an HTTP response").0
    }

    #[tokio::test]
    async fn a_scrape_gets_the_metrics_as_prometheus_text_and_the_connection_closes() {
        let server = start(HEAD_TIMEOUT).await;
        server
            .metrics
            .request("/", Duration::from_millis(2), false, 10, 20);
        for path in ["/metrics", "/metrics?name[]=x", "/"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let response = exchange(server.addr, request.as_bytes()).await;
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
            let head = head.to_ascii_lowercase();
            assert!(
                head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
                "{head}"
            );
            assert!(head.contains("connection: close"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            assert!(body.contains("\nvchat_requests_total 1\n"), "{body}");
        }
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let server = start(HEAD_TIMEOUT).await;
        for (request, status) in [
            ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            ("GET /?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            ("GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            (
                "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
                "405",
            ),
            ("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
            (
                "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n",
                "400",
            ),
        ] {
            let response = exchange(server.addr, request.as_bytes()).await;
            let head = head_of(&response);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}")),
                "{request:?}: {head}"
            );
            assert!(!response.contains("vchat_"), "{response}");
        }
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let server = start(HEAD_TIMEOUT).await;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let response = exchange(server.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    }

    #[tokio::test]
    async fn a_silent_or_slow_connection_is_closed_after_the_head_timeout() {
        let server = start(Duration::from_millis(300)).await;
        for sent in [&b""[..], b"GET /metrics HTTP/1.1\r\nHost"] {
            let started = Instant::now();
            let mut sock = TcpStream::connect(server.addr).await.unwrap();
            sock.write_all(sent).await.unwrap();
            let mut out = Vec::new();
            // A close (end of stream) or a reset, either way within patience.
            let _ = tokio::time::timeout(PATIENCE, sock.read_to_end(&mut out))
                .await
                .expect("the connection is closed");
            assert!(started.elapsed() < PATIENCE);
            assert!(!String::from_utf8_lossy(&out).contains("vchat_"), "{out:?}");
        }
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_a_freed_slot_serves_again() {
        let server = start(HEAD_TIMEOUT).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // One more: accepted, then closed at once with nothing read or written.
        let mut extra = TcpStream::connect(server.addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(PATIENCE, extra.read_to_end(&mut out))
            .await
            .expect("the connection past the cap is closed");
        assert!(
            read.is_err() || out.is_empty(),
            "no answer past the cap: {}",
            String::from_utf8_lossy(&out)
        );
        // The held connections are answered, and once they are gone the port
        // serves new ones.
        let mut first = idle.remove(0);
        first
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        first.read_to_end(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        drop(idle);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut sock = TcpStream::connect(server.addr).await.unwrap();
            let _ = sock
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(PATIENCE, sock.read_to_end(&mut out)).await;
            if String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slots come back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let server = start(HEAD_TIMEOUT).await;
        // A connection that has not sent its head yet does not hold it up.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        let response = exchange(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        server.shutdown.cancel();
        tokio::time::timeout(PATIENCE, server.task)
            .await
            .expect("the server returns once shut down")
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, idle.read_to_end(&mut out))
            .await
            .expect("the idle connection is closed");
        assert!(TcpStream::connect(server.addr).await.is_err());
    }
}
