//! What the client does with the mosaics it receives: statistics for the status
//! line, and saving a frame as PNG.

use std::path::Path;
use std::time::{Duration, Instant};

use vchat_core::Tensor;

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
        format!(
            "sent {} recv {} dropped {} errors {} fps {:.1} p50 {} ms mosaic {}",
            self.sent, self.received, self.dropped, self.errors, fps, p50, mosaic
        )
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
    fn png_round_trip() {
        let t = Tensor::image(2, 3, 3, bytes::Bytes::from(vec![9u8; 18])).unwrap();
        let p = std::env::temp_dir().join(format!("vchat-png-{}.png", vchat_core::new_id()));
        save_png(&t, &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (3, 2));
    }
}
