//! The test's processes: paths in the repository and the target directory,
//! signals, a program whose output lines a test waits for, an X server, and
//! loopback ports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::PATIENCE;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of a binary of this workspace, built by `cargo build --workspace --bins`
/// into the same target directory as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A temporary directory for one test, under target/.
pub fn scratch(tag: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .ancestors()
        .nth(3)
        .unwrap()
        .join("e2e")
        .join(format!("{tag}-{}", vchat_core::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` (creating folders) and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// How long a process stopped by a test helper has after SIGTERM before SIGKILL:
/// more than a Flow's own grace for its streams and its executors' processes.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Sends `signal` (`libc::SIGTERM`, ...) to the process `child`.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Stops `child` as a user would: SIGTERM, then SIGKILL if it is still running
/// after `grace`; returns how it exited.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Processes (pid, command line) whose environment holds `key=value`: the
/// descendants of a process started with that variable, however deep, even
/// when other tests run processes of the same programs beside them. Zombies
/// (their environment is gone) are not counted.
pub fn processes_with_env(key: &str, value: &str) -> Vec<(u32, String)> {
    let wanted = format!("{key}={value}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

/// A loopback port nobody listens on right now: bound by the OS, then released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python of the virtual environment with Jina 3.34 in it.
pub fn jina_python() -> PathBuf {
    let py = repo_root().join("target/jina-venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/jina-venv.sh (scripts/test.sh does) to install Jina 3.34",
        py.display()
    );
    py
}

/// A running process whose output lines the test can wait for; stopped (SIGTERM,
/// then SIGKILL after [`STOP_GRACE`]) when dropped.
pub struct Proc {
    child: Child,
    lines: std::sync::mpsc::Receiver<(bool, String)>,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the process");
        let (tx, lines) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (is_err, pipe) in [
            (false, Box::new(out) as Box<dyn std::io::Read + Send>),
            (true, Box::new(err)),
        ] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    {
                        let mut l = log.lock().unwrap();
                        l.push_str(&line);
                        l.push('\n');
                    }
                    let _ = tx.send((is_err, line));
                }
            });
        }
        Proc { child, lines, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far, stdout and stderr interleaved.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a line (stdout or stderr) for which `pred` holds and returns it;
    /// panics with the log after [`PATIENCE`].
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line {what} in time; output so far:\n{}", self.log()),
            }
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit; returns the status and the log.
    pub fn interrupt(self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.wait()
    }

    /// Waits for the exit (at most [`PATIENCE`] after output stops mattering);
    /// returns the status and everything printed.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE * 3;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit; output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads catch the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.log())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child, STOP_GRACE);
    }
}

/// An X server for window tests: `Xvfb -displayfd`, so the server picks a free
/// display number itself and parallel tests never race for one (which
/// `xvfb-run -a` can). Killed when dropped.
pub struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Starts Xvfb; panics with how to install it when it is missing.
    pub fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x1024x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is missing: run scripts/install-deps.sh (Debian package xvfb)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let n: u32 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("Xvfb did not report its display: {line:?}")
        });
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }

    /// The value for DISPLAY.
    pub fn display(&self) -> &str {
        &self.display
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
