//! Faults (#5): clients that reset without a close frame, half-open clients that never read,
//! slowloris handshakes, connection floods past MaxConnections, fragmented-message floods, ping
//! storms, a handler that panics, a handler that never returns, and a shutdown with 1000 clients
//! mid-stream. After each, the server still serves a new client, and its threads (`hws-*` in
//! /proc/self/task) and this process's open descriptors (/proc/self/fd) are back to baseline.
//!
//! The scenarios run one at a time (a lock) because descriptors are counted process-wide.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use hydrogen_ws::{Event, Server};
use parking_lot::Mutex;
use serde_json::json;
use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Server threads and process descriptors with the server started and idle.
struct Baseline {
    threads: Vec<String>,
    fds: usize,
}

fn baseline(server: &Server) -> Baseline {
    // One full round trip first, so lazily opened descriptors are counted in.
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    request(&mut ws, "warm", "system", "ping", json!({}));
    drop(ws);
    wait_for("the warm-up client is gone", || {
        server.connection_count() == 0 && threads_named("hws-conn").is_empty()
    });
    Baseline {
        threads: threads_named("hws-"),
        fds: open_fds(),
    }
}

/// The server answers a new client, and threads and descriptors come back to `base`.
fn assert_recovered(server: &Server, base: &Baseline, scenario: &str) {
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let pong = request(&mut ws, "after", "system", "ping", json!({}));
    assert_eq!(
        pong["data"]["pong"], true,
        "{scenario}: a new client is served"
    );
    drop(ws);
    let deadline = Instant::now() + WAIT;
    loop {
        let (threads, fds) = (threads_named("hws-"), open_fds());
        if threads == base.threads && fds == base.fds && server.connection_count() == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: not back to baseline: threads {threads:?} (were {:?}), fds {fds} (were {}), connections {}",
            base.threads,
            base.fds,
            server.connection_count()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn clients_that_reset_without_a_close_frame() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start();
    let base = baseline(&server);
    let clients: Vec<TestSocket> = (0..50)
        .map(|_| connect(server.bound_addr(), Some(VIEWER_KEY)))
        .collect();
    for ws in clients {
        // SO_LINGER 0: close(2) sends RST, not FIN.
        socket2::SockRef::from(ws.get_ref())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(ws);
    }
    assert_recovered(&server, &base, "reset");
}

#[test]
fn half_open_clients_that_never_read() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start_with(|c| c.outbound_queue_limit = 64);
    let base = baseline(&server);
    let mut stuck: Vec<TestSocket> = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
        request(
            &mut ws,
            "s",
            "system",
            "subscribe",
            json!({"channels": ["print"]}),
        );
        stuck.push(ws);
    }
    let publisher = server.publisher();
    let blob = "x".repeat(16 * 1024);
    // Far more than socket buffers and the queue limit hold: each is closed with 1013.
    let mut n = 0;
    while server.connection_count() > 0 {
        publisher
            .publish("print", "progress", json!({"n": n, "pad": blob}))
            .unwrap();
        n += 1;
        assert!(n < 100_000, "half-open clients were never closed");
    }
    assert!(server.status().events.slow_client_closes >= 5);
    drop(stuck);
    assert_recovered(&server, &base, "half-open");
}

#[test]
fn slowloris_handshakes_are_closed_at_the_handshake_timeout() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start_with(|c| c.handshake_timeout = Duration::from_millis(300));
    let base = baseline(&server);
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(server.bound_addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                .unwrap();
            s
        })
        .collect();
    for s in &mut slow {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 64];
        // The server closes (EOF or reset) without ever completing the upgrade.
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    drop(slow);
    assert_recovered(&server, &base, "slowloris");
}

#[test]
fn a_flood_of_connections_past_max_connections() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start_with(|c| c.max_connections = 20);
    let base = baseline(&server);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        match try_connect(server.bound_addr(), Some(VIEWER_KEY), "/", Some(PROTOCOL)) {
            Ok(ws) => admitted.push(ws),
            Err(tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((admitted.len(), refused), (20, 180));
    drop(admitted);
    assert_recovered(&server, &base, "flood");
}

fn fragment(op: OpCode, payload: &[u8], last: bool) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), op, last))
}

