//! SPEC §9: subscriptions, fan-out order and seq, status coalescing, reliable delivery, slow
//! clients, sessions and resume. All over real sockets.

mod support;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use hydrogen_ws::{Event, Priority};
use serde_json::{Value, json};
use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn subscribe(ws: &mut TestSocket, id: &str, data: Value) -> Value {
    let r = request_ok(ws, id, "system", "subscribe", data);
    r["data"].clone()
}

/// `system/resume` of session `session_id` after `last_seq`; returns the response.
fn resume(ws: &mut TestSocket, session_id: &Value, last_seq: u64) -> Value {
    request(
        ws,
        "r",
        "system",
        "resume",
        json!({"session_id": session_id, "last_seq": last_seq}),
    )
}

/// Next event (skipping responses).
fn next_event(ws: &mut TestSocket) -> Value {
    loop {
        let v = recv_json(ws);
        if v["type"] == "event" {
            return v;
        }
    }
}

/// Events received before the response to a ping (which marks "everything sent before").
fn events_until_ping(ws: &mut TestSocket, id: &str) -> Vec<Value> {
    send(ws, &command(id, "system", "ping", json!({})));
    let mut out = Vec::new();
    loop {
        let v = recv_json(ws);
        if v["type"] == "response" && v["id"] == id {
            return out;
        }
        if v["type"] == "event" {
            out.push(v);
        }
    }
}

#[test]
fn subscribe_filter_and_unsubscribe() {
    let server = start();
    let publisher = server.publisher();
    let mut all = connect(server.bound_addr(), Some(VIEWER_KEY));
    let mut progress_only = connect(server.bound_addr(), Some(VIEWER_KEY));
    let mut none = connect(server.bound_addr(), Some(VIEWER_KEY));
    let set = subscribe(&mut all, "s1", json!({"channels": ["print", "network"]}));
    assert_eq!(
        set["subscriptions"],
        json!([{"channel": "network"}, {"channel": "print"}])
    );
    let set = subscribe(
        &mut progress_only,
        "s1",
        json!({"channels": ["print"], "actions": ["progress"]}),
    );
    assert_eq!(
        set["subscriptions"],
        json!([{"channel": "print", "actions": ["progress"]}])
    );

    assert_eq!(
        publisher
            .publish("print", "progress", json!({"pct": 10}))
            .unwrap(),
        2
    );
    assert_eq!(
        publisher
            .publish("print", "temperature", json!({"c": 210}))
            .unwrap(),
        1
    );
    assert_eq!(publisher.publish("file", "added", json!({})).unwrap(), 0);

    let got: Vec<(String, u64)> = events_until_ping(&mut all, "p")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("progress".to_string(), 1), ("temperature".to_string(), 2)]
    );
    let e = &events_until_ping(&mut progress_only, "p")[..];
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0]["channel"].as_str(),
            e[0]["action"].as_str(),
            e[0]["seq"].as_u64()
        ),
        (Some("print"), Some("progress"), Some(1))
    );
    assert_eq!(e[0]["data"], json!({"pct": 10}));
    assert!(e[0]["id"].as_str().unwrap().starts_with("ev-") && e[0]["ack"].is_null());
    assert!(events_until_ping(&mut none, "p").is_empty());

    let set = request(
        &mut all,
        "u1",
        "system",
        "unsubscribe",
        json!({"channels": ["print"]}),
    )["data"]
        .clone();
    assert_eq!(set["subscriptions"], json!([{"channel": "network"}]));
    publisher
        .publish("print", "progress", json!({"pct": 20}))
        .unwrap();
    assert!(events_until_ping(&mut all, "p2").is_empty());
    assert_eq!(events_until_ping(&mut progress_only, "p2").len(), 1);

    let info = request(&mut all, "i", "system", "info", json!({}))["data"].clone();
    assert_eq!(info["events"]["events_published"], 4);
    assert_eq!(info["events"]["subscriptions"], 2, "{info}");
    assert_eq!(info["delivery"]["ReplayBufferEvents"], 1000);
    let bad = request(
        &mut all,
        "b",
        "system",
        "subscribe",
        json!({"channels": "print"}),
    );
    assert_eq!(bad["error"]["code"], "invalid_message");
    let bad = request(
        &mut all,
        "b2",
        "system",
        "subscribe",
        json!({"channels": ["Bad Name"]}),
    );
    assert_eq!(bad["error"]["details"]["field"], "channels");
}

