//! SPEC §10: the five-phase shutdown, with many clients, a stuck client, and a second signal.

mod support;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use serde_json::json;
use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// These tests look at the process's threads: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn shutdown_with_100_clients_sends_1001_to_each_and_leaves_no_thread() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start();
    let addr = server.bound_addr();
    let (tx, rx) = bounded(100);
    let mut clients = Vec::new();
    for i in 0..100 {
        let mut ws = connect(addr, Some(VIEWER_KEY));
        assert_eq!(
            request(&mut ws, &format!("p{i}"), "system", "ping", json!({}))["status"],
            "ok"
        );
        let tx = tx.clone();
        clients.push(thread::spawn(move || {
            let close = expect_close(&mut ws);
            // Finish the close handshake: read until the server ends the TCP connection.
            while ws.read().is_ok() {}
            tx.send(close.map(|f| (f.code, f.reason.to_string())))
                .unwrap();
        }));
    }
    assert_eq!(server.connection_count(), 100);
    assert_eq!(threads_named("hws-conn-").len(), 100);
    let report = server.shutdown();
    for c in clients {
        c.join().unwrap();
    }
    for _ in 0..100 {
        let close = rx
            .recv_timeout(WAIT)
            .unwrap()
            .expect("every client gets a close frame");
        assert_eq!(close, (CloseCode::Away, "server shutting down".to_string()));
    }
    assert_eq!(report.connections_at_start, 100);
    assert!(
        report.stuck_threads.is_empty(),
        "{:?}",
        report.stuck_threads
    );
    assert_eq!(report.sockets_forced, 0);
    // Well-behaved clients: nobody waited for CloseWaitMs (2 s); a loose sanity bound.
    assert!(report.total_ms < 1500.0, "{report:?}");
    // Joined; the kernel drops a joined thread from /proc/self/task a moment later.
    wait_for("no server thread left", || threads_named("hws-").is_empty());
    // The listener is closed.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn a_client_that_never_answers_cannot_hang_the_shutdown() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(|c| c.close_wait = Duration::from_millis(300));
    let _silent = connect(server.bound_addr(), Some(VIEWER_KEY)); // never reads again
    let mut good = connect(server.bound_addr(), Some(VIEWER_KEY));
    let started = Instant::now();
    let good_thread = thread::spawn(move || expect_close(&mut good).map(|f| f.code));
    let report = server.shutdown();
    assert_eq!(good_thread.join().unwrap(), Some(CloseCode::Away));
    assert!(report.stuck_threads.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
    wait_for("no server thread left", || threads_named("hws-").is_empty());
}

#[test]
fn the_report_starts_at_the_request_not_when_the_shutdown_runs() {
    // The binary's signal handler raises the flag and a shutdown thread runs the phases a
    // little later; by then connections may be gone. The report must count from the request.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(|c| c.close_wait = Duration::from_millis(100));
    let clients: Vec<_> = (0..3)
        .map(|_| connect(server.bound_addr(), Some(VIEWER_KEY)))
        .collect();
    let requested = Instant::now();
    server.request_shutdown();
    wait_for("every connection gone before the shutdown runs", || {
        server.connection_count() == 0
    });
    let waited_ms = requested.elapsed().as_secs_f64() * 1000.0;
    let report = server.shutdown();
    assert_eq!(report.connections_at_start, 3, "{report:?}");
    assert!(
        report.phase_ms[0] >= waited_ms,
        "{report:?} vs {waited_ms} ms"
    );
    assert!(report.total_ms >= waited_ms, "{report:?} vs {waited_ms} ms");
    drop(clients);
}

#[test]
fn second_request_skips_the_waits() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = std::sync::Arc::new(start_with(|c| c.close_wait = Duration::from_secs(30)));
    let _silent = connect(server.bound_addr(), Some(VIEWER_KEY));
    let s = server.clone();
    let started = Instant::now();
    let shutting = thread::spawn(move || s.shutdown());
    wait_for("shutdown to begin", || server.is_shutdown_requested());
    // Whether the close phase is waiting already or not yet, skipping ends its wait.
    server.skip_shutdown_waits();
    let report = shutting.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        report.stuck_threads.is_empty(),
        "{:?}",
        report.stuck_threads
    );
}

#[test]
fn in_flight_commands_are_answered_before_the_close() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start();
    let (entered_tx, entered_rx) = bounded(1);
    server
        .register_handler("slow", move |_| {
            entered_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(100));
            Ok(json!({"done": true}))
        })
        .unwrap();
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    send(&mut ws, &command("s1", "slow", "go", json!({})));
    entered_rx.recv_timeout(WAIT).unwrap();
    let reader = thread::spawn(move || {
        let mut seen = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    seen.push(serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap())
                }
                Ok(Message::Close(f)) => return (seen, f.map(|f| f.code)),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    server.shutdown();
    let (seen, close) = reader.join().unwrap();
    assert_eq!(close, Some(CloseCode::Away));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["id"], "s1");
    assert_eq!(
        seen[0]["data"]["done"], true,
        "the handler's answer is flushed before the close"
    );
}

#[test]
fn cleanup_frees_every_session() {
    // Memcheck found phase 4 leaving the sessions (and their replay buffers) to the exit.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = start();
    let mut attached = connect(server.bound_addr(), Some(VIEWER_KEY));
    request(
        &mut attached,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["print"]}),
    );
    let mut detached = connect(server.bound_addr(), Some(VIEWER_KEY));
    request(
        &mut detached,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["print"]}),
    );
    drop(detached); // its session waits for a resume
    server
        .publisher()
        .publish("print", "progress", json!({"n": 1}))
        .unwrap();
    wait_for("one session detached", || {
        server.status().events.sessions_detached == 1
    });
    let t = thread::spawn(move || {
        let _ = expect_close(&mut attached);
    });
    server.shutdown();
    t.join().unwrap();
    let events = &server.status().events;
    assert_eq!(events.sessions, 0, "{events:?}");
    assert_eq!(events.replay_buffered_events, 0, "{events:?}");
}

/// Issue #11 §7: a client whose socket is write-blocked (it subscribed and stopped reading)
/// holds the shutdown no longer than CloseWaitMs: the half for flushing and the half for the
/// close handshake are one budget, not a flush half and then a whole CloseWaitMs more
/// (which used to spill into phase 3, 1.5 x CloseWaitMs in all).
#[test]
fn a_write_blocked_client_holds_the_close_phase_no_longer_than_close_wait() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let close_wait = Duration::from_millis(2000);
    let server = start_with(|c| {
        c.close_wait = close_wait;
        c.outbound_queue_limit = 100_000;
    });
    let mut stalled = connect(server.bound_addr(), Some(VIEWER_KEY));
    request_ok(
        &mut stalled,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["bulk"]}),
    );
    // Never read again: megabytes of events fill both socket buffers and the server's queue.
    let blob = "z".repeat(60_000);
    for i in 0..200 {
        server
            .publisher()
            .publish("bulk", "blob", json!({"i": i, "b": blob}))
            .unwrap();
    }
    // Publishing is synchronous: every event is written or queued by now.
    let events = server.status().events.clone();
    assert!(
        events.events_delivered < 200,
        "the stalled client's socket took everything: {events:?}"
    );
    let report = server.shutdown();
    assert!(
        report.total_ms < close_wait.as_millis() as f64 + 600.0,
        "the shutdown took {} ms for CloseWaitMs {close_wait:?} ({:?})",
        report.total_ms,
        report.phase_ms
    );
    assert!(report.stuck_threads.is_empty());
    drop(stalled);
}
