//! `make soak`: churn against the release server for SOAK_SECONDS (default 600) at about
//! SOAK_CLIENTS (default 500) concurrent clients, all on 127.0.0.1.
//!
//! A service connection publishes reliable `jobs` events and plain `telemetry` events; each
//! client slot connects, subscribes, sends commands, reads and acks, and every few seconds ends
//! its connection — mostly abruptly (no close frame) and then resumes its session with the last
//! seq it has, sometimes cleanly with a brand-new session. At the end publishing stops and every
//! slot resumes one last time and drains. Reported: messages sent and received, reliable events
//! lost (a seq-numbered event missing after a successful resume: must be 0), RSS after warm-up,
//! in the middle and at the end (must not grow more than 10 %), and the server's threads and
//! descriptors once every client is gone (must be back to the baseline). Exit 1 on any failure.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const BIN: &str = "target/release/hydrogen-ws";
const KEY: &str = "soak-viewer-key-0123456789abcdef";
const SERVICE_KEY: &str = "soak-service-key-0123456789abcdef";
/// How long any single step may take before the soak reports a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Client reads wake this often to do their periodic work.
const READ_TICK: Duration = Duration::from_millis(200);
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

type Ws = WebSocket<TcpStream>;

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    connects: AtomicU64,
    abrupt: AtomicU64,
    resumes: AtomicU64,
    resume_gaps: AtomicU64,
    reliable_received: AtomicU64,
    reliable_lost: AtomicU64,
    published: AtomicU64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct ServerProc {
    child: Child,
    addr: SocketAddr,
}

