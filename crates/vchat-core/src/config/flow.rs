//! The Flow's own settings: `with:` of a `jtype: Flow` file, and their defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::executor::one_or_many;

/// Default number of requests of one stream processed at once.
pub const DEFAULT_PREFETCH: usize = 16;
/// Default largest request message accepted, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Default most `Call` streams open at once on one gateway.
pub const DEFAULT_MAX_STREAMS: usize = 256;
/// Default largest frame (a document's tensor or blob), in bytes: a 4K BGR frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 3840 * 2160 * 3;
/// Default most frames per second one WebSocket connection may send.
pub const DEFAULT_WEBSOCKET_MAX_FPS: f64 = 30.0;
/// Default most TCP connections open at once on the gRPC port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default most streams open at once on one HTTP/2 connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 16;
/// Default most streams open at once from one client address (an IPv4 address,
/// or an IPv6 /64 network), per door.
pub const DEFAULT_MAX_STREAMS_PER_IP: usize = 16;
/// Default seconds a stream may go without a request (a frame) before it is ended.
pub const DEFAULT_STREAM_IDLE_TIMEOUT_S: f64 = 30.0;
/// Default seconds a peer may take nothing of a stream's responses before it is
/// dropped.
pub const DEFAULT_SEND_TIMEOUT_S: f64 = 20.0;
/// Default most bytes of responses waiting for one stream's peer to take them:
/// a few mosaics. A response larger than this still goes out, alone.
pub const DEFAULT_MAX_STREAM_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default most bytes of frames waiting for one stream's peer before the older
/// ones are replaced by skipped replies: about one mosaic of ten 200x300 users.
/// A client that falls behind gets the newest mosaic, and a gateway serving
/// many of them holds about one mosaic per stream instead of a backlog.
pub const DEFAULT_MAX_OUTBOX_BYTES: usize = 2 * 1024 * 1024;
/// Default seconds a new connection has to finish its TLS handshake and send
/// the HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT_S: f64 = 10.0;
/// Default seconds between HTTP/2 keepalive pings on a quiet gRPC connection.
pub const DEFAULT_KEEPALIVE_INTERVAL_S: f64 = 20.0;
/// Default most rooms given a label of their own in the metrics.
pub const DEFAULT_METRICS_MAX_ROOMS: usize = 64;

/// Default address of the metrics endpoint: this machine only, since the
/// metrics name rooms and count users.
pub const DEFAULT_MONITORING_HOST: &str = "127.0.0.1";

/// Default most WebRTC peer connections open at once on one gateway.
pub const DEFAULT_WEBRTC_MAX_PEERS: usize = 64;
/// Default seconds a WebRTC peer has to complete ICE and DTLS after its offer
/// is answered; then it is dropped and its stream freed.
pub const DEFAULT_WEBRTC_CONNECT_TIMEOUT_S: f64 = 10.0;
/// Default largest SDP offer accepted on `POST /whip`, in bytes.
pub const DEFAULT_WEBRTC_MAX_SDP_BYTES: usize = 32 * 1024;

/// The gateway protocols a Flow may name in `with.protocol`.
pub const PROTOCOLS: [&str; 2] = ["grpc", "websocket"];

