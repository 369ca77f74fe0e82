//! Test support: start the real `vchat` binaries on loopback ports chosen by the OS,
//! and talk to them with the client library or with raw protocol messages.
//!
//! A file a job, everything re-exported here so that a test file needs only
//! `use vchat_e2e::*`: `process.rs` (paths, signals, programs, ports), `flow.rs`
//! (a running Flow), `frames.rs` (test frames and mosaic checks), `user.rs` (a
//! chat user through the client library), `raw.rs` (raw protocol messages),
//! `http.rs` (metrics over HTTP), `certs.rs` (a test CA). [`browser`] drives
//! Chromium and WebSocket clients.

use std::time::Duration;

pub mod browser;
mod certs;
mod flow;
mod frames;
mod http;
mod process;
mod raw;
mod user;

pub use certs::*;
pub use flow::*;
pub use frames::*;
pub use http::*;
pub use process::*;
pub use raw::*;
pub use user::*;

/// How long any single expected event may take before a test gives up. Generous:
/// the machines are shared; tests assert on what arrives, not on how fast.
pub const PATIENCE: Duration = Duration::from_secs(20);
