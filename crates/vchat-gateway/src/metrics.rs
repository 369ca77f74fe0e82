//! The gateway's Prometheus metrics, served as text on their own port
//! (`with: {monitoring: true, port_monitoring: N}`) by a minimal HTTP/1.1 handler:
//! a scrape is one GET, so a full HTTP stack is not needed.
//!
//! Every metric is listed in [`Metrics::render`] and in the README.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vchat_core::config::DEFAULT_METRICS_MAX_ROOMS;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::flow::FlowRuntime;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

/// The `endpoint` label of every request to an endpoint the Flow does not name:
/// a peer may send any endpoint name, and each distinct label is a time series
/// kept forever by the scraper.
pub const OTHER_ENDPOINT: &str = "other";

/// Counters and gauges of one gateway; cheap to update from every request.
pub struct Metrics {
    requests: AtomicU64,
    failures: AtomicU64,
    frames_skipped: AtomicU64,
    streams_rejected: AtomicU64,
    active_streams: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Endpoints with a label of their own; `/` and `/default` always.
    endpoints: OnceLock<BTreeSet<String>>,
    max_rooms: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: AtomicU64::default(),
            failures: AtomicU64::default(),
            frames_skipped: AtomicU64::default(),
            streams_rejected: AtomicU64::default(),
            active_streams: AtomicI64::default(),
            bytes_in: AtomicU64::default(),
            bytes_out: AtomicU64::default(),
            latency: Mutex::default(),
            endpoints: OnceLock::new(),
            max_rooms: AtomicUsize::new(DEFAULT_METRICS_MAX_ROOMS),
        }
    }
}

impl Metrics {
    /// Gives these endpoints (the ones the Flow names) a latency label of their
    /// own; every other endpoint is counted under [`OTHER_ENDPOINT`]. Only the
    /// first call counts.
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = String>) {
        let _ = self.endpoints.set(endpoints.into_iter().collect());
    }

    /// At most this many rooms per executor get a `room` label of their own in
    /// `vchat_room_users` (the fullest ones).
    pub fn set_max_rooms(&self, n: usize) {
        self.max_rooms.store(n, Ordering::Relaxed);
    }

    fn endpoint_label<'a>(&self, endpoint: &'a str) -> &'a str {
        let named = endpoint == "/"
            || endpoint == vchat_core::DEFAULT_ENDPOINT
            || self.endpoints.get().is_some_and(|e| e.contains(endpoint));
        if named { endpoint } else { OTHER_ENDPOINT }
    }

    /// One request of `bytes_in` answered in `elapsed` with `bytes_out`.
    pub fn request(
        &self,
        endpoint: &str,
        elapsed: Duration,
        failed: bool,
        bytes_in: usize,
        bytes_out: usize,
    ) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let endpoint = self.endpoint_label(endpoint);
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        // Endpoints are few; the key is allocated only the first time.
        if !h.contains_key(endpoint) {
            h.insert(endpoint.to_string(), Histogram::default());
        }
        if let Some(e) = h.get_mut(endpoint) {
            e.counts[bucket] += 1;
            e.sum += secs;
        }
    }

    /// Frames dropped instead of processed (none are yet: every request is
    /// answered; the counter exists for frame skipping).
    pub fn frame_skipped(&self) {
        self.frames_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream opened (`+1`) or ended (`-1`).
    pub fn stream_delta(&self, delta: i64) {
        self.active_streams.fetch_add(delta, Ordering::Relaxed);
    }

    /// A stream refused by `max_streams`.
    pub fn stream_rejected(&self) {
        self.streams_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric, with the users per room of
    /// `flow`'s executors.
    pub fn render(&self, flow: &FlowRuntime) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            &mut out,
            "vchat_requests_total",
            "Requests answered.",
            self.requests.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vchat_request_failures_total",
            "Requests answered with an ERROR status.",
            self.failures.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vchat_frames_skipped_total",
            "Frames dropped without being processed.",
            self.frames_skipped.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vchat_streams_rejected_total",
            "Streams refused because max_streams or max_streams_per_ip were open, or held memory was over max_memory_mb.",
            self.streams_rejected.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vchat_bytes_in_total",
            "Bytes of request messages received.",
            self.bytes_in.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "vchat_bytes_out_total",
            "Bytes of response messages sent.",
            self.bytes_out.load(Ordering::Relaxed),
        );
        let _ = write!(
            out,
            "# HELP vchat_active_streams Call streams open now.\n\
             # TYPE vchat_active_streams gauge\nvchat_active_streams {}\n",
            self.active_streams.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP vchat_memory_held_bytes Bytes held in users' frames, rooms' mosaics, \
             requests in flight and responses waiting for their peers (max_memory_mb is the ceiling).\n# TYPE vchat_memory_held_bytes gauge\n\
             vchat_memory_held_bytes {}\n",
            vchat_core::budget::global().held()
        );
        // Room names come from peers: only the fullest rooms get a label of
        // their own, so that the series stay bounded however many rooms exist.
        let max_rooms = self.max_rooms.load(Ordering::Relaxed);
        let mut room_lines = String::new();
        let mut count_lines = String::new();
        for node in flow.nodes() {
            let mut rooms: BTreeMap<String, usize> = BTreeMap::new();
            for (room, n) in node.users_per_room() {
                *rooms.entry(room).or_default() += n;
            }
            let name = escape(node.name());
            let _ = writeln!(
                count_lines,
                "vchat_rooms{{executor=\"{name}\"}} {}",
                rooms.len()
            );
            let mut fullest: Vec<(String, usize)> = rooms.into_iter().collect();
            fullest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            fullest.truncate(max_rooms);
            fullest.sort();
            for (room, n) in fullest {
                let _ = writeln!(
                    room_lines,
                    "vchat_room_users{{executor=\"{name}\",room=\"{}\"}} {n}",
                    escape(&room)
                );
            }
        }
        out.push_str(
            "# HELP vchat_rooms Rooms with users present, per executor.\n\
             # TYPE vchat_rooms gauge\n",
        );
        out.push_str(&count_lines);
        out.push_str(
            "# HELP vchat_room_users Users present in a room, per executor (the fullest \
             rooms, up to metrics_max_rooms).\n# TYPE vchat_room_users gauge\n",
        );
        out.push_str(&room_lines);
        out.push_str(
            "# HELP vchat_request_duration_seconds Time from receiving a request to its \
             response, per endpoint.\n# TYPE vchat_request_duration_seconds histogram\n",
        );
        let h = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (endpoint, hist) in h {
            let ep = escape(&endpoint);
            let mut cumulative = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += hist.counts[i];
                let _ = writeln!(
                    out,
                    "vchat_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"{b}\"}} {cumulative}"
                );
            }
            cumulative += hist.counts[LATENCY_BUCKETS.len()];
            let _ = writeln!(
                out,
                "vchat_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "vchat_request_duration_seconds_sum{{endpoint=\"{ep}\"}} {}",
                hist.sum
            );
            let _ = writeln!(
                out,
                "vchat_request_duration_seconds_count{{endpoint=\"{ep}\"}} {cumulative}"
            );
        }
        out
    }
}