/// The Flow's own settings (`with:` of a `jtype: Flow` file).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowWith {
    /// Address to listen on (default `0.0.0.0`, as Jina).
    #[serde(default)]
    pub host: Option<String>,
    /// Port to listen on; 0 or absent picks a free port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Gateway protocols, one or a list (as Jina): `grpc` (always served, on
    /// `port`) and `websocket` (the browser client and its WebSocket, on
    /// `port_http`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub protocol: Vec<String>,
    /// Port of the browser side (`protocol: websocket`): the web page at `/` and
    /// the WebSocket at `/ws`; 0 or absent picks a free port, printed at start.
    #[serde(default)]
    pub port_http: Option<u16>,
    /// Origins (`https://chat.example.org`, or `*` for any) whose pages may open
    /// the WebSocket besides the gateway's own; default none: same origin only.
    #[serde(default)]
    pub websocket_origins: Vec<String>,
    /// At most this many frames per second from one WebSocket connection
    /// (bursts of up to one second's worth); the excess is answered
    /// `rate_limited`, unprocessed. Default [`DEFAULT_WEBSOCKET_MAX_FPS`].
    #[serde(default)]
    pub websocket_max_fps: Option<f64>,
    /// Requests of one stream processed at once when the client does not say
    /// (its `__prefetch__` metadata); default [`DEFAULT_PREFETCH`].
    #[serde(default)]
    pub prefetch: Option<usize>,
    /// Largest request message, in bytes; a larger one is answered with an ERROR
    /// status. Default [`DEFAULT_MAX_MESSAGE_BYTES`].
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Most `Call` streams open at once; one more is refused with
    /// RESOURCE_EXHAUSTED. Default [`DEFAULT_MAX_STREAMS`].
    #[serde(default)]
    pub max_streams: Option<usize>,
    /// Largest frame (a document's tensor buffer or blob) in bytes; a request with
    /// a larger one is answered with an ERROR status. Default
    /// [`DEFAULT_MAX_FRAME_BYTES`].
    #[serde(default)]
    pub max_frame_bytes: Option<usize>,
    /// Ceiling, in MiB, on the bytes this process holds in users' frames, rooms'
    /// cached mosaics, requests in flight and responses waiting for their peers
    /// ([`crate::budget`]); while more is held,
    /// new streams are refused with RESOURCE_EXHAUSTED (503 on the WebSocket).
    /// Default [`DEFAULT_MAX_MEMORY_MB`](crate::budget::DEFAULT_MAX_MEMORY_MB).
    #[serde(default)]
    pub max_memory_mb: Option<usize>,
    /// PEM certificate chain: serve gRPC over TLS (with `ssl_keyfile`). A
    /// relative path is relative to the Flow YAML.
    #[serde(default)]
    pub ssl_certfile: Option<PathBuf>,
    /// PEM private key of `ssl_certfile`.
    #[serde(default)]
    pub ssl_keyfile: Option<PathBuf>,
    /// Serve Prometheus metrics on `port_monitoring`.
    #[serde(default)]
    pub monitoring: Option<bool>,
    /// Port of the metrics endpoint (`GET /metrics`); 0 or absent picks a free
    /// port, printed at start.
    #[serde(default)]
    pub port_monitoring: Option<u16>,
    /// At most this many responses with frames per second on one stream in
    /// `send-receive` mode; requests over it are answered as skipped.
    #[serde(default)]
    pub max_fps: Option<f64>,
    /// How each endpoint's stream flows; endpoints not listed are `send-receive`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, StreamMode>,
    /// Most TCP connections open at once on the gRPC port; a new one over it is
    /// closed as soon as it is accepted. Default [`DEFAULT_MAX_CONNECTIONS`].
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Most streams open at once on one HTTP/2 connection (the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` the gateway announces); a client opens
    /// more only as others end. Default [`DEFAULT_MAX_CONCURRENT_STREAMS`].
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Most streams open at once from one client address (IPv4 address or IPv6
    /// /64), per door (gRPC `Call` streams; WebSockets); one more is refused with
    /// RESOURCE_EXHAUSTED (WebSocket: 429). Default [`DEFAULT_MAX_STREAMS_PER_IP`].
    #[serde(default)]
    pub max_streams_per_ip: Option<usize>,
    /// Seconds a stream may go without a request (a WebSocket: without a frame;
    /// pings and pongs do not count) while none of its requests is in flight;
    /// then it is ended with DEADLINE_EXCEEDED (WebSocket: closed with 1008).
    /// Default [`DEFAULT_STREAM_IDLE_TIMEOUT_S`].
    #[serde(default)]
    pub stream_idle_timeout_s: Option<f64>,
    /// Seconds a gRPC peer may take nothing of a stream's waiting responses;
    /// then the stream ends and the peer's connection is closed. Default
    /// [`DEFAULT_SEND_TIMEOUT_S`].
    #[serde(default)]
    pub send_timeout_s: Option<f64>,
    /// Most bytes of encoded responses waiting for one gRPC stream's peer; past
    /// it no further response is produced (and no further request read) until
    /// the peer takes some. Default [`DEFAULT_MAX_STREAM_QUEUE_BYTES`].
    #[serde(default)]
    pub max_stream_queue_bytes: Option<usize>,
    /// Most bytes of encoded frames (answers with a tensor or a blob) waiting
    /// for one gRPC stream's peer; past it the older ones still waiting are
    /// replaced by skipped replies (same request id, `__skipped__`, no
    /// documents), the newest kept, and counted in `vchat_frames_dropped_total`.
    /// Default [`DEFAULT_MAX_OUTBOX_BYTES`].
    #[serde(default)]
    pub max_outbox_bytes: Option<usize>,
    /// Seconds a new gRPC connection has to finish its TLS handshake and send
    /// the HTTP/2 preface; then it is closed. Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT_S`].
    #[serde(default)]
    pub handshake_timeout_s: Option<f64>,
    /// Seconds between HTTP/2 keepalive pings on the gRPC port; a ping not
    /// answered within as long again closes the connection. Default
    /// [`DEFAULT_KEEPALIVE_INTERVAL_S`].
    #[serde(default)]
    pub keepalive_interval_s: Option<f64>,
    /// Most rooms given a `room` label of their own in `vchat_room_users` (the
    /// fullest ones); every room is counted in `vchat_rooms`. Default
    /// [`DEFAULT_METRICS_MAX_ROOMS`].
    #[serde(default)]
    pub metrics_max_rooms: Option<usize>,
    /// Address the metrics endpoint listens on. Default
    /// [`DEFAULT_MONITORING_HOST`] (this machine only); `0.0.0.0` for a
    /// Prometheus on another machine.
    #[serde(default)]
    pub monitoring_host: Option<String>,
    /// Access control: streams need a signed access token. Absent: anyone who
    /// reaches the gateway joins any room under any name.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The WebRTC door (`POST /whip` on `port_http`), served with the browser
    /// side; absent: on, with the defaults of [`WebRtcWith`].
    #[serde(default)]
    pub webrtc: Option<WebRtcWith>,
}

