//! An executor in another process (`vchat executor`, `jina executor`, any service of
//! `jina.JinaSingleDataRequestRPC`), called once per request over a shared HTTP/2
//! channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use vchat_core::config::{
    DEFAULT_EXECUTOR_KEEPALIVE_INTERVAL_S, DEFAULT_EXECUTOR_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_RETRIES,
};
use vchat_core::proto::request_into_proto;
use vchat_core::{
    DocumentArray, Error, Executor, Request, RequestContext, STREAM_CLOSED_ENDPOINT,
    STREAM_PARAMETER, StreamId, async_trait, string_value,
};
use vchat_proto::DataRequestProto;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::jina::jina_info_rpc_client::JinaInfoRpcClient;
use vchat_proto::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;

use vchat_core::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};

/// Default deadline of one call when the Flow sets no `timeout_send`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `dry_run` waits for an external executor's `_status`.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting to an executor may take (within the call's deadline).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of one external executor replica.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Deadline of a whole call, retries included: connecting, sending the
    /// request, the executor's work and receiving the whole response
    /// (`timeout_send`).
    pub timeout: Duration,
    /// Further attempts after a call that provably never reached the executor.
    pub retries: u32,
    /// Largest response message accepted, in bytes (`max_response_bytes`); a
    /// larger one is an ERROR response for its request.
    pub max_response_bytes: usize,
    /// HTTP/2 PING interval on the executor's connection while calls are in
    /// flight (`keepalive_interval_s`); `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    /// A PING unanswered for this long closes the connection, failing its calls
    /// (`keepalive_timeout_s`).
    pub keepalive_timeout: Duration,
    /// Call over TLS (`tls: true`): see [`crate::link`].
    pub tls: bool,
    /// The shared secret sent on every call (`executor_secret`).
    pub secret: Option<String>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            keepalive_interval: Some(Duration::from_secs(DEFAULT_EXECUTOR_KEEPALIVE_INTERVAL_S)),
            keepalive_timeout: Duration::from_secs(DEFAULT_EXECUTOR_KEEPALIVE_TIMEOUT_S),
            tls: false,
            secret: None,
        }
    }
}

/// An executor reached over gRPC.
pub struct RemoteExecutor {
    inner: Arc<Inner>,
}

/// What a call needs, shared with the task that makes it (see
/// [`RemoteExecutor::process`]).
struct Inner {
    name: String,
    addr: String,
    channel: Channel,
    options: RemoteOptions,
    /// Whether the peer is a vchat executor (it then learns when streams end).
    is_vchat: OnceCell<bool>,
    in_flight: Arc<InFlight>,
}

/// A channel to `addr` (`host:port`) with vchat's transport settings and the
/// default keepalive; connects lazily and reconnects by itself, so a peer that is
/// down now can come back.
pub fn channel(addr: &str) -> Result<Channel, String> {
    channel_with(addr, &RemoteOptions::default())
}

