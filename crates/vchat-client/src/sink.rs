//! What the client does with the mosaics it receives: the [`MosaicSink`] trait
//! (a window, a recording: the OpenCV ones are in `vchat_client_app::cv`),
//! statistics for the status line, the FPS counter drawn on the frame, and saving
//! a frame as PNG.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use vchat_core::Tensor;

/// What is drawn over a mosaic besides the mosaic itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Mosaics received per second, over the last second.
    pub fps: f64,
    /// Round-trip time of the newest mosaic's request.
    pub latency: Option<Duration>,
    /// Frames dropped so far (replaced by newer ones before they could be sent).
    pub dropped: u64,
    /// A problem to show, e.g. `server unavailable: retrying in 2 s`.
    pub status: Option<String>,
    /// The executors' extra outputs of the newest response, `key=value ...`, and the
    /// live parameters, drawn under the headline.
    pub results: String,
    /// The room's users in mosaic order (`tags.participants` of the newest
    /// response).
    pub participants: Vec<String>,
    /// The newest frame of the user's own camera, for a self-view.
    pub self_view: Option<Tensor>,
    /// The user paused their camera: the others see a "paused" tile.
    pub paused: bool,
}

impl Overlay {
    /// `29.8 fps  3.1 ms` and, when frames were dropped, `  dropped 12`.
    pub fn headline(&self) -> String {
        let mut s = format!("{:.1} fps", self.fps);
        if let Some(l) = self.latency {
            s.push_str(&format!("  {:.1} ms", l.as_secs_f64() * 1e3));
        }
        if self.dropped > 0 {
            s.push_str(&format!("  dropped {}", self.dropped));
        }
        s
    }
}

/// A Struct value as text for the status line and overlay: numbers without a
/// needless `.0`, strings bare.
pub fn value_text(v: &vchat_core::Value) -> String {
    use vchat_core::value::Kind;
    match &v.kind {
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 1e15 => {
            format!("{}", *n as i64)
        }
        Some(Kind::NumberValue(n)) => format!("{n:.3}").trim_end_matches('0').to_string(),
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::NullValue(_)) | None => "null".into(),
        Some(Kind::ListValue(l)) => format!(
            "[{}]",
            l.values
                .iter()
                .map(value_text)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(Kind::StructValue(_)) => "{..}".into(),
    }
}

/// Whether the user wants to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep streaming.
    Continue,
    /// The user asked to leave (ESC, q, closed the window).
    Close,
    /// Another key was pressed (its ASCII code): `]` and `[` change parameters.
    Key(u8),
}

/// A consumer of received mosaics, driven by the client's output thread (the
/// main thread, which is the only one allowed to touch an OpenCV window).
pub trait MosaicSink {
    /// Handles the newest mosaic.
    fn mosaic(&mut self, frame: &Tensor, overlay: &Overlay) -> Result<(), String>;

    /// Called many times a second, with or without a new mosaic: a window handles
    /// its events and redraws a changed status here.
    fn poll(&mut self, _overlay: &Overlay) -> Result<Control, String> {
        Ok(Control::Continue)
    }

    /// Called once at the end: flush, close.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Events per second over a sliding one-second window.
#[derive(Debug, Default)]
pub struct FpsCounter {
    times: VecDeque<Instant>,
}

impl FpsCounter {
    /// Counts one event now.
    pub fn tick(&mut self) {
        let now = Instant::now();
        self.times.push_back(now);
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.times.pop_front();
        }
    }

    /// Events in the last second.
    pub fn fps(&mut self) -> f64 {
        self.expire(Instant::now());
        self.times.len() as f64
    }
}

