//! Access control through the real `vchat flow`: access tokens at both doors,
//! identities and rooms from the token, viewers and send-only grants, one
//! stream per user, and the Jina Python client's `metadata=`.

use std::path::PathBuf;
use std::process::Command;

use tokio_tungstenite::tungstenite;
use vchat_auth::{Claims, TokenSpec, VideoGrant, mint, sign, unix_now};
use vchat_e2e::*;

const SECRET: &str = "auth-test-secret-0123456789abcdef0123456789";
const ALICE: [u8; 3] = [200, 40, 30];
const ALICE2: [u8; 3] = [30, 40, 200];
const BOB: [u8; 3] = [30, 200, 40];

/// A Flow with access control (key `main`, its secret from the environment),
/// gRPC and WebSocket, names not drawn on tiles.
fn auth_flow() -> Flow {
    let dir = scratch("auth");
    let executor = repo_root().join("executor/config.yml");
    let yaml = format!(
        "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  auth:\n    keys:\n      main: ${{VCHAT_TEST_AUTH_SECRET}}\nexecutors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n      labels: false\n",
        executor.display()
    );
    let path: PathBuf = write_file(&dir, "flow.yml", &yaml);
    Flow::start_with_env(
        &path,
        &["--http-port", "0"],
        &[("VCHAT_TEST_AUTH_SECRET", SECRET)],
    )
}

fn token(identity: &str, room: &str) -> String {
    mint("main", SECRET.as_bytes(), &TokenSpec::new(identity, room)).unwrap()
}

fn claims(identity: &str, room: &str) -> Claims {
    let now = unix_now();
    Claims {
        sub: identity.into(),
        name: None,
        iss: "main".into(),
        exp: now + 3600,
        nbf: now,
        video: VideoGrant {
            room: room.into(),
            room_join: true,
            can_publish: None,
            can_subscribe: None,
        },
    }
}

