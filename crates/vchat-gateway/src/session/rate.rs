//! The frame rate cap of one stream: a token bucket.

use std::time::Instant;

/// `rate` frames per second on average, in bursts of at most `burst` frames.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// At most `rate` frames per second with bursts of `burst` frames (at least
    /// one). `None` for a rate that is no cap (not a positive number).
    pub fn new(rate: f64, burst: f64) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let burst = if burst.is_finite() {
            burst.max(1.0)
        } else {
            1.0
        };
        Some(RateLimit {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }

    /// At most `rate` frames in any `1 / rate` seconds: no bursts.
    pub fn steady(rate: f64) -> Option<Self> {
        Self::new(rate, 1.0)
    }

    /// At most `rate` frames per second, in bursts of one second's worth.
    pub fn per_second(rate: f64) -> Option<Self> {
        Self::new(rate, rate)
    }

    /// The cap, in frames per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes one frame's token at `now`; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_steady_cap_lets_one_frame_per_gap() {
        let mut r = RateLimit::steady(10.0).unwrap();
        let t0 = Instant::now();
        assert!(r.take(t0));
        assert!(!r.take(t0 + Duration::from_millis(50)));
        assert!(r.take(t0 + Duration::from_millis(101)));
        assert!(!r.take(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn a_per_second_cap_allows_one_second_of_burst() {
        let mut r = RateLimit::per_second(5.0).unwrap();
        let t0 = Instant::now();
        let burst = (0..10).filter(|_| r.take(t0)).count();
        assert_eq!(burst, 5);
        assert!(r.take(t0 + Duration::from_millis(201)));
    }

    #[test]
    fn bucket_allows_a_second_then_the_rate() {
        let mut b = RateLimit::per_second(2.0).unwrap();
        let t = Instant::now();
        assert!(b.take(t));
        assert!(b.take(t));
        assert!(!b.take(t));
        assert!(!b.take(t + Duration::from_millis(400)));
        assert!(b.take(t + Duration::from_millis(600)));
        assert!(!b.take(t + Duration::from_millis(700)));
    }

    #[test]
    fn no_cap_for_a_rate_that_is_not_positive() {
        assert!(RateLimit::steady(0.0).is_none());
        assert!(RateLimit::per_second(f64::NAN).is_none());
        assert!(RateLimit::new(f64::INFINITY, 1.0).is_none());
    }
}
