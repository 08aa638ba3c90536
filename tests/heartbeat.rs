//! SPEC §3/§5: heartbeat pings, pong timeout, idle timeout.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A client that never reads never answers pings: closed 1011 after heartbeat + pong timeout.
#[test]
fn client_that_never_answers_pings_is_closed_1011() {
    let server = start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(150);
        c.close_wait = Duration::from_millis(100);
    });
    let started = Instant::now();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    wait_for("the server to give up on the client", || {
        server.status().active_connections == 0
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed too early: {elapsed:?}"
    );
    // What the server sent meanwhile: a ping, then close 1011 "heartbeat timeout".
    let mut saw_ping = false;
    let close = loop {
        match ws.read() {
            Ok(Message::Ping(_)) => saw_ping = true,
            Ok(Message::Close(f)) => break f.expect("close frame has a code"),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert!(saw_ping);
    assert_eq!(close.code, CloseCode::Error);
    assert_eq!(close.reason.as_str(), "heartbeat timeout");
}

/// A client that answers pings (by reading) stays connected across many heartbeats, and the
/// state machine shows it.
#[test]
fn responsive_client_stays_connected() {
    let server = start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(50);
        c.pong_timeout = Duration::from_millis(100);
    });
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(600);
    let mut pings = 0;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(f)) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "expected several heartbeats, got {pings}");
    ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        request(&mut ws, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
}

/// Answering pings is not activity: a client that sends no message for IdleTimeout is closed
/// with 1000 "idle timeout".
#[test]
fn idle_client_is_closed_1000() {
    let server = start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(50);
        c.idle_timeout = Some(Duration::from_millis(300));
    });
    let started = Instant::now();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    assert_eq!(
        request(&mut ws, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
    let close = expect_close(&mut ws).expect("close frame");
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "idle timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
