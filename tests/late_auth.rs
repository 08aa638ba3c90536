//! SPEC §5: a client that upgrades without credentials stays in Verifying and may only send
//! system/auth within AuthTimeoutMs.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn auth_after_upgrade_then_commands_work() {
    let server = start();
    let mut ws = connect(server.bound_addr(), None);
    wait_for("state verifying", || {
        server
            .status()
            .connections_by_state
            .get("verifying")
            .copied()
            .unwrap_or(0)
            == 1
    });
    let r = request_ok(
        &mut ws,
        "a1",
        "system",
        "auth",
        json!({"key": OPERATOR_KEY}),
    );
    assert_eq!(r["data"]["role"], "operator");
    assert!(r["data"]["connection_id"].as_u64().is_some());
    assert_eq!(
        request(&mut ws, "p1", "system", "ping", json!({}))["data"]["pong"],
        true
    );
    // Operator is not admin.
    assert_eq!(
        request(&mut ws, "t1", "system", "threads", json!({}))["error"]["code"],
        "forbidden"
    );
}

#[test]
fn anything_but_auth_first_gets_auth_failed_and_1008() {
    let server = start();
    let mut ws = connect(server.bound_addr(), None);
    let r = request(&mut ws, "p1", "system", "ping", json!({}));
    assert_eq!(r["status"], "error");
    assert_eq!(r["error"]["code"], "auth_failed");
    assert_eq!(
        expect_close(&mut ws).expect("close frame").code,
        CloseCode::Policy
    );
    // Bad JSON before auth gets the bare error and the same close.
    let mut ws = connect(server.bound_addr(), None);
    send(&mut ws, "{not json");
    assert_eq!(recv_json(&mut ws)["error"]["code"], "auth_failed");
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Policy);
    wait_for("rejections counted", || {
        server
            .status()
            .connections_by_state
            .get("rejected")
            .copied()
            .unwrap_or(0)
            == 2
    });
}

#[test]
fn wrong_key_in_auth_gets_1008() {
    let server = start();
    let mut ws = connect(server.bound_addr(), None);
    let r = request(&mut ws, "a1", "system", "auth", json!({"key": "nope"}));
    assert_eq!(r["error"]["code"], "auth_failed");
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Policy);
    let mut ws = connect(server.bound_addr(), None);
    let r = request(&mut ws, "a1", "system", "auth", json!({}));
    assert!(r["error"]["message"].as_str().unwrap().contains("key"));
}

#[test]
fn auth_timeout_closes_with_1008() {
    let timeout = Duration::from_millis(200);
    let server = start_with(|c| c.auth_timeout = timeout);
    let started = Instant::now();
    let mut ws = connect(server.bound_addr(), None);
    let err = recv_json(&mut ws);
    assert_eq!(err["error"]["code"], "auth_failed");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout")
    );
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Policy);
    assert!(started.elapsed() >= timeout);
}

#[test]
fn auth_not_required_admits_viewers() {
    let server = start_with(|c| c.auth_required = false);
    let mut ws = connect(server.bound_addr(), None);
    assert_eq!(
        request(&mut ws, "1", "system", "ping", json!({}))["status"],
        "ok"
    );
    assert_eq!(
        request(&mut ws, "2", "system", "threads", json!({}))["error"]["code"],
        "forbidden"
    );
}
