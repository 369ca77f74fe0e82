//! The raw protocol: `jina.JinaRPC/Call` streams and hand-built requests, for
//! what the client library would refuse to send.

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use vchat_core::{Document, Tensor};
use vchat_proto::DataRequestProto;
use vchat_proto::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use vchat_proto::jina::jina_rpc_client::JinaRpcClient;

use crate::PATIENCE;

/// A stream on which the test sends raw protocol messages, so that it can send
/// what the client library would refuse to build.
pub struct RawStream {
    tx: Option<mpsc::UnboundedSender<DataRequestProto>>,
    responses: Option<tonic::Streaming<DataRequestProto>>,
}

impl RawStream {
    /// Opens `jina.JinaRPC/Call` on `addr`.
    pub async fn connect(addr: &str) -> RawStream {
        RawStream::try_connect(addr).await.unwrap()
    }

    /// Opens `jina.JinaRPC/Call` on `addr`, or returns the status the gateway
    /// refuses the stream with.
    pub async fn try_connect(addr: &str) -> Result<RawStream, tonic::Status> {
        RawStream::try_connect_with(addr, None).await
    }

    /// Opens `jina.JinaRPC/Call` on `addr` with `authorization: Bearer TOKEN`
    /// metadata, or returns the status the gateway refuses the stream with.
    pub async fn try_connect_with(
        addr: &str,
        token: Option<&str>,
    ) -> Result<RawStream, tonic::Status> {
        let uri = addr.replace("grpc://", "http://");
        let mut client = JinaRpcClient::connect(uri)
            .await
            .unwrap()
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut call = tonic::Request::new(UnboundedReceiverStream::new(rx));
        if let Some(t) = token {
            call.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let responses = client.call(call).await?.into_inner();
        Ok(RawStream {
            tx: Some(tx),
            responses: Some(responses),
        })
    }

    /// Sends `req` and returns the next response.
    pub async fn send(&mut self, req: DataRequestProto) -> DataRequestProto {
        self.tx.as_ref().unwrap().send(req).unwrap();
        self.message_within_patience("response in time")
            .await
            .expect("stream still open")
            .expect("a response, not the end of the stream")
    }

    /// Hands the response side to the caller (to read concurrently with sending).
    pub fn take_responses(&mut self) -> tonic::Streaming<DataRequestProto> {
        self.responses.take().expect("responses not taken yet")
    }

    /// Sends `req` without waiting for its response.
    pub fn send_no_wait(&mut self, req: DataRequestProto) {
        self.tx.as_ref().unwrap().send(req).unwrap();
    }

    /// Ends the sending side and returns what the stream ends with.
    pub async fn close(mut self) -> Result<Option<DataRequestProto>, tonic::Status> {
        self.tx.take();
        self.message_within_patience("stream ends in time").await
    }

    /// Waits for the next message or the end of the stream without sending.
    pub async fn next(&mut self) -> Result<Option<DataRequestProto>, tonic::Status> {
        self.message_within_patience("stream answers in time").await
    }

    /// The next message or the end of the stream; panics with `in_time` when
    /// nothing comes within [`PATIENCE`].
    async fn message_within_patience(
        &mut self,
        in_time: &str,
    ) -> Result<Option<DataRequestProto>, tonic::Status> {
        tokio::time::timeout(
            PATIENCE,
            self.responses
                .as_mut()
                .expect("responses not taken")
                .message(),
        )
        .await
        .expect(in_time)
    }
}

/// A request with id `id` carrying `docs`.
pub fn request(id: &str, docs: Vec<vchat_proto::DocumentProto>) -> DataRequestProto {
    DataRequestProto {
        header: Some(vchat_proto::HeaderProto {
            request_id: id.to_string(),
            exec_endpoint: Some("/".into()),
            ..Default::default()
        }),
        data: Some(DataContentProto {
            documents: Some(Documents::Docs(vchat_proto::DocumentArrayProto { docs })),
        }),
        ..Default::default()
    }
}

/// `(code, description)` of a response's status; code 0 is SUCCESS.
pub fn status(resp: &DataRequestProto) -> (i32, String) {
    let s = resp
        .header
        .as_ref()
        .and_then(|h| h.status.clone())
        .unwrap_or_default();
    (s.code, s.description)
}

/// The single tensor of a response.
pub fn response_tensor(resp: &DataRequestProto) -> Tensor {
    match resp.data.as_ref().and_then(|d| d.documents.as_ref()) {
        Some(Documents::Docs(da)) => {
            let doc = Document::from_proto(da.docs[0].clone()).unwrap();
            doc.tensor().expect("a tensor").clone()
        }
        other => panic!("no docs in response: {other:?}"),
    }
}
