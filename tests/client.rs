//! The client library against the real server: requests and timeouts, subscriptions and shared
//! queues, reliable events acked, a link cut mid-stream (resume, no gap, no duplicate), a
//! server restart and an expired session (re-subscribe + Gap), a half-open link, close 1011
//! (reconnect and resume), auth failures and close 1008 that do not loop, pending requests
//! failing on disconnect, TLS, and the `client` CLI.

mod support;

#[path = "../examples/client_demo.rs"]
mod client_demo;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use hydrogen_ws::client::{
    Callbacks, Client, ClientConfig, Credentials, Delivery, DisconnectInfo, GapReason,
    ReconnectInfo, Subscription,
};
use hydrogen_ws::{Error, ErrorCode, Event, Server};
use serde_json::{Value, json};
use support::proxy::Proxy;
use support::{ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, WAIT, start, start_with, wait_for};

fn config(url: &str, key: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url).with_credentials(Credentials::key(key));
    c.reconnect.initial_delay = Duration::from_millis(20);
    c.reconnect.max_delay = Duration::from_millis(200);
    c.close_timeout = Duration::from_secs(1);
    c
}

fn url(server: &Server) -> String {
    format!("ws://{}/", server.bound_addr())
}

/// Callbacks that forward reconnects, disconnects and errors to channels the test reads.
struct Watch {
    reconnects: Receiver<ReconnectInfo>,
    disconnects: Receiver<DisconnectInfo>,
    errors: Receiver<String>,
}

fn watched() -> (Callbacks, Watch) {
    let (rtx, reconnects) = unbounded();
    let (dtx, disconnects) = unbounded();
    let (etx, errors) = unbounded();
    let callbacks = Callbacks::new()
        .on_reconnect(move |i| {
            let _ = rtx.send(i.clone());
        })
        .on_disconnect(move |i| {
            let _ = dtx.send(i.clone());
        })
        .on_error(move |e| {
            let _ = etx.send(e.to_string());
        });
    (
        callbacks,
        Watch {
            reconnects,
            disconnects,
            errors,
        },
    )
}

