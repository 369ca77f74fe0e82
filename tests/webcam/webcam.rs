//! The webcam client as users run it: video-file sources (there is no webcam on
//! the build machines), the window under Xvfb, snapshots and recordings, clear
//! errors instead of aborts, and reconnecting when the server goes away.

use std::path::{Path, PathBuf};
use std::process::Command;

use vchat_client::source::FrameSource;
use vchat_client_app::cv::{VideoSource, write_test_video};
use vchat_e2e::*;

/// Distinct BGR colours that survive MJPG compression.
const ALICE: [u8; 3] = [220, 60, 30];
const BOB: [u8; 3] = [30, 60, 220];

/// A small looping clip of one colour.
fn clip(dir: &Path, name: &str, color: [u8; 3]) -> PathBuf {
    let path = dir.join(format!("{name}.avi"));
    write_test_video(&path, &[color], 10, 120, 160).unwrap();
    path
}

fn client(addr: &str, user: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("vchat-client"));
    c.args([addr, user]).args(extra);
    c
}

/// The client in a window on `display` (and nowhere else).
fn windowed(addr: &str, user: &str, display: &str, extra: &[&str]) -> Command {
    let mut c = client(addr, user, extra);
    c.env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("QT_QPA_PLATFORM");
    c
}

/// Per-channel tolerance for colours that went through lossy video codecs.
const TOLERANCE: u8 = 45;

fn near(p: &[u8], q: [u8; 3]) -> bool {
    p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= TOLERANCE)
}

/// `recv N` of a status line `USER: sent N recv N ...`.
fn recv_of(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "recv")?;
    words.next()?.parse().ok()
}

fn status_line(user: &str) -> impl Fn(&str) -> bool + '_ {
    move |l: &str| l.starts_with(&format!("{user}: sent "))
}

#[test]
fn two_windowed_clients_stream_video_files_and_see_each_other() {
    let xvfb = Xvfb::start();
    let flow = Flow::start_default(&[]);
    let dir = scratch("webcam-window");
    let (a_clip, b_clip) = (clip(&dir, "alice", ALICE), clip(&dir, "bob", BOB));
    let (a_png, b_png, b_rec) = (
        dir.join("alice.png"),
        dir.join("bob.png"),
        dir.join("bob.avi"),
    );
    let args = |src: &Path, png: &Path| -> Vec<String> {
        ["--source", src.to_str().unwrap(), "--loop", "--fps", "20"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--snapshot".to_string(), png.display().to_string()])
            .collect()
    };
    let a_args = args(&a_clip, &a_png);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut alice = Proc::spawn(windowed(flow.addr(), "alice", xvfb.display(), &a_args));
    alice.wait_line("with alice alone", |l| {
        status_line("alice")(l) && l.ends_with("mosaic 200x300")
    });
    // Bob joins second, so the mosaic is alice on top, bob below.
    let mut b_args = args(&b_clip, &b_png);
    b_args.extend(["--record".to_string(), b_rec.display().to_string()]);
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut bob = Proc::spawn(windowed(flow.addr(), "bob", xvfb.display(), &b_args));
    alice.wait_line("with both", |l| l.ends_with("mosaic 400x300"));
    bob.wait_line("with both", |l| l.ends_with("mosaic 400x300"));

    // Ctrl-C leaves cleanly: alice's last mosaic has both of them...
    let (status, log) = alice.interrupt();
    assert!(status.success(), "{log}");
    assert!(log.contains("alice: done: "), "{log}");
    let png = decode_png(&a_png);
    assert_eq!((png.0, png.1), (400, 300), "{log}");
    assert!(
        share_of(&png, 0..200, ALICE, TOLERANCE) > 0.8,
        "alice on top"
    );
    assert!(share_of(&png, 200..400, BOB, TOLERANCE) > 0.8, "bob below");

    // ...and she leaves bob's mosaic at once.
    bob.wait_line("alone again", |l| {
        status_line("bob")(l) && l.ends_with("mosaic 200x300")
    });
    let (status, log) = bob.interrupt();
    assert!(status.success(), "{log}");
    let png = decode_png(&b_png);
    assert_eq!((png.0, png.1), (200, 300));
    assert!(share_of(&png, 0..200, BOB, TOLERANCE) > 0.8, "bob alone");

    // Bob's recording has the mosaics of both, fitted into its first frame size.
    let mut rec = VideoSource::file(&b_rec, false, 200, 300).unwrap();
    let mut frames = 0;
    let mut with_alice = 0;
    while let Some(f) = rec.next_frame().unwrap() {
        frames += 1;
        if f.data().chunks(3).any(|p| near(p, ALICE)) {
            with_alice += 1;
        }
    }
    assert!(
        frames > 0 && with_alice > 0,
        "{frames} frames, {with_alice} with alice"
    );
}

#[test]
fn headless_client_streams_a_video_file() {
    let flow = Flow::start_default(&[]);
    let dir = scratch("webcam-headless");
    let src = clip(&dir, "carol", BOB);
    let snap = dir.join("carol.png");
    let out = client(
        flow.addr(),
        "carol",
        &["--headless", "--source", src.to_str().unwrap(), "--loop"],
    )
    .args(["--frames", "60", "--size", "100x150", "--snapshot"])
    .arg(&snap)
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| status_line("carol")(l)).collect();
    assert!(!lines.is_empty(), "{stdout}");
    for l in &lines {
        for field in [
            " recv ",
            " dropped ",
            " errors ",
            " fps ",
            " p50 ",
            " mosaic ",
        ] {
            assert!(l.contains(field), "{l}");
        }
    }
    assert!(
        stdout.contains("carol: done: 60 responses, 0 errors"),
        "{stdout}"
    );
    let png = decode_png(&snap);
    assert_eq!((png.0, png.1), (100, 150));
    assert!(share_of(&png, 0..100, BOB, TOLERANCE) > 0.8);
}

