//! A Flow served over TLS: grpcs:// clients with the CA get through, plaintext
//! clients are refused. Certificates are made at run time.

use std::process::Command;

use vchat_client::{Client, PostOptions};
use vchat_e2e::*;

const ALICE: [u8; 3] = [200, 40, 30];
const BOB: [u8; 3] = [30, 200, 40];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_flow_serves_grpcs_and_refuses_plaintext() {
    let dir = scratch("tls");
    let (ca, cert, key) = test_certificates(&dir);
    // The Jina keys in the Flow YAML, relative to it.
    let yml = dir.join("flow.yml");
    std::fs::write(
        &yml,
        format!(
            "jtype: Flow\nwith:\n  ssl_certfile: server.pem\n  ssl_keyfile: server.key\nexecutors:\n  - uses: {}\n    name: frameAggregator\n",
            repo_root().join("executor/config.yml").display()
        ),
    )
    .unwrap();
    let _ = (&cert, &key);
    let flow = Flow::start(&yml, &[]);
    let addr = flow.addr().to_string();
    assert!(addr.starts_with("grpcs://127.0.0.1:"), "{addr}");
    let pem = std::fs::read(&ca).unwrap();

    let mut alice = User::with_client(Client::with_ca(&addr, &pem).unwrap());
    let mut bob = User::with_client(Client::with_ca(&addr, &pem).unwrap());
    alice.send(frame("alice", ALICE, 20, 30)).await;
    let r = bob.send(frame("bob", BOB, 20, 30)).await;
    assert!(!r.is_error(), "{:?}", r.error());
    assert_eq!(
        bands(r.docs().unwrap()[0].tensor().unwrap(), 20),
        [ALICE, BOB]
    );

    // Plaintext to the TLS port: refused, nothing processed.
    let plain = addr.replace("grpcs://", "grpc://");
    let client = Client::new(&plain).unwrap();
    let result = client
        .post(
            "/",
            futures::stream::iter([frame("eve", BOB, 20, 30)]),
            PostOptions::new().request_size(1),
        )
        .await;
    assert!(result.is_err(), "plaintext must be refused: {result:?}");
    assert!(client.dry_run().await.is_err());
    // Without the CA, the self-made certificate is not trusted.
    assert!(Client::new(&addr).unwrap().dry_run().await.is_err());

    // vchat ping with --ca, and without it.
    let ok = Command::new(bin("vchat"))
        .args(["ping", &addr, "--ca"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let untrusted = Command::new(bin("vchat"))
        .args(["ping", &addr])
        .output()
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(1));
    alice.leave().await;
    bob.leave().await;
}

#[test]
fn the_command_line_flags_serve_tls_too() {
    let dir = scratch("tls-flags");
    let (ca, cert, key) = test_certificates(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let flow = Flow::start_default(&["--ssl-certfile", cert, "--ssl-keyfile", key]);
    let addr = flow.addr().to_string();
    assert!(addr.starts_with("grpcs://"), "{addr}");
    let ok = Command::new(bin("vchat"))
        .args(["ping", &addr, "--ca"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let plain = Command::new(bin("vchat"))
        .args([
            "ping",
            &addr.replace("grpcs://", "grpc://"),
            "--timeout",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(1));
    let line = String::from_utf8_lossy(&plain.stdout);
    assert!(line.contains("not ready"), "{line}");
}
