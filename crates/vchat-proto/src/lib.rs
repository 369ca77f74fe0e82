//! Wire types of the Jina 3 gRPC protocol with docarray v1 documents.
//!
//! Generated from `proto/jina.proto` and `proto/docarray.proto` by the build script;
//! see `spec/wire-protocol.md` for what each field means. Every protobuf `bytes`
//! field is a [`bytes::Bytes`], so decoding from a `Bytes` buffer shares it rather
//! than copying frame pixels.

#![allow(clippy::all, missing_docs)]

/// `package docarray`: documents and n-dimensional arrays.
pub mod docarray {
    tonic::include_proto!("docarray");
}

/// `package jina`: requests, headers, statuses and the gRPC services.
pub mod jina {
    tonic::include_proto!("jina");
}

/// The encoded `FileDescriptorSet` of both proto files and their imports, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub use prost;
pub use prost_types;

pub use docarray::{DenseNdArrayProto, DocumentArrayProto, DocumentProto, NdArrayProto};
pub use jina::{DataRequestProto, EndpointsProto, HeaderProto, JinaInfoProto, StatusProto};
