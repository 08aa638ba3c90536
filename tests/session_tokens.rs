//! SPEC §3 `SessionTokens`: RS256 tokens issued by the server, returned at authentication,
//! accepted as Bearer credentials and by system/resume, refused when expired or tampered.

mod support;

use std::time::Duration;

use hydrogen_ws::{Error, SessionTokenConfig};
use serde_json::json;
use support::*;

fn token_server(ttl: Duration) -> hydrogen_ws::Server {
    let (private, _) = rsa_keypair();
    let path = std::env::temp_dir().join(format!(
        "hws-session-{}-{}.pem",
        std::process::id(),
        ttl.as_millis()
    ));
    std::fs::write(&path, private).unwrap();
    start_with(move |c| {
        let mut t = SessionTokenConfig::new(path);
        t.ttl = ttl;
        c.session_tokens = Some(t);
    })
}

fn bearer_upgrade(token: &str) -> String {
    upgrade_request(
        "/",
        &format!("Authorization: Bearer {token}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n"),
    )
}

#[test]
fn issued_at_authentication_then_accepted_as_bearer_and_for_resume() {
    let server = token_server(Duration::from_secs(3600));
    let (mut first, welcome) = connect_with_welcome(server.bound_addr(), Some(OPERATOR_KEY));
    let token = welcome["session_token"]
        .as_str()
        .expect("welcome carries a session token")
        .to_string();
    request(
        &mut first,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["print"]}),
    );
    let mut late = connect(server.bound_addr(), None);
    let r = request(
        &mut late,
        "a",
        "system",
        "auth",
        json!({"key": OPERATOR_KEY}),
    );
    assert!(r["data"]["session_token"].as_str().unwrap().len() > 100);
    drop(first);
    wait_for("the session to detach", || {
        server.status().events.sessions_detached == 1
    });
    server
        .publisher()
        .publish("print", "progress", json!({"n": 1}))
        .unwrap();

    // The token is a credential: same identity, same role.
    let mut again = connect_bearer(server.bound_addr(), &token).expect("session token accepted");
    assert_eq!(read_welcome(&mut again)["role"], "operator");
    // And it resumes its session.
    let r = request(
        &mut again,
        "r",
        "system",
        "resume",
        json!({"session_token": token, "last_seq": 0}),
    );
    assert_eq!(r["data"]["resumed"], true, "{r}");
    assert_eq!(r["data"]["session_id"], welcome["session_id"]);
    let e = recv_json(&mut again);
    assert_eq!(
        (e["type"].as_str(), e["seq"].as_u64()),
        (Some("event"), Some(1))
    );
}

#[test]
fn expired_and_tampered_tokens_are_refused() {
    let server = token_server(Duration::from_secs(1));
    let (_ws, welcome) = connect_with_welcome(server.bound_addr(), Some(VIEWER_KEY));
    let token = welcome["session_token"].as_str().unwrap().to_string();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1].insert(4, 'x');
    let (status, _, body) = raw_http(server.bound_addr(), &bearer_upgrade(&parts.join(".")));
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "auth_failed");
    wait_for("the token to expire", || {
        connect_bearer(server.bound_addr(), &token).is_err()
    });
    let (status, _, body) = raw_http(server.bound_addr(), &bearer_upgrade(&token));
    assert_eq!(status, 401);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("expired"), "{message}");
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = request(
        &mut ws,
        "r",
        "system",
        "resume",
        json!({"session_token": token, "last_seq": 0}),
    );
    assert!(
        r["error"]["message"].as_str().unwrap().contains("expired"),
        "{r}"
    );
}

#[test]
fn unusable_key_is_a_config_error() {
    let mut c = test_config();
    c.session_tokens = Some(SessionTokenConfig::new("/nonexistent/session.pem".into()));
    let e = hydrogen_ws::Server::start(c).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(
        e.to_string().contains("SessionTokens.PrivateKeyPath"),
        "{e}"
    );
}

/// Issue #11 §1.5: a connection that authenticated with a session token (which whoever
/// captured it can present) never reaches a sensitive action, signed or not, though the
/// same identity with its API key does.
#[test]
fn a_session_token_connection_gets_forbidden_for_sensitive_actions() {
    let server = token_server(Duration::from_secs(600));
    let (_keyed, welcome) = connect_with_welcome(server.bound_addr(), Some(ADMIN_KEY));
    let token = welcome["session_token"].as_str().unwrap().to_string();
    let mut by_token = connect_bearer(server.bound_addr(), &token).expect("token accepted");
    read_welcome(&mut by_token);
    let target = json!({"connection_id": 999_999});
    let r = request(&mut by_token, "u", "system", "disconnect", target.clone());
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    send(
        &mut by_token,
        &signed_command(
            "s",
            "system",
            "disconnect",
            target.clone(),
            ADMIN_KEY,
            &timestamp_now(),
        ),
    );
    let r = recv_json(&mut by_token);
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    // Non-sensitive admin actions still work on the token's connection.
    assert_eq!(
        request(&mut by_token, "t", "system", "threads", json!({}))["status"],
        "ok"
    );
    // The key's own connection signs and runs it (the target does not exist).
    let mut keyed = connect(server.bound_addr(), Some(ADMIN_KEY));
    send(
        &mut keyed,
        &signed_command(
            "k",
            "system",
            "disconnect",
            target,
            ADMIN_KEY,
            &timestamp_now(),
        ),
    );
    let r = recv_json(&mut keyed);
    assert_eq!(
        r["error"]["code"], "invalid_message",
        "ran, found no such connection: {r}"
    );
}