fn next_event_n(d: Option<Delivery>) -> u64 {
    match d {
        Some(Delivery::Event(e)) => e.data["n"].as_u64().expect("n"),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Publishes `{"n": n}` on `print` and expects it as the next delivery of `sub`.
fn publish_and_receive(server: &Server, sub: &Subscription, n: u64) {
    server
        .publisher()
        .publish("print", "progress", json!({"n": n}))
        .unwrap();
    assert_eq!(next_event_n(sub.recv_timeout(WAIT)), n);
}

fn expect_gap(sub: &Subscription, expected: GapReason) {
    match sub.recv_timeout(WAIT) {
        Some(Delivery::Gap { reason, .. }) => assert_eq!(reason, expected),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn request_response_errors_and_timeouts() {
    let server = start();
    server
        .register_handler("slow", |_req| {
            thread::sleep(Duration::from_millis(1500));
            Ok(json!({"done": true}))
        })
        .unwrap();
    let client = Client::connect(config(&url(&server), OPERATOR_KEY)).unwrap();
    assert!(client.is_connected());
    assert_eq!(client.session_id().unwrap().len(), 32);
    let pong = client.request("system", "ping", json!({}), WAIT).unwrap();
    assert_eq!(pong, json!({"pong": true}));
    match client.request("nowhere", "x", json!({}), WAIT) {
        Err(Error::Server(e)) => assert_eq!(e.code, ErrorCode::UnknownChannel),
        other => panic!("expected unknown_channel, got {other:?}"),
    }
    let t0 = Instant::now();
    match client.request("slow", "go", json!({}), Duration::from_millis(200)) {
        Err(Error::Timeout(what)) => assert!(what.to_string().contains("slow/go"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
    // The late answer is dropped quietly; the next request still works.
    let status = client.request("system", "status", json!({}), WAIT).unwrap();
    assert!(status["active_connections"].as_u64().unwrap() >= 1);
    client.disconnect().unwrap();
    assert!(matches!(
        client.request("system", "ping", json!({}), WAIT),
        Err(Error::Disconnected)
    ));
    wait_for("server sees the client gone", || {
        server.connection_count() == 0
    });
}

#[test]
fn subscriptions_own_and_shared_queues_and_unsubscribe() {
    let server = start();
    let client = Client::connect(config(&url(&server), VIEWER_KEY)).unwrap();
    let print = client.subscribe("print").unwrap();
    let (tx, shared_rx) = crossbeam_channel::bounded(64);
    client.subscribe_with("network", tx.clone()).unwrap();
    client.subscribe_with("file", tx).unwrap();
    let publisher = server.publisher();
    for n in 1..=5 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
        publisher
            .publish("network", "wifi", json!({"n": n}))
            .unwrap();
        publisher.publish("file", "added", json!({"n": n})).unwrap();
    }
    for n in 1..=5 {
        assert_eq!(next_event_n(print.recv_timeout(WAIT)), n);
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        match shared_rx.recv_timeout(WAIT).unwrap() {
            Delivery::Event(e) => seen.push((e.channel, e.data["n"].as_u64().unwrap())),
            other => panic!("{other:?}"),
        }
    }
    for channel in ["network", "file"] {
        let ns: Vec<u64> = seen
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(ns, [1, 2, 3, 4, 5], "{channel}");
    }
    client.unsubscribe(print.id()).unwrap();
    wait_for("server drops the print subscription", || {
        server.status().events.subscriptions == 2
    });
    publisher
        .publish("print", "progress", json!({"n": 6}))
        .unwrap();
    publisher.publish("file", "added", json!({"n": 6})).unwrap();
    assert!(matches!(shared_rx.recv_timeout(WAIT), Ok(Delivery::Event(e)) if e.channel == "file"));
    assert!(print.receiver().try_recv().is_err());
    // The server's refusal comes back, and nothing is left subscribed locally.
    match client.subscribe("Bad Name!") {
        Err(Error::Server(e)) => assert_eq!(e.code, ErrorCode::InvalidMessage),
        other => panic!("expected invalid_message, got {other:?}"),
    }
}

#[test]
fn reliable_events_are_acked_after_queueing_and_full_queues_get_a_gap() {
    let server = start_with(|c| c.delivery.ack_timeout = Duration::from_millis(200));
    let (callbacks, watch) = watched();
    let print_messages = Arc::new(AtomicUsize::new(0));
    let counter = print_messages.clone();
    let callbacks = callbacks.on_message(move |msg| {
        if msg["channel"] == "print" && msg["type"] == "event" {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut cfg = config(&url(&server), VIEWER_KEY);
    cfg.queue_capacity = 4;
    let client = Client::connect_with(cfg, callbacks).unwrap();
    let sub = client.subscribe("print").unwrap();
    let publisher = server.publisher();
    publisher
        .publish_event(Event::new("print", "done", json!({"n": 1})).reliable())
        .unwrap();
    match sub.recv_timeout(WAIT) {
        Some(Delivery::Event(e)) => assert!(e.reliable && !e.redelivered),
        other => panic!("{other:?}"),
    }
    wait_for("the server has the ack", || {
        server.status().events.unacked_events == 0
    });
    // Ten ordinary events into a queue of four nobody reads: four arrive, then a Gap marker.
    for n in 2..=11 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    wait_for("the client has read all eleven", || {
        print_messages.load(Ordering::SeqCst) == 11
    });
    let err = watch.errors.recv_timeout(WAIT).unwrap();
    assert!(err.contains("queue full"), "{err}");
    let first: Vec<u64> = (0..4)
        .map(|_| next_event_n(sub.recv_timeout(WAIT)))
        .collect();
    assert_eq!(first, [2, 3, 4, 5]);
    publisher
        .publish("print", "progress", json!({"n": 12}))
        .unwrap();
    match sub.recv_timeout(WAIT) {
        Some(Delivery::Gap { channel, reason }) => {
            assert_eq!(
                (channel.as_str(), reason),
                ("print", GapReason::QueueOverflow)
            )
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(next_event_n(sub.recv_timeout(WAIT)), 12);
}

#[test]
fn link_cut_mid_stream_resumes_without_gap_or_duplicate() {
    let server = start();
    let proxy = Proxy::start(server.bound_addr());
    let (callbacks, watch) = watched();
    let client = Client::connect_with(config(&proxy.url(), VIEWER_KEY), callbacks).unwrap();
    let session = client.session_id().unwrap();
    let sub = client.subscribe("print").unwrap();
    const N: u64 = 400;
    let publisher = server.publisher();
    let producer = thread::spawn(move || {
        for n in 1..=N {
            publisher
                .publish("print", "progress", json!({"n": n}))
                .unwrap();
            thread::sleep(Duration::from_millis(1));
        }
    });
    let mut got = Vec::new();
    while got.len() < 50 {
        got.push(next_event_n(sub.recv_timeout(WAIT)));
    }
    let cut_at = Instant::now();
    proxy.cut();
    let down = watch.disconnects.recv_timeout(WAIT).unwrap();
    assert_eq!(down.code, 1006);
    assert!(down.will_reconnect);
    while got.last() != Some(&N) {
        got.push(next_event_n(sub.recv_timeout(WAIT)));
    }
    producer.join().unwrap();
    let again = watch.reconnects.recv_timeout(WAIT).unwrap();
    assert!(again.resumed && !again.gap, "{again:?}");
    assert_eq!(client.session_id().unwrap(), session, "same session");
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(cut_at.elapsed() < Duration::from_secs(10));
    assert!(proxy.accepted() >= 2);
}

#[test]
fn server_restart_resubscribes_and_marks_a_gap() {
    let server = start();
    let port = server.bound_addr().port();
    let (callbacks, watch) = watched();
    let client = Client::connect_with(config(&url(&server), VIEWER_KEY), callbacks).unwrap();
    let first_session = client.session_id().unwrap();
    let sub = client.subscribe("print").unwrap();
    publish_and_receive(&server, &sub, 1);
    server.shutdown();
    drop(server);
    let down = watch.disconnects.recv_timeout(WAIT).unwrap();
    assert_eq!((down.code, down.will_reconnect), (1001, true));
    let server = start_with(|c| {
        c.port = port;
        c.port_fallback_count = 1;
    });
    let again = watch.reconnects.recv_timeout(WAIT).unwrap();
    assert!(again.gap && !again.resumed, "{again:?}");
    assert_ne!(client.session_id().unwrap(), first_session);
    expect_gap(&sub, GapReason::SessionLost);
    publish_and_receive(&server, &sub, 2);
}

#[test]
fn expired_session_resubscribes_and_marks_a_gap() {
    let server = start_with(|c| c.delivery.session_resume = Duration::from_millis(200));
    let proxy = Proxy::start(server.bound_addr());
    let (callbacks, watch) = watched();
    let client = Client::connect_with(config(&proxy.url(), VIEWER_KEY), callbacks).unwrap();
    let sub = client.subscribe("print").unwrap();
    proxy.refuse(true);
    proxy.cut();
    watch.disconnects.recv_timeout(WAIT).unwrap();
    wait_for("the detached session expires", || {
        server.status().events.sessions == 0
    });
    // Meanwhile events go nowhere (no session): the client must learn it missed them.
    server
        .publisher()
        .publish("print", "progress", json!({"n": 1}))
        .unwrap();
    proxy.refuse(false);
    let again = watch.reconnects.recv_timeout(WAIT).unwrap();
    assert!(
        again.gap && !again.resumed && again.attempts >= 1,
        "{again:?}"
    );
    expect_gap(&sub, GapReason::SessionLost);
    publish_and_receive(&server, &sub, 2);
    assert!(
        watch.errors.try_iter().count() >= 1,
        "refused attempts were reported"
    );
}

#[test]
fn half_open_link_is_detected_within_heartbeat_plus_pong_timeout() {
    let server = start();
    let proxy = Proxy::start(server.bound_addr());
    let (callbacks, watch) = watched();
    let mut cfg = config(&proxy.url(), VIEWER_KEY);
    cfg.heartbeat_interval = Duration::from_millis(200);
    cfg.pong_timeout = Duration::from_millis(300);
    let client = Client::connect_with(cfg, callbacks).unwrap();
    let sub = client.subscribe("print").unwrap();
    proxy.stall(true);
    let stalled_at = Instant::now();
    let down = watch.disconnects.recv_timeout(WAIT).unwrap();
    let took = stalled_at.elapsed();
    assert!(down.reason.contains("no frame"), "{down:?}");
    // interval + pong timeout = 500 ms; a loose bound for a loaded machine.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    proxy.stall(false);
    let again = watch.reconnects.recv_timeout(WAIT).unwrap();
    assert!(again.resumed, "{again:?}");
    publish_and_receive(&server, &sub, 7);
}

#[test]
fn auth_failures_do_not_loop_until_credentials_change() {
    let server = start();
    // Wrong key at connect: the caller gets the server's refusal.
    match Client::connect(config(&url(&server), "not-a-key-at-all-000000")) {
        Err(Error::Rejected { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (401, "auth_failed"))
        }
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    // A restarted server that no longer knows the key: one refused attempt, then nothing.
    let port = server.bound_addr().port();
    let (callbacks, watch) = watched();
    let client = Client::connect_with(config(&url(&server), VIEWER_KEY), callbacks).unwrap();
    server.shutdown();
    drop(server);
    let server = start_with(|c| {
        c.port = port;
        c.port_fallback_count = 1;
        c.keys.retain(|k| k.role != hydrogen_ws::Role::Viewer);
    });
    let refused = watch
        .errors
        .iter()
        .find(|e| e.contains("401"))
        .expect("a 401 is reported");
    assert!(refused.contains("auth_failed"), "{refused}");
    // The client decides not to retry a 401; once it has, no retry can follow.
    wait_for("the client gives up after a 401", || client.gave_up());
    assert_eq!(
        server
            .status()
            .rejected
            .get("auth_failed")
            .copied()
            .unwrap_or(0),
        1,
        "no retry loop"
    );
    assert!(!client.is_connected());
    // New credentials: the client tries again and gets in.
    client.set_credentials(Some(Credentials::key(OPERATOR_KEY)));
    let again = watch.reconnects.recv_timeout(WAIT).unwrap();
    assert!(client.is_connected());
    assert_eq!(
        server.status().rejected.get("auth_failed").copied(),
        Some(1),
        "the new credentials were accepted at once ({again:?})"
    );
}

#[test]
fn close_1008_from_an_admin_stops_reconnecting() {
    // Signing is tested in signatures.rs; here the admin's disconnect only has to happen.
    let server = start_with(|c| c.sensitive_actions.clear());
    let (cb_tx, cb_rx) = unbounded();
    let (callbacks, watch) = watched();
    let callbacks = callbacks.on_connect(move |info| {
        let _ = cb_tx.send(info.connection_id);
    });
    let client = Client::connect_with(config(&url(&server), VIEWER_KEY), callbacks).unwrap();
    let id = cb_rx.recv_timeout(WAIT).unwrap().expect("connection id");
    let admin = Client::connect(config(&url(&server), ADMIN_KEY)).unwrap();
    admin
        .request("system", "disconnect", json!({"connection_id": id}), WAIT)
        .unwrap();
    let down = watch.disconnects.recv_timeout(WAIT).unwrap();
    assert_eq!((down.code, down.will_reconnect), (1008, false));
    let before = server.status().total_connections;
    wait_for("the client gives up after close 1008", || client.gave_up());
    assert_eq!(server.status().total_connections, before);
    assert!(matches!(
        client.request("system", "ping", json!({}), WAIT),
        Err(Error::Disconnected)
    ));
}

#[test]
fn close_1011_from_a_panicking_handler_reconnects_and_resumes() {
    let server = start();
    server
        .register_handler("boom", |_req| panic!("handler bug (expected by this test)"))
        .unwrap();
    let (callbacks, watch) = watched();
    let client = Client::connect_with(config(&url(&server), OPERATOR_KEY), callbacks).unwrap();
    let session = client.session_id().unwrap();
    let sub = client.subscribe("print").unwrap();
    publish_and_receive(&server, &sub, 1);
    // The caller of a panicking handler gets server_error, then close 1011: a server fault,
    // so the client dials again and resumes its session.
    match client.request("boom", "go", json!({}), WAIT) {
        Err(Error::Server(e)) => assert_eq!(e.code, ErrorCode::ServerError),
        other => panic!("expected server_error, got {other:?}"),
    }
    let down = watch.disconnects.recv_timeout(WAIT).unwrap();
    assert_eq!((down.code, down.will_reconnect), (1011, true), "{down:?}");
    let again = watch.reconnects.recv_timeout(WAIT).unwrap();
    assert!(again.resumed && !again.gap, "{again:?}");
    assert_eq!(client.session_id().unwrap(), session, "same session");
    publish_and_receive(&server, &sub, 2);
}

#[test]
fn a_host_name_is_looked_up_and_every_address_tried() {
    let server = start();
    // `localhost` may resolve to ::1 first, where nothing listens: the next address is tried.
    let url = format!("ws://localhost:{}/", server.bound_addr().port());
    let client = Client::connect(config(&url, VIEWER_KEY)).unwrap();
    let pong = client.request("system", "ping", json!({}), WAIT).unwrap();
    assert_eq!(pong, json!({"pong": true}));
    // A name that cannot resolve (RFC 6761): a lookup error, or a timeout where the resolver
    // waits for a DNS server this machine cannot reach; either way within connect_timeout.
    let mut unknown = config("ws://no-such-host.invalid:1/", VIEWER_KEY);
    unknown.connect_timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    match Client::connect(unknown) {
        Err(Error::Connect { .. } | Error::Timeout(_)) => {}
        other => panic!("expected a lookup failure, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn pending_requests_fail_at_once_when_the_link_drops() {
    let server = start();
    let (entered_tx, entered) = unbounded();
    server
        .register_handler("slow", move |_req| {
            let _ = entered_tx.send(());
            thread::sleep(Duration::from_secs(3));
            Ok(json!({}))
        })
        .unwrap();
    let proxy = Proxy::start(server.bound_addr());
    let client = Arc::new(Client::connect(config(&proxy.url(), OPERATOR_KEY)).unwrap());
    let c = client.clone();
    let waiting =
        thread::spawn(move || c.request("slow", "go", json!({}), Duration::from_secs(30)));
    entered.recv_timeout(WAIT).unwrap();
    let cut_at = Instant::now();
    proxy.cut();
    let result = waiting.join().unwrap();
    assert!(matches!(result, Err(Error::Disconnected)), "{result:?}");
    assert!(
        cut_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        cut_at.elapsed()
    );
}

#[test]
fn run_scopes_the_connection_and_callbacks_cannot_deadlock() {
    let server = start();
    let answer = Client::run(config(&url(&server), VIEWER_KEY), |client| {
        client.request("system", "info", json!({}), WAIT)
    })
    .unwrap();
    assert!(answer.is_object());
    wait_for("the scoped client is gone", || {
        server.connection_count() == 0
    });

    // A callback that calls request() gets an error instead of hanging the I/O thread.
    let (tx, rx) = unbounded();
    let slot: Arc<parking_lot::Mutex<Option<Arc<Client>>>> = Arc::default();
    let s = slot.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let callbacks = Callbacks::new().on_message(move |_msg| {
        if n.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(c) = s.lock().clone()
        {
            let _ = tx.send(c.request("system", "ping", json!({}), WAIT).is_err());
        }
    });
    let client =
        Arc::new(Client::connect_with(config(&url(&server), VIEWER_KEY), callbacks).unwrap());
    *slot.lock() = Some(client.clone());
    calls.store(0, Ordering::SeqCst);
    client
        .send(&json!({"type":"command","id":"x1","channel":"system","action":"ping"}))
        .unwrap();
    assert!(
        rx.recv_timeout(WAIT).unwrap(),
        "request inside a callback is refused"
    );
    slot.lock().take();
}

/// Without the `tls` feature a wss:// URL is refused when the client is made.
#[test]
#[cfg(not(feature = "tls"))]
fn wss_needs_the_tls_feature() {
    match Client::connect(config("wss://localhost:1/", VIEWER_KEY)) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("`tls` feature"), "{why}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
#[cfg(feature = "tls")]
fn tls_client_against_the_tls_server() {
    use hydrogen_ws::client::TlsRoots;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir();
    let cert = dir.join(format!("hws-client-tls-{}-cert.pem", std::process::id()));
    let key = dir.join(format!("hws-client-tls-{}-key.pem", std::process::id()));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = start_with(|c| {
        c.tls = true;
        c.certificate_path = Some(cert.clone());
        c.key_path = Some(key.clone());
    });
    let port = server.bound_addr().port();
    let mut cfg = config(&format!("wss://localhost:{port}/"), VIEWER_KEY);
    cfg.tls_roots = TlsRoots::CaFile(cert.clone());
    let client = Client::connect(cfg.clone()).unwrap();
    let sub = client.subscribe("print").unwrap();
    publish_and_receive(&server, &sub, 1);
    assert_eq!(
        client.request("system", "ping", json!({}), WAIT).unwrap(),
        json!({"pong": true})
    );
    // The system store does not know this self-signed certificate: refused in the handshake.
    cfg.tls_roots = TlsRoots::System;
    match Client::connect(cfg.clone()) {
        Err(Error::Handshake { message, .. }) => {
            assert!(message.contains("certificate"), "{message}")
        }
        // A machine without any CA certificates says so instead.
        Err(Error::Tls { path, .. }) => assert_eq!(path, "system certificate store"),
        other => panic!("expected an untrusted certificate, got {other:?}"),
    }
    // An unreadable CA file is a TLS error naming the file.
    cfg.tls_roots = TlsRoots::CaFile(std::path::PathBuf::from("/nonexistent/ca.pem"));
    match Client::connect(cfg) {
        Err(Error::Tls { path, .. }) => assert_eq!(path, "/nonexistent/ca.pem"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let _ = std::fs::remove_file(cert);
    let _ = std::fs::remove_file(key);
}

#[test]
fn cli_client_prints_events_and_sends_stdin_lines() {
    let server = start();
    let bin = env!("CARGO_BIN_EXE_hydrogen-ws");
    // --subscribe: events as JSON lines.
    let mut sub = Command::new(bin)
        .args([
            "client",
            &url(&server),
            "--key",
            VIEWER_KEY,
            "--subscribe",
            "print",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    wait_for("the CLI subscribed", || {
        server.status().events.subscriptions == 1
    });
    server
        .publisher()
        .publish("print", "progress", json!({"n": 42}))
        .unwrap();
    let event = loop {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["type"] == "event" && line["channel"] == "print" {
            break line;
        }
    };
    assert_eq!(event["data"]["n"], 42);
    let _ = sub.kill();
    let _ = sub.wait();

    // Interactive: each stdin line is sent, each message printed; EOF disconnects.
    let mut cli = Command::new(bin)
        .args(["client", &url(&server), "--key", VIEWER_KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"type":"command","id":"cli-1","channel":"system","action":"ping"}}"#
    )
    .unwrap();
    let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    let response = loop {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["id"] == "cli-1" {
            break line;
        }
    };
    assert_eq!(response["data"]["pong"], true);
    drop(stdin);
    let status = cli.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // Bad arguments: exit 2 with usage.
    let out = Command::new(bin).args(["client"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Refused credentials: exit 1, the reason on stderr.
    let out = Command::new(bin)
        .args(["client", &url(&server), "--key", "wrong-key-0000000000000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_failed"));
}

#[test]
fn client_demo_example_runs_its_lifecycle() {
    let server = start();
    let publisher = server.publisher();
    let url = url(&server);
    let demo = thread::spawn(move || {
        client_demo::demo(&url, VIEWER_KEY, "print", 3, WAIT).map_err(|e| e.to_string())
    });
    wait_for("the demo subscribed", || {
        server.status().events.subscriptions == 1
    });
    for n in 1..=3 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    let report = demo.join().unwrap().unwrap();
    assert!(report.status["active_connections"].as_u64().unwrap() >= 1);
    assert_eq!(
        report.events,
        [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
    assert_eq!(report.connects, 1);
    assert!(report.messages_seen >= 5, "{report:?}");
    wait_for("the demo is gone", || server.connection_count() == 0);
}

#[test]
fn refused_reconnects_back_off_and_stop_at_max_attempts() {
    let server = start();
    let proxy = Proxy::start(server.bound_addr());
    let mut cfg = config(&proxy.url(), VIEWER_KEY);
    cfg.reconnect.initial_delay = Duration::from_millis(20);
    cfg.reconnect.max_delay = Duration::from_secs(1);
    cfg.reconnect.max_attempts = Some(5);
    let (callbacks, watch) = watched();
    let client = Client::connect_with(cfg, callbacks).unwrap();
    proxy.refuse(true);
    proxy.cut();
    let t0 = Instant::now();
    wait_for("the client gives up", || client.gave_up());
    let took = t0.elapsed();
    // 20 + 40 + 80 + 160 + 320 ms (±20 %) of backoff before the five attempts.
    assert!(took >= Duration::from_millis(450), "{took:?}: no backoff");
    assert_eq!(proxy.accepted(), 1 + 5, "the first link and five attempts");
    // Giving up is final: no attempt can follow it, and each attempt's error is reported.
    let mut errors = 0;
    wait_for("an error per attempt", || {
        errors += watch.errors.try_iter().count();
        errors >= 5
    });
    assert_eq!(errors, 5);
    assert_eq!(proxy.accepted(), 6, "nothing after giving up");
    assert!(!client.is_connected());
}

#[test]
fn cli_raw_frames_stdin_while_subscribed_and_one_report_per_bad_line() {
    let server = start();
    let bin = env!("CARGO_BIN_EXE_hydrogen-ws");
    let mut cli = Command::new(bin)
        .args([
            "client",
            &url(&server),
            "--key",
            OPERATOR_KEY,
            "--raw",
            "--subscribe",
            "print",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    let mut stdin = cli.stdin.take().unwrap();
    // Subscribed, and stdin lines are still sent (as websocat does).
    writeln!(
        stdin,
        r#"{{"type":"command","id":"raw-1","channel":"system","action":"ping"}}"#
    )
    .unwrap();
    let pong = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains("\"raw-1\"") {
            break line;
        }
    };
    // --raw: the frame as the server wrote it, its key order kept (type first).
    assert!(
        pong.starts_with(r#"{"type":"response","id":"raw-1","#),
        "{pong}"
    );
    drop(stdin); // end of input: still subscribed, still printing
    wait_for("the CLI subscribed", || {
        server.status().events.subscriptions == 1
    });
    server
        .publisher()
        .publish("print", "progress", json!({"n": 7}))
        .unwrap();
    let event = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains("\"progress\"") {
            break line;
        }
    };
    assert!(event.starts_with(r#"{"type":"event","seq":"#), "{event}");
    let _ = cli.kill();
    let _ = cli.wait();

    // Not --raw: a line that is not JSON is reported once, on stderr, and not sent.
    let mut cli = Command::new(bin)
        .args(["client", &url(&server), "--key", OPERATOR_KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    writeln!(stdin, "{{broken").unwrap();
    writeln!(
        stdin,
        r#"{{"type":"command","id":"after","channel":"system","action":"ping"}}"#
    )
    .unwrap();
    drop(stdin);
    let out = cli.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("line 1 is not JSON").count(), 1, "{stderr}");
    assert!(!stdout.contains("invalid_message"), "not sent: {stdout}");
    assert!(stdout.contains("\"after\""), "{stdout}");
}
