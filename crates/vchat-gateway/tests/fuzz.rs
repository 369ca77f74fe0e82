//! Fuzzing of what a peer hands the gateway's doors: `Call` requests
//! ([`codec::decode_request`]) whole or over the size limit, and the WebSocket
//! door's query string, names, origins and JPEG frame headers ([`web`]).
//!
//! Each property feeds arbitrary input and structure-aware hostile input, and
//! asserts no panic and either a value that keeps its promises or a clear error.
//! Each runs [`cases`] cases by default, or `PROPTEST_CASES` for longer runs.
//! Inputs that once broke a decoder are the `regression_*` tests.

use std::sync::Arc;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use prost::Message as _;
use vchat_core::wire::MessageReader;
use vchat_core::{DType, DocumentArray, Struct, Value, value::Kind};
use vchat_gateway::doors::grpc::codec::{Inbound, decode_request};
use vchat_gateway::doors::websocket::{
    jpeg_size, origin_allowed, parse_join_query, percent_decode,
};
use vchat_gateway::{
    CancellationToken, FlowRuntime, GrpcDoor, Sessions, StreamLimits, metrics::Metrics,
};
use vchat_proto::DataRequestProto;
use vchat_proto::docarray::{
    DenseNdArrayProto, DocumentArrayProto, DocumentProto, NdArrayProto, document_proto,
    nd_array_proto,
};
use vchat_proto::jina::data_request_proto::DataContentProto;
use vchat_proto::jina::data_request_proto::data_content_proto::Documents;
use vchat_proto::jina::{HeaderProto, RouteProto};

/// `default` cases, unless `PROPTEST_CASES` asks for another number.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Call requests

fn dim() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..5, 1 => Just(u32::MAX), 1 => Just(65535), 1 => any::<u32>()]
}

fn hostile_doc() -> impl Strategy<Value = DocumentProto> {
    let dtype = prop::sample::select(vec!["|u1", "uint8", "<f4", ">f4", "<U4", "", "|u1\0"]);
    let tensor = (dtype, vec(dim(), 0..5), 0usize..64, any::<bool>()).prop_map(
        |(dtype, shape, other, matching)| {
            let size = DType::parse(dtype).map_or(1, DType::itemsize);
            let need = shape
                .iter()
                .try_fold(size, |a, &d| a.checked_mul(d as usize))
                .filter(|&n| n <= 4096);
            let len = match (matching, need) {
                (true, Some(n)) => n,
                _ => other,
            };
            document_proto::Content::Tensor(NdArrayProto {
                content: Some(nd_array_proto::Content::Dense(DenseNdArrayProto {
                    buffer: Bytes::from(vec![7u8; len]),
                    shape,
                    dtype: dtype.into(),
                })),
                ..Default::default()
            })
        },
    );
    let content = prop_oneof![
        3 => tensor.prop_map(Some),
        1 => vec(any::<u8>(), 0..40).prop_map(|b| Some(document_proto::Content::Blob(b.into()))),
        1 => Just(None),
    ];
    let tag = prop_oneof![
        "\\PC{0,200}".prop_map(Kind::StringValue),
        any::<f64>().prop_map(Kind::NumberValue),
    ];
    (
        "\\PC{0,40}",
        content,
        prop::collection::btree_map(
            prop::sample::select(vec!["user", "room", "accept", "x"]).prop_map(String::from),
            tag.prop_map(|k| Value { kind: Some(k) }),
            0..3,
        ),
    )
        .prop_map(|(id, content, fields)| DocumentProto {
            id,
            content,
            tags: Some(Struct { fields }),
            mime_type: "image/jpeg".into(),
            ..Default::default()
        })
}

