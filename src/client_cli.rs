//! `hydrogen-ws client URL [--key K | --token T] [--protocol P] [--subscribe CH]...`: a
//! debugging client built on the client library. Every message received is printed to stdout
//! as one JSON line (a queue gap as `{"type":"gap","channel":..,"reason":..}`); link changes go
//! to stderr. Without `--subscribe`, each stdin line is sent as it is and end of input
//! disconnects; with it, events are printed until SIGINT/SIGTERM.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use crossbeam_channel::{select, unbounded};
use hydrogen_ws::Error;
use hydrogen_ws::client::{Callbacks, Client, ClientConfig, Credentials, Delivery};
use serde_json::json;

pub(crate) const USAGE: &str = "\
usage: hydrogen-ws client URL [--key K | --token T] [--protocol P] [--subscribe CHANNEL]...
  URL               ws://host:port/ or wss://host:port/
  --key K           authenticate with an API key (Authorization: Key K)
  --token T         authenticate with a JWT or session token (Authorization: Bearer T)
  --protocol P      subprotocol to offer (default hydrogen-protocol)
  --subscribe CH    subscribe to CH and print its events until interrupted (repeatable)
Without --subscribe, each line of stdin is sent as a message; end of input disconnects.
Messages received are printed to stdout, one JSON object per line.";

struct Args {
    config: ClientConfig,
    subscribe: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let url = it.next().ok_or("client needs a URL")?;
    if url.starts_with("--") {
        return Err(format!("client needs a URL before {url}"));
    }
    let mut config = ClientConfig::new(url.clone());
    let mut subscribe = Vec::new();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--key" => config.credentials = Some(Credentials::key(value()?)),
            "--token" => config.credentials = Some(Credentials::bearer(value()?)),
            "--protocol" => config.protocol = Some(value()?),
            "--subscribe" => subscribe.push(value()?),
            other => return Err(format!("unknown client argument {other:?}")),
        }
    }
    Ok(Args { config, subscribe })
}

fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

pub(crate) fn run(args: &[String]) -> ExitCode {
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse(args) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("hydrogen-ws: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let callbacks = Callbacks::new()
        .on_message(|msg| print_line(&msg.to_string()))
        .on_error(|e| eprintln!("hydrogen-ws client: {e}"))
        .on_disconnect(|d| {
            let next = if d.will_reconnect {
                "reconnecting"
            } else {
                "not reconnecting"
            };
            eprintln!(
                "hydrogen-ws client: link closed ({} {}); {next}",
                d.code, d.reason
            );
        })
        .on_reconnect(|r| {
            eprintln!(
                "hydrogen-ws client: reconnected after {} attempt(s); resumed: {}, gap: {}",
                r.attempts, r.resumed, r.gap
            )
        });
    let client = match Client::connect_with(args.config, callbacks) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hydrogen-ws client: {e}");
            return ExitCode::from(if matches!(e, Error::InvalidArgument(_)) {
                2
            } else {
                1
            });
        }
    };
    let (stop_tx, stop) = unbounded();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    }) {
        eprintln!("hydrogen-ws client: cannot install signal handlers: {e}");
    }
    let (deliveries_tx, deliveries) = unbounded();
    for channel in &args.subscribe {
        if let Err(e) = client.subscribe_with(channel, deliveries_tx.clone()) {
            eprintln!("hydrogen-ws client: cannot subscribe to {channel}: {e}");
            return ExitCode::from(1);
        }
    }
    drop(deliveries_tx);
    let (lines_tx, lines) = unbounded();
    if args.subscribe.is_empty() {
        let spawned = std::thread::Builder::new()
            .name("hwc-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("hydrogen-ws client: cannot read stdin: {e}");
            return ExitCode::from(1);
        }
    }
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(lines) -> line => match line {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    if let Err(e) = client.send_text(line) {
                        eprintln!("hydrogen-ws client: not sent: {e}");
                    }
                }
                Err(_) if args.subscribe.is_empty() => break, // end of input
                Err(_) => {}
            },
            recv(deliveries) -> d => {
                // Events are printed by on_message; a gap is news only the queue has.
                if let Ok(Delivery::Gap { channel, reason }) = d {
                    let gap = json!({"type": "gap", "channel": channel, "reason": format!("{reason:?}")});
                    print_line(&gap.to_string());
                }
            },
        }
    }
    match client.disconnect() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hydrogen-ws client: {e}");
            ExitCode::from(1)
        }
    }
}
