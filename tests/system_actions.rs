//! SPEC §7 and §8: the built-in system channel.

mod support;

use serde_json::json;
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn ping() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = request(&mut ws, "x-1", "system", "ping", json!({}));
    assert_eq!(r["type"], "response");
    assert_eq!(
        (r["channel"].as_str(), r["action"].as_str()),
        (Some("system"), Some("ping"))
    );
    assert_eq!(r["data"], json!({"pong": true}));
    assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
}

fn proc_status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn status_has_the_spec_fields_with_real_figures() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = request(&mut ws, "s", "system", "status", json!({}));
    let d = &r["data"];
    for k in [
        "server_start_time",
        "active_connections",
        "total_connections",
        "total_requests",
        "system",
        "status",
    ] {
        assert!(!d[k].is_null(), "missing {k}: {d}");
    }
    for k in ["sysname", "nodename", "release", "version", "machine"] {
        assert!(d["system"][k].is_string(), "system.{k}");
    }
    assert_eq!(d["system"]["sysname"], "Linux");
    let st = &d["status"];
    assert_eq!(st["running"], true);
    assert_eq!(st["shutting_down"], false);
    // Real figures of this (test) process: compare with /proc.
    let threads = st["totalThreads"].as_u64().unwrap();
    let proc_threads = proc_status("Threads:");
    assert!(
        threads >= 6 && threads.abs_diff(proc_threads) <= 20,
        "{threads} vs {proc_threads}"
    );
    let rss = st["totalResidentMemoryBytes"].as_u64().unwrap();
    let proc_rss = proc_status("VmRSS:") * 1024;
    assert!(
        rss > 1 << 20 && rss.abs_diff(proc_rss) < proc_rss / 2,
        "{rss} vs {proc_rss}"
    );
    assert!(st["totalVirtualMemoryBytes"].as_u64().unwrap() >= rss);
    assert_eq!(d["active_connections"], 1);
    assert_eq!(d["connections_by_state"]["connected"], 1);
    assert_eq!(d["port"], server.bound_addr().port());
}

#[test]
fn info_reports_port_protocol_and_limits() {
    let server = start_with(|c| c.max_message_size = 4096);
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let d = request(&mut ws, "i", "system", "info", json!({}))["data"].clone();
    assert_eq!(d["port"], server.bound_addr().port());
    assert_eq!(d["protocol"], PROTOCOL);
    assert_eq!(d["tls"], false);
    assert_eq!(d["limits"]["MaxMessageSize"], 4096);
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn threads_dump_is_admin_only_and_names_everyone() {
    let server = start();
    let mut viewer = connect(server.bound_addr(), Some(VIEWER_KEY));
    assert_eq!(
        request(&mut viewer, "t", "system", "threads", json!({}))["error"]["code"],
        "forbidden"
    );
    let mut admin = connect(server.bound_addr(), Some(ADMIN_KEY));
    let d = request(&mut admin, "t", "system", "threads", json!({}))["data"].clone();
    let threads = d["threads"].as_array().unwrap();
    let names: Vec<&str> = threads
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"hws-accept"), "{names:?}");
    assert!(names.contains(&"hws-worker-0"), "{names:?}");
    let conns: Vec<_> = threads
        .iter()
        .filter(|t| t["role"] == "connection")
        .collect();
    assert_eq!(conns.len(), 2);
    for t in &conns {
        assert!(t["tid"].as_u64().unwrap() > 0);
        assert!(t["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(t["state"], "connected");
        assert!(t["started"].is_string() && t["idle_ms"].is_u64());
        // Key names, never keys.
        assert!(["viewer", "admin"].contains(&t["identity"].as_str().unwrap()));
    }
    assert!(!d.to_string().contains(ADMIN_KEY));
    // Every thread of the process, the ones the server did not start too (this test's own).
    let me = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u64>().ok())
        .unwrap();
    assert!(
        threads
            .iter()
            .any(|t| t["tid"] == me && t["role"] == "process"),
        "{threads:?}"
    );
    assert_eq!(d["count"].as_u64().unwrap() as usize, threads.len());
    // Connections in numeric order.
    let ids: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix("hws-conn-")?.parse().ok())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
}

#[test]
fn disconnect_closes_the_target_with_1008() {
    let server = start();
    let mut victim = connect(server.bound_addr(), Some(VIEWER_KEY));
    let mut admin = connect(server.bound_addr(), Some(ADMIN_KEY));
    let dump = request(&mut admin, "t", "system", "threads", json!({}))["data"]["threads"].clone();
    let victim_id = dump
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["identity"] == "viewer")
        .unwrap()["connection_id"]
        .as_u64()
        .unwrap();
    send(
        &mut admin,
        &signed_command(
            "d",
            "system",
            "disconnect",
            json!({"connection_id": victim_id}),
            ADMIN_KEY,
            &timestamp_now(),
        ),
    );
    let r = recv_json(&mut admin);
    assert_eq!(r["data"]["disconnected"], victim_id);
    assert_eq!(expect_close(&mut victim).unwrap().code, CloseCode::Policy);
    send(
        &mut admin,
        &signed_command(
            "d2",
            "system",
            "disconnect",
            json!({"connection_id": 999_999}),
            ADMIN_KEY,
            &timestamp_now(),
        ),
    );
    let r = recv_json(&mut admin);
    assert_eq!(r["error"]["code"], "invalid_message");
    let mut viewer = connect(server.bound_addr(), Some(VIEWER_KEY));
    assert_eq!(
        request(
            &mut viewer,
            "d",
            "system",
            "disconnect",
            json!({"connection_id": 1})
        )["error"]["code"],
        "forbidden"
    );
}

#[test]
fn unknown_action_and_legacy_status() {
    let server = start();
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let r = request(&mut ws, "u", "system", "reboot", json!({}));
    assert_eq!(r["error"]["code"], "unknown_action");
    send(&mut ws, r#"{"type":"status"}"#);
    let legacy = recv_json(&mut ws);
    assert!(
        legacy["type"].is_null(),
        "bare status object, no envelope: {legacy}"
    );
    assert!(legacy["active_connections"].is_u64());
    assert!(legacy["status"]["totalThreads"].is_u64());
}
