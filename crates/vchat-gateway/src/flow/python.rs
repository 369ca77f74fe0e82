//! Python executors (an executor YAML with `py_modules`, as in Jina) run by Jina's
//! own executor runtime in a child process, then called like any external executor.
//!
//! ## The process tree
//!
//! `python -m jina executor` does not serve in the process vchat starts: it forks
//! its runtime into a process of its own (a Jina pod), and may start more. Stopping
//! the `python` process alone leaves the rest serving, and a `vchat flow` killed
//! with SIGKILL has no chance to stop anything. So each Python executor lives in a
//! process group of its own, led by a small supervisor ([`supervise`], run as the
//! hidden `vchat` subcommand [`SUPERVISE_COMMAND`]):
//!
//! - the supervisor starts `python -m jina executor` in its group and adopts
//!   every orphan of it (a child subreaper);
//! - its stdin is a pipe whose other end only the gateway holds: when the pipe
//!   closes (the gateway stops the executor, drops it, exits or is killed with
//!   SIGKILL), or on SIGTERM, SIGINT or SIGHUP, or when `python` exits by itself,
//!   it sends SIGTERM to the whole group, waits up to the grace (`stop_grace_s`)
//!   for every process of it to exit, then sends SIGKILL to the group.
//!
//! Without a supervisor ([`BuildOptions::supervisor`](crate::BuildOptions) unset,
//! for programs that do not run the `vchat` command line), `python` leads the
//! group itself and [`PythonExecutor::stop`] stops the group the same way, but a
//! gateway killed with SIGKILL leaves it running.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, Command};
use vchat_proto::jina::jina_info_rpc_client::JinaInfoRpcClient;

/// How long a Python executor may take to start (importing Jina takes seconds).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The hidden subcommand of `vchat` that runs [`supervise`]:
/// `vchat __supervise --grace-ms N -- PROGRAM ARGS...`.
pub const SUPERVISE_COMMAND: &str = "__supervise";

/// How much longer than its grace the gateway waits for a supervisor before it
/// kills the group itself.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(2);

/// How a Python executor's processes are started and stopped.
#[derive(Debug, Clone)]
pub struct Launch {
    /// A program with the [`SUPERVISE_COMMAND`] subcommand (the `vchat` binary);
    /// `None`: `python` leads its group itself.
    pub supervisor: Option<PathBuf>,
    /// How long the processes have after SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// A `jina executor` and its processes, in a process group of their own; stopped
/// by [`stop`](Self::stop), or when dropped.
pub struct PythonExecutor {
    child: Mutex<Child>,
    /// The supervisor's stdin: closing it stops the group.
    lifeline: Mutex<Option<ChildStdin>>,
    /// The process group (the id of the process vchat started, which leads it).
    pgid: Option<i32>,
    grace: Duration,
    addr: String,
}

impl PythonExecutor {
    /// `host:port` the executor serves on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The id of the process group the executor's processes live in.
    pub fn process_group(&self) -> Option<i32> {
        self.pgid
    }

