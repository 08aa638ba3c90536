//! The HTTP upgrade (docs/protocol.md §1): read the request head within HandshakeTimeoutMs, answer
//! `/health` and non-upgrade requests, check subprotocol, credentials and limits, answer each
//! rejection with its status and JSON error body, and hand accepted requests to tungstenite.
//!
//! The request head is parsed with `httparse` (what tungstenite uses) because tungstenite
//! cannot answer a non-upgrade request; the bytes read are then replayed to tungstenite's own
//! handshake, which validates the upgrade and writes the 101 response.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{WebSocket, accept_hdr_with_config};

use crate::server::context::{ConnState, ConnectionShared, ServerContext};
use crate::server::net::admission::admit;
pub(crate) use crate::server::net::admission::release_slot;
pub(crate) use crate::server::net::stream::ClientStream;
use crate::server::security::auth::Identity;
use crate::tls_io;
use crate::wake::{self, Interest};

/// Largest request head accepted; larger gets 431.
const MAX_HEAD_BYTES: usize = 8192;
/// Most request headers parsed.
const MAX_HEADERS: usize = 48;
/// After a rejection, how long we keep reading (and discarding) so the client sees our
/// response rather than a reset.
const LINGER_AFTER_REJECT: Duration = Duration::from_millis(250);
/// Cap on tungstenite's output buffer (tungstenite's own default is unbounded). A
/// connection stops reading, and taking queued output, while its socket is write-blocked,
/// so output grows by at most one batch and one message; the cap is the safety net that
/// drops a client whose output would grow past it anyway. At least this, or room for one
/// MaxMessageSize message beyond a batch; a larger message the server itself sends (an
/// event from a `Publisher`) raises it for as long as that message waits
/// ([`write_buffer_cap`]).
const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Frames are gathered up to this many bytes before a `write(2)`; the connection loop
/// flushes everything before it sleeps, so this only batches, it never delays. The buffer
/// grows only on connections that are busy.
const WRITE_BATCH_BYTES: usize = 16 * 1024;
/// The cap on a connection's output buffer: room for a batch and a message of
/// `message_len` bytes, and never less than the base cap for `max_message_size`.
pub(crate) fn write_buffer_cap(max_message_size: usize, message_len: usize) -> usize {
    MAX_WRITE_BUFFER_BYTES.max(max_message_size.max(message_len) + 2 * WRITE_BATCH_BYTES)
}

/// Read buffer for tungstenite: small, because it is allocated per connection.
pub(crate) const READ_BUFFER_BYTES: usize = 2048;

/// How a handshake ended.
pub(crate) enum Outcome {
    /// Upgraded. `identity` is `None` when the client must still authenticate (Verifying).
    Upgraded {
        ws: Box<WebSocket<ClientStream>>,
        identity: Option<Identity>,
        counted: bool,
    },
    /// Answered (health, rejection) or failed; the connection is over.
    Finished,
}

/// What the request head says, as far as we need it.
pub(super) struct RequestHead {
    pub(super) is_get: bool,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) is_upgrade: bool,
    pub(super) protocols: Vec<String>,
    /// Every `Authorization` header (more than one is ambiguous and refused).
    pub(super) authorization: Vec<String>,
    /// What is wrong with the upgrade itself (HTTP version, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`), found before tungstenite sees it so the client gets an answer.
    pub(super) upgrade_problem: Option<UpgradeProblem>,
    /// Bytes that came after the head: a client that did not wait for `101`.
    pub(super) trailing_bytes: usize,
}

