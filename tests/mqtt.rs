//! The MQTT bridge against a real broker (Debian's Mosquitto on a free loopback port) and a
//! client that is not ours (paho-mqtt): events on their topics in publish order, retained
//! status and presence, the last will, commands through `<prefix>/request`, and a broker
//! that goes away and comes back.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use hydrogen_ws::config::MqttConfig;
use hydrogen_ws::{Config, Server};
use serde_json::{Value, json};
use support::broker::{Broker, Subscriber, publish};
use support::process::{ServerProcess, temp_config};

/// A server bridged to `url` under `prefix`, channel `print` at `qos`, status every 200 ms;
/// `tweak` may change the config after that.
fn bridged(url: &str, prefix: &str, qos: u8, tweak: impl FnOnce(&mut Config)) -> Server {
    support::start_with(|c| {
        let mut m = MqttConfig::default();
        m.url = url.to_string();
        m.topic_prefix = prefix.to_string();
        m.channels = vec!["print".into()];
        m.qos = qos;
        m.reconnect_max = Duration::from_millis(200);
        c.status_interval = Some(Duration::from_millis(200));
        c.mqtt = Some(m);
        tweak(c);
    })
}

/// The `Mqtt` section of a config that has one.
fn mqtt(c: &mut Config) -> &mut MqttConfig {
    c.mqtt.as_mut().unwrap()
}

fn payload(m: &Value) -> Value {
    serde_json::from_str(m["payload"].as_str().unwrap()).unwrap()
}

#[test]
fn events_status_and_presence_reach_the_broker() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "t1/#", "sub-t1", true);
    let server = bridged(&broker.url(), "t1", 1, |_| {});
    let (_, online) = sub.message_on("t1/online");
    assert_eq!(online["online"], true, "{online}");
    assert_eq!(online["port"], server.bound_addr().port());
    let publisher = server.publisher();
    publisher.publish("other", "x", json!({})).unwrap();
    for n in 0..50 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    for n in 0..50 {
        let m = sub.next(|v| {
            v["topic"]
                .as_str()
                .is_some_and(|t| t.starts_with("t1/events/"))
        });
        assert_eq!(m["topic"], "t1/events/print/progress", "{m}");
        assert_eq!(m["qos"], 1);
        let event = payload(&m);
        assert_eq!(
            event["data"]["n"], n,
            "events arrive in publish order: {event}"
        );
        assert_eq!(
            (event["type"].as_str(), event["channel"].as_str()),
            (Some("event"), Some("print"))
        );
        assert!(event["id"].as_str().unwrap().starts_with("ev-"), "{event}");
        assert!(
            event.get("seq").is_none(),
            "no per-session seq over MQTT: {event}"
        );
    }
    let (_, status) = sub.message_on("t1/status");
    assert!(
        status["uptime_ms"].is_u64() && status["events"].is_object(),
        "{status}"
    );
    // A dashboard that subscribes later gets presence and status retained.
    let mut late = Subscriber::start(&broker, "t1/+", "late-t1", true);
    let m = late.next(|v| v["topic"] == "t1/online");
    assert_eq!(
        (m["retain"].as_bool(), payload(&m)["online"].as_bool()),
        (Some(true), Some(true))
    );
    let m = late.next(|v| v["topic"] == "t1/status");
    assert_eq!(m["retain"], true);
    assert!(
        sub.seen.iter().all(|v| v["topic"] != "t1/events/other/x"),
        "channel other is not bridged"
    );
    let report = server.shutdown();
    assert!(
        report.stuck_threads.is_empty(),
        "hws-mqtt is joined: {:?}",
        report.stuck_threads
    );
    let m = late.next(|v| v["topic"] == "t1/online");
    assert_eq!(payload(&m), json!({"online": false, "reason": "shutdown"}));
}