/// Counters of a running stream, reported once per second.
#[derive(Debug)]
pub struct Stats {
    /// Frames sent since start.
    pub sent: u64,
    /// Frames not sent because the previous ones were still in flight.
    pub dropped: u64,
    /// Responses received since start.
    pub received: u64,
    /// ERROR responses since start.
    pub errors: u64,
    /// Shape of the latest mosaic.
    pub last_shape: Vec<usize>,
    /// Responses answered as skipped (frame skipping or max_fps on the server).
    pub skipped: u64,
    /// Extra outputs of the newest response, `key=value ...`.
    pub results: String,
    window_start: Instant,
    window_received: u64,
    window_latencies: Vec<Duration>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: 0,
            dropped: 0,
            received: 0,
            errors: 0,
            last_shape: Vec::new(),
            skipped: 0,
            results: String::new(),
            window_start: Instant::now(),
            window_received: 0,
            window_latencies: Vec::new(),
        }
    }
}

impl Stats {
    /// Records one received response.
    pub fn record(&mut self, latency: Option<Duration>, shape: Option<&[usize]>, error: bool) {
        self.received += 1;
        self.window_received += 1;
        if error {
            self.errors += 1;
        }
        if let Some(l) = latency {
            self.window_latencies.push(l);
        }
        if let Some(s) = shape {
            self.last_shape = s.to_vec();
        }
    }

    /// The status line for the window since the last call, and starts a new window:
    /// `sent 30 recv 30 dropped 0 errors 0 fps 30.0 p50 0.61 ms mosaic 600x300`.
    pub fn take_line(&mut self) -> String {
        let secs = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let fps = self.window_received as f64 / secs;
        self.window_latencies.sort_unstable();
        let p50 = match self.window_latencies.len() {
            0 => "-".to_string(),
            n => format!("{:.2}", self.window_latencies[n / 2].as_secs_f64() * 1e3),
        };
        let mosaic = match self.last_shape[..] {
            [h, w, ..] => format!("{h}x{w}"),
            _ => "-".to_string(),
        };
        self.window_start = Instant::now();
        self.window_received = 0;
        self.window_latencies.clear();
        let mut line = format!(
            "sent {} recv {} dropped {} errors {} fps {:.1} p50 {} ms mosaic {}",
            self.sent, self.received, self.dropped, self.errors, fps, p50, mosaic
        );
        if self.skipped > 0 {
            line.push_str(&format!(" skipped {}", self.skipped));
        }
        if !self.results.is_empty() {
            line.push_str(&format!(" results {}", self.results));
        }
        line
    }
}

/// Writes an H×W×3 BGR uint8 frame as an RGB PNG.
pub fn save_png(frame: &Tensor, path: &Path) -> Result<(), String> {
    let (h, w) = frame.frame_dims()?;
    let file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let rgb: Vec<u8> = frame
        .data()
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    enc.write_header()
        .and_then(|mut wr| wr.write_image_data(&rgb))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_reports_counts() {
        let mut s = Stats {
            sent: 3,
            ..Default::default()
        };
        s.record(Some(Duration::from_millis(2)), Some(&[600, 300, 3]), false);
        s.record(None, None, true);
        let line = s.take_line();
        assert!(
            line.starts_with("sent 3 recv 2 dropped 0 errors 1"),
            "{line}"
        );
        assert!(
            line.contains("p50 2.00 ms") && line.ends_with("mosaic 600x300"),
            "{line}"
        );
    }

    #[test]
    fn overlay_and_fps() {
        let mut f = FpsCounter::default();
        f.tick();
        f.tick();
        assert_eq!(f.fps(), 2.0);
        let o = Overlay {
            results: String::new(),
            fps: 2.0,
            latency: Some(Duration::from_micros(3100)),
            dropped: 4,
            status: None,
            ..Default::default()
        };
        assert_eq!(o.headline(), "2.0 fps  3.1 ms  dropped 4");
    }

    #[test]
    fn png_round_trip() {
        let t = Tensor::image(2, 3, 3, bytes::Bytes::from(vec![9u8; 18])).unwrap();
        let p = std::env::temp_dir().join(format!("vchat-png-{}.png", vchat_core::new_id()));
        save_png(&t, &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (3, 2));
    }
}
