//! SecureMode "tls": wss with a real rustls client and certificates generated here; plain
//! clients on the TLS port; TLS handshake within HandshakeTimeoutMs; unusable material.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hydrogen_ws::{Error, Server};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use support::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type TlsClient = WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

struct Material {
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
}

fn material() -> Material {
    static N: AtomicUsize = AtomicUsize::new(0);
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir = std::env::temp_dir();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let cert = dir.join(format!("hws-tls-{}-{n}-cert.pem", std::process::id()));
    let key = dir.join(format!("hws-tls-{}-{n}-key.pem", std::process::id()));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    Material {
        cert,
        key,
        cert_pem: certified.cert.pem(),
    }
}

fn tls_server(m: &Material, tweak: impl FnOnce(&mut hydrogen_ws::Config)) -> hydrogen_ws::Server {
    start_with(|c| {
        c.tls = true;
        c.certificate_path = Some(m.cert.clone());
        c.key_path = Some(m.key.clone());
        tweak(c);
    })
}

/// A TLS stream to the server, trusting `m`'s certificate.
fn tls_stream(
    addr: std::net::SocketAddr,
    m: &Material,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(m.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn tls_connect(addr: std::net::SocketAddr, m: &Material, key: &str) -> TlsClient {
    let stream = tls_stream(addr, m);
    let mut req = format!("wss://localhost:{}/", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Key {key}").parse().unwrap());
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", PROTOCOL.parse().unwrap());
    let (mut ws, _) = tungstenite::client(req, stream).expect("wss handshake");
    ws.send(tungstenite::Message::Text(
        r#"{"type":"command","id":"hello","channel":"system","action":"ping"}"#.into(),
    ))
    .unwrap();
    let welcome = next_text(&mut ws);
    assert_eq!(welcome["action"], "welcome");
    assert_eq!(next_text(&mut ws)["id"], "hello");
    ws
}

fn next_text(ws: &mut TlsClient) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

fn tls_request(ws: &mut TlsClient, id: &str, channel: &str, action: &str, data: Value) -> Value {
    ws.send(Message::Text(command(id, channel, action, data).into()))
        .unwrap();
    loop {
        let v = next_text(ws);
        if v["type"] == "response" && v["id"] == id {
            return v;
        }
    }
}

#[test]
fn wss_round_trip_events_and_large_messages() {
    let m = material();
    let server = tls_server(&m, |_| {});
    let mut ws = tls_connect(server.bound_addr(), &m, VIEWER_KEY);
    assert_eq!(
        tls_request(&mut ws, "p", "system", "ping", json!({}))["data"]["pong"],
        true
    );
    let info = tls_request(&mut ws, "i", "system", "info", json!({}));
    assert_eq!(info["data"]["tls"], true);
    tls_request(
        &mut ws,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["print"]}),
    );
    // Large events cross many TLS records and fill rustls's buffers.
    let blob = "z".repeat(300_000);
    for n in 0..20 {
        server
            .publisher()
            .publish("print", "blob", json!({"n": n, "b": blob}))
            .unwrap();
    }
    for n in 0..20 {
        let e = next_text(&mut ws);
        assert_eq!(
            (e["data"]["n"].as_u64(), e["seq"].as_u64()),
            (Some(n), Some(n + 1))
        );
        assert_eq!(e["data"]["b"].as_str().unwrap().len(), 300_000);
    }
    // A large command too (under MaxMessageSize).
    let r = tls_request(
        &mut ws,
        "big",
        "system",
        "ping",
        json!({"pad": "q".repeat(60_000)}),
    );
    assert_eq!(r["status"], "ok");
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    wait_for("the connection to end", || server.connection_count() == 0);
}

#[test]
fn plain_clients_on_the_tls_port_are_dropped_quickly() {
    let m = material();
    let server = tls_server(&m, |c| c.handshake_timeout = Duration::from_secs(5));
    let started = Instant::now();
    let mut tcp = TcpStream::connect(server.bound_addr()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(
        upgrade_request(
            "/",
            &format!("Authorization: Key {VIEWER_KEY}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("101"),
        "no upgrade over plain text"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "dropped at once, not at the timeout: {:?}",
        started.elapsed()
    );
    wait_for("no connection thread left", || {
        server.connection_count() == 0
    });
    wait_for("counted", || {
        server
            .status()
            .rejected
            .get("tls_failed")
            .copied()
            .unwrap_or(0)
            == 1
    });
}

#[test]
fn silent_client_is_closed_at_the_handshake_timeout() {
    let m = material();
    let timeout = Duration::from_millis(300);
    let server = tls_server(&m, |c| c.handshake_timeout = timeout);
    let started = Instant::now();
    let mut tcp = TcpStream::connect(server.bound_addr()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(tcp.read(&mut buf).unwrap_or(0), 0);
    assert!(started.elapsed() >= timeout);
    wait_for("no connection thread left", || {
        server.connection_count() == 0
    });
}

#[test]
fn unusable_material_is_a_tls_error_naming_the_file() {
    let m = material();
    let missing = PathBuf::from("/nonexistent/cert.pem");
    let mut c = test_config();
    c.tls = true;
    c.certificate_path = Some(missing.clone());
    c.key_path = Some(m.key.clone());
    let e = Server::start(c.clone()).unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert_eq!(e.exit_code(), 4);
    assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    let garbage = std::env::temp_dir().join(format!("hws-tls-garbage-{}.pem", std::process::id()));
    std::fs::write(&garbage, "not a key").unwrap();
    c.certificate_path = Some(m.cert.clone());
    c.key_path = Some(garbage.clone());
    let e = Server::start(c.clone()).unwrap_err();
    assert!(e.to_string().contains(garbage.to_str().unwrap()), "{e}");
    // Certificate and key that do not belong together.
    let other = material();
    c.key_path = Some(other.key.clone());
    let e = Server::start(c).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
}

/// Issue #11 §4 over TLS: a malformed upgrade gets its HTTP answer with the JSON body inside
/// the TLS stream, as on a plain socket.
#[test]
fn malformed_upgrades_are_answered_over_tls() {
    let m = material();
    let server = tls_server(&m, |_| {});
    let cases = [
        (
            "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "426",
            "upgrade_required",
        ),
        ("Sec-WebSocket-Version: 13\r\n", "400", "invalid_message"),
    ];
    for (headers, status, code) in cases {
        let mut stream = tls_stream(server.bound_addr(), &m);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{headers}\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"]["code"], code, "{text}");
    }
}
