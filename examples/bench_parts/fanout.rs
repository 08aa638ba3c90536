//! The fan-out rows of `make bench`: one load program for our server and for the baseline
//! (`examples/fanout_baseline.rs`, a plain tungstenite thread-per-connection broadcast
//! server), run one after the other in the same bench run.
//!
//! The load client is a single thread in `poll(2)` over every subscriber socket and the
//! publisher (1000 subscribers cost no client threads): the publisher sends `system/publish`
//! commands of about 200 bytes on a fixed schedule; latency is publish → receipt at the last
//! subscriber of each event. Every loop is bounded; only loopback is used.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Rows: (subscribers, events per second).
pub const ROWS: [(usize, u64); 4] = [(10, 1000), (100, 1000), (1000, 1000), (1000, 100)];
/// Seconds of publishing per row.
pub const SECONDS: u64 = 3;
/// After the last publish, how long the client waits for what is still on its way.
const DRAIN: Duration = Duration::from_secs(5);

type Ws = WebSocket<TcpStream>;

/// What one row measured.
pub struct Row {
    pub delivered_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Deliveries that never arrived (subscribers × events − received).
    pub lost: u64,
    /// Subscribers closed with 1013 (too slow).
    pub closed_1013: usize,
    /// Server CPU (user + system) per delivery received, µs.
    pub cpu_us: f64,
}

/// A server under load: ours as a process (with its key and welcome), ours in this process
/// (publishing through the library's `Publisher`), or the baseline.
pub struct Target {
    /// The server's process; `None` when it runs in this one (its threads are `hws-*`).
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// Credentials to send, and whether a `system/welcome` follows the handshake.
    pub key: Option<String>,
    /// Set when events are published through this `Publisher` instead of `system/publish`.
    pub publisher: Option<hydrogen_ws::Publisher>,
}

impl Target {
    /// Starts the baseline (`target/release/examples/fanout_baseline`).
    pub fn baseline() -> Target {
        let mut child = Command::new("target/release/examples/fanout_baseline")
            .stdout(Stdio::piped())
            .spawn()
            .expect("build the examples first (make bench does)");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        Target {
            child: Some(child),
            addr,
            key: None,
            publisher: None,
        }
    }

    /// Our server in this process, with a `Publisher` for the rows that use it.
    pub fn in_process(key: &str) -> (hydrogen_ws::Server, Target) {
        let mut c = hydrogen_ws::Config::default();
        c.interface = "127.0.0.1".parse().unwrap();
        c.port = 0;
        c.max_connections = 5000;
        c.max_connections_per_ip = 5000;
        c.rate_limit.messages_per_second = 0;
        c.rate_limit.handshakes_per_minute_per_ip = 0;
        c.keys = vec![hydrogen_ws::ApiKey::new(
            "bench",
            hydrogen_ws::Secret::new(key),
            hydrogen_ws::Role::Admin,
        )];
        let server = hydrogen_ws::Server::start(c).expect("in-process server");
        let target = Target {
            child: None,
            addr: server.bound_addr(),
            key: Some(key.to_string()),
            publisher: Some(server.publisher()),
        };
        (server, target)
    }

    /// CPU (user + system, clock ticks) of the server: its process, or this process's
    /// `hws-*` threads when it runs here.
    fn cpu_ticks(&self) -> u64 {
        let ticks = |stat: &str| {
            let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        };
        if let Some(child) = &self.child {
            return ticks(&std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap());
        }
        let mut sum = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with("hws-") {
                sum +=
                    ticks(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
            }
        }
        sum
    }

    fn connect(&self) -> Ws {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("ws://{}/", self.addr)
            .into_client_request()
            .unwrap();
        let headers = req.headers_mut();
        headers.insert(
            "Sec-WebSocket-Protocol",
            "hydrogen-protocol".parse().unwrap(),
        );
        if let Some(k) = &self.key {
            headers.insert("Authorization", format!("Key {k}").parse().unwrap());
        }
        let (mut ws, _) = tungstenite::client(req, tcp).expect("handshake");
        if self.key.is_some() {
            // Our server welcomes a client right before its first answer; the baseline
            // has no welcome.
            let hello = r#"{"type":"command","id":"hello","channel":"system","action":"ping"}"#;
            ws.send(Message::Text(hello.into())).unwrap();
            assert!(matches!(ws.read().unwrap(), Message::Text(_)));
            assert!(matches!(ws.read().unwrap(), Message::Text(_)));
        }
        ws
    }
}