/// A label value with Prometheus's escapes.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    flow: Arc<FlowRuntime>,
    shutdown: CancellationToken,
) {
    loop {
        let Some((mut sock, _)) = crate::conn::accept(&listener, &shutdown, "metrics").await else {
            return;
        };
        let (metrics, flow) = (metrics.clone(), flow.clone());
        tokio::spawn(async move {
            // A request line and headers; scrapers send no body with GET.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = if method != "GET" {
                ("405 Method Not Allowed", "only GET\n".to_string())
            } else if path == "/metrics" || path.starts_with("/metrics?") || path == "/" {
                ("200 OK", metrics.render(&flow))
            } else {
                ("404 Not Found", "see /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_the_flow_does_not_name_share_one_label() {
        let m = Metrics::default();
        m.set_endpoints(["/chat".to_string()]);
        for i in 0..1000 {
            m.request(&format!("/e{i}"), Duration::from_millis(1), false, 1, 1);
        }
        m.request("/chat", Duration::from_millis(1), false, 1, 1);
        m.request("/", Duration::from_millis(1), false, 1, 1);
        let text = m.render(&FlowRuntime::new(Vec::new()));
        assert!(text.lines().count() < 100, "{text}");
        for line in [
            "vchat_request_duration_seconds_count{endpoint=\"other\"} 1000",
            "vchat_request_duration_seconds_count{endpoint=\"/chat\"} 1",
            "vchat_request_duration_seconds_count{endpoint=\"/\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("/", Duration::from_millis(3), false, 100, 200);
        m.request("/", Duration::from_secs(9), true, 1, 2);
        m.stream_delta(1);
        let text = m.render(&FlowRuntime::new(Vec::new()));
        for line in [
            "vchat_requests_total 2",
            "vchat_request_failures_total 1",
            "vchat_frames_skipped_total 0",
            "vchat_bytes_in_total 101",
            "vchat_bytes_out_total 202",
            "vchat_active_streams 1",
            "vchat_request_duration_seconds_bucket{endpoint=\"/\",le=\"0.0025\"} 0",
            "vchat_request_duration_seconds_bucket{endpoint=\"/\",le=\"0.005\"} 1",
            "vchat_request_duration_seconds_bucket{endpoint=\"/\",le=\"+Inf\"} 2",
            "vchat_request_duration_seconds_count{endpoint=\"/\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
