//! A single-slot "latest value" handoff between threads.
//!
//! The producer overwrites whatever the consumer has not taken yet, so a slow
//! consumer always gets the newest value and never a backlog of stale ones. It
//! is used twice in the chat client: camera thread → sender (the newest frame is
//! the one sent) and on_done → window thread (the newest mosaic is the one drawn).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

struct State<T> {
    value: Option<T>,
    closed: bool,
}

/// The slot. Shared behind an `Arc`; any number of producers and consumers.
pub struct Latest<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
    notify: Notify,
}

/// What a take returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken<T> {
    /// The newest value.
    Value(T),
    /// Nothing new yet (only from the non-blocking and timed takes).
    Empty,
    /// The producer closed the slot and everything was taken.
    Closed,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest {
            state: Mutex::new(State {
                value: None,
                closed: false,
            }),
            cond: Condvar::new(),
            notify: Notify::new(),
        }
    }
}

impl<T> Latest<T> {
    /// An empty, open slot.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.cond.notify_all();
        // Stores a permit when nobody waits yet, so an async taker never misses it.
        self.notify.notify_one();
    }

    /// Stores `value`; returns true when it replaced a value nobody took (a
    /// dropped frame). A closed slot ignores it.
    pub fn put(&self, value: T) -> bool {
        let replaced = {
            let mut s = self.lock();
            if s.closed {
                return false;
            }
            s.value.replace(value).is_some()
        };
        self.wake();
        replaced
    }

    /// No more values will come; takers get what is left, then [`Taken::Closed`].
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    /// Whether a value is waiting.
    pub fn is_full(&self) -> bool {
        self.lock().value.is_some()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn take_now(s: &mut State<T>) -> Taken<T> {
        match s.value.take() {
            Some(v) => Taken::Value(v),
            None if s.closed => Taken::Closed,
            None => Taken::Empty,
        }
    }

    /// The value if there is one, without waiting.
    pub fn try_take(&self) -> Taken<T> {
        Self::take_now(&mut self.lock())
    }

    /// Waits up to `timeout` for a value (blocking the thread).
    pub fn take_timeout(&self, timeout: Duration) -> Taken<T> {
        let s = self.lock();
        let (mut s, _) = self
            .cond
            .wait_timeout_while(s, timeout, |s| s.value.is_none() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        Self::take_now(&mut s)
    }

    /// Blocks until the slot is empty (the consumer took the value) or closed, at
    /// most `timeout`: how a producer without a rate of its own is paced by demand.
    pub fn wait_until_taken(&self, timeout: Duration) {
        let s = self.lock();
        let _ = self
            .cond
            .wait_timeout_while(s, timeout, |s| s.value.is_some() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Waits for a value without blocking the thread: never returns [`Taken::Empty`].
    pub async fn take(&self) -> Taken<T> {
        loop {
            let notified = self.notify.notified();
            match self.try_take() {
                Taken::Empty => notified.await,
                other => {
                    // A consumer waiting in `wait_until_taken` learns the slot is free.
                    self.cond.notify_all();
                    return other;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn newest_wins_and_replacements_are_counted() {
        let l = Latest::new();
        assert!(!l.put(1));
        assert!(l.put(2));
        assert!(l.put(3));
        assert_eq!(l.try_take(), Taken::Value(3));
        assert_eq!(l.try_take(), Taken::Empty);
        l.put(4);
        l.close();
        assert!(!l.put(5));
        assert_eq!(l.take_timeout(Duration::from_millis(1)), Taken::Value(4));
        assert_eq!(l.take_timeout(Duration::from_secs(5)), Taken::Closed);
    }

    #[test]
    fn async_take_wakes_on_put_from_another_thread() {
        let l = Arc::new(Latest::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let producer = {
            let l = l.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                l.put(7u32);
                l.wait_until_taken(Duration::from_secs(10));
                l.close();
            })
        };
        assert_eq!(rt.block_on(l.take()), Taken::Value(7));
        assert_eq!(rt.block_on(l.take()), Taken::Closed);
        producer.join().unwrap();
    }
}
