//! SPEC §3 `SessionTokens`: RS256 tokens issued by the server, returned at authentication,
//! accepted as Bearer credentials and by system/resume, refused when expired or tampered.

mod support;

use std::time::Duration;

use hydrogen_ws::{Error, SessionTokenConfig};
use serde_json::json;
use support::*;

fn token_server(ttl: Duration) -> hydrogen_ws::ServerHandle {
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
        server.status()["events"]["sessions_detached"] == 1
    });
    server
        .publisher()
        .publish("print", "progress", json!({"n": 1}))
        .unwrap();

    // The token is a credential: same identity, same role.
    let mut again = connect_bearer(server.bound_addr(), &token).expect("session token accepted");
    assert_eq!(recv_json(&mut again)["data"]["role"], "operator");
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
