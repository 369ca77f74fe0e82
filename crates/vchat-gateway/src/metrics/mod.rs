//! The gateway's Prometheus metrics, served as text on their own port
//! (`with: {monitoring: true, port_monitoring: N}`) by [`serve_metrics`].
//!
//! The metrics are `prometheus-client`'s (the Prometheus project's own Rust
//! client) in one registry, written in Prometheus's text format, version 0.0.4
//! (`# TYPE vchat_requests_total counter`, no `# EOF`), as scrapers and the
//! tests read it. The users per room are read from the Flow at each scrape.
//!
//! Every metric is registered in [`Metrics::default`] or written by
//! `Occupancy`, and listed in the README.

mod http;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use vchat_core::config::DEFAULT_METRICS_MAX_ROOMS;

use crate::flow::FlowRuntime;

pub use http::serve_metrics;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `endpoint` label of every request to an endpoint the Flow does not name:
/// a peer may send any endpoint name, and each distinct label is a time series
/// kept forever by the scraper.
pub const OTHER_ENDPOINT: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Latency = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// A metric whose `# HELP` and `# TYPE` are written even while it has no
/// series: the registry leaves an empty family out, and a scraper (or a
/// dashboard) should see every metric from the first scrape on.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Counters and gauges of one gateway; cheap to update from every request.
pub struct Metrics {
    /// Every metric below, for [`render`](Self::render).
    registry: Registry,
    requests: Counter,
    failures: Counter,
    frames_skipped: Counter,
    frames_dropped: Counter,
    streams_rejected: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    active_streams: Gauge,
    latency: Latency,
    /// The histogram of each `endpoint` label in use (handles to the ones in
    /// `latency`), so that a request finds its own without allocating a label.
    /// As bounded as the labels.
    histograms: RwLock<HashMap<String, Histogram>>,
    /// Endpoints with a label of their own; `/` and `/default` always.
    endpoints: OnceLock<BTreeSet<String>>,
    max_rooms: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        let [
            requests,
            failures,
            frames_skipped,
            frames_dropped,
            streams_rejected,
            bytes_in,
            bytes_out,
        ]: [Counter; 7] = Default::default();
        let active_streams = Gauge::default();
        let latency = Latency::new_with_constructor(latency_histogram);
        let mut registry = Registry::default();
        // The registry writes counters with `_total` and ends every help text
        // with a full stop.
        for (name, help, counter) in [
            ("vchat_requests", "Requests answered", &requests),
            (
                "vchat_request_failures",
                "Requests answered with an ERROR status",
                &failures,
            ),
            (
                "vchat_frames_skipped",
                "Frames dropped without being processed",
                &frames_skipped,
            ),
            (
                "vchat_frames_dropped",
                "Frames processed but not sent: replaced by a skipped reply because a newer one of the same stream waited past max_outbox_bytes",
                &frames_dropped,
            ),
            (
                "vchat_streams_rejected",
                "Streams refused because max_streams or max_streams_per_ip were open, or held memory was over max_memory_mb",
                &streams_rejected,
            ),
            (
                "vchat_bytes_in",
                "Bytes of request messages received",
                &bytes_in,
            ),
            (
                "vchat_bytes_out",
                "Bytes of response messages sent",
                &bytes_out,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "vchat_active_streams",
            "Call streams open now",
            active_streams.clone(),
        );
        registry.register(
            "vchat_request_duration_seconds",
            "Time from receiving a request to its response, per endpoint",
            Listed(latency.clone()),
        );
        Metrics {
            registry,
            requests,
            failures,
            frames_skipped,
            frames_dropped,
            streams_rejected,
            bytes_in,
            bytes_out,
            active_streams,
            latency,
            histograms: RwLock::default(),
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
        self.requests.inc();
        if failed {
            self.failures.inc();
        }
        self.bytes_in.inc_by(bytes_in as u64);
        self.bytes_out.inc_by(bytes_out as u64);
        let secs = elapsed.as_secs_f64();
        let endpoint = self.endpoint_label(endpoint);
        if let Some(h) = self
            .histograms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(endpoint)
        {
            h.observe(secs);
            return;
        }
        // The first request of this label: the only time its key is allocated.
        let label = EndpointLabels {
            endpoint: endpoint.to_string(),
        };
        let h = self.latency.get_or_create_owned(&label);
        h.observe(secs);
        self.histograms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.endpoint, h);
    }

    /// Frames dropped instead of processed (none are yet: every request is
    /// answered; the counter exists for frame skipping).
    pub fn frame_skipped(&self) {
        self.frames_skipped.inc();
    }

    /// `n` processed frames replaced by skipped replies before they were sent.
    pub fn frames_dropped(&self, n: u64) {
        self.frames_dropped.inc_by(n);
    }

    /// A stream opened (`+1`) or ended (`-1`).
    pub fn stream_delta(&self, delta: i64) {
        self.active_streams.inc_by(delta);
    }

    /// A stream refused by `max_streams`.
    pub fn stream_rejected(&self) {
        self.streams_rejected.inc();
    }

    /// The Prometheus text exposition of every metric, with the users per room of
    /// `flow`'s executors.
    pub fn render(&self, flow: &FlowRuntime) -> String {
        let mut out = String::new();
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(Occupancy::of(
            flow,
            self.max_rooms.load(Ordering::Relaxed),
        )));
        // Writing to a String cannot fail, nor can the values (every gauge is
        // an i64); a failure would be a bug in the encoder, and a scrape is
        // not worth a panic.
        for registry in [&self.registry, &scrape] {
            if let Err(e) = prometheus_text::encode(&mut out, registry) {
                tracing::error!(error = %e, "Cannot write the metrics");
            }
        }
        out
    }
}

