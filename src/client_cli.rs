//! `hydrogen-ws client URL [--key K | --token T] [--protocol P] [--subscribe CH]...`: a
//! debugging client built on the client library. Every message received is printed to stdout
//! as one JSON line (a queue gap as `{"type":"gap","channel":..,"reason":..}`); link changes go
//! to stderr. Without `--subscribe`, each stdin line is sent as it is and end of input
//! disconnects; with it, events are printed until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select, unbounded};
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

/// Id of the CLI's own `system/info` request, whose answer sets the pace (not printed).
const INFO_ID: &str = "hws-cli-info";
/// How long the CLI waits for `system/info` before sending without a pace.
const INFO_WAIT: Duration = Duration::from_secs(5);
/// After end of input, how long the CLI waits for the answers to the commands it sent.
const ANSWERS_WAIT: Duration = Duration::from_secs(15);

/// What the I/O thread's callbacks tell the main loop.
enum News {
    /// The server's `MessagesPerSecond` (0: unlimited).
    Rate(u64),
    /// A response arrived.
    Answer,
    /// The link ended for good: its close code.
    Ended(u16),
}

fn callbacks(news: Sender<News>) -> Callbacks {
    let on_ended = news.clone();
    Callbacks::new()
        .on_message(move |msg| {
            if msg["type"] == "response" {
                if msg["id"] == INFO_ID {
                    let rate = msg["data"]["limits"]["MessagesPerSecond"].as_u64();
                    let _ = news.send(News::Rate(rate.unwrap_or(0)));
                    return;
                }
                let _ = news.send(News::Answer);
            }
            print_line(&msg.to_string());
        })
        .on_error(|e| eprintln!("hydrogen-ws client: {e}"))
        .on_disconnect(move |d| {
            let next = if d.will_reconnect {
                "reconnecting"
            } else {
                "not reconnecting"
            };
            eprintln!(
                "hydrogen-ws client: link closed ({} {}); {next}",
                d.code, d.reason
            );
            if !d.will_reconnect {
                let _ = on_ended.send(News::Ended(d.code));
            }
        })
        .on_reconnect(|r| {
            eprintln!(
                "hydrogen-ws client: reconnected after {} attempt(s); resumed: {}, gap: {}",
                r.attempts, r.resumed, r.gap
            )
        })
}

/// Sends stdin lines at most at the server's rate, so that a file of commands piped in is
/// not refused with `rate_limited`.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(messages_per_second: u64) -> Pacer {
        let interval = match messages_per_second {
            0 => Duration::ZERO,
            n => Duration::from_secs_f64(1.0 / n as f64),
        };
        Pacer {
            interval,
            next: Instant::now(),
        }
    }

    /// How long to wait before the next line may go.
    fn wait(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    fn sent(&mut self) {
        self.next = self.next.max(Instant::now()) + self.interval;
    }
}

/// Whether `line` is a command the server will answer (so the CLI waits for its response).
fn expects_answer(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v["type"] == "command" && v["id"].is_string())
}

