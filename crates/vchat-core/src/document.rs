//! Documents: the unit a request carries. A video frame is one document with a
//! tensor and the tags `user` (and optionally `room`).

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use prost_types::{Struct, Value, value::Kind};
use vchat_proto::docarray::{DocumentArrayProto, DocumentProto, document_proto};

use crate::{Error, Tensor};

/// What a document holds: docarray's `oneof content`.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// An n-dimensional array (a raw frame).
    Tensor(Tensor),
    /// Encoded bytes, described by `mime_type` (e.g. a JPEG frame).
    Blob(Bytes),
    /// Text.
    Text(String),
}

/// A docarray v1 document.
///
/// The fields vchat works with are plain fields; every other field of the wire
/// message (chunks, matches, embedding, scores, ...) is kept as received and sent
/// back unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// Document id (32 hex chars in docarray).
    pub id: String,
    /// Tensor, blob or text.
    pub content: Option<Content>,
    /// Free-form tags; numbers are doubles, as in `google.protobuf.Struct`.
    pub tags: BTreeMap<String, Value>,
    /// MIME type of a blob.
    pub mime_type: String,
    rest: DocumentProto,
}

impl Document {
    /// An empty document with a fresh random id.
    pub fn new() -> Self {
        Document {
            id: new_id(),
            ..Default::default()
        }
    }

    /// A document holding `tensor`.
    pub fn with_tensor(tensor: Tensor) -> Self {
        Document {
            content: Some(Content::Tensor(tensor)),
            ..Document::new()
        }
    }

    /// The tensor, if the content is one.
    pub fn tensor(&self) -> Option<&Tensor> {
        match &self.content {
            Some(Content::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// Replaces the content with `tensor`.
    pub fn set_tensor(&mut self, tensor: Tensor) {
        self.content = Some(Content::Tensor(tensor));
    }

    /// Makes the content the JPEG image `data` (a blob of type `image/jpeg`).
    pub fn set_jpeg(&mut self, data: Bytes) {
        self.content = Some(Content::Blob(data));
        self.mime_type = crate::jpeg::MIME_JPEG.to_string();
    }

    /// The JPEG image, when the content is one (a blob of type `image/jpeg`).
    pub fn jpeg(&self) -> Option<&Bytes> {
        match &self.content {
            Some(Content::Blob(b))
                if self.mime_type.eq_ignore_ascii_case(crate::jpeg::MIME_JPEG) =>
            {
                Some(b)
            }
            _ => None,
        }
    }

    /// The tag `key` when it is a string.
    pub fn tag_str(&self, key: &str) -> Option<&str> {
        match self.tags.get(key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// Sets the tag `key` to a string.
    pub fn set_tag_str(&mut self, key: &str, value: impl Into<String>) {
        self.tags.insert(key.to_string(), string_value(value));
    }

    /// Sets the tag `key` to any Struct value.
    pub fn set_tag(&mut self, key: &str, value: Value) {
        self.tags.insert(key.to_string(), value);
    }

    /// Reads a wire document, validating its tensor.
    pub fn from_proto(mut proto: DocumentProto) -> Result<Self, Error> {
        let content = match proto.content.take() {
            None => None,
            Some(document_proto::Content::Blob(b)) => Some(Content::Blob(b)),
            Some(document_proto::Content::Text(t)) => Some(Content::Text(t)),
            Some(document_proto::Content::Tensor(t)) => Some(Content::Tensor(
                Tensor::from_proto(t).map_err(|e| match e {
                    Error::BadRequest(m) => {
                        Error::BadRequest(format!("document {:?}: {m}", proto.id))
                    }
                    other => other,
                })?,
            )),
        };
        Ok(Document {
            id: std::mem::take(&mut proto.id),
            content,
            tags: proto.tags.take().map(|s| s.fields).unwrap_or_default(),
            mime_type: std::mem::take(&mut proto.mime_type),
            rest: proto,
        })
    }

    /// The wire document.
    pub fn into_proto(self) -> DocumentProto {
        let mut proto = self.rest;
        proto.id = self.id;
        proto.content = self.content.map(|c| match c {
            Content::Tensor(t) => document_proto::Content::Tensor(t.into_proto()),
            Content::Blob(b) => document_proto::Content::Blob(b),
            Content::Text(t) => document_proto::Content::Text(t),
        });
        proto.tags = if self.tags.is_empty() {
            None
        } else {
            Some(Struct { fields: self.tags })
        };
        proto.mime_type = self.mime_type;
        proto
    }
}

/// A string `google.protobuf.Value`.
pub fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// A number `google.protobuf.Value`.
pub fn number_value(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

/// 32 random hex characters, as docarray and Jina make ids.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    // A per-process random seed (time and address) mixed with a counter through
    // splitmix64: unique within a process and unlikely to collide across processes.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (&COUNTER as *const _ as u64).rotate_left(32) ^ u64::from(std::process::id())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = splitmix64(seed ^ n);
    let b = splitmix64(a ^ n.rotate_left(17));
    format!("{a:016x}{b:016x}")
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The documents of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentArray(pub Vec<Document>);

impl DocumentArray {
    /// An empty array.
    pub fn new() -> Self {
        DocumentArray(Vec::new())
    }

    /// Reads a wire array, validating every document.
    pub fn from_proto(proto: DocumentArrayProto) -> Result<Self, Error> {
        proto
            .docs
            .into_iter()
            .map(Document::from_proto)
            .collect::<Result<Vec<_>, _>>()
            .map(DocumentArray)
    }

    /// The wire array.
    pub fn into_proto(self) -> DocumentArrayProto {
        DocumentArrayProto {
            docs: self.0.into_iter().map(Document::into_proto).collect(),
        }
    }
}

impl Deref for DocumentArray {
    type Target = Vec<Document>;
    fn deref(&self) -> &Vec<Document> {
        &self.0
    }
}

impl DerefMut for DocumentArray {
    fn deref_mut(&mut self) -> &mut Vec<Document> {
        &mut self.0
    }
}

impl From<Vec<Document>> for DocumentArray {
    fn from(v: Vec<Document>) -> Self {
        DocumentArray(v)
    }
}

impl IntoIterator for DocumentArray {
    type Item = Document;
    type IntoIter = std::vec::IntoIter<Document>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_fields_it_does_not_model() {
        let proto = DocumentProto {
            id: "d1".into(),
            weight: 0.5,
            uri: "file://x".into(),
            chunks: vec![DocumentProto {
                id: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut doc = Document::from_proto(proto.clone()).unwrap();
        doc.set_tag_str("user", "alice");
        let back = doc.into_proto();
        assert_eq!(back.weight, 0.5);
        assert_eq!(back.uri, "file://x");
        assert_eq!(back.chunks, proto.chunks);
        assert_eq!(back.tags.unwrap().fields["user"], string_value("alice"));
    }

    #[test]
    fn bad_tensor_names_the_document() {
        let t = Tensor::image(1, 1, 3, Bytes::from_static(&[1, 2, 3])).unwrap();
        let mut p = t.into_proto();
        if let Some(vchat_proto::docarray::nd_array_proto::Content::Dense(d)) = &mut p.content {
            d.buffer = Bytes::from_static(&[1, 2]);
        }
        let proto = DocumentProto {
            id: "frame7".into(),
            content: Some(document_proto::Content::Tensor(p)),
            ..Default::default()
        };
        let err = Document::from_proto(proto).unwrap_err().to_string();
        assert!(err.contains("frame7") && err.contains("2 bytes"), "{err}");
    }

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