/// Why an upgrade request cannot be upgraded (RFC 6455 §4.1, §4.2.1, §4.4).
pub(super) enum UpgradeProblem {
    /// Not HTTP/1.1 or later.
    HttpVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not the base64 of 16 bytes.
    Key(&'static str),
    /// `Sec-WebSocket-Version` missing or not 13: 426 with the version we speak.
    Version(String),
}

impl UpgradeProblem {
    fn rejection(&self) -> Rejection {
        match self {
            UpgradeProblem::HttpVersion => Rejection::new(
                400,
                "Bad Request",
                "invalid_message",
                "a WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.1)",
            ),
            UpgradeProblem::Key(why) => Rejection::new(
                400,
                "Bad Request",
                "invalid_message",
                format!(
                    "Sec-WebSocket-Key {why}: send one header holding 16 random bytes in base64 (RFC 6455 4.1)"
                ),
            ),
            UpgradeProblem::Version(got) => Rejection::new(
                426,
                "Upgrade Required",
                "upgrade_required",
                format!(
                    "Sec-WebSocket-Version {got}: this server speaks version 13 (RFC 6455 4.4)"
                ),
            )
            .header("Sec-WebSocket-Version", "13"),
        }
    }
}

/// Whether `key` is what RFC 6455 §4.1 asks for: the base64 of 16 bytes, which is always
/// 22 base64 characters and `==` (no decoding is needed to know).
fn is_websocket_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A rejection: HTTP status, error code, message, extra headers.
pub(super) struct Rejection {
    status: u16,
    reason: &'static str,
    code: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
    state: ConnState,
    violation: bool,
}

impl Rejection {
    pub(super) fn new(
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
    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub(super) fn state(mut self, state: ConnState) -> Self {
        self.state = state;
        self
    }
    /// Counts against the address's ViolationsBeforeBlock (failed authentication).
    pub(super) fn violation(mut self) -> Self {
        self.violation = true;
        self
    }
}

/// Runs the whole handshake for one accepted socket. Never blocks past HandshakeTimeoutMs.
pub(crate) fn perform(
    ctx: &ServerContext,
    conn: &ConnectionShared,
    tcp: Arc<TcpStream>,
) -> Outcome {
    let deadline = wake::after(ctx.config.handshake_timeout);
    let mut stream = ClientStream {
        tcp,
        tls: None,
        replay: Vec::new(),
        replay_pos: 0,
        last_write_blocked: false,
    };
    if let Some(config) = &ctx.tls {
        let tls_conn = rustls::ServerConnection::new(config.clone()).map(Box::new);
        let done = tls_conn.map_err(|e| e.to_string()).and_then(|mut c| {
            tls_io::handshake(&mut c, &stream.tcp, deadline)?;
            Ok(c)
        });
        match done {
            Ok(c) => stream.tls = Some(c),
            Err(why) => {
                ctx.metrics.count_rejection("tls_failed");
                log::info!("conn {} {}: {why}; closed", conn.id, conn.peer);
                conn.set_state(ConnState::Failed, &ctx.metrics);
                return Outcome::Finished;
            }
        }
    }
    let head_bytes = match read_head(&mut stream, conn, ctx, deadline) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Outcome::Finished, // shutdown, or the client went away
        Err(HeadError::Timeout) => {
            ctx.metrics.count_rejection("handshake_timeout");
            log::info!(
                "conn {} {}: handshake not complete within {:?}; closed",
                conn.id,
                conn.peer,
                ctx.config.handshake_timeout
            );
            conn.set_state(ConnState::Failed, &ctx.metrics);
            return Outcome::Finished;
        }
        Err(HeadError::TooLarge) => {
            let r = Rejection::new(
                431,
                "Request Header Fields Too Large",
                "invalid_message",
                "request head over 8 KiB",
            );
            return reject(ctx, conn, stream, r, deadline);
        }
        Err(HeadError::Malformed(why)) => {
            return reject(ctx, conn, stream, malformed(&why), deadline);
        }
    };
    let head = match parse_head(&head_bytes) {
        Ok(h) => h,
        Err(why) => return reject(ctx, conn, stream, malformed(&why), deadline),
    };
    if !head.is_upgrade || !head.is_get {
        if head.is_get && head.path == "/health" {
            write_response(
                &mut stream,
                200,
                "OK",
                &[],
                &json!({"status": "ok"}).to_string(),
                deadline,
            );
            linger_and_close(&mut stream, deadline);
            conn.set_state(ConnState::Closed, &ctx.metrics);
            return Outcome::Finished;
        }
        let r = Rejection::new(
            426,
            "Upgrade Required",
            "upgrade_required",
            "this is a WebSocket endpoint: send an HTTP/1.1 upgrade (GET with Upgrade: websocket)",
        )
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13");
        return reject(ctx, conn, stream, r, deadline);
    }
    if let Some(problem) = &head.upgrade_problem {
        return reject(ctx, conn, stream, problem.rejection(), deadline);
    }
    if head.trailing_bytes > 0 {
        // tungstenite would refuse this too ("junk after client request"), but silently.
        let r = Rejection::new(
            400,
            "Bad Request",
            "invalid_message",
            "data sent before the handshake response: wait for 101 Switching Protocols (RFC 6455 4.1)",
        );
        return reject(ctx, conn, stream, r, deadline);
    }
    let admitted = match admit(ctx, conn, &head) {
        Ok(a) => a,
        Err(r) => return reject(ctx, conn, stream, r, deadline),
    };
    stream.replay = head_bytes;
    match upgrade(ctx, conn, stream, admitted.protocol.clone(), deadline) {
        Some(ws) => Outcome::Upgraded {
            ws: Box::new(ws),
            identity: admitted.identity,
            counted: true,
        },
        None => {
            release_slot(ctx);
            conn.set_state(ConnState::Failed, &ctx.metrics);
            Outcome::Finished
        }
    }
}

fn malformed(why: &str) -> Rejection {
    Rejection::new(
        400,
        "Bad Request",
        "invalid_message",
        format!("malformed HTTP request: {why}"),
    )
}

enum HeadError {
    Timeout,
    TooLarge,
    Malformed(String),
}

/// Reads until the end of the request head (`\r\n\r\n`), the deadline, or shutdown.
fn read_head(
    stream: &mut ClientStream,
    conn: &ConnectionShared,
    ctx: &ServerContext,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut ready = Vec::with_capacity(2);
    let interests = [
        Interest {
            fd: stream.raw_fd(),
            read: true,
            write: false,
        },
        Interest {
            fd: conn.waker.raw_fd(),
            read: true,
            write: false,
        },
    ];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                // Only the new bytes (and the 3 before them) can complete the terminator.
                let from = buf.len().saturating_sub(3);
                buf.extend_from_slice(&chunk[..n]);
                let end = buf[from..]
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| from + i + 4);
                match end {
                    Some(end) if end > MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
                    Some(_) => return Ok(Some(buf)),
                    None if buf.len() > MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
                    None => continue,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Malformed(e.to_string())),
        }
        if ctx.shutdown.is_requested() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(HeadError::Timeout);
        }
        if wake::wait(&interests, Some(deadline), &mut ready).is_err() {
            return Ok(None);
        }
        if ready[1].readable {
            conn.waker.reset();
        }
    }
}

