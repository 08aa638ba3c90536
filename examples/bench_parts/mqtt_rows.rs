//! The MQTT bridge rows of `make bench`: events per second the bridge carries to a real
//! Mosquitto (Debian's, on a free loopback port) at QoS 0 and 1, and the latency from the
//! publish to a subscriber of the broker. The baseline, measured in the same run, is the same
//! load published straight to the broker by a plain MQTT client: the broker's own floor.
//! The subscriber and the baseline publisher are minimal clients on the `mqtt-protocol` codec.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqtt::control::FixedHeader;
use mqtt::packet::{
    ConnectPacket, PubackPacket, PublishPacket, QoSWithPacketIdentifier, SubscribePacket,
    VariablePacket,
};
use mqtt::{Decodable, Encodable, QualityOfService, TopicFilter, TopicName};
use serde_json::{Value, json};
use tungstenite::Message;

use super::{STEP_TIMEOUT, ServerProc, Ws, connect, percentile};

/// Events of the throughput phase, per QoS.
const THROUGHPUT_EVENTS: usize = 20_000;
/// Events of the latency phase, one every `LATENCY_GAP`.
const LATENCY_EVENTS: usize = 400;
const LATENCY_GAP: Duration = Duration::from_millis(5);
/// A subscriber that gets nothing for this long has all it will get.
const QUIET: Duration = Duration::from_secs(3);

/// One QoS's figures: through the bridge and straight to the broker.
pub struct Row {
    pub qos: u8,
    pub bridge_per_s: f64,
    pub direct_per_s: f64,
    pub bridge_p50_ms: f64,
    pub bridge_p99_ms: f64,
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    /// Events that never reached the subscriber (both phases).
    pub bridge_lost: usize,
    pub direct_lost: usize,
}

struct Mosquitto(Child, u16);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto() -> Option<Mosquitto> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let conf =
        std::env::temp_dir().join(format!("hws-bench-mosquitto-{}.conf", std::process::id()));
    let body = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\nmax_queued_messages 100000\n"
    );
    std::fs::write(&conf, body).ok()?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let broker = Mosquitto(child, port);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(broker)
}

/// Wall-clock nanoseconds (publisher and subscriber are on this machine).
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A blocking MQTT client: CONNECT/CONNACK, then packets one by one.
struct MqttClient {
    tcp: TcpStream,
    input: Vec<u8>,
}

impl MqttClient {
    fn connect(port: u16, id: &str) -> MqttClient {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        let mut c = MqttClient {
            tcp,
            input: Vec::new(),
        };
        let mut hello = ConnectPacket::new(id);
        hello.set_clean_session(true);
        hello.set_keep_alive(60);
        c.send(&hello);
        assert!(matches!(c.next(), VariablePacket::ConnackPacket(_)));
        c
    }

    fn send(&mut self, packet: &impl Encodable) {
        let mut out = Vec::new();
        packet.encode(&mut out).unwrap();
        self.tcp.write_all(&out).unwrap();
    }

    /// The next packet (blocking, STEP_TIMEOUT).
    fn next(&mut self) -> VariablePacket {
        self.next_within()
            .expect("a broker packet within the step timeout")
    }