/// The exit code for a link that ended with close `code`: 0 for a normal close.
fn exit_for_close(code: u16) -> ExitCode {
    if code == 1000 || code == 1001 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) fn run(args: &[String]) -> ExitCode {
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        let _ = writeln!(std::io::stdout(), "{USAGE}"); // a closed pipe is fine
        return ExitCode::SUCCESS;
    }
    let args = match parse(args) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("hydrogen-ws: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (news_tx, news) = unbounded();
    let authenticated = args.config.credentials.is_some();
    let client = match Client::connect_with(args.config, callbacks(news_tx)) {
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
    let mut session = Session {
        client: &client,
        news,
        stop,
        deliveries,
        pacer: Pacer::new(0),
        awaited: 0,
        ended: None,
    };
    // Without credentials the first command must be the user's system/auth: no probe.
    if authenticated {
        session.learn_rate();
    }
    let lines = if args.subscribe.is_empty() {
        match read_stdin() {
            Ok(rx) => Some(rx),
            Err(e) => {
                eprintln!("hydrogen-ws client: cannot read stdin: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    session.run(lines);
    if let Some(code) = session.ended {
        return exit_for_close(code);
    }
    match client.disconnect() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hydrogen-ws client: {e}");
            ExitCode::from(1)
        }
    }
}

/// stdin, a line at a time, on a `hwc-stdin` thread.
fn read_stdin() -> std::io::Result<Receiver<String>> {
    let (lines_tx, lines) = unbounded();
    std::thread::Builder::new()
        .name("hwc-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(lines)
}

/// The main loop's state: what it waits on, the pace, and the answers still due.
struct Session<'a> {
    client: &'a Client,
    news: Receiver<News>,
    stop: Receiver<()>,
    deliveries: Receiver<Delivery>,
    pacer: Pacer,
    /// Commands sent whose response has not arrived yet.
    awaited: usize,
    /// The close code, once the link ended for good.
    ended: Option<u16>,
}

impl Session<'_> {
    /// Asks `system/info` for the server's rate limit and paces stdin by it.
    fn learn_rate(&mut self) {
        let probe =
            json!({"type": "command", "id": INFO_ID, "channel": "system", "action": "info"});
        if self.client.send_text(probe.to_string()).is_err() {
            return;
        }
        let deadline = Instant::now() + INFO_WAIT;
        while self.ended.is_none() {
            match self.news.recv_deadline(deadline) {
                Ok(News::Rate(rate)) => {
                    self.pacer = Pacer::new(rate);
                    return;
                }
                Ok(other) => self.note(other),
                Err(_) => return,
            }
        }
    }

    fn note(&mut self, news: News) {
        match news {
            News::Rate(rate) => self.pacer = Pacer::new(rate),
            News::Answer => self.awaited = self.awaited.saturating_sub(1),
            News::Ended(code) => self.ended = Some(code),
        }
    }

    /// Sends stdin's lines (paced) until end of input, then waits for the answers due; or
    /// prints events until interrupted. Ends early when the link ends for good.
    fn run(&mut self, lines: Option<Receiver<String>>) {
        let never = crossbeam_channel::never();
        let lines = lines.as_ref();
        let mut eof_at: Option<Instant> = None;
        while self.ended.is_none() {
            if eof_at.is_some_and(|t| self.awaited == 0 || t.elapsed() >= ANSWERS_WAIT) {
                return;
            }
            // Take the next line only once the pace allows it; until then, or until the
            // answers are overdue after end of input, a timer wakes the loop.
            let pace = self.pacer.wait();
            let (input, wake) = match (lines, eof_at) {
                (Some(rx), None) if pace.is_zero() => (rx, None),
                (Some(_), None) => (&never, Some(pace)),
                (_, Some(t)) => (&never, Some(ANSWERS_WAIT.saturating_sub(t.elapsed()))),
                (None, None) => (&never, None),
            };
            let tick = wake.map_or_else(crossbeam_channel::never, crossbeam_channel::after);
            select! {
                recv(self.stop) -> _ => return,
                recv(self.news) -> n => if let Ok(n) = n { self.note(n) },
                recv(input) -> line => match line {
                    Ok(line) => self.send_line(line),
                    Err(_) => eof_at = Some(Instant::now()),
                },
                recv(self.deliveries) -> d => {
                    // Events are printed by on_message; a gap is news only the queue has.
                    if let Ok(Delivery::Gap { channel, reason }) = d {
                        let gap = json!({"type": "gap", "channel": channel, "reason": format!("{reason:?}")});
                        print_line(&gap.to_string());
                    }
                },
                recv(tick) -> _ => {},
            }
        }
    }

    fn send_line(&mut self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        let answered = expects_answer(&line);
        match self.client.send_text(line) {
            Ok(()) => {
                self.pacer.sent();
                self.awaited += usize::from(answered);
            }
            Err(e) => eprintln!("hydrogen-ws client: not sent: {e}"),
        }
    }
}
