//! The one public error type.

use std::fmt;
use std::io;

/// Everything that can go wrong when starting or running a server.
///
/// Each variant says what the user should do about it; the binary maps them to exit codes
/// (see [`Error::exit_code`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is wrong: `key` names the setting, `message` says why and what is
    /// allowed. Fix `config.json` (or the environment variable it refers to).
    Config {
        /// The setting, as a path: `WebSocketServer.Port`.
        key: String,
        /// Why, with the value and what is allowed.
        message: String,
    },
    /// No port in `Port .. Port+PortFallbackCount-1` could be bound. Free one of the ports or
    /// change `Port`/`Interface`.
    Bind {
        /// The addresses and ports tried.
        attempted: String,
        /// The last error from the operating system.
        source: io::Error,
    },
    /// TLS material (certificate or key file) is missing or unusable.
    Tls {
        /// The file concerned.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// An API was called with an argument it cannot take; the text says which and why.
    InvalidArgument(String),
    /// An operating-system call failed (spawning a thread, creating a wake descriptor, ...).
    Io {
        /// What the server was doing.
        context: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl Error {
    /// The process exit code of SPEC §2: 2 config, 3 bind, 4 TLS, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 2,
            Error::Bind { .. } => 3,
            Error::Tls { .. } => 4,
            Error::Io { .. } | Error::InvalidArgument(_) => 1,
        }
    }

    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        Error::Io { context, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { key, message } => write!(f, "config error at {key}: {message}"),
            Error::Bind { attempted, source } => {
                write!(
                    f,
                    "could not bind any port ({attempted}): {source}; free a port or change Port/Interface"
                )
            }
            Error::Tls { path, message } => write!(f, "TLS material unusable ({path}): {message}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::InvalidArgument(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