/// The number after `"n":` in an event's text (cheaper than parsing the whole event).
fn event_n(text: &str) -> Option<usize> {
    let at = text.find("\"n\":")? + 4;
    let end = text[at..].find(|c: char| !c.is_ascii_digit())? + at;
    text[at..end].parse().ok()
}

/// Everything one client thread watches.
struct Load {
    subs: Vec<Ws>,
    publisher: Ws,
    events: usize,
    t0: Instant,
    /// Latest receipt (µs since t0) of each event over all subscribers.
    last: Vec<u64>,
    received: u64,
    closed_1013: usize,
    open: Vec<bool>,
}

impl Load {
    fn subscribe(target: &Target, subscribers: usize, events: usize) -> Load {
        let mut subs: Vec<Ws> = (0..subscribers).map(|_| target.connect()).collect();
        for (i, s) in subs.iter_mut().enumerate() {
            let text = json!({"type": "command", "id": format!("s{i}"), "channel": "system",
                "action": "subscribe", "data": {"channels": ["fan"]}});
            s.send(Message::Text(text.to_string().into())).unwrap();
            while !matches!(s.read().unwrap(), Message::Text(_)) {}
            s.get_ref().set_nonblocking(true).unwrap();
        }
        let publisher = target.connect();
        publisher.get_ref().set_nonblocking(true).unwrap();
        Load {
            open: vec![true; subs.len()],
            subs,
            publisher,
            events,
            t0: Instant::now(),
            last: vec![0; events],
            received: 0,
            closed_1013: 0,
        }
    }

