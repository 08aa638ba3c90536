//! Helpers for the integration tests: start a real server on 127.0.0.1 port 0 and talk to it
//! over real sockets with tungstenite's client or raw TCP.
#![allow(dead_code)]

pub mod broker;
pub mod process;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hydrogen_ws::{ApiKey, Config, Role, Secret, Server};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

pub const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
pub const OPERATOR_KEY: &str = "operator-key-0123456789abcdef";
pub const VIEWER_KEY: &str = "viewer-key-0123456789abcdef";
pub const SERVICE_KEY: &str = "service-key-0123456789abcdef";
pub const PROTOCOL: &str = "hydrogen-protocol";
/// The id of the ping [`connect`] sends to get its welcome.
pub const WELCOME_PROBE: &str = "welcome-probe";

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A test's WebSocket to the server (tungstenite's client), not the crate's `Client`.
pub type TestSocket = WebSocket<TcpStream>;

/// A config for tests: loopback, port 0, three keys (admin, operator, viewer).
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.interface = "127.0.0.1".parse().unwrap();
    c.port = 0;
    // Every test client comes from 127.0.0.1; the per-address limit has its own test.
    c.max_connections_per_ip = 10_000;
    c.max_connections = 2_000;
    // Tests send fast and reconnect often; the limits have their own tests.
    c.rate_limit.messages_per_second = 0;
    c.rate_limit.handshakes_per_minute_per_ip = 0;
    c.keys = vec![
        ApiKey::new("admin", Secret::new(ADMIN_KEY), Role::Admin),
        ApiKey::new("operator", Secret::new(OPERATOR_KEY), Role::Operator),
        ApiKey::new("viewer", Secret::new(VIEWER_KEY), Role::Viewer),
        ApiKey::new("printer", Secret::new(SERVICE_KEY), Role::Service),
    ];
    // `make test` runs the suite a second time with HWS_COMPRESSION=off: everything must
    // hold with permessage-deflate declined too.
    c.compression.enabled = std::env::var("HWS_COMPRESSION").as_deref() != Ok("off");
    c
}

pub fn start() -> Server {
    start_with(|_| {})
}

pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut c = test_config();
    tweak(&mut c);
    Server::start(c).expect("server starts")
}

/// Opens a WebSocket with `Authorization: Key <key>` (no header when `key` is None) and the
/// hydrogen subprotocol. Reads time out after [`WAIT`].
/// With a key, the client speaks first (the server never does): a `system/ping` whose answer
/// is preceded by the `system/welcome` event, which is read and checked.
pub fn connect(addr: SocketAddr, key: Option<&str>) -> TestSocket {
    connect_with_welcome(addr, key).0
}

/// Like [`connect`], but says nothing: the welcome comes right before the answer to the
/// test's own first message (for tests where every message counts, such as rate limits).
pub fn connect_silent(addr: SocketAddr, key: Option<&str>) -> TestSocket {
    try_connect(addr, key, "/", Some(PROTOCOL)).expect("handshake succeeds")
}

/// Like [`connect`], also returning the welcome event's data (Null without a key).
pub fn connect_with_welcome(addr: SocketAddr, key: Option<&str>) -> (TestSocket, Value) {
    let mut ws = try_connect(addr, key, "/", Some(PROTOCOL)).expect("handshake succeeds");
    if key.is_none() {
        return (ws, Value::Null);
    }
    let welcome = read_welcome(&mut ws);
    (ws, welcome)
}

/// Speaks first on an authenticated connection (a `system/ping`) and returns the welcome's
/// data, which the server sends right before the answer.
pub fn read_welcome(ws: &mut TestSocket) -> Value {
    send(ws, &command(WELCOME_PROBE, "system", "ping", json!({})));
    let welcome = recv_json(ws);
    assert_eq!(
        (welcome["channel"].as_str(), welcome["action"].as_str()),
        (Some("system"), Some("welcome")),
        "{welcome}"
    );
    assert!(welcome["data"]["session_id"].is_string() && welcome["data"]["connection_id"].is_u64());
    let pong = recv_json(ws);
    assert_eq!(pong["id"], WELCOME_PROBE, "{pong}");
    welcome["data"].clone()
}

pub fn try_connect(
    addr: SocketAddr,
    key: Option<&str>,
    path: &str,
    protocol: Option<&str>,
) -> Result<TestSocket, tungstenite::Error> {
    try_connect_with(
        addr,
        key.map(|k| format!("Key {k}")).as_deref(),
        path,
        protocol,
    )
}

