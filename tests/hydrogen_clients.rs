//! Hydrogen's own clients work unchanged (docs/protocol.md §5, "the server never speaks
//! first"): its status test (websocat, one message, piped to jq), and the listen-only
//! clients of its first protocol (LegacyStatusPush).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::*;
use tungstenite::protocol::Role as WsRole;
use tungstenite::{Message, WebSocket};

/// The upgrade request websocat 1.14 sends for
/// `websocat --protocol hydrogen-protocol -H='Authorization: Key K' -1 ws://ADDR/`, byte
/// for byte (captured from it; only the key differs per run).
fn websocat_request(addr: std::net::SocketAddr, key: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nAuthorization: Key {key}\r\nSec-WebSocket-Protocol: hydrogen-protocol\r\n\
         Host: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: CaJGyxZl+lbJ5evcd9WgSA==\r\n\r\n"
    )
}

/// What websocat does with `-1`: upgrade, send one line as a text frame, print the first
/// message that comes back, close.
fn websocat_one_message(addr: std::net::SocketAddr, key: &str, line: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(websocat_request(addr, key).as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("upgrade response");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = WebSocket::from_raw_socket(tcp, WsRole::Client, None);
    ws.send(Message::Text(line.into())).unwrap();
    let first = loop {
        match ws.read().expect("one message") {
            Message::Text(t) => break t.to_string(),
            Message::Binary(b) => break String::from_utf8_lossy(&b).into_owned(),
            _ => continue,
        }
    };
    let _ = ws.close(None);
    first
}

/// `jq -e FILTER` over `input`: its exit status (true for 0). `make test` installs jq.
fn jq(filter: &str, input: &str) -> bool {
    let jq = std::env::var("HWS_JQ").unwrap_or_else(|_| "jq".into());
    let mut child = Command::new(&jq)
        .args(["-e", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{jq}: {e} (make test installs jq)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

#[test]
fn hydrogens_status_test_reads_the_status_first() {
    // Hydrogen's tests/test_23_websockets.sh: `{"type":"status"}` with websocat -1, piped to
    // `jq -e '.system and .status.server_started'`.
    let server = start();
    let answer = websocat_one_message(server.bound_addr(), ADMIN_KEY, r#"{"type":"status"}"#);
    assert!(
        jq(".system and .status.server_started", &answer),
        "jq refused the first message: {answer}"
    );
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert!(
        v["type"].is_null(),
        "the bare status object, not an event: {v}"
    );
}

#[test]
fn hydrogens_status_test_with_websocat_itself() {
    // The test as Hydrogen runs it, through bash, websocat and jq. `make test` installs
    // websocat (HWS_WEBSOCAT); elsewhere it is looked up on PATH.
    let websocat = std::env::var("HWS_WEBSOCAT").unwrap_or_else(|_| "websocat".into());
    let runs = Command::new(&websocat)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED hydrogens_status_test_with_websocat_itself: no websocat (make test installs it)"
        );
        return;
    }
    let server = start();
    let script = format!(
        "set -o pipefail; echo '{{\"type\":\"status\"}}' | {websocat} --protocol hydrogen-protocol \
         -H='Authorization: Key {ADMIN_KEY}' -1 ws://{}/ | jq -e '.system and .status.server_started'",
        server.bound_addr()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_welcome_comes_right_before_the_first_envelope_answer() {
    let server = start();
    let mut ws = try_connect(server.bound_addr(), Some(OPERATOR_KEY), "/", Some(PROTOCOL)).unwrap();
    // A legacy request first: its answer is the first thing the server says.
    send(&mut ws, r#"{"type":"status"}"#);
    let first = recv_json(&mut ws);
    assert!(
        first["active_connections"].is_u64() && first["type"].is_null(),
        "{first}"
    );
    // The first envelope message: the welcome, then the answer.
    send(&mut ws, &command("p1", "system", "ping", json!({})));
    let welcome = recv_json(&mut ws);
    assert_eq!(welcome["action"], "welcome", "{welcome}");
    assert_eq!(welcome["data"]["role"], "operator");
    assert_eq!(recv_json(&mut ws)["id"], "p1");
    // Only once.
    send(&mut ws, &command("p2", "system", "ping", json!({})));
    assert_eq!(recv_json(&mut ws)["id"], "p2");
}

/// Reads messages until the response `id`, returning the others.
fn until_response(ws: &mut TestSocket, id: &str) -> Vec<Value> {
    let mut others = Vec::new();
    loop {
        let v = recv_json(ws);
        if v["type"] == "response" && v["id"] == id {
            return others;
        }
        others.push(v);
    }
}

#[test]
fn legacy_status_push_feeds_listeners_until_they_speak_the_envelope() {
    let server = start_with(|c| {
        c.legacy_status_push = true;
        c.status_interval = Some(std::time::Duration::from_millis(50));
    });
    let mut listener =
        try_connect(server.bound_addr(), Some(VIEWER_KEY), "/", Some(PROTOCOL)).unwrap();
    for _ in 0..2 {
        let status = recv_json(&mut listener);
        assert!(status["type"].is_null(), "a bare status object: {status}");
        assert!(status["active_connections"].is_u64() && status["system"]["sysname"].is_string());
    }
    // An envelope client: welcome and answer; after that no bare status any more.
    send(&mut listener, &command("p", "system", "ping", json!({})));
    let before: Vec<Value> = until_response(&mut listener, "p");
    assert!(
        before.iter().any(|v| v["action"] == "welcome"),
        "{before:?}"
    );
    // A status offered just before the ping may still go out after its answer: drain it.
    send(&mut listener, &command("q", "system", "ping", json!({})));
    until_response(&mut listener, "q");
    let since = server.status().uptime_ms;
    wait_for("three status intervals", || {
        server.status().uptime_ms >= since + 150
    });
    send(&mut listener, &command("r", "system", "ping", json!({})));
    let after = until_response(&mut listener, "r");
    assert!(
        after.iter().all(|v| !v["type"].is_null()),
        "bare status after speaking the envelope: {after:?}"
    );
}
