//! The process's memory budget: what executors hold between requests (users'
//! stored frames and cached mosaics) and the responses queued for peers.
//!
//! Each buffer kept is accounted by a [`Held`] guard that adds its bytes to a
//! [`Budget`] when made and takes them off when dropped, so the count follows
//! every way a buffer can go (replaced, its user gone, its room dropped) without
//! a matching call to forget. The gateway consults [`global`] when a stream opens:
//! over the ceiling (the Flow's `max_memory_mb`), new streams are refused, so the
//! process stops taking on users instead of growing until the kernel kills it.
//! Streams already open go on; every stored frame and mosaic is bounded on its
//! own by the executor's settings.
//!
//! The count is of one process: executors in other processes (`external`,
//! Python) keep their own.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default ceiling of [`global`], in MiB (the Flow's `max_memory_mb`).
///
/// A 640x480 user costs about 1.8 MiB (their stored frame, and their part of the
/// room's cached mosaic): 1 GiB is some 580 such users, more than the default
/// `max_streams` of 256, so ordinary use never reaches it, while a few peers
/// sending 4K frames to many rooms do.
pub const DEFAULT_MAX_MEMORY_MB: usize = 1024;

const MIB: usize = 1 << 20;

/// A byte count with a ceiling.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: AtomicUsize,
}

impl Budget {
    /// A budget with nothing held and a ceiling of `limit` bytes.
    pub const fn new(limit: usize) -> Budget {
        Budget {
            held: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        }
    }

    /// Accounts `bytes` until the returned guard is dropped.
    pub fn hold(&'static self, bytes: usize) -> Held {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Held {
            budget: self,
            bytes,
        }
    }

    /// Bytes accounted now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The ceiling, in bytes.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the ceiling to `mb` MiB (saturating).
    pub fn set_limit_mb(&self, mb: usize) {
        self.limit.store(mb.saturating_mul(MIB), Ordering::Relaxed);
    }

    /// `Err` while more than the ceiling is held: the moment to take on no more.
    pub fn check(&self) -> Result<(), OverBudget> {
        let (held, limit) = (self.held(), self.limit());
        if held > limit {
            Err(OverBudget { held, limit })
        } else {
            Ok(())
        }
    }
}

/// The budget of this process, with a ceiling of [`DEFAULT_MAX_MEMORY_MB`] until
/// the Flow sets its own.
pub fn global() -> &'static Budget {
    static GLOBAL: Budget = Budget::new(DEFAULT_MAX_MEMORY_MB * MIB);
    &GLOBAL
}

/// Bytes accounted in a [`Budget`] for as long as this lives.
#[derive(Debug)]
#[must_use = "the bytes are accounted only while the guard lives"]
pub struct Held {
    budget: &'static Budget,
    bytes: usize,
}

impl Held {
    /// The bytes this guard accounts.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Accounts `bytes` from now on instead: for a buffer that grows and shrinks,
    /// such as a stream's queue of responses.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget
                .held
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.budget
                .held
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// More is held than the ceiling allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes held.
    pub held: usize,
    /// The ceiling, in bytes.
    pub limit: usize,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "out of memory for new users: frames and mosaics held take {} MiB, over the \
             ceiling of {} MiB (max_memory_mb)",
            self.held.div_ceil(MIB),
            self.limit / MIB
        )
    }
}

impl std::error::Error for OverBudget {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_add_and_take_off() {
        static B: Budget = Budget::new(10);
        let a = B.hold(6);
        assert_eq!(B.held(), 6);
        assert!(B.check().is_ok(), "at the ceiling is not over it");
        let b = B.hold(5);
        assert_eq!(a.bytes() + b.bytes(), 11);
        let over = B.check().unwrap_err();
        assert_eq!((over.held, over.limit), (11, 10));
        assert!(over.to_string().contains("max_memory_mb"), "{over}");
        drop(a);
        assert_eq!(B.held(), 5);
        assert!(B.check().is_ok());
        drop(b);
        assert_eq!(B.held(), 0);
        B.set_limit_mb(2);
        assert_eq!(B.limit(), 2 << 20);
        B.set_limit_mb(usize::MAX);
        assert_eq!(B.limit(), usize::MAX);
    }

    #[test]
    fn a_guard_follows_a_growing_and_shrinking_buffer() {
        static B: Budget = Budget::new(100);
        let other = B.hold(7);
        let mut queue = B.hold(0);
        queue.set(50);
        assert_eq!(B.held(), 57);
        queue.set(20);
        assert_eq!((B.held(), queue.bytes()), (27, 20));
        drop(queue);
        assert_eq!(B.held(), other.bytes());
    }
}
