//! `vchat-browser-screenshot URL OUT.png USERS`: opens the web client at `URL`
//! in headless Chromium with a fake camera, waits until its mosaic shows `USERS`
//! participants, and saves the page as a PNG (scripts/screenshots.sh makes the
//! README's screenshot of the browser page with it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use vchat_e2e::browser::{Chromium, Page};

/// How long the page may take to show everyone.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, out, users] = &args[..] else {
        eprintln!("usage: vchat-browser-screenshot URL OUT.png USERS");
        return ExitCode::FAILURE;
    };
    let Ok(users) = users.parse::<usize>() else {
        eprintln!("USERS must be a number, got {users:?}");
        return ExitCode::FAILURE;
    };
    let out = PathBuf::from(out);
    let profile = std::env::temp_dir().join(format!("vchat-shot-{}", vchat_core::new_id()));
    std::fs::create_dir_all(&profile).expect("a profile folder");
    let chromium = Chromium::launch(&profile);
    let cdp = chromium.connect().await;
    let page = Page::open(&cdp, "screenshot", url).await;
    page.wait_for(
        "a mosaic of everyone",
        &format!("vchat.lastMosaic && vchat.lastMosaic.participants.length >= {users}"),
        PATIENCE,
    )
    .await;
    // A few more mosaics, so the one shown is drawn.
    let frames = page.eval("vchat.frames").await.as_u64().unwrap_or(0);
    page.wait_for(
        "more mosaics",
        &format!("vchat.frames > {}", frames + 5),
        PATIENCE,
    )
    .await;
    let _ = cdp
        .call(
            Some(page.session()),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 800, "height": 1090, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    page.screenshot(&out).await;
    drop(chromium);
    let _ = std::fs::remove_dir_all(&profile);
    println!("vchat-browser-screenshot: saved {}", out.display());
    ExitCode::SUCCESS
}
