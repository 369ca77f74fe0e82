//! A stream's requests, ended with DEADLINE_EXCEEDED once the stream has had no
//! request and none in flight for `stream_idle_timeout_s`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::Status;

use super::Inbounds;
use super::codec::Inbound;
use crate::conn::seconds;
use crate::session::Activity;

/// A stream's requests, ended with DEADLINE_EXCEEDED once the stream has had
/// no request and none in flight for `timeout`. A request in flight (a
/// `receive` stream's frames, a slow executor) keeps the stream alive.
pub(crate) struct IdleLimit {
    inner: Inbounds,
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl IdleLimit {
    pub(crate) fn new(inner: Inbounds, activity: Arc<Activity>, timeout: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        IdleLimit {
            inner,
            activity,
            timeout,
            sleep,
            done: false,
        }
    }
}

impl Stream for IdleLimit {
    type Item = Result<Inbound, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.poll_next_unpin(cx) {
            return Poll::Ready(item);
        }
        let Some(deadline) = this.activity.idle_deadline(this.timeout) else {
            // The stream is polled again when a request in flight is answered
            // (its responses are taken before the next request is read).
            return Poll::Pending;
        };
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.done = true;
            let s = seconds(this.timeout);
            tracing::info!(stream_idle_timeout_s = %s, "Stream idle; ending it");
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "no request for {s} s (stream_idle_timeout_s)"
            )))));
        }
        Poll::Pending
    }
}