#[test]
fn the_last_will_says_offline_when_the_server_is_killed() {
    let broker = Broker::start();
    let cfg = temp_config(&format!(
        r#"{{"WebSocketServer": {{"Port": 0, "Interface": "127.0.0.1",
            "Mqtt": {{"Url": "{}", "TopicPrefix": "t2", "KeepAliveSeconds": 5}}}}}}"#,
        broker.url()
    ));
    let mut sub = Subscriber::start(&broker, "t2/online", "sub-t2", true);
    let mut server = ServerProcess::start(&cfg, "info", &[]);
    let (_, online) = sub.message_on("t2/online");
    assert_eq!(online["online"], true);
    server.child.kill().unwrap(); // SIGKILL: no goodbye, the broker sees the socket close
    let _ = server.child.wait();
    let (m, offline) = sub.message_on("t2/online");
    assert_eq!(offline, json!({"online": false, "reason": "lost"}), "{m}");
}

/// A server with a `print` handler, taking commands from `t3/request` as `role`.
fn commanded(broker: &Broker, role: hydrogen_ws::Role) -> Server {
    commanded_with(broker, role, |_| {})
}

fn commanded_with(
    broker: &Broker,
    role: hydrogen_ws::Role,
    tweak: impl FnOnce(&mut Config),
) -> Server {
    let mut c = support::test_config();
    tweak(&mut c);
    let mut m = MqttConfig::default();
    m.url = broker.url();
    m.topic_prefix = "t3".into();
    m.commands = true;
    m.command_role = role;
    c.mqtt = Some(m);
    c.status_interval = None;
    Server::builder(c)
        .handler("print", |req| {
            Ok(json!({"started": req.command.data["file"], "by": req.identity.name}))
        })
        .start()
        .unwrap()
}

/// Waits until the bridge is connected and subscribed (its request topic answers a ping).
fn ready_for_commands(broker: &Broker, sub: &mut Subscriber) {
    for attempt in 0..100 {
        let id = format!("probe-{attempt}");
        let request = json!({"type": "command", "id": id, "channel": "system", "action": "ping", "reply_to": "replies/probe"});
        publish(broker, "t3/request", &request.to_string());
        if sub
            .next_within(Duration::from_millis(300), |v| {
                v["topic"] == "replies/probe"
            })
            .is_some()
        {
            return;
        }
    }
    panic!("the bridge never answered on replies/probe");
}

#[test]
fn commands_round_trip_through_the_request_topic() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "replies/#", "sub-t3", true);
    let mut errors = Subscriber::start(&broker, "t3/errors", "sub-t3-errors", true);
    let server = commanded(&broker, hydrogen_ws::Role::Operator);
    ready_for_commands(&broker, &mut sub);
    let request = json!({"type": "command", "id": "c1", "channel": "print", "action": "start",
        "data": {"file": "cube.gcode"}, "reply_to": "replies/r1"});
    publish(&broker, "t3/request", &request.to_string());
    let (_, response) = sub.message_on("replies/r1");
    assert_eq!(response["type"], "response");
    assert_eq!(
        (response["id"].as_str(), response["status"].as_str()),
        (Some("c1"), Some("ok")),
        "{response}"
    );
    assert_eq!(
        response["data"],
        json!({"started": "cube.gcode", "by": "mqtt"})
    );
    // The same id again is a duplicate, as on a WebSocket session.
    publish(&broker, "t3/request", &request.to_string());
    let (_, dup) = sub.message_on("replies/r1");
    assert_eq!(dup["error"]["code"], "duplicate_id", "{dup}");
    // A forbidden action gets the error object a WebSocket client of the same role gets.
    let threads = json!({"type": "command", "id": "c2", "channel": "system", "action": "threads", "reply_to": "replies/r2"});
    publish(&broker, "t3/request", &threads.to_string());
    let (_, refused) = sub.message_on("replies/r2");
    let mut ws = support::connect(server.bound_addr(), Some(support::OPERATOR_KEY));
    let on_ws = support::request(&mut ws, "c2", "system", "threads", json!({}));
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    assert_eq!(refused["error"], on_ws["error"]);
    // A sensitive action is refused whatever the role: nothing signs it.
    let disconnect = json!({"type": "command", "id": "c3", "channel": "system", "action": "disconnect",
        "data": {"connection_id": 1}, "reply_to": "replies/r3"});
    publish(&broker, "t3/request", &disconnect.to_string());
    let (_, refused) = sub.message_on("replies/r3");
    assert_eq!(refused["status"], "error", "{refused}");
    // What cannot be answered on a reply_to goes to <prefix>/errors.
    publish(&broker, "t3/request", "{not json");
    let (_, bad) = errors.message_on("t3/errors");
    assert_eq!(bad["error"]["code"], "invalid_message", "{bad}");
    publish(
        &broker,
        "t3/request",
        &json!({"type": "command", "id": "c4", "channel": "system", "action": "ping"}).to_string(),
    );
    let (_, no_reply_to) = errors.message_on("t3/errors");
    assert_eq!(
        no_reply_to["error"]["details"]["field"], "reply_to",
        "{no_reply_to}"
    );
    assert_eq!(no_reply_to["id"], "c4");
}

