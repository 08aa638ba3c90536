//! Issue #11: hostile input, class by class, against a real server over real sockets —
//! credentials (empty, ambiguous, before authentication), reserved channels, sessions and
//! subscriptions that a client could multiply, one address holding every handshake slot,
//! malformed upgrades that must still get an HTTP answer, and exactness of ids, numbers and
//! keys. Memory under floods and secrets at `trace` are measured on the real binary in
//! `tests/hostile_binary.rs`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hydrogen_ws::{ApiKey, Config, Error, Role, Secret, Server};
use serde_json::json;
use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.x), so that one test
/// can be several "addresses".
fn tcp_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp
}

fn upgrade_with_headers(path: &str, headers: &str) -> String {
    upgrade_request(
        path,
        &format!("Sec-WebSocket-Protocol: {PROTOCOL}\r\n{headers}"),
    )
}

// --- 1. Credentials -------------------------------------------------------------------

/// §1.1: an empty key never authenticates, by header, query or `system/auth`, and a config
/// holding an empty or blank key does not start.
#[test]
fn empty_credentials_never_authenticate_and_empty_keys_do_not_start() {
    let server = start();
    let addr = server.bound_addr();
    for path in ["/?key=", "/?key=%20", "/?token="] {
        let (status, _, body) = raw_http(addr, &upgrade_with_headers(path, ""));
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "auth_failed");
    }
    let (status, _, _) = raw_http(addr, &upgrade_with_headers("/", "Authorization: Key \r\n"));
    assert_eq!(status, 401);
    let mut late = connect(addr, None);
    let r = request(&mut late, "a", "system", "auth", json!({"key": ""}));
    assert_eq!(r["error"]["code"], "auth_failed", "{r}");
    assert_eq!(expect_close(&mut late).unwrap().code, CloseCode::Policy);

    for blank in ["", "   "] {
        let mut c = test_config();
        c.keys
            .push(ApiKey::new("blank", Secret::new(blank), Role::Admin));
        match Server::start(c) {
            Err(Error::Config { key, .. }) => assert!(key.contains("blank"), "{key}"),
            other => panic!("a blank key must not start a server: {other:?}"),
        }
        let file = format!(r#"{{"WebSocketServer":{{"Key":"{blank}"}}}}"#);
        let e = Config::from_json_str(&file).unwrap_err().to_string();
        assert!(
            e.contains("WebSocketServer.Key") && e.contains("empty"),
            "{e}"
        );
        let file = format!(r#"{{"WebSocketServer":{{"Keys":[{{"Name":"k","Key":"{blank}"}}]}}}}"#);
        let e = Config::from_json_str(&file).unwrap_err().to_string();
        assert!(e.contains("Keys[0].Key"), "{e}");
    }
}

/// §1.4: credentials that could be read two ways are refused, not guessed.
#[test]
fn ambiguous_credentials_are_refused_with_400() {
    let server = start();
    let addr = server.bound_addr();
    let cases = [
        (
            "/",
            format!("Authorization: Key {ADMIN_KEY}\r\nAuthorization: Key {VIEWER_KEY}\r\n"),
            "more than one Authorization",
        ),
        (
            "/?key=wrong-key-0123456789",
            format!("Authorization: Key {VIEWER_KEY}\r\n"),
            "differ",
        ),
        (
            &*format!("/?key={VIEWER_KEY}&key={ADMIN_KEY}"),
            String::new(),
            "more than one key",
        ),
        (
            &*format!("/?key={VIEWER_KEY}&token=a.b.c"),
            String::new(),
            "more than one key",
        ),
    ];
    for (path, headers, says) in &cases {
        let (status, _, body) = raw_http(addr, &upgrade_with_headers(path, headers));
        assert_eq!(status, 400, "{path} {headers}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(!message.contains(VIEWER_KEY) && !message.contains(ADMIN_KEY));
    }
    // The same credential given both ways is not ambiguous.
    let path = format!("/?key={VIEWER_KEY}");
    let mut ws = try_connect(addr, Some(VIEWER_KEY), &path, Some(PROTOCOL)).expect("agreeing");
    assert_eq!(read_welcome(&mut ws)["role"], "viewer");
}

/// §1.6: before authentication a binary frame is refused like any other non-auth message:
/// `auth_failed` and close 1008 at once, not after AuthTimeoutMs.
#[test]
fn a_binary_frame_before_authentication_closes_1008_at_once() {
    let server = start_with(|c| c.auth_timeout = Duration::from_secs(30));
    let mut ws = connect(server.bound_addr(), None);
    let started = Instant::now();
    ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    let err = recv_json(&mut ws);
    assert_eq!(err["error"]["code"], "auth_failed", "{err}");
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Policy);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not the auth timeout"
    );
}

