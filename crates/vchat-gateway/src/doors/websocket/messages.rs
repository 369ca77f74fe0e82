//! A browser frame as a [`Request`], and a [`Reply`] as the messages the page
//! reads (see the wire format in [`super`]).

use bytes::Bytes;
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;
use vchat_core::jpeg;
use vchat_core::value::Kind;
use vchat_core::{Content, Document, DocumentArray, Outcome, Reply, Request};

use super::query::JoinQuery;

/// Endpoint every browser frame is sent to, and the latency metric's label.
pub(crate) const ENDPOINT: &str = "/";
/// JPEG quality of a mosaic the Flow answered as raw pixels.
const JPEG_QUALITY: u8 = 80;

/// The request of one browser frame: the JPEG as a document's blob, tagged with
/// the connection's user and room, asking for a JPEG answer.
pub(crate) fn frame_request(jpeg: Bytes, who: &JoinQuery) -> Request {
    let mut doc = Document::new();
    doc.set_jpeg(jpeg);
    if let Some(u) = &who.user {
        doc.set_tag_str("user", u.clone());
    }
    if let Some(r) = &who.room {
        doc.set_tag_str("room", r.clone());
    }
    doc.set_tag_str("accept", "jpeg");
    Request::new(ENDPOINT, DocumentArray(vec![doc]))
}

/// The messages answering frame `seq` from the Flow's response, whether it
/// failed, and their size; `Err` with a description when the response carries
/// an unusable frame.
#[allow(clippy::type_complexity)]
pub(crate) fn reply_messages(
    reply: Reply,
    seq: u64,
    server_ms: f64,
) -> (Result<Vec<Message>, String>, bool, usize) {
    match &reply.outcome {
        Outcome::Error(e) => {
            let (out, n) = text(json!({"type": "error", "seq": seq, "error": e.to_string()}));
            return (Ok(out), true, n);
        }
        Outcome::Skipped(_) => {
            let (out, n) = text(json!({"type": "skipped", "seq": seq}));
            return (Ok(out), false, n);
        }
        Outcome::Ok => {}
    }
    let Some(doc) = reply.docs.and_then(|d| d.0.into_iter().next()) else {
        let (out, n) = text(json!({"type": "ack", "seq": seq, "tags": {}, "server_ms": server_ms}));
        return (Ok(out), false, n);
    };
    let tags = Json::Object(
        doc.tags
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    );
    let participants = tags.get("participants").cloned().unwrap_or(Json::Null);
    let image = match &doc.content {
        Some(Content::Blob(b)) if doc.jpeg().is_some() => Some(Ok(b.clone())),
        Some(Content::Tensor(t)) => Some(
            t.frame_dims()
                .map_err(|m| format!("the Flow answered a tensor that is no frame: {m}"))
                .and_then(|(h, w)| {
                    jpeg::encode_bgr(t.data(), h, w, JPEG_QUALITY).map_err(|e| e.to_string())
                }),
        ),
        _ => None,
    };
    match image {
        None => {
            let (out, n) =
                text(json!({"type": "ack", "seq": seq, "tags": tags, "server_ms": server_ms}));
            (Ok(out), false, n)
        }
        Some(Err(e)) => (Err(e), true, 0),
        Some(Ok(jpeg)) => {
            let (width, height) = jpeg_size(&jpeg).unwrap_or((0, 0));
            let m = json!({
                "type": "mosaic",
                "seq": seq,
                "width": width,
                "height": height,
                "participants": participants,
                "tags": tags,
                "server_ms": server_ms,
            })
            .to_string();
            let n = m.len() + jpeg.len();
            (Ok(vec![Message::text(m), Message::Binary(jpeg)]), false, n)
        }
    }
}

/// One text message, and its size.
pub(crate) fn text(m: Json) -> (Vec<Message>, usize) {
    let m = m.to_string();
    let n = m.len();
    (vec![Message::text(m)], n)
}

/// A protobuf `Value` as JSON.
fn to_json(v: &vchat_core::Value) -> Json {
    match v.kind.as_ref() {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(to_json).collect()),
    }
}

/// `(width, height)` from a JPEG's frame header (SOFn), without decoding it.
pub fn jpeg_size(data: &[u8]) -> Option<(u16, u16)> {
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return None;
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        let is_sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let s = data.get(i + 5..i + 9)?;
            return Some((
                u16::from_be_bytes([s[2], s[3]]),
                u16::from_be_bytes([s[0], s[1]]),
            ));
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_size_reads_the_frame_header() {
        let px = vec![128u8; 24 * 40 * 3];
        let j = jpeg::encode_bgr(&px, 24, 40, 80).unwrap();
        assert_eq!(jpeg_size(&j), Some((40, 24)));
        assert_eq!(jpeg_size(b"\xff\xd8\xff"), None);
        assert_eq!(jpeg_size(b"not a jpeg"), None);
    }

    #[test]
    fn a_raw_mosaic_is_sent_as_jpeg_with_its_size() {
        let mut doc = Document::with_tensor(
            vchat_core::Tensor::image(8, 16, 3, Bytes::from(vec![50u8; 8 * 16 * 3])).unwrap(),
        );
        doc.set_tag("participants", vchat_core::string_value("ann"));
        let resp = Reply::ok(DocumentArray(vec![doc]));
        let (out, failed, _) = reply_messages(resp, 7, 1.0);
        let out = out.unwrap();
        assert!(!failed);
        assert_eq!(out.len(), 2);
        let meta: Json = serde_json::from_str(out[0].to_text().unwrap()).unwrap();
        assert_eq!(meta["type"], "mosaic");
        assert_eq!(meta["seq"], 7);
        assert_eq!(
            (meta["width"].clone(), meta["height"].clone()),
            (json!(16), json!(8))
        );
        assert_eq!(meta["participants"], "ann");
        assert!(matches!(&out[1], Message::Binary(b) if b.starts_with(&[0xFF, 0xD8])));
    }
}
