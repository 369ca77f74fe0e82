//! An executor in another process (`vchat executor`, `jina executor`, any service of
//! `jina.JinaSingleDataRequestRPC`), called once per request over a shared HTTP/2
//! channel.

use std::time::Duration;

use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};
use vchat_core::{
    DocumentArray, Error, Executor, RequestContext, STREAM_CLOSED_ENDPOINT, STREAM_PARAMETER,
    StreamId, Struct, async_trait, string_value,
};
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::jina_info_rpc_client::JinaInfoRpcClient;
use vchat_proto::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
use vchat_proto::jina::status_proto::StatusCode;
use vchat_proto::{DataRequestProto, HeaderProto};

use crate::server::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};

/// Default per-call timeout when the Flow sets no `timeout_send`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `dry_run` waits for an external executor's `_status`.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of one external executor replica.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Per-call timeout.
    pub timeout: Duration,
    /// Further attempts after a call that could not reach the executor.
    pub retries: u32,
}

/// An executor reached over gRPC.
pub struct RemoteExecutor {
    name: String,
    addr: String,
    channel: Channel,
    options: RemoteOptions,
    /// Whether the peer is a vchat executor (it then learns when streams end).
    is_vchat: OnceCell<bool>,
}

/// A channel to `addr` (`host:port`) with vchat's transport settings; connects
/// lazily and reconnects by itself, so a peer that is down now can come back.
pub fn channel(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("invalid executor address {addr:?}: {e}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .connect_timeout(Duration::from_secs(2));
    Ok(endpoint.connect_lazy())
}

impl RemoteExecutor {
    /// The executor named `name` in the Flow, served at `addr` (`host:port`).
    pub fn new(name: &str, addr: &str, options: RemoteOptions) -> Result<Self, String> {
        Ok(RemoteExecutor {
            name: name.to_string(),
            addr: addr.to_string(),
            channel: channel(addr)?,
            options,
            is_vchat: OnceCell::new(),
        })
    }

    fn failed(&self, message: String) -> Error {
        Error::Failed {
            executor: self.name.clone(),
            message,
        }
    }

    async fn call(&self, req: DataRequestProto) -> Result<DataRequestProto, tonic::Status> {
        let mut attempt = 0;
        loop {
            let mut client = JinaSingleDataRequestRpcClient::new(self.channel.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(self.options.timeout);
            match client.process_single_data(request).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if attempt < self.options.retries && retryable(&status) => {
                    attempt += 1;
                    let backoff = Duration::from_millis(25 << attempt.min(5));
                    tracing::debug!(executor = %self.name, addr = %self.addr, attempt, error = %status.message(), "Retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(status) => return Err(status),
            }
        }
    }

    async fn is_vchat(&self) -> bool {
        let probe = self.is_vchat.get_or_try_init(|| async {
            let mut info = JinaInfoRpcClient::new(self.channel.clone());
            let mut req = tonic::Request::new(());
            req.set_timeout(Duration::from_secs(2));
            let status = info.status(req).await?;
            Ok::<bool, tonic::Status>(status.into_inner().jina.contains_key("vchat"))
        });
        probe.await.copied().unwrap_or(false)
    }
}

/// Failures worth another attempt: the peer was not reached or did not answer.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
    )
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
        let mut fields = ctx.parameters.clone();
        fields.insert(STREAM_PARAMETER.to_string(), stream_param(ctx.stream));
        let req = DataRequestProto {
            header: Some(HeaderProto {
                request_id: ctx.request_id.to_string(),
                exec_endpoint: Some(ctx.endpoint.to_string()),
                ..Default::default()
            }),
            parameters: Some(Struct { fields }),
            routes: Vec::new(),
            data: Some(DataContentProto {
                documents: Some(Documents::Docs(std::mem::take(docs).into_proto())),
            }),
        };
        let resp = match self.call(req.clone()).await {
            Ok(r) => r,
            Err(status) => {
                if let Some(Documents::Docs(d)) = req.data.and_then(|d| d.documents) {
                    *docs = DocumentArray::from_proto(d).unwrap_or_default();
                }
                let reason = match status.code() {
                    tonic::Code::DeadlineExceeded => {
                        format!("no answer within {:?}", self.options.timeout)
                    }
                    _ => status.message().to_string(),
                };
                return Err(self.failed(format!(
                    "executor at {} is unavailable: {reason}",
                    self.addr
                )));
            }
        };
        if let Some(s) = resp.header.as_ref().and_then(|h| h.status.as_ref())
            && s.code == StatusCode::Error as i32
        {
            return Err(self.failed(s.description.clone()));
        }
        *docs = match resp.data.and_then(|d| d.documents) {
            Some(Documents::Docs(d)) => DocumentArray::from_proto(d)
                .map_err(|e| self.failed(format!("returned invalid documents: {e}")))?,
            Some(Documents::DocsBytes(_)) => {
                return Err(self.failed("returned docs_bytes (pickled documents)".into()));
            }
            None => DocumentArray::new(),
        };
        Ok(())
    }

    async fn ready(&self) -> Result<(), String> {
        let mut info = JinaInfoRpcClient::new(self.channel.clone());
        match tokio::time::timeout(READY_TIMEOUT, info.status(())).await {
            Ok(Ok(_)) => Ok(()),
            // It answered, it just has no `_status`: it is up.
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Ok(Err(s)) => Err(format!(
                "executor `{}` at {} does not answer: {}",
                self.name,
                self.addr,
                s.message()
            )),
            Err(_) => Err(format!(
                "executor `{}` at {} does not answer within {} s",
                self.name,
                self.addr,
                READY_TIMEOUT.as_secs()
            )),
        }
    }

    async fn stream_closed(&self, stream: StreamId) {
        if !self.is_vchat().await {
            return;
        }
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(STREAM_PARAMETER.to_string(), stream_param(stream));
        let req = DataRequestProto {
            header: Some(HeaderProto {
                request_id: vchat_core::new_id(),
                exec_endpoint: Some(STREAM_CLOSED_ENDPOINT.to_string()),
                ..Default::default()
            }),
            parameters: Some(Struct { fields }),
            ..Default::default()
        };
        if let Err(e) = self.call(req).await {
            tracing::debug!(executor = %self.name, error = %e.message(), "Could not tell the executor a stream ended");
        }
    }
}
