//! A gateway's settings, resolved in one place: a command-line value wins over
//! the Flow YAML's `with:`, which wins over the default. [`Overrides`] holds the
//! raw command-line values; [`GatewayConfig::resolve`] merges and checks them,
//! and [`GatewayConfig::bind`] opens the ports. `auth.rs` turns the keys of
//! `with.auth` and `--auth-keys-file` into a token verifier.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use vchat_auth::Verifier;
use vchat_core::budget::DEFAULT_MAX_MEMORY_MB;
use vchat_core::config::{
    DEFAULT_HANDSHAKE_TIMEOUT_S, DEFAULT_KEEPALIVE_INTERVAL_S, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_OUTBOX_BYTES, DEFAULT_MAX_STREAM_QUEUE_BYTES, DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_IP, DEFAULT_METRICS_MAX_ROOMS, DEFAULT_MONITORING_HOST,
    DEFAULT_PREFETCH, DEFAULT_SEND_TIMEOUT_S, DEFAULT_STREAM_IDLE_TIMEOUT_S, FlowWith,
};

use crate::conn::ConnLimits;
use crate::doors::webrtc::WebRtcOptions;
use crate::doors::websocket::WebOptions;
use crate::flow::FlowRuntime;
use crate::server::Gateway;
use crate::session::StreamLimits;

mod auth;

/// Address a gateway listens on when neither the command line nor the Flow
/// names one (every interface, as Jina).
pub const DEFAULT_HOST: &str = "0.0.0.0";

/// Settings given on the command line; each one set overrides the Flow's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub prefetch: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_frame_bytes: Option<usize>,
    pub max_streams_per_ip: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
    pub stream_idle_timeout_s: Option<f64>,
    pub send_timeout_s: Option<f64>,
    pub max_stream_queue_bytes: Option<usize>,
    pub max_outbox_bytes: Option<usize>,
    pub handshake_timeout_s: Option<f64>,
    pub max_memory_mb: Option<usize>,
    pub ssl_certfile: Option<PathBuf>,
    pub ssl_keyfile: Option<PathBuf>,
    pub port_monitoring: Option<u16>,
    pub monitoring_host: Option<String>,
    pub http_port: Option<u16>,
    /// `KEY_ID: SECRET` lines added to `with.auth.keys`.
    pub auth_keys_file: Option<PathBuf>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles { .. }")
    }
}

/// Everything a gateway needs, merged and checked.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address of every port.
    pub host: String,
    /// The gRPC port (0: any free one).
    pub port: u16,
    /// Limits of every stream.
    pub streams: StreamLimits,
    /// Limits of the gRPC port's connections.
    pub connections: ConnLimits,
    /// TLS on every port.
    pub tls: Option<TlsFiles>,
    /// The browser side: its port and settings.
    pub web: Option<(u16, WebOptions)>,
    /// The WebRTC door, served with the browser side.
    pub webrtc: Option<WebRtcOptions>,
    /// The metrics address and port, when monitoring is on.
    pub monitoring: Option<(String, u16)>,
    /// The verifier of access tokens; `None`: the gateway is open, and names
    /// are not verified.
    pub auth: Option<Verifier>,
    /// The process's memory ceiling, in MiB.
    pub max_memory_mb: usize,
    /// Rooms with a label of their own in the metrics, per executor.
    pub metrics_max_rooms: usize,
}