/// `with.webrtc` of a Flow: the browser's camera over WebRTC (H.264 both ways),
/// signalled on the browser side's HTTP port.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebRtcWith {
    /// Serve WebRTC beside the WebSocket; default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// UDP port of every peer connection (one socket for all); 0 or absent:
    /// a free port picked at start and logged.
    #[serde(default)]
    pub udp_port: Option<u16>,
    /// The address peers reach the UDP port at, for a server behind NAT (the
    /// port forwarded as is); absent: the address each browser reached the
    /// HTTP port at.
    #[serde(default)]
    pub public_ip: Option<String>,
    /// Most peer connections open at once; one more is answered 503. Default
    /// [`DEFAULT_WEBRTC_MAX_PEERS`].
    #[serde(default)]
    pub max_peers: Option<usize>,
    /// Seconds a peer has to complete ICE and DTLS once answered; then it is
    /// dropped. Default [`DEFAULT_WEBRTC_CONNECT_TIMEOUT_S`].
    #[serde(default)]
    pub connect_timeout_s: Option<f64>,
    /// Largest SDP offer, in bytes; a larger one is answered 413. Default
    /// [`DEFAULT_WEBRTC_MAX_SDP_BYTES`].
    #[serde(default)]
    pub max_sdp_bytes: Option<usize>,
}

/// `with.auth` of a Flow.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Key id (a token's `iss`) → its secret, at least 32 bytes; `${ENV_VAR}`
    /// reads the secret from the environment at start-up, so that it stays out
    /// of the YAML file.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// How a stream flows on an endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    /// A frame in, a frame out (the chat).
    #[default]
    SendReceive,
    /// Frames in; each answered with an acknowledgement (tags and extra outputs,
    /// no frame).
    Send,
    /// One request in, a stream of frames out from a source executor.
    Receive,
}

impl FlowWith {
    /// Whether the Flow serves the browser side (`protocol` names `websocket`).
    pub fn serves_websocket(&self) -> bool {
        self.protocol
            .iter()
            .any(|p| p.eq_ignore_ascii_case("websocket"))
    }
}
