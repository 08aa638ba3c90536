//! Refusing an upgrade request: the HTTP status, the JSON error body every refusal carries
//! (docs/protocol.md §1), written within the handshake deadline, then a short linger so the
//! client reads the answer rather than a reset.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::net::stream::Transport;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::registry::metrics::Metrics;
use crate::server::registry::state::ConnState;
use crate::server::security::limits::Limits;
use crate::wake::{self, Interest};

/// After a rejection, how long we keep reading (and discarding) so the client sees our
/// response rather than a reset.
const LINGER_AFTER_REJECT: Duration = Duration::from_millis(250);

/// A rejection: HTTP status, error code, message, extra headers.
pub(crate) struct Rejection {
    status: u16,
    reason: &'static str,
    code: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
    state: ConnState,
    violation: bool,
}

impl Rejection {
    pub(crate) fn new(
        status: u16,
        reason: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Rejection {
            status,
            reason,
            code,
            message: message.into(),
            headers: Vec::new(),
            state: ConnState::Failed,
            violation: false,
        }
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub(crate) fn state(mut self, state: ConnState) -> Self {
        self.state = state;
        self
    }
    /// The close code and reason a browser gets instead of this refusal, which it could not
    /// read: 4400 for a request without the subprotocol (`offered_none`), 4401 for refused
    /// credentials. `None`: the refusal stays an HTTP answer.
    pub(crate) fn browser_close(&self, offered_none: bool) -> Option<(u16, String)> {
        let code = match (self.code, self.status) {
            ("invalid_protocol", _) if offered_none => 4400,
            (_, 401) => 4401,
            _ => return None,
        };
        Some((code, close_reason(&self.message)))
    }

    /// The state the refused connection ends in.
    pub(crate) fn end_state(&self) -> ConnState {
        self.state
    }

    /// Counts against the address's ViolationsBeforeBlock (failed authentication).
    pub(crate) fn violation(mut self) -> Self {
        self.violation = true;
        self
    }
}

/// `message` cut to what a close frame's reason holds (123 bytes), at a character boundary.
fn close_reason(message: &str) -> String {
    let mut end = message.len().min(123);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

/// 400 for a request head `httparse` refused (`why`).
pub(crate) fn malformed(why: &str) -> Rejection {
    Rejection::new(
        400,
        "Bad Request",
        "invalid_message",
        format!("malformed HTTP request: {why}"),
    )
}

/// Answers `r` on `stream` (best effort until `deadline`), counts it in `metrics` (and as a
/// violation of the address in `limits` when it is one), closes, and leaves `conn` in the
/// rejection's state.
pub(crate) fn reject(
    metrics: &Metrics,
    limits: &Limits,
    conn: &ConnectionHandle,
    mut stream: Transport,
    r: Rejection,
    deadline: Instant,
) {
    count(metrics, limits, conn, &r);
    log::info!(
        "conn {} {}: handshake rejected: {} {} ({})",
        conn.id,
        conn.peer,
        r.status,
        r.code,
        r.message
    );
    let body =
        json!({"error": {"code": r.code, "message": r.message, "details": {"status": r.status}}});
    let headers: Vec<(&str, String)> = r.headers.iter().map(|(k, v)| (*k, v.clone())).collect();
    write_response(
        &mut stream,
        (r.status, r.reason),
        "application/json",
        &headers,
        &body.to_string(),
        deadline,
    );
    linger_and_close(&mut stream, deadline);
    conn.set_state(r.state, metrics);
}

/// Counts a refusal (and its violation of the address, when it is one).
pub(crate) fn count(metrics: &Metrics, limits: &Limits, conn: &ConnectionHandle, r: &Rejection) {
    metrics.count_rejection(r.code);
    if r.violation {
        limits.violation(conn.peer.ip());
    }
}

/// Writes a complete HTTP response (best effort until `deadline`).
pub(crate) fn write_response(
    stream: &mut Transport,
    (status, reason): (u16, &str),
    content_type: &str,
    headers: &[(&str, String)],
    body: &str,
    deadline: Instant,
) {
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let mut bytes = text.as_bytes();
    let interest = [Interest {
        fd: stream.raw_fd(),
        read: false,
        write: true,
    }];
    let mut ready = Vec::with_capacity(1);
    loop {
        let step = if bytes.is_empty() {
            // Everything is with us or rustls: push it to the socket.
            match stream.flush() {
                Ok(()) => return,
                Err(e) => Err(e),
            }
        } else {
            stream.write(bytes)
        };
        match step {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline
                    || wake::wait(&interest, Some(deadline), &mut ready).is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Half-closes and discards what the client still sends for a short while, so it reads our
/// response instead of a connection reset.
pub(crate) fn linger_and_close(stream: &mut Transport, deadline: Instant) {
    stream.shutdown_write();
    let tcp: &TcpStream = &stream.tcp;
    let until = deadline.min(wake::after(LINGER_AFTER_REJECT));
    let interest = [Interest {
        fd: tcp.as_raw_fd(),
        read: true,
        write: false,
    }];
    let mut ready = Vec::with_capacity(1);
    let mut sink = [0u8; 512];
    let mut reader = tcp;
    loop {
        match reader.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= until
                    || wake::wait(&interest, Some(until), &mut ready).is_err()
                {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
