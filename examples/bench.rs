//! `make bench`: measures the release binary as a separate process on 127.0.0.1 and prints a
//! Markdown table. Every figure is a median (or a percentile of many samples); the round trip
//! is also given as a ratio to a raw TCP echo measured in the same run, the physical floor
//! of this machine. Only loopback is used; every loop is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

#[path = "bench_parts/client_rows.rs"]
mod client_rows;
#[path = "bench_parts/compression.rs"]
mod compression;
#[path = "bench_parts/fanout.rs"]
mod fanout;
#[path = "bench_parts/mqtt_rows.rs"]
mod mqtt_rows;
use tungstenite::{Message, WebSocket};

const BIN: &str = "target/release/hydrogen-ws";
const KEY: &str = "bench-key-0123456789abcdef0123";
const PING_SAMPLES: usize = 5000;
const THROUGHPUT_CLIENTS: usize = 100;
const THROUGHPUT_SECS: u64 = 3;
const SHUTDOWN_RUNS: usize = 3;
const IDLE_CPU_SECS: u64 = 10;
/// Client threads answering close frames in the shutdown rows (clients are on other machines
/// in real life; here they share the 2 cores with the server).
const CLOSER_THREADS: usize = 4;
/// CPUs for the round-trip phase (the machine has at least 2).
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;

/// `program`, started under `taskset -c cpu` when a CPU is given.
fn pinned(program: &str, cpu: Option<usize>) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string(), program]);
            cmd
        }
        None => Command::new(program),
    }
}

