//! The binary's logger: env_logger on stderr, `Logging.Level` overridden by `RUST_LOG`, with
//! one rule no directive can lift: a dependency that logs whole frames or requests (the
//! credentials and tokens clients send) is held to `debug`. tungstenite traces every frame
//! and the client's request head at `trace`; its `debug` lines carry only close frames.
//!
//! Under systemd (stderr is the stream `JOURNAL_STREAM` names) each line starts with its
//! syslog priority (`<3>` error … `<7>` debug, sd-daemon(3)) and carries no timestamp of its
//! own (the journal stamps it), so `journalctl -p warning` selects by level.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Module prefixes whose `trace` output would carry secrets.
const FRAME_TRACERS: &[&str] = &["tungstenite"];

/// env_logger's logger without the frame traces of [`FRAME_TRACERS`].
struct SecretSafe {
    inner: env_logger::Logger,
}

fn traces_frames(metadata: &Metadata) -> bool {
    metadata.level() > Level::Debug
        && FRAME_TRACERS
            .iter()
            .any(|prefix| metadata.target().starts_with(prefix))
}

impl Log for SecretSafe {
    fn enabled(&self, metadata: &Metadata) -> bool {
        !traces_frames(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger: `level` (the config's `LogLevel`) first, then `RUST_LOG`'s
/// directives, whichever are given, on top.
pub(crate) fn init(level: &str) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(level);
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    if stderr_is_journal() {
        builder.format(|out, record| {
            writeln!(
                out,
                "<{}>{}: {}",
                syslog_priority(record.level()),
                record.target(),
                record.args()
            )
        });
    } else {
        builder.format_timestamp_millis();
    }
    let inner = builder.target(env_logger::Target::Stderr).build();
    let max: LevelFilter = inner.filter();
    if log::set_boxed_logger(Box::new(SecretSafe { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// syslog's priority for a log level (sd-daemon(3)'s `SD_ERR` … `SD_DEBUG`).
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether stderr is the journal stream systemd gave us: `JOURNAL_STREAM` is `<dev>:<inode>`
/// of that stream (systemd.exec(5)), and a child whose stderr was redirected keeps the
/// variable but not the stream, so both are compared.
fn stderr_is_journal() -> bool {
    let Some(named) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = named.split_once(':') else {
        return false;
    };
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from);
    match stderr.and_then(|f| f.metadata()) {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}