    /// The next packet, or `None` when the socket's read timeout passes first.
    fn next_within(&mut self) -> Option<VariablePacket> {
        loop {
            // A PUBLISH decodes from a partial packet too (its payload is "the rest"), so
            // decode only once the fixed header says the whole packet is here.
            if let Ok(header) = FixedHeader::decode(&mut &self.input[..]) {
                let len = header.encoded_length() as usize + header.remaining_length as usize;
                if self.input.len() >= len {
                    let packet = VariablePacket::decode(&mut &self.input[..len]).unwrap();
                    self.input.drain(..len);
                    return Some(packet);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.tcp.read(&mut chunk).ok()?;
            assert!(n > 0, "the broker closed the connection");
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    fn subscribe(&mut self, filter: &str, qos: u8) {
        let qos = if qos == 1 {
            QualityOfService::Level1
        } else {
            QualityOfService::Level0
        };
        self.send(&SubscribePacket::new(
            1,
            vec![(TopicFilter::new(filter).unwrap(), qos)],
        ));
        loop {
            if let VariablePacket::SubackPacket(_) = self.next() {
                return;
            }
        }
    }

    /// Reads up to `count` PUBLISHes (acknowledging QoS 1), stopping after [`QUIET`] without
    /// one: when the last came, and each one's latency in ms from the `t` in its data (fewer
    /// than `count`: the rest were lost).
    fn receive(&mut self, count: usize) -> (Instant, Vec<f64>) {
        let mut latencies = Vec::with_capacity(count);
        let mut last = Instant::now();
        self.tcp.set_read_timeout(Some(QUIET)).unwrap();
        while latencies.len() < count {
            let Some(packet) = self.next_within() else {
                break;
            };
            if let VariablePacket::PublishPacket(p) = packet {
                last = Instant::now();
                if let QoSWithPacketIdentifier::Level1(pid) = p.qos() {
                    self.send(&PubackPacket::new(pid));
                }
                let v: Value = serde_json::from_slice(p.payload()).unwrap_or_default();
                let t = v["data"]["t"]
                    .as_u64()
                    .or_else(|| v["t"].as_u64())
                    .unwrap_or(0);
                latencies.push(now_ns().saturating_sub(t) as f64 / 1e6);
            }
        }
        (last, latencies)
    }
}

/// Publishes events through the bridge (`system/publish` on a WebSocket, 100 at a time).
fn publish_through(ws: &mut Ws, count: usize, gap: Option<Duration>) {
    // Command ids are used once per session: number them across calls.
    static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let batch = if gap.is_some() { 1 } else { 100 };
    let mut sent = 0;
    while sent < count {
        let n = batch.min(count - sent);
        for _ in 0..n {
            let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let cmd = json!({"type": "command", "id": format!("p{id}"), "channel": "system",
                "action": "publish", "data": {"channel": "bench", "action": "tick", "data": {"t": now_ns()}}});
            ws.send(Message::Text(cmd.to_string().into())).unwrap();
        }
        let mut answered = 0;
        while answered < n {
            if let Message::Text(_) = ws.read().unwrap() {
                answered += 1;
            }
        }
        sent += n;
        if let Some(g) = gap {
            std::thread::sleep(g);
        }
    }
}

/// The same load straight to the broker.
fn publish_direct(client: &mut MqttClient, qos: u8, count: usize, gap: Option<Duration>) {
    let topic = TopicName::new("direct/tick").unwrap();
    for i in 0..count {
        let payload = json!({"t": now_ns()}).to_string();
        let q = if qos == 1 {
            QoSWithPacketIdentifier::Level1((i % 60_000 + 1) as u16)
        } else {
            QoSWithPacketIdentifier::Level0
        };
        client.send(&PublishPacket::new(topic.clone(), q, payload));
        if let Some(g) = gap {
            std::thread::sleep(g);
        }
    }
}

/// Runs `publish` on this thread while `sub` receives `count` on another; events per second
/// from the first publish to the last receipt, and the latencies.
/// (Lost events are counted: MQTT lets a broker drop QoS 0 messages for a slow subscriber.)
fn measure(mut sub: MqttClient, count: usize, publish: impl FnOnce()) -> Measured {
    let receiver = std::thread::spawn(move || sub.receive(count));
    let start = Instant::now();
    publish();
    let (last, latencies) = receiver.join().expect("the subscriber thread ends");
    Measured {
        per_s: latencies.len() as f64 / (last - start).as_secs_f64(),
        lost: count - latencies.len(),
        latencies,
    }
}

struct Measured {
    per_s: f64,
    latencies: Vec<f64>,
    lost: usize,
}

/// Acknowledges what the broker sends the direct publisher (its PUBACKs), off the clock.
fn drain_acks(publisher: &MqttClient) -> std::thread::JoinHandle<()> {
    let mut tcp = publisher.tcp.try_clone().unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
    })
}

fn one_qos(broker: &Mosquitto, qos: u8) -> Row {
    let port = broker.1;
    let server = ServerProc::start_with(
        None,
        json!({"Mqtt": {"Url": format!("mqtt://127.0.0.1:{port}"),
        "TopicPrefix": "bench", "Channels": ["bench"], "ClientId": format!("bench-bridge-{}-{qos}", std::process::id()), "Qos": qos, "BufferEvents": 100_000},
        "StatusIntervalMs": 0}),
    );
    let addr: SocketAddr = server.addr;
    let mut ws = connect(addr);
    let mut sub = MqttClient::connect(port, &format!("bench-sub-{qos}"));
    sub.subscribe("bench/events/#", qos);
    // The bridge is connected once a first event arrives.
    let warm = measure(sub, 1, || publish_through(&mut ws, 1, None));
    assert_eq!(warm.lost, 0, "the bridge never connected");
    let fresh = |name: &str| {
        let mut s = MqttClient::connect(port, name);
        s.subscribe("bench/events/#", qos);
        s
    };
    let bridge = measure(fresh("b1"), THROUGHPUT_EVENTS, || {
        publish_through(&mut ws, THROUGHPUT_EVENTS, None)
    });
    let mut bridge_lat = measure(fresh("b2"), LATENCY_EVENTS, || {
        publish_through(&mut ws, LATENCY_EVENTS, Some(LATENCY_GAP))
    });
    drop(ws);
    server.stop();
    let mut direct = MqttClient::connect(port, &format!("bench-direct-{qos}"));
    let acks = drain_acks(&direct);
    let direct_sub = |name: &str| {
        let mut s = MqttClient::connect(port, name);
        s.subscribe("direct/#", qos);
        s
    };
    let direct_run = measure(direct_sub("d1"), THROUGHPUT_EVENTS, || {
        publish_direct(&mut direct, qos, THROUGHPUT_EVENTS, None)
    });
    let mut direct_lat = measure(direct_sub("d2"), LATENCY_EVENTS, || {
        publish_direct(&mut direct, qos, LATENCY_EVENTS, Some(LATENCY_GAP))
    });
    drop(direct);
    let _ = acks.join();
    bridge_lat.latencies.sort_by(f64::total_cmp);
    direct_lat.latencies.sort_by(f64::total_cmp);
    Row {
        qos,
        bridge_per_s: bridge.per_s,
        direct_per_s: direct_run.per_s,
        bridge_p50_ms: percentile(&bridge_lat.latencies, 0.5),
        bridge_p99_ms: percentile(&bridge_lat.latencies, 0.99),
        direct_p50_ms: percentile(&direct_lat.latencies, 0.5),
        direct_p99_ms: percentile(&direct_lat.latencies, 0.99),
        bridge_lost: bridge.lost + bridge_lat.lost,
        direct_lost: direct_run.lost + direct_lat.lost,
    }
}

/// Both QoS rows; `None` when Mosquitto is not installed (`make test` installs it).
pub fn rows() -> Option<Vec<Row>> {
    let broker = mosquitto()?;
    Some(vec![one_qos(&broker, 0), one_qos(&broker, 1)])
}

pub fn print_rows(rows: &Option<Vec<Row>>) {
    let Some(rows) = rows else {
        println!(
            "\nMQTT bridge rows skipped: mosquitto is not installed (apt-get install mosquitto)."
        );
        return;
    };
    println!(
        "\n| MQTT bridge → Mosquitto ({THROUGHPUT_EVENTS} events; latency: {LATENCY_EVENTS} events, one per {} ms) | through the bridge | straight to the broker (baseline) | ratio |",
        LATENCY_GAP.as_millis()
    );
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| QoS {}: events/s to a subscriber (lost) | {:.0} ({}) | {:.0} ({}) | {:.2}× |",
            r.qos,
            r.bridge_per_s,
            r.bridge_lost,
            r.direct_per_s,
            r.direct_lost,
            r.bridge_per_s / r.direct_per_s
        );
        println!(
            "| QoS {}: publish → subscriber latency, p50 / p99 | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2}× (p50) |",
            r.qos,
            r.bridge_p50_ms,
            r.bridge_p99_ms,
            r.direct_p50_ms,
            r.direct_p99_ms,
            r.bridge_p50_ms / r.direct_p50_ms
        );
    }
}