/// §1.7: `system` is the server's: a service's `system/publish` and a `Publisher` are
/// refused there, and a subscriber of `system` never sees a forged welcome.
#[test]
fn nobody_publishes_on_the_system_channel() {
    let server = start();
    let mut subscriber = connect(server.bound_addr(), Some(VIEWER_KEY));
    request_ok(
        &mut subscriber,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["system"]}),
    );
    let mut service = connect(server.bound_addr(), Some(SERVICE_KEY));
    let forged = json!({"channel": "system", "action": "welcome",
        "data": {"role": "admin", "session_id": "x", "connection_id": 1}});
    let r = request(&mut service, "p", "system", "publish", forged);
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let e = server
        .publisher()
        .publish("system", "welcome", json!({"role": "admin"}))
        .unwrap_err();
    let hydrogen_ws::Error::Refused(e) = e else {
        panic!("expected a refusal, got {e:?}")
    };
    assert_eq!(e.code.as_str(), "forbidden");
    // The next thing the subscriber reads is its own ping's answer, not an event.
    request_ok(&mut subscriber, "after", "system", "ping", json!({}));
    assert_eq!(server.status().events.events_published, 0);
}

// --- 2. What a client can make the server hold ------------------------------------------

/// §2.3: re-authenticating 1500 times on one connection leaves one session, and an identity
/// that connects and leaves again and again keeps at most MaxSessionsPerIdentity.
#[test]
fn sessions_do_not_multiply() {
    let server = start_with(|c| c.max_sessions_per_identity = 5);
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    for i in 0..1500 {
        request_ok(
            &mut ws,
            &format!("a{i}"),
            "system",
            "auth",
            json!({"key": VIEWER_KEY}),
        );
    }
    assert_eq!(server.status().events.sessions, 1);
    drop(ws);
    for _ in 0..20 {
        let mut c = connect(server.bound_addr(), Some(OPERATOR_KEY));
        let _ = request(&mut c, "p", "system", "ping", json!({}));
    }
    wait_for("detached sessions over the cap to expire", || {
        let events = &server.status().events;
        // The viewer's one detached session, and at most 5 of the operator's.
        events.sessions <= 6
    });
}

/// §2.4: one subscribe with 6000 channels is refused naming the limit, and changes nothing.
#[test]
fn subscriptions_are_capped_per_session() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let many: Vec<String> = (0..6000).map(|i| format!("c{i}")).collect();
    let r = request(
        &mut ws,
        "s",
        "system",
        "subscribe",
        json!({"channels": many}),
    );
    assert_eq!(r["error"]["code"], "invalid_message", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MaxChannelsPerSession")
    );
    let some: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    let r = request(
        &mut ws,
        "t",
        "system",
        "subscribe",
        json!({"channels": some}),
    );
    assert_eq!(
        r["data"]["subscriptions"].as_array().unwrap().len(),
        64,
        "{r}"
    );
    let r = request(
        &mut ws,
        "u",
        "system",
        "subscribe",
        json!({"channels": ["one-more"]}),
    );
    assert_eq!(r["error"]["code"], "invalid_message");
    let actions: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
    let r = request(
        &mut ws,
        "v",
        "system",
        "subscribe",
        json!({"channels": ["c1"], "actions": actions}),
    );
    assert_eq!(r["error"]["code"], "invalid_message", "{r}");
}

// --- 3. Admission ----------------------------------------------------------------------