#[test]
fn requests_over_the_rate_limit_are_refused_and_said_so() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "replies/#", "sub-t3r", true);
    let mut errors = Subscriber::start(&broker, "t3/errors", "sub-t3r-errors", true);
    let _server = commanded_with(&broker, hydrogen_ws::Role::Operator, |c| {
        c.rate_limit.messages_per_second = 1;
        c.rate_limit.burst = 3;
    });
    ready_for_commands(&broker, &mut sub);
    for n in 0..8 {
        let ping = json!({"type": "command", "id": format!("r{n}"), "channel": "system", "action": "ping", "reply_to": "replies/rate"});
        publish(&broker, "t3/request", &ping.to_string());
    }
    let (_, refused) = errors.message_on("t3/errors");
    assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
}

#[test]
fn a_viewer_bridge_may_not_command_the_printer() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "replies/#", "sub-t3v", true);
    let _server = commanded(&broker, hydrogen_ws::Role::Viewer);
    ready_for_commands(&broker, &mut sub);
    let request = json!({"type": "command", "id": "v1", "channel": "print", "action": "start", "reply_to": "replies/v1"});
    publish(&broker, "t3/request", &request.to_string());
    let (_, refused) = sub.message_on("replies/v1");
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
}

/// The `n` of the next `count` distinct events on `topic`, in order of arrival. QoS 1 is at
/// least once: a broker that restarts may deliver again what its subscriber had not
/// acknowledged to it yet, so a repeated event id is skipped (and must be an earlier one).
fn event_numbers(
    sub: &mut Subscriber,
    topic: &str,
    ids: &mut HashSet<String>,
    count: usize,
) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < count {
        let m = sub.next(|v| v["topic"] == topic);
        let event = payload(&m);
        if ids.insert(event["id"].as_str().unwrap().to_string()) {
            out.push(event["data"]["n"].as_u64().unwrap());
        }
    }
    out
}

