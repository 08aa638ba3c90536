//! `GET /metrics` (issue #15 §4): Prometheus text, read by the official Python client's
//! parser; the figures move as the test acts; a credential is needed unless
//! `Metrics.AllowUnauthenticated`. And `GET /` from a browser: the built-in status page.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use hydrogen_ws::Server;
use serde_json::{Value, json};
use support::*;

/// A GET of `path` with `headers`: status, head, body.
fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    raw_http_text(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n"),
    )
}

/// Samples by `name{label="value",...}` (labels sorted), as the Python parser read them.
struct Scrape {
    families: Value,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn value(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}; have {:?}", self.samples.keys()))
    }
}

fn scrape(addr: SocketAddr, key: &str) -> Scrape {
    let (status, head, body) = get(addr, "/metrics", &format!("Authorization: Key {key}\r\n"));
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let python = std::env::var("HWS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/parse_metrics.py"
    );
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs (make test makes .venv with prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client's parser refused the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = HashMap::new();
    for s in parsed["samples"].as_array().unwrap() {
        let mut labels: Vec<String> = s[1]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s[0].as_str().unwrap().to_string()
        } else {
            format!("{}{{{}}}", s[0].as_str().unwrap(), labels.join(","))
        };
        samples.insert(key, s[2].as_f64().unwrap_or(f64::INFINITY));
    }
    Scrape {
        families: parsed["families"].clone(),
        samples,
    }
}

fn server_with_a_handler() -> Server {
    let mut config = test_config();
    config.status_interval = None;
    Server::builder(config)
        .handler("print", |_| Ok(json!({"started": true})))
        .start()
        .unwrap()
}

#[test]
fn metrics_parse_and_move_as_clients_act() {
    let server = server_with_a_handler();
    let addr = server.bound_addr();
    let before = scrape(addr, VIEWER_KEY);
    for (family, kind) in [
        ("hydrogen_ws_connections", "gauge"),
        ("hydrogen_ws_rejections", "counter"),
        ("hydrogen_ws_publish_to_write_seconds", "histogram"),
        ("hydrogen_ws_command_duration_seconds", "histogram"),
        ("hydrogen_ws_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(before.families[family], kind, "{}", before.families);
    }
    assert!(before.value("hydrogen_ws_threads") >= 4.0);
    assert!(before.value("hydrogen_ws_resident_memory_bytes") > 1e5);
    assert!(before.value("hydrogen_ws_open_descriptors") >= 3.0);

    // A refused credential, a subscriber, a command for the handler, an event.
    let (status, _, _) = get(
        addr,
        "/",
        "Authorization: Key wrong-key-0000000000000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: hydrogen-protocol\r\n",
    );
    assert_eq!(status, 401);
    let mut viewer = connect(addr, Some(VIEWER_KEY));
    request_ok(
        &mut viewer,
        "s1",
        "system",
        "subscribe",
        json!({"channels": ["print"]}),
    );
    let mut operator = connect(addr, Some(OPERATOR_KEY));
    request_ok(&mut operator, "c1", "print", "start", json!({}));
    let delivered = server
        .publisher()
        .publish("print", "progress", json!({"percent": 5}))
        .unwrap();
    assert_eq!(delivered, 1);
    assert_eq!(recv_json(&mut viewer)["data"]["percent"], 5);

    let after = scrape(addr, VIEWER_KEY);
    let grew = |key: &str, by: f64| {
        let (b, a) = (
            before.samples.get(key).copied().unwrap_or(0.0),
            after.value(key),
        );
        assert!(a >= b + by, "{key}: {b} -> {a}, expected +{by}");
    };
    grew("hydrogen_ws_connections{state=\"connected\"}", 2.0);
    grew("hydrogen_ws_upgrades_total", 2.0);
    grew("hydrogen_ws_rejections_total{reason=\"auth_failed\"}", 1.0);
    grew("hydrogen_ws_messages_received_total", 4.0);
    grew("hydrogen_ws_messages_sent_total", 4.0);
    grew("hydrogen_ws_received_bytes_total", 100.0);
    grew("hydrogen_ws_events_published_total", 1.0);
    grew("hydrogen_ws_events_delivered_total", 1.0);
    grew("hydrogen_ws_sessions{state=\"attached\"}", 2.0);
    grew("hydrogen_ws_command_duration_seconds_count", 1.0);
    grew("hydrogen_ws_publish_to_write_seconds_count", 1.0);
    grew(
        "hydrogen_ws_publish_to_write_seconds_bucket{le=\"+Inf\"}",
        1.0,
    );
    assert!(after.value("hydrogen_ws_publish_to_write_seconds_sum") > 0.0);
}

#[test]
fn metrics_need_a_credential_unless_allowed() {
    let server = start();
    let addr = server.bound_addr();
    let (status, head, body) = get(addr, "/metrics", "");
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("WWW-Authenticate"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "auth_failed", "{body}");
    assert!(
        !body.contains("hydrogen_ws_"),
        "no figures without a credential"
    );
    let (status, _, _) = get(
        addr,
        "/metrics",
        "Authorization: Key not-a-key-anybody-has\r\n",
    );
    assert_eq!(status, 401);
    // An empty key in the query is no credential at all.
    let (status, _, body) = get(addr, "/metrics?key=", "");
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get(addr, &format!("/metrics?key={VIEWER_KEY}"), "");
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE hydrogen_ws_connections gauge"),
        "{body}"
    );

    let open = start_with(|c| c.metrics.allow_unauthenticated = true);
    let (status, _, body) = get(open.bound_addr(), "/metrics", "");
    assert_eq!(status, 200);
    assert!(body.contains("hydrogen_ws_threads "), "{body}");

    let off = start_with(|c| c.metrics.enabled = false);
    let (status, _, body) = get(
        off.bound_addr(),
        "/metrics",
        &format!("Authorization: Key {VIEWER_KEY}\r\n"),
    );
    assert_eq!(status, 426, "{body}");
}

