//! SPEC §7: application channels routed to handlers on the worker pool.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::bounded;
use hydrogen_ws::{ErrorCode, WireError};
use serde_json::json;
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn handler_gets_command_and_identity_and_runs_on_a_worker() {
    let server = start();
    server
        .register_handler("print", |req| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            match req.command.action.as_str() {
                "start" => Ok(json!({"file": req.command.data["file"], "by": req.identity.name, "thread": thread})),
                other => Err(WireError::new(ErrorCode::UnknownAction, format!("no {other}"))),
            }
        })
        .unwrap();
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let r = request_ok(
        &mut ws,
        "c1",
        "print",
        "start",
        json!({"file": "cube.gcode"}),
    );
    assert_eq!(
        (r["channel"].as_str(), r["action"].as_str()),
        (Some("print"), Some("start"))
    );
    assert_eq!(r["data"]["file"], "cube.gcode");
    assert_eq!(r["data"]["by"], "operator");
    assert!(
        r["data"]["thread"]
            .as_str()
            .unwrap()
            .starts_with("hws-worker-"),
        "{r}"
    );
    let r = request(&mut ws, "c2", "print", "explode", json!({}));
    assert_eq!(r["error"]["code"], "unknown_action");
}

#[test]
fn unknown_channel_and_viewer_forbidden() {
    let server = start();
    server.register_handler("print", |_| Ok(json!({}))).unwrap();
    let mut op = connect(server.bound_addr(), Some(OPERATOR_KEY));
    assert_eq!(
        request(&mut op, "1", "fan", "on", json!({}))["error"]["code"],
        "unknown_channel"
    );
    let mut viewer = connect(server.bound_addr(), Some(VIEWER_KEY));
    assert_eq!(
        request(&mut viewer, "1", "print", "start", json!({}))["error"]["code"],
        "forbidden"
    );
    assert!(
        server
            .register_handler("system", |_| Ok(json!({})))
            .is_err()
    );
    assert!(
        server
            .register_handler("Bad Name", |_| Ok(json!({})))
            .is_err()
    );
}

#[test]
fn handler_panic_closes_only_that_client_with_1011() {
    let server = start();
    server
        .register_handler("boom", |req| {
            if req.command.action == "panic" {
                panic!("handler bug (expected by the test)");
            }
            Ok(json!({"fine": true}))
        })
        .unwrap();
    let mut bystander = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let mut victim = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let r = request(&mut victim, "p", "boom", "panic", json!({}));
    assert_eq!(r["error"]["code"], "server_error");
    assert_eq!(expect_close(&mut victim).unwrap().code, CloseCode::Error);
    // The worker survived and the other client is unaffected.
    for i in 0..8 {
        assert_eq!(
            request(&mut bystander, &format!("ok{i}"), "boom", "fine", json!({}))["data"]["fine"],
            true
        );
    }
}

#[test]
fn slow_handler_times_out_and_never_blocks_the_connection() {
    let server = start_with(|c| c.handler_timeout = Duration::from_millis(200));
    let (release_tx, release_rx) = bounded::<()>(1);
    server
        .register_handler("slow", move |_| {
            let _ = release_rx.recv_timeout(Duration::from_secs(5));
            Ok(json!({"late": true}))
        })
        .unwrap();
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    send(&mut ws, &command("slow-1", "slow", "wait", json!({})));
    // While the handler blocks, the connection still answers system commands at once.
    let r = request(&mut ws, "ping-1", "system", "ping", json!({}));
    assert_eq!(r["data"]["pong"], true);
    let t = recv_json(&mut ws);
    assert_eq!(t["id"], "slow-1");
    assert_eq!(t["error"]["code"], "timeout");
    // The late answer is dropped: exactly one response per command.
    release_tx.send(()).unwrap();
    let r = request(&mut ws, "ping-2", "system", "ping", json!({}));
    assert_eq!(r["id"], "ping-2");
}

#[test]
fn many_clients_in_parallel_each_get_their_own_answers() {
    let server = start_with(|c| c.thread_pool_size = 2);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    server
        .register_handler("echo", move |req| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(req.command.data.clone())
        })
        .unwrap();
    let addr = server.bound_addr();
    let workers: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = connect(addr, Some(OPERATOR_KEY));
                for i in 0..50 {
                    let r = request(
                        &mut ws,
                        &format!("{c}-{i}"),
                        "echo",
                        "x",
                        json!({"c": c, "i": i}),
                    );
                    assert_eq!(r["data"], json!({"c": c, "i": i}));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(calls.load(Ordering::Relaxed), 400);
}

#[test]
fn handlers_given_to_the_builder_serve_the_first_command() {
    // register_handler runs after accepting started; a builder's handlers are in place
    // before the first connection, so its first command never meets unknown_channel.
    let server = hydrogen_ws::Server::builder(test_config())
        .handler("print", |req| Ok(json!({"echo": req.command.action})))
        .start()
        .unwrap();
    let mut ws = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let r = request_ok(&mut ws, "b1", "print", "start", json!({}));
    assert_eq!(r["data"]["echo"], "start");
    let refused = hydrogen_ws::Server::builder(test_config())
        .handler("system", |_| Ok(json!({})))
        .start();
    assert!(
        matches!(refused, Err(hydrogen_ws::Error::InvalidArgument(_))),
        "{refused:?}"
    );
}