#[test]
fn fragmented_message_floods() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start();
    let base = baseline(&server);
    // One message that never ends: fragments past MaxMessageSize close it with 1009.
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    ws.send(fragment(OpCode::Data(Data::Text), &[b' '; 1024], false))
        .unwrap();
    let chunk = [b' '; 1024];
    let mut closed = None;
    for _ in 0..200 {
        if ws
            .send(fragment(OpCode::Data(Data::Continue), &chunk, false))
            .is_err()
        {
            break;
        }
    }
    while closed.is_none() {
        match ws.read() {
            Ok(Message::Close(f)) => closed = f.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(closed, Some(1009));
    drop(ws);
    // Many small fragmented messages as fast as they go: all answered, in order.
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    const N: usize = 2000;
    for i in 0..N {
        let text =
            format!(r#"{{"type":"command","id":"f{i}","channel":"system","action":"ping"}}"#);
        let (a, b) = text.as_bytes().split_at(10);
        ws.write(fragment(OpCode::Data(Data::Text), a, false))
            .unwrap();
        ws.write(fragment(OpCode::Data(Data::Continue), b, true))
            .unwrap();
        if i % 100 == 99 {
            ws.flush().unwrap();
        }
    }
    ws.flush().unwrap();
    for i in 0..N {
        assert_eq!(recv_json(&mut ws)["id"], format!("f{i}"));
    }
    drop(ws);
    assert_recovered(&server, &base, "fragments");
}

#[test]
fn a_client_pinging_in_a_tight_loop_does_not_starve_others() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start();
    let base = baseline(&server);
    let addr = server.bound_addr();
    let storm = std::thread::spawn(move || {
        let mut ws = connect(addr, Some(VIEWER_KEY));
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        let mut pongs = 0u64;
        while Instant::now() < until {
            for _ in 0..100 {
                ws.write(Message::Ping(b"storm".to_vec().into())).unwrap();
            }
            ws.flush().unwrap();
            while let Ok(m) = ws.read() {
                if matches!(m, Message::Pong(_)) {
                    pongs += 1;
                }
            }
        }
        pongs
    });
    let mut other = connect(addr, Some(VIEWER_KEY));
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        request(&mut other, &format!("p{i}"), "system", "ping", json!({}));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let pongs = storm.join().unwrap();
    assert!(pongs > 1000, "the storm was answered ({pongs} pongs)");
    assert!(
        worst < Duration::from_secs(1),
        "a quiet client waited {worst:?}"
    );
    drop(other);
    assert_recovered(&server, &base, "ping storm");
}

#[test]
fn a_handler_that_panics() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start();
    server
        .register_handler("boom", |_req| panic!("handler bug"))
        .unwrap();
    let base = baseline(&server);
    for i in 0..5 {
        let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
        let reply = request(&mut ws, &format!("b{i}"), "boom", "go", json!({}));
        assert_eq!(reply["error"]["code"], "server_error");
        assert_eq!(expect_close(&mut ws).map(|f| u16::from(f.code)), Some(1011));
    }
    assert_recovered(&server, &base, "panicking handler");
}

#[test]
fn a_handler_that_never_returns_does_not_starve_other_channels() {
    let _one = ONE_AT_A_TIME.lock();
    let server = start_with(|c| {
        c.thread_pool_size = 4;
        c.handler_timeout = Duration::from_millis(300);
    });
    let (release_tx, release) = unbounded::<()>();
    let release = Arc::new(Mutex::new(release));
    let r = release.clone();
    server
        .register_handler("stuck", move |_req| {
            // "Never" returns: until the test ends it.
            let rx = r.lock().clone();
            let _ = rx.recv();
            Ok(json!({}))
        })
        .unwrap();
    server
        .register_handler("fast", |_req| Ok(json!({"fast": true})))
        .unwrap();
    let base = baseline(&server);
    let mut stuck = connect(server.bound_addr(), Some(OPERATOR_KEY));
    for i in 0..10 {
        send(
            &mut stuck,
            &command(&format!("s{i}"), "stuck", "go", json!({})),
        );
    }
    // All ten are taken in: the workers they may use are busy, the rest wait in the queue.
    wait_for("the stuck commands are queued", || {
        server.status().handler_backlog >= 6
    });
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    for i in 0..5 {
        let t = Instant::now();
        let reply = request(&mut ws, &format!("f{i}"), "fast", "go", json!({}));
        assert_eq!(reply["data"]["fast"], true, "{reply}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // The stuck ones are answered `timeout` after HandlerTimeoutMs.
    for _ in 0..10 {
        assert_eq!(recv_json(&mut stuck)["error"]["code"], "timeout");
    }
    drop(release_tx); // every stuck handler returns now
    drop(stuck);
    drop(ws);
    assert_recovered(&server, &base, "stuck handler");
}

#[test]
fn shutdown_with_1000_clients_mid_stream() {
    let _one = ONE_AT_A_TIME.lock();
    let fds_before = open_fds();
    let server = start_with(|c| c.max_connections = 1100);
    let addr = server.bound_addr();
    let mut clients = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut ws = connect(addr, Some(VIEWER_KEY));
        send(
            &mut ws,
            &command("s", "system", "subscribe", json!({"channels": ["print"]})),
        );
        clients.push(ws);
    }
    let publisher = server.publisher();
    // 50 events/s to 1000 subscribers (50 000 deliveries/s) that a debug build on two CPUs
    // keeps up with, until the shutdown refuses more.
    let streaming = std::thread::spawn(move || {
        let mut n = 0u64;
        while publisher
            .publish_event(Event::new("print", "progress", json!({"n": n})))
            .is_ok()
            && n < 100_000
        {
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    wait_for("events are flowing", || {
        server.status().events.events_published > 20
    });
    let t0 = Instant::now();
    let report = server.shutdown();
    let took = t0.elapsed();
    assert!(report.stuck_threads.is_empty(), "{report:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    drop(server);
    streaming.join().unwrap();
    drop(clients);
    wait_for("every server thread is gone", || {
        threads_named("hws-").is_empty()
    });
    wait_for("every descriptor is closed", || open_fds() == fds_before);
}
