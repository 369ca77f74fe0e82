//! vchat-client: talk to a vchat (or Jina 3) gateway.
//!
//! [`Client::post`] streams documents to `jina.JinaRPC/Call`, `request_size`
//! documents per request, and hands every response to the `on_done` / `on_error` /
//! `on_always` callbacks the moment it arrives. Nothing is accumulated, so an
//! endless input (a webcam) runs forever in constant memory; at most `prefetch`
//! requests are in flight.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vchat_client::ClientError> {
//! use vchat_client::{Client, PostOptions};
//! use vchat_core::{Document, Tensor};
//!
//! let client = Client::new("grpc://127.0.0.1:12345")?;
//! let frames = futures::stream::iter((0..10).map(|_| {
//!     let pixels = bytes::Bytes::from(vec![0u8; 200 * 300 * 3]);
//!     let mut doc = Document::with_tensor(Tensor::image(200, 300, 3, pixels).unwrap());
//!     doc.set_tag_str("user", "alice");
//!     doc
//! }));
//! let options = PostOptions::new()
//!     .request_size(1)
//!     .on_done(|resp| println!("mosaic {:?}", resp.docs().unwrap()[0].tensor().unwrap().shape()));
//! client.post("/", frames, options).await?;
//! # Ok(()) }
//! ```
//!
//! The `vchat-client` binary (in `src/bin`) is the chat client built on this: a
//! [`source::FrameSource`] read on its own thread by [`capture::Capture`], which
//! hands the newest frame over through a [`latest::Latest`] slot, and
//! [`sink::MosaicSink`]s for what comes back.
//!
//! This crate has no feature flags and no OpenCV: the webcam, the window and
//! recording are in the `vchat-client-app` package, which builds the
//! `vchat-client` binary.

pub mod capture;
pub mod display;
pub mod latest;
pub mod sink;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::client::GrpcService;
use tonic::codegen::http;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vchat_core::wire::{GrpcBody, GrpcMessages};
use vchat_core::{DocumentArray, Value, new_id};
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::jina_gateway_dry_run_rpc_client::JinaGatewayDryRunRpcClient;
use vchat_proto::jina::status_proto::StatusCode;
use vchat_proto::prost::Message;
use vchat_proto::{DataRequestProto, HeaderProto};

pub use vchat_core::{Document, Tensor};

/// Jina's default documents per request.
pub const DEFAULT_REQUEST_SIZE: usize = 100;
/// Default requests in flight on one stream.
pub const DEFAULT_PREFETCH: usize = 16;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not `grpc://host:port`, `grpcs://host:port` or `host:port`.
    #[error("invalid address {0:?}: expected grpc://HOST:PORT or grpcs://HOST:PORT")]
    Address(String),
    /// The gateway answered `dry_run`, but its Flow is not ready (an external
    /// executor does not answer).
    #[error("{addr}: {reason}")]
    NotReady {
        /// The gateway address.
        addr: String,
        /// The gateway's reason.
        reason: String,
    },
    /// The TLS settings (a `--ca` file) cannot be used.
    #[error("TLS for {addr}: {message}")]
    Tls {
        /// The gateway address.
        addr: String,
        /// What is wrong.
        message: String,
    },
    /// The connection failed or broke.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        /// The gateway address.
        addr: String,
        /// What failed.
        source: tonic::transport::Error,
    },
    /// The server ended the call with an error status.
    #[error("{addr}: {status}")]
    Rpc {
        /// The gateway address.
        addr: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
}

impl ClientError {
    /// Whether the gateway could not be reached or went away (as opposed to
    /// refusing the call): worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            ),
            ClientError::NotReady { .. } => true,
            ClientError::Address(_) | ClientError::Tls { .. } => false,
        }
    }
}

/// One response, as handed to the callbacks.
#[derive(Debug, Clone)]
pub struct Response {
    proto: DataRequestProto,
    latency: Option<Duration>,
}

impl Response {
    /// The request id, the same as the request's.
    pub fn request_id(&self) -> &str {
        self.proto.header.as_ref().map_or("", |h| &h.request_id)
    }

    /// Whether the gateway reported an ERROR status for this request.
    pub fn is_error(&self) -> bool {
        self.proto
            .header
            .as_ref()
            .and_then(|h| h.status.as_ref())
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }

    /// The error description, when [`is_error`](Self::is_error).
    pub fn error(&self) -> Option<&str> {
        if !self.is_error() {
            return None;
        }
        self.proto
            .header
            .as_ref()
            .and_then(|h| h.status.as_ref())
            .map(|s| s.description.as_str())
    }