    /// Reads what every readable subscriber has, then drains the publisher's responses.
    fn read_ready(&mut self, timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = self
            .subs
            .iter()
            .zip(&self.open)
            .map(|(s, open)| libc::pollfd {
                // A closed subscriber is left out (poll ignores negative descriptors).
                fd: if *open { s.get_ref().as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = timeout.min(Duration::from_millis(50));
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: timeout.as_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call; ts is valid;
        // a null signal mask leaves the mask as it is.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        let now = self.t0.elapsed().as_micros() as u64;
        for (i, p) in fds.iter().enumerate() {
            if p.revents == 0 || !self.open[i] {
                continue;
            }
            loop {
                match self.subs[i].read() {
                    Ok(Message::Text(t)) => {
                        if let Some(n) = event_n(t.as_str()).filter(|n| *n < self.events) {
                            self.last[n] = self.last[n].max(now);
                            self.received += 1;
                        }
                    }
                    Ok(Message::Close(f)) => {
                        if f.is_some_and(|f| f.code == CloseCode::Again) {
                            self.closed_1013 += 1;
                        }
                        self.open[i] = false;
                        break;
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        break;
                    }
                    Err(_) => {
                        self.open[i] = false;
                        break;
                    }
                }
            }
        }
        while self.publisher.read().is_ok() {}
    }

    /// Publishes event `n` with `system/publish` on the publisher connection.
    fn publish(&mut self, n: usize, pad: &str) {
        let text = json!({"type": "command", "id": format!("p{n}"), "channel": "system",
            "action": "publish", "data": {"channel": "fan", "action": "tick",
            "data": {"n": n, "pad": pad}}});
        let mut sent = self.publisher.send(Message::Text(text.to_string().into()));
        let give_up = Instant::now() + Duration::from_secs(5);
        while let Err(tungstenite::Error::Io(e)) = &sent {
            if e.kind() != std::io::ErrorKind::WouldBlock || Instant::now() > give_up {
                break;
            }
            while self.publisher.read().is_ok() {}
            sent = self.publisher.flush();
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One row: `rate` events/s to `subscribers` for [`SECONDS`], on `target`.
pub fn run(target: &Target, subscribers: usize, rate: u64) -> Row {
    let events = (rate * SECONDS) as usize;
    let mut load = Load::subscribe(target, subscribers, events);
    let pad = "p".repeat(120);
    let mut published_at = vec![0u64; events];
    let cpu_before = target.cpu_ticks();
    load.t0 = Instant::now();
    let interval_us = 1_000_000 / rate;
    let due = move |n: usize| Duration::from_micros(n as u64 * interval_us);
    let mut in_publisher = Duration::ZERO;
    let expected = (subscribers * events) as u64;
    if let Some(publisher) = target.publisher.clone() {
        // A controller thread publishing through the library, as a device controller would;
        // this thread only reads. Its CPU is the server's work (direct writes happen there).
        let t0 = load.t0;
        let controller = std::thread::spawn(move || {
            let start_cpu = thread_cpu();
            let pad = "p".repeat(120);
            let mut at = vec![0u64; events];
            for (n, slot) in at.iter_mut().enumerate() {
                if let Some(wait) = due(n).checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait); // the schedule, not a wait for a condition
                }
                *slot = t0.elapsed().as_micros() as u64;
                publisher
                    .publish("fan", "tick", json!({"n": n, "pad": pad}))
                    .unwrap();
            }
            (at, thread_cpu().saturating_sub(start_cpu))
        });
        let until = Instant::now() + Duration::from_secs(SECONDS) + DRAIN;
        while load.received < expected && Instant::now() < until {
            load.read_ready(Duration::from_millis(50));
        }
        (published_at, in_publisher) = controller.join().unwrap();
    } else {
        for (n, at) in published_at.iter_mut().enumerate() {
            while let Some(wait) = due(n).checked_sub(load.t0.elapsed()) {
                load.read_ready(wait);
            }
            *at = load.t0.elapsed().as_micros() as u64;
            load.publish(n, &pad);
        }
        let drain_until = Instant::now() + DRAIN;
        while load.received < expected && Instant::now() < drain_until {
            load.read_ready(Duration::from_millis(50));
        }
    }
    let elapsed = load.t0.elapsed().as_secs_f64();
    let cpu_s = (target.cpu_ticks() - cpu_before) as f64 / 100.0 + in_publisher.as_secs_f64();
    let mut lat: Vec<f64> = load
        .last
        .iter()
        .zip(&published_at)
        .filter(|(l, _)| **l > 0)
        .map(|(l, p)| l.saturating_sub(*p) as f64 / 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Row {
        delivered_per_s: load.received as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        lost: expected - load.received,
        closed_1013: load.closed_1013,
        cpu_us: cpu_s * 1e6 / load.received.max(1) as f64,
    }
}

/// One row of the table: (subscribers, rate), ours by `system/publish`, ours by
/// `Publisher`, and the baseline.
pub type Measured = ((usize, u64), Row, Row, Row);

/// The table rows for ours and the baseline, with the ratios.
pub fn print_rows(rows: &[Measured]) {
    println!(
        "\n| fan-out: subscribers × events/s | server | deliveries/s | p50 / p99 / max ms | lost | 1013 closes | CPU µs/delivery | ours ÷ baseline: p50, p99, CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((subs, rate), ours, library, base) in rows {
        let rows = [
            ("hydrogen-ws, system/publish", ours),
            ("hydrogen-ws, Publisher", library),
            ("baseline", base),
        ];
        for (name, r) in rows {
            let ratio = if name == "baseline" {
                String::new()
            } else {
                format!(
                    "{:.2}×, {:.2}×, {:.2}×",
                    r.p50_ms / base.p50_ms,
                    r.p99_ms / base.p99_ms,
                    r.cpu_us / base.cpu_us
                )
            };
            println!(
                "| {subs} × {rate} | {name} | {:.0} | {:.2} / {:.2} / {:.1} | {} | {} | {:.2} | {ratio} |",
                r.delivered_per_s, r.p50_ms, r.p99_ms, r.max_ms, r.lost, r.closed_1013, r.cpu_us
            );
        }
    }
}