    /// Starts `python -m jina executor --uses <yaml> --port <free> --host 127.0.0.1`
    /// (under a supervisor when `launch` names one) and waits until it answers
    /// `_status`. `uses_with` is passed as JSON.
    pub async fn start(
        python: &Path,
        yaml: &Path,
        uses_with: Option<&serde_json::Value>,
        launch: &Launch,
    ) -> Result<Self, String> {
        check_jina(python, yaml).await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for the Python executor: {e}"))?
            .port();
        let dir = yaml
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cmd = match &launch.supervisor {
            Some(supervisor) => {
                let mut c = Command::new(supervisor);
                c.arg(SUPERVISE_COMMAND)
                    .arg("--grace-ms")
                    .arg(launch.grace.as_millis().to_string())
                    .arg("--")
                    .arg(python);
                c
            }
            None => Command::new(python),
        };
        cmd.args(["-m", "jina", "executor", "--uses"])
            .arg(yaml.file_name().unwrap_or(yaml.as_os_str()))
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .current_dir(&dir)
            .env(
                "JINA_LOG_LEVEL",
                std::env::var("JINA_LOG_LEVEL").unwrap_or_else(|_| "WARNING".into()),
            )
            .stdin(if launch.supervisor.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Never SIGKILL the supervisor alone: its group would live on
            // without it. Dropping stops the group through the lifeline.
            .kill_on_drop(false);
        #[cfg(unix)]
        cmd.process_group(0);
        if let Some(w) = uses_with {
            cmd.args(["--uses-with", &w.to_string()]);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let program = launch.supervisor.as_deref().unwrap_or(python);
            format!("cannot start {}: {e}", program.display())
        })?;
        let lifeline = child.stdin.take();
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let mut stderr = child.stderr.take();
        let executor = PythonExecutor {
            child: Mutex::new(child),
            lifeline: Mutex::new(lifeline),
            pgid,
            grace: launch.grace,
            addr: format!("127.0.0.1:{port}"),
        };
        let channel = super::remote::channel(&executor.addr)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = executor.try_wait()? {
                let mut err = String::new();
                if let Some(e) = stderr.as_mut() {
                    let _ = e.read_to_string(&mut err).await;
                }
                let tail: Vec<&str> = err.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "the Jina executor for {} exited ({status}):\n{}",
                    yaml.display(),
                    tail.join("\n")
                ));
            }
            let mut info = JinaInfoRpcClient::new(channel.clone());
            let mut req = tonic::Request::new(());
            req.set_timeout(Duration::from_secs(1));
            let answered = tokio::time::timeout(Duration::from_secs(2), info.status(req)).await;
            if matches!(answered, Ok(Ok(_))) {
                tracing::info!(yaml = %yaml.display(), addr = %executor.addr, process_group = ?pgid, "Python executor ready");
                // Keep draining its stderr so that it never blocks on a full pipe.
                if let Some(mut e) = stderr.take() {
                    tokio::spawn(async move {
                        let mut sink = Vec::new();
                        let _ = e.read_to_end(&mut sink).await;
                    });
                }
                return Ok(executor);
            }
            if Instant::now() > deadline {
                executor.stop().await;
                return Err(format!(
                    "the Jina executor for {} did not answer within {:?}",
                    yaml.display(),
                    START_TIMEOUT
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn try_wait(&self) -> Result<Option<std::process::ExitStatus>, String> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .map_err(|e| e.to_string())
    }

    /// Stops the executor's whole process group: SIGTERM, up to the grace for
    /// every process of it to exit, then SIGKILL. Returns once the process vchat
    /// started has exited (with a supervisor: once the whole group has).
    pub async fn stop(&self) {
        let lifeline = self
            .lifeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let supervised = lifeline.is_some();
        drop(lifeline);
        if !supervised && matches!(self.try_wait(), Ok(None)) {
            self.signal_group(Signal::Term);
        }
        let slack = if supervised {
            SUPERVISOR_SLACK
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + self.grace + slack;
        let mut killed = false;
        loop {
            let exited = !matches!(self.try_wait(), Ok(None));
            // A supervisor exits last; without one, `python` may be gone while
            // the rest of its group is not.
            if exited && (supervised || !self.group_alive()) {
                return;
            }
            let now = Instant::now();
            if now >= deadline && !killed {
                tracing::warn!(addr = %self.addr, process_group = ?self.pgid, "Python executor still running after its grace: killing its process group");
                self.signal_group(Signal::Kill);
                killed = true;
            } else if killed && now >= deadline + SUPERVISOR_SLACK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether any process is left in the group.
    fn group_alive(&self) -> bool {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.filter(|&p| p > 1) {
            // SAFETY: kill(2) with signal 0 only checks that the group exists.
            return unsafe { libc::kill(-pgid, 0) } == 0;
        }
        false
    }

    fn signal_group(&self, signal: Signal) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.filter(|&p| p > 1) {
            let sig = match signal {
                Signal::Term => libc::SIGTERM,
                Signal::Kill => libc::SIGKILL,
            };
            // SAFETY: kill(2) with a negative pid signals that process group;
            // no memory is involved.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
        #[cfg(not(unix))]
        {
            let _ = signal;
            let _ = self.child.lock().map(|mut c| c.start_kill());
        }
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

impl Drop for PythonExecutor {
    fn drop(&mut self) {
        let lifeline = self
            .lifeline
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // With a supervisor, the closed pipe is the order to stop the group, which
        // it carries out even after this process is gone.
        if lifeline.is_none() && matches!(self.try_wait(), Ok(None)) {
            self.signal_group(Signal::Kill);
        }
    }
}

async fn check_jina(python: &Path, yaml: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import jina"])
        .stdin(Stdio::null())
        .output()
        .await;
    let hint = "install Jina 3 for it (pip install jina==3.34.0 with the pins in tests/jina/constraints.txt, \
                or scripts/jina-venv.sh) or name another interpreter with --python or VCHAT_PYTHON";
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(_) => Err(format!(
            "{} lists py_modules: it is a Python executor, run by Jina, but `{}` has no `jina` module: {hint}",
            yaml.display(),
            python.display()
        )),
        Err(e) => Err(format!(
            "{} lists py_modules: it is a Python executor, run by Jina, but `{}` cannot be run ({e}): {hint}",
            yaml.display(),
            python.display()
        )),
    }
}

#[cfg(unix)]
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Runs `program args` in this process's group, and stops the whole group (see
/// the module docs) when stdin closes, on SIGTERM, SIGINT or SIGHUP, or when
/// `program` exits. Returns the exit code to exit with: `program`'s own when it
/// exited by itself (128 + the signal when a signal ended it), else 0.
///
/// Meant to be the whole life of a process of its own: it installs signal
/// handlers and reaps every child of the process.
#[cfg(unix)]
pub fn supervise(grace: Duration, program: &OsStr, args: &[OsString]) -> i32 {
    // SAFETY: plain system calls on this process; the handler only stores to an
    // atomic, which is async-signal-safe.
    unsafe {
        // Orphans of the group (Jina's pod, once `python` is gone) become this
        // process's children: it can then wait for every one of them.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        if libc::getpgrp() != libc::getpid() {
            libc::setpgid(0, 0);
        }
        let handler = on_stop_signal as extern "C" fn(libc::c_int);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .spawn();
    let pid = match child {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            eprintln!(
                "vchat {SUPERVISE_COMMAND}: cannot start {}: {e}",
                Path::new(program).display()
            );
            return 127;
        }
    };
    let mut code = None;
    loop {
        reap(pid, &mut code);
        if code.is_some() || STOP.load(std::sync::atomic::Ordering::SeqCst) || lifeline_closed() {
            break;
        }
    }
    // SAFETY: kill(2) on this process's own group (pid 0).
    unsafe {
        libc::kill(0, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        if !reap(pid, &mut code) {
            return code.unwrap_or(0);
        }
        if Instant::now() >= deadline {
            // The group, this process included: nothing is left to wait for.
            // SAFETY: as above.
            unsafe {
                libc::kill(0, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reaps every child that exited (recording `pid`'s exit code in `code`);
/// whether any child is left.
#[cfg(unix)]
fn reap(pid: libc::pid_t, code: &mut Option<i32>) -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes the status into a local.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            if r == pid {
                *code = Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    1
                });
            }
            continue;
        }
        if r == 0 {
            return true;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // ECHILD: no child at all, adopted ones included.
            _ => return false,
        }
    }
}

/// Whether stdin (the gateway's end of the pipe) closed; waits up to 50 ms.
#[cfg(unix)]
fn lifeline_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd that lives on the stack.
    let n = unsafe { libc::poll(&mut fd, 1, 50) };
    if n <= 0 {
        // Timeout, or EINTR (a signal: the caller checks for it).
        return false;
    }
    if fd.revents & libc::POLLIN != 0 {
        let mut buf = [0u8; 64];
        // SAFETY: read(2) into a local buffer of the given length.
        let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        // Data means nothing (nobody writes to it); only the end counts.
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            return !matches!(e, Some(libc::EINTR) | Some(libc::EAGAIN));
        }
        return r == 0;
    }
    fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}