    /// The response documents.
    pub fn docs(&self) -> Result<DocumentArray, vchat_core::Error> {
        match self.proto.data.as_ref().and_then(|d| d.documents.as_ref()) {
            Some(Documents::Docs(da)) => DocumentArray::from_proto(da.clone()),
            _ => Ok(DocumentArray::new()),
        }
    }

    /// Whether the gateway answered without processing (frame skipping or
    /// `max_fps`): no frame, `parameters.__skipped__`.
    pub fn is_skipped(&self) -> bool {
        self.proto
            .parameters
            .as_ref()
            .and_then(|p| p.fields.get("__skipped__"))
            .is_some_and(|v| matches!(v.kind, Some(vchat_core::value::Kind::BoolValue(true))))
    }

    /// The executors' extra outputs (`parameters.__results__`), flattened to
    /// `executor.key = value`, sorted.
    pub fn results(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let Some(vchat_core::value::Kind::StructValue(all)) = self
            .proto
            .parameters
            .as_ref()
            .and_then(|p| p.fields.get("__results__"))
            .and_then(|v| v.kind.as_ref())
        else {
            return out;
        };
        for (executor, v) in &all.fields {
            match &v.kind {
                Some(vchat_core::value::Kind::StructValue(s)) => {
                    out.extend(
                        s.fields
                            .iter()
                            .map(|(k, v)| (format!("{executor}.{k}"), v.clone())),
                    );
                }
                _ => out.push((executor.clone(), v.clone())),
            }
        }
        out
    }

    /// The response parameters.
    pub fn parameters(&self) -> BTreeMap<String, Value> {
        self.proto
            .parameters
            .as_ref()
            .map(|p| p.fields.clone())
            .unwrap_or_default()
    }

    /// Time from sending the request to receiving this response.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// The wire message.
    pub fn proto(&self) -> &DataRequestProto {
        &self.proto
    }
}

type Callback = Box<dyn FnMut(&Response) + Send>;

/// How [`Client::post`] sends and what it does with each response.
pub struct PostOptions {
    request_size: usize,
    prefetch: usize,
    parameters: BTreeMap<String, Value>,
    on_done: Option<Callback>,
    on_error: Option<Callback>,
    on_always: Option<Callback>,
    live: Option<tokio::sync::watch::Receiver<BTreeMap<String, Value>>>,
    token: Option<String>,
}

impl Default for PostOptions {
    fn default() -> Self {
        PostOptions {
            request_size: DEFAULT_REQUEST_SIZE,
            prefetch: DEFAULT_PREFETCH,
            parameters: BTreeMap::new(),
            on_done: None,
            on_error: None,
            on_always: None,
            live: None,
            token: None,
        }
    }
}

impl PostOptions {
    /// Defaults: `request_size` 100 (as Jina), `prefetch` 16, no parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents per request (at least 1); the chat sends 1.
    pub fn request_size(mut self, n: usize) -> Self {
        self.request_size = n.max(1);
        self
    }

    /// The access token of a Flow with access control, sent as the stream's
    /// `authorization: Bearer` metadata (see `vchat token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// Requests in flight at most (at least 1); also sent as `__prefetch__`.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Parameters sent with every request.
    pub fn parameters(mut self, p: BTreeMap<String, Value>) -> Self {
        self.parameters = p;
        self
    }

    /// Parameters that may change while the stream runs (extra inputs: a slider, a
    /// key press): each request carries the value current when it is sent, over
    /// the fixed [`parameters`](Self::parameters).
    pub fn live_parameters(
        mut self,
        rx: tokio::sync::watch::Receiver<BTreeMap<String, Value>>,
    ) -> Self {
        self.live = Some(rx);
        self
    }

    /// Called with every successful response, as it arrives.
    pub fn on_done(mut self, f: impl FnMut(&Response) + Send + 'static) -> Self {
        self.on_done = Some(Box::new(f));
        self
    }

    /// Called with every response whose status is ERROR.
    pub fn on_error(mut self, f: impl FnMut(&Response) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Called with every response, after `on_done` or `on_error`.
    pub fn on_always(mut self, f: impl FnMut(&Response) + Send + 'static) -> Self {
        self.on_always = Some(Box::new(f));
        self
    }
}

/// What a finished [`Client::post`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostSummary {
    /// Responses received.
    pub requests: u64,
    /// Responses received with SUCCESS.
    pub done: u64,
    /// Responses received with ERROR.
    pub errors: u64,
}

/// A connection to a gateway.
#[derive(Clone)]
pub struct Client {
    addr: String,
    channel: Channel,
}

