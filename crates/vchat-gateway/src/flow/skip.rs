//! `skip_frames`: an executor that, while busy, lets a stream's newer frame replace
//! its waiting one instead of queueing both.
//!
//! Every request of a stream takes a sequence number as it arrives. Requests wait
//! for the executor in arrival order; when one gets its turn and a newer request of
//! the same stream has arrived meanwhile, it is answered as skipped at once, without
//! running the executor. So the executor runs once per frame it outputs, the frame
//! it processes is the newest one of its stream, and a frame waits for at most the
//! processing in progress plus one processing per other stream.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vchat_core::{
    DocumentArray, Error, Executor, RequestContext, SourceContext, SourceStream, StreamId,
    async_trait,
};

/// Wraps an executor with frame skipping.
pub struct SkipFrames {
    inner: std::sync::Arc<dyn Executor>,
    busy: tokio::sync::Mutex<()>,
    next: AtomicU64,
    newest: Mutex<HashMap<StreamId, u64>>,
    skipped: AtomicU64,
}

impl SkipFrames {
    /// `inner` with frame skipping.
    pub fn new(inner: std::sync::Arc<dyn Executor>) -> Self {
        SkipFrames {
            inner,
            busy: tokio::sync::Mutex::new(()),
            next: AtomicU64::new(0),
            newest: Mutex::new(HashMap::new()),
            skipped: AtomicU64::new(0),
        }
    }

    /// Requests answered as skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    fn newest(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, u64>> {
        self.newest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Executor for SkipFrames {
    fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints()
    }

    fn route_by(&self) -> Option<&str> {
        self.inner.route_by()
    }

    fn source(&self, ctx: SourceContext) -> Option<SourceStream> {
        self.inner.source(ctx)
    }

    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let mine = self.next.fetch_add(1, Ordering::Relaxed);
        self.newest().insert(ctx.stream, mine);
        let _turn = self.busy.lock().await;
        if self.newest().get(&ctx.stream).is_some_and(|&n| n != mine) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Skipped(
                "a newer frame of this stream was waiting".into(),
            ));
        }
        self.inner.process(docs, ctx).await
    }

    async fn stream_closed(&self, stream: StreamId) {
        self.newest().remove(&stream);
        self.inner.stream_closed(stream).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    struct Slow(AtomicUsize);

    #[async_trait]
    impl Executor for Slow {
        async fn process(
            &self,
            _: &mut DocumentArray,
            _: &RequestContext<'_>,
        ) -> Result<(), Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn waiting_frames_are_replaced_by_newer_ones() {
        let slow = Arc::new(Slow(AtomicUsize::new(0)));
        let skip = Arc::new(SkipFrames::new(slow.clone()));
        let mut tasks = Vec::new();
        for i in 0..5u64 {
            let skip = skip.clone();
            tasks.push(tokio::spawn(async move {
                let params = BTreeMap::new();
                let results = Default::default();
                let ctx = RequestContext {
                    endpoint: "/",
                    parameters: &params,
                    stream: StreamId(1),
                    request_id: "r",
                    results: &results,
                };
                skip.process(&mut DocumentArray::new(), &ctx)
                    .await
                    .map(|_| i)
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let outcomes: Vec<_> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        // The first runs; 1, 2, 3 are superseded while it runs; the newest (4) runs.
        assert!(outcomes[0].is_ok() && outcomes[4].is_ok());
        assert!(
            outcomes[1..4]
                .iter()
                .all(|o| matches!(o, Err(Error::Skipped(_))))
        );
        assert_eq!(slow.0.load(Ordering::SeqCst), 2);
        assert_eq!(skip.skipped(), 3);
    }
}