/// Opens a WebSocket whose request carries `Authorization: <authorization>` (for example
/// `Bearer <jwt>`).
pub fn connect_bearer(addr: SocketAddr, token: &str) -> Result<TestSocket, tungstenite::Error> {
    try_connect_with(addr, Some(&format!("Bearer {token}")), "/", Some(PROTOCOL))
}

pub fn try_connect_with(
    addr: SocketAddr,
    authorization: Option<&str>,
    path: &str,
    protocol: Option<&str>,
) -> Result<TestSocket, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(a) = authorization {
        req.headers_mut()
            .insert("Authorization", HeaderValue::from_str(a).unwrap());
    }
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    match tungstenite::client(req, tcp) {
        Ok((ws, _resp)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("blocking handshake interrupted")
        }
    }
}

pub fn command(id: &str, channel: &str, action: &str, data: Value) -> String {
    json!({"type": "command", "id": id, "channel": channel, "action": action, "data": data})
        .to_string()
}

pub fn send(ws: &mut TestSocket, text: &str) {
    ws.send(Message::Text(text.into())).expect("send");
}

/// Next text message as JSON (skips pings/pongs). Panics on close or timeout.
pub fn recv_json(ws: &mut TestSocket) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("server sends JSON");
            }
            Message::Close(f) => panic!("closed while waiting for a message: {f:?}"),
            _ => continue,
        }
    }
}

/// Sends a command and returns its response (events in between are skipped).
pub fn request(ws: &mut TestSocket, id: &str, channel: &str, action: &str, data: Value) -> Value {
    send(ws, &command(id, channel, action, data));
    loop {
        let v = recv_json(ws);
        if v["type"] == "response" && v["id"] == id {
            return v;
        }
    }
}

/// [`request`], and the response must be `status: "ok"` (the test fails showing it
/// otherwise). Returns the whole response.
pub fn request_ok(
    ws: &mut TestSocket,
    id: &str,
    channel: &str,
    action: &str,
    data: Value,
) -> Value {
    let r = request(ws, id, channel, action, data);
    assert_eq!(r["status"], "ok", "{channel}/{action} failed: {r}");
    r
}

/// A service connection that has registered `channels`.
pub fn service(addr: SocketAddr, channels: &[&str]) -> TestSocket {
    let mut s = connect(addr, Some(SERVICE_KEY));
    let r = request(
        &mut s,
        "reg",
        "system",
        "register",
        json!({"channels": channels}),
    );
    assert_eq!(r["status"], "ok", "{r}");
    s
}

/// Reads until the server's close frame arrives; returns it (None when the TCP connection
/// ended without one).
pub fn expect_close(ws: &mut TestSocket) -> Option<CloseFrame> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(f)) => {
                // Let tungstenite answer the close, then drain to the end.
                let _ = ws.flush();
                return f;
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    panic!("no close frame within {WAIT:?}");
}

/// Polls `cond` until it holds or [`WAIT`] passes.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a raw HTTP request and returns (status, headers text, body JSON if any).
pub fn raw_http(addr: SocketAddr, request: &str) -> (u16, String, Value) {
    let (status, head, body) = raw_http_text(addr, request);
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

/// Sends a raw HTTP request and returns (status, headers text, body text).
pub fn raw_http_text(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// An upgrade request for `raw_http`.
pub fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// Threads of this process whose name starts with `prefix` (from /proc/self/task/*/comm).
pub fn threads_named(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) {
            let name = name.trim().to_string();
            if name.starts_with(prefix) {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// A command with `timestamp` and `auth.signature`: HMAC-SHA256 with `key`, hex, over
/// `id \n timestamp \n channel \n action \n compact JSON of data` (keys sorted).
pub fn signed_command(
    id: &str,
    channel: &str,
    action: &str,
    data: Value,
    key: &str,
    timestamp: &str,
) -> String {
    let payload = format!("{id}\n{timestamp}\n{channel}\n{action}\n{data}");
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes()),
        payload.as_bytes(),
    );
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    json!({"type": "command", "id": id, "timestamp": timestamp, "channel": channel, "action": action,
           "data": data, "auth": {"signature": hex}})
    .to_string()
}

/// Now, as the ISO 8601 timestamp messages carry.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A fresh 2048-bit RSA key pair from `openssl` (ring cannot generate RSA keys):
/// (private PKCS#8 PEM, public SPKI PEM).
pub fn rsa_keypair() -> (String, String) {
    let key = std::env::temp_dir().join(format!(
        "hws-rsa-{}-{:?}.pem",
        std::process::id(),
        std::thread::current().id()
    ));
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl is needed for RSA test keys (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(public.stdout).unwrap(),
    )
}