/// `grpc://host:port` or `host:port` to an `http://` URI for tonic,
/// `grpcs://host:port` to an `https://` one.
fn endpoint_uri(addr: &str) -> Result<String, ClientError> {
    let (scheme, rest) = match addr.strip_prefix("grpcs://") {
        Some(rest) => ("https", rest),
        None => ("http", addr.strip_prefix("grpc://").unwrap_or(addr)),
    };
    if rest.contains("://") || rest.is_empty() {
        return Err(ClientError::Address(addr.to_string()));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| ClientError::Address(addr.to_string()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ClientError::Address(addr.to_string()));
    }
    Ok(format!("{scheme}://{rest}"))
}

impl Client {
    /// A client for `addr` (`grpc://host:port`, or `grpcs://host:port` for TLS
    /// checked against the system's root certificates). Connects lazily, on
    /// first use.
    pub fn new(addr: &str) -> Result<Self, ClientError> {
        Self::connect(addr, None)
    }

    /// A client for `grpcs://host:port` whose certificate is signed by the CA in
    /// `ca_pem` (a private CA, or a self-signed certificate), instead of the
    /// system's roots.
    pub fn with_ca(addr: &str, ca_pem: &[u8]) -> Result<Self, ClientError> {
        if !addr.starts_with("grpcs://") {
            return Err(ClientError::Tls {
                addr: addr.to_string(),
                message: "a CA certificate is for grpcs:// addresses".into(),
            });
        }
        Self::connect(addr, Some(ca_pem))
    }

    /// [`new`](Self::new), or [`with_ca`](Self::with_ca) with the PEM file `ca`
    /// when one is given (the command lines' `--ca FILE`).
    pub fn open(addr: &str, ca: Option<&std::path::Path>) -> Result<Self, ClientError> {
        match ca {
            None => Self::new(addr),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ClientError::Tls {
                    addr: addr.to_string(),
                    message: format!("cannot read the CA certificate {}: {e}", path.display()),
                })?;
                Self::with_ca(addr, &pem)
            }
        }
    }

    fn connect(addr: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let uri = endpoint_uri(addr)?;
        let tls = uri.starts_with("https://");
        let mut endpoint =
            Endpoint::from_shared(uri).map_err(|_| ClientError::Address(addr.to_string()))?;
        if tls {
            let config = match ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(config).map_err(|e| ClientError::Tls {
                addr: addr.to_string(),
                message: format!("{e:?}"),
            })?;
        }
        let channel = endpoint
            .tcp_nodelay(true)
            .initial_stream_window_size(vchat_core::STREAM_WINDOW)
            .initial_connection_window_size(vchat_core::CONNECTION_WINDOW)
            .max_frame_size(vchat_core::MAX_FRAME)
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Client {
            addr: addr.to_string(),
            channel,
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn rpc_error(&self, status: tonic::Status) -> ClientError {
        ClientError::Rpc {
            addr: self.addr.clone(),
            status: Box::new(status),
        }
    }

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

    /// Asks the gateway whether its Flow is ready (`dry_run`).
    pub async fn dry_run(&self) -> Result<(), ClientError> {
        let mut c = JinaGatewayDryRunRpcClient::new(self.channel.clone());
        let status = c
            .dry_run(())
            .await
            .map_err(|s| self.rpc_error(s))?
            .into_inner();
        if status.code == StatusCode::Error as i32 {
            return Err(ClientError::NotReady {
                addr: self.addr.clone(),
                reason: status.description,
            });
        }
        Ok(())
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
                let parameters = (!fields.is_empty()).then_some(vchat_core::Struct { fields });
                // Released when the response arrives.
                permit.forget();
                let id = new_id();
                let req = DataRequestProto {
                    header: Some(HeaderProto {
                        request_id: id.clone(),
                        exec_endpoint: Some(endpoint),
                        ..Default::default()
                    }),
                    parameters,
                    routes: Vec::new(),
                    data: Some(DataContentProto {
                        documents: Some(Documents::Docs(DocumentArray(docs).into_proto())),
                    }),
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint_uri("grpc://127.0.0.1:80").unwrap(),
            "http://127.0.0.1:80"
        );
        assert_eq!(endpoint_uri("localhost:1").unwrap(), "http://localhost:1");
        assert_eq!(
            endpoint_uri("grpcs://example.org:443").unwrap(),
            "https://example.org:443"
        );
        assert!(Client::with_ca("grpc://x:1", b"").is_err());
        assert!(endpoint_uri("http://x:1").is_err());
        assert!(endpoint_uri("grpc://x").is_err());
        assert!(endpoint_uri("grpc://x:port").is_err());
        assert!(Client::new("nope").is_err());
    }
}
