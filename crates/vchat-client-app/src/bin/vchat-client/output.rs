//! The main thread's loop that feeds the mosaics to the window and the other
//! sinks, and the status line printed once per second.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use vchat_client::latest::Taken;
use vchat_client::sink::{Control, MosaicSink};
use vchat_core::Tensor;

use crate::shared::{Shared, lock};

/// Runs on the main thread until the network task ends: hands each new mosaic to
/// the sinks and lets the window handle its events. A sink's failure stops the
/// stream and is returned.
pub fn output_loop(
    shared: &Shared,
    sinks: &mut [Box<dyn MosaicSink>],
    task: &tokio::task::JoinHandle<anyhow::Result<vchat_client::PostSummary>>,
) -> anyhow::Result<()> {
    let mut failure: Option<String> = None;
    // A window's poll waits for its events (10 ms); without one, wait here.
    let mut interactive = !sinks.is_empty();
    let feed = |sinks: &mut [Box<dyn MosaicSink>], frame: &Tensor, failure: &mut Option<String>| {
        let overlay = shared.overlay();
        for s in sinks.iter_mut() {
            if let Err(e) = s.mosaic(frame, &overlay) {
                failure.get_or_insert(e);
                shared.stop.cancel();
            }
        }
    };
    while !task.is_finished() {
        let wait = if interactive {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        if let Taken::Value(frame) = shared.mosaics.take_timeout(wait)
            && failure.is_none()
        {
            feed(sinks, &frame, &mut failure);
        }
        if interactive {
            let overlay = shared.overlay();
            for s in sinks.iter_mut() {
                match s.poll(&overlay) {
                    Ok(Control::Continue) => {}
                    Ok(Control::Key(b'm')) => shared.toggle_pause(),
                    Ok(Control::Key(k)) => shared.nudge(k == b']'),
                    Ok(Control::Close) => {
                        interactive = false;
                        shared.stop.cancel();
                    }
                    Err(e) => {
                        interactive = false;
                        failure.get_or_insert(e);
                        shared.stop.cancel();
                    }
                }
            }
        }
    }
    // The last mosaic may have arrived after the last look.
    if let Taken::Value(frame) = shared.mosaics.try_take()
        && failure.is_none()
    {
        feed(sinks, &frame, &mut failure);
    }
    match failure {
        Some(e) => bail!(e),
        None => Ok(()),
    }
}

/// One status line per second.
pub async fn print_status(shared: Arc<Shared>, user: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let line = {
            let mut stats = lock(&shared.stats);
            stats.dropped = shared.dropped();
            stats.take_line()
        };
        match lock(&shared.status).as_deref() {
            Some(problem) => println!("{user}: {line} ({problem})"),
            None => println!("{user}: {line}"),
        }
    }
}
