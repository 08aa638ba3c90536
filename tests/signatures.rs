//! SPEC §6 per-message authentication: signatures for sensitive actions (required, wrong,
//! stale, replayed), and `auth.token` that must belong to the same identity.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use support::*;

fn at(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

#[test]
fn sensitive_actions_need_a_fresh_valid_signature_and_a_new_id() {
    let server = start();
    let mut victim = connect(server.bound_addr(), Some(VIEWER_KEY));
    request_ok(&mut victim, "i", "system", "info", json!({}));
    let mut admin = connect(server.bound_addr(), Some(ADMIN_KEY));
    let target = json!({"connection_id": 999_999});

    // Unsigned.
    let r = request(&mut admin, "u1", "system", "disconnect", target.clone());
    assert_eq!(r["error"]["code"], "auth_failed");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sensitive")
    );
    // Signed with the wrong key.
    send(
        &mut admin,
        &signed_command(
            "w1",
            "system",
            "disconnect",
            target.clone(),
            VIEWER_KEY,
            &at(0),
        ),
    );
    assert!(
        recv_json(&mut admin)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not verify")
    );
    // Signed over other data than sent.
    let mut forged: serde_json::Value = serde_json::from_str(&signed_command(
        "f1",
        "system",
        "disconnect",
        json!({"connection_id": 1}),
        ADMIN_KEY,
        &at(0),
    ))
    .unwrap();
    forged["data"] = target.clone();
    send(&mut admin, &forged.to_string());
    assert_eq!(recv_json(&mut admin)["error"]["code"], "auth_failed");
    // Stale and future timestamps.
    for (id, offset) in [("s1", -45), ("s2", 45)] {
        send(
            &mut admin,
            &signed_command(
                id,
                "system",
                "disconnect",
                target.clone(),
                ADMIN_KEY,
                &at(offset),
            ),
        );
        let r = recv_json(&mut admin);
        assert!(
            r["error"]["message"].as_str().unwrap().contains("30 s"),
            "{r}"
        );
    }
    // Valid: accepted (the target does not exist, which is the action's own answer).
    send(
        &mut admin,
        &signed_command(
            "ok1",
            "system",
            "disconnect",
            target.clone(),
            ADMIN_KEY,
            &at(-5),
        ),
    );
    let r = recv_json(&mut admin);
    assert_eq!(
        r["error"]["code"], "invalid_message",
        "signature accepted: {r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no connection")
    );
    // Replayed id.
    send(
        &mut admin,
        &signed_command("ok1", "system", "disconnect", target, ADMIN_KEY, &at(0)),
    );
    assert_eq!(recv_json(&mut admin)["error"]["code"], "duplicate_id");
}

#[test]
fn signatures_are_optional_elsewhere_but_checked_when_present() {
    let server = start_with(|c| c.sensitive_actions = vec!["print.job/cancel".into()]);
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    assert_eq!(
        request(&mut ws, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
    send(
        &mut ws,
        &signed_command(
            "p2",
            "system",
            "ping",
            json!({"x": [1, 2]}),
            OPERATOR_KEY,
            &at(0),
        ),
    );
    assert_eq!(recv_json(&mut ws)["status"], "ok");
    send(
        &mut ws,
        &signed_command("p3", "system", "ping", json!({}), "not-my-key", &at(0)),
    );
    assert_eq!(recv_json(&mut ws)["error"]["code"], "auth_failed");
    // The configured action is now sensitive.
    let r = request(&mut ws, "c", "print.job", "cancel", json!({}));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sensitive"),
        "{r}"
    );
}

#[test]
fn auth_token_must_belong_to_the_same_identity() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let mine = json!({"type": "command", "id": "t1", "channel": "system", "action": "ping", "auth": {"token": OPERATOR_KEY}});
    send(&mut ws, &mine.to_string());
    assert_eq!(recv_json(&mut ws)["status"], "ok");
    let theirs = json!({"type": "command", "id": "t2", "channel": "system", "action": "ping", "auth": {"token": ADMIN_KEY}});
    send(&mut ws, &theirs.to_string());
    let r = recv_json(&mut ws);
    assert_eq!(r["error"]["code"], "auth_failed");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another identity")
    );
    let bad = json!({"type": "command", "id": "t3", "channel": "system", "action": "ping", "auth": {"token": "nope"}});
    send(&mut ws, &bad.to_string());
    assert_eq!(recv_json(&mut ws)["error"]["code"], "auth_failed");
    let malformed = json!({"type": "command", "id": "t4", "channel": "system", "action": "ping", "auth": {"token": 5}});
    send(&mut ws, &malformed.to_string());
    assert_eq!(recv_json(&mut ws)["error"]["details"]["field"], "auth");
}

/// The response to `text` (a command with id `id`) on `ws`, events skipped.
fn answer(ws: &mut TestSocket, id: &str, text: &str) -> serde_json::Value {
    send(ws, text);
    loop {
        let v = recv_json(ws);
        if v["type"] == "response" && v["id"] == id {
            return v;
        }
    }
}

/// Issue #11 §1.5: a captured signed command runs once. Sent again on the same connection,
/// after `system/resume` on another connection, or on a fresh connection of the same
/// identity, within the 30 s window, it is refused and does not run.
#[test]
fn a_signed_command_runs_once_whatever_connection_replays_it() {
    let server = start_with(|c| c.sensitive_actions = vec!["system/ping".into()]);
    let (mut first, welcome) = connect_with_welcome(server.bound_addr(), Some(ADMIN_KEY));
    let signed = signed_command("once", "system", "ping", json!({}), ADMIN_KEY, &at(0));
    assert_eq!(answer(&mut first, "once", &signed)["status"], "ok");
    let refused = |r: &serde_json::Value| {
        assert_eq!(r["status"], "error", "the replay ran: {r}");
        let code = r["error"]["code"].as_str().unwrap().to_string();
        assert!(code == "duplicate_id" || code == "auth_failed", "{r}");
    };
    refused(&answer(&mut first, "once", &signed));
    // The session moves to another connection: its guard moves with it.
    drop(first);
    let mut second = connect(server.bound_addr(), Some(ADMIN_KEY));
    request_ok(
        &mut second,
        "r",
        "system",
        "resume",
        json!({"session_id": welcome["session_id"], "last_seq": 0}),
    );
    let r = answer(&mut second, "once", &signed);
    assert_eq!(r["error"]["code"], "duplicate_id", "{r}");
    // A fresh connection and session of the same identity: the signature was used.
    let mut fresh = connect(server.bound_addr(), Some(ADMIN_KEY));
    let r = answer(&mut fresh, "once", &signed);
    assert_eq!(r["error"]["code"], "auth_failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already executed"),
        "{r}"
    );
    // A new signature (new id) still runs.
    let again = signed_command("twice", "system", "ping", json!({}), ADMIN_KEY, &at(0));
    assert_eq!(answer(&mut fresh, "twice", &again)["status"], "ok");
}
