//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// Join a vchat video chat: stream your webcam to a vchat (or Jina) gateway and
/// see the mosaic of every user in the room.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    after_help = "In the window: h shows the keys, m pauses and resumes your camera, ESC or q \
        leaves the chat. Examples:\n  \
        vchat-client grpc://192.168.1.20:12345 alice\n  \
        vchat-client grpc://127.0.0.1:12345 bob --source clip.avi --loop\n  \
        vchat-client grpc://127.0.0.1:12345 carol --headless --source test --frames 300"
)]
pub struct Args {
    /// Gateway address, as `vchat flow` prints it: grpc://HOST:PORT, or
    /// grpcs://HOST:PORT for a Flow served over TLS.
    pub addr: String,
    /// Your name in the chat (sent as tags.user).
    pub user: String,
    /// Room to join (tags.room); users in other rooms never see you.
    #[arg(long)]
    pub room: Option<String>,
    /// Frame source: a camera index (0 is the default webcam), a video file, or
    /// `test` (a moving pattern in a colour derived from the user name).
    #[arg(long, default_value = "0")]
    pub source: String,
    /// Start a video file over at its end instead of leaving the chat.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Frame size sent, HEIGHTxWIDTH; every frame is resized to it.
    #[arg(long, default_value = "200x300", value_parser = parse_size)]
    pub size: (usize, usize),
    /// Most frames per second sent [default: the camera's or the file's rate; 30
    /// for the test pattern]; 0: as fast as responses come back.
    #[arg(long)]
    pub fps: Option<f64>,
    /// No window: print a status line per second instead.
    #[arg(long)]
    pub headless: bool,
    /// Write the received mosaics to this video file (.avi: MJPG).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Save the newest mosaic to this PNG file on exit.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Save a contact sheet of the chat over time to this PNG file on exit: the
    /// mosaic each time the room's users change, and one every
    /// --contact-sheet-every seconds (at most 16 moments, spread over the run).
    #[arg(long)]
    pub contact_sheet: Option<PathBuf>,
    /// Seconds between two moments of --contact-sheet.
    #[arg(long, default_value_t = 2.0)]
    pub contact_sheet_every: f64,
    /// Join with the camera paused: the others see a "paused" tile with your
    /// name until `m` in the window resumes it.
    #[arg(long)]
    pub paused: bool,
    /// Stop after sending this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Requests in flight at most; the frame sent is always the newest one.
    #[arg(long, default_value_t = 2)]
    pub prefetch: usize,
    /// Endpoint to call (the request's exec_endpoint).
    #[arg(long, default_value = "/")]
    pub endpoint: String,
    /// How the stream flows: `send-receive` (a frame in, a mosaic out), `receive`
    /// (one request, then the frames a source executor on the server yields), `send`
    /// (frames in; acknowledgements and extra outputs back, no frames).
    #[arg(long, default_value = "send-receive", value_parser = ["send-receive", "receive", "send"])]
    pub mode: String,
    /// An extra input sent with every request, KEY=VALUE (a number, true/false, or
    /// text); repeat for more. In the window, `]` raises and `[` lowers the first
    /// numeric one by 10% while streaming.
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, vchat_core::Value)>,
    /// Exit when the server is unreachable or goes away, instead of retrying.
    #[arg(long)]
    pub no_reconnect: bool,
    /// CA certificate (PEM) that signed the server's, for grpcs:// with a private
    /// CA or a self-signed certificate [default: the system's roots].
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Access token for a Flow with access control (`vchat token` makes one);
    /// USER must be the token's identity.
    #[arg(long, env = "VCHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How frames travel: `raw` (uint8 tensors) or `jpeg` (blobs with mime_type
    /// image/jpeg; the mosaics come back as JPEG too).
    #[arg(long, default_value = "raw", value_parser = ["raw", "jpeg"])]
    pub encoding: String,
    /// JPEG quality, 1 to 100 (with --encoding jpeg).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
}

pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not HEIGHTxWIDTH, e.g. 200x300"))?;
    let h: usize = h.parse().map_err(|_| format!("bad height in {s:?}"))?;
    let w: usize = w.parse().map_err(|_| format!("bad width in {s:?}"))?;
    if h == 0 || w == 0 || h > 4320 || w > 7680 {
        return Err(format!(
            "{s:?}: height and width must be 1..=4320 and 1..=7680"
        ));
    }
    Ok((h, w))
}

pub fn parse_param(s: &str) -> Result<(String, vchat_core::Value), String> {
    use vchat_core::value::Kind;
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    let kind = match (v.parse::<f64>(), v) {
        (Ok(n), _) if n.is_finite() => Kind::NumberValue(n),
        (_, "true") => Kind::BoolValue(true),
        (_, "false") => Kind::BoolValue(false),
        _ => Kind::StringValue(v.to_string()),
    };
    Ok((k.to_string(), vchat_core::Value { kind: Some(kind) }))
}
