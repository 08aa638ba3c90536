//! Browsers and other clients nobody here wrote (docs/behaviour.md, Handshake): Hydrogen
//! seed 002's listen-only example in Node's `ws` and in headless Chromium, and pages that
//! get the handshake wrong, which must see a close event saying why (a browser cannot read
//! an HTTP refusal: it only shows 1006).

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// tests/clients/node, with its node_modules (`make test` installs them).
fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node")
}

/// Runs tests/clients/node/checks.js; its one line of JSON. `None` (with a visible SKIPPED
/// line) when node or its packages are missing outside `make test`.
fn checks(args: &[&str]) -> Option<Value> {
    if !node_dir().join("node_modules/ws").exists() && std::env::var_os("HWS_BROWSERS").is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {args:?}: no tests/clients/node/node_modules (make test installs them)"
        );
        return None;
    }
    let out = Command::new("node")
        .arg(node_dir().join("checks.js"))
        .args(args)
        .current_dir(node_dir())
        .output()
        .expect("node runs (make test installs Node packages and Chromium)");
    assert!(
        out.status.success(),
        "checks.js {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("one JSON line"))
}

/// The server the seed example expects: no credentials needed, status pushed to listeners.
fn seed_server() -> hydrogen_ws::Server {
    start_with(|c| {
        c.auth_required = false;
        c.legacy_status_push = true;
        c.status_interval = Some(std::time::Duration::from_millis(50));
    })
}

fn assert_seed_result(r: &Value) {
    assert_eq!(r["ok"], true, "{r}");
    let got = r["got"].as_array().unwrap();
    assert_eq!(got[0], "open", "{r}");
    for status in &got[1..] {
        assert!(status["type"].is_null(), "a bare status object: {status}");
        assert!(status["active_connections"].is_u64() && status["status"]["running"] == true);
    }
}

#[test]
fn seed_example_in_node_gets_status_objects() {
    let server = seed_server();
    let url = format!("ws://{}/", server.bound_addr());
    if let Some(r) = checks(&["node-seed", &url]) {
        assert_seed_result(&r);
    }
}

#[test]
fn chromium_runs_the_seed_example_and_learns_why_a_handshake_is_refused() {
    let server = seed_server();
    let url = format!("ws://{}/", server.bound_addr());
    let chromium = std::env::var("HWS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let Some(r) = checks(&["chromium", &url, &chromium]) else {
        return;
    };
    assert_seed_result(&r["seed"]);
    // RequireProtocol: a page that offers no subprotocol is told which one to offer.
    assert_eq!(r["noProtocol"]["code"], 4400, "{r}");
    assert!(
        r["noProtocol"]["reason"]
            .as_str()
            .unwrap()
            .contains("hydrogen-protocol"),
        "{r}"
    );
    // A key the server does not know, in the only place a page can put it (the query).
    assert_eq!(r["wrongKey"]["code"], 4401, "{r}");
    assert!(
        r["wrongKey"]["reason"].as_str().unwrap().contains("key"),
        "{r}"
    );
}

/// A browser-like upgrade (with `Origin`) by tungstenite: the close frame it gets.
fn browser_like(
    path: &str,
    protocol: Option<&str>,
) -> (Option<String>, tungstenite::protocol::CloseFrame) {
    let addr = seed_server_addr();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("http://board.local"));
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, resp): (WebSocket<_>, _) = tungstenite::client(req, tcp).expect("upgraded");
    let echoed = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    loop {
        match ws.read().expect("a close frame") {
            Message::Close(Some(frame)) => return (echoed, frame),
            Message::Close(None) => panic!("close without a code"),
            _ => continue,
        }
    }
}

/// A server that requires a key (unlike the seed's), kept for the process.
fn seed_server_addr() -> std::net::SocketAddr {
    static SERVER: std::sync::OnceLock<hydrogen_ws::Server> = std::sync::OnceLock::new();
    SERVER.get_or_init(start).bound_addr()
}

#[test]
fn a_browser_refusal_is_a_close_frame_a_page_can_read() {
    let (echoed, frame) = browser_like("/", None);
    assert_eq!((echoed, u16::from(frame.code)), (None, 4400));
    assert!(frame.reason.contains("hydrogen-protocol"), "{frame:?}");
    let (echoed, frame) = browser_like("/?key=wrong-key-0000000000", Some(PROTOCOL));
    assert_eq!(
        echoed.as_deref(),
        Some(PROTOCOL),
        "the offered subprotocol is echoed"
    );
    assert_eq!(u16::from(frame.code), 4401, "{frame:?}");
    // Without Origin (curl, scripts, our client) the refusals stay HTTP, with their body.
    let (status, _, body) = raw_http(seed_server_addr(), &upgrade_request("/", ""));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_protocol"))
    );
}

/// The built-in status page (issue #15 §4) in a real Chromium: log in with the admin key,
/// see the connection count move when a client connects, see the connection list, subscribe
/// to a channel and see an event a service publishes; a screenshot goes to target/.
#[test]
fn the_status_page_logs_in_and_shows_the_server_live() {
    let server = start_with(|c| c.status_interval = Some(std::time::Duration::from_millis(200)));
    let url = format!("http://{}/", server.bound_addr());
    let chromium = std::env::var("HWS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    let args = [
        "status-page",
        url.as_str(),
        chromium.as_str(),
        ADMIN_KEY,
        SERVICE_KEY,
        shot.to_str().unwrap(),
    ];
    let Some(r) = checks(&args) else {
        return;
    };
    let before = r["before"].as_u64().unwrap();
    assert!(before >= 1, "the page's own connection counts: {r}");
    assert_eq!(r["after"].as_u64().unwrap(), before + 1, "{r}");
    let rows = r["rows"].as_array().unwrap();
    assert!(rows.len() >= 2, "the page and the client in the list: {r}");
    assert!(
        rows.iter()
            .any(|row| row.as_str().unwrap().contains("printer")),
        "the service's identity in the connection list: {r}"
    );
    assert_eq!(r["published"]["status"], "ok", "{r}");
    let marker = r["marker"].as_str().unwrap();
    assert!(
        r["event"].as_str().unwrap().contains(marker),
        "the event on the page: {r}"
    );
    assert!(
        r["event"].as_str().unwrap().contains("print/progress"),
        "{r}"
    );
    // Chromium and Node's ws both offer permessage-deflate; the server takes it unless the
    // suite runs with it declined.
    let expected = if std::env::var("HWS_COMPRESSION").as_deref() == Ok("off") {
        0
    } else {
        2
    };
    assert_eq!(r["compressed"], expected, "{r}");
    assert_eq!(r["keyStored"], true, "{r}");
    assert_eq!(r["keyInUrl"], false, "{r}");
    assert!(r["memory"].as_str().unwrap().ends_with("iB"), "{r}");
    assert!(
        r["threads"].as_str().unwrap().parse::<u64>().unwrap() >= 4,
        "{r}"
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", shot.display());
}
