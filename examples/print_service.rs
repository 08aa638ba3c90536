//! A printer controller as its own process: it connects to hydrogen-ws with a `service` key,
//! registers the `print` channel, answers `print/start`, `print/pause`, `print/resume` and
//! `print/status`, and publishes progress and temperature events (and a reliable
//! `print/done`) while a job runs.
//!
//! ```text
//! HYDROGEN_URL=ws://127.0.0.1:5001 HYDROGEN_SERVICE_KEY=... cargo run --example print_service
//! ```
//!
//! It uses tungstenite directly and polls its socket with a short read timeout to drive the
//! simulated printer; a real controller would use the crate's client library.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// How often the simulated printer advances and publishes.
const TICK: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Printer {
    file: Option<String>,
    percent: u32,
    paused: bool,
    nozzle_c: f64,
}

impl Printer {
    /// Answers one command: `Ok(data)` or `Err((code, message))`.
    fn handle(&mut self, action: &str, data: &Value) -> Result<Value, (&'static str, String)> {
        match action {
            "start" => {
                let file = data["file"].as_str().ok_or((
                    "invalid_message",
                    "print/start needs {\"file\"}".to_string(),
                ))?;
                if self.file.is_some() && self.percent < 100 {
                    return Err(("invalid_message", "already printing".into()));
                }
                *self = Printer {
                    file: Some(file.to_string()),
                    nozzle_c: 25.0,
                    ..Default::default()
                };
                Ok(json!({"started": file}))
            }
            "pause" | "resume" => {
                if self.file.is_none() {
                    return Err(("invalid_message", "nothing is printing".into()));
                }
                self.paused = action == "pause";
                Ok(json!({"paused": self.paused}))
            }
            "status" => {
                Ok(json!({"file": self.file, "percent": self.percent, "paused": self.paused}))
            }
            other => Err(("unknown_action", format!("print has no action {other}"))),
        }
    }

    /// Advances the job one tick; returns the events to publish.
    fn tick(&mut self) -> Vec<Value> {
        let Some(file) = self.file.clone() else {
            return Vec::new();
        };
        if self.paused || self.percent >= 100 {
            return Vec::new();
        }
        self.percent += 10;
        self.nozzle_c = (self.nozzle_c + 40.0).min(210.0);
        let mut out = vec![
            json!({"channel": "print", "action": "progress", "data": {"file": file, "percent": self.percent}}),
            json!({"channel": "print", "action": "temperature", "data": {"nozzle_c": self.nozzle_c}, "priority": "low"}),
        ];
        if self.percent == 100 {
            out.push(json!({"channel": "print", "action": "done", "data": {"file": file}, "reliable": true, "priority": "high"}));
        }
        out
    }
}

fn send(ws: &mut WebSocket<TcpStream>, v: Value) -> tungstenite::Result<()> {
    ws.send(Message::Text(v.to_string().into()))
}

/// Runs the controller until `stop` is set or the server closes the connection.
pub fn run(url: &str, key: &str, stop: &AtomicBool) -> Result<(), Box<dyn std::error::Error>> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("Key {key}").parse()?);
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "hydrogen-protocol".parse()?);
    let host = req.uri().host().ok_or("URL without host")?.to_string();
    let port = req.uri().port_u16().unwrap_or(5001);
    let tcp = TcpStream::connect((host.as_str(), port))?;
    tcp.set_read_timeout(Some(TICK))?;
    let (mut ws, _) = tungstenite::client(req, tcp)?;
    send(
        &mut ws,
        json!({"type": "command", "id": "reg", "channel": "system", "action": "register", "data": {"channels": ["print"]}}),
    )?;
    let mut printer = Printer::default();
    let mut next_tick = Instant::now() + TICK;
    let mut published = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let msg: Value = serde_json::from_str(text.as_str())?;
                if msg["type"] == "command" {
                    let reply = match printer
                        .handle(msg["action"].as_str().unwrap_or(""), &msg["data"])
                    {
                        Ok(data) => {
                            json!({"type": "response", "id": msg["id"], "status": "ok", "data": data})
                        }
                        Err((code, message)) => {
                            json!({"type": "response", "id": msg["id"], "status": "error", "error": {"code": code, "message": message}})
                        }
                    };
                    send(&mut ws, reply)?;
                } else if msg["type"] == "response" && msg["status"] == "error" {
                    eprintln!(
                        "print_service: the server refused {}: {}",
                        msg["id"], msg["error"]
                    );
                }
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= next_tick {
            next_tick += TICK;
            for event in printer.tick() {
                published += 1;
                send(
                    &mut ws,
                    json!({"type": "command", "id": format!("pub-{published}"), "channel": "system", "action": "publish", "data": event}),
                )?;
            }
        }
    }
    let _ = ws.close(None);
    Ok(())
}

#[allow(dead_code)] // the tests include this file as a module and call `run`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HYDROGEN_URL").unwrap_or_else(|_| "ws://127.0.0.1:5001/".into());
    let key = std::env::var("HYDROGEN_SERVICE_KEY")
        .map_err(|_| "set HYDROGEN_SERVICE_KEY (a key with role service)")?;
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))?;
    run(&url, &key, &STOP)
}