/// A gateway with its ports open.
pub struct Bound {
    /// The gateway, to [`serve`](Gateway::serve) on `listener`.
    pub gateway: Gateway,
    /// The gRPC port.
    pub listener: TcpListener,
    /// Where the gRPC port listens.
    pub grpc: SocketAddr,
    /// Where the browser side listens.
    pub web: Option<SocketAddr>,
    /// The WebRTC door's UDP socket.
    pub webrtc: Option<SocketAddr>,
    /// Where the metrics listen.
    pub metrics: Option<SocketAddr>,
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0 * 365.0) {
        return Err(format!(
            "{name} must be a positive number of seconds, got {s}"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

impl GatewayConfig {
    /// Merges the command line over the Flow's `with:` over the defaults, and
    /// checks the result: the error names the setting.
    pub fn resolve(with: &FlowWith, cli: &Overrides) -> Result<Self, String> {
        let max_memory_mb = cli
            .max_memory_mb
            .or(with.max_memory_mb)
            .unwrap_or(DEFAULT_MAX_MEMORY_MB);
        if max_memory_mb == 0 {
            return Err("max_memory_mb must be at least 1 (MiB), got 0".into());
        }
        let streams = StreamLimits {
            prefetch: cli
                .prefetch
                .or(with.prefetch)
                .unwrap_or(DEFAULT_PREFETCH)
                .max(1),
            max_message_bytes: cli
                .max_message_bytes
                .or(with.max_message_bytes)
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            max_fps: with.max_fps,
            max_streams: cli
                .max_streams
                .or(with.max_streams)
                .unwrap_or(DEFAULT_MAX_STREAMS)
                .max(1),
            max_frame_bytes: cli
                .max_frame_bytes
                .or(with.max_frame_bytes)
                .unwrap_or(DEFAULT_MAX_FRAME_BYTES),
            max_streams_per_ip: cli
                .max_streams_per_ip
                .or(with.max_streams_per_ip)
                .unwrap_or(DEFAULT_MAX_STREAMS_PER_IP)
                .max(1),
            stream_idle_timeout: seconds(
                "stream_idle_timeout_s",
                cli.stream_idle_timeout_s
                    .or(with.stream_idle_timeout_s)
                    .unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT_S),
            )?,
            send_timeout: seconds(
                "send_timeout_s",
                cli.send_timeout_s
                    .or(with.send_timeout_s)
                    .unwrap_or(DEFAULT_SEND_TIMEOUT_S),
            )?,
            max_stream_queue_bytes: cli
                .max_stream_queue_bytes
                .or(with.max_stream_queue_bytes)
                .unwrap_or(DEFAULT_MAX_STREAM_QUEUE_BYTES)
                .max(1),
            max_outbox_bytes: cli
                .max_outbox_bytes
                .or(with.max_outbox_bytes)
                .unwrap_or(DEFAULT_MAX_OUTBOX_BYTES),
        };
        let connections = ConnLimits {
            max_connections: cli
                .max_connections
                .or(with.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1),
            max_concurrent_streams: cli
                .max_concurrent_streams
                .or(with.max_concurrent_streams)
                .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS)
                .max(1),
            handshake_timeout: seconds(
                "handshake_timeout_s",
                cli.handshake_timeout_s
                    .or(with.handshake_timeout_s)
                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_S),
            )?,
            keepalive_interval: seconds(
                "keepalive_interval_s",
                with.keepalive_interval_s
                    .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL_S),
            )?,
        };
        let tls = match (
            cli.ssl_certfile.as_ref().or(with.ssl_certfile.as_ref()),
            cli.ssl_keyfile.as_ref().or(with.ssl_keyfile.as_ref()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert_pem: read(cert, "certificate")?,
                key_pem: read(key, "private key")?,
            }),
            (None, None) => None,
            (Some(_), None) => return Err("ssl_certfile is set but ssl_keyfile is not".into()),
            (None, Some(_)) => return Err("ssl_keyfile is set but ssl_certfile is not".into()),
        };
        let websocket = cli.http_port.is_some() || with.serves_websocket();
        let web = websocket.then(|| {
            let options = WebOptions {
                origins: with.websocket_origins.clone(),
                max_fps: with
                    .websocket_max_fps
                    .unwrap_or(WebOptions::default().max_fps),
            };
            (cli.http_port.or(with.port_http).unwrap_or(0), options)
        });
        let webrtc = match (&web, with.webrtc.clone().unwrap_or_default()) {
            (Some(_), w) if w.enabled.unwrap_or(true) => Some(webrtc_options(&w)?),
            _ => None,
        };
        let monitoring =
            (cli.port_monitoring.is_some() || with.monitoring.unwrap_or(false)).then(|| {
                let host = cli
                    .monitoring_host
                    .clone()
                    .or(with.monitoring_host.clone())
                    .unwrap_or_else(|| DEFAULT_MONITORING_HOST.to_string());
                (
                    host,
                    cli.port_monitoring.or(with.port_monitoring).unwrap_or(0),
                )
            });
        let auth = auth::verifier(with.auth.as_ref(), cli.auth_keys_file.as_deref())?;
        Ok(GatewayConfig {
            host: cli
                .host
                .clone()
                .or(with.host.clone())
                .unwrap_or_else(|| DEFAULT_HOST.to_string()),
            port: cli.port.or(with.port).unwrap_or(0),
            streams,
            connections,
            tls,
            web,
            webrtc,
            monitoring,
            auth,
            max_memory_mb,
            metrics_max_rooms: with.metrics_max_rooms.unwrap_or(DEFAULT_METRICS_MAX_ROOMS),
        })
    }

    /// Opens every port and builds the gateway for `flow`.
    pub async fn bind(&self, flow: FlowRuntime) -> Result<Bound, String> {
        let listen = |host: &str, port: u16, what: &'static str| {
            let host = host.to_string();
            async move {
                TcpListener::bind((host.as_str(), port))
                    .await
                    .map_err(|e| format!("cannot listen on {host}:{port}{what}: {e}"))
            }
        };
        let host = self.host.as_str();
        let listener = listen(host, self.port, "").await?;
        let grpc = listener.local_addr().map_err(|e| e.to_string())?;
        let mut gateway = Gateway::new(flow, self.streams)
            .connections(self.connections)
            .metrics_max_rooms(self.metrics_max_rooms);
        let mut web = None;
        if let Some((port, options)) = &self.web {
            let w = listen(host, *port, " for the web client").await?;
            web = Some(w.local_addr().map_err(|e| e.to_string())?);
            gateway = gateway.web(w, options.clone());
        }
        let mut webrtc = None;
        if let Some(options) = self.webrtc.as_ref().filter(|_| web.is_some()) {
            let port = options.udp_port;
            let udp = tokio::net::UdpSocket::bind((host, port))
                .await
                .map_err(|e| {
                    format!("cannot bind UDP {host}:{port} for WebRTC (webrtc.udp_port): {e}")
                })?;
            webrtc = Some(udp.local_addr().map_err(|e| e.to_string())?);
            gateway = gateway.webrtc(udp, options.clone());
        }
        if let Some(tls) = &self.tls {
            gateway = gateway.tls(tls.cert_pem.clone(), tls.key_pem.clone());
        }
        let mut metrics = None;
        match &self.auth {
            Some(v) => {
                tracing::info!("Access control on: every stream needs an access token");
                gateway = gateway.auth(v.clone());
            }
            None => tracing::warn!(
                "Access control off (no with.auth): anyone who reaches the gateway joins any \
                 room under any name"
            ),
        }
        if let Some((mhost, port)) = &self.monitoring {
            let m = listen(mhost, *port, " for metrics").await?;
            metrics = Some(m.local_addr().map_err(|e| e.to_string())?);
            gateway = gateway.monitoring(m);
        }
        Ok(Bound {
            gateway,
            listener,
            grpc,
            web,
            webrtc,
            metrics,
        })
    }
}

