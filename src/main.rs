//! The `hydrogen-ws` binary: arguments, config, logging, signals, start, wait, exit code.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hydrogen_ws::{Config, Error, Server};

mod client_cli;
mod logging;

const USAGE: &str = "\
usage: hydrogen-ws [--config PATH] [--check-config]
       hydrogen-ws client URL [--key K | --token T] [--protocol P] [--subscribe CHANNEL]...
       hydrogen-ws --help | --version

Starts the WebSocket server with ./config.json (or built-in defaults when it is absent).
  --config PATH    read this config file instead
  --check-config   validate the config, print the effective settings (secrets redacted), exit
Signals: SIGINT/SIGTERM/SIGHUP shut down gracefully (a second one skips the waits);
SIGUSR1 writes a thread dump to the log. RUST_LOG overrides the configured log level.
Exit codes: 0 clean, 2 bad config or arguments, 3 no port could be bound, 4 TLS, 1 other.
`hydrogen-ws client --help` describes the client.";

/// SIGINT, SIGTERM, SIGHUP and SIGUSR1, caught from now on (before the server binds, so a
/// signal that comes as soon as the "listening on" line is out is not the default death);
/// [`handle_signals`] acts on them.
fn catch_signals() -> std::io::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])
}

/// The `hws-signals` thread: SIGINT, SIGTERM and SIGHUP ask for the shutdown (a second one
/// skips the remaining waits), SIGUSR1 logs a thread dump; each is logged by name.
fn handle_signals(
    mut signals: signal_hook::iterator::Signals,
    server: &Arc<Server>,
) -> std::io::Result<()> {
    use signal_hook::consts::SIGUSR1;
    let server = Arc::downgrade(server);
    let mut shutdowns = 0usize;
    std::thread::Builder::new()
        .name("hws-signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for signal in signals.forever() {
                let Some(s) = server.upgrade() else { return };
                let name = signal_hook::low_level::signal_name(signal).unwrap_or("signal");
                if signal == SIGUSR1 {
                    log::info!("{name}: thread dump");
                    s.log_thread_dump();
                    continue;
                }
                shutdowns += 1;
                if shutdowns == 1 {
                    log::info!("{name} received: shutting down (a second signal skips the waits)");
                    s.request_shutdown();
                } else {
                    log::warn!("{name} received again: skipping the remaining waits");
                    s.skip_shutdown_waits();
                }
            }
        })?;
    Ok(())
}

/// Extra time the main thread gives the shutdown beyond its own deadlines before exiting anyway.
const SHUTDOWN_WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

struct Args {
    config: Option<PathBuf>,
    check_only: bool,
}

enum Mode {
    Server(Args),
    Client(Vec<String>),
}

fn parse_args() -> Result<Option<Mode>, String> {
    let mut args = Args {
        config: None,
        check_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => {
                let _ = writeln!(std::io::stdout(), "{USAGE}"); // a closed pipe (`| head -1`) is fine
                return Ok(None);
            }
            "--version" | "-V" => {
                let _ = writeln!(
                    std::io::stdout(),
                    "hydrogen-ws {}",
                    env!("CARGO_PKG_VERSION")
                );
                return Ok(None);
            }
            "--config" => args.config = Some(it.next().ok_or("--config needs a path")?.into()),
            "--check-config" => args.check_only = true,
            "client" => return Ok(Some(Mode::Client(it.collect()))),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Mode::Server(args)))
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("hydrogen-ws: {e}");
    ExitCode::from(e.exit_code() as u8)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(Mode::Server(a))) => a,
        Ok(Some(Mode::Client(rest))) => {
            logging::init("warn");
            return client_cli::run(&rest);
        }
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("hydrogen-ws: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let path = args
        .config
        .clone()
        .unwrap_or_else(hydrogen_ws::config::default_path);
    let loaded = if args.config.is_some() || path.exists() {
        Config::load(&path)
    } else {
        Config::from_json_str("{}")
    };
    let (config, report) = match loaded {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    logging::init(&config.log_level);
    for w in &report.warnings {
        log::warn!("{w}");
    }
    if args.check_only {
        if let Err(e) = config.validate() {
            return fail(&e);
        }
        let text = serde_json::to_string_pretty(&config.to_redacted_json()).unwrap_or_default();
        let _ = writeln!(std::io::stdout(), "{text}");
        return ExitCode::SUCCESS;
    }
    if !config.enabled {
        log::info!("WebSocketServer.Enabled is false: the server is disabled; exiting");
        return ExitCode::SUCCESS;
    }
    let (close_wait, join_wait) = (config.close_wait, config.join_timeout);
    let signals = match catch_signals() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let server = match Server::builder(config).notify_service_manager(true).start() {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(&e),
    };
    log::info!(
        "hydrogen-ws {} ready on {:?}",
        env!("CARGO_PKG_VERSION"),
        server.bound_addrs()
    );

    if let Err(e) = handle_signals(signals, &server) {
        log::error!("cannot start the signal thread: {e}");
        return ExitCode::from(1);
    }

    server.wait_for_shutdown_request(None);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let s = server.clone();
    let spawned = std::thread::Builder::new()
        .name("hws-shutdown".into())
        .spawn(move || {
            let _ = tx.send(s.shutdown());
        });
    if spawned.is_err() {
        log::error!("cannot start the shutdown thread; exiting without a graceful shutdown");
        return ExitCode::from(1);
    }
    match rx.recv_timeout(close_wait + join_wait + SHUTDOWN_WATCHDOG_MARGIN) {
        Ok(report) if report.stuck_threads.is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            log::error!(
                "{} thread(s) did not stop; exiting anyway",
                report.stuck_threads.len()
            );
            ExitCode::from(1)
        }
        Err(_) => {
            log::error!("shutdown did not finish in time; exiting anyway");
            ExitCode::from(1)
        }
    }
}
