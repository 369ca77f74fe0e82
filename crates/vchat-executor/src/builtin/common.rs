//! What the built-in executors share: their error, a frame-by-frame loop, number
//! parameters, per-stream frame rates and the pacing of source streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vchat_core::ndarray::{Array3, ArrayView3};
use vchat_core::{
    DocumentArray, Error, RequestContext, SourceContext, SourceStream, StreamId, Tensor,
    number_value, value::Kind,
};

/// The error of executor `name` refusing a request.
pub(crate) fn reject(name: &str, message: impl Into<String>) -> Error {
    Error::Rejected {
        executor: name.to_string(),
        message: message.into(),
    }
}

/// Applies `f` to the frame of every document that has one.
pub(crate) fn map_frames(
    name: &str,
    docs: &mut DocumentArray,
    mut f: impl FnMut(&Tensor, usize, usize) -> Result<Tensor, String>,
) -> Result<(), Error> {
    for doc in docs.iter_mut() {
        let Some(frame) = doc.tensor() else { continue };
        let (h, w) = frame.frame_dims().map_err(|m| reject(name, m))?;
        let out = f(frame, h, w).map_err(|m| reject(name, m))?;
        doc.set_tensor(out);
    }
    Ok(())
}

/// Applies `f` to the frame of every document that has one, as an array in and
/// an array out: how a Jina executor treats its numpy arrays.
pub(crate) fn map_arrays(
    name: &str,
    docs: &mut DocumentArray,
    mut f: impl FnMut(ArrayView3<'_, u8>) -> Array3<u8>,
) -> Result<(), Error> {
    map_frames(name, docs, |frame, _, _| {
        let view = frame.image_view().map_err(|e| e.to_string())?;
        Tensor::from_array(f(view)).map_err(|e| e.to_string())
    })
}

/// The request parameter `key` as a number, if the request has it.
pub(crate) fn number_param(ctx: &RequestContext<'_>, key: &str) -> Option<Result<f64, String>> {
    ctx.parameters.get(key).map(|v| match v.kind {
        Some(Kind::NumberValue(n)) => Ok(n),
        _ => Err(format!("parameter {key} must be a number")),
    })
}

/// Frames seen and frames per second, per client stream.
#[derive(Default)]
pub(crate) struct StreamRate(Mutex<HashMap<StreamId, (u64, Instant)>>);

impl StreamRate {
    /// Counts a frame of `stream`: (frames so far, frames per second since its first).
    pub(crate) fn tick(&self, stream: StreamId) -> (u64, f64) {
        let mut streams = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = streams.entry(stream).or_insert((0, Instant::now()));
        *n += 1;
        let secs = since.elapsed().as_secs_f64();
        (
            *n,
            if secs > 0.0 {
                (*n - 1) as f64 / secs
            } else {
                0.0
            },
        )
    }

    /// Drops the count of a stream that ended.
    pub(crate) fn forget(&self, stream: StreamId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&stream);
    }
}

/// The stream of a source executor: frame `n` (made by `frame`) is due at start +
/// n / fps, deadlines from the start rather than from the previous frame, so
/// lateness never accumulates; each is the request's first document (its tags)
/// with a fresh id, the frame, and `tags.frame = n`. Ends after `limit` frames.
pub(crate) fn paced_source(
    ctx: &SourceContext,
    fps: f64,
    limit: Option<u64>,
    frame: impl Fn(u64) -> Tensor + Send + Sync + 'static,
) -> SourceStream {
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = tokio::time::Instant::now();
    let template = ctx.docs.first().cloned().unwrap_or_default();
    let frame = Arc::new(frame);
    Box::pin(futures::stream::unfold(0u64, move |n| {
        let template = template.clone();
        let frame = frame.clone();
        async move {
            if limit.is_some_and(|l| n >= l) {
                return None;
            }
            tokio::time::sleep_until(start + period.mul_f64(n as f64)).await;
            let mut doc = template;
            doc.id = vchat_core::new_id();
            doc.set_tensor(frame(n));
            doc.set_tag("frame", number_value(n as f64));
            Some((Ok(DocumentArray(vec![doc])), n + 1))
        }
    }))
}
