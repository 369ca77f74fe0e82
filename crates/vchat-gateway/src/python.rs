//! Python executors (an executor YAML with `py_modules`, as in Jina) run by Jina's
//! own executor runtime in a child process, then called like any external executor.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use vchat_proto::jina::jina_info_rpc_client::JinaInfoRpcClient;

/// How long a Python executor may take to start (importing Jina takes seconds).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A `jina executor` child process, stopped when dropped.
pub struct PythonExecutor {
    child: Child,
    addr: String,
}

impl PythonExecutor {
    /// `host:port` the executor serves on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Starts `python -m jina executor --uses <yaml> --port <free> --host 127.0.0.1`
    /// and waits until it answers `_status`. `uses_with` is passed as JSON.
    pub async fn start(
        python: &Path,
        yaml: &Path,
        uses_with: Option<&serde_json::Value>,
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
        let mut cmd = Command::new(python);
        cmd.args(["-m", "jina", "executor", "--uses"])
            .arg(yaml.file_name().unwrap_or(yaml.as_os_str()))
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .current_dir(&dir)
            .env(
                "JINA_LOG_LEVEL",
                std::env::var("JINA_LOG_LEVEL").unwrap_or_else(|_| "WARNING".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(w) = uses_with {
            cmd.args(["--uses-with", &w.to_string()]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let channel = crate::remote::channel(&addr)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
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
            if info.status(req).await.is_ok() {
                tracing::info!(yaml = %yaml.display(), addr = %addr, "Python executor ready");
                // Keep draining its stderr so that it never blocks on a full pipe.
                if let Some(mut e) = child.stderr.take() {
                    tokio::spawn(async move {
                        let mut sink = Vec::new();
                        let _ = e.read_to_end(&mut sink).await;
                    });
                }
                return Ok(PythonExecutor { child, addr });
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(format!(
                    "the Jina executor for {} did not answer within {:?}",
                    yaml.display(),
                    START_TIMEOUT
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PythonExecutor {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
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