#[test]
fn qos1_events_published_while_the_broker_was_away_arrive_after_it_returns() {
    let mut broker = Broker::start();
    // A durable subscriber: the broker keeps its session (and what arrives for it) across
    // its own restart, and the client reconnects by itself.
    let mut sub = Subscriber::start(&broker, "t4/events/#", "durable-t4", false);
    let mut ids = HashSet::new();
    let server = bridged(&broker.url(), "t4", 1, |_| {});
    let topic = "t4/events/print/progress";
    let publisher = server.publisher();
    for n in 0..10 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    assert_eq!(
        event_numbers(&mut sub, topic, &mut ids, 10),
        (0..10).collect::<Vec<_>>()
    );
    broker.stop();
    support::wait_for("the bridge to notice", || {
        server.status().mqtt.is_some_and(|m| !m.connected)
    });
    for n in 10..40 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    // The server and its clients do not wait for the broker.
    let mut ws = support::connect(server.bound_addr(), Some(support::VIEWER_KEY));
    assert_eq!(
        support::request(&mut ws, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
    assert_eq!(server.status().mqtt.unwrap().events_buffered, 30);
    broker.restart();
    let after = event_numbers(&mut sub, topic, &mut ids, 30);
    assert_eq!(after, (10..40).collect::<Vec<_>>(), "none lost, in order");
    let status = server.status().mqtt.unwrap();
    assert!(status.connected && status.connects >= 2, "{status:?}");
    assert_eq!(status.events_dropped, 0);
}

#[test]
fn events_beyond_the_buffer_are_dropped_oldest_first_and_counted() {
    let mut broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "t5/events/#", "durable-t5", false);
    let server = bridged(&broker.url(), "t5", 1, |c| mqtt(c).buffer_events = 5);
    support::wait_for("the bridge to connect", || {
        server.status().mqtt.is_some_and(|m| m.connected)
    });
    broker.stop();
    support::wait_for("the bridge to notice", || {
        server.status().mqtt.is_some_and(|m| !m.connected)
    });
    let publisher = server.publisher();
    for n in 0..20 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    let status = server.status().mqtt.unwrap();
    assert_eq!(
        (status.events_buffered, status.events_dropped),
        (5, 15),
        "{status:?}"
    );
    broker.restart();
    let topic = "t5/events/print/progress";
    assert_eq!(
        event_numbers(&mut sub, topic, &mut HashSet::new(), 5),
        (15..20).collect::<Vec<_>>()
    );
    assert!(
        sub.next_within(Duration::from_millis(300), |v| v["topic"]
            == "t5/events/print/progress")
            .is_none()
    );
}

#[test]
fn a_broker_down_at_start_is_reached_once_it_runs() {
    let mut broker = Broker::reserve();
    let server = bridged(&broker.url(), "t6", 0, |_| {});
    let mut ws = support::connect(server.bound_addr(), Some(support::VIEWER_KEY));
    assert_eq!(
        support::request(&mut ws, "p", "system", "ping", json!({}))["status"],
        "ok"
    );
    assert!(!server.status().mqtt.unwrap().connected);
    broker.run();
    let mut sub = Subscriber::start(&broker, "t6/online", "sub-t6", true);
    let (_, online) = sub.message_on("t6/online");
    assert_eq!(online["online"], true);
}

#[test]
fn a_link_that_goes_silent_is_replaced_and_its_unacknowledged_events_sent_again() {
    let broker = Broker::start();
    let proxy = support::proxy::Proxy::start(broker.addr());
    let mut sub = Subscriber::start(&broker, "t7/events/#", "sub-t7", true);
    let url = format!("mqtt://{}", proxy.addr);
    let server = bridged(&url, "t7", 1, |c| {
        mqtt(c).keep_alive = Duration::from_secs(2);
        mqtt(c).connect_timeout = Duration::from_millis(500);
    });
    support::wait_for("the bridge to connect", || {
        server.status().mqtt.is_some_and(|m| m.connected)
    });
    // Everything the bridge writes from now on is swallowed: no PUBACK, no PINGRESP.
    proxy.stall(true);
    let publisher = server.publisher();
    for n in 0..10 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    support::wait_for("the bridge to find the link dead", || {
        server.status().mqtt.is_some_and(|m| !m.connected)
    });
    proxy.stall(false);
    let topic = "t7/events/print/progress";
    assert_eq!(
        event_numbers(&mut sub, topic, &mut HashSet::new(), 10),
        (0..10).collect::<Vec<_>>()
    );
    assert!(proxy.accepted() >= 2, "it reconnected");
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// Starts the binary bridged over mqtts:// with `password`, logging at trace level.
fn secure_binary(tls_port: u16, ca: &std::path::Path, password: &str) -> support::process::Started {
    let cfg = temp_config(&format!(
        r#"{{"WebSocketServer": {{"Port": 0, "Interface": "127.0.0.1",
            "Mqtt": {{"Url": "mqtts://127.0.0.1:{tls_port}", "CaPath": "{}", "TopicPrefix": "t8",
                      "Username": "board", "Password": "${{env.HWS_TEST_MQTT_PASSWORD}}",
                      "ReconnectMaxMs": 200}}}}}}"#,
        ca.display()
    ));
    ServerProcess::start(&cfg, "trace", &[("HWS_TEST_MQTT_PASSWORD", password)])
}