/// The WebRTC door's settings from `with.webrtc`, checked.
fn webrtc_options(w: &vchat_core::config::WebRtcWith) -> Result<WebRtcOptions, String> {
    let d = WebRtcOptions::default();
    let public_ip = match &w.public_ip {
        Some(ip) => Some(
            ip.trim()
                .parse()
                .map_err(|_| format!("webrtc.public_ip must be an IP address, got {ip:?}"))?,
        ),
        None => None,
    };
    let connect_timeout = match w.connect_timeout_s {
        Some(s) => seconds("webrtc.connect_timeout_s", s)?,
        None => d.connect_timeout,
    };
    Ok(WebRtcOptions {
        udp_port: w.udp_port.unwrap_or(d.udp_port),
        public_ip,
        max_peers: w.max_peers.unwrap_or(d.max_peers),
        connect_timeout,
        max_sdp_bytes: w.max_sdp_bytes.unwrap_or(d.max_sdp_bytes).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_over_the_flow_over_the_defaults() {
        let with = FlowWith {
            max_streams: Some(7),
            prefetch: Some(3),
            ..Default::default()
        };
        let cli = Overrides {
            prefetch: Some(5),
            ..Default::default()
        };
        let c = GatewayConfig::resolve(&with, &cli).unwrap();
        assert_eq!(c.streams.prefetch, 5);
        assert_eq!(c.streams.max_streams, 7);
        assert_eq!(c.streams.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(c.host, DEFAULT_HOST);
        assert!(c.web.is_none() && c.monitoring.is_none() && c.tls.is_none());
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cli = Overrides {
            stream_idle_timeout_s: Some(-1.0),
            ..Default::default()
        };
        let e = GatewayConfig::resolve(&FlowWith::default(), &cli).unwrap_err();
        assert!(e.contains("stream_idle_timeout_s"), "{e}");
        let cli = Overrides {
            max_memory_mb: Some(0),
            ..Default::default()
        };
        let e = GatewayConfig::resolve(&FlowWith::default(), &cli).unwrap_err();
        assert!(e.contains("max_memory_mb"), "{e}");
        let cli = Overrides {
            ssl_certfile: Some("/nonexistent/cert.pem".into()),
            ssl_keyfile: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let e = GatewayConfig::resolve(&FlowWith::default(), &cli).unwrap_err();
        assert!(e.contains("cannot read the certificate"), "{e}");
    }

    #[test]
    fn a_port_on_the_command_line_turns_its_side_on() {
        let cli = Overrides {
            http_port: Some(0),
            port_monitoring: Some(0),
            ..Default::default()
        };
        let c = GatewayConfig::resolve(&FlowWith::default(), &cli).unwrap();
        assert!(c.web.is_some());
        assert!(c.webrtc.is_some(), "WebRTC comes with the browser side");
        assert_eq!(c.monitoring, Some((DEFAULT_MONITORING_HOST.to_string(), 0)));
    }

    #[test]
    fn webrtc_settings_are_checked() {
        let cli = Overrides {
            http_port: Some(0),
            ..Default::default()
        };
        let mut with = FlowWith {
            webrtc: Some(vchat_core::config::WebRtcWith {
                public_ip: Some("not an ip".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = GatewayConfig::resolve(&with, &cli).unwrap_err();
        assert!(e.contains("webrtc.public_ip"), "{e}");
        with.webrtc = Some(vchat_core::config::WebRtcWith {
            public_ip: Some("203.0.113.7".into()),
            udp_port: Some(40000),
            connect_timeout_s: Some(3.0),
            ..Default::default()
        });
        let c = GatewayConfig::resolve(&with, &cli).unwrap();
        let w = c.webrtc.unwrap();
        assert_eq!(w.udp_port, 40000);
        assert_eq!(w.public_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(w.connect_timeout, Duration::from_secs(3));
        assert_eq!(w.max_peers, vchat_core::config::DEFAULT_WEBRTC_MAX_PEERS);
        with.webrtc = Some(vchat_core::config::WebRtcWith {
            enabled: Some(false),
            ..Default::default()
        });
        assert!(
            GatewayConfig::resolve(&with, &cli)
                .unwrap()
                .webrtc
                .is_none()
        );
        with.webrtc = Some(vchat_core::config::WebRtcWith {
            connect_timeout_s: Some(0.0),
            ..Default::default()
        });
        let e = GatewayConfig::resolve(&with, &cli).unwrap_err();
        assert!(e.contains("webrtc.connect_timeout_s"), "{e}");
    }
}
