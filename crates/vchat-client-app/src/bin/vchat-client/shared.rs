//! What the network side and the main thread share: the capture, the counters,
//! the newest mosaic, the status, and the moments of a contact sheet.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vchat_client::capture::Capture;
use vchat_client::latest::Latest;
use vchat_client::sink::{FpsCounter, Overlay, Stats};
use vchat_core::Tensor;

/// What the network side and the main thread share.
pub(crate) struct Shared {
    pub capture: Capture,
    pub stats: Mutex<Stats>,
    pub fps: Mutex<FpsCounter>,
    pub latency: Mutex<Option<Duration>>,
    /// Newest mosaic for the output thread (taken when drawn).
    pub mosaics: Latest<Tensor>,
    /// Newest mosaic for `--snapshot` (kept).
    pub newest: Mutex<Option<Tensor>>,
    /// A problem to show on the window (server unavailable...).
    pub status: Mutex<Option<String>>,
    /// Set to leave: ESC, q, closed window, Ctrl-C, SIGTERM.
    pub stop: CancellationToken,
    /// `receive` mode: frames come from the server, none are captured or dropped.
    pub receive: bool,
    /// The room's users in mosaic order, from the newest response.
    pub participants: Mutex<Vec<String>>,
    /// The newest frame of the user's own source, for the self-view.
    pub self_view: Mutex<Option<Tensor>>,
    /// `m` in the window: the camera is paused; the stream stays alive with a
    /// tiny frame tagged `paused` a few times a second.
    pub paused: AtomicBool,
    /// Mosaics over time for `--contact-sheet`.
    pub moments: Mutex<Moments>,
    /// The extra inputs sent with each request; keys in the window change them.
    pub params: tokio::sync::watch::Sender<std::collections::BTreeMap<String, vchat_core::Value>>,
}

/// Most mosaics on a contact sheet.
const MAX_MOMENTS: usize = 16;

/// The mosaics kept for a contact sheet: one whenever the room's users change
/// and one every `every`. When [`MAX_MOMENTS`] are kept, every other one goes
/// and the period doubles, so the sheet spans the whole run in bounded memory.
pub(crate) struct Moments {
    start: Instant,
    /// `None`: no contact sheet, nothing is kept.
    every: Option<Duration>,
    last: Option<Instant>,
    kept: Vec<(f64, Tensor)>,
}

impl Moments {
    pub(crate) fn new(every: Option<Duration>) -> Self {
        Moments {
            start: Instant::now(),
            every,
            last: None,
            kept: Vec::new(),
        }
    }

    /// Offers the newest mosaic; `changed`: the room's users differ from the
    /// previous mosaic's.
    pub(crate) fn offer(&mut self, frame: &Tensor, changed: bool) {
        let Some(every) = self.every else {
            return;
        };
        let now = Instant::now();
        if !changed && self.last.is_some_and(|t| now - t < every) {
            return;
        }
        if self.kept.len() >= MAX_MOMENTS {
            let mut i = 0;
            self.kept.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.every = Some(every * 2);
        }
        self.last = Some(now);
        self.kept
            .push(((now - self.start).as_secs_f64(), frame.clone()));
    }

    /// The moments kept so far, seconds since the start with their mosaic.
    pub(crate) fn take(&mut self) -> Vec<(f64, Tensor)> {
        std::mem::take(&mut self.kept)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn overlay(&self) -> Overlay {
        Overlay {
            fps: lock(&self.fps).fps(),
            latency: *lock(&self.latency),
            dropped: self.dropped(),
            status: lock(&self.status).clone(),
            results: {
                let params = self.params.borrow();
                let mut parts: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", vchat_client::sink::value_text(v)))
                    .collect();
                let results = lock(&self.stats).results.clone();
                if !results.is_empty() {
                    parts.push(results);
                }
                parts.join("  ")
            },
            participants: lock(&self.participants).clone(),
            self_view: lock(&self.self_view).clone(),
            paused: self.paused.load(Ordering::Relaxed),
        }
    }

    /// `m`: pauses or resumes the camera.
    pub(crate) fn toggle_pause(&self) {
        let paused = !self.paused.fetch_xor(true, Ordering::Relaxed);
        eprintln!(
            "vchat-client: camera {}",
            if paused { "paused" } else { "on" }
        );
    }

    /// Captured frames replaced by newer ones before they could be sent.
    pub(crate) fn dropped(&self) -> u64 {
        if self.receive {
            0
        } else {
            self.capture.dropped()
        }
    }

    /// `]` (up) or `[` (down): the first numeric parameter by 10%.
    pub(crate) fn nudge(&self, up: bool) {
        use vchat_core::value::Kind;
        self.params.send_modify(|p| {
            let first = p.iter_mut().find_map(|(k, v)| match &mut v.kind {
                Some(Kind::NumberValue(n)) => Some((k, n)),
                _ => None,
            });
            if let Some((k, n)) = first {
                *n = if up { *n * 1.1 } else { *n / 1.1 };
                eprintln!("vchat-client: {k} = {n:.3}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mosaic(v: u8) -> Tensor {
        Tensor::image(2, 3, 3, vec![v; 18].into()).unwrap()
    }

    #[test]
    fn a_contact_sheet_keeps_changes_and_a_bounded_spread_of_moments() {
        let mut off = Moments::new(None);
        off.offer(&mosaic(1), true);
        assert!(off.kept.is_empty(), "nothing kept without --contact-sheet");
        let mut m = Moments::new(Some(Duration::from_secs(3600)));
        m.offer(&mosaic(1), false);
        m.offer(&mosaic(2), false);
        assert_eq!(m.kept.len(), 1, "within the period: one moment");
        for v in 0..100 {
            m.offer(&mosaic(v), true);
            assert!(m.kept.len() <= MAX_MOMENTS);
        }
        // The first moment stays: the sheet spans the whole run.
        assert_eq!(m.kept[0].1, mosaic(1));
        assert_eq!(m.kept.last().unwrap().1, mosaic(99));
    }
}
