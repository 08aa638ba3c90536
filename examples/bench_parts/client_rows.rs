//! Client-library rows of `make bench`: request round trip through [`Client::request`] against
//! the same `system/ping` through a raw tungstenite client in the same run (interleaved, same
//! CPUs), and reconnect times — a link cut by a TCP proxy until the session is resumed, and a
//! server restart on the same port until the client has subscribed again.

use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use hydrogen_ws::client::{Callbacks, Client, ClientConfig, Credentials, Delivery};
use serde_json::json;

use super::{
    CLIENT_CPU, KEY, SERVER_CPU, STEP_TIMEOUT, ServerProc, connect, median, percentile,
    pin_this_thread, ping, unpin_this_thread,
};

#[path = "../../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

const RTT_SAMPLES: usize = 3000;
const RTT_BLOCK: usize = 250;
const RECONNECT_RUNS: usize = 9;
const RESTART_RUNS: usize = 5;

pub struct ClientRows {
    pub lib_p50_us: f64,
    pub lib_p99_us: f64,
    pub raw_p50_us: f64,
    pub raw_p99_us: f64,
    pub cut_ms: f64,
    pub restart_ms: f64,
    pub initial_delay_ms: u64,
}

fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url).with_credentials(Credentials::key(KEY));
    c.reconnect.initial_delay = Duration::from_millis(10);
    c.reconnect.max_delay = Duration::from_millis(50);
    // Each measured cut starts from the first delay, as after a long-lived link.
    c.reconnect.reset_after = Duration::ZERO;
    c
}

pub fn measure() -> ClientRows {
    let server = ServerProc::start_on(Some(SERVER_CPU));
    let url = format!("ws://{}/", server.addr);
    // The library's threads inherit the affinity of the thread that starts them.
    pin_this_thread(CLIENT_CPU);
    let client = Client::connect(config(&url)).expect("client connects");
    let mut raw = connect(server.addr);
    let (mut lib, mut plain) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    while lib.len() < RTT_SAMPLES + RTT_BLOCK {
        for _ in 0..RTT_BLOCK {
            let t = Instant::now();
            client
                .request("system", "ping", json!({}), STEP_TIMEOUT)
                .expect("ping");
            lib.push(t.elapsed().as_secs_f64() * 1e6);
        }
        for _ in 0..RTT_BLOCK {
            i += 1;
            let t = Instant::now();
            ping(&mut raw, i);
            plain.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    unpin_this_thread();
    // The first block of each is warm-up.
    let (mut lib, mut plain) = (lib.split_off(RTT_BLOCK), plain.split_off(RTT_BLOCK));
    lib.sort_by(f64::total_cmp);
    plain.sort_by(f64::total_cmp);
    drop(client);
    drop(raw);

    let cut_ms = link_cut_ms(&server);
    let (restart_ms, server) = restart_ms(server);
    server.stop();
    ClientRows {
        lib_p50_us: percentile(&lib, 0.5),
        lib_p99_us: percentile(&lib, 0.99),
        raw_p50_us: percentile(&plain, 0.5),
        raw_p99_us: percentile(&plain, 0.99),
        cut_ms,
        restart_ms,
        initial_delay_ms: 10,
    }
}

/// Median time from cutting the link (proxy drops both sockets) to the client having resumed
/// its session.
fn link_cut_ms(server: &ServerProc) -> f64 {
    let proxy = proxy::Proxy::start(server.addr);
    let (tx, resumed) = unbounded();
    let callbacks = Callbacks::new().on_reconnect(move |r| {
        let _ = tx.send((Instant::now(), r.resumed));
    });
    let client = Client::connect_with(config(&proxy.url()), callbacks).expect("client connects");
    let _sub = client.subscribe("bench").expect("subscribe");
    let mut samples = Vec::new();
    for _ in 0..RECONNECT_RUNS {
        let t = Instant::now();
        proxy.cut();
        let (at, ok) = resumed.recv_timeout(STEP_TIMEOUT).expect("resumed");
        assert!(ok, "session not resumed after a link cut");
        samples.push((at - t).as_secs_f64() * 1000.0);
    }
    median(samples)
}

/// Median time from the restarted server listening to the client having subscribed again
/// (its queue holds the `Gap` marker).
fn restart_ms(mut server: ServerProc) -> (f64, ServerProc) {
    let port = server.addr.port();
    let (tx, reconnected) = unbounded();
    let callbacks = Callbacks::new().on_reconnect(move |r| {
        let _ = tx.send((Instant::now(), r.gap));
    });
    let url = format!("ws://{}/", server.addr);
    let client = Client::connect_with(config(&url), callbacks).expect("client connects");
    let sub = client.subscribe("bench").expect("subscribe");
    let mut samples = Vec::new();
    for _ in 0..RESTART_RUNS {
        server.stop();
        let started = Instant::now();
        server = ServerProc::start_with(
            Some(SERVER_CPU),
            json!({"Port": port, "PortFallbackCount": 1}),
        );
        let listening = started + server.ready_after;
        let (at, gap) = reconnected.recv_timeout(STEP_TIMEOUT).expect("reconnected");
        assert!(gap, "a restarted server cannot resume the session");
        assert!(matches!(
            sub.recv_timeout(STEP_TIMEOUT),
            Some(Delivery::Gap { .. })
        ));
        samples.push(at.saturating_duration_since(listening).as_secs_f64() * 1000.0);
    }
    (median(samples), server)
}
