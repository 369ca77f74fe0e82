//! A running `vchat flow` (or `vchat executor`), started and stopped as a user
//! would, with the addresses it prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::PATIENCE;
use crate::process::{STOP_GRACE, bin, repo_root, signal, terminate};

/// A running `vchat flow`, stopped (SIGTERM, then SIGKILL after [`STOP_GRACE`])
/// when dropped.
pub struct Flow {
    child: Child,
    addr: String,
    metrics: Option<String>,
    web: Option<String>,
    stderr: Arc<Mutex<String>>,
}

impl Flow {
    /// Starts `vchat flow --uses <flow> --host 127.0.0.1 --port 0 <extra>` and waits
    /// for its `vchat: listening on` line.
    pub fn start(flow: &Path, extra: &[&str]) -> Flow {
        Flow::start_on_port(flow, 0, extra)
    }

    /// [`start`](Self::start) on a given port: to restart a Flow where its clients
    /// expect it (get a free one from [`free_port`](crate::free_port)).
    pub fn start_on_port(flow: &Path, port: u16, extra: &[&str]) -> Flow {
        use std::ffi::OsStr;
        let port = port.to_string();
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("flow"), OsStr::new("--uses"), flow.as_os_str()];
        args.extend(["--host", "127.0.0.1", "--port", port.as_str()].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        Flow::spawn(&bin("vchat"), &args)
    }

    /// Starts `vchat executor --uses <yaml> --host 127.0.0.1 --port <port>`.
    pub fn executor(yaml: &Path, port: u16) -> Flow {
        use std::ffi::OsStr;
        let port = port.to_string();
        let args = [
            OsStr::new("executor"),
            OsStr::new("--uses"),
            yaml.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("127.0.0.1"),
            OsStr::new("--port"),
            OsStr::new(&port),
        ];
        Flow::spawn(&bin("vchat"), &args)
    }

    /// Starts `program args...` and waits for its `vchat: listening on` line.
    pub fn spawn(program: &Path, args: &[&std::ffi::OsStr]) -> Flow {
        Flow::spawn_with_env(program, args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(flow: &Path, extra: &[&str], env: &[(&str, &str)]) -> Flow {
        use std::ffi::OsStr;
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("flow"), OsStr::new("--uses"), flow.as_os_str()];
        args.extend(["--host", "127.0.0.1", "--port", "0"].map(OsStr::new));
        args.extend(extra.iter().map(OsStr::new));
        Flow::spawn_with_env(&bin("vchat"), &args, env)
    }

    /// [`spawn`](Self::spawn) with extra environment variables.
    pub fn spawn_with_env(program: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Flow {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vchat flow");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let err = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // The metrics line and the web line (http:// or https://), when there
            // are, come before the gRPC address.
            let (mut metrics, mut web) = (None, None);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("vchat: metrics on ") {
                    metrics = Some(url.trim().to_string());
                }
                if let Some(addr) = line.strip_prefix("vchat: listening on ") {
                    let addr = addr.trim().to_string();
                    if addr.starts_with("http://") || addr.starts_with("https://") {
                        web = Some(addr);
                    } else {
                        let _ = tx.send((addr, metrics.take(), web.take()));
                    }
                }
            }
        });
        let (addr, metrics, web) = match rx.recv_timeout(PATIENCE) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} did not start; stderr:\n{}",
                    program.display(),
                    stderr.lock().unwrap()
                );
            }
        };
        Flow {
            child,
            addr,
            metrics,
            web,
            stderr,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), when the Flow serves the
    /// browser side.
    pub fn web_url(&self) -> &str {
        self.web.as_deref().expect("the Flow serves the web client")
    }

    /// `http://127.0.0.1:PORT/metrics`, when the Flow serves metrics.
    pub fn metrics_url(&self) -> &str {
        self.metrics.as_deref().expect("the Flow serves metrics")
    }

    /// Starts the repository's own `flow.yml` without the names on tiles
    /// (`tests/flows/unlabelled.yml`): its tests compare every pixel of a
    /// mosaic with the colours sent.
    pub fn start_default(extra: &[&str]) -> Flow {
        Flow::start(&repo_root().join("tests/flows/unlabelled.yml"), extra)
    }

    /// `grpc://127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// What the process logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit (at most [`PATIENCE`]).
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        self.wait_exit("SIGTERM")
    }

    /// Kills the process with SIGKILL, alone (not its children), and reaps it.
    pub fn kill_hard(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGKILL);
        self.wait_exit("SIGKILL")
    }

    fn wait_exit(&mut self, after: &str) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit after {after}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGINT without waiting for the exit.
    pub fn signal_interrupt(&self) {
        signal(&self.child, libc::SIGINT);
    }

    /// Sends SIGINT and waits for the exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal_interrupt();
        self.wait_exit("SIGINT")
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        // Gracefully, so that the Flow stops the processes it started.
        terminate(&mut self.child, STOP_GRACE);
    }
}