fn set_affinity(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; the call affects this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pin_this_thread(cpu: usize) {
    set_affinity(&[cpu]);
}

fn unpin_this_thread() {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    set_affinity(&(0..n).collect::<Vec<_>>());
}

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

type Ws = WebSocket<TcpStream>;

struct ServerProc {
    child: KillOnDrop,
    addr: SocketAddr,
    /// From spawning the process to its "listening on" log line.
    ready_after: Duration,
}

impl ServerProc {
    fn start() -> ServerProc {
        Self::start_on(None)
    }

    /// Starts the server, pinned to `cpu` when given (all its threads inherit it).
    fn start_on(cpu: Option<usize>) -> ServerProc {
        Self::start_with(cpu, json!({}))
    }

    /// Like [`ServerProc::start_on`], with `extra` settings merged into `WebSocketServer`.
    fn start_with(cpu: Option<usize>, extra: Value) -> ServerProc {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cfg = std::env::temp_dir().join(format!("hws-bench-{}-{n}.json", std::process::id()));
        let mut body = json!({"WebSocketServer": {
            "Port": 0, "Interface": "127.0.0.1", "MaxConnections": 5000, "MaxConnectionsPerIp": 5000,
            "ShutdownTimeouts": {"CloseWaitMs": 2000, "JoinMs": 5000},
            "RateLimit": {"MessagesPerSecond": 0, "HandshakesPerMinutePerIp": 0}},
            "Logging": {"Level": "warn"}});
        if let (Some(section), Some(extra)) =
            (body["WebSocketServer"].as_object_mut(), extra.as_object())
        {
            section.extend(extra.clone());
        }
        std::fs::write(&cfg, body.to_string()).unwrap();
        let spawned_at = Instant::now();
        let mut child = pinned(BIN, cpu)
            .args(["--config", cfg.to_str().unwrap()])
            .env("HYDROGEN_API_KEY", KEY)
            .env(
                "RUST_LOG",
                "warn,hydrogen_ws::server::net::listener=info,hydrogen_ws::server::shutdown=info",
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("run `cargo build --release` first (make bench does)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on ").nth(1) {
                    let _ = tx.try_send((a.trim().to_string(), spawned_at.elapsed()));
                }
                // The bridge's warnings say why an MQTT row could not run.
                if line.contains("mqtt:") {
                    eprintln!("  server: {line}");
                }
                if std::env::var_os("BENCH_VERBOSE").is_some() && line.contains("shutdown") {
                    eprintln!("  server: {line}");
                }
            }
        });
        let (addr, ready_after) = rx.recv_timeout(STEP_TIMEOUT).expect("server did not start");
        ServerProc {
            child: KillOnDrop(Some(child)),
            addr: addr.parse().unwrap(),
            ready_after,
        }
    }

    fn proc_field(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }

    fn rss_kib(&self) -> u64 {
        self.proc_field("VmRSS:")
    }

    /// utime + stime in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// SIGTERM → exit, in ms.
    fn stop(mut self) -> f64 {
        let t = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = t + STEP_TIMEOUT;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return t.elapsed().as_secs_f64() * 1000.0;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A child process killed when dropped: a step that panicked must not leave its server
/// running (it would outlive the bench, and a bridged one would still hold its ClientId).
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// The child, for a caller that stops it itself.
    fn take(&mut self) -> Child {
        self.0.take().expect("taken once")
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("not taken")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("not taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn connect(addr: SocketAddr) -> Ws {
    connect_offering(addr, None)
}

/// Like [`connect`], offering `extensions` (`Sec-WebSocket-Extensions`).
fn connect_offering(addr: SocketAddr, extensions: Option<&str>) -> Ws {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    upgrade(tcp, &format!("ws://{addr}/"), extensions)
}

type Wss = WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

fn connect_tls(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Wss {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    upgrade(
        rustls::StreamOwned::new(conn, tcp),
        &format!("wss://localhost:{}/", addr.port()),
        None,
    )
}

/// The WebSocket handshake over `stream`, then a first ping, whose answer the welcome
/// precedes (the server never speaks first), read and dropped.
fn upgrade<S: Read + Write>(stream: S, url: &str, extensions: Option<&str>) -> WebSocket<S> {
    let mut req = url.into_client_request().unwrap();
    if let Some(e) = extensions {
        req.headers_mut()
            .insert("Sec-WebSocket-Extensions", e.parse().unwrap());
    }
    req.headers_mut()
        .insert("Authorization", format!("Key {KEY}").parse().unwrap());
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "hydrogen-protocol".parse().unwrap(),
    );
    let (mut ws, _) = tungstenite::client(req, stream).expect("handshake");
    // The round trips must not count the welcome.
    ws.send(Message::Text(
        r#"{"type":"command","id":"hello","channel":"system","action":"ping"}"#.into(),
    ))
    .expect("hello");
    match ws.read().expect("welcome") {
        Message::Text(t) => assert!(t.as_str().contains("\"welcome\""), "{t}"),
        other => panic!("expected the welcome event, got {other:?}"),
    }
    let _pong = ws.read().expect("hello answered");
    ws
}

fn ping<S: Read + Write>(ws: &mut WebSocket<S>, id: u64) {
    let text = format!(r#"{{"type":"command","id":"{id}","channel":"system","action":"ping"}}"#);
    ws.send(Message::Text(text.into())).unwrap();
    loop {
        if let Message::Text(_) = ws.read().unwrap() {
            return;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// The raw TCP echo server of the baseline, run as its own process (`bench --tcp-echo`) so
/// that it is scheduled like the server under test: prints its port, echoes 64-byte blocks
/// on one connection until EOF.
fn run_tcp_echo() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

/// A certificate for `localhost` generated for this run, its PEM files, and a client config
/// that trusts it.
struct TlsMaterial {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client: Arc<rustls::ClientConfig>,
}

fn tls_material() -> TlsMaterial {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir();
    let cert = dir.join(format!("hws-bench-{}-cert.pem", std::process::id()));
    let key = dir.join(format!("hws-bench-{}-key.pem", std::process::id()));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsMaterial {
        cert,
        key,
        client: Arc::new(client),
    }
}

/// Round trips, sorted (µs), of the four targets measured in turn, sample by sample.
struct RoundTrips {
    tcp: Vec<f64>,
    ws: Vec<f64>,
    ws_limited: Vec<f64>,
    wss: Vec<f64>,
}

/// The TCP floor, a ws server, a ws server whose rate limiter is on (but never limits), and
/// a wss server, all pinned to SERVER_CPU, measured from a client thread on CLIENT_CPU with
/// samples interleaved so that noise hits every target alike.
fn round_trip_matrix(tls: &TlsMaterial) -> RoundTrips {
    let me = std::env::current_exe().unwrap();
    let mut echo = pinned(me.to_str().unwrap(), Some(SERVER_CPU))
        .arg("--tcp-echo")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(echo.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{}", port.trim())).unwrap();
    tcp.set_nodelay(true).unwrap();
    let plain = ServerProc::start_on(Some(SERVER_CPU));
    let limited = ServerProc::start_with(
        Some(SERVER_CPU),
        json!({"RateLimit": {"MessagesPerSecond": 1_000_000, "Burst": 1_000_000, "HandshakesPerMinutePerIp": 0}}),
    );
    let secure = ServerProc::start_with(
        Some(SERVER_CPU),
        json!({"SecureMode": "tls", "CertificatePath": tls.cert, "KeyPath": tls.key}),
    );
    pin_this_thread(CLIENT_CPU);
    let (mut ws, mut ws_limited, mut wss) = (
        connect(plain.addr),
        connect(limited.addr),
        connect_tls(secure.addr, &tls.client),
    );
    let mut out = RoundTrips {
        tcp: Vec::new(),
        ws: Vec::new(),
        ws_limited: Vec::new(),
        wss: Vec::new(),
    };
    let mut buf = [7u8; 64];
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e6
    };
    for i in 0..(PING_SAMPLES + 500) as u64 {
        let a = time(&mut || {
            tcp.write_all(&buf).unwrap();
            tcp.read_exact(&mut buf).unwrap();
        });
        let b = time(&mut || ping(&mut ws, i));
        let c = time(&mut || ping(&mut ws_limited, i));
        let d = time(&mut || ping(&mut wss, i));
        if i >= 500 {
            out.tcp.push(a);
            out.ws.push(b);
            out.ws_limited.push(c);
            out.wss.push(d);
        }
    }
    unpin_this_thread();
    drop(tcp);
    echo.wait().unwrap();
    for s in [plain, limited, secure] {
        s.stop();
    }
    for v in [&mut out.tcp, &mut out.ws, &mut out.ws_limited, &mut out.wss] {
        v.sort_by(f64::total_cmp);
    }
    out
}

/// Sequential handshakes per second (connect, welcome, close) against ws and wss servers.
fn handshakes_per_second(tls: &TlsMaterial) -> (f64, f64) {
    let plain = ServerProc::start();
    let secure = ServerProc::start_with(
        None,
        json!({"SecureMode": "tls", "CertificatePath": tls.cert, "KeyPath": tls.key}),
    );
    let count = |f: &mut dyn FnMut()| {
        let end = Instant::now() + Duration::from_secs(2);
        let mut n = 0u32;
        while Instant::now() < end {
            f();
            n += 1;
        }
        f64::from(n) / 2.0
    };
    let ws = count(&mut || drop(connect(plain.addr)));
    let wss = count(&mut || drop(connect_tls(secure.addr, &tls.client)));
    plain.stop();
    secure.stop();
    (ws, wss)
}

fn throughput(addr: SocketAddr) -> f64 {
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(THROUGHPUT_SECS);
    let workers: Vec<_> = (0..THROUGHPUT_CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ws = connect(addr);
                while Instant::now() < start {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let mut n = 0u64;
                while Instant::now() < end {
                    ping(&mut ws, n);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    total as f64 / THROUGHPUT_SECS as f64
}

/// Opens `n` authenticated connections, each confirmed with a ping.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<Ws> {
    (0..n)
        .map(|i| {
            let mut ws = connect(addr);
            ping(&mut ws, i as u64);
            ws
        })
        .collect()
}

/// Waits up to `timeout_ms` for any of `clients` to be readable; one pollfd per client.
fn poll_readable(clients: &[Ws], timeout_ms: i32) -> Vec<libc::pollfd> {
    let mut fds: Vec<libc::pollfd> = clients
        .iter()
        .map(|c| libc::pollfd {
            fd: c.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: fds is a valid array of pollfd of the given length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    fds
}

/// Answers the server's close frames on all `clients` from one thread (poll over all
/// sockets), like well-behaved clients would. Returns when every socket is closed.
fn answer_closes(mut clients: Vec<Ws>) -> std::thread::JoinHandle<usize> {
    for c in &clients {
        c.get_ref().set_nonblocking(true).unwrap();
    }
    std::thread::spawn(move || {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut closed = 0;
        while !clients.is_empty() && Instant::now() < deadline {
            let fds = poll_readable(&clients, 100);
            let mut keep = Vec::with_capacity(clients.len());
            for (mut c, p) in clients.into_iter().zip(fds) {
                if p.revents == 0 {
                    keep.push(c);
                    continue;
                }
                let done = loop {
                    match c.read() {
                        Ok(Message::Close(_)) => {
                            let _ = c.flush();
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if e.kind() == std::io::ErrorKind::WouldBlock =>
                        {
                            break false;
                        }
                        Err(_) => break true,
                    }
                };
                if done {
                    closed += 1;
                } else {
                    keep.push(c);
                }
            }
            clients = keep;
        }
        closed
    })
}

fn shutdown_ms(clients: usize) -> f64 {
    let runs: Vec<f64> = (0..SHUTDOWN_RUNS)
        .map(|_| {
            let server = ServerProc::start();
            let mut conns = open_idle(server.addr, clients);
            let per = clients.div_ceil(CLOSER_THREADS);
            let mut closers = Vec::new();
            while !conns.is_empty() {
                let rest = conns.split_off(conns.len().saturating_sub(per));
                closers.push(answer_closes(rest));
            }
            let ms = server.stop();
            let closed: usize = closers.into_iter().map(|c| c.join().unwrap()).sum();
            assert_eq!(closed, clients, "every client saw its connection closed");
            ms
        })
        .collect();
    median(runs)
}

/// Microseconds since the bench started (one clock for publisher and subscribers).
/// Every fan-out row on our server and on the baseline, one after the other.
fn fanout_rows(only: Option<usize>) -> Vec<fanout::Measured> {
    fanout::ROWS
        .iter()
        .filter(|(subs, _)| only.is_none_or(|n| n == *subs))
        .map(|&(subs, rate)| {
            let mut ours = ServerProc::start();
            let target = fanout::Target {
                child: Some(ours.child.take()),
                addr: ours.addr,
                key: Some(KEY.to_string()),
                publisher: None,
            };
            let mine = fanout::run(&target, subs, rate);
            stop_child(target.child);
            let (server, in_process) = fanout::Target::in_process(KEY);
            let library = fanout::run(&in_process, subs, rate);
            drop(in_process);
            server.shutdown();
            let base = fanout::Target::baseline();
            let theirs = fanout::run(&base, subs, rate);
            stop_child(base.child);
            ((subs, rate), mine, library, theirs)
        })
        .collect()
}

/// SIGKILL and reap (the fan-out rows do not measure shutdown).
fn stop_child(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--tcp-echo") {
        return run_tcp_echo();
    }
    if std::env::args().any(|a| a == "--throughput-only") {
        let server = ServerProc::start();
        println!("throughput: {:.0} msg/s", throughput(server.addr));
        server.stop();
        return;
    }
    if std::env::args().any(|a| a == "--rtt-only") {
        let t = round_trip_matrix(&tls_material());
        let m = |v: &Vec<f64>| percentile(v, 0.5);
        println!(
            "p50 µs: tcp {:.1}, ws {:.1}, ws+limiter {:.1}, wss {:.1}; ws/tcp {:.2}, limiter {:.3}, wss/ws {:.2}",
            m(&t.tcp),
            m(&t.ws),
            m(&t.ws_limited),
            m(&t.wss),
            m(&t.ws) / m(&t.tcp),
            m(&t.ws_limited) / m(&t.ws),
            m(&t.wss) / m(&t.ws)
        );
        return;
    }
    if std::env::args().any(|a| a == "--fanout-only") {
        // `--fanout-only [N]`: one row of N subscribers, or all of them.
        let only: Option<usize> = std::env::args()
            .skip_while(|a| a != "--fanout-only")
            .nth(1)
            .and_then(|n| n.parse().ok());
        fanout::print_rows(&fanout_rows(only));
        return;
    }
    if std::env::args().any(|a| a == "--client-only") {
        let c = client_rows::measure();
        println!(
            "client request p50/p99 {:.1}/{:.1} µs, raw {:.1}/{:.1} µs, ratio {:.2}; link cut → resumed {:.1} ms; restart → re-subscribed {:.1} ms",
            c.lib_p50_us,
            c.lib_p99_us,
            c.raw_p50_us,
            c.raw_p99_us,
            c.lib_p50_us / c.raw_p50_us,
            c.cut_ms,
            c.restart_ms
        );
        return;
    }
    if std::env::args().any(|a| a == "--compression-only") {
        let (off, on) = compression::cpu_per_delivery(20, 1000);
        let (cmd_off, cmd_on) = compression::cpu_per_command(1000, 2000);
        println!(
            "CPU per delivery off/on {off:.1}/{on:.1} µs; per 1 KB command off/on {cmd_off:.1}/{cmd_on:.1} µs"
        );
        return;
    }
    if std::env::args().any(|a| a == "--mqtt-only") {
        mqtt_rows::print_rows(&mqtt_rows::rows());
        return;
    }
    if std::env::args().any(|a| a == "--shutdown-only") {
        println!("shutdown 1000: {:.1} ms", shutdown_ms(1000));
        return;
    }
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    eprintln!("measuring (about a minute)...");

    // Round trips: the client on one CPU, the echo and the server both on the other, so that
    // both take the same (cross-CPU) path; left to the scheduler, a process woken on the
    // client's own CPU skips an inter-processor wake-up and the floor moves 4x between runs.
    let tls = tls_material();
    let trips = round_trip_matrix(&tls);
    let (tcp, rtt) = (&trips.tcp, &trips.ws);
    let (hs_ws, hs_wss) = handshakes_per_second(&tls);
    let server = ServerProc::start();
    let msgs = throughput(server.addr);
    let stop_small = server.stop();

    let server = ServerProc::start();
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = server.rss_kib();
    let idle100 = open_idle(server.addr, 100);
    std::thread::sleep(Duration::from_millis(200));
    let rss100 = server.rss_kib();
    let cpu0 = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(IDLE_CPU_SECS));
    let cpu_ticks = server.cpu_ticks() - cpu0;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let idle_cpu_pct = cpu_ticks as f64 / hz / IDLE_CPU_SECS as f64 * 100.0;
    let idle900 = open_idle(server.addr, 900);
    std::thread::sleep(Duration::from_millis(300));
    let rss1000 = server.rss_kib();
    let threads1000 = server.proc_field("Threads:");
    drop(idle100);
    drop(idle900);
    server.stop();
    // The same idle connections with permessage-deflate negotiated (as browsers offer it).
    let server = ServerProc::start();
    std::thread::sleep(Duration::from_millis(200));
    let rss_plain0 = server.rss_kib();
    let deflated: Vec<Ws> = (0..500)
        .map(|i| {
            let mut ws = connect_offering(
                server.addr,
                Some("permessage-deflate; client_max_window_bits"),
            );
            ping(&mut ws, i);
            ws
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let rss_deflate = server.rss_kib();
    drop(deflated);
    server.stop();
    let wire = compression::wire_rows();
    let (cpu_off, cpu_on) = compression::cpu_per_delivery(20, 1000);
    let (cmd_off, cmd_on) = compression::cpu_per_command(1000, 2000);

    let fan_rows = fanout_rows(None);
    let shut100 = shutdown_ms(100);
    let shut1000 = shutdown_ms(1000);
    let client = client_rows::measure();
    let mqtt = mqtt_rows::rows();

    let (p50, p99) = (percentile(rtt, 0.5), percentile(rtt, 0.99));
    let (t50, t99) = (percentile(tcp, 0.5), percentile(tcp, 0.99));
    let (l50, s50, s99) = (
        percentile(&trips.ws_limited, 0.5),
        percentile(&trips.wss, 0.5),
        percentile(&trips.wss, 0.99),
    );
    println!("hydrogen-ws bench, {date}, {cpus} CPUs, release build, loopback\n");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| raw TCP echo round trip (64 B, paired), p50 / p99 | {t50:.1} / {t99:.1} µs | (floor) |"
    );
    println!("| `system/ping` round trip, 1 client, p50 / p99 | {p50:.1} / {p99:.1} µs | |");
    println!("| ping p50 ÷ raw TCP p50 | {:.2}× | ≤ 3× |", p50 / t50);
    println!(
        "| ping p50 with the rate limiter on ÷ off | {:.3}× ({l50:.1} µs) | < 1.05× |",
        l50 / p50
    );
    println!(
        "| wss `system/ping` round trip, p50 / p99 | {s50:.1} / {s99:.1} µs ({:.2}× ws) | |",
        s50 / p50
    );
    println!("| handshakes/s, sequential, ws / wss | {hs_ws:.0} / {hs_wss:.0} | |");
    println!(
        "| `system/ping` throughput, {THROUGHPUT_CLIENTS} clients (closed loop) | {msgs:.0} msg/s | |"
    );
    println!("| shutdown (SIGTERM → exit), 1 client, one run | {stop_small:.1} ms | |");
    println!("| shutdown, 100 clients, median of {SHUTDOWN_RUNS} | {shut100:.1} ms | |");
    println!("| shutdown, 1000 clients, median of {SHUTDOWN_RUNS} | {shut1000:.1} ms | < 100 ms |");
    println!("| RSS, 0 / 100 / 1000 idle connections | {rss0} / {rss100} / {rss1000} KiB | |");
    println!(
        "| RSS per idle connection (1000 − 0) / 1000 | {:.1} KiB | < 64 KiB |",
        (rss1000 - rss0) as f64 / 1000.0
    );
    println!("| threads with 1000 connections | {threads1000} | |");
    println!(
        "| CPU, 100 idle connections over {IDLE_CPU_SECS} s | {idle_cpu_pct:.2} % ({cpu_ticks} ticks) | < 1 % |"
    );
    println!(
        "| client library `request(system/ping)` p50 / p99 (raw tungstenite client: {:.1} / {:.1} µs) | {:.1} / {:.1} µs ({:.2}× raw) | ≤ 1.5× |",
        client.raw_p50_us,
        client.raw_p99_us,
        client.lib_p50_us,
        client.lib_p99_us,
        client.lib_p50_us / client.raw_p50_us
    );
    println!(
        "| client reconnect, link cut → session resumed, median (initial_delay {} ms) | {:.1} ms | |",
        client.initial_delay_ms, client.cut_ms
    );
    println!(
        "| client reconnect, restarted server listening → re-subscribed, median | {:.1} ms | |",
        client.restart_ms
    );
    fanout::print_rows(&fan_rows);
    println!(
        "\n| permessage-deflate (our client library; level 1, MinSize 256) | off | on (defaults: no context takeover) | on, ContextTakeover both sides |"
    );
    println!("|---|---|---|---|");
    let less = |x: u64, of: u64| 100.0 * (1.0 - x as f64 / of as f64);
    for r in &wire {
        println!(
            "| bytes to the client: {} | {} | {} ({:.0} % less) | {} ({:.0} % less) |",
            r.what,
            r.off,
            r.on,
            less(r.on, r.off),
            r.takeover,
            less(r.takeover, r.off)
        );
    }
    println!(
        "| CPU per delivered progress event, 20 subscribers (server + clients) | {cpu_off:.1} µs | {cpu_on:.1} µs (+{:.1} µs) | |",
        cpu_on - cpu_off
    );
    println!(
        "| CPU per command with 1 KB of data, round trip (client deflates, server inflates) | {cmd_off:.1} µs | {cmd_on:.1} µs (+{:.1} µs) | |",
        cmd_on - cmd_off
    );
    println!(
        "| RSS per idle connection, 500 connections that negotiated it (24–29 KiB without) | — | {:.1} KiB | |",
        (rss_deflate - rss_plain0) as f64 / 500.0
    );
    mqtt_rows::print_rows(&mqtt);
}
