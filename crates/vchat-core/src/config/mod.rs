//! Flow and executor YAML, with Jina's keys.
//!
//! Parsed with `serde-saphyr`, which reports the line and column of every error;
//! every struct denies unknown keys, so a typo is an error that names the file, the
//! line and the key rather than a silently ignored setting.
//!
//! | file | what |
//! |---|---|
//! | `flow.rs` | the Flow's `with:` ([`FlowWith`]) and the gateway's defaults |
//! | `executor.rs` | an executor's deployment ([`Deployment`], [`ExecutorSpec`]) and its defaults |
//! | `load.rs` | [`load_flow`], [`load_executor`] |

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use crate::Origin;

mod executor;
mod flow;
mod load;

pub use executor::*;
pub use flow::*;
pub use load::{load_executor, load_flow};

/// A flow's executor's `with:` values, each with where it was written.
pub type WithValues = BTreeMap<String, (serde_json::Value, Origin)>;

type SpannedMap = BTreeMap<String, Spanned<serde_json::Value>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vchat-config-{tag}-{}", crate::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn resolves_executor_files_relative_to_the_flow() {
        let d = tmpdir("rel");
        write(
            &d,
            "ex/config.yml",
            "jtype: VideoChatExecutor\nwith:\n  idle_timeout_s: 3\n",
        );
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nwith:\n  port: 0\nexecutors:\n  - uses: ex/config.yml\n    name: agg\n    uses_with:\n      idle_timeout_s: 9\n",
        );
        let spec = load_flow(&flow).unwrap();
        assert_eq!(spec.with.port, Some(0));
        let ex = &spec.executors[0];
        assert_eq!(
            (ex.name.as_str(), ex.jtype.as_str()),
            ("agg", "VideoChatExecutor")
        );
        let (v, o) = &ex.with["idle_timeout_s"];
        assert_eq!(v, &serde_json::json!(9));
        assert_eq!((o.file.as_path(), o.line), (flow.as_path(), 8));
    }

    #[test]
    fn tls_paths_are_relative_to_the_flow_and_go_together() {
        let d = tmpdir("tls");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nwith:\n  ssl_certfile: certs/c.pem\n  ssl_keyfile: /abs/k.pem\n  max_streams: 8\n  max_frame_bytes: 100\n  monitoring: true\n  port_monitoring: 0\n",
        );
        let w = load_flow(&flow).unwrap().with;
        assert_eq!(w.ssl_certfile, Some(d.join("certs/c.pem")));
        assert_eq!(w.ssl_keyfile, Some(PathBuf::from("/abs/k.pem")));
        assert_eq!((w.max_streams, w.max_frame_bytes), (Some(8), Some(100)));
        assert_eq!((w.monitoring, w.port_monitoring), (Some(true), Some(0)));
        let half = write(
            &d,
            "half.yml",
            "jtype: Flow\nwith:\n  ssl_certfile: c.pem\n",
        );
        let err = load_flow(&half).unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let d = tmpdir("unknown");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - uses: Foo\n    nmae: x\n",
        );
        let err = load_flow(&flow).unwrap_err();
        assert_eq!(err.origin.line, 4, "{err}");
        assert!(err.to_string().contains("nmae"), "{err}");
        assert!(!err.to_string().contains("line 4 column"), "{err}");
        assert!(err.to_string().contains("flow.yml:4"), "{err}");
    }

    #[test]
    fn missing_executor_file_is_named() {
        let d = tmpdir("missing");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - uses: nope/config.yml\n",
        );
        let err = load_flow(&flow).unwrap_err().to_string();
        assert!(
            err.contains("flow.yml:3") && err.contains("nope/config.yml"),
            "{err}"
        );
    }

    #[test]
    fn a_bare_uses_names_a_jtype_and_names_default() {
        let d = tmpdir("bare");
        let remote = write(
            &d,
            "remote.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    host: [h1, h2]\n    port: 7\n    external: true\n  - name: b\n    uses: X\n    replicas: 3\n    needs: [gateway, a]\n    route_by: room\n    timeout_send: 250\n",
        );
        let spec = load_flow(&remote).unwrap();
        assert_eq!(spec.executors[0].deployment.external, vec!["h1:7", "h2:7"]);
        assert_eq!(spec.executors[0].deployment.replicas, 2);
        let b = &spec.executors[1].deployment;
        assert_eq!(
            (b.replicas, b.needs.clone(), b.route_by.as_deref()),
            (
                3,
                vec!["gateway".to_string(), "a".to_string()],
                Some("room")
            )
        );
        assert_eq!(b.timeout_send, Some(std::time::Duration::from_millis(250)));
        let bad = write(
            &d,
            "bad.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    uses: X\n    needs: nope\n",
        );
        assert!(
            load_flow(&bad)
                .unwrap_err()
                .to_string()
                .contains("needs `nope`")
        );
        let bad = write(
            &d,
            "bad2.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    external: true\n",
        );
        assert!(load_flow(&bad).unwrap_err().to_string().contains("host"));
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - uses: VideoChatExecutor\n",
        );
        let spec = load_flow(&flow).unwrap();
        assert_eq!(spec.executors[0].jtype, "VideoChatExecutor");
        assert_eq!(spec.executors[0].name, "executor0");
    }

    #[test]
    fn access_control_and_executor_link_security_parse() {
        let dir = std::env::temp_dir().join(format!("vchat-auth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("flow.yml");
        std::fs::write(
            &f,
            "jtype: Flow\nwith:\n  monitoring_host: 0.0.0.0\n  auth:\n    keys:\n      main: ${S}\nexecutors:\n  - name: a\n    host: h\n    port: 7\n    tls: true\n    executor_secret: ${E}\n",
        )
        .unwrap();
        let spec = load_flow(&f).unwrap();
        assert_eq!(spec.with.auth.unwrap().keys["main"], "${S}");
        assert_eq!(spec.with.monitoring_host.as_deref(), Some("0.0.0.0"));
        let d = &spec.executors[0].deployment;
        assert!(d.tls);
        assert_eq!(d.secret.as_deref(), Some("${E}"));
        std::fs::write(
            &f,
            "jtype: Flow\nexecutors:\n  - name: a\n    uses: X\n    tls: true\n",
        )
        .unwrap();
        let e = load_flow(&f).unwrap_err().to_string();
        assert!(e.contains("settings of an external executor"), "{e}");
        std::fs::write(&f, "jtype: Flow\nwith:\n  auth:\n    key: {}\n").unwrap();
        assert!(load_flow(&f).is_err(), "unknown keys under auth are errors");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn external_executor_link_settings() {
        let d = tmpdir("link");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    host: h\n    port: 7\n    max_response_bytes: 1000\n    keepalive_interval_s: 0\n    keepalive_timeout_s: 5\n    stop_grace_s: 0.5\n  - name: b\n    host: h\n    port: 8\n",
        );
        let spec = load_flow(&flow).unwrap();
        let a = &spec.executors[0].deployment;
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            (
                a.max_response_bytes,
                a.keepalive_interval,
                a.keepalive_timeout
            ),
            (Some(1000), Some(secs(0)), Some(secs(5)))
        );
        assert_eq!(a.stop_grace, Some(std::time::Duration::from_millis(500)));
        let b = &spec.executors[1].deployment;
        assert_eq!(
            (b.max_response_bytes, b.keepalive_interval, b.stop_grace),
            (None, None, None)
        );
        let bad = write(
            &d,
            "bad.yml",
            "jtype: Flow\nexecutors:\n  - uses: X\n    stop_grace_s: -1\n",
        );
        let err = load_flow(&bad).unwrap_err().to_string();
        assert!(err.contains("stop_grace_s"), "{err}");
    }

    #[test]
    fn py_modules_are_resolved_next_to_the_yaml() {
        let d = tmpdir("py");
        let ex = write(
            &d,
            "executor/config.yml",
            "jtype: VideoChatExecutor\npy_modules:\n  - executor.py\n",
        );
        let spec = load_executor(&ex).unwrap();
        assert_eq!(spec.py_modules, vec![d.join("executor/executor.py")]);
    }

    #[test]
    fn not_a_flow_is_an_error() {
        let d = tmpdir("notflow");
        let f = write(&d, "flow.yml", "jtype: VideoChatExecutor\n");
        assert!(
            load_flow(&f)
                .unwrap_err()
                .to_string()
                .contains("expected `Flow`")
        );
    }

    #[test]
    fn protocol_is_one_name_or_a_list() {
        let d = tmpdir("protocol");
        let one = write(&d, "one.yml", "jtype: Flow\nwith:\n  protocol: grpc\n");
        let spec = load_flow(&one).unwrap();
        assert_eq!(spec.with.protocol, vec!["grpc"]);
        assert!(!spec.with.serves_websocket());
        let both = write(
            &d,
            "both.yml",
            "jtype: Flow\nwith:\n  protocol: [grpc, websocket]\n  port_http: 0\n  websocket_origins: [https://chat.example.org]\n  websocket_max_fps: 12\n",
        );
        let spec = load_flow(&both).unwrap();
        assert!(spec.with.serves_websocket());
        assert_eq!(spec.with.port_http, Some(0));
        assert_eq!(
            spec.with.websocket_origins,
            vec!["https://chat.example.org"]
        );
        assert_eq!(spec.with.websocket_max_fps, Some(12.0));
        let http = write(
            &d,
            "http.yml",
            "jtype: Flow\nwith:\n  protocol: [grpc, http]\n",
        );
        let err = load_flow(&http).unwrap_err().to_string();
        assert!(err.contains("`http` is not served"), "{err}");
        let fps = write(
            &d,
            "fps.yml",
            "jtype: Flow\nwith:\n  protocol: websocket\n  websocket_max_fps: 0\n",
        );
        let err = load_flow(&fps).unwrap_err().to_string();
        assert!(
            err.contains("websocket_max_fps must be a positive"),
            "{err}"
        );
    }

    #[test]
    fn max_memory_mb_is_a_flow_setting() {
        let d = tmpdir("memory");
        let flow = write(&d, "flow.yml", "jtype: Flow\nwith:\n  max_memory_mb: 512\n");
        assert_eq!(load_flow(&flow).unwrap().with.max_memory_mb, Some(512));
        let bad = write(&d, "bad.yml", "jtype: Flow\nwith:\n  max_memory_mb: lots\n");
        assert!(load_flow(&bad).is_err());
    }

    #[test]
    fn replicas_by_name_settings_parse_and_are_checked() {
        let d = tmpdir("discovery");
        let flow = write(
            &d,
            "flow.yml",
            "jtype: Flow\nexecutors:\n  - name: a\n    host: [chat-0.chat, chat-1.chat]\n    port: 8080\n    resolve_interval_s: 2.5\n  - name: b\n    host: chat.ns.svc\n    port: 8080\n    dns_replicas: true\n",
        );
        let spec = load_flow(&flow).unwrap();
        let (a, b) = (&spec.executors[0].deployment, &spec.executors[1].deployment);
        assert_eq!(a.external, ["chat-0.chat:8080", "chat-1.chat:8080"]);
        assert_eq!(
            a.resolve_interval,
            Some(std::time::Duration::from_millis(2500))
        );
        assert!(!a.dns_replicas);
        assert_eq!(b.external, ["chat.ns.svc:8080"]);
        assert!(b.dns_replicas && b.resolve_interval.is_none());
        for (text, want) in [
            (
                "host: [a, b]\n    port: 1\n    dns_replicas: true",
                "needs one `host`",
            ),
            (
                "host: a\n    port: 1\n    dns_replicas: true\n    replicas: 2",
                "leave `replicas` out",
            ),
            (
                "host: a\n    port: 1\n    resolve_interval_s: 0",
                "resolve_interval_s must be between",
            ),
            (
                "host: a\n    port: 1\n    resolve_interval_s: .nan",
                "resolve_interval_s must be between",
            ),
            (
                "uses: X\n    resolve_interval_s: 3",
                "applies to an external executor",
            ),
        ] {
            let f = write(
                &d,
                "bad.yml",
                &format!("jtype: Flow\nexecutors:\n  - name: a\n    {text}\n"),
            );
            let err = load_flow(&f).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
