//! How busy one stream is, for its idle timeout (`stream_idle_timeout_s`): its
//! requests in flight, and when it last received or finished one. A request in
//! flight (a `receive` stream's frames, a slow executor) keeps a stream alive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::conn::later;

/// Requests in flight, and the time of the last change.
pub struct Activity(Mutex<(usize, Instant)>);

impl Activity {
    /// A stream that has just begun.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity(Mutex::new((0, Instant::now()))))
    }

    fn get(&self) -> (usize, Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request begins; it counts as in flight until the token is dropped,
    /// when its responses are all out.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let mut a = self.0.lock().unwrap_or_else(|e| e.into_inner());
        a.0 += 1;
        a.1 = Instant::now();
        InFlight(self.clone())
    }

    /// When the stream is idle for `timeout`: `None` while a request is in
    /// flight.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let (in_flight, last) = self.get();
        (in_flight == 0).then(|| later(last, timeout))
    }
}

/// One request in flight (see [`Activity::begin`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        a.0 = a.0.saturating_sub(1);
        a.1 = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_requests_keep_a_stream_from_idling() {
        let a = Activity::new();
        let t = Duration::from_secs(5);
        assert!(a.idle_deadline(t).is_some());
        let one = a.begin();
        let two = a.begin();
        assert!(a.idle_deadline(t).is_none());
        drop(one);
        assert!(a.idle_deadline(t).is_none());
        drop(two);
        let d = a.idle_deadline(t).unwrap();
        assert!(d > Instant::now() + Duration::from_secs(4));
    }
}
