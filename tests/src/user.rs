//! A chat user that streams through the client library, as applications do.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vchat_client::{Client, PostOptions, PostSummary, Response};
use vchat_core::Document;

use crate::PATIENCE;

/// A chat user driven by the test through the client library: each
/// [`send`](Self::send) posts one frame (request_size 1), each response arrives
/// through on_done / on_error.
pub struct User {
    tx: Option<mpsc::Sender<Document>>,
    responses: mpsc::UnboundedReceiver<Response>,
    task: tokio::task::JoinHandle<Result<PostSummary, vchat_client::ClientError>>,
}

impl User {
    /// Opens a stream to `addr`.
    pub fn connect(addr: &str) -> User {
        User::with_client(Client::new(addr).unwrap())
    }

    /// Opens a stream with `client` (e.g. one for grpcs:// with a private CA).
    pub fn with_client(client: Client) -> User {
        User::with_options(client, PostOptions::new())
    }

    /// Opens a stream to `addr` with an access token.
    pub fn with_token(addr: &str, token: &str) -> User {
        User::with_options(Client::new(addr).unwrap(), PostOptions::new().token(token))
    }

    fn with_options(client: Client, options: PostOptions) -> User {
        let (tx, rx) = mpsc::channel(4);
        let (resp_tx, responses) = mpsc::unbounded_channel();
        let err_tx = resp_tx.clone();
        let options = options
            .request_size(1)
            .on_done(move |r| {
                let _ = resp_tx.send(r.clone());
            })
            .on_error(move |r| {
                let _ = err_tx.send(r.clone());
            });
        let task = tokio::spawn(client.post("/", ReceiverStream::new(rx), options));
        User {
            tx: Some(tx),
            responses,
            task,
        }
    }

    /// Sends `doc` and returns its response.
    pub async fn send(&mut self, doc: Document) -> Response {
        self.tx
            .as_ref()
            .expect("stream open")
            .send(doc)
            .await
            .expect("stream open");
        tokio::time::timeout(PATIENCE, self.responses.recv())
            .await
            .expect("response in time")
            .expect("stream open")
    }

    /// Ends the stream and waits until every response arrived.
    pub async fn leave(mut self) -> PostSummary {
        self.tx.take();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("stream ends in time")
            .unwrap()
            .expect("stream ends cleanly")
    }
}
