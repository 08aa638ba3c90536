//! SPEC §3 `RateLimit`: message rate per connection, blocking after violations (rate and
//! failed authentication), handshakes per minute per address.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;

fn upgrade_with(key: &str) -> String {
    upgrade_request(
        "/",
        &format!("Authorization: Key {key}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
    )
}

#[test]
fn messages_over_the_rate_are_dropped_with_rate_limited() {
    let server = start_with(|c| {
        c.rate_limit.messages_per_second = 20;
        c.rate_limit.burst = 5;
        c.rate_limit.violations_before_block = 1000;
    });
    let mut ws = connect_silent(server.bound_addr(), Some(VIEWER_KEY));
    for i in 0..30 {
        send(
            &mut ws,
            &command(&format!("p{i}"), "system", "ping", json!({})),
        );
    }
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 30 {
        let v = recv_json(&mut ws);
        if v["type"] == "event" {
            assert_eq!(v["action"], "welcome", "{v}");
            continue;
        }
        if v["status"] == "ok" {
            ok += 1;
        } else {
            assert_eq!(v["error"]["code"], "rate_limited", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("20 messages per second")
            );
            limited += 1;
        }
    }
    assert!(
        (5..=10).contains(&ok),
        "burst of 5 (plus what refilled meanwhile), got {ok}"
    );
    assert_eq!(ok + limited, 30);
    // The allowance comes back with time (20 per second): a ping paced at 100 ms gets
    // through within a few tries, well before WAIT. A refused one gets a bare error.
    let deadline = std::time::Instant::now() + WAIT;
    let mut tries = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100)); // pacing the tries, not a wait
        tries += 1;
        send(
            &mut ws,
            &command(&format!("later{tries}"), "system", "ping", json!({})),
        );
        let answer = recv_json(&mut ws);
        if answer["status"] == "ok" {
            break;
        }
        assert_eq!(answer["error"]["code"], "rate_limited", "{answer}");
        assert!(
            std::time::Instant::now() < deadline,
            "the allowance never came back"
        );
    }
    assert!(tries <= 5, "refilled only after {tries} tries");
}

/// An authenticated client over its rate is its own problem: it gets `rate_limited`, then
/// close 1008 after ViolationsBeforeBlock, and nobody else from its address is affected.
#[test]
fn an_authenticated_client_over_its_rate_is_closed_alone_not_its_address() {
    let server = start_with(|c| {
        c.rate_limit.messages_per_second = 1;
        c.rate_limit.burst = 1;
        c.rate_limit.violations_before_block = 3;
        c.rate_limit.block = Duration::from_secs(60);
    });
    let mut neighbour = connect_silent(server.bound_addr(), Some(OPERATOR_KEY));
    let mut ws = connect_silent(server.bound_addr(), Some(VIEWER_KEY));
    for i in 0..5 {
        send(
            &mut ws,
            &command(&format!("p{i}"), "system", "ping", json!({})),
        );
    }
    let close = expect_close(&mut ws).expect("close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "rate limit exceeded");
    // The same address, the same key: admitted at once; the neighbour still served.
    let _again = connect(server.bound_addr(), Some(VIEWER_KEY));
    let _admin = connect(server.bound_addr(), Some(ADMIN_KEY));
    assert_eq!(
        request(&mut neighbour, "n", "system", "ping", json!({}))["status"],
        "ok"
    );
    assert_eq!(server.status().blocked_addresses, 0);
}

/// Failed authentication is abuse of the address: after ViolationsBeforeBlock failures the
/// address gets 429 (even with the right key) until BlockSeconds pass.
#[test]
fn repeated_auth_failures_block_the_address_until_block_seconds_pass() {
    let block = Duration::from_millis(800);
    let server = start_with(|c| {
        c.rate_limit.violations_before_block = 3;
        c.rate_limit.block = block;
    });
    assert_eq!(
        raw_http(server.bound_addr(), &upgrade_with("wrong-1")).0,
        401
    );
    assert_eq!(
        raw_http(server.bound_addr(), &upgrade_with("wrong-2")).0,
        401
    );
    // The third failure is a late authentication.
    let mut late = connect(server.bound_addr(), None);
    let r = request(&mut late, "a", "system", "auth", json!({"key": "wrong-3"}));
    assert_eq!(r["error"]["code"], "auth_failed");
    let blocked_at = Instant::now();
    // Now even the right key is refused from this address.
    let (status, head, body) = raw_http(server.bound_addr(), &upgrade_with(VIEWER_KEY));
    assert_eq!(status, 429);
    assert!(head.contains("Retry-After"), "{head}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked")
    );
    assert_eq!(server.status().blocked_addresses, 1);
    wait_for("the block to end", || {
        try_connect(server.bound_addr(), Some(VIEWER_KEY), "/", Some(PROTOCOL)).is_ok()
    });
    assert!(blocked_at.elapsed() >= block - Duration::from_millis(100));
}

#[test]
fn handshakes_per_minute_per_address() {
    let server = start_with(|c| c.rate_limit.handshakes_per_minute_per_ip = 3);
    for _ in 0..3 {
        let _ = connect(server.bound_addr(), Some(VIEWER_KEY));
    }
    let (status, head, body) = raw_http(server.bound_addr(), &upgrade_with(VIEWER_KEY));
    assert_eq!(status, 429);
    assert!(head.contains("Retry-After: 60"), "{head}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HandshakesPerMinutePerIp")
    );
    // Plain requests (health checks) are not upgrade attempts.
    assert_eq!(
        raw_http(server.bound_addr(), "GET /health HTTP/1.1\r\n\r\n").0,
        200
    );
}
