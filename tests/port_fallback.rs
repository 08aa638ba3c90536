//! SPEC §3: port fallback, and the error when no port in the range is free.

mod support;

use std::net::TcpListener;

use hydrogen_ws::Error;
use support::*;

/// Two adjacent free ports: take them with plain listeners; returns the first port.
fn occupied_pair() -> (u16, TcpListener, TcpListener) {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p >= 65000 {
            continue;
        }
        if let Ok(b) = TcpListener::bind(("127.0.0.1", p + 1)) {
            return (p, a, b);
        }
    }
    panic!("no two adjacent free ports");
}

#[test]
fn falls_back_past_taken_ports() {
    let (first, _a, _b) = occupied_pair();
    let server = start_with(|c| {
        c.port = first;
        c.port_fallback_count = 10;
    });
    let port = server.bound_addr().port();
    assert!(
        port > first + 1 && port < first + 10,
        "bound {port}, range starts {first}"
    );
    let mut ws = connect(server.bound_addr(), Some(VIEWER_KEY));
    let info = request(&mut ws, "i", "system", "info", serde_json::json!({}));
    assert_eq!(info["data"]["port"], port);
}

#[test]
fn no_free_port_is_a_bind_error() {
    let (first, _a, _b) = occupied_pair();
    let mut c = test_config();
    c.port = first;
    c.port_fallback_count = 2;
    let err = hydrogen_ws::Server::start(c).unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    assert_eq!(err.exit_code(), 3);
}

#[test]
fn ipv6_loopback_alongside_ipv4() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        // Written past libtest's capture, so the skip shows in every run's output.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED ipv6_loopback_alongside_ipv4: no IPv6 loopback on this machine"
        );
        return;
    }
    let server = start_with(|c| c.enable_ipv6 = true);
    let addrs = server.bound_addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(addrs[1].is_ipv6() && addrs[0].port() == addrs[1].port());
    let mut ws = connect(addrs[1], Some(VIEWER_KEY));
    assert_eq!(
        request(&mut ws, "p", "system", "ping", serde_json::json!({}))["status"],
        "ok"
    );
}