/// Frames without user or room: the gateway takes both from the token.
fn anonymous(color: [u8; 3]) -> vchat_core::Document {
    let mut d = frame("x", color, 20, 30);
    d.tags.remove("user");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_over_grpc_has_its_status_and_reason() {
    let flow = auth_flow();
    let expired = {
        let mut c = claims("alice", "standup");
        c.exp = unix_now() - 3600;
        c.nbf = unix_now() - 7200;
        sign(SECRET.as_bytes(), &c).unwrap()
    };
    let early = {
        let mut c = claims("alice", "standup");
        c.nbf = unix_now() + 3600;
        c.exp = unix_now() + 7200;
        sign(SECRET.as_bytes(), &c).unwrap()
    };
    let no_join = {
        let mut c = claims("alice", "standup");
        c.video.room_join = false;
        sign(SECRET.as_bytes(), &c).unwrap()
    };
    let other_key = mint(
        "old",
        SECRET.as_bytes(),
        &TokenSpec::new("alice", "standup"),
    )
    .unwrap();
    let forged = mint(
        "main",
        b"not-the-secret-not-the-secret-not-the-secret",
        &TokenSpec::new("alice", "standup"),
    )
    .unwrap();
    let cases: [(Option<&str>, tonic::Code, &str); 6] = [
        (
            None,
            tonic::Code::Unauthenticated,
            "an access token is required",
        ),
        (
            Some(&forged),
            tonic::Code::Unauthenticated,
            "signature is not valid",
        ),
        (
            Some(&other_key),
            tonic::Code::Unauthenticated,
            "key \"old\", which this server does not know",
        ),
        (Some(&expired), tonic::Code::Unauthenticated, "has expired"),
        (Some(&early), tonic::Code::Unauthenticated, "not valid yet"),
        (
            Some(&no_join),
            tonic::Code::PermissionDenied,
            "does not allow joining a room",
        ),
    ];
    for (t, code, reason) in cases {
        let refused = match RawStream::try_connect_with(flow.addr(), t).await {
            Err(status) => status,
            Ok(mut s) => match s.next().await {
                Err(status) => status,
                other => panic!("{reason}: the stream must be refused, got {other:?}"),
            },
        };
        assert_eq!(refused.code(), code, "{reason}: {refused:?}");
        assert!(refused.message().contains(reason), "{}", refused.message());
    }

    // A valid token: the user and room are the token's; a request that names
    // someone else, or another room, is refused and the stream goes on.
    let t = token("alice", "standup");
    let mut s = RawStream::try_connect_with(flow.addr(), Some(&t))
        .await
        .unwrap();
    let r = s
        .send(request(
            "1",
            vec![frame("mallory", ALICE, 20, 30).into_proto()],
        ))
        .await;
    let (code, text) = status(&r);
    assert_ne!(code, 0);
    assert!(
        text.contains("tags.user is \"mallory\"") && text.contains("\"alice\""),
        "{text}"
    );
    let mut elsewhere = frame("alice", ALICE, 20, 30);
    elsewhere.set_tag_str("room", "board");
    let r = s.send(request("2", vec![elsewhere.into_proto()])).await;
    let (code, text) = status(&r);
    assert!(
        code != 0 && text.contains("tags.room is \"board\""),
        "{text}"
    );
    let r = s
        .send(request("3", vec![anonymous(ALICE).into_proto()]))
        .await;
    assert_eq!(status(&r).0, 0, "{:?}", status(&r));
    let doc = vchat_core::Document::from_proto(match r.data.unwrap().documents.unwrap() {
        vchat_proto::jina::data_request_proto::data_content_proto::Documents::Docs(d) => {
            d.docs.into_iter().next().unwrap()
        }
        _ => panic!("docs"),
    })
    .unwrap();
    assert_eq!(participants(&doc), ["alice"]);
    assert_eq!(doc.tag_str("room"), Some("standup"));
    // Stdout says nothing of it, but the log says access control is on.
    assert!(flow.stderr().contains("Access control on"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_over_the_websocket_has_its_code_and_reason() {
    let flow = auth_flow();
    let base = format!("{}/ws", flow.web_url().replacen("http", "ws", 1));
    let t = token("alice", "standup");
    let cases = [
        (base.clone(), 401, "an access token is required"),
        (format!("{base}?access_token=nonsense"), 401, "malformed"),
        (
            format!("{base}?access_token={t}&room=board"),
            403,
            "grants room \"standup\", not room \"board\"",
        ),
        (
            format!("{base}?access_token={t}&user=bob"),
            403,
            "is for \"alice\", not \"bob\"",
        ),
    ];
    for (url, code, reason) in cases {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), code, "{url}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                assert!(body.contains(reason), "{url}: {body}");
            }
            other => panic!("{url} must be refused, got {:?}", other.map(|_| ())),
        }
    }
    // With the token, the socket is alice's in the token's room.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{base}?access_token={t}"))
        .await
        .unwrap();
    use futures::StreamExt;
    let hello = match ws.next().await.unwrap().unwrap() {
        tungstenite::Message::Text(t) => serde_json::from_str::<serde_json::Value>(&t).unwrap(),
        other => panic!("hello first, got {other:?}"),
    };
    assert_eq!(hello["user"], "alice");
    assert_eq!(hello["room"], "standup");
}

/// Sends frames on `user` until its response lists `want`.
async fn until_participants(
    user: &mut User,
    color: [u8; 3],
    want: &[&str],
) -> vchat_core::Document {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let r = user.send(anonymous(color)).await;
        assert!(!r.is_error(), "{:?}", r.error());
        let doc = r.docs().unwrap()[0].clone();
        if participants(&doc) == want {
            return doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            participants(&doc)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_the_room_without_being_in_it_and_send_only_gets_no_mosaic() {
    let flow = auth_flow();
    let mut alice = User::with_token(flow.addr(), &token("alice", "standup"));
    let mut bob = User::with_token(flow.addr(), &token("bob", "standup"));
    alice.send(anonymous(ALICE)).await;
    until_participants(&mut bob, BOB, &["alice", "bob"]).await;
    let viewer = {
        let mut s = TokenSpec::new("carol", "standup");
        s.can_publish = false;
        mint("main", SECRET.as_bytes(), &s).unwrap()
    };
    let mut carol = User::with_token(flow.addr(), &viewer);
    let r = carol.send(anonymous([255, 255, 255])).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let doc = &r.docs().unwrap()[0];
    assert_eq!(participants(doc), ["alice", "bob"]);
    let t = doc.tensor().expect("the viewer gets the mosaic");
    assert_eq!(bands(t, 20), [ALICE, BOB], "carol's frame is not in it");
    // And the others never see her.
    let r = alice.send(anonymous(ALICE)).await;
    assert_eq!(participants(&r.docs().unwrap()[0]), ["alice", "bob"]);

    let send_only = {
        let mut s = TokenSpec::new("dave", "standup");
        s.can_subscribe = false;
        mint("main", SECRET.as_bytes(), &s).unwrap()
    };
    let mut dave = User::with_token(flow.addr(), &send_only);
    let r = dave.send(anonymous([9, 9, 9])).await;
    assert!(!r.is_error(), "{:?}", r.error());
    let doc = &r.docs().unwrap()[0];
    assert!(doc.content.is_none(), "an acknowledgement without a mosaic");
    assert_eq!(participants(doc), ["alice", "bob", "dave"]);
    // Dave is in the room for the others.
    let r = alice.send(anonymous(ALICE)).await;
    assert_eq!(
        participants(&r.docs().unwrap()[0]),
        ["alice", "bob", "dave"]
    );
    for u in [alice, bob, carol, dave] {
        u.leave().await;
    }
}

/// The takeover of the issue: a second stream of alice. The older one ends
/// with a clear status, the room lists one alice, her tile holds the newer
/// stream's frames, and the older stream's end does not remove her.
async fn takeover(flow: &Flow, token: impl Fn(&str) -> Option<String>) {
    let tagged = |color| {
        let mut d = frame("alice", color, 20, 30);
        d.set_tag_str("room", "standup");
        d
    };
    let mut first = RawStream::try_connect_with(flow.addr(), token("alice").as_deref())
        .await
        .unwrap();
    let r = first
        .send(request("a1", vec![tagged(ALICE).into_proto()]))
        .await;
    assert_eq!(status(&r).0, 0, "{:?}", status(&r));
    let mut bob = match token("bob") {
        Some(t) => User::with_token(flow.addr(), &t),
        None => User::connect(flow.addr()),
    };
    let mut b = frame("bob", BOB, 20, 30);
    b.set_tag_str("room", "standup");
    bob.send(b.clone()).await;

    let mut second = RawStream::try_connect_with(flow.addr(), token("alice").as_deref())
        .await
        .unwrap();
    let r = second
        .send(request("b1", vec![tagged(ALICE2).into_proto()]))
        .await;
    assert_eq!(status(&r).0, 0, "{:?}", status(&r));
    // The older stream is ended, saying why.
    let ended = loop {
        match first.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the older stream must end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Aborted, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("replaced by a newer connection of alice"),
        "{}",
        ended.message()
    );
    drop(first);
    // Her place survives the older stream's end: one alice, the newer frames.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for n in 0..3 {
        let r = second
            .send(request(
                &format!("b{n}x"),
                vec![tagged(ALICE2).into_proto()],
            ))
            .await;
        assert_eq!(status(&r).0, 0, "{:?}", status(&r));
        let r = bob.send(b.clone()).await;
        let doc = &r.docs().unwrap()[0];
        assert_eq!(participants(doc), ["alice", "bob"]);
        assert_eq!(bands(doc.tensor().unwrap(), 20), [ALICE2, BOB]);
    }
    bob.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_stream_of_a_user_replaces_the_older_with_auth() {
    let flow = auth_flow();
    takeover(&flow, |who| Some(token(who, "standup"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_stream_of_a_user_replaces_the_older_without_auth() {
    let flow = Flow::start(&repo_root().join("tests/flows/unlabelled.yml"), &[]);
    takeover(&flow, |_| None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jina_client_joins_with_its_token_as_metadata() {
    let flow = auth_flow();
    let mut bob = User::with_token(flow.addr(), &token("bob", "standup"));
    bob.send(anonymous(BOB)).await;
    let script = repo_root().join("tests/jina/post_with_token.py");
    let run = |t: String| {
        let mut c = Command::new(jina_python());
        c.arg(&script)
            .args([flow.addr(), t.as_str(), "3", "10,20,30"])
            .env("JINA_LOG_LEVEL", "ERROR");
        tokio::process::Command::from(c).output()
    };
    let out = run(token("pyalice", "standup")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON in:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{line}");
    let received = v["received"].as_array().unwrap();
    assert_eq!(received.len(), 3, "{line}");
    for r in received {
        assert_eq!(
            r["participants"],
            serde_json::json!(["bob", "pyalice"]),
            "{line}"
        );
    }
    // Without the right token, the same client is refused.
    let out = run("not-a-token".into()).await.unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The Python client reports the refusal in its own words (UNAUTHENTICATED
    // with the reason, or the stream it was still writing to failing): what
    // matters is that nothing comes back.
    assert!(
        !out.status.success() || !all.contains("\"received\": [{"),
        "refused: {all}"
    );
    bob.leave().await;
}

#[test]
fn vchat_token_prints_a_token_the_verifier_accepts() {
    let out = Command::new(bin("vchat"))
        .args([
            "token",
            "--key",
            "main",
            "--secret-env",
            "VCHAT_TEST_AUTH_SECRET",
            "--room",
            "r1",
            "--identity",
            "alice",
            "--name",
            "Alice",
            "--ttl",
            "10m",
            "--receive-only",
        ])
        .env("VCHAT_TEST_AUTH_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    let g = vchat_auth::Verifier::new([("main", SECRET)])
        .unwrap()
        .verify(Some(t.trim()), Some("r1"))
        .unwrap();
    assert_eq!(
        (
            g.identity.as_str(),
            g.name.as_deref(),
            g.can_publish,
            g.can_subscribe
        ),
        ("alice", Some("Alice"), false, true)
    );
    // A short secret is refused.
    let out = Command::new(bin("vchat"))
        .args([
            "token",
            "--key",
            "main",
            "--secret-env",
            "SHORT",
            "--room",
            "r1",
            "--identity",
            "a",
        ])
        .env("SHORT", "tooshort")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 32 bytes"));
}

#[test]
fn a_flow_with_a_short_secret_does_not_start() {
    let dir = scratch("auth-short");
    let path = write_file(
        &dir,
        "flow.yml",
        "jtype: Flow\nwith:\n  auth:\n    keys:\n      main: short\nexecutors:\n  - uses: Passthrough\n",
    );
    let out = Command::new(bin("vchat"))
        .args(["flow", "--uses"])
        .arg(&path)
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth key \"main\"") && err.contains("at least 32"),
        "{err}"
    );
}

const LINK_SECRET: &str = "executor-link-secret-0123456789";

/// `vchat executor` serving the chat on a free loopback port with `extra`
/// arguments; its `host:port`.
fn executor(extra: &[&str], env: &[(&str, &str)]) -> (Flow, String) {
    use std::ffi::OsStr;
    let yaml = repo_root().join("tests/flows/unlabelled-executor.yml");
    let mut args: Vec<&OsStr> = ["executor", "--uses"].map(OsStr::new).to_vec();
    args.push(yaml.as_os_str());
    args.extend(["--host", "127.0.0.1", "--port", "0"].map(OsStr::new));
    args.extend(extra.iter().map(OsStr::new));
    let ex = Flow::spawn_with_env(&bin("vchat"), &args, env);
    let hostport = ex.addr().split("://").nth(1).unwrap().to_string();
    (ex, hostport)
}

/// A Flow whose one executor is the external one at `hostport`.
fn linked_flow(hostport: &str, settings: &str, env: &[(&str, &str)]) -> Flow {
    let (host, port) = hostport.split_once(':').unwrap();
    let dir = scratch("auth-link");
    let path = write_file(
        &dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nexecutors:\n  - name: chat\n    host: {host}\n    port: {port}\n    external: true\n{settings}"
        ),
    );
    Flow::start_with_env(&path, &[], env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_with_a_secret_refuses_calls_without_it_stream_closed_included() {
    use vchat_proto::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
    let (_ex, hostport) = executor(
        &["--secret-env", "LINK_SECRET"],
        &[("LINK_SECRET", LINK_SECRET)],
    );
    let mut client = JinaSingleDataRequestRpcClient::connect(format!("http://{hostport}"))
        .await
        .unwrap();
    let frame_req = request("f1", vec![frame("mallory", ALICE, 20, 30).into_proto()]);
    let mut closed = request("c1", vec![]);
    closed.header.as_mut().unwrap().exec_endpoint = Some(vchat_core::STREAM_CLOSED_ENDPOINT.into());
    for req in [frame_req.clone(), closed.clone()] {
        let endpoint = req.header.as_ref().unwrap().exec_endpoint.clone();
        let err = client.process_single_data(req).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "{endpoint:?}: {err:?}"
        );
        assert!(
            err.message().contains("executor_secret"),
            "{}",
            err.message()
        );
    }
    // A wrong secret is no better.
    let mut wrong = tonic::Request::new(frame_req.clone());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().unwrap());
    assert_eq!(
        client.process_single_data(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // A Flow with the secret (from its environment) chats through it.
    let flow = linked_flow(
        &hostport,
        "    executor_secret: ${FLOW_LINK_SECRET}\n",
        &[("FLOW_LINK_SECRET", LINK_SECRET)],
    );
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", ALICE, 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(participants(&r.docs().unwrap()[0]), ["alice"]);
    alice.leave().await;
    // A Flow without it gets an error for each frame.
    let open = linked_flow(&hostport, "", &[]);
    let mut bob = User::connect(open.addr());
    let r = bob.send(frame("bob", BOB, 20, 30)).await;
    let e = r.error().expect("refused by the executor");
    assert!(e.contains("executor_secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_to_an_external_executor_can_be_tls_with_a_private_ca() {
    let dir = scratch("auth-tls");
    let (ca, cert, key) = test_certificates(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (_ex, hostport) = executor(
        &[
            "--ssl-certfile",
            cert,
            "--ssl-keyfile",
            key,
            "--secret-env",
            "LINK_SECRET",
        ],
        &[("LINK_SECRET", LINK_SECRET)],
    );
    let settings = "    tls: true\n    executor_secret: ${FLOW_LINK_SECRET}\n";
    let flow = linked_flow(
        &hostport,
        settings,
        &[
            ("FLOW_LINK_SECRET", LINK_SECRET),
            ("VCHAT_EXECUTOR_CA", ca.to_str().unwrap()),
        ],
    );
    let mut alice = User::connect(flow.addr());
    let r = alice.send(frame("alice", ALICE, 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(bands(r.docs().unwrap()[0].tensor().unwrap(), 20), [ALICE]);
    alice.leave().await;
    // Without the CA, the executor's certificate is not trusted: no frame
    // reaches it.
    let untrusted = linked_flow(&hostport, settings, &[("FLOW_LINK_SECRET", LINK_SECRET)]);
    let mut bob = User::connect(untrusted.addr());
    let r = bob.send(frame("bob", BOB, 20, 30)).await;
    assert!(r.is_error(), "an untrusted executor must not be used");
}

#[test]
fn the_example_flow_with_auth_loads() {
    let spec = vchat_core::config::load_flow(&repo_root().join("examples/flows/auth.yml")).unwrap();
    let auth = spec.with.auth.expect("with.auth");
    assert_eq!(auth.keys["main"], "${VCHAT_KEY_SECRET}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_joins_with_its_token_and_a_replaced_tab_stops() {
    use vchat_e2e::browser::{Chromium, Page};
    let patience = PATIENCE * 3;
    let flow = auth_flow();
    let dir = scratch("auth-browser");
    let chromium = Chromium::launch(&dir);
    let cdp = chromium.connect().await;
    let url = format!(
        "{}/?token={}&autojoin=1&fps=10&transport=ws",
        flow.web_url(),
        token("alice", "standup")
    );
    let first = Page::open(&cdp, "first", &url).await;
    first
        .wait_for(
            "alice's mosaic",
            "vchat.hello && vchat.hello.user === 'alice' && vchat.hello.room === 'standup' \
             && vchat.lastMosaic && vchat.lastMosaic.participants.join() === 'alice'",
            patience,
        )
        .await;
    // The same token in a second tab: it takes alice's place, and the first
    // tab stops instead of reconnecting (which would take it back).
    let second = Page::open(&cdp, "second", &url).await;
    second
        .wait_for("a mosaic", "vchat.frames > 0", patience)
        .await;
    first
        .wait_for(
            "the first tab stopped as replaced",
            "vchat.state === 'error' && vchat.lastError.kind === 'replaced' \
             && vchat.closes.some(c => c.code === 4000 && c.reason.includes('replaced by a newer connection of alice'))",
            patience,
        )
        .await;
    let frames = second.eval("vchat.frames").await.as_u64().unwrap();
    second
        .wait_for(
            "the second tab streams on, alone as alice",
            &format!(
                "vchat.state === 'streaming' && vchat.frames > {frames} + 5 \
                 && vchat.lastMosaic.participants.join() === 'alice'"
            ),
            patience,
        )
        .await;
    assert_eq!(first.eval("vchat.reconnects").await, 0);
}

#[test]
fn vchat_bench_streams_with_a_token_per_user() {
    let flow = auth_flow();
    let (a, b) = (token("bench-a", "load"), token("bench-b", "load"));
    let run = |tokens: &[&str]| {
        let mut c = Command::new(bin("vchat"));
        c.args([
            "bench",
            flow.addr(),
            "--users",
            "2",
            "--fps",
            "10",
            "--duration",
            "1",
        ])
        .args(["--warmup", "0.5", "--json"]);
        for t in tokens {
            c.args(["--token", t]);
        }
        c.output().unwrap()
    };
    let out = run(&[&a, &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["errors"], 0, "{stdout}");
    assert!(v["answered"].as_u64().unwrap() > 0, "{stdout}");
    // One token for two users would make them replace each other: refused.
    let out = run(&[&a]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a token of its own"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The local address `port` listens on, from /proc/net/tcp (IPv4).
fn listening_address(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let (addr, p) = cols.get(1)?.split_once(':')?;
        (u16::from_str_radix(p, 16).ok()? == port && cols.get(3) == Some(&"0A"))
            .then(|| addr.to_string())
    })
}

#[test]
fn metrics_listen_on_loopback_unless_configured() {
    use std::ffi::OsStr;
    let yml = repo_root().join("tests/flows/unlabelled.yml");
    let start = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = ["flow", "--uses"].map(OsStr::new).to_vec();
        args.push(yml.as_os_str());
        args.extend(["--host", "0.0.0.0", "--port", "0", "--port-monitoring", "0"].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        Flow::spawn(&bin("vchat"), &args)
    };
    let port = |flow: &Flow| -> u16 {
        let url = flow.metrics_url();
        url.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/metrics")
            .parse()
            .unwrap()
    };
    let flow = start(&[]);
    // 127.0.0.1, as /proc/net/tcp writes it; the gRPC port is on every address.
    assert_eq!(listening_address(port(&flow)).as_deref(), Some("0100007F"));
    let grpc: u16 = flow.addr().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listening_address(grpc).as_deref(), Some("00000000"));
    let open = start(&["--monitoring-host", "0.0.0.0"]);
    assert_eq!(listening_address(port(&open)).as_deref(), Some("00000000"));
    assert!(http_get(open.metrics_url()).contains("vchat_requests_total"));
}