#[test]
fn a_file_without_loop_ends_the_stream_cleanly() {
    let flow = Flow::start_default(&[]);
    let dir = scratch("webcam-once");
    let src = clip(&dir, "dave", ALICE); // 10 frames
    let out = client(
        flow.addr(),
        "dave",
        &[
            "--headless",
            "--source",
            src.to_str().unwrap(),
            "--fps",
            "0",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("dave: done: 10 responses"), "{stdout}");
}

#[test]
fn no_display_is_a_clear_error_not_an_abort() {
    // No server is needed: the display is checked before connecting.
    let addr = format!("grpc://127.0.0.1:{}", free_port());
    let run = |display: Option<&str>| {
        let mut c = client(&addr, "erin", &["--source", "test"]);
        c.env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("QT_QPA_PLATFORM");
        if let Some(d) = display {
            c.env("DISPLAY", d);
        }
        c.output().unwrap()
    };
    let out = run(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no display: DISPLAY is not set"), "{err}");
    assert!(err.contains("--headless"), "{err}");

    // A display number no X server has.
    let n = (64000..65000)
        .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .unwrap();
    let out = run(Some(&format!(":{n}")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("nothing answers at DISPLAY=:{n}")),
        "{err}"
    );
}

#[test]
fn bad_sources_are_clear_errors() {
    let addr = format!("grpc://127.0.0.1:{}", free_port());
    let dir = scratch("webcam-bad");
    let junk = dir.join("junk.avi");
    std::fs::write(&junk, b"this is not a video").unwrap();
    let missing = dir.join("missing.avi");
    let cases: [(&str, &str); 3] = [
        (missing.to_str().unwrap(), "cannot read"),
        (junk.to_str().unwrap(), "junk.avi"),
        // No webcam on the build machines, and surely none at index 63.
        ("63", "no camera at index 63"),
    ];
    for (source, says) in cases {
        let out = client(&addr, "frank", &["--headless", "--source", source])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{source}: {err}");
        assert!(err.contains(says), "{source}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn client_waits_for_the_server_and_resumes_when_it_comes_back() {
    let port = free_port();
    let addr = format!("grpc://127.0.0.1:{port}");
    let flow_yml = repo_root().join("flow.yml");
    // Started before any server: it says so and keeps trying.
    let mut c = Proc::spawn(client(&addr, "gina", &["--headless", "--source", "test"]));
    c.wait_line("saying the server is not there", |l| {
        l.contains(&format!("cannot reach {addr}")) && l.contains("retrying")
    });

    let mut flow = Flow::start_on_port(&flow_yml, port, &[]);
    let seen = |c: &mut Proc, after: u64| {
        let line = c.wait_line(&format!("with recv above {after}"), |l| {
            status_line("gina")(l) && recv_of(l).is_some_and(|r| r > after)
        });
        recv_of(&line).unwrap()
    };
    let first = seen(&mut c, 0);

    // A server that shuts down (SIGINT ends the streams cleanly)...
    assert!(flow.interrupt().success());
    c.wait_line("saying it lost the server", |l| {
        l.contains(&format!("lost {addr}")) && l.contains("retrying")
    });
    // ...and one that is killed.
    let flow = Flow::start_on_port(&flow_yml, port, &[]);
    c.wait_line("saying it is back", |l| l.contains("again; streaming"));
    let second = seen(&mut c, first);
    drop(flow);
    c.wait_line("saying it lost the server again", |l| {
        l.contains(&format!("lost {addr}"))
    });
    let _flow = Flow::start_on_port(&flow_yml, port, &[]);
    seen(&mut c, second);

    let (status, log) = c.interrupt();
    assert!(status.success(), "{log}");
    assert!(log.contains("gina: done: "), "{log}");
}

#[test]
fn no_reconnect_exits_when_the_server_goes_away() {
    let mut flow = Flow::start_default(&[]);
    let mut c = Proc::spawn(client(
        flow.addr(),
        "hal",
        &["--headless", "--source", "test", "--no-reconnect"],
    ));
    c.wait_line("receiving", |l| {
        status_line("hal")(l) && recv_of(l).is_some_and(|r| r > 0)
    });
    assert!(flow.interrupt().success());
    let (status, log) = c.wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("(--no-reconnect)"), "{log}");
}
