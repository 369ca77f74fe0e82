//! [`Client::post`]: the stream of requests out, the responses handed to the
//! callbacks as they arrive, at most `prefetch` in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::client::GrpcService;
use tonic::codegen::http;
use vchat_core::proto::request_into_proto;
use vchat_core::wire::{GrpcBody, GrpcMessages};
use vchat_core::{Document, DocumentArray, Request};
use vchat_proto::DataRequestProto;
use vchat_proto::prost::Message;

use crate::{Client, ClientError, PostOptions, PostSummary, Response};

impl Client {
    /// Opens `jina.JinaRPC/Call` sending `requests`, with `prefetch` as the
    /// `__prefetch__` metadata Jina's client sends: the responses, decoded.
    ///
    /// Written on the HTTP/2 channel directly rather than through tonic's codec,
    /// so that no frame is copied on the way: requests go out as chunks sharing
    /// their pixels, and a response that arrives in one HTTP/2 frame is decoded
    /// in place (see [`vchat_core::wire`]).
    async fn open_call<S>(
        &self,
        prefetch: usize,
        token: Option<&str>,
        requests: S,
    ) -> Result<impl Stream<Item = Result<DataRequestProto, Status>> + Send + use<S>, Status>
    where
        S: Stream<Item = DataRequestProto> + Send + 'static,
    {
        let transport = |e: tonic::transport::Error| Status::from_error(e.into());
        let mut channel = self.channel.clone();
        futures::future::poll_fn(|cx| GrpcService::poll_ready(&mut channel, cx))
            .await
            .map_err(transport)?;
        let body = GrpcBody::request(Box::pin(requests.map(Ok::<_, Status>)));
        let mut request = http::Request::new(tonic::body::Body::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static("/jina.JinaRPC/Call");
        let headers = request.headers_mut();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("te", http::HeaderValue::from_static("trailers"));
        headers.insert("__prefetch__", http::HeaderValue::from(prefetch));
        if let Some(token) = token {
            let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Status::invalid_argument("the access token is not a header value"))?;
            headers.insert("authorization", value);
        }
        headers.insert(
            "__results_in_order__",
            http::HeaderValue::from_static("true"),
        );
        let response = GrpcService::call(&mut channel, request)
            .await
            .map_err(transport)?;
        let (parts, body) = response.into_parts();
        // A refused stream ends at once, its status in the headers.
        if let Some(status) = Status::from_header_map(&parts.headers)
            && status.code() != tonic::Code::Ok
        {
            return Err(status);
        }
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "HTTP status {} instead of a gRPC stream",
                parts.status
            )));
        }
        Ok(GrpcMessages::new(body, usize::MAX).map(|message| {
            message.and_then(|message| {
                DataRequestProto::decode(message)
                    .map_err(|e| Status::internal(format!("undecodable response: {e}")))
            })
        }))
    }

    /// Streams `inputs` to `endpoint`, `request_size` documents per request, and
    /// calls the callbacks with each response as it arrives. Returns when the
    /// inputs are exhausted and every response has arrived; a transport error is
    /// returned, not passed to a callback.
    ///
    /// The future owns everything it uses, so it can be spawned.
    pub fn post<S>(
        &self,
        endpoint: &str,
        inputs: S,
        options: PostOptions,
    ) -> impl Future<Output = Result<PostSummary, ClientError>> + Send + 'static
    where
        S: Stream<Item = Document> + Send + 'static,
    {
        let client = self.clone();
        let endpoint = endpoint.to_string();
        async move { client.post_owned(endpoint, inputs, options).await }
    }

    async fn post_owned<S>(
        self,
        endpoint: String,
        inputs: S,
        mut options: PostOptions,
    ) -> Result<PostSummary, ClientError>
    where
        S: Stream<Item = Document> + Send + 'static,
    {
        let in_flight = Arc::new(Semaphore::new(options.prefetch));
        let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let fixed = options.parameters.clone();
        let live = options.live.take();
        let chunks = Box::pin(inputs.chunks(options.request_size));
        let inputs_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Told once when the inputs end (a permit is kept if nobody waits yet).
        let inputs_end = Arc::new(tokio::sync::Notify::new());
        let (permits, ids, done) = (in_flight.clone(), sent_at.clone(), inputs_done.clone());
        let end = inputs_end.clone();
        let outbound = futures::stream::unfold(chunks, move |mut chunks| {
            let (in_flight, sent_at) = (&permits, &ids);
            let in_flight = in_flight.clone();
            let sent_at = sent_at.clone();
            let done = done.clone();
            let end = end.clone();
            let endpoint = endpoint.clone();
            let fixed = fixed.clone();
            let live = live.clone();
            async move {
                // Room for the request first, then the inputs: a live source is
                // asked for a frame only when it can go out at once, so the frame
                // sent is the newest one, not one that waited for the network.
                let permit = in_flight.acquire().await.ok()?;
                let Some(docs) = chunks.next().await else {
                    done.store(true, std::sync::atomic::Ordering::Release);
                    end.notify_one();
                    return None;
                };
                // Read now, as the request leaves: the newest extra inputs.
                let mut fields = fixed;
                if let Some(live) = &live {
                    fields.extend(live.borrow().iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                // Released when the response arrives.
                permit.forget();
                let request = Request {
                    parameters: fields,
                    ..Request::new(endpoint, DocumentArray(docs))
                };
                let id = request.id.clone();
                let req = request_into_proto(request);
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, Instant::now());
                Some((req, chunks))
            }
        });
        let mut responses = self
            .open_call(options.prefetch, options.token.as_deref(), outbound)
            .await
            .map_err(|s| self.rpc_error(s))?;
        let mut summary = PostSummary::default();
        let all_answered = || {
            inputs_done.load(std::sync::atomic::Ordering::Acquire)
                && sent_at.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
        };
        loop {
            // Once the inputs have ended and every request is answered the post is
            // done, whether or not the server ends the stream: Jina's gateway keeps
            // a stream open after its client finished sending.
            let next = tokio::select! {
                m = responses.next() => m,
                _ = inputs_end.notified() => {
                    if all_answered() {
                        break;
                    }
                    continue;
                }
            };
            let proto = match next {
                Some(Ok(p)) => p,
                None => break,
                // Jina's gateway ends a stream whose client finished sending with an
                // error status ("Cancelling all calls") even when every request was
                // answered: nothing was lost, so that is a normal end.
                Some(Err(_)) if all_answered() => break,
                Some(Err(s)) => return Err(self.rpc_error(s)),
            };
            in_flight.add_permits(1);
            let id = proto
                .header
                .as_ref()
                .map(|h| h.request_id.as_str())
                .unwrap_or("");
            let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            let resp = Response {
                latency: sent.map(|t| t.elapsed()),
                proto,
            };
            summary.requests += 1;
            if resp.is_error() {
                summary.errors += 1;
                if let Some(f) = options.on_error.as_mut() {
                    f(&resp);
                }
            } else {
                summary.done += 1;
                if let Some(f) = options.on_done.as_mut() {
                    f(&resp);
                }
            }
            if let Some(f) = options.on_always.as_mut() {
                f(&resp);
            }
            if all_answered() {
                break;
            }
        }
        Ok(summary)
    }
}