/// A `Call` request with hostile values in every part the gateway reads.
fn hostile_request() -> impl Strategy<Value = DataRequestProto> {
    let header = (
        "\\PC{0,64}",
        prop::option::of(prop_oneof![
            Just("/".to_string()),
            Just("_jina_stream_closed_".to_string()),
            "\\PC{0,32}",
        ]),
        prop::option::of("\\PC{0,16}"),
        any::<u32>(),
    )
        .prop_map(
            |(request_id, exec_endpoint, target_executor, _)| HeaderProto {
                request_id,
                exec_endpoint,
                target_executor,
                ..Default::default()
            },
        );
    let params = prop::option::of(
        prop::collection::btree_map(
            prop_oneof![
                Just("__results__".to_string()),
                Just("__skipped__".to_string()),
                "\\PC{0,12}"
            ],
            prop_oneof![
                any::<f64>().prop_map(|n| Value {
                    kind: Some(Kind::NumberValue(n))
                }),
                "\\PC{0,20}".prop_map(|s| Value {
                    kind: Some(Kind::StringValue(s))
                }),
            ],
            0..4,
        )
        .prop_map(|fields| Struct { fields }),
    );
    let data = prop_oneof![
        4 => vec(hostile_doc(), 0..4).prop_map(|docs| Some(Documents::Docs(DocumentArrayProto { docs }))),
        1 => vec(any::<u8>(), 0..32).prop_map(|b| Some(Documents::DocsBytes(b.into()))),
        1 => Just(None),
    ];
    (
        prop::option::of(header),
        params,
        vec("\\PC{0,12}", 0..3),
        data,
    )
        .prop_map(|(header, parameters, routes, documents)| DataRequestProto {
            header,
            parameters,
            routes: routes
                .into_iter()
                .map(|executor| RouteProto {
                    executor,
                    ..Default::default()
                })
                .collect(),
            data: Some(DataContentProto { documents }),
        })
}

/// What the gateway must make of `bytes` under `limit`.
fn check_decoded(wire: &[u8], limit: usize) -> Result<Option<DataRequestProto>, TestCaseError> {
    match decode_request(Bytes::copy_from_slice(wire), limit) {
        Ok(Inbound::Request(req)) => {
            prop_assert!(wire.len() <= limit);
            if let Some(Documents::Docs(da)) = req.data.clone().and_then(|d| d.documents) {
                // As the Flow reads them: valid documents or a BadRequest.
                if let Ok(docs) = DocumentArray::from_proto(da) {
                    for d in docs.iter() {
                        if let Some(t) = d.tensor() {
                            let need = t
                                .shape()
                                .iter()
                                .try_fold(t.dtype().itemsize(), |a, &x| a.checked_mul(x));
                            prop_assert_eq!(need, Some(t.data().len()));
                        }
                    }
                }
            }
            Ok(Some(req))
        }
        Ok(Inbound::Oversized { size, .. }) => {
            prop_assert!(size > limit && size == wire.len());
            Ok(None)
        }
        Err(status) => {
            prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
            prop_assert!(
                status.message().contains("undecodable request"),
                "{}",
                status.message()
            );
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(cases(4000))]

    /// Arbitrary bytes as a `Call` request, under and over the limit.
    #[test]
    fn requests_of_arbitrary_bytes(
        data in vec(any::<u8>(), 0..1200),
        limit in prop_oneof![0usize..1200, Just(usize::MAX)],
    ) {
        check_decoded(&data, limit)?;
    }

    /// Valid protobuf with hostile values: decoded as sent when within the limit;
    /// over it, the header alone, so that the ERROR names the request.
    #[test]
    fn hostile_requests_decode_or_keep_their_header(
        req in hostile_request(),
        limit in prop_oneof![0usize..2000, Just(usize::MAX)],
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let wire = req.encode_to_vec();
        match decode_request(Bytes::from(wire.clone()), limit).unwrap() {
            Inbound::Request(got) => {
                prop_assert!(wire.len() <= limit);
                prop_assert_eq!(got.encode_to_vec(), wire.clone());
            }
            Inbound::Oversized { header, size } => {
                prop_assert!(size > limit && size == wire.len());
                prop_assert_eq!(header, req.header.clone().unwrap_or_default());
            }
        }
        check_decoded(&wire, limit)?;
        // The same request as it arrives: framed, in pieces, decoded in place.
        let mut framed = vec![0];
        framed.extend_from_slice(&(wire.len() as u32).to_be_bytes());
        framed.extend_from_slice(&wire);
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (framed.len() + 1)).chain([0, framed.len()]).collect();
        at.sort_unstable();
        at.dedup();
        let mut reader = MessageReader::new(usize::MAX);
        for w in at.windows(2) {
            reader.push(Bytes::copy_from_slice(&framed[w[0]..w[1]]));
        }
        let message = reader.next_message().unwrap().unwrap();
        match decode_request(message, limit).unwrap() {
            Inbound::Request(got) => prop_assert_eq!(got.encode_to_vec(), wire),
            Inbound::Oversized { header, .. } => prop_assert_eq!(header, req.header.unwrap_or_default()),
        }
    }

    /// Hostile requests with bytes changed: whatever prost makes of them.
    #[test]
    fn mutated_requests(
        req in hostile_request(),
        edits in vec((any::<usize>(), any::<u8>()), 1..6),
        limit in prop_oneof![0usize..2000, Just(usize::MAX)],
    ) {
        let mut wire = req.encode_to_vec();
        if !wire.is_empty() {
            for (at, byte) in edits {
                let n = wire.len();
                wire[at % n] = byte;
            }
        }
        check_decoded(&wire, limit)?;
    }
}

