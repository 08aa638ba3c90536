//! SPEC §4: every handshake outcome, over real sockets.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn health_answers_ok_without_upgrade() {
    let server = start();
    let (status, _, body) = raw_http(
        server.bound_addr(),
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[test]
fn plain_http_gets_426_with_json_error() {
    let server = start();
    let (status, head, body) = raw_http(
        server.bound_addr(),
        "GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 426);
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert_eq!(body["error"]["code"], "upgrade_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket")
    );
}

#[test]
fn header_key_is_accepted_and_subprotocol_echoed() {
    let server = start();
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/",
        server.bound_addr()
    ))
    .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Key {ADMIN_KEY}").parse().unwrap());
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "other, hydrogen-protocol".parse().unwrap(),
    );
    let tcp = TcpStream::connect(server.bound_addr()).unwrap();
    let (mut ws, resp) = tungstenite::client(req, tcp).unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], PROTOCOL);
    let r = request(&mut ws, "1", "system", "ping", serde_json::json!({}));
    assert_eq!(r["data"]["pong"], true);
}

#[test]
fn query_key_is_accepted() {
    let server = start();
    let path = format!("/?key={}", VIEWER_KEY);
    let mut ws = try_connect(server.bound_addr(), None, &path, Some(PROTOCOL)).unwrap();
    request_ok(&mut ws, "1", "system", "ping", serde_json::json!({}));
}

#[test]
fn missing_or_wrong_subprotocol_gets_400() {
    let server = start();
    let (status, _, body) = raw_http(
        server.bound_addr(),
        &upgrade_request("/", &format!("Authorization: Key {ADMIN_KEY}\r\n")),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_protocol");
    let (status, _, body) = raw_http(
        server.bound_addr(),
        &upgrade_request(
            "/",
            &format!("Authorization: Key {ADMIN_KEY}\r\nSec-WebSocket-Protocol: chat\r\n"),
        ),
    );
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("chat"));
}

#[test]
fn protocol_optional_when_not_required() {
    let server = start_with(|c| c.require_protocol = false);
    let mut ws = try_connect(server.bound_addr(), Some(ADMIN_KEY), "/", None).unwrap();
    assert_eq!(
        request(&mut ws, "1", "system", "ping", serde_json::json!({}))["status"],
        "ok"
    );
}

#[test]
fn wrong_key_gets_401_with_www_authenticate() {
    let server = start();
    for extra in [
        "Authorization: Key not-the-key\r\n",
        "Authorization: Basic abc\r\n",
    ] {
        let (status, head, body) = raw_http(
            server.bound_addr(),
            &upgrade_request(
                "/",
                &format!("{extra}Sec-WebSocket-Protocol: {PROTOCOL}\r\n"),
            ),
        );
        assert_eq!(status, 401, "{extra}");
        assert!(head.contains("WWW-Authenticate"), "{head}");
        assert_eq!(body["error"]["code"], "auth_failed");
    }
    let (status, _, _) = raw_http(
        server.bound_addr(),
        &upgrade_request(
            "/?key=wrong",
            &format!("Sec-WebSocket-Protocol: {PROTOCOL}\r\n"),
        ),
    );
    assert_eq!(status, 401);
}

#[test]
fn max_connections_gets_503_with_retry_after() {
    let server = start_with(|c| c.max_connections = 2);
    let _a = connect(server.bound_addr(), Some(ADMIN_KEY));
    let _b = connect(server.bound_addr(), Some(ADMIN_KEY));
    let req = upgrade_request(
        "/",
        &format!("Authorization: Key {ADMIN_KEY}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
    );
    let (status, head, body) = raw_http(server.bound_addr(), &req);
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After"), "{head}");
    assert_eq!(body["error"]["code"], "server_busy");
    drop(_a);
    // Once a slot frees up, the next client gets in.
    wait_for("a slot to free up", || {
        server.status().active_connections == 1
    });
    let mut c = connect(server.bound_addr(), Some(ADMIN_KEY));
    assert_eq!(
        request(&mut c, "1", "system", "ping", serde_json::json!({}))["status"],
        "ok"
    );
}

#[test]
fn max_connections_per_ip_gets_429() {
    let server = start_with(|c| c.max_connections_per_ip = 1);
    let _a = connect(server.bound_addr(), Some(ADMIN_KEY));
    let req = upgrade_request(
        "/",
        &format!("Authorization: Key {ADMIN_KEY}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
    );
    let (status, head, body) = raw_http(server.bound_addr(), &req);
    assert_eq!(status, 429);
    assert!(head.contains("Retry-After"));
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// A client that connects and sends nothing, and one that sends half a request a byte at a
/// time (slowloris): both are closed once HandshakeTimeoutMs has passed, and the server
/// keeps serving others meanwhile.
#[test]
fn handshake_timeout_closes_silent_and_slowloris_clients() {
    let timeout = Duration::from_millis(300);
    let server = start_with(|c| c.handshake_timeout = timeout);
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.bound_addr()).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut slow = TcpStream::connect(server.bound_addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let partial = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n";
    let mut slow_closed = false;
    for b in partial.iter().cycle().take(400) {
        if slow.write_all(&[*b]).is_err() {
            slow_closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Ok(0) => {
                slow_closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                slow_closed = true;
                break;
            }
        }
    }
    assert!(slow_closed, "slowloris client was never closed");
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(
        n, 0,
        "silent client gets the connection closed, no response"
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "closed before the timeout: {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "closed far too late: {elapsed:?}"
    );
    let mut ok = connect(server.bound_addr(), Some(ADMIN_KEY));
    assert_eq!(
        request(&mut ok, "1", "system", "ping", serde_json::json!({}))["status"],
        "ok"
    );
    wait_for("the timeouts to be counted", || {
        server
            .status()
            .rejected
            .get("handshake_timeout")
            .copied()
            .unwrap_or(0)
            == 2
    });
}

#[test]
fn malformed_request_gets_400_and_oversized_head_431() {
    let server = start();
    let (status, _, body) = raw_http(server.bound_addr(), "NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_message");
    let huge = format!("GET / HTTP/1.1\r\nX-Fill: {}\r\n\r\n", "a".repeat(10_000));
    let (status, _, _) = raw_http(server.bound_addr(), &huge);
    assert_eq!(status, 431);
}

#[test]
fn data_sent_before_the_101_gets_400() {
    // RFC 6455 4.1: a client waits for the server's handshake before sending frames.
    // tungstenite refuses the "junk after client request" silently; we answer why.
    let server = start();
    let mut request = upgrade_request(
        "/",
        &format!("Authorization: Key {VIEWER_KEY}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
    );
    request.push_str("early frame bytes");
    let (status, _, body) = raw_http(server.bound_addr(), &request);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_message", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("101"));
    // Without the extra bytes the same request is upgraded.
    let _ws = connect(server.bound_addr(), Some(VIEWER_KEY));
}
