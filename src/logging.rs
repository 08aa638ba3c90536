//! The binary's logger: env_logger on stderr, `Logging.Level` overridden by `RUST_LOG`, with
//! one rule no directive can lift: a dependency that logs whole frames or requests (the
//! credentials and tokens clients send) is held to `debug`. tungstenite traces every frame
//! and the client's request head at `trace`; its `debug` lines carry only close frames.
#![forbid(unsafe_code)]

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
    let inner = builder
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .build();
    let max: LevelFilter = inner.filter();
    if log::set_boxed_logger(Box::new(SecretSafe { inner })).is_ok() {
        log::set_max_level(max);
    }
}
