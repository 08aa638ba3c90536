//! Under systemd (issue #15 §3): the binary speaks the notify protocol on a real
//! `NOTIFY_SOCKET` datagram socket this test makes (READY=1 with the port, WATCHDOG=1 every
//! half WATCHDOG_USEC, STOPPING=1 at SIGTERM), and with stderr being the `JOURNAL_STREAM` its
//! log lines carry syslog priorities and no timestamp of their own.

mod support;

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::process::{BIN, BINARY_KEY, ServerProcess, temp_config};
use support::*;

/// The notify socket's datagrams, each split into its `KEY=value` lines.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(format!("hws-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, path }
    }

    /// The next datagram within `WAIT`.
    fn next(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let left = deadline.saturating_duration_since(Instant::now());
        self.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within the wait");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Datagrams until one holds `line` (within `WAIT` each); returns that one.
    fn until(&self, line: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let message = self.next();
            if message.iter().any(|l| l == line) {
                return message;
            }
            assert!(Instant::now() < deadline, "no {line} notification");
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let notify = NotifySocket::bind();
    let cfg = temp_config(
        &json!({"WebSocketServer": {"Port": 0, "Interface": "127.0.0.1",
            "ShutdownTimeouts": {"CloseWaitMs": 200}}})
        .to_string(),
    );
    let mut child = ServerProcess(
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .env("HYDROGEN_API_KEY", BINARY_KEY)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "400000")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = notify.until("READY=1");
    let status = ready
        .iter()
        .find_map(|l| l.strip_prefix("STATUS=listening on "))
        .unwrap_or_else(|| panic!("READY without the address: {ready:?}"));
    // The address systemctl shows is the one the server answers on.
    let addr: std::net::SocketAddr = status.split(", ").next().unwrap().parse().unwrap();
    let mut ws = connect(addr, Some(BINARY_KEY));
    assert_eq!(
        request_ok(&mut ws, "p1", "system", "ping", json!({}))["data"]["pong"],
        true
    );
    // Pinged every half WATCHDOG_USEC (200 ms): three pings come well within the wait.
    let started = Instant::now();
    for _ in 0..3 {
        notify.until("WATCHDOG=1");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "pings came faster than every half WATCHDOG_USEC: {:?}",
        started.elapsed()
    );
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    notify.until("STOPPING=1");
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_the_server_runs() {
    // WATCHDOG_USEC alone (no NOTIFY_SOCKET) is not an error.
    let cfg = temp_config(r#"{"WebSocketServer":{"Port":0,"Interface":"127.0.0.1"}}"#);
    let started = support::process::ServerProcess::start(&cfg, "info", &[("WATCHDOG_USEC", "1")]);
    let mut ws = connect(started.addr, Some(BINARY_KEY));
    assert_eq!(
        request_ok(&mut ws, "p1", "system", "ping", json!({}))["data"]["pong"],
        true
    );
}

/// The first stderr lines of the binary started with `JOURNAL_STREAM=journal_stream`
/// (`None`: the pipe's own device and inode), up to its "listening on" line.
fn first_log_lines(journal_stream: Option<&str>) -> Vec<String> {
    let (reader, writer) = std::io::pipe().unwrap();
    let meta = std::fs::File::from(writer.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    let stream =
        journal_stream.map_or_else(|| format!("{}:{}", meta.dev(), meta.ino()), str::to_owned);
    let cfg = temp_config(r#"{"WebSocketServer":{"Port":0,"Interface":"127.0.0.1"}}"#);
    let child = ServerProcess(
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .env("HYDROGEN_API_KEY", BINARY_KEY)
            .env("RUST_LOG", "info")
            .env("JOURNAL_STREAM", stream)
            .stderr(writer)
            .spawn()
            .unwrap(),
    );
    let mut lines = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    drop(child);
    lines
}

#[test]
fn journal_lines_carry_syslog_priorities_and_no_timestamp() {
    let lines = first_log_lines(None);
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line.starts_with("<6>hydrogen_ws") || line.starts_with("<4>hydrogen_ws"),
            "not a journal line: {line:?}"
        );
        assert!(
            !line.contains("Z "),
            "a timestamp in a journal line: {line:?}"
        );
    }
    // A JOURNAL_STREAM that is not our stderr (inherited, then redirected): plain lines.
    let plain = first_log_lines(Some("1:1"));
    assert!(
        plain[0].starts_with('[') && !plain[0].starts_with('<'),
        "{:?}",
        plain[0]
    );
}
