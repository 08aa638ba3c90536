//! SPEC §7: device controllers as `service` connections — register, forwarded commands,
//! responses routed back, timeouts, disconnects, publishing; and the print_service example.

mod support;

#[path = "../examples/print_service.rs"]
mod print_service;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn next_command(s: &mut TestSocket) -> Value {
    loop {
        let v = recv_json(s);
        if v["type"] == "command" {
            return v;
        }
    }
}

fn respond(s: &mut TestSocket, id: &Value, body: Value) {
    let mut msg = json!({"type": "response", "id": id});
    msg.as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    send(s, &msg.to_string());
}

#[test]
fn commands_are_forwarded_and_answers_routed_back() {
    let server = start();
    let mut svc = service(server.bound_addr(), &["print"]);
    let mut op = connect(server.bound_addr(), Some(OPERATOR_KEY));
    send(
        &mut op,
        &command("my-1", "print", "start", json!({"file": "cube.gcode"})),
    );
    let fwd = next_command(&mut svc);
    assert_ne!(fwd["id"], "my-1", "the service sees a fresh id");
    assert_eq!(
        (fwd["channel"].as_str(), fwd["action"].as_str()),
        (Some("print"), Some("start"))
    );
    assert_eq!(fwd["data"], json!({"file": "cube.gcode"}));
    assert_eq!(fwd["origin"]["id"], "my-1");
    assert_eq!(fwd["origin"]["identity"], "operator");
    assert_eq!(fwd["origin"]["role"], "operator");
    respond(
        &mut svc,
        &fwd["id"],
        json!({"status": "ok", "data": {"started": true}}),
    );
    let r = recv_json(&mut op);
    assert_eq!(
        (r["type"].as_str(), r["id"].as_str(), r["status"].as_str()),
        (Some("response"), Some("my-1"), Some("ok"))
    );
    assert_eq!(
        (r["channel"].as_str(), r["action"].as_str()),
        (Some("print"), Some("start"))
    );
    assert_eq!(r["data"], json!({"started": true}));

    // Errors pass through; unknown codes become server_error with the original kept.
    send(&mut op, &command("my-2", "print", "fly", json!({})));
    let fwd = next_command(&mut svc);
    respond(
        &mut svc,
        &fwd["id"],
        json!({"status": "error", "error": {"code": "unknown_action", "message": "no fly"}}),
    );
    assert_eq!(recv_json(&mut op)["error"]["code"], "unknown_action");
    send(&mut op, &command("my-3", "print", "x", json!({})));
    let fwd = next_command(&mut svc);
    respond(
        &mut svc,
        &fwd["id"],
        json!({"status": "error", "error": {"code": "jammed", "message": "filament jam"}}),
    );
    let r = recv_json(&mut op);
    assert_eq!(r["error"]["code"], "server_error");
    assert_eq!(r["error"]["details"]["service_code"], "jammed");

    // A response for nothing pending is an error to the service, not a crash.
    respond(
        &mut svc,
        &json!("fwd-999999"),
        json!({"status": "ok", "data": {}}),
    );
    assert_eq!(recv_json(&mut svc)["error"]["code"], "invalid_message");
    // Only services answer.
    respond(
        &mut op,
        &json!("fwd-1"),
        json!({"status": "ok", "data": {}}),
    );
    assert_eq!(recv_json(&mut op)["error"]["code"], "forbidden");
    assert!(server.status().services.forwarded_commands >= 3);
}

#[test]
fn silent_service_times_out_and_late_answer_is_refused() {
    let server = start_with(|c| c.handler_timeout = Duration::from_millis(200));
    let mut svc = service(server.bound_addr(), &["print"]);
    let mut op = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let r = request(&mut op, "t1", "print", "start", json!({}));
    assert_eq!(r["error"]["code"], "timeout");
    let fwd = next_command(&mut svc);
    wait_for("the pending entry to be swept", || {
        server.status().services.forwarded_pending == 0
    });
    respond(&mut svc, &fwd["id"], json!({"status": "ok", "data": {}}));
    assert_eq!(recv_json(&mut svc)["error"]["code"], "invalid_message");
    // Exactly one response reached the caller.
    assert_eq!(
        request(&mut op, "p", "system", "ping", json!({}))["id"],
        "p"
    );
}

#[test]
fn service_disconnect_fails_pending_commands_and_unregisters() {
    let server = start();
    let mut svc = service(server.bound_addr(), &["print", "file"]);
    let mut op = connect(server.bound_addr(), Some(OPERATOR_KEY));
    send(&mut op, &command("c1", "print", "start", json!({})));
    next_command(&mut svc);
    drop(svc);
    let r = recv_json(&mut op);
    assert_eq!(
        (r["id"].as_str(), r["error"]["code"].as_str()),
        (Some("c1"), Some("unavailable"))
    );
    wait_for("channels unregistered", || {
        server.status().services.service_channels == 0
    });
    assert_eq!(
        request(&mut op, "c2", "file", "list", json!({}))["error"]["code"],
        "unknown_channel"
    );
    // Another service can take the channel now.
    let _svc2 = service(server.bound_addr(), &["print"]);
}