/// [`channel`] with the keepalive of `options`.
pub fn channel_with(addr: &str, options: &RemoteOptions) -> Result<Channel, String> {
    let scheme = if options.tls { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("invalid executor address {addr:?}: {e}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .connect_timeout(CONNECT_TIMEOUT.min(options.timeout));
    if options.tls {
        endpoint = endpoint
            .tls_config(crate::link::client_tls()?)
            .map_err(|e| format!("TLS to executor {addr:?}: {e}"))?;
    }
    if let Some(interval) = options.keepalive_interval {
        // PINGs while calls are in flight find a peer that vanished without
        // closing its TCP connection (a host gone, a NAT entry expired). Not
        // while idle: gRPC's own servers (grpcio, so Jina's executors) answer
        // PINGs on an idle connection more often than every 5 minutes with
        // GOAWAY `too_many_pings`, and a call racing that GOAWAY would fail. An
        // idle connection found dead is replaced at the next call.
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .keep_alive_while_idle(false);
    }
    Ok(endpoint.connect_lazy())
}

/// Why a call failed.
enum CallError {
    /// No complete response within the deadline.
    Deadline,
    /// The response was over `max_response_bytes`.
    TooLarge(String),
    /// Any other failure, as gRPC reports it.
    Status(tonic::Status),
}

impl RemoteExecutor {
    /// The executor named `name` in the Flow, served at `addr` (`host:port`).
    pub fn new(name: &str, addr: &str, options: RemoteOptions) -> Result<Self, String> {
        Ok(RemoteExecutor {
            inner: Arc::new(Inner {
                name: name.to_string(),
                addr: addr.to_string(),
                channel: channel_with(addr, &options)?,
                options,
                is_vchat: OnceCell::new(),
                in_flight: Arc::default(),
            }),
        })
    }
}

impl Inner {
    fn failed(&self, message: String) -> Error {
        Error::Failed {
            executor: self.name.clone(),
            message,
        }
    }

    /// One call, retried while it provably never reached the executor, all within
    /// one deadline.
    async fn call(&self, req: DataRequestProto) -> Result<DataRequestProto, CallError> {
        let deadline = Instant::now() + self.options.timeout;
        let limit = self.options.max_response_bytes;
        let mut attempt = 0;
        loop {
            let mut client = JinaSingleDataRequestRpcClient::new(self.channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX);
            let mut request = tonic::Request::new(req.clone());
            crate::link::authorize(&mut request, self.options.secret.as_deref());
            // Tells the executor when the gateway stops waiting; the gateway's
            // own bound is the timeout around the whole call below (tonic times
            // only up to the response headers, not the body).
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let status = match tokio::time::timeout_at(
                deadline,
                client.process_single_data(request),
            )
            .await
            {
                Err(_) => return Err(CallError::Deadline),
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => status,
            };
            // tonic's own timer (from the `grpc-timeout` set above) races ours to
            // the same deadline, and its error does not always keep its source:
            // any failure once the deadline has passed is the deadline.
            if is_timeout(&status) || Instant::now() >= deadline {
                return Err(CallError::Deadline);
            }
            if is_response_too_large(&status, limit) {
                return Err(CallError::TooLarge(status.message().to_string()));
            }
            if attempt >= self.options.retries || !never_reached(&status) {
                return Err(CallError::Status(status));
            }
            attempt += 1;
            let backoff = Duration::from_millis(25 << attempt.min(5));
            if Instant::now() + backoff >= deadline {
                return Err(CallError::Status(status));
            }
            tracing::debug!(executor = %self.name, addr = %self.addr, attempt, error = %status.message(), "Retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn is_vchat(&self) -> bool {
        let probe = self.is_vchat.get_or_try_init(|| async {
            let mut info = JinaInfoRpcClient::new(self.channel.clone());
            let mut req = tonic::Request::new(());
            crate::link::authorize(&mut req, self.options.secret.as_deref());
            req.set_timeout(Duration::from_secs(2));
            let status = tokio::time::timeout(Duration::from_secs(2), info.status(req))
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no _status in time"))??;
            Ok::<bool, tonic::Status>(status.into_inner().jina.contains_key("vchat"))
        });
        probe.await.copied().unwrap_or(false)
    }
}

/// Whether a failed call provably never reached the executor, the only failure
/// worth another attempt.
///
/// A call is not idempotent: the chat's executor adds the sender to a room, a
/// counter counts, a recorder records. Once any byte of the request may have gone
/// out, the executor may have applied it even though no answer came back (a
/// deadline, a connection broken mid-call, a status the executor sent itself,
/// UNAVAILABLE included), and a second attempt would apply it twice. What
/// provably did not go out is a call whose connection could not be made
/// (refused, unreachable, timed out while connecting): tonic then reports its
/// `ConnectError` in the status' source chain, before any request was written.
fn never_reached(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether `status` is tonic's own refusal of a response over the decoding
/// `limit` (an executor refusing the request over its own limit says the same
/// with its own limit).
fn is_response_too_large(status: &tonic::Status, limit: usize) -> bool {
    status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .contains("decoded message length too large")
        && status
            .message()
            .ends_with(&format!("the limit is: {limit} bytes"))
}

/// Whether `status` is the deadline passing: tonic times the response headers
/// by the request's `grpc-timeout` itself and may be first to notice.
fn is_timeout(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::DeadlineExceeded {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Calls in flight to one executor, per client stream, so that the executor hears
/// of a stream's end only after that stream's calls are over: otherwise a frame
/// still on its way (a large body, a busy executor) could be applied after the
/// end and bring the user back into the room until the idle timeout.
#[derive(Default)]
struct InFlight(Mutex<HashMap<StreamId, watch::Sender<usize>>>);

/// One call in flight, counted until dropped.
struct Ticket {
    in_flight: Arc<InFlight>,
    stream: StreamId,
}

impl InFlight {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, watch::Sender<usize>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(self: &Arc<Self>, stream: StreamId) -> Ticket {
        self.map()
            .entry(stream)
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|n| *n += 1);
        Ticket {
            in_flight: self.clone(),
            stream,
        }
    }

    /// Waits until `stream` has no call in flight, at most `limit`; whether it
    /// has none.
    async fn drained(&self, stream: StreamId, limit: Duration) -> bool {
        let Some(mut rx) = self.map().get(&stream).map(watch::Sender::subscribe) else {
            return true;
        };
        // The sender goes when the count reaches zero: an error is also "none".
        tokio::time::timeout(limit, async move {
            let _ = rx.wait_for(|n| *n == 0).await;
        })
        .await
        .is_ok()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.in_flight.map();
        if let Some(tx) = map.get(&self.stream) {
            tx.send_modify(|n| *n = n.saturating_sub(1));
            if *tx.borrow() == 0 {
                map.remove(&self.stream);
            }
        }
    }
}

fn stream_param(stream: StreamId) -> vchat_core::Value {
    string_value(format!("{:x}", stream.0))
}

#[async_trait]
impl Executor for RemoteExecutor {
    async fn process(
        &self,
        docs: &mut DocumentArray,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let mut fields = ctx.parameters.clone();
        fields.insert(STREAM_PARAMETER.to_string(), stream_param(ctx.stream));
        let req = request_into_proto(Request {
            id: ctx.request_id.to_string(),
            endpoint: ctx.endpoint.to_string(),
            target_executor: None,
            parameters: fields,
            docs: std::mem::take(docs),
        });
        // The call runs in a task of its own: when the stream goes away while it
        // is in flight, it still ends (by its deadline at the latest) and only
        // then lets `stream_closed` through, instead of being cut at a point
        // where the executor may or may not have applied it.
        let ticket = inner.in_flight.enter(ctx.stream);
        let task = {
            let inner = inner.clone();
            let req = req.clone();
            tokio::spawn(async move {
                let result = inner.call(req).await;
                drop(ticket);
                result
            })
        };
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(CallError::Status(tonic::Status::internal(format!(
                "the call's task failed: {e}"
            )))),
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(Documents::Docs(d)) = req.data.and_then(|d| d.documents) {
                    *docs = DocumentArray::from_proto(d).unwrap_or_default();
                }
                let reason = match e {
                    CallError::Deadline => format!(
                        "is unavailable: no complete answer within {:?} (timeout_send)",
                        inner.options.timeout
                    ),
                    CallError::TooLarge(m) => format!(
                        "answered with a message over the limit of {} bytes (max_response_bytes): {m}",
                        inner.options.max_response_bytes
                    ),
                    CallError::Status(s) => format!("is unavailable: {}", s.message()),
                };
                return Err(inner.failed(format!("executor at {} {reason}", inner.addr)));
            }
        };
        if let Some(s) = resp.header.as_ref().and_then(|h| h.status.as_ref())
            && vchat_core::proto::is_error(&resp)
        {
            return Err(inner.failed(s.description.clone()));
        }
        *docs = match resp.data.and_then(|d| d.documents) {
            Some(Documents::Docs(d)) => DocumentArray::from_proto(d)
                .map_err(|e| inner.failed(format!("returned invalid documents: {e}")))?,
            Some(Documents::DocsBytes(_)) => {
                return Err(inner.failed("returned docs_bytes (pickled documents)".into()));
            }
            None => DocumentArray::new(),
        };
        Ok(())
    }

    async fn ready(&self) -> Result<(), String> {
        let inner = &self.inner;
        let mut info = JinaInfoRpcClient::new(inner.channel.clone());
        let mut req = tonic::Request::new(());
        crate::link::authorize(&mut req, inner.options.secret.as_deref());
        match tokio::time::timeout(READY_TIMEOUT, info.status(req)).await {
            Ok(Ok(_)) => Ok(()),
            // It answered, it just has no `_status`: it is up.
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Ok(Err(s)) => Err(format!(
                "executor `{}` at {} does not answer: {}",
                inner.name,
                inner.addr,
                s.message()
            )),
            Err(_) => Err(format!(
                "executor `{}` at {} does not answer within {} s",
                inner.name,
                inner.addr,
                READY_TIMEOUT.as_secs()
            )),
        }
    }

    async fn stream_closed(&self, stream: StreamId) {
        let inner = &self.inner;
        if !inner.is_vchat().await {
            return;
        }
        // Every call is bounded by the deadline, so this wait is too; past it
        // (which cannot happen but for a stuck task) the end goes out anyway.
        if !inner.in_flight.drained(stream, inner.options.timeout).await {
            tracing::debug!(executor = %inner.name, stream = stream.0, "Calls of an ended stream still in flight after the deadline");
        }
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(STREAM_PARAMETER.to_string(), stream_param(stream));
        let req = request_into_proto(Request {
            parameters: fields,
            ..Request::new(STREAM_CLOSED_ENDPOINT, DocumentArray::new())
        });
        let error = match inner.call(req).await {
            Ok(_) => return,
            Err(CallError::Deadline) => "no answer in time".to_string(),
            Err(CallError::TooLarge(m)) => m,
            Err(CallError::Status(s)) => s.message().to_string(),
        };
        tracing::debug!(executor = %inner.name, %error, "Could not tell the executor a stream ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_the_only_failure_retried() {
        let addr = format!("127.0.0.1:{}", free_port());
        let options = RemoteOptions {
            retries: 0,
            ..Default::default()
        };
        let remote = RemoteExecutor::new("x", &addr, options).unwrap();
        match remote.inner.call(DataRequestProto::default()).await {
            Err(CallError::Status(s)) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                assert!(never_reached(&s), "{s:?}");
            }
            Err(_) => panic!("expected a connect error"),
            Ok(_) => panic!("nothing listens there"),
        }
        // The same code, sent by an executor that got the request: not retried.
        assert!(!never_reached(&tonic::Status::unavailable("busy")));
        assert!(!never_reached(&tonic::Status::deadline_exceeded("late")));
        assert!(!never_reached(&tonic::Status::unknown("reset")));
    }

    #[test]
    fn only_tonics_own_limit_is_a_response_over_the_limit() {
        let local = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        );
        assert!(is_response_too_large(&local, 4));
        // The executor refusing the request over its own limit.
        assert!(!is_response_too_large(&local, 8));
        let other = tonic::Status::out_of_range("other");
        assert!(!is_response_too_large(&other, 4));
    }

    #[tokio::test]
    async fn the_end_of_a_stream_waits_for_its_calls_in_flight() {
        let in_flight = Arc::new(InFlight::default());
        let (a, b) = (StreamId(1), StreamId(2));
        let first = in_flight.enter(a);
        let second = in_flight.enter(a);
        let other = in_flight.enter(b);
        assert!(!in_flight.drained(a, Duration::from_millis(20)).await);
        drop(first);
        assert!(!in_flight.drained(a, Duration::from_millis(20)).await);
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.drained(a, Duration::from_secs(20)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(second);
        assert!(waiter.await.unwrap());
        // Another stream's call does not hold it, and nothing is kept for `a`.
        assert_eq!(in_flight.len(), 1);
        drop(other);
        assert_eq!(in_flight.len(), 0);
        assert!(in_flight.drained(b, Duration::ZERO).await);
    }
}