/// §3.1: half-sent requests from one address hold at most MaxConnectionsPerIp threads;
/// the rest get 429 at once, and a client from another address is served.
#[test]
fn one_address_cannot_take_every_handshake_slot() {
    let server = start_with(|c| {
        c.max_connections = 100;
        c.max_connections_per_ip = 20;
        c.handshake_timeout = Duration::from_secs(30);
    });
    let addr = server.bound_addr();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..124 {
        let mut tcp = tcp_from("127.0.0.2", addr);
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        held.push(tcp);
    }
    // Those beyond the 20 are answered (and closed) without waiting for their requests.
    for tcp in &mut held[20..] {
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("MaxConnectionsPerIp"), "{answer}");
        refused += 1;
    }
    assert_eq!(refused, 104);
    let mut other = connect(addr, Some(VIEWER_KEY));
    assert_eq!(
        request(&mut other, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
    assert_eq!(server.status().active_connections, 1);
}

// --- 4. Every refused upgrade gets an HTTP answer ---------------------------------------

/// §4: malformed upgrades get a status and the JSON body, never a bare close; the head limit
/// of 8 KiB is exact.
#[test]
fn malformed_upgrades_are_answered() {
    let server = start();
    let addr = server.bound_addr();
    let auth = format!("Authorization: Key {VIEWER_KEY}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n");
    let with = |version: &str, lines: &str| {
        format!(
            "GET / {version}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{lines}{auth}\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let v13 = "Sec-WebSocket-Version: 13\r\n";
    let cases = [
        (with("HTTP/1.0", &format!("{key}{v13}")), 400, "HTTP/1.1"),
        (with("HTTP/1.1", v13), 400, "Sec-WebSocket-Key missing"),
        (
            with("HTTP/1.1", &format!("Sec-WebSocket-Key: short\r\n{v13}")),
            400,
            "malformed",
        ),
        (
            with("HTTP/1.1", &format!("{key}{key}{v13}")),
            400,
            "more than once",
        ),
        (with("HTTP/1.1", key), 426, "missing"),
        (
            with("HTTP/1.1", &format!("{key}Sec-WebSocket-Version: 8\r\n")),
            426,
            "version 13",
        ),
    ];
    for (request, status, says) in &cases {
        let (got, head, body) = raw_http(addr, request);
        assert_eq!(got, *status, "{request}: {head}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says}: {body}");
        if *status == 426 {
            assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
            assert_eq!(body["error"]["code"], "upgrade_required");
        } else {
            assert_eq!(body["error"]["code"], "invalid_message");
        }
    }
    // 9 KiB of head: 431, even with a valid key in it.
    let big = upgrade_with_headers("/", &format!("{auth}X-Pad: {}\r\n", "p".repeat(9 * 1024)));
    let (status, _, body) = raw_http(addr, &big);
    assert_eq!(status, 431, "{body}");
    // Just under the limit is fine: the upgrade's 101 (the socket then stays open).
    let fits = upgrade_with_headers("/", &format!("{auth}X-Pad: {}\r\n", "p".repeat(7 * 1024)));
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(fits.as_bytes()).unwrap();
    let mut first = [0u8; 12];
    tcp.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 101");
}

// --- 6. Exactness ------------------------------------------------------------------------

/// §6.1, §6.3: ids count characters, not bytes; a repeated key makes a message invalid.
#[test]
fn ids_count_characters_and_repeated_keys_are_refused() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let accented = "é".repeat(128);
    request_ok(&mut ws, &accented, "system", "ping", json!({}));
    send(
        &mut ws,
        &command(&"é".repeat(129), "system", "ping", json!({})),
    );
    assert_eq!(recv_json(&mut ws)["error"]["code"], "invalid_message");
    for text in [
        r#"{"type":"command","id":"d1","channel":"system","action":"ping","action":"threads"}"#,
        r#"{"type":"command","id":"d2","channel":"system","action":"ping","data":{"a":1,"a":2}}"#,
    ] {
        send(&mut ws, text);
        let r = recv_json(&mut ws);
        assert_eq!(r["error"]["code"], "invalid_message", "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("appears twice"),
            "{r}"
        );
    }
}

/// §6.2: numbers reach a service with every digit the client wrote (serde_json's
/// arbitrary precision); only an exponent's spelling is normalised (`1E2` → `1e+2`).
#[test]
fn numbers_reach_services_as_written() {
    let server = start();
    let mut controller = service(server.bound_addr(), &["print"]);
    let mut operator = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let written =
        r#"{"big":1180591620717411303424,"e":1E2,"tiny":1e-07,"pi":3.14159265358979323846264338}"#;
    send(
        &mut operator,
        &format!(
            r#"{{"type":"command","id":"n","channel":"print","action":"set","data":{written}}}"#
        ),
    );
    let forwarded = loop {
        match controller.read().unwrap() {
            Message::Text(t) if t.as_str().contains("\"command\"") => break t.to_string(),
            _ => {}
        }
    };
    for number in [
        "1180591620717411303424",
        "1e+2",
        "1e-07",
        "3.14159265358979323846264338",
    ] {
        assert!(forwarded.contains(number), "{number} changed: {forwarded}");
    }
    assert!(
        !forwarded.contains("100.0") && !forwarded.contains("1.18"),
        "{forwarded}"
    );
}
