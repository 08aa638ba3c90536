//! The real `hydrogen-ws` binary as a child process: a config file, its stderr lines, the
//! address it listens on, and its resident memory (for tests that measure the server alone).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, unbounded};

use super::WAIT;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_hydrogen-ws");
/// The API key the started binary gets in `HYDROGEN_API_KEY`.
pub const BINARY_KEY: &str = "binary-test-secret-key-9f8e7d";

/// Writes `body` to a fresh config file in the temp directory.
pub fn temp_config(body: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "hws-test-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, body).unwrap();
    path
}

/// A server process that is killed if the test fails before it exits (otherwise it would
/// outlive the test, holding the harness's stdout open).
pub struct ServerProcess(pub Child);

impl std::ops::Deref for ServerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A started server: the process, its stderr lines (and the thread reading them), the lines
/// seen so far, and the address it listens on.
pub struct Started {
    pub child: ServerProcess,
    pub rx: Receiver<String>,
    pub reader: std::thread::JoinHandle<()>,
    pub log: Vec<String>,
    pub addr: std::net::SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on the config file `cfg` with the test key, `RUST_LOG=rust_log` and
    /// the `extra_env`, and waits for its "listening on" line.
    pub fn start(cfg: &std::path::Path, rust_log: &str, extra_env: &[(&str, &str)]) -> Started {
        let mut child = ServerProcess(
            Command::new(BIN)
                .args(["--config", cfg.to_str().unwrap()])
                .env("HYDROGEN_API_KEY", BINARY_KEY)
                .env("RUST_LOG", rust_log)
                .envs(extra_env.iter().copied())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (rx, reader) = stderr_lines(&mut child);
        let mut log = Vec::new();
        let line = wait_line(&rx, &mut log, |l| l.contains("listening on 127.0.0.1:"));
        let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
        Started {
            child,
            rx,
            reader,
            log,
            addr,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Collects the child's stderr lines on a thread.
pub fn stderr_lines(child: &mut Child) -> (Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, rx) = unbounded();
    let stderr = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (rx, t)
}

pub fn wait_line(
    rx: &Receiver<String>,
    log: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("log line not seen; log so far:\n{}", log.join("\n")));
        log.push(line.clone());
        if pred(&line) {
            return line;
        }
    }
}

impl Started {
    /// The server process's resident memory in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server process is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}
