//! Names on tiles: every participant's tile carries their name, as the built-in
//! font renders it, in every layout; a paused camera is a paused tile; the demo
//! shows the users in join order.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use vchat_client::source::user_color;
use vchat_core::Tensor;
use vchat_core::Value;
use vchat_core::value::Kind;
use vchat_e2e::*;
use vchat_executor::label::{FONT, PAUSED_BGR, label_px};

const ALICE: [u8; 3] = [200, 60, 30];
const BOB: [u8; 3] = [30, 160, 60];
const CAROL: [u8; 3] = [90, 40, 170];

/// The pixels of `text` at `px` that the font covers fully, relative to the
/// top-left one: rendered here, with the rasterizer and font the executor uses.
fn full_coverage(text: &str, px: u32) -> BTreeSet<(usize, usize)> {
    let font = FontRef::try_from_slice(FONT).unwrap();
    let scaled = font.as_scaled(PxScale::from(px as f32));
    let mut x = 0.0;
    let mut prev = None;
    let mut full = BTreeSet::new();
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        let g = id.with_scale_and_position(px as f32, point(x, scaled.ascent()));
        x += scaled.h_advance(id);
        prev = Some(id);
        if let Some(o) = font.outline_glyph(g) {
            let b = o.px_bounds();
            o.draw(|gx, gy, cov| {
                if (cov.clamp(0.0, 1.0) * 255.0).round() as u8 == 255 {
                    full.insert((b.min.y as i64 + gy as i64, b.min.x as i64 + gx as i64));
                }
            });
        }
    }
    normalise(full.into_iter().collect())
}

fn normalise(px: Vec<(i64, i64)>) -> BTreeSet<(usize, usize)> {
    let y0 = px.iter().map(|p| p.0).min().unwrap_or(0);
    let x0 = px.iter().map(|p| p.1).min().unwrap_or(0);
    px.iter()
        .map(|&(y, x)| ((y - y0) as usize, (x - x0) as usize))
        .collect()
}

/// The pixels of the tile `(top, left, h, w)` of `t` that are exactly `rgb`,
/// and where the first of them is, relative to the tile.
fn pixels_of(
    t: &Tensor,
    (top, left, h, w): (usize, usize, usize, usize),
    value: [u8; 3],
) -> (BTreeSet<(usize, usize)>, (usize, usize)) {
    let width = t.shape()[1];
    let px: Vec<(i64, i64)> = (top..top + h)
        .flat_map(|y| (left..left + w).map(move |x| (y, x)))
        .filter(|&(y, x)| t.data()[(y * width + x) * 3..][..3] == value)
        .map(|(y, x)| (y as i64, x as i64))
        .collect();
    let at = (
        (px.iter().map(|p| p.0).min().unwrap_or(0) as usize).saturating_sub(top),
        (px.iter().map(|p| p.1).min().unwrap_or(0) as usize).saturating_sub(left),
    );
    (normalise(px), at)
}

/// Checks that `name`'s label, and nothing else white, is in the bottom-left
/// quarter of `tile`.
fn assert_labelled(t: &Tensor, tile: (usize, usize, usize, usize), name: &str, what: &str) {
    let want = full_coverage(name, label_px(tile.2));
    assert!(want.len() > 10, "{name}: a visible rendering");
    let (got, (y, x)) = pixels_of(t, tile, [255, 255, 255]);
    assert_eq!(
        got, want,
        "{what}: the white pixels of {name}'s tile spell {name}"
    );
    assert!(
        y > tile.2 * 3 / 4 && x < tile.3 / 8,
        "{what}: at ({y}, {x})"
    );
}