/// What the gateway holds at the moment of a scrape: memory, and the users
/// per room of each executor.
#[derive(Debug)]
struct Occupancy {
    held_bytes: i64,
    /// Rooms with users present, per executor: every room counted.
    rooms: Vec<(String, i64)>,
    /// `(executor, room, users)`, the fullest rooms of each executor only.
    room_users: Vec<(String, String, i64)>,
}

impl Occupancy {
    /// Room names come from peers: only the `max_rooms` fullest rooms of each
    /// executor get a label of their own, so that the series stay bounded
    /// however many rooms exist.
    fn of(flow: &FlowRuntime, max_rooms: usize) -> Self {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut occupancy = Occupancy {
            held_bytes: count(vchat_core::budget::global().held()),
            rooms: Vec::new(),
            room_users: Vec::new(),
        };
        for node in flow.nodes() {
            let mut rooms: BTreeMap<String, usize> = BTreeMap::new();
            for (room, n) in node.users_per_room() {
                *rooms.entry(room).or_default() += n;
            }
            occupancy
                .rooms
                .push((node.name().to_string(), count(rooms.len())));
            let mut fullest: Vec<(String, usize)> = rooms.into_iter().collect();
            fullest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            fullest.truncate(max_rooms);
            fullest.sort();
            for (room, n) in fullest {
                occupancy
                    .room_users
                    .push((node.name().to_string(), room, count(n)));
            }
        }
        occupancy
    }
}

impl Collector for Occupancy {
    // Written as a collector's help texts are: as given, full stop included.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = encoder.encode_descriptor(
            "vchat_memory_held_bytes",
            "Bytes held in users' frames, rooms' mosaics, requests in flight and responses \
             waiting for their peers (max_memory_mb is the ceiling).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.held_bytes).encode(gauge)?;

        let mut gauge = encoder.encode_descriptor(
            "vchat_rooms",
            "Rooms with users present, per executor.",
            None,
            MetricType::Gauge,
        )?;
        for (executor, n) in &self.rooms {
            let labels = [("executor", executor.as_str())];
            ConstGauge::new(*n).encode(gauge.encode_family(&labels)?)?;
        }

        let mut gauge = encoder.encode_descriptor(
            "vchat_room_users",
            "Users present in a room, per executor (the fullest rooms, up to metrics_max_rooms).",
            None,
            MetricType::Gauge,
        )?;
        for (executor, room, n) in &self.room_users {
            let labels = [("executor", executor.as_str()), ("room", room.as_str())];
            ConstGauge::new(*n).encode(gauge.encode_family(&labels)?)?;
        }
        Ok(())
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

    /// The exposition as it was written by hand before: names, types, help
    /// texts and bucket bounds are what scrapers and dashboards know.
    #[test]
    fn every_metric_is_listed_from_the_first_scrape_with_its_type_and_help() {
        let text = Metrics::default().render(&FlowRuntime::new(Vec::new()));
        for (name, kind) in [
            ("vchat_requests_total", "counter"),
            ("vchat_request_failures_total", "counter"),
            ("vchat_frames_skipped_total", "counter"),
            ("vchat_frames_dropped_total", "counter"),
            ("vchat_streams_rejected_total", "counter"),
            ("vchat_bytes_in_total", "counter"),
            ("vchat_bytes_out_total", "counter"),
            ("vchat_active_streams", "gauge"),
            ("vchat_memory_held_bytes", "gauge"),
            ("vchat_rooms", "gauge"),
            ("vchat_room_users", "gauge"),
            ("vchat_request_duration_seconds", "histogram"),
        ] {
            let type_line = format!("# TYPE {name} {kind}");
            assert_eq!(
                text.lines().filter(|l| *l == type_line).count(),
                1,
                "{type_line} missing in\n{text}"
            );
            let help = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
                .unwrap_or_else(|| panic!("no help for {name} in\n{text}"));
            assert!(
                help.ends_with('.') && !help.ends_with(".."),
                "{name}: {help}"
            );
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.ends_with('\n'), "{text}");
    }

    #[test]
    fn latency_buckets_are_the_documented_ones() {
        let m = Metrics::default();
        m.request("/", Duration::from_millis(1), false, 0, 0);
        let text = m.render(&FlowRuntime::new(Vec::new()));
        let bounds: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("vchat_request_duration_seconds_bucket{endpoint=\"/\",le=\"")?
                    .split('"')
                    .next()
            })
            .collect();
        assert_eq!(
            bounds,
            [
                "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                "2.5", "5", "+Inf"
            ]
        );
        // A request of exactly a bound's time is counted in that bucket.
        assert!(
            text.lines().any(
                |l| l == "vchat_request_duration_seconds_bucket{endpoint=\"/\",le=\"0.001\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "vchat_request_duration_seconds_sum{endpoint=\"/\"} 0.001"),
            "{text}"
        );
    }

    #[test]
    fn room_and_executor_labels_are_escaped() {
        let occupancy = Occupancy {
            held_bytes: 7,
            rooms: vec![("exec\"utor".to_string(), 1)],
            room_users: vec![("exec\"utor".to_string(), "a\\b\nc".to_string(), 2)],
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(occupancy));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "vchat_memory_held_bytes 7",
            "vchat_rooms{executor=\"exec\\\"utor\"} 1",
            "vchat_room_users{executor=\"exec\\\"utor\",room=\"a\\\\b\\nc\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