// ---------------------------------------------------------------------------
// The WebSocket door

/// `s` percent-encoded as a browser's `URLSearchParams` does, with some bytes
/// left as they are.
fn form_encode(s: &str, keep: &[bool]) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b"-._*".contains(&b);
        if b == b' ' {
            out.push('+');
        } else if plain
            || (keep.get(i).copied().unwrap_or(false)
                && b.is_ascii_graphic()
                && !b"%&=+".contains(&b))
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` decoding as the URL standard says: `%`
/// and two hex digits is that byte, `+` is a space, anything else is itself.
fn reference_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn query_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,300}",
        "[%+&=a-fA-F0-9 ]{0,60}",
        vec(
            (
                prop::sample::select(vec!["user", "room", "x", "", "user%3D", "USER"]),
                "\\PC{0,150}",
                vec(any::<bool>(), 0..150),
            ),
            0..4,
        )
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v, keep)| format!("{k}={}", form_encode(&v, &keep)))
                .collect::<Vec<_>>()
                .join("&")
        }),
    ]
}

proptest! {
    #![proptest_config(cases(5000))]

    /// `percent_decode` is form decoding: `%XX` with two hex digits, `+`, and
    /// every other byte as it is.
    #[test]
    fn percent_decoding_follows_the_standard(s in prop_oneof!["\\PC{0,80}", "[%+a-fA-F0-9xz\\-]{0,30}"]) {
        prop_assert_eq!(percent_decode(&s), reference_decode(&s));
    }

    /// What a browser encodes decodes back.
    #[test]
    fn percent_decoding_undoes_form_encoding(s in "\\PC{0,80}", keep in vec(any::<bool>(), 0..80)) {
        prop_assert_eq!(percent_decode(&form_encode(&s, &keep)), Some(s));
    }

    /// `parse_who` of any query: names of at most 128 bytes, trimmed and not
    /// empty, exactly the last `user` and `room` given; or an error naming the key.
    #[test]
    fn query_strings_give_names_or_a_clear_error(q in query_text()) {
        let mut want_user = None;
        let mut want_room = None;
        let mut want_err = None;
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match reference_decode(v) {
                None => {
                    want_err = Some(k);
                    break;
                }
                Some(v) if v.len() > 128 => {
                    want_err = Some(k);
                    break;
                }
                Some(v) => {
                    let v = v.trim().to_string();
                    match k {
                        "user" if !v.is_empty() => want_user = Some(v),
                        "room" if !v.is_empty() => want_room = Some(v),
                        _ => {}
                    }
                }
            }
        }
        match parse_join_query(&q) {
            Ok(who) => {
                prop_assert!(want_err.is_none(), "accepted a bad `{}`", want_err.unwrap_or_default());
                prop_assert_eq!(&who.user, &want_user);
                prop_assert_eq!(&who.room, &want_room);
                for name in [&who.user, &who.room].into_iter().flatten() {
                    prop_assert!(name.len() <= 128 && !name.is_empty() && name.trim() == name);
                }
            }
            Err(m) => {
                let k = want_err.expect("refused a good query");
                prop_assert!(m.contains(&format!("`{k}`")), "{m}");
            }
        }
    }

    /// `origin_allowed` of any header values: no origin (not a browser) is
    /// allowed, a page of the server's own origin is, `*` allows all, and nothing
    /// panics.
    #[test]
    fn origins_of_any_text(
        origin in prop::option::of("\\PC{0,40}"),
        host in prop::option::of("\\PC{0,30}"),
        scheme in prop::sample::select(vec!["http", "https", ""]),
        allowed in vec(prop_oneof![Just("*".to_string()), "\\PC{0,30}"], 0..3),
    ) {
        let ok = origin_allowed(origin.as_deref(), host.as_deref(), scheme, &allowed);
        if origin.is_none() || allowed.iter().any(|a| a == "*") {
            prop_assert!(ok);
        }
        if let Some(h) = &host
            && !h.is_empty()
            && !h.contains('/')
            && h.trim() == h
        {
            let own = format!("{scheme}://{h}");
            prop_assert!(origin_allowed(Some(&own), Some(h), scheme, &[]), "{}", own);
        }
    }
}

/// The frame header of a real JPEG, and of hostile ones.
fn sample_jpeg() -> Vec<u8> {
    let px: Vec<u8> = (0..16 * 24 * 3).map(|i| (i * 7 % 251) as u8).collect();
    vchat_core::jpeg::encode_bgr(&px, 16, 24, 75)
        .unwrap()
        .to_vec()
}

proptest! {
    #![proptest_config(cases(5000))]

    /// `jpeg_size` of any bytes: no panic, and on a real JPEG whose header was
    /// changed, the size the header says.
    #[test]
    fn jpeg_size_of_any_bytes(data in vec(any::<u8>(), 0..400), h in any::<u16>(), w in any::<u16>(), cut in any::<usize>()) {
        let _ = jpeg_size(&data);
        let mut with_soi = vec![0xFF, 0xD8];
        with_soi.extend_from_slice(&data);
        let _ = jpeg_size(&with_soi);
        let mut j = sample_jpeg();
        let i = j.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        j[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
        j[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
        prop_assert_eq!(jpeg_size(&j), Some((w, h)));
        let n = cut % (j.len() + 1);
        let got = jpeg_size(&j[..n]);
        prop_assert!(got.is_none() || got == Some((w, h)));
    }
}

// ---------------------------------------------------------------------------
// Regressions: inputs the properties above once failed on

/// `%+a` was read as byte 0x0a: `from_str_radix` takes a sign before the hex
/// digits. It is `%`, a space (`+`) and `a`.
#[test]
fn regression_percent_sign_then_plus() {
    assert_eq!(percent_decode("%+a").as_deref(), Some("% a"));
    assert_eq!(percent_decode("%+0%-1").as_deref(), Some("% 0%-1"));
    let who = parse_join_query("user=%+a&room=%+7e").unwrap();
    assert_eq!(who.user.as_deref(), Some("% a"));
    assert_eq!(who.room.as_deref(), Some("% 7e"));
}

/// `max_streams` past what a tokio semaphore counts (`usize::MAX`, from the
/// Flow YAML or `--max-streams`) panicked when the gateway started, on the gRPC
/// door and on the WebSocket door; it is served as the most a semaphore counts.
#[tokio::test]
async fn regression_huge_max_streams() {
    let limits = StreamLimits {
        max_streams: usize::MAX,
        ..StreamLimits::default()
    };
    let sessions = Sessions::new(
        Arc::new(FlowRuntime::new(Vec::new())),
        limits,
        Arc::new(Metrics::default()),
        vchat_gateway::session::Access::open(),
    );
    let _ = GrpcDoor::new(&sessions, CancellationToken::new());
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let served = vchat_gateway::Gateway::new(FlowRuntime::new(Vec::new()), limits)
        .web(web, vchat_gateway::WebOptions::default())
        .serve(grpc, shutdown);
    tokio::time::timeout(std::time::Duration::from_secs(30), served)
        .await
        .expect("a cancelled gateway returns")
        .unwrap();
}
