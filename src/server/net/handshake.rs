//! The HTTP upgrade (docs/protocol.md §1): read the request head within HandshakeTimeoutMs, answer
//! `/health` and non-upgrade requests, check subprotocol, credentials and limits, answer each
//! rejection with its status and JSON error body, and hand accepted requests to tungstenite.
//!
//! The request head is parsed with `httparse` (what tungstenite uses) because tungstenite
//! cannot answer a non-upgrade request; the bytes read are then replayed to tungstenite's own
//! handshake, which validates the upgrade and writes the 101 response.
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{WebSocket, accept_hdr_with_config};

use crate::deflate::{Deflate, negotiate};
use crate::server::context::ServerContext;
use crate::server::net::admission::{admit, offered_protocol, release_slot};
use crate::server::net::endpoints::{self, Answer};
use crate::server::net::refusal::{self, Rejection};
use crate::server::net::request::{self, RequestHead};
use crate::server::net::stream::Transport;
use crate::server::net::tls;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::registry::state::ConnState;
use crate::server::security::identity::Identity;
use crate::wake::{self, Interest};

/// Largest request head accepted; larger gets 431.
const MAX_HEAD_BYTES: usize = 8192;
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
        ws: Box<WebSocket<Transport>>,
        identity: Option<Identity>,
    },
    /// Answered (health, rejection) or failed; the connection is over.
    Finished,
}

/// Runs the whole handshake for one accepted socket. Never blocks past HandshakeTimeoutMs.
pub(crate) fn perform(
    ctx: &ServerContext,
    conn: &ConnectionHandle,
    tcp: Arc<TcpStream>,
) -> Outcome {
    let deadline = wake::after(ctx.config.handshake_timeout);
    let Some(mut stream) = open_stream(ctx, conn, tcp, deadline) else {
        return Outcome::Finished;
    };
    let refuse = |stream, r| {
        refusal::reject(&ctx.metrics, &ctx.limits, conn, stream, r, deadline);
        Outcome::Finished
    };
    let (head_bytes, head) = match read_request(ctx, conn, &mut stream, deadline) {
        Ok(Some(request)) => request,
        Ok(None) => return Outcome::Finished,
        Err(r) => return refuse(stream, r),
    };
    match endpoints::answer(ctx, conn.peer.ip(), &head) {
        Some(Answer::Page { content_type, body }) => {
            answer_page(&mut stream, content_type, &body, deadline);
            conn.set_state(ConnState::Closed, &ctx.metrics);
            return Outcome::Finished;
        }
        Some(Answer::Refused(r)) => return refuse(stream, r),
        None => {}
    }
    if let Some(r) = upgrade_refusal(&head) {
        return refuse(stream, r);
    }
    let admitted = match admit(ctx, conn, &head) {
        Ok(a) => a,
        Err(r) => match r.browser_close(head.protocols.is_empty()) {
            Some(close) if head.from_browser => {
                stream.replay = head_bytes;
                return close_for_browser(ctx, conn, stream, &head, r, close, deadline);
            }
            _ => return refuse(stream, r),
        },
    };
    stream.replay = head_bytes;
    let settings = ctx.config.compression.settings();
    let offers = head.extensions.iter().map(String::as_str);
    let (params, answer) = negotiate::server_accept(offers, &settings).unzip();
    let answer = Answered {
        protocol: admitted.protocol.clone(),
        extensions: answer,
    };
    match upgrade(ctx, conn, stream, answer, deadline) {
        Some(mut ws) => {
            if let Some(params) = params {
                let max = ctx.config.max_message_size;
                ws.get_mut()
                    .start_deflate(Deflate::new(params, &settings, max));
            }
            Outcome::Upgraded {
                ws: Box::new(ws),
                identity: admitted.identity,
            }
        }
        None => {
            release_slot(ctx);
            conn.set_state(ConnState::Failed, &ctx.metrics);
            Outcome::Finished
        }
    }
}

/// The stream under the WebSocket: the TCP socket, after the TLS handshake when SecureMode is
/// `tls`. `None` (counted, logged, state Failed) when TLS fails.
fn open_stream(
    ctx: &ServerContext,
    conn: &ConnectionHandle,
    tcp: Arc<TcpStream>,
    deadline: Instant,
) -> Option<Transport> {
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut stream = Transport::new(tcp);
    let Some(config) = &ctx.tls else {
        return Some(stream);
    };
    match tls::start(config, &mut stream, deadline) {
        Ok(()) => Some(stream),
        Err(why) => {
            ctx.metrics.count_rejection("tls_failed");
            log::info!("conn {} {}: {why}; closed", conn.id, conn.peer);
            conn.set_state(ConnState::Failed, &ctx.metrics);
            None
        }
    }
}

/// Reads and parses the request head. `Ok(None)`: nothing to answer (shutdown, the client
/// went away, or the deadline passed, which is counted and logged here).
fn read_request(
    ctx: &ServerContext,
    conn: &ConnectionHandle,
    stream: &mut Transport,
    deadline: Instant,
) -> Result<Option<(Vec<u8>, RequestHead)>, Rejection> {
    let bytes = match read_head(stream, conn, ctx, deadline) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(HeadError::Timeout) => {
            ctx.metrics.count_rejection("handshake_timeout");
            log::info!(
                "conn {} {}: handshake not complete within {:?}; closed",
                conn.id,
                conn.peer,
                ctx.config.handshake_timeout
            );
            conn.set_state(ConnState::Failed, &ctx.metrics);
            return Ok(None);
        }
        Err(HeadError::TooLarge) => {
            return Err(Rejection::new(
                431,
                "Request Header Fields Too Large",
                "invalid_message",
                "request head over 8 KiB",
            ));
        }
        Err(HeadError::Malformed(why)) => return Err(refusal::malformed(&why)),
    };
    let head = request::parse_head(&bytes).map_err(|why| refusal::malformed(&why))?;
    Ok(Some((bytes, head)))
}

