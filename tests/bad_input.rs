//! SPEC §6: bad input gets a clear error, the connection stays usable where it can, and the
//! server keeps serving everyone else.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};

fn assert_still_serving(server: &hydrogen_ws::Server) {
    let mut other = connect(server.bound_addr(), Some(VIEWER_KEY));
    assert_eq!(
        request(&mut other, "alive", "system", "ping", json!({}))["status"],
        "ok"
    );
}

#[test]
fn bad_json_gets_bare_error_and_connection_stays_open() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    for bad in ["{nope", "[1,2,3]", "42", "\"str\"", ""] {
        send(&mut ws, bad);
        let e = recv_json(&mut ws);
        assert_eq!(e["error"]["code"], "invalid_message", "{bad:?} -> {e}");
        assert!(
            e["type"].is_null() && e["id"].is_null(),
            "bare error object: {e}"
        );
    }
    assert_eq!(
        request(&mut ws, "after", "system", "ping", json!({}))["status"],
        "ok"
    );
}

#[test]
fn wrong_types_and_missing_fields_answer_under_the_id() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    let cases = [
        (
            json!({"type":"command","id":"1","action":"ping"}),
            "channel",
        ),
        (
            json!({"type":"command","id":"2","channel":"system"}),
            "action",
        ),
        (
            json!({"type":"command","id":"3","channel":7,"action":"ping"}),
            "channel",
        ),
        (
            json!({"type":"command","id":"4","channel":"system","action":"ping","data":"x"}),
            "data",
        ),
        (
            json!({"type":"command","id":"5","channel":"Sys tem","action":"ping"}),
            "channel",
        ),
        (
            json!({"type":"command","id":"6","channel":"system","action":"ping","timestamp":5}),
            "timestamp",
        ),
        (
            json!({"type":"event","id":"7","channel":"system","action":"ping"}),
            "type",
        ),
        (json!({"id":"8","channel":"system","action":"ping"}), "type"),
    ];
    for (msg, field) in cases {
        send(&mut ws, &msg.to_string());
        let r = recv_json(&mut ws);
        assert_eq!(r["type"], "response", "{msg}");
        assert_eq!(r["id"], msg["id"]);
        assert_eq!(r["status"], "error");
        assert_eq!(r["error"]["code"], "invalid_message");
        assert_eq!(r["error"]["details"]["field"], field, "{msg} -> {r}");
    }
    // No usable id: a bare error.
    send(
        &mut ws,
        &json!({"type":"command","channel":"system","action":"ping"}).to_string(),
    );
    let r = recv_json(&mut ws);
    assert!(
        r["type"].is_null() && r["error"]["code"] == "invalid_message",
        "{r}"
    );
}

#[test]
fn deep_nesting_is_refused_without_harm() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    let deep = format!(
        "{{\"type\":\"command\",\"id\":\"d\",\"data\":{}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    send(&mut ws, &deep);
    assert_eq!(recv_json(&mut ws)["error"]["code"], "invalid_message");
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    send(&mut ws, &deep_obj);
    assert_eq!(recv_json(&mut ws)["error"]["code"], "invalid_message");
    assert_eq!(
        request(&mut ws, "after", "system", "ping", json!({}))["status"],
        "ok"
    );
}

#[test]
fn binary_frames_are_refused() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    ws.send(Message::Binary(vec![1u8, 2, 3].into())).unwrap();
    let e = recv_json(&mut ws);
    assert_eq!(e["error"]["code"], "invalid_message");
    assert!(e["error"]["message"].as_str().unwrap().contains("binary"));
    assert_eq!(
        request(&mut ws, "after", "system", "ping", json!({}))["status"],
        "ok"
    );
}

#[test]
fn oversized_message_closes_with_1009() {
    let server = start_with(|c| c.max_message_size = 1024);
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    let big = command("big", "system", "ping", json!({"pad": "x".repeat(2000)}));
    send(&mut ws, &big);
    let e = recv_json(&mut ws);
    assert_eq!(e["error"]["code"], "message_too_large");
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Size);
    assert_still_serving(&server);
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    let frame = Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(OpData::Text),
        true,
    );
    ws.send(Message::Frame(frame)).unwrap();
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Invalid);
    assert_still_serving(&server);
}

#[test]
fn a_protocol_error_fails_the_connection_without_waiting_for_a_close_reply() {
    // RFC 6455 §7.1.7: after a protocol error the server sends its close frame and drops TCP
    // itself (Autobahn 7.3.2 and 7.5.1 check this); it does not wait CloseWaitMs for a reply.
    let server = start_with(|c| c.close_wait = Duration::from_secs(5));
    let mut tcp = std::net::TcpStream::connect(server.bound_addr()).unwrap();
    tcp.write_all(
        upgrade_request(
            "/",
            &format!("Authorization: Key {ADMIN_KEY}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
        )
        .as_bytes(),
    )
    .unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A close frame with a one-byte payload is invalid (masked, as from a client).
    tcp.write_all(&[0x88, 0x81, 1, 2, 3, 4, 0x07]).unwrap();
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no EOF from the server: {e}"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The last frame before EOF is the server's close with 1002 (0x03ea).
    let close = seen
        .windows(4)
        .rposition(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xea);
    assert!(
        close.is_some(),
        "no close 1002 before EOF: {:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_still_serving(&server);
}

#[test]
fn duplicate_command_ids_are_refused() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    assert_eq!(
        request(&mut ws, "same", "system", "ping", json!({}))["status"],
        "ok"
    );
    let r = request(&mut ws, "same", "system", "ping", json!({}));
    assert_eq!(r["error"]["code"], "duplicate_id");
    // The guard remembers the last 1024 ids: 1024 more push "same" out.
    for i in 0..1024 {
        send(
            &mut ws,
            &command(&format!("n{i}"), "system", "ping", json!({})),
        );
    }
    for _ in 0..1024 {
        assert_eq!(recv_json(&mut ws)["status"], "ok");
    }
    assert_eq!(
        request(&mut ws, "same", "system", "ping", json!({}))["status"],
        "ok"
    );
    // Another connection has its own ids.
    let mut other = connect(server.bound_addr(), Some(ADMIN_KEY));
    assert_eq!(
        request(&mut other, "n5", "system", "ping", json!({}))["status"],
        "ok"
    );
}

#[test]
fn acks_for_unknown_events_are_ignored_quietly() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(ADMIN_KEY));
    send(&mut ws, r#"{"type":"ack","id":"ev-1"}"#);
    send(&mut ws, r#"{"type":"ack"}"#);
    assert_eq!(recv_json(&mut ws)["error"]["code"], "invalid_message");
    assert_eq!(
        request(&mut ws, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
}
