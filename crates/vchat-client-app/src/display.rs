//! Is there a display to open a window on?
//!
//! OpenCV's Qt (and GTK) backend aborts the whole process when it cannot connect
//! to a display, so the client checks first and fails with a message instead.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// `Ok(())` when a window can probably be opened, else why not, in words that say
/// what to do. Reads `QT_QPA_PLATFORM`, `WAYLAND_DISPLAY`, `XDG_RUNTIME_DIR` and
/// `DISPLAY`.
pub fn check_display() -> Result<(), String> {
    check_with(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn check_with(env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    // Qt platforms that need no display server at all.
    if let Some(p) = env("QT_QPA_PLATFORM")
        && ["offscreen", "minimal", "vnc"]
            .iter()
            .any(|ok| p.split(':').next() == Some(ok))
    {
        return Ok(());
    }
    if let Some(w) = env("WAYLAND_DISPLAY") {
        let path = if w.starts_with('/') {
            PathBuf::from(&w)
        } else {
            PathBuf::from(env("XDG_RUNTIME_DIR").unwrap_or_default()).join(&w)
        };
        if UnixStream::connect(&path).is_ok() {
            return Ok(());
        }
    }
    let Some(display) = env("DISPLAY") else {
        return Err(
            "no display: DISPLAY is not set. Run where a desktop session is, use `ssh -X`, \
             or run with --headless (add --snapshot FILE.png or --record FILE.avi to keep the mosaics)"
                .to_string(),
        );
    };
    let (host, number) = parse_display(&display).ok_or_else(|| {
        format!("no display: DISPLAY={display:?} is not of the form [HOST]:N[.S]; use --headless")
    })?;
    let reachable = if host.is_empty() || host == "unix" {
        // Linux also has the abstract socket; the file is there on every X server.
        UnixStream::connect(format!("/tmp/.X11-unix/X{number}")).is_ok()
    } else {
        let port = 6000 + number;
        use std::net::ToSocketAddrs;
        (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
            })
    };
    if reachable {
        Ok(())
    } else {
        Err(format!(
            "no display: nothing answers at DISPLAY={display} (is the X server running? \
             under ssh, use `ssh -X`); run with --headless to stream without a window"
        ))
    }
}

/// `[host]:N[.S]` to (host, N).
fn parse_display(d: &str) -> Option<(String, u16)> {
    let (host, rest) = d.rsplit_once(':')?;
    let number = rest.split('.').next()?.parse().ok()?;
    Some((host.to_string(), number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn displays() {
        assert_eq!(parse_display(":0"), Some((String::new(), 0)));
        assert_eq!(
            parse_display("localhost:10.0"),
            Some(("localhost".into(), 10))
        );
        assert_eq!(parse_display("nonsense"), None);
        assert!(
            check_with(env(&[]))
                .unwrap_err()
                .contains("DISPLAY is not set")
        );
        assert!(check_with(env(&[("QT_QPA_PLATFORM", "offscreen")])).is_ok());
        let err = check_with(env(&[("DISPLAY", ":65000")])).unwrap_err();
        assert!(err.contains("nothing answers at DISPLAY=:65000"), "{err}");
        assert!(check_with(env(&[("DISPLAY", "bad")])).is_err());
    }
}