/// A refusal a browser could not read (it only shows close 1006 for an HTTP error): the
/// upgrade is accepted and closed at once with `close` (4400 no subprotocol, 4401 refused
/// credentials) and the refusal's message as the reason, which the page's close event
/// shows. Counted and logged as the refusal; the connection ends in the refusal's state.
fn close_for_browser(
    ctx: &ServerContext,
    conn: &ConnectionHandle,
    stream: Transport,
    head: &RequestHead,
    r: Rejection,
    (code, reason): (u16, String),
    deadline: Instant,
) -> Outcome {
    refusal::count(&ctx.metrics, &ctx.limits, conn, &r);
    log::info!(
        "conn {} {}: handshake refused for a browser: close {code} ({reason})",
        conn.id,
        conn.peer
    );
    // A browser that offered our subprotocol fails the upgrade unless it is echoed.
    let answer = Answered {
        protocol: offered_protocol(&ctx.config, head),
        extensions: None,
    };
    if let Some(mut ws) = upgrade(ctx, conn, stream, answer, deadline) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = ws.close(Some(frame));
        await_close_reply(&mut ws, deadline.min(wake::after(BROWSER_CLOSE_WAIT)));
    }
    conn.set_state(r.end_state(), &ctx.metrics);
    Outcome::Finished
}

/// How long a refused browser gets to answer our close frame.
const BROWSER_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Flushes our close frame and reads until the client's reply (or `until`).
fn await_close_reply(ws: &mut WebSocket<Transport>, until: Instant) {
    let fd = ws.get_ref().raw_fd();
    let interest = [Interest {
        fd,
        read: true,
        write: true,
    }];
    let mut ready = Vec::with_capacity(1);
    loop {
        let _ = ws.flush();
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        if Instant::now() >= until || wake::wait(&interest, Some(until), &mut ready).is_err() {
            return;
        }
    }
}

/// A page (`/health`, `/metrics`, the status page): 200, never cached.
fn answer_page(stream: &mut Transport, content_type: &str, body: &str, deadline: Instant) {
    let headers = [("Cache-Control", "no-store".to_string())];
    refusal::write_response(stream, (200, "OK"), content_type, &headers, body, deadline);
    refusal::linger_and_close(stream, deadline);
}

/// What makes the request no WebSocket upgrade we can take, before credentials are looked at.
fn upgrade_refusal(head: &RequestHead) -> Option<Rejection> {
    if !head.is_upgrade || !head.is_get {
        return Some(
            Rejection::new(
                426,
                "Upgrade Required",
                "upgrade_required",
                "this is a WebSocket endpoint: send an HTTP/1.1 upgrade (GET with Upgrade: websocket)",
            )
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13"),
        );
    }
    if let Some(problem) = &head.upgrade_problem {
        return Some(problem.rejection());
    }
    // tungstenite would refuse this too ("junk after client request"), but silently.
    (head.trailing_bytes > 0).then(|| {
        Rejection::new(
            400,
            "Bad Request",
            "invalid_message",
            "data sent before the handshake response: wait for 101 Switching Protocols (RFC 6455 4.1)",
        )
    })
}

enum HeadError {
    Timeout,
    TooLarge,
    Malformed(String),
}

/// Reads until the end of the request head (`\r\n\r\n`), the deadline, or shutdown.
fn read_head(
    stream: &mut Transport,
    conn: &ConnectionHandle,
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

/// What the 101 response names: the subprotocol and the extensions accepted.
struct Answered {
    protocol: Option<String>,
    extensions: Option<String>,
}

/// tungstenite's handshake over the replayed head, resumed on WouldBlock until `deadline`.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
fn upgrade(
    ctx: &ServerContext,
    conn: &ConnectionHandle,
    stream: Transport,
    answer: Answered,
    deadline: Instant,
) -> Option<WebSocket<Transport>> {
    let fd = stream.raw_fd();
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_write_buffer_size(write_buffer_cap(ctx.config.max_message_size, 0))
        .max_message_size(Some(ctx.config.max_message_size))
        .max_frame_size(Some(ctx.config.max_message_size));
    let callback = move |_req: &Request, mut resp: Response| {
        use tungstenite::http::header::{SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
        let headers = resp.headers_mut();
        for (name, value) in [
            (SEC_WEBSOCKET_PROTOCOL, answer.protocol),
            (SEC_WEBSOCKET_EXTENSIONS, answer.extensions),
        ] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, v);
            }
        }
        Ok(resp)
    };
    let mut attempt = accept_hdr_with_config(stream, callback, Some(ws_config));
    let mut ready = Vec::with_capacity(1);
    let give_up = |code: &'static str, why: &dyn std::fmt::Display| {
        ctx.metrics.count_rejection(code);
        log::info!("conn {} {}: {why}", conn.id, conn.peer);
        None
    };
    loop {
        match attempt {
            Ok(ws) => return Some(ws),
            Err(HandshakeError::Failure(e)) => {
                return give_up("bad_upgrade", &format!("WebSocket upgrade refused: {e}"));
            }
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline || ctx.shutdown.is_requested() {
                    let why = "upgrade response not sent within the handshake timeout";
                    return give_up("handshake_timeout", &why);
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