/// Four publishers at once, three subscribers: every subscriber gets all 1000 events, seq
/// 1..=1000 without a hole, in one and the same order, each publisher's events in its order.
#[test]
fn order_and_seq_with_concurrent_publishers() {
    let server = start();
    let mut subs: Vec<TestSocket> = (0..3)
        .map(|_| connect(server.bound_addr(), Some(VIEWER_KEY)))
        .collect();
    for s in subs.iter_mut() {
        subscribe(s, "s", json!({"channels": ["t"]}));
    }
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let publisher = server.publisher();
            thread::spawn(move || {
                for n in 0..250 {
                    publisher
                        .publish("t", "tick", json!({"p": p, "n": n}))
                        .unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let mut orders = Vec::new();
    for s in subs.iter_mut() {
        let mut order = Vec::new();
        let mut last_n = [-1i64; 4];
        for expected_seq in 1..=1000u64 {
            let e = next_event(s);
            assert_eq!(e["seq"].as_u64(), Some(expected_seq));
            let (p, n) = (
                e["data"]["p"].as_u64().unwrap() as usize,
                e["data"]["n"].as_i64().unwrap(),
            );
            assert_eq!(n, last_n[p] + 1, "publisher {p} out of order");
            last_n[p] = n;
            order.push((p, n));
        }
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "subscribers saw different orders"
    );
}

#[test]
fn priorities_reorder_a_backlog() {
    let server = start_with(|c| c.outbound_queue_limit = 100_000);
    let publisher = server.publisher();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut ws, "s", json!({"channels": ["t"]}));
    // Block the socket behind large events so that what follows waits in the server.
    let blob = "b".repeat(500_000);
    for _ in 0..40 {
        publisher.publish("t", "blob", json!({"b": blob})).unwrap();
    }
    for i in 0..10 {
        publisher
            .publish_event(Event::new("t", "low", json!({"i": i})).priority(Priority::Low))
            .unwrap();
    }
    for i in 0..10 {
        publisher
            .publish_event(Event::new("t", "high", json!({"i": i})).priority(Priority::High))
            .unwrap();
    }
    let mut small = Vec::new();
    let mut seqs = BTreeSet::new();
    while small.len() < 20 {
        let e = next_event(&mut ws);
        assert!(seqs.insert(e["seq"].as_u64().unwrap()), "no duplicate");
        let action = e["action"].as_str().unwrap().to_string();
        if action != "blob" {
            small.push((action, e["data"]["i"].as_u64().unwrap()));
        }
    }
    let expected: Vec<(String, u64)> = (0..10)
        .map(|i| ("high".to_string(), i))
        .chain((0..10).map(|i| ("low".to_string(), i)))
        .collect();
    assert_eq!(
        small, expected,
        "high events published later overtake waiting low ones, each in publish order"
    );
    assert!(publisher.publish("Bad", "x", json!({})).is_err());
}

/// A client that stops reading while status events keep coming gets the newest status, not a
/// backlog: the server offers dozens, the connection sends a handful.
#[test]
fn status_events_are_coalesced_for_a_client_that_is_behind() {
    let server = start_with(|c| {
        c.status_interval = Some(Duration::from_millis(10));
        c.outbound_queue_limit = 100_000;
    });
    let publisher = server.publisher();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut ws, "s", json!({"channels": ["system", "bulk"]}));
    let offered_at_subscribe = server.status().events.status_offered;
    // Fill the socket buffers so that the server cannot write to this client for a while.
    let blob = "x".repeat(500_000);
    for _ in 0..40 {
        publisher
            .publish("bulk", "blob", json!({"b": blob}))
            .unwrap();
    }
    let offered_at_start = server.status().events.status_offered;

    wait_for("200 status offers", || {
        server.status().events.status_offered >= offered_at_start + 200
    });
    // Now read everything: 40 blobs and the status events in between.
    let offered_before_reading = server.status().events.status_offered;
    let mut blobs = 0;
    let mut statuses = 0;
    while blobs < 40 {
        let e = next_event(&mut ws);
        match e["action"].as_str().unwrap() {
            "blob" => blobs += 1,
            "status" => statuses += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let offered_while_reading = server.status().events.status_offered - offered_before_reading;
    let offered_while_filling = offered_at_start - offered_at_subscribe;
    // Statuses come (legitimately, at most one per offer) while the blobs are published and
    // while the client reads the backlog out, however long either takes on a loaded
    // machine; of the 200+ offered while it was stalled, only the newest was waiting for it
    // (one more may be in flight).
    assert!(
        statuses <= offered_while_filling + offered_while_reading + 2,
        "{statuses} status events delivered, {offered_while_filling} + {offered_while_reading} \
         offered while not stalled: the 200 offered while stalled were not coalesced"
    );
    // And it keeps getting fresh ones once it reads again.
    let e = next_event(&mut ws);
    assert_eq!(e["action"], "status");
    assert!(e["seq"].is_null(), "status events are not sequenced");
    assert!(e["data"]["status"]["totalThreads"].is_u64());
}

#[test]
fn reliable_event_is_redelivered_until_acked_then_1008_after_max_retries() {
    let server = start_with(|c| {
        c.delivery.ack_timeout = Duration::from_millis(100);
        c.delivery.max_retries = 2;
    });
    let publisher = server.publisher();
    let mut acker = connect(server.bound_addr(), Some(VIEWER_KEY));
    let mut ignorer = connect(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut acker, "s", json!({"channels": ["jobs"]}));
    subscribe(&mut ignorer, "s", json!({"channels": ["jobs"]}));
    publisher
        .publish_event(Event::new("jobs", "done", json!({"job": 7})).reliable())
        .unwrap();

    let first = next_event(&mut acker);
    assert_eq!(first["ack"], true);
    assert!(first["redelivered"].is_null());
    send(
        &mut acker,
        &json!({"type": "ack", "id": first["id"]}).to_string(),
    );

    let e0 = next_event(&mut ignorer);
    let e1 = next_event(&mut ignorer);
    let e2 = next_event(&mut ignorer);
    for e in [&e1, &e2] {
        assert_eq!(
            (e["seq"].clone(), e["id"].clone()),
            (e0["seq"].clone(), e0["id"].clone())
        );
        assert_eq!(e["redelivered"], true);
    }
    let close = expect_close(&mut ignorer).unwrap();
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "events not acknowledged");

    // The acked client gets no redelivery. Both got the event at the same moment, so the
    // ignorer's close (after two redeliveries, three ack timeouts) is past any redelivery
    // the acker could have had: none was made, and nothing but the pong reaches it.
    assert_eq!(server.status().events.events_redelivered, 2);
    assert!(events_until_ping(&mut acker, "p").is_empty());
    assert_eq!(
        server.status().events.unacked_events,
        1,
        "only the ignorer's copy is unacked"
    );
}

#[test]
fn reliable_channels_make_every_event_reliable() {
    let server = start_with(|c| c.delivery.reliable_channels = vec!["alarms".into()]);
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut ws, "s", json!({"channels": ["alarms"]}));
    server
        .publisher()
        .publish("alarms", "overheat", json!({}))
        .unwrap();
    assert_eq!(next_event(&mut ws)["ack"], true);
}

/// A client too slow to take its events is closed with 1013 while fast clients keep
/// receiving; its session stays resumable and a resume gets it everything it missed.
#[test]
fn slow_client_is_closed_1013_and_can_resume_without_loss() {
    let server = start_with(|c| {
        c.outbound_queue_limit = 8;
        // The slow client drains megabytes before it reaches its close frame.
        c.close_wait = Duration::from_secs(20);
    });
    let publisher = server.publisher();
    let (mut slow, welcome) = connect_with_welcome(server.bound_addr(), Some(VIEWER_KEY));
    let mut fast = connect(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut slow, "s", json!({"channels": ["bulk"]}));
    subscribe(&mut fast, "s", json!({"channels": ["bulk"]}));
    let blob = "y".repeat(32_000);
    let (progress_tx, progress_rx) = crossbeam_channel::unbounded();
    let fast_reader = thread::spawn(move || {
        let mut seqs = Vec::new();
        while seqs.len() < 300 {
            seqs.push(next_event(&mut fast)["seq"].as_u64().unwrap());
            progress_tx.send(()).unwrap();
        }
        seqs
    });
    for i in 0..300 {
        // Keep the fast client within 4 events: it is fast, not infinitely fast.
        if i >= 4 {
            progress_rx.recv_timeout(WAIT).unwrap();
        }
        publisher
            .publish("bulk", "blob", json!({"i": i, "b": blob}))
            .unwrap();
    }
    assert_eq!(fast_reader.join().unwrap(), (1..=300).collect::<Vec<u64>>());
    wait_for("the slow client to be closed", || {
        server.status().events.slow_client_closes == 1
    });
    // The slow client drains what reached its socket, then finds close 1013.
    let mut last_seq = 0;
    let close = loop {
        match slow.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(s) = v["seq"].as_u64() {
                    assert_eq!(s, last_seq + 1);
                    last_seq = s;
                }
            }
            Ok(Message::Close(f)) => break f.unwrap(),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(close.code, CloseCode::Again);
    assert!(last_seq < 300);
    let mut again = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = resume(&mut again, &welcome["session_id"], last_seq);
    assert_eq!(r["data"]["resumed"], true, "{r}");
    for expected in last_seq + 1..=300 {
        let e = next_event(&mut again);
        assert_eq!(e["seq"].as_u64(), Some(expected));
        assert_eq!(e["data"]["i"].as_u64(), Some(expected - 1));
    }
}

/// Kill the socket mid-stream (no close frame), reconnect, resume: the union of what the
/// client received has no gap and no duplicate.
#[test]
fn resume_after_a_killed_socket_loses_nothing() {
    let server = start();
    let publisher = server.publisher();
    let (mut ws, welcome) = connect_with_welcome(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut ws, "s", json!({"channels": ["print"]}));
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
    let pace = thread::spawn(move || {
        for n in 0..300u64 {
            if n == 100 {
                go_rx.recv().unwrap(); // the test kills the socket here
            }
            publisher
                .publish("print", "progress", json!({"n": n}))
                .unwrap();
            if n % 10 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let mut received: Vec<u64> = Vec::new();
    while received.len() < 60 {
        received.push(next_event(&mut ws)["data"]["n"].as_u64().unwrap());
    }
    let last_seq = received.len() as u64;
    ws.get_ref().shutdown(std::net::Shutdown::Both).unwrap();
    drop(ws);
    go_tx.send(()).unwrap();
    let mut again = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = resume(&mut again, &welcome["session_id"], last_seq);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["data"]["resumed"], true);
    assert_eq!(r["data"]["session_id"], welcome["session_id"]);
    assert_eq!(r["data"]["subscriptions"], json!([{"channel": "print"}]));
    let mut seq = last_seq;
    while received.len() < 300 {
        let e = next_event(&mut again);
        seq += 1;
        assert_eq!(e["seq"].as_u64(), Some(seq), "seq continues without a hole");
        received.push(e["data"]["n"].as_u64().unwrap());
    }
    pace.join().unwrap();
    assert_eq!(
        received,
        (0..300).collect::<Vec<u64>>(),
        "no gap, no duplicate"
    );
}

#[test]
fn resume_is_refused_for_another_identity_and_reports_gaps_and_expiry() {
    let server = start_with(|c| {
        c.delivery.replay_buffer_events = 10;
        c.delivery.session_resume = Duration::from_millis(400);
    });
    let publisher = server.publisher();
    let (mut ws, welcome) = connect_with_welcome(server.bound_addr(), Some(VIEWER_KEY));
    subscribe(&mut ws, "s", json!({"channels": ["print"]}));
    drop(ws);
    wait_for("the session to detach", || {
        server.status().events.sessions_detached == 1
    });
    for n in 0..30 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    let mut other = connect(server.bound_addr(), Some(OPERATOR_KEY));
    let r = resume(&mut other, &welcome["session_id"], 0);
    assert_eq!(r["error"]["code"], "forbidden");
    let mut same = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = resume(&mut same, &welcome["session_id"], 0);
    assert_eq!(r["data"]["resumed"], false, "{r}");
    assert_eq!(r["data"]["reason"], "gap");
    // Still subscribed: new events keep coming, numbered after the lost ones.
    publisher
        .publish("print", "progress", json!({"n": 30}))
        .unwrap();
    assert_eq!(next_event(&mut same)["seq"], 31);
    drop(same);
    // After SessionResumeSeconds the session is gone.
    wait_for("the session to expire", || {
        server.status().events.sessions == 1
    });
    let mut late = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = resume(&mut late, &welcome["session_id"], 31);
    assert_eq!(r["error"]["code"], "invalid_message");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such session")
    );
    let r = request(
        &mut late,
        "r2",
        "system",
        "resume",
        json!({"session_id": 5}),
    );
    assert_eq!(r["error"]["code"], "invalid_message");
}

#[test]
fn auth_response_carries_the_session_and_shutdown_flushes_events_first() {
    let server = start();
    let mut ws = connect(server.bound_addr(), None);
    let r = request(&mut ws, "a", "system", "auth", json!({"key": VIEWER_KEY}));
    assert!(r["data"]["session_id"].as_str().unwrap().len() >= 32);
    subscribe(&mut ws, "s", json!({"channels": ["print"]}));
    let publisher = server.publisher();
    for n in 0..500 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    let reader = thread::spawn(move || {
        let mut n = 0;
        loop {
            match ws.read().unwrap() {
                Message::Text(_) => n += 1,
                Message::Close(f) => return (n, f.unwrap().code),
                _ => {}
            }
        }
    });
    server.shutdown();
    assert_eq!(
        reader.join().unwrap(),
        (500, CloseCode::Away),
        "every queued event before the close frame"
    );
    assert!(
        server.publisher().publish("print", "x", json!({})).is_err(),
        "no publishing after shutdown"
    );
    let _ = TcpStream::connect(server.bound_addr()).map(drop);
}