impl ServerProc {
    fn start() -> ServerProc {
        let cfg = std::env::temp_dir().join(format!("hws-soak-{}.json", std::process::id()));
        let body = json!({"WebSocketServer": {
            "Interface": "127.0.0.1", "Port": 0, "MaxConnections": 5000, "MaxConnectionsPerIp": 5000,
            "Keys": [{"Name": "soak", "Key": KEY, "Role": "viewer"},
                     {"Name": "publisher", "Key": SERVICE_KEY, "Role": "service"}],
            "RateLimit": {"MessagesPerSecond": 0, "HandshakesPerMinutePerIp": 0},
            "Delivery": {"ReliableChannels": ["jobs"], "AckTimeoutMs": 5000, "MaxRetries": 20,
                         "SessionResumeSeconds": 30, "ReplayBufferEvents": 1000}},
            "Logging": {"Level": "warn"}});
        std::fs::write(&cfg, body.to_string()).unwrap();
        // SOAK_SERVER_WRAPPER runs the server under another program (valgrind, for
        // `make memcheck`); its RSS is then the wrapper's and is not checked.
        let wrapper = std::env::var("SOAK_SERVER_WRAPPER").unwrap_or_default();
        let mut words: Vec<&str> = wrapper.split_whitespace().collect();
        words.push(BIN);
        let mut child = Command::new(words[0])
            .args(&words[1..])
            .args(["--config", cfg.to_str().unwrap()])
            .env("HYDROGEN_API_KEY", "soak-admin-key-0123456789abcdef")
            .env("RUST_LOG", "warn,hydrogen_ws::server::net::listener=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("run `cargo build --release` first (make soak does)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on ").nth(1) {
                    let _ = tx.try_send(a.trim().to_string());
                } else if line.contains("ERROR") {
                    eprintln!("  server: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(STEP_TIMEOUT)
            .expect("server did not start")
            .parse()
            .unwrap();
        ServerProc { child, addr }
    }

    fn status_field(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn connect(addr: SocketAddr, key: &str) -> Option<(Ws, Value)> {
    let tcp = TcpStream::connect_timeout(&addr, STEP_TIMEOUT).ok()?;
    tcp.set_read_timeout(Some(STEP_TIMEOUT)).ok()?;
    let mut req = format!("ws://{addr}/").into_client_request().ok()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "hydrogen-protocol".parse().ok()?);
    req.headers_mut()
        .insert("Authorization", format!("Key {key}").parse().ok()?);
    let (mut ws, _) = tungstenite::client(req, tcp).ok()?;
    // The server never speaks first: a ping's answer comes after the welcome.
    let hello = r#"{"type":"command","id":"hello","channel":"system","action":"ping"}"#;
    ws.send(Message::Text(hello.into())).ok()?;
    let welcome = match ws.read().ok()? {
        Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).ok()?,
        _ => return None,
    };
    let _pong = ws.read().ok()?;
    Some((ws, welcome["data"].clone()))
}

fn send(ws: &mut Ws, c: &Counters, v: &Value) -> bool {
    c.sent.fetch_add(1, Ordering::Relaxed);
    ws.send(Message::Text(v.to_string().into())).is_ok()
}

/// One client slot: sessions, abrupt ends and resumes, until `stop`; then a final resume and a
/// drain up to the last published event. Returns reliable events it found missing.
struct Slot {
    id: usize,
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    rng: u64,
    session: Option<String>,
    /// seqs of the current session handed over.
    seen: BTreeSet<u64>,
    /// The first reliable `n` of the current unbroken session, and every reliable n since.
    first_reliable: Option<u64>,
    reliable: BTreeSet<u64>,
    commands: u64,
}

impl Slot {
    fn random(&mut self, below: u64) -> u64 {
        // xorshift: enough to spread lifetimes and choices.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below.max(1)
    }

    fn watermark(&self) -> u64 {
        let mut w = 0;
        for s in &self.seen {
            if *s == w + 1 {
                w = *s;
            } else if *s > w + 1 {
                break;
            }
        }
        w
    }

    /// Opens a connection: resumes the session when there is one, else starts fresh.
    fn open(&mut self) -> Option<Ws> {
        let (mut ws, welcome) = connect(self.addr, KEY)?;
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let c = self.counters.clone();
        match self.session.clone() {
            Some(old) => {
                let last_seq = self.watermark();
                send(
                    &mut ws,
                    &c,
                    &json!({"type": "command", "id": format!("r{}", self.commands), "channel": "system", "action": "resume", "data": {"session_id": old, "last_seq": last_seq}}),
                );
                self.commands += 1;
                self.counters.resumes.fetch_add(1, Ordering::Relaxed);
                // The response comes before any replayed event.
                loop {
                    let v = read_json(&mut ws)?;
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    if v["type"] == "response" {
                        if v["data"]["resumed"] != true {
                            // Gap or expired: not a loss by the server's account; start over.
                            self.counters.resume_gaps.fetch_add(1, Ordering::Relaxed);
                            self.restart(welcome["session_id"].as_str(), &mut ws)?;
                        }
                        break;
                    }
                }
            }
            None => self.restart(welcome["session_id"].as_str(), &mut ws)?,
        }
        ws.get_mut().set_read_timeout(Some(READ_TICK)).ok()?;
        Some(ws)
    }

    fn restart(&mut self, session: Option<&str>, ws: &mut Ws) -> Option<()> {
        self.session = session.map(str::to_owned);
        self.seen.clear();
        self.first_reliable = None;
        self.reliable.clear();
        let c = self.counters.clone();
        send(
            ws,
            &c,
            &json!({"type": "command", "id": format!("s{}", self.commands), "channel": "system", "action": "subscribe", "data": {"channels": ["jobs", "telemetry"]}}),
        );
        self.commands += 1;
        Some(())
    }

    fn on_event(&mut self, ws: &mut Ws, v: &Value) {
        let Some(seq) = v["seq"].as_u64() else {
            return;
        };
        if !self.seen.insert(seq) {
            if v["ack"] == true {
                let c = self.counters.clone();
                send(ws, &c, &json!({"type": "ack", "id": v["id"]}));
            }
            return;
        }
        if v["ack"] == true {
            let n = v["data"]["n"].as_u64().unwrap_or(0);
            self.first_reliable.get_or_insert(n);
            self.reliable.insert(n);
            self.counters
                .reliable_received
                .fetch_add(1, Ordering::Relaxed);
            let c = self.counters.clone();
            send(ws, &c, &json!({"type": "ack", "id": v["id"]}));
        }
    }

    /// Reads until the connection's lifetime ends or stop; false if the link failed.
    fn live(&mut self, ws: &mut Ws, until: Instant) -> bool {
        let mut next_command = Instant::now() + Duration::from_millis(500 + self.random(1000));
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                        && v["type"] == "event"
                    {
                        self.on_event(ws, &v);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
            if Instant::now() >= next_command {
                let c = self.counters.clone();
                let action = if self.random(4) == 0 {
                    "status"
                } else {
                    "ping"
                };
                send(
                    ws,
                    &c,
                    &json!({"type": "command", "id": format!("c{}-{}", self.id, self.commands), "channel": "system", "action": action}),
                );
                self.commands += 1;
                next_command = Instant::now() + Duration::from_millis(500 + self.random(1000));
            }
        }
        true
    }

    /// After publishing stopped: resume once more and read up to the last reliable event.
    fn drain(&mut self, last_n: u64) -> u64 {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut ws = loop {
            if let Some(ws) = self.open() {
                break ws;
            }
            if Instant::now() >= deadline {
                return 0;
            }
            std::thread::sleep(READ_TICK);
        };
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && !self.reliable.contains(&last_n) {
            // A session started after the last event has nothing to wait for.
            if self.first_reliable.is_none() && quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            match ws.read() {
                Ok(Message::Text(t)) => {
                    quiet_since = Instant::now();
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                        && v["type"] == "event"
                    {
                        self.on_event(&mut ws, &v);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = ws.close(None);
        let _ = ws.flush();
        let Some(first) = self.first_reliable else {
            return 0;
        };
        // Reliable events are the even n (jobs); telemetry has the odd ones.
        (first..=last_n)
            .filter(|n| n.is_multiple_of(2) && !self.reliable.contains(n))
            .count() as u64
    }

    fn run(mut self, last_published: Arc<AtomicU64>) -> u64 {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(mut ws) = self.open() else {
                std::thread::sleep(READ_TICK);
                continue;
            };
            let lifetime = Duration::from_millis(2_000 + self.random(10_000));
            let alive = self.live(&mut ws, Instant::now() + lifetime);
            if !alive || self.stop.load(Ordering::Relaxed) {
                continue;
            }
            if self.random(10) < 7 {
                // Abrupt: the TCP connection just ends; the session waits for a resume.
                self.counters.abrupt.fetch_add(1, Ordering::Relaxed);
                drop(ws);
            } else {
                // Clean: close handshake, and the next connection is a brand-new session.
                let _ = ws.close(None);
                let _ = ws.flush();
                self.session = None;
            }
        }
        self.drain(last_published.load(Ordering::SeqCst))
    }
}

fn read_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.read().ok()? {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            _ => continue,
        }
    }
}

fn main() {
    let seconds = env_u64("SOAK_SECONDS", 600);
    let clients = env_u64("SOAK_CLIENTS", 500) as usize;
    let server = ServerProc::start();
    let addr = server.addr;
    std::thread::sleep(Duration::from_millis(300));
    let (threads0, fds0, rss0) = (server.threads(), server.fds(), server.rss_kib());
    println!(
        "soak: {clients} clients for {seconds} s against {addr}; server at rest: {threads0} threads, {fds0} fds, {rss0} KiB RSS"
    );

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = Arc::new(AtomicBool::new(true));
    let last_published = Arc::new(AtomicU64::new(0));

    // The publisher: a service connection.
    let (p_counters, p_publishing, p_last) =
        (counters.clone(), publishing.clone(), last_published.clone());
    let publisher = std::thread::spawn(move || {
        let (mut ws, _) = connect(addr, SERVICE_KEY).expect("publisher connects");
        let mut n = 0u64;
        while p_publishing.load(Ordering::Relaxed) {
            n += 1;
            let channel = if n.is_multiple_of(2) {
                "jobs"
            } else {
                "telemetry"
            };
            let publish = json!({"type": "command", "id": format!("p{n}"), "channel": "system", "action": "publish",
                "data": {"channel": channel, "action": "update", "data": {"n": n, "pad": "x".repeat(100)}}});
            assert!(
                send(&mut ws, &p_counters, &publish),
                "publisher lost its connection"
            );
            let reply = read_json(&mut ws).expect("publish answered");
            assert_eq!(reply["status"], "ok", "{reply}");
            p_counters.received.fetch_add(1, Ordering::Relaxed);
            p_counters.published.fetch_add(1, Ordering::Relaxed);
            if channel == "jobs" {
                p_last.store(n, Ordering::SeqCst);
            }
            std::thread::sleep(PUBLISH_EVERY);
        }
        let _ = ws.close(None);
        let _ = ws.flush();
    });

    let mut slots = Vec::with_capacity(clients);
    for id in 0..clients {
        let slot = Slot {
            id,
            addr,
            counters: counters.clone(),
            stop: stop.clone(),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            session: None,
            seen: BTreeSet::new(),
            first_reliable: None,
            reliable: BTreeSet::new(),
            commands: 0,
        };
        let last = last_published.clone();
        slots.push(
            std::thread::Builder::new()
                .name(format!("soak-{id}"))
                .stack_size(256 * 1024)
                .spawn(move || slot.run(last))
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(2));
    }

    // RSS after warm-up (a fifth of the run), in the middle and at the end.
    let t0 = Instant::now();
    let at = |f: f64| t0 + Duration::from_secs_f64(seconds as f64 * f);
    let mut samples = Vec::new();
    for (label, when) in [("warm", at(0.2)), ("middle", at(0.5)), ("end", at(1.0))] {
        while Instant::now() < when {
            std::thread::sleep(Duration::from_millis(200));
        }
        let rss = server.rss_kib();
        println!(
            "soak: {label:>6} {:>4} s: RSS {rss} KiB, {} threads, {} sent, {} received, {} connects",
            t0.elapsed().as_secs(),
            server.threads(),
            counters.sent.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
            counters.connects.load(Ordering::Relaxed)
        );
        samples.push(rss);
    }
    publishing.store(false, Ordering::SeqCst);
    publisher.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut lost = 0;
    for s in slots {
        lost += s.join().unwrap();
    }
    counters.reliable_lost.store(lost, Ordering::Relaxed);

    // Every client is gone: the server must be back at rest.
    let deadline = Instant::now() + STEP_TIMEOUT;
    while (server.threads() != threads0 || server.fds() != fds0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (threads1, fds1) = (server.threads(), server.fds());
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let growth = samples[2] as f64 / samples[0] as f64;
    println!("\n| soak ({seconds} s, {clients} clients) | value |");
    println!("|---|---|");
    println!(
        "| messages sent / received by the clients | {} / {} |",
        c(&counters.sent),
        c(&counters.received)
    );
    println!(
        "| events published (half reliable) | {} |",
        c(&counters.published)
    );
    println!(
        "| connections / abrupt drops / resumes / resumes with a gap | {} / {} / {} / {} |",
        c(&counters.connects),
        c(&counters.abrupt),
        c(&counters.resumes),
        c(&counters.resume_gaps)
    );
    println!(
        "| reliable events received / lost | {} / {} |",
        c(&counters.reliable_received),
        lost
    );
    println!(
        "| server RSS after warm-up / middle / end | {} / {} / {} KiB ({:+.1} %) |",
        samples[0],
        samples[1],
        samples[2],
        (growth - 1.0) * 100.0
    );
    println!(
        "| server threads / fds at rest before → after | {threads0} → {threads1} / {fds0} → {fds1} |"
    );

    let mut failed = Vec::new();
    if lost > 0 {
        failed.push(format!("{lost} reliable events lost"));
    }
    let wrapped = std::env::var("SOAK_SERVER_WRAPPER").is_ok_and(|w| !w.is_empty());
    if growth > 1.10 && !wrapped {
        failed.push(format!(
            "RSS grew {:.1} % after warm-up",
            (growth - 1.0) * 100.0
        ));
    }
    if threads1 != threads0 || fds1 != fds0 {
        failed.push(format!(
            "not back at rest: threads {threads0} → {threads1}, fds {fds0} → {fds1}"
        ));
    }
    let mut server = server;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    match server.child.wait() {
        Ok(status) if status.success() => {}
        other => failed.push(format!("the server did not exit cleanly: {other:?}")),
    }
    if failed.is_empty() {
        println!("\nsoak: PASSED");
    } else {
        println!("\nsoak: FAILED: {}", failed.join("; "));
        std::process::exit(1);
    }
}
