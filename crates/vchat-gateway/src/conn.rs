//! Connections of the gateway's ports: accepting them without spinning when the
//! process is out of file descriptors, capping how many are open, bounding how
//! long a new one may take to say what it is, and counting streams per client
//! address.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use vchat_core::config::{
    DEFAULT_HANDSHAKE_TIMEOUT_S, DEFAULT_KEEPALIVE_INTERVAL_S, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS,
};

/// First pause after a failed accept, doubled up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The client's HTTP/2 connection preface (RFC 9113, 3.4) is this long.
const H2_PREFACE_LEN: usize = 24;

/// The next connection of `listener`, or `None` once `shutdown` is cancelled.
///
/// Accepting fails while the process is out of file descriptors (EMFILE,
/// ENFILE) or the kernel of buffers, and keeps failing at once until some
/// connection closes: retrying at once would spin a core. Every failure waits,
/// from 100 ms doubling to 1 s, and the first success starts over.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    door: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut pause = ACCEPT_BACKOFF_MIN;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) if is_peer_error(&e) => {
                    // The peer gave up between its SYN and our accept: nothing to wait for.
                    tracing::debug!(door, error = %e, "Accept failed");
                }
                Err(e) => {
                    tracing::warn!(door, error = %e, pause_ms = pause.as_millis() as u64, "Cannot accept; pausing");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
        }
    }
}

fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Bounds of the gRPC port's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most TCP connections open at once; one more is closed when accepted.
    pub max_connections: usize,
    /// Most streams open at once on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Time a new connection has for its TLS handshake and HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Pause between HTTP/2 keepalive pings; an unanswered ping closes the
    /// connection after as long again.
    pub keepalive_interval: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            handshake_timeout: Duration::from_secs_f64(DEFAULT_HANDSHAKE_TIMEOUT_S),
            keepalive_interval: Duration::from_secs_f64(DEFAULT_KEEPALIVE_INTERVAL_S),
        }
    }
}

/// What a gRPC request knows of its connection (in its extensions): who the
/// peer is, and a handle that closes the connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Cancelling it closes the connection: every read and write fails.
    pub(crate) close: CancellationToken,
}

/// One accepted connection of the gRPC port, plain or TLS.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    info: ConnInfo,
    /// Until the HTTP/2 preface is in: bytes of it seen, and the deadline.
    preface: Option<(usize, Pin<Box<Sleep>>)>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    _slot: OwnedSemaphorePermit,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the gateway",
    )
}

impl Conn {
    fn check_closed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Err(closed_error());
        }
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check_closed(cx)?;
        if let Some((_, deadline)) = &mut this.preface
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout (handshake_timeout_s)",
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some((seen, _))) = (&r, &mut this.preface) {
            *seen += buf.filled().len() - before;
            if *seen >= H2_PREFACE_LEN {
                this.preface = None;
            }
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    // Responses go out as vectored writes of chunks that share their pixels
    // (see `vchat_core::wire`): the wrapper must not hide that.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connections of the gRPC port as tonic takes them: accepted with
/// [`accept`], at most `max_connections` at once (one more is closed at once),
/// each through its TLS handshake and HTTP/2 preface within
/// `handshake_timeout`. Handshakes run in tasks of their own, so that a slow
/// one never holds up the next connection. The listener closes when tonic
/// drops the stream (at shutdown).
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    tokio::spawn(async move {
        // Stops accepting as soon as tonic lets go of the connections.
        let stop = shutdown.child_token();
        let dropped = {
            let (tx, stop) = (tx.clone(), stop.clone());
            async move {
                tx.closed().await;
                stop.cancel();
            }
        };
        tokio::spawn(dropped);
        // A flood of refused connections must not become a flood of log lines.
        let mut refused = 0u64;
        let mut last_warning: Option<tokio::time::Instant> = None;
        while let Some((sock, peer)) = accept(&listener, &stop, "grpc").await {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(sock);
                refused += 1;
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(
                        %peer,
                        refused,
                        max_connections = limits.max_connections,
                        "Connection refused: too many connections (max_connections)"
                    );
                    last_warning = Some(tokio::time::Instant::now());
                    refused = 0;
                }
                continue;
            };
            // Without TCP_NODELAY, Nagle's algorithm holds the tail of each
            // response until the peer's delayed ACK: 40 ms per frame.
            let _ = sock.set_nodelay(true);
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let deadline = later(tokio::time::Instant::now(), limits.handshake_timeout);
                let io: Box<dyn Io> = match tls {
                    None => Box::new(sock),
                    Some(acceptor) => {
                        match tokio::time::timeout_at(deadline, acceptor.accept(sock)).await {
                            Ok(Ok(s)) => Box::new(s),
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out (handshake_timeout_s)");
                                return;
                            }
                        }
                    }
                };
                let close = CancellationToken::new();
                let conn = Conn {
                    io,
                    info: ConnInfo {
                        remote_addr: peer,
                        close: close.clone(),
                    },
                    preface: Some((0, Box::pin(tokio::time::sleep_until(deadline)))),
                    closed: Box::pin(close.cancelled_owned()),
                    _slot: slot,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `t + d`, or a far future when that is past what an instant can hold (a
/// setting of years).
pub(crate) fn later(t: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(86_400 * 365 * 30))
}

/// `d` in seconds as a setting is written: `30`, or `0.5`.
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// The key streams are counted under: an IPv4 address, or the /64 network of an
/// IPv6 one (a single host is commonly given a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Streams open per client address, for `max_streams_per_ip`. The map holds
/// only addresses with a stream open, so it is as bounded as the streams.
#[derive(Clone)]
pub(crate) struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One stream's place in its address's count, given back when dropped.
pub(crate) struct IpSlot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    pub(crate) fn new(max: usize) -> Self {
        PerIp {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// The most streams per address.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A place for one more stream from `ip`, or `None` when it has `max` open.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            key,
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_per_address_are_counted_and_given_back() {
        let per_ip = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = per_ip.try_acquire(a).unwrap();
        let _s2 = per_ip.try_acquire(a).unwrap();
        assert!(per_ip.try_acquire(a).is_none());
        assert!(per_ip.try_acquire(b).is_some());
        drop(s1);
        assert!(per_ip.try_acquire(a).is_some());
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let per_ip = PerIp::new(1);
        let _s = per_ip.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        assert!(per_ip.try_acquire("2001:db8::2".parse().unwrap()).is_none());
        assert!(
            per_ip
                .try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        let _v4 = per_ip.try_acquire("192.0.2.1".parse().unwrap()).unwrap();
        assert!(
            per_ip
                .try_acquire("::ffff:192.0.2.1".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_map_forgets_addresses_without_streams() {
        let per_ip = PerIp::new(4);
        let slots: Vec<_> = (0..100u8)
            .map(|i| per_ip.try_acquire(IpAddr::from([10, 0, 1, i])).unwrap())
            .collect();
        drop(slots);
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
