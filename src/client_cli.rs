//! `hydrogen-ws client URL [--key K | --token T] [--protocol P] [--raw] [--subscribe CH]...`:
//! a debugging client built on the client library, used like websocat. Every message
//! received is printed to stdout as one JSON line (with `--raw`, exactly as the server sent
//! it; a queue gap as `{"type":"gap","channel":..,"reason":..}`); link changes go to stderr.
//! Each stdin line is sent (a line that is not JSON is reported on stderr, once, and not sent,
//! unless `--raw`); end of input disconnects, except with `--subscribe`, whose events are
//! printed until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select, unbounded};
use hydrogen_ws::Error;
use hydrogen_ws::client::{Callbacks, Client, ClientConfig, Credentials, Delivery};
use serde_json::json;

pub(crate) const USAGE: &str = "\
usage: hydrogen-ws client URL [--key K | --token T] [--protocol P] [--raw] [--subscribe CHANNEL]...
  URL               ws://host:port/ or wss://host:port/
  --key K           authenticate with an API key (Authorization: Key K)
  --token T         authenticate with a JWT or session token (Authorization: Bearer T)
  --protocol P      subprotocol to offer (default hydrogen-protocol)
  --raw             print messages exactly as received; send stdin lines as they are
  --subscribe CH    subscribe to CH and print its events until interrupted (repeatable)
Each line of stdin is sent as a message (a line that is not JSON is reported on stderr and
not sent, unless --raw). End of input disconnects, except with --subscribe.
Messages received are printed to stdout, one JSON object per line. Exit status: 0, or 1
when the link ended with an error or a close code other than 1000/1001, 2 for bad arguments.";

struct Args {
    config: ClientConfig,
    subscribe: Vec<String>,
    raw: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let url = it.next().ok_or("client needs a URL")?;
    if url.starts_with("--") {
        return Err(format!("client needs a URL before {url}"));
    }
    let mut config = ClientConfig::new(url.clone());
    let mut subscribe = Vec::new();
    let mut raw = false;
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--key" => config.credentials = Some(Credentials::key(value()?)),
            "--token" => config.credentials = Some(Credentials::bearer(value()?)),
            "--protocol" => config.protocol = Some(value()?),
            "--subscribe" => subscribe.push(value()?),
            "--raw" => raw = true,
            other => return Err(format!("unknown client argument {other:?}")),
        }
    }
    Ok(Args {
        config,
        subscribe,
        raw,
    })
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

/// Whether a message is the answer to the CLI's own `system/info` (never printed).
fn is_info_answer(msg: &serde_json::Value) -> bool {
    msg["type"] == "response" && msg["id"] == INFO_ID
}

fn callbacks(news: Sender<News>, raw: bool) -> Callbacks {
    let on_ended = news.clone();
    let callbacks = Callbacks::new()
        .on_message(move |msg| {
            if is_info_answer(msg) {
                let rate = msg["data"]["limits"]["MessagesPerSecond"].as_u64();
                let _ = news.send(News::Rate(rate.unwrap_or(0)));
                return;
            }
            if msg["type"] == "response" {
                let _ = news.send(News::Answer);
            }
            if !raw {
                print_line(&msg.to_string());
            }
        })
        // Error objects from the server are messages, printed as such; only the client's own
        // errors go to stderr.
        .on_error(|e| {
            if !matches!(e, Error::Server(_)) {
                eprintln!("hydrogen-ws client: {e}")
            }
        });
    let callbacks = if raw {
        callbacks.on_text(|text| {
            if !serde_json::from_str(text).is_ok_and(|v| is_info_answer(&v)) {
                print_line(text);
            }
        })
    } else {
        callbacks
    };
    callbacks
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
    let client = match Client::connect_with(args.config, callbacks(news_tx, args.raw)) {
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
        raw: args.raw,
        listening: !args.subscribe.is_empty(),
        line_no: 0,
    };
    // Without credentials the first command must be the user's system/auth: no probe.
    if authenticated {
        session.learn_rate();
    }
    let lines = match read_stdin() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("hydrogen-ws client: cannot read stdin: {e}");
            return ExitCode::from(1);
        }
    };
    session.run(Some(lines));
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
    /// `--raw`: lines are sent as they are.
    raw: bool,
    /// `--subscribe`: the end of input does not end the session.
    listening: bool,
    /// Lines of stdin read so far.
    line_no: usize,
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
    fn run(&mut self, mut lines: Option<Receiver<String>>) {
        let never = crossbeam_channel::never();
        let mut eof_at: Option<Instant> = None;
        while self.ended.is_none() {
            if eof_at.is_some_and(|t| self.awaited == 0 || t.elapsed() >= ANSWERS_WAIT) {
                return;
            }
            // Take the next line only once the pace allows it; until then, or until the
            // answers are overdue after end of input, a timer wakes the loop.
            let pace = self.pacer.wait();
            let (input, wake) = match (lines.as_ref(), eof_at) {
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
                    // Subscribed: keep printing events after the end of input.
                    Err(_) if self.listening => lines = None,
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
        self.line_no += 1;
        if line.trim().is_empty() {
            return;
        }
        if !self.raw
            && let Err(e) = serde_json::from_str::<serde_json::Value>(&line)
        {
            eprintln!(
                "hydrogen-ws client: line {} is not JSON ({e}): not sent",
                self.line_no
            );
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
