//! A real MQTT broker for the bridge's tests: Debian's Mosquitto on a free loopback port
//! (persistence in a temp directory, so a stop and restart keeps durable sessions, and QoS 0
//! messages queued for a durable subscriber that has not reconnected yet: whether the
//! bridge or the subscriber comes back first after a restart is a race), the
//! paho-mqtt subscriber of tests/clients/mqtt_sub.py, and `mosquitto_pub`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use serde_json::Value;

use super::WAIT;

/// A Mosquitto process; stopped (killed) when dropped.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Configuration after the plain anonymous listener (another listener, say).
    extra: String,
}

impl Broker {
    /// Starts Mosquitto on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Broker {
        let mut broker = Broker::reserve();
        broker.run();
        broker
    }

    /// A broker not running yet, with its port chosen (for a server started before it).
    pub fn reserve() -> Broker {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hws-mosquitto-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Broker {
            port,
            dir,
            child: None,
            extra: String::new(),
        }
    }

    /// A broker with a second listener on 127.0.0.1 for `mqtts://` (the self-signed
    /// certificate `cert_pem` and its key) that admits only `user` with `password`; the
    /// plain listener stays anonymous (for the test's subscribers). Returns it and the
    /// second listener's port.
    pub fn start_secure(
        cert_pem: &str,
        key_pem: &str,
        user: &str,
        password: &str,
    ) -> (Broker, u16) {
        let mut broker = Broker::reserve();
        let tls_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = |name: &str, body: &str| {
            let path = broker.dir.join(name);
            std::fs::write(&path, body).unwrap();
            path.display().to_string()
        };
        let (cert, key, passwords) = (
            file("cert.pem", cert_pem),
            file("key.pem", key_pem),
            file("passwd", ""),
        );
        let made = Command::new("mosquitto_passwd")
            .args(["-b", &passwords, user, password])
            .status()
            .unwrap();
        assert!(made.success(), "mosquitto_passwd failed");
        broker.extra = format!(
            "listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\nallow_anonymous false\npassword_file {passwords}\n"
        );
        broker.run();
        (broker, tls_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its port and waits until it accepts connections.
    pub fn run(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let body = format!(
            "per_listener_settings true\npersistence true\npersistence_location {}/\nuser root\nlog_dest none\nqueue_qos0_messages true\n\
             listener {} 127.0.0.1\nallow_anonymous true\n{}",
            self.dir.display(),
            self.port,
            self.extra
        );
        std::fs::write(&conf, body).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (Debian's mosquitto package; `make test` installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistent sessions) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A paho-mqtt subscriber process and the messages it printed.
pub struct Subscriber {
    child: Child,
    _stdin: ChildStdin,
    rx: Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Subscriber {
    /// Subscribes to `topic` (QoS 1) as `client_id`; `clean` false keeps a durable session.
    /// Returns once the broker has acknowledged the subscription.
    pub fn start(broker: &Broker, topic: &str, client_id: &str, clean: bool) -> Subscriber {
        let python = std::env::var("HWS_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_sub.py");
        let mut child = Command::new(python)
            .args([
                script,
                "127.0.0.1",
                &broker.port.to_string(),
                topic,
                client_id,
            ])
            .arg(if clean { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut sub = Subscriber {
            child,
            _stdin: stdin,
            rx,
            seen: Vec::new(),
        };
        sub.wait_ready();
        sub
    }

    /// Waits for the next `{"ready": true}` (a (re)subscription acknowledged).
    pub fn wait_ready(&mut self) {
        self.next(|v| v["ready"] == true);
    }

    /// The next line matching `pred` (lines before it are kept in `seen`).
    pub fn next(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        self.next_within(WAIT, pred)
            .unwrap_or_else(|| panic!("no matching MQTT message; seen: {:#?}", self.seen))
    }

    /// The next line matching `pred` within `wait`, or `None`.
    pub fn next_within(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.rx.recv_timeout(left).ok()?;
            self.seen.push(v.clone());
            if pred(&v) {
                return Some(v);
            }
        }
    }

    /// The next message on `topic`, its payload parsed as JSON.
    pub fn message_on(&mut self, topic: &str) -> (Value, Value) {
        let m = self.next(|v| v["topic"] == topic);
        let payload = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
        (m, payload)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `payload` to `topic` at QoS 1 with `mosquitto_pub`.
pub fn publish(broker: &Broker, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
        .expect("mosquitto_pub runs (Debian's mosquitto-clients; `make test` installs it)");
    assert!(status.success(), "mosquitto_pub failed");
}