fn parse_head(bytes: &[u8]) -> Result<RequestHead, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(e.to_string()),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let all_headers: &[httparse::Header] = req.headers;
    let header = |name: &'static str| {
        all_headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let text = |h: &httparse::Header| String::from_utf8_lossy(h.value).into_owned();
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|h| {
            text(h)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    let is_upgrade = has_token("Upgrade", "websocket") && has_token("Connection", "upgrade");
    let keys: Vec<String> = header("Sec-WebSocket-Key")
        .map(|h| text(h).trim().to_string())
        .collect();
    let versions: Vec<String> = header("Sec-WebSocket-Version")
        .map(|h| text(h).trim().to_string())
        .collect();
    let upgrade_problem = if req.version != Some(1) {
        Some(UpgradeProblem::HttpVersion)
    } else if versions.len() != 1 || versions[0] != "13" {
        Some(UpgradeProblem::Version(match versions.len() {
            0 => "missing".into(),
            1 => format!("{:?}", versions[0]),
            _ => "given more than once".into(),
        }))
    } else {
        match keys.as_slice() {
            [] => Some(UpgradeProblem::Key("missing")),
            [k] if is_websocket_key(k) => None,
            [_] => Some(UpgradeProblem::Key("malformed")),
            _ => Some(UpgradeProblem::Key("given more than once")),
        }
    };
    let protocols = header("Sec-WebSocket-Protocol")
        .flat_map(|h| {
            text(h)
                .split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    Ok(RequestHead {
        is_get: req.method == Some("GET"),
        path: path.to_string(),
        query: query.to_string(),
        is_upgrade,
        protocols,
        authorization: header("Authorization").map(text).collect(),
        upgrade_problem,
        trailing_bytes: bytes.len() - head_len,
    })
}

/// tungstenite's handshake over the replayed head, resumed on WouldBlock until `deadline`.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
fn upgrade(
    ctx: &ServerContext,
    conn: &ConnectionShared,
    stream: ClientStream,
    protocol: Option<String>,
    deadline: Instant,
) -> Option<WebSocket<ClientStream>> {
    let fd = stream.raw_fd();
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_write_buffer_size(write_buffer_cap(ctx.config.max_message_size, 0))
        .max_message_size(Some(ctx.config.max_message_size))
        .max_frame_size(Some(ctx.config.max_message_size));
    let callback = move |_req: &Request, mut resp: Response| {
        if let Some(p) = protocol
            && let Ok(v) = HeaderValue::from_str(&p)
        {
            resp.headers_mut()
                .insert(tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        Ok(resp)
    };
    let mut attempt = accept_hdr_with_config(stream, callback, Some(ws_config));
    let mut ready = Vec::with_capacity(1);
    loop {
        match attempt {
            Ok(ws) => return Some(ws),
            Err(HandshakeError::Failure(e)) => {
                ctx.metrics.count_rejection("bad_upgrade");
                log::info!(
                    "conn {} {}: WebSocket upgrade refused: {e}",
                    conn.id,
                    conn.peer
                );
                return None;
            }
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline || ctx.shutdown.is_requested() {
                    ctx.metrics.count_rejection("handshake_timeout");
                    log::info!(
                        "conn {} {}: upgrade response not sent within the handshake timeout",
                        conn.id,
                        conn.peer
                    );
                    return None;
                }
                let interest = [Interest {
                    fd,
                    read: true,
                    write: true,
                }];
                if wake::wait(&interest, Some(deadline), &mut ready).is_err() {
                    return None;
                }
                attempt = mid.handshake();
            }
        }
    }
}

fn reject(
    ctx: &ServerContext,
    conn: &ConnectionShared,
    mut stream: ClientStream,
    r: Rejection,
    deadline: Instant,
) -> Outcome {
    ctx.metrics.count_rejection(r.code);
    if r.violation {
        ctx.limits.violation(conn.peer.ip());
    }
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
        r.status,
        r.reason,
        &headers,
        &body.to_string(),
        deadline,
    );
    linger_and_close(&mut stream, deadline);
    conn.set_state(r.state, &ctx.metrics);
    Outcome::Finished
}

/// Writes a complete HTTP response (best effort until `deadline`).
fn write_response(
    stream: &mut ClientStream,
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
    body: &str,
    deadline: Instant,
) {
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
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
fn linger_and_close(stream: &mut ClientStream, deadline: Instant) {
    if let Some(conn) = &mut stream.tls {
        conn.send_close_notify();
        let _ = tls_io::write_pending(conn, &stream.tcp);
    }
    let tcp: &TcpStream = &stream.tcp;
    let _ = tcp.shutdown(Shutdown::Write);
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