fn flow_with(dir: &Path, with: &str) -> std::path::PathBuf {
    write_file(
        dir,
        "flow.yml",
        &format!(
            "jtype: Flow\nexecutors:\n  - uses: {}\n    name: frameAggregator\n    uses_with:\n{with}",
            repo_root().join("executor/config.yml").display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_participant_is_labelled_in_every_layout() {
    let dir = scratch("labels");
    for (layout, with) in [
        ("vertical", "      layout: vertical\n"),
        ("horizontal", "      layout: horizontal\n"),
        ("grid", "      layout: grid\n      canvas: 480x640\n"),
    ] {
        let flow = Flow::start(&flow_with(&dir.join(layout), with), &[]);
        let mut users: Vec<(User, &str, [u8; 3])> =
            [("alice", ALICE), ("bob", BOB), ("carol", CAROL)]
                .into_iter()
                .map(|(n, c)| (User::connect(flow.addr()), n, c))
                .collect();
        for (u, name, color) in users.iter_mut() {
            let r = u.send(frame(name, *color, 240, 320)).await;
            assert!(!r.is_error(), "{:?}", r.error());
        }
        // Each user's tile, in join order.
        let tiles: [(usize, usize, usize, usize); 3] = match layout {
            "vertical" => [(0, 0, 240, 320), (240, 0, 240, 320), (480, 0, 240, 320)],
            "horizontal" => [(0, 0, 240, 320), (0, 320, 240, 320), (0, 640, 240, 320)],
            _ => [(0, 0, 240, 320), (0, 320, 240, 320), (240, 0, 240, 320)],
        };
        for (u, name, color) in users.iter_mut() {
            let r = u.send(frame(name, *color, 240, 320)).await;
            let doc = &r.docs().unwrap()[0];
            assert_eq!(participants(doc), ["alice", "bob", "carol"]);
            let t = doc.tensor().unwrap();
            for (tile, who) in tiles.iter().zip(["alice", "bob", "carol"]) {
                assert_labelled(t, *tile, who, &format!("{layout}, as {name} sees it"));
            }
            // Above the label, the tile is its user's colour (the grid's,
            // composed in YCbCr, within the rounding of two conversions).
            let w = t.shape()[1];
            let off = if layout == "grid" { 2 } else { 0 };
            for (tile, c) in tiles.iter().zip([ALICE, BOB, CAROL]) {
                let got = &t.data()[(tile.0 * w + tile.1) * 3..][..3];
                let close = got.iter().zip(c).all(|(g, c)| g.abs_diff(c) <= off);
                assert!(close, "{layout}: {got:?} is {c:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_name_is_the_label_and_a_paused_camera_a_paused_tile() {
    let flow = Flow::start(&repo_root().join("flow.yml"), &[]);
    let mut alice = User::connect(flow.addr());
    let mut named = frame("alice", ALICE, 240, 320);
    named.set_tag_str("name", "Alice Doe");
    assert!(!alice.send(named.clone()).await.is_error());
    let mut bob = User::connect(flow.addr());
    // A paused client sends a tiny frame at its camera's aspect ratio.
    let mut paused = frame("bob", BOB, 30, 40);
    paused.set_tag(
        "paused",
        Value {
            kind: Some(Kind::BoolValue(true)),
        },
    );
    assert!(!bob.send(paused).await.is_error());
    let r = alice.send(named).await;
    let doc = &r.docs().unwrap()[0];
    assert_eq!(participants(doc), ["alice", "bob"], "ids, not names");
    let t = doc.tensor().unwrap();
    assert_eq!(t.shape(), [480, 320, 3]);
    assert_labelled(t, (0, 0, 240, 320), "Alice Doe", "tags.name");
    let bob_tile = (240, 0, 240, 320);
    assert_eq!(&t.data()[240 * 320 * 3..][..3], &PAUSED_BGR, "a dark tile");
    assert_labelled(t, bob_tile, "bob", "the paused tile");
    // Grey text above the label (whose anti-aliased edge may hit that grey too).
    let (word, (y, x)) = pixels_of(t, (240, 0, 180, 320), [200, 200, 200]);
    assert_eq!(word, full_coverage("paused", label_px(240)), "the word");
    assert!(
        (80..160).contains(&y) && (80..240).contains(&x),
        "in the middle: {y} {x}"
    );
    // Back from the pause: bob's camera again, labelled.
    let r = bob.send(frame("bob", BOB, 240, 320)).await;
    let t = r.docs().unwrap()[0].tensor().unwrap().clone();
    assert_eq!(&t.data()[240 * 320 * 3..][..3], &BOB);
    assert_labelled(&t, bob_tile, "bob", "bob resumed");
}

#[test]
fn the_test_flow_without_labels_is_flow_yml_but_for_labels() {
    use vchat_core::config::load_flow;
    let ours = load_flow(&repo_root().join("flow.yml")).unwrap();
    let tests = load_flow(&repo_root().join("tests/flows/unlabelled.yml")).unwrap();
    assert_eq!(ours.with, tests.with);
    assert_eq!(ours.executors.len(), tests.executors.len());
    for (a, b) in ours.executors.iter().zip(&tests.executors) {
        assert_eq!((&a.name, &a.jtype), (&b.name, &b.jtype));
        let values = |e: &vchat_core::config::ExecutorSpec| -> Vec<(String, String)> {
            e.with
                .iter()
                .filter(|(k, _)| k.as_str() != "labels")
                .map(|(k, (v, _))| (k.clone(), v.to_string()))
                .collect()
        };
        assert_eq!(values(a), values(b));
        assert_eq!(b.with["labels"].0, false);
    }
}

#[test]
fn the_test_executor_without_labels_is_executor_config_but_for_labels() {
    use vchat_core::config::load_executor;
    let ours = load_executor(&repo_root().join("executor/config.yml")).unwrap();
    let tests = load_executor(&repo_root().join("tests/flows/unlabelled-executor.yml")).unwrap();
    assert_eq!((&ours.name, &ours.jtype), (&tests.name, &tests.jtype));
    let values = |e: &vchat_core::config::ExecutorSpec| -> Vec<(String, String)> {
        e.with
            .iter()
            .filter(|(k, _)| k.as_str() != "labels")
            .map(|(k, (v, _))| (k.clone(), v.to_string()))
            .collect()
    };
    assert_eq!(values(&ours), values(&tests));
    assert_eq!(ours.with["labels"].0, true);
    assert_eq!(tests.with["labels"].0, false);
}

/// Share of the pixels of rows `rows` of a decoded PNG that are `bgr`.
fn share(png: &(usize, usize, Vec<u8>), rows: std::ops::Range<usize>, bgr: [u8; 3]) -> f64 {
    share_of(png, rows, bgr, 0)
}

#[test]
fn the_demo_shows_the_users_in_join_order() {
    let out = scratch("demo");
    let bin_dir = bin("vchat").parent().unwrap().to_path_buf();
    let status = Command::new(repo_root().join("scripts/demo.sh"))
        .env("VCHAT_BIN_DIR", &bin_dir)
        .env("DEMO_OUT", &out)
        .env("DEMO_SECONDS", "1")
        .status()
        .unwrap();
    assert!(status.success(), "demo.sh failed; see {}", out.display());
    // Each user's last mosaic: the users who joined before them, then them.
    let users = ["alice", "bob", "carol"];
    for (i, user) in users.iter().enumerate() {
        let png = decode_png(&out.join(format!("{user}.png")));
        assert_eq!((png.0, png.1), (200 * (i + 1), 300), "{user}.png");
        for (band, who) in users[..=i].iter().enumerate() {
            let s = share(&png, band * 200..(band + 1) * 200, user_color(who));
            assert!(s > 0.8, "{user}.png: band {band} is {who}'s ({s})");
            // Their label: white text in a box of their colour darkened, at the
            // band's bottom-left.
            let (_, w, px) = &png;
            let c = user_color(who);
            let dark = [
                c[2] as u16 * 2 / 5,
                c[1] as u16 * 2 / 5,
                c[0] as u16 * 2 / 5,
            ];
            let label = ((band + 1) * 200 - 40..(band + 1) * 200)
                .flat_map(|y| (0..80).map(move |x| (y, x)));
            let (mut boxed, mut white) = (0, 0);
            for (y, x) in label {
                let p = &px[(y * w + x) * 3..][..3];
                boxed += usize::from((0..3).all(|i| p[i] as u16 == dark[i]));
                white += usize::from(p == [255, 255, 255]);
            }
            assert!(
                boxed > 50 && white > 10,
                "{user}.png: {who}'s label ({boxed} box, {white} text pixels)"
            );
        }
    }
    // The contact sheet: alice's view over time, several moments.
    let sheet = decode_png(&out.join("contact-sheet.png"));
    assert!(sheet.0 > 500 && sheet.1 > 900, "{}x{}", sheet.0, sheet.1);
    for who in users {
        assert!(
            share(&sheet, 0..sheet.0, user_color(who)) > 0.02,
            "{who} on it"
        );
    }
}

/// scripts/screenshots.sh makes the README's two screenshots: the native
/// window under Xvfb and the browser page in headless Chromium, each showing
/// the room's users.
#[test]
fn the_readme_screenshots_are_made_by_the_script() {
    let out = scratch("screenshots");
    let bin_dir = bin("vchat").parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("vchat-browser-screenshot").is_file(),
        "run `cargo build --workspace --bins` first"
    );
    let status = Command::new(repo_root().join("scripts/screenshots.sh"))
        .arg(&out)
        .env("VCHAT_BIN_DIR", &bin_dir)
        .status()
        .unwrap();
    assert!(status.success(), "screenshots.sh failed");
    let window = decode_png(&out.join("native-window.png"));
    // Three 240x320 tiles, one above the other.
    assert_eq!(
        (window.0, window.1),
        (720, 320),
        "the window fits the mosaic"
    );
    let page = decode_png(&out.join("browser.png"));
    assert!(page.0 >= 800 && page.1 >= 800, "{}x{}", page.0, page.1);
    // The page's mosaics are JPEG: close colours, not exact ones.
    for (png, what, tolerance) in [(&window, "window", 0), (&page, "page", 16)] {
        for who in ["alice", "bob", "carol"] {
            let s = share_of(png, 0..png.0, user_color(who), tolerance);
            assert!(s > 0.03, "{what}: {who}'s tile ({s})");
        }
        let first = &png.2[..3];
        assert!(png.2.chunks(3).any(|p| p != first), "{what}: one colour");
    }
}

/// A client whose camera is paused stays in the room, shown as a paused tile,
/// for longer than both the executor's and the gateway's idle timeouts: its
/// tiny paused frames keep it alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_client_stays_in_the_room_as_a_paused_tile() {
    let dir = scratch("paused");
    let flow = Flow::start(
        &flow_with(&dir, "      idle_timeout_s: 1\n"),
        &["--stream-idle-timeout-s", "2"],
    );
    let mut bob_cmd = Command::new(bin("vchat-client"));
    bob_cmd.args([
        flow.addr(),
        "bob",
        "--headless",
        "--source",
        "test",
        "--size",
        "240x320",
        "--paused",
    ]);
    let mut bob = Proc::spawn(bob_cmd);
    bob.wait_line("bob in the room", |l| l == "bob: participants: bob");
    let mut alice = User::connect(flow.addr());
    let start = std::time::Instant::now();
    let mut checked = 0;
    // Longer than idle_timeout_s and stream_idle_timeout_s.
    while start.elapsed() < std::time::Duration::from_secs(5) {
        let r = alice.send(frame("alice", ALICE, 240, 320)).await;
        let doc = &r.docs().unwrap()[0];
        assert_eq!(participants(doc), ["bob", "alice"], "bob is still in");
        let t = doc.tensor().unwrap();
        // Bob's tile first, at his camera's aspect: dark, with his name.
        assert_eq!(t.shape(), [480, 320, 3]);
        assert_eq!(&t.data()[..3], &PAUSED_BGR);
        assert_labelled(t, (0, 0, 240, 320), "bob", "bob paused");
        checked += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(checked > 5);
    let (status, log) = bob.interrupt();
    assert!(status.success(), "{log}");
}
