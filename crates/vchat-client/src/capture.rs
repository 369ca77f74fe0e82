//! Capture on its own thread, newest frame wins.
//!
//! [`Capture::spawn`] reads a [`FrameSource`] on a dedicated thread and puts each
//! frame into a [`Latest`] slot; the sender takes from the slot whenever the
//! network has room for another request. A frame the sender had no room for is
//! overwritten by the next one and counted as dropped, so a slow network or
//! server never builds a backlog of stale frames in the client.
//!
//! Pacing: a live source (a camera) is read continuously at its own rate and a
//! frame is published only when one is due under the `--fps` cap; other sources
//! (a file, the test pattern) are read when a frame is due, at the cap or at
//! their own rate; a source with neither is read each time the sender took the
//! previous frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vchat_core::Tensor;

use crate::latest::Latest;
use crate::source::FrameSource;

struct Shared {
    frames: Latest<Tensor>,
    captured: AtomicU64,
    dropped: AtomicU64,
    error: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// A running capture thread. Dropping it stops the thread (after its current read).
pub struct Capture {
    shared: Arc<Shared>,
    description: String,
    period: Option<Duration>,
}

impl Capture {
    /// Starts reading `source`, publishing at most `fps_cap` frames per second
    /// (`None`: the source's own rate; 0: as fast as the sender takes them).
    pub fn spawn(mut source: Box<dyn FrameSource>, fps_cap: Option<f64>) -> Capture {
        let shared = Arc::new(Shared {
            frames: Latest::new(),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            error: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let live = source.is_live();
        let rate = match fps_cap {
            Some(f) => Some(f),
            None if live => None,
            None => source.native_fps(),
        };
        let period = rate
            .filter(|f| *f > 0.0 && f.is_finite())
            .map(|f| Duration::from_secs_f64(1.0 / f));
        let description = source.describe();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("vchat-capture".into())
            .spawn(move || {
                let shared = thread_shared;
                let result = run(&mut *source, &shared, live, period);
                if let Err(e) = result {
                    *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
                shared.frames.close();
            })
            .expect("spawn the capture thread");
        Capture {
            shared,
            description,
            period,
        }
    }

    /// The slot the newest frame is put in; closed at the end of the source or
    /// when it failed (see [`error`](Self::error)).
    pub fn frames(&self) -> &Latest<Tensor> {
        &self.shared.frames
    }

    /// Frames read from the source.
    pub fn captured(&self) -> u64 {
        self.shared.captured.load(Ordering::Relaxed)
    }

    /// Frames replaced by a newer one before the sender took them.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Why the source failed, once it did.
    pub fn error(&self) -> Option<String> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the source is (`camera 0`, a file name, `test pattern`).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Time between published frames, when paced.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    /// Asks the thread to stop and closes the slot.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.frames.close();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    source: &mut dyn FrameSource,
    shared: &Shared,
    live: bool,
    period: Option<Duration>,
) -> Result<(), String> {
    let mut next_due = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if !live {
            match period {
                Some(p) => {
                    let now = Instant::now();
                    if next_due > now {
                        std::thread::sleep(next_due - now);
                    }
                    // After a stall, start afresh rather than catch up in a burst.
                    next_due = (next_due + p).max(Instant::now());
                }
                None => {
                    // Paced by demand: read the next frame once the last was taken.
                    while shared.frames.is_full() && !shared.stop.load(Ordering::Relaxed) {
                        shared.frames.wait_until_taken(Duration::from_millis(100));
                    }
                }
            }
        }
        let Some(frame) = source.next_frame()? else {
            return Ok(());
        };
        shared.captured.fetch_add(1, Ordering::Relaxed);
        if live && let Some(p) = period {
            let now = Instant::now();
            if now < next_due {
                continue; // over the --fps cap: not due yet
            }
            next_due = (next_due + p).max(now);
        }
        if shared.frames.put(frame) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latest::Taken;
    use crate::source::TestPattern;

    /// A source of N frames, then a failure.
    struct FailsAfter(u32);
    impl FrameSource for FailsAfter {
        fn next_frame(&mut self) -> Result<Option<Tensor>, String> {
            if self.0 == 0 {
                return Err("the device went away".into());
            }
            self.0 -= 1;
            Ok(Some(TestPattern::solid([1, 2, 3], 2, 2).render(0)))
        }
        fn describe(&self) -> String {
            "finite".into()
        }
    }

    #[test]
    fn on_demand_source_drops_nothing_and_reports_its_failure() {
        let c = Capture::spawn(Box::new(FailsAfter(5)), None);
        let mut got = 0;
        loop {
            match c.frames().take_timeout(Duration::from_secs(10)) {
                Taken::Value(_) => got += 1,
                Taken::Closed => break,
                Taken::Empty => panic!("no frame in time"),
            }
        }
        assert_eq!(got, 5);
        assert_eq!(c.dropped(), 0);
        assert_eq!(c.error().as_deref(), Some("the device went away"));
    }

    #[test]
    fn unread_frames_are_dropped_not_queued() {
        // 1000 fps, nobody taking: everything but the newest frame is dropped.
        let c = Capture::spawn(Box::new(TestPattern::new("a", 2, 2)), Some(1000.0));
        while c.captured() < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        c.stop();
        assert!(c.dropped() >= 10, "{} dropped", c.dropped());
    }
}