/// A blocked address cannot use /metrics to go on guessing keys.
#[test]
fn a_blocked_address_gets_429_from_metrics_too() {
    let server = start_with(|c| c.rate_limit.violations_before_block = 2);
    let addr = server.bound_addr();
    for _ in 0..2 {
        let (status, _, _) = get(
            addr,
            "/metrics",
            "Authorization: Key guess-0000000000000000\r\n",
        );
        assert_eq!(status, 401);
    }
    let (status, head, body) = get(
        addr,
        "/metrics",
        &format!("Authorization: Key {VIEWER_KEY}\r\n"),
    );
    assert_eq!(status, 429, "{head}\n{body}");
    assert!(head.contains("Retry-After"), "{head}");
    assert!(!body.contains("hydrogen_ws_"), "{body}");
}

#[test]
fn a_browser_asking_for_the_root_gets_the_status_page() {
    let server = start();
    let addr = server.bound_addr();
    let (status, head, page) = get(
        addr,
        "/",
        "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(page.contains("<title>hydrogen-ws status</title>"), "{page}");
    assert!(page.len() < 30 * 1024, "the page is {} bytes", page.len());
    // Self-contained: nothing loaded from elsewhere, and the key never in a URL.
    for outside in ["src=\"http", "href=\"http", "@import", "?key="] {
        assert!(!page.contains(outside), "the page contains {outside}");
    }
    // Not a browser (curl's */*), or the page turned off: the usual 426.
    let (status, _, _) = get(addr, "/", "Accept: */*\r\n");
    assert_eq!(status, 426);
    let off = start_with(|c| c.status_page = false);
    let (status, _, _) = get(off.bound_addr(), "/", "Accept: text/html\r\n");
    assert_eq!(status, 426);
}

#[test]
fn the_mqtt_bridge_has_its_metrics() {
    let broker = support::broker::Broker::start();
    let plain = start();
    assert!(
        !plain_families(&scrape(plain.bound_addr(), VIEWER_KEY)).any(|f| f.contains("mqtt")),
        "no bridge, no mqtt families"
    );
    let server = start_with(|c| {
        let mut m = hydrogen_ws::config::MqttConfig::default();
        m.url = broker.url();
        m.topic_prefix = "metrics".into();
        m.channels = vec!["print".into()];
        c.mqtt = Some(m);
    });
    wait_for("the bridge to connect", || {
        server.status().mqtt.is_some_and(|m| m.connected)
    });
    for n in 0..3 {
        server
            .publisher()
            .publish("print", "progress", json!({"n": n}))
            .unwrap();
    }
    wait_for("three events sent", || {
        server.status().mqtt.is_some_and(|m| m.events_sent == 3)
    });
    let s = scrape(server.bound_addr(), VIEWER_KEY);
    assert_eq!(s.families["hydrogen_ws_mqtt_events"], "counter");
    assert_eq!(s.value("hydrogen_ws_mqtt_connected"), 1.0);
    assert_eq!(s.value("hydrogen_ws_mqtt_connects_total"), 1.0);
    assert_eq!(
        s.value("hydrogen_ws_mqtt_events_total{result=\"sent\"}"),
        3.0
    );
    assert_eq!(
        s.value("hydrogen_ws_mqtt_events_total{result=\"dropped\"}"),
        0.0
    );
}

fn plain_families(s: &Scrape) -> impl Iterator<Item = &String> {
    s.families.as_object().unwrap().keys()
}
