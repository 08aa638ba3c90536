//! The client lifecycle of `websocket_demo.c`, with the crate's client library: create a
//! config, set callbacks, connect, request the server's status, subscribe to a channel and read
//! a few events, disconnect, destroy (drop).
//!
//! ```text
//! make run    # in another terminal; it prints where the API key is
//! HYDROGEN_URL=ws://127.0.0.1:5001/ HYDROGEN_API_KEY=... cargo run --example client_demo
//! ```
//!
//! With `print_service` running as well, the `print` events it publishes show up here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hydrogen_ws::Error;
use hydrogen_ws::client::{Callbacks, Client, ClientConfig, Credentials, Delivery};
use serde_json::{Value, json};

/// What one run of the demo saw.
#[derive(Debug)]
pub struct DemoReport {
    pub status: Value,
    pub events: Vec<Value>,
    pub messages_seen: usize,
    pub connects: usize,
}

/// Runs the demo against `url` with API key `key`, reading up to `max_events` events on
/// `channel` (waiting at most `wait` for each).
pub fn demo(
    url: &str,
    key: &str,
    channel: &str,
    max_events: usize,
    wait: Duration,
) -> Result<DemoReport, Error> {
    // 1. Configuration (hl_ws_config_default).
    let mut config = ClientConfig::new(url).with_credentials(Credentials::key(key));
    config.heartbeat_interval = Duration::from_secs(10);

    // 2. Callbacks, each with its own state (hl_ws_client_set_*_callback).
    let messages = Arc::new(AtomicUsize::new(0));
    let connects = Arc::new(AtomicUsize::new(0));
    let (m, c) = (messages.clone(), connects.clone());
    let callbacks = Callbacks::new()
        .on_connect(move |info| {
            c.fetch_add(1, Ordering::SeqCst);
            println!(
                "connected: session {:?}, role {:?}",
                info.session_id, info.role
            );
        })
        .on_message(move |_msg| {
            m.fetch_add(1, Ordering::SeqCst);
        })
        .on_error(|e| eprintln!("error: {e}"))
        .on_disconnect(|d| println!("disconnected: {} {}", d.code, d.reason))
        .on_reconnect(|r| println!("reconnected: resumed {}", r.resumed));

    // 3. Connect (hl_ws_client_create + hl_ws_client_connect).
    let client = Client::connect_with(config, callbacks)?;

    // 4. A request, correlated by id.
    let status = client.request("system", "status", json!({}), Duration::from_secs(5))?;
    println!(
        "server: {} active connections, {} threads",
        status["active_connections"], status["status"]["totalThreads"]
    );

    // 5. A subscription and its queue.
    let sub = client.subscribe(channel)?;
    let mut events = Vec::new();
    while events.len() < max_events {
        match sub.recv_timeout(wait) {
            Some(Delivery::Event(e)) => {
                println!("{} {} {}", e.channel, e.action, e.data);
                events.push(e.data);
            }
            Some(Delivery::Gap { channel, reason }) => {
                println!("gap on {channel} ({reason:?}): re-read the state")
            }
            None => break,
        }
    }
    client.unsubscribe(sub.id())?;

    // 6. Disconnect (close handshake), then destroy: dropping joins the client's threads.
    client.disconnect()?;
    drop(client);
    Ok(DemoReport {
        status,
        events,
        messages_seen: messages.load(Ordering::SeqCst),
        connects: connects.load(Ordering::SeqCst),
    })
}

#[allow(dead_code)]
fn main() {
    let _ = env_logger::try_init();
    let url = std::env::var("HYDROGEN_URL").unwrap_or_else(|_| "ws://127.0.0.1:5001/".into());
    let Ok(key) = std::env::var("HYDROGEN_API_KEY") else {
        eprintln!("set HYDROGEN_API_KEY (make run prints where the key is)");
        std::process::exit(2);
    };
    match demo(&url, &key, "print", 5, Duration::from_secs(5)) {
        Ok(report) => println!(
            "done: {} events, {} messages",
            report.events.len(),
            report.messages_seen
        ),
        Err(e) => {
            eprintln!("client_demo: {e}");
            std::process::exit(1);
        }
    }
}