#[test]
fn registration_rules() {
    let server = start();
    server.register_handler("fan", |_| Ok(json!({}))).unwrap();
    let _svc = service(server.bound_addr(), &["print"]);
    let mut other = connect(server.bound_addr(), Some(SERVICE_KEY));
    let r = request(
        &mut other,
        "r1",
        "system",
        "register",
        json!({"channels": ["print"]}),
    );
    assert_eq!(r["error"]["code"], "invalid_message");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already registered")
    );
    let r = request(
        &mut other,
        "r2",
        "system",
        "register",
        json!({"channels": ["fan"]}),
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("served by the server")
    );
    let r = request(
        &mut other,
        "r3",
        "system",
        "register",
        json!({"channels": ["system"]}),
    );
    assert_eq!(r["error"]["code"], "invalid_message");
    let mut op = connect(server.bound_addr(), Some(OPERATOR_KEY));
    assert_eq!(
        request(
            &mut op,
            "r",
            "system",
            "register",
            json!({"channels": ["x"]})
        )["error"]["code"],
        "forbidden"
    );
    assert_eq!(
        request(
            &mut op,
            "p",
            "system",
            "publish",
            json!({"channel": "x", "action": "y"})
        )["error"]["code"],
        "forbidden"
    );
}

#[test]
fn service_publishes_to_subscribers() {
    let server = start_with(|c| c.delivery.ack_timeout = Duration::from_millis(100));
    let mut svc = service(server.bound_addr(), &["print"]);
    let mut viewer = connect(server.bound_addr(), Some(VIEWER_KEY));
    request(
        &mut viewer,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["print"]}),
    );
    let r = request(
        &mut svc,
        "p1",
        "system",
        "publish",
        json!({"channel": "print", "action": "progress", "data": {"percent": 40}, "reliable": true, "priority": "high"}),
    );
    assert_eq!(r["data"]["delivered_to"], 1);
    let e = recv_json(&mut viewer);
    assert_eq!(
        (e["type"].as_str(), e["action"].as_str(), e["ack"].as_bool()),
        (Some("event"), Some("progress"), Some(true))
    );
    assert_eq!(e["data"], json!({"percent": 40}));
    send(
        &mut viewer,
        &json!({"type": "ack", "id": e["id"]}).to_string(),
    );
    let r = request(
        &mut svc,
        "p2",
        "system",
        "publish",
        json!({"channel": "print", "action": "x", "priority": "urgent"}),
    );
    assert_eq!(r["error"]["details"]["field"], "priority");
    wait_for("the ack", || server.status().events.unacked_events == 0);
}

/// The example controller, run as written, serves a real print job to a real client.
#[test]
fn print_service_example_runs_a_job() {
    let server = start();
    let url = format!("ws://{}/", server.bound_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let svc_stop = stop.clone();
    let svc = thread::spawn(move || {
        print_service::run(&url, SERVICE_KEY, &svc_stop).map_err(|e| e.to_string())
    });
    wait_for("the print service to register", || {
        server.status().services.service_channels == 1
    });

    let mut ui = connect(server.bound_addr(), Some(OPERATOR_KEY));
    request(
        &mut ui,
        "s",
        "system",
        "subscribe",
        json!({"channels": ["print"], "actions": ["progress", "done"]}),
    );
    let r = request(
        &mut ui,
        "start",
        "print",
        "start",
        json!({"file": "benchy.gcode"}),
    );
    assert_eq!(r["data"]["started"], "benchy.gcode", "{r}");
    // `done` is published at high priority together with the last progress event, so it may
    // overtake it: wait for both, order aside.
    let mut percents = Vec::new();
    let mut done = false;
    while !(done && percents.len() == 10) {
        let e = recv_json(&mut ui);
        if e["type"] != "event" {
            continue;
        }
        match e["action"].as_str().unwrap() {
            "progress" => percents.push(e["data"]["percent"].as_u64().unwrap()),
            "done" => {
                assert_eq!(e["ack"], true);
                send(&mut ui, &json!({"type": "ack", "id": e["id"]}).to_string());
                done = true;
            }
            other => panic!("filtered out, yet received: {other}"),
        }
    }
    assert_eq!(percents, (1..=10).map(|i| i * 10).collect::<Vec<u64>>());
    let r = request(&mut ui, "pause", "print", "pause", json!({}));
    assert_eq!(r["data"]["paused"], true);
    let r = request(&mut ui, "again", "print", "start", json!({}));
    assert_eq!(r["error"]["code"], "invalid_message");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    svc.join().unwrap().unwrap();
}
