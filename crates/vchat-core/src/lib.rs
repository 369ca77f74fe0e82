//! vchat-core: the data model and plug-in interfaces of vchat.
//!
//! - [`Request`] and [`Reply`]: what a Flow takes and answers, the same for every
//!   door; [`proto`] converts them from and to Jina's wire request.
//! - [`Document`], [`Tensor`], [`DocumentArray`]: docarray v1 documents, converted
//!   from and to the wire types of `vchat-proto` without copying pixel buffers. A
//!   frame is an [`ndarray`] view ([`Tensor::image_view`]), as a Jina executor's is
//!   a numpy array, and an executor may answer with an array
//!   ([`Tensor::from_array`]).
//! - [`Executor`]: the async trait every executor implements, with Jina's endpoint
//!   rules ([`serves`]) and per-executor parameters ([`parameters_for`]).
//! - [`Registry`]: `jtype` to constructor, from the YAML `with:` mapping.
//! - [`config`]: Flow and executor YAML with Jina's keys; errors name file, line and
//!   key.
//!
//! - [`jpeg`]: JPEG frames (`blob` + `image/jpeg`) from and to BGR pixels, and
//!   from and to [`yuv`] 4:2:0 pictures.
//! - [`budget`]: the process's count of bytes held in frames and mosaics, and its
//!   ceiling.
//!
//! This crate has no feature flags and runs no server.

pub mod budget;
pub mod config;
mod document;
mod error;
mod executor;
pub mod jpeg;
pub mod proto;
mod registry;
mod request;
pub mod rope;
mod tensor;
pub mod wire;
pub mod yuv;

pub use document::{Content, Document, DocumentArray, new_id, number_value, string_value};
pub use error::{ConfigError, Error, Origin};
pub use executor::{
    DEFAULT_ENDPOINT, Executor, RequestContext, STREAM_CLOSED_ENDPOINT, STREAM_PARAMETER,
    SourceContext, SourceStream, StreamId, parameters_for, serves,
};
pub use registry::Registry;
pub use request::{Outcome, ROOT_ENDPOINT, Reply, Request};
pub use rope::Rope;
pub use tensor::{DType, Tensor};

pub use async_trait::async_trait;
/// The array crate of [`Tensor::image_view`] and [`Tensor::from_array`], so that an
/// executor uses the same version.
pub use ndarray;
pub use prost_types::{ListValue, Struct, Value, value};

/// Longest user or room name, in bytes, on every door: a name is a map key, a
/// log field and a label, so it may not be a megabyte.
pub const MAX_NAME_BYTES: usize = 128;

/// HTTP/2 flow-control window of one stream, in bytes, on every vchat link. A raw
/// frame is hundreds of KiB and a mosaic several MiB: the default 64 KiB windows
/// would stall every message on window updates.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 flow-control window of one connection, in bytes.
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest HTTP/2 frame a vchat peer accepts, in bytes: the protocol's maximum.
/// A sender's large field (a frame's pixels, a mosaic) then travels as one DATA
/// frame, which the receiver decodes in place ([`wire`]); with the default 16 KiB
/// a several-MiB mosaic is written in hundreds of pieces, each a system call and a
/// wake-up of the reader, and gathered again at the other end.
pub const MAX_FRAME: u32 = (1 << 24) - 1;
