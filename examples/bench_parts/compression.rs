//! The permessage-deflate rows of `make bench` (issue #16): bytes on the wire for a status
//! stream and a print-progress stream with compression on and off (our client library
//! through a counting TCP proxy, against a server in this process), and the CPU a delivery
//! costs both ways (server compressing, client inflating) with it on and off. Loopback
//! only; every loop is bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hydrogen_ws::client::Credentials;
use hydrogen_ws::config::Config;
use hydrogen_ws::{ApiKey, Client, ClientConfig, Role, Secret, Server};
use serde_json::json;

const KEY: &str = "bench-compression-key-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// One row: bytes the client received, off, on (defaults), and on with context takeover.
pub struct WireRow {
    pub what: &'static str,
    pub off: u64,
    pub on: u64,
    pub takeover: u64,
}

/// How a stream is measured.
#[derive(Clone, Copy)]
enum Mode {
    Off,
    On,
    ContextTakeover,
}

fn server(status_ms: Option<u64>) -> Server {
    server_with(status_ms, Mode::On)
}

fn server_with(status_ms: Option<u64>, mode: Mode) -> Server {
    let mut c = Config::default();
    c.port = 0;
    c.interface = "127.0.0.1".parse().unwrap();
    c.keys = vec![ApiKey::new("bench", Secret::new(KEY), Role::Admin)];
    c.status_interval = status_ms.map(Duration::from_millis);
    c.rate_limit.messages_per_second = 0;
    c.compression.context_takeover = matches!(mode, Mode::ContextTakeover);
    Server::start(c).unwrap()
}

/// A TCP proxy for one connection to `to`, counting the bytes that flow back to the client.
fn counting_proxy(to: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let down = Arc::new(AtomicU64::new(0));
    let counter = down.clone();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let upstream = TcpStream::connect(to).unwrap();
        let pipe = |mut from: TcpStream, mut into: TcpStream, count: Option<Arc<AtomicU64>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || into.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if let Some(c) = &count {
                        c.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                let _ = into.shutdown(Shutdown::Write);
            })
        };
        let up = pipe(
            client.try_clone().unwrap(),
            upstream.try_clone().unwrap(),
            None,
        );
        let back = pipe(upstream, client, Some(counter));
        let _ = (up.join(), back.join());
    });
    (addr, down)
}

fn client(addr: SocketAddr, compression: bool) -> Client {
    client_with(addr, if compression { Mode::On } else { Mode::Off })
}

fn client_with(addr: SocketAddr, mode: Mode) -> Client {
    let mut cfg = ClientConfig::new(format!("ws://{addr}/"));
    cfg.credentials = Some(Credentials::key(KEY));
    cfg.compression = !matches!(mode, Mode::Off);
    cfg.compression_context_takeover = matches!(mode, Mode::ContextTakeover);
    cfg.reconnect.enabled = false;
    Client::connect(cfg).unwrap()
}

/// A print-progress event as a printer controller sends it.
fn progress(i: u64) -> serde_json::Value {
    json!({"job": "benchy_0.2mm_PLA_MK3S_1h4m.gcode", "percent": (i % 1000) as f64 / 10.0,
           "layer": i / 20, "layers": 250, "elapsed_s": i * 2, "remaining_s": 3840 - (i * 2) % 3840,
           "temperatures": {"hotend": {"actual": 214.6 + (i % 7) as f64 / 10.0, "target": 215.0},
                            "bed": {"actual": 59.8, "target": 60.0}},
           "position": {"x": 112.4, "y": 98.1 + (i % 50) as f64, "z": 0.2 * (i / 20) as f64},
           "fan_percent": 100, "state": "printing"})
}

/// Bytes the client received for `count` status events (at 100 ms instead of 1 s: one
/// minute of the default stream in 6 s).
fn status_stream(mode: Mode, count: usize) -> u64 {
    let server = server_with(Some(100), mode);
    let (proxy, down) = counting_proxy(server.bound_addr());
    let c = client_with(proxy, mode);
    let sub = c.subscribe("system").unwrap();
    let start = down.load(Ordering::Relaxed);
    for _ in 0..count {
        sub.recv_timeout(WAIT).expect("a status event");
    }
    down.load(Ordering::Relaxed) - start
}

/// Bytes the client received for `count` progress events.
fn progress_stream(mode: Mode, count: u64) -> u64 {
    let server = server_with(None, mode);
    let (proxy, down) = counting_proxy(server.bound_addr());
    let c = client_with(proxy, mode);
    let sub = c.subscribe("print").unwrap();
    let start = down.load(Ordering::Relaxed);
    let publisher = server.publisher();
    for i in 0..count {
        publisher.publish("print", "progress", progress(i)).unwrap();
        sub.recv_timeout(WAIT).expect("a progress event");
    }
    down.load(Ordering::Relaxed) - start
}

pub fn wire_rows() -> Vec<WireRow> {
    vec![
        WireRow {
            what: "one minute of system/status (60 events)",
            off: status_stream(Mode::Off, 60),
            on: status_stream(Mode::On, 60),
            takeover: status_stream(Mode::ContextTakeover, 60),
        },
        WireRow {
            what: "600 print/progress events (~450 B each)",
            off: progress_stream(Mode::Off, 600),
            on: progress_stream(Mode::On, 600),
            takeover: progress_stream(Mode::ContextTakeover, 600),
        },
    ]
}

fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value, and getrusage fills the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU (this whole process: server and clients) per delivered progress event to
/// `subscribers` clients, compression off and on, median of 3.
pub fn cpu_per_delivery(subscribers: usize, events: u64) -> (f64, f64) {
    let run = |compression: bool| {
        let server = server(None);
        let clients: Vec<Client> = (0..subscribers)
            .map(|_| client(server.bound_addr(), compression))
            .collect();
        let subs: Vec<_> = clients
            .iter()
            .map(|c| c.subscribe("print").unwrap())
            .collect();
        let publisher = server.publisher();
        let started = cpu_seconds();
        // Fewer events than a subscription's queue (1024): published at once, then read.
        for i in 0..events {
            publisher.publish("print", "progress", progress(i)).unwrap();
        }
        for s in &subs {
            for _ in 0..events {
                s.recv_timeout(WAIT).expect("every event arrives");
            }
        }
        (cpu_seconds() - started) * 1e6 / (events * subscribers as u64) as f64
    };
    off_and_on(run)
}

/// CPU (this process: client compressing, server inflating a new inflater per message, and
/// the answers) per `system/ping` carrying `pad` bytes of data, compression off and on,
/// median of 3 runs of `count` sequential requests.
pub fn cpu_per_command(pad: usize, count: usize) -> (f64, f64) {
    let run = |compression: bool| {
        let server = server(None);
        let c = client(server.bound_addr(), compression);
        let data = json!({"pad": "p".repeat(pad)});
        let started = cpu_seconds();
        for _ in 0..count {
            c.request("system", "ping", data.clone(), WAIT).unwrap();
        }
        (cpu_seconds() - started) * 1e6 / count as f64
    };
    off_and_on(run)
}

/// `run(false)` and `run(true)`, the median of three runs each.
fn off_and_on(run: impl Fn(bool) -> f64) -> (f64, f64) {
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let off = med((0..3).map(|_| run(false)).collect());
    let on = med((0..3).map(|_| run(true)).collect());
    (off, on)
}