/// Every line the server logged until it exited after SIGTERM.
fn all_lines(mut started: support::process::Started) -> Vec<String> {
    let _ = std::process::Command::new("kill")
        .arg(started.child.id().to_string())
        .status();
    let _ = started.child.wait();
    let mut lines = std::mem::take(&mut started.log);
    lines.extend(started.rx.iter());
    lines
}

#[test]
fn mqtts_with_a_password_works_and_the_password_is_never_logged() {
    const PASSWORD: &str = "broker-secret-7c1d9e";
    let (cert, key) = certificate();
    let (broker, tls_port) = Broker::start_secure(&cert, &key, "board", PASSWORD);
    let ca = temp_config(&cert);
    let mut sub = Subscriber::start(&broker, "t8/online", "sub-t8", true);
    let server = secure_binary(tls_port, &ca, PASSWORD);
    let (_, online) = sub.message_on("t8/online");
    assert_eq!(
        online["online"], true,
        "connected over TLS with the password"
    );
    let lines = all_lines(server);
    let (_, offline) = sub.message_on("t8/online");
    assert_eq!(offline["reason"], "shutdown");
    assert!(
        lines.iter().any(|l| l.contains("mqtt: connected")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains(PASSWORD)),
        "the password is in the log"
    );
    // A wrong password is refused by the broker, said in the log, and still never shown.
    let wrong = secure_binary(tls_port, &ca, "not-the-password-4242");
    let mut log = Vec::new();
    support::process::wait_line(&wrong.rx, &mut log, |l| {
        l.contains("refused the connection")
    });
    let lines = all_lines(wrong);
    assert!(
        lines
            .iter()
            .chain(&log)
            .all(|l| !l.contains("not-the-password-4242"))
    );
}

#[test]
fn a_backlog_larger_than_the_output_buffer_flows_on_without_waiting_for_a_timer() {
    let mut broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "t9/events/#", "durable-t9", false);
    broker.stop();
    // No status timer either: nothing but the socket may wake the bridge.
    let server = bridged(&broker.url(), "t9", 0, |c| c.status_interval = None);
    // 500 events of about 2 KB wait for the broker: far more than the 64 KiB the bridge
    // encodes ahead of the socket, so once connected it must come back for the rest as soon
    // as the socket takes the output (not at the next keep-alive, 15 s away).
    let pad = "x".repeat(2000);
    let publisher = server.publisher();
    for n in 0..500 {
        publisher
            .publish("print", "progress", json!({"n": n, "pad": pad}))
            .unwrap();
    }
    broker.restart();
    let topic = "t9/events/print/progress";
    let got = event_numbers(&mut sub, topic, &mut HashSet::new(), 500);
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[test]
fn events_published_just_before_shutdown_still_reach_the_broker() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(&broker, "t10/#", "sub-t10", true);
    let server = bridged(&broker.url(), "t10", 1, |c| c.status_interval = None);
    let (_, online) = sub.message_on("t10/online");
    assert_eq!(online["online"], true);
    let publisher = server.publisher();
    for n in 0..200 {
        publisher
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    let report = server.shutdown();
    assert!(report.stuck_threads.is_empty());
    let topic = "t10/events/print/progress";
    assert_eq!(
        event_numbers(&mut sub, topic, &mut HashSet::new(), 200),
        (0..200).collect::<Vec<_>>()
    );
    let (_, offline) = sub.message_on("t10/online");
    assert_eq!(
        offline["reason"], "shutdown",
        "offline comes after the events"
    );
}
