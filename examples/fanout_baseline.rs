//! The fan-out baseline of `make bench`: a plain tungstenite broadcast server, thread per
//! connection as people write it first — a reader and a writer thread per client, joined by
//! a crossbeam channel. It speaks just enough of our protocol for the bench's load client:
//! a `system/subscribe` command makes the connection a subscriber (answered with a
//! response); a `system/publish` command is turned into an event (serialised once) and sent
//! to every subscriber. No auth, sessions, seq, replay or backpressure policy: the floor of
//! the thread-per-connection design, not a server to deploy.
//!
//! Prints `listening on ADDR` on stdout (127.0.0.1, port 0); runs until killed.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, unbounded};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

/// Stack of each reader and writer thread (explicit, as in the server under test).
const STACK: usize = 256 * 1024;

type Subscribers = Arc<Mutex<Vec<Sender<Arc<str>>>>>;

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    println!("listening on {}", listener.local_addr().unwrap());
    let subscribers: Subscribers = Arc::default();
    for tcp in listener.incoming().flatten() {
        let subscribers = subscribers.clone();
        let _ = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || serve(tcp, subscribers));
    }
}

/// Echoes the subprotocol the client offers, as our server does.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
fn accept(tcp: TcpStream) -> Option<WebSocket<TcpStream>> {
    let callback = |req: &Request, mut resp: Response| {
        if let Some(p) = req.headers().get("Sec-WebSocket-Protocol") {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.clone());
        }
        Ok(resp)
    };
    tungstenite::accept_hdr(tcp, callback).ok()
}

fn serve(tcp: TcpStream, subscribers: Subscribers) {
    let _ = tcp.set_nodelay(true);
    let Ok(write_half) = tcp.try_clone() else {
        return;
    };
    let Some(mut reader) = accept(tcp) else {
        return;
    };
    let (tx, rx) = unbounded::<Arc<str>>();
    let writer = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            write_loop(
                WebSocket::from_raw_socket(write_half, Role::Server, None),
                rx,
            )
        });
    if writer.is_err() {
        return;
    }
    while let Ok(msg) = reader.read() {
        let Message::Text(text) = msg else { continue };
        let Ok(cmd) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match cmd["action"].as_str() {
            Some("subscribe") => {
                subscribers.lock().push(tx.clone());
                let response = json!({"type": "response", "id": cmd["id"], "status": "ok"});
                let _ = tx.send(response.to_string().into());
            }
            Some("publish") => {
                let d = &cmd["data"];
                let event = json!({"type": "event", "channel": d["channel"], "action": d["action"],
                    "data": d["data"]});
                let text: Arc<str> = event.to_string().into();
                subscribers.lock().retain(|s| s.send(text.clone()).is_ok());
            }
            _ => {}
        }
    }
}

/// Writes what the channel brings; everything already queued goes out with one flush.
fn write_loop(mut ws: WebSocket<TcpStream>, rx: Receiver<Arc<str>>) {
    while let Ok(text) = rx.recv() {
        if ws.write(Message::Text((*text).into())).is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if ws.write(Message::Text((*more).into())).is_err() {
                return;
            }
        }
        if ws.flush().is_err() {
            return;
        }
    }
}
