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
//! The `vchat-client` binary is the chat client built on this: a
//! [`source::FrameSource`] read on its own thread by [`capture::Capture`], which
//! hands the newest frame over through a [`latest::Latest`] slot, and
//! [`sink::MosaicSink`]s for what comes back.
//!
//! This crate has no feature flags and no OpenCV: the webcam, the window,
//! recording and the display check are in the `vchat-client-app` package, which
//! builds the `vchat-client` binary.

pub mod capture;
pub mod latest;
pub mod sink;
pub mod source;

mod client;
mod error;
mod options;
mod post;
mod response;

pub use client::Client;
pub use error::ClientError;
pub use options::{DEFAULT_PREFETCH, DEFAULT_REQUEST_SIZE, PostOptions, PostSummary};
pub use response::Response;
pub use vchat_core::{Document, Tensor};
