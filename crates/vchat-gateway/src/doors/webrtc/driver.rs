//! The one task that drives every peer connection (`str0m` is sans-IO): it
//! owns the UDP socket and each peer's `Rtc`, feeds them datagrams and time,
//! sends what they output, hands received H.264 to each peer's codec thread
//! and writes the encoded mosaics back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CodecIn, PeerStats, Registry};

/// Largest datagram read (an MTU's worth and then some).
const DATAGRAM: usize = 2048;
/// At most one keyframe request to a browser in this long.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Wake at least this often to drive every peer's timers.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Work for the driver.
pub(super) enum Command {
    /// A peer whose offer was answered.
    Add(Box<Peer>),
    /// End a peer (left, replaced, idle, or its stream ended).
    Remove(String),
    /// An encoded mosaic for a peer.
    Send { id: String, au: Vec<u8> },
    /// The peer's decoder needs a keyframe from the browser.
    RequestKeyframe(String),
}

/// One peer connection, as the driver holds it.
pub(super) struct Peer {
    pub id: String,
    pub rtc: Rtc,
    /// The local address its candidate named: the destination of what it sends.
    pub local: SocketAddr,
    /// Until when ICE and DTLS may take; `None` once connected.
    pub connect_by: Option<Instant>,
    pub codec: SyncSender<CodecIn>,
    pub cancel: CancellationToken,
    pub stats: Arc<PeerStats>,
    pub started: Instant,
    pub video: Option<Mid>,
    pub pt: Option<str0m::format::PayloadParams>,
    pub last_pli: Option<Instant>,
}

impl Peer {
    /// Asks the browser for a keyframe, at most every [`PLI_INTERVAL`].
    fn request_keyframe(&mut self, now: Instant) {
        if self.last_pli.is_some_and(|t| now - t < PLI_INTERVAL) {
            return;
        }
        let Some(mid) = self.video else { return };
        let asked = self
            .rtc
            .writer(mid)
            .is_some_and(|mut w| w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok());
        if asked {
            self.last_pli = Some(now);
        }
    }

    /// Hands an event of the connection to the codec thread or acts on it.
    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.connect_by = None;
                self.stats.set_connected();
                tracing::info!(peer = %self.id, "WebRTC peer connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(peer = %self.id, "WebRTC peer disconnected");
                self.rtc.disconnect();
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Video && self.video.is_none() => {
                self.video = Some(m.mid);
            }
            Event::MediaData(data) => {
                if self.video.is_none() {
                    self.video = Some(data.mid);
                }
                if self.pt.is_none() {
                    self.pt = Some(data.params);
                }
                self.stats.frame_in();
                if !data.contiguous {
                    self.request_keyframe(now);
                }
                match self.codec.try_send(CodecIn::Media(data.data)) {
                    Ok(()) => {}
                    // The decoder is behind: this access unit is lost, and so
                    // is every picture until the next keyframe.
                    Err(TrySendError::Full(_)) => {
                        self.stats.frame_dropped();
                        self.request_keyframe(now);
                    }
                    Err(TrySendError::Disconnected(_)) => self.rtc.disconnect(),
                }
            }
            Event::KeyframeRequest(_) => {
                let _ = self.codec.try_send(CodecIn::Keyframe);
            }
            _ => {}
        }
    }

    /// Writes one encoded mosaic on the peer's video.
    fn send(&mut self, au: Vec<u8>, now: Instant) {
        let (Some(mid), Some(params)) = (self.video, self.pt) else {
            return;
        };
        if self.connect_by.is_some() {
            return;
        }
        let Some(w) = self.rtc.writer(mid) else {
            return;
        };
        let pt = params.pt();
        let pt = w.match_params(params).unwrap_or(pt);
        let micros = now.saturating_duration_since(self.started).as_micros() as u64;
        let time = MediaTime::from_90khz(micros.saturating_mul(9) / 100);
        match w.write(pt, now, time, au) {
            Ok(()) => self.stats.mosaic_out(),
            Err(e) => tracing::debug!(peer = %self.id, error = %e, "WebRTC write failed"),
        }
    }

    /// Sends what the connection outputs until it waits; returns when it next
    /// needs time.
    fn poll(&mut self, socket: &UdpSocket, now: Instant) -> Instant {
        loop {
            if !self.rtc.is_alive() {
                return now;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer loses the datagram, as the network
                    // would: RTP and ICE recover from it.
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e, now),
                Err(e) => {
                    tracing::debug!(peer = %self.id, error = %e, "WebRTC peer failed");
                    self.rtc.disconnect();
                }
            }
        }
    }

    fn input(&mut self, input: Input) {
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(peer = %self.id, error = %e, "WebRTC input refused; dropping the peer");
            self.rtc.disconnect();
        }
    }
}

/// Drives every peer until the gateway shuts down.
pub(super) async fn run(
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM];
    let mut wake = Instant::now();
    loop {
        let sleep = wake
            .saturating_duration_since(Instant::now())
            .min(MAX_SLEEP);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let now = Instant::now();
                if let Ok((n, source)) = r {
                    on_datagram(&mut peers, &buf[..n], source, now);
                }
            }
            c = commands.recv() => {
                let now = Instant::now();
                match c {
                    Some(Command::Add(p)) => {
                        peers.insert(p.id.clone(), *p);
                    }
                    Some(Command::Remove(id)) => {
                        if let Some(mut p) = peers.remove(&id) {
                            p.rtc.disconnect();
                            end(p, &registry);
                        }
                    }
                    Some(Command::Send { id, au }) => {
                        if let Some(p) = peers.get_mut(&id) {
                            p.send(au, now);
                        }
                    }
                    Some(Command::RequestKeyframe(id)) => {
                        if let Some(p) = peers.get_mut(&id) {
                            p.request_keyframe(now);
                        }
                    }
                    None => break,
                }
            }
            _ = tokio::time::sleep(sleep) => {
                let now = Instant::now();
                for p in peers.values_mut() {
                    p.input(Input::Timeout(now));
                }
            }
            _ = shutdown.cancelled() => break,
        }
        let now = Instant::now();
        wake = now + MAX_SLEEP;
        let mut gone = Vec::new();
        for (id, p) in peers.iter_mut() {
            let t = p.poll(&socket, now);
            wake = wake.min(t);
            let late = p.connect_by.is_some_and(|by| now >= by);
            if late {
                tracing::info!(peer = %id, "WebRTC peer did not connect in time (webrtc.connect_timeout_s); dropping it");
            }
            if late || !p.rtc.is_alive() || p.cancel.is_cancelled() {
                gone.push(id.clone());
            }
        }
        for id in gone {
            if let Some(p) = peers.remove(&id) {
                end(p, &registry);
            }
        }
    }
    for (_, p) in peers.drain() {
        end(p, &registry);
    }
}

/// Frees a peer: its codec thread ends with its channel, its stream with its
/// cancelled token.
fn end(p: Peer, registry: &Registry) {
    p.cancel.cancel();
    registry.remove(&p.id);
    tracing::debug!(peer = %p.id, "WebRTC peer freed");
}

/// Gives a datagram to the peer it belongs to.
fn on_datagram(peers: &mut HashMap<String, Peer>, data: &[u8], source: SocketAddr, now: Instant) {
    for p in peers.values_mut() {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: p.local,
                contents,
            },
        );
        if p.rtc.accepts(&input) {
            p.input(input);
            return;
        }
    }
}
