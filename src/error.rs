//! The one public error type, [`Error`], and [`Timeout`], which names the wait that ended.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::time::Duration;

use crate::message::WireError;

/// Everything that can go wrong when starting or running a server, or using the client.
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
    /// Client: the server could not be reached (name lookup or TCP connect failed or timed
    /// out). The reconnect policy tries again; check the URL and that the server runs.
    Connect {
        /// The URL dialled.
        url: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// Client: the TLS or WebSocket handshake failed or timed out (wrong subprotocol, not a
    /// WebSocket server, certificate not trusted, ...).
    Handshake {
        /// The URL dialled.
        url: String,
        /// What failed.
        message: String,
    },
    /// Client: the server refused the upgrade with an HTTP error (`401 auth_failed`,
    /// `503 server_busy`, `429 rate_limited`, ...). 400/401/403/404/426 are not retried.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The error code from the JSON body (`auth_failed`, ...), empty if there was none.
        code: String,
        /// The server's explanation.
        message: String,
        /// `Retry-After`, when the server sent one; the client waits at least that long.
        retry_after: Option<Duration>,
    },
    /// Client: the server answered a request with an error object.
    Server(WireError),
    /// Client: a wait ended at its deadline; [`Timeout`] says which one.
    Timeout(Timeout),
    /// Client: there is no link to the server (it dropped and the client is reconnecting, or
    /// the client was disconnected). Requests pending when a link drops end with this at once.
    Disconnected,
    /// A server refused what the API was asked to do, with the error a client would get
    /// (`Publisher::publish`: `invalid_message` for a bad name, `forbidden` for `system`,
    /// `shutting_down` once the shutdown began).
    Refused(WireError),
    /// Client: a bounded queue was full; the text names it. For `send`: slow down. For a
    /// subscription queue: read it faster (a `Gap` marker follows).
    QueueFull(String),
}

/// Which wait of the client timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeout {
    /// [`crate::client::Client::connect`]: the server did not welcome the client in time.
    Welcome {
        /// How long the client waited.
        waited: Duration,
    },
    /// [`crate::client::Client::request`]: no response to `channel/action` in time.
    Response {
        /// The command's channel.
        channel: String,
        /// The command's action.
        action: String,
        /// The request's timeout.
        waited: Duration,
    },
    /// Looking up the server's host name took longer than `connect_timeout`.
    Lookup {
        /// The host name.
        host: String,
        /// The connect timeout.
        waited: Duration,
    },
    /// [`crate::client::Client::disconnect`]: these client threads did not end in time.
    Disconnect {
        /// The threads' names.
        threads: Vec<String>,
    },
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timeout::Welcome { waited } => write!(
                f,
                "the server did not welcome the client within {} ms",
                waited.as_millis()
            ),
            Timeout::Response {
                channel,
                action,
                waited,
            } => write!(
                f,
                "no response to {channel}/{action} within {} ms",
                waited.as_millis()
            ),
            Timeout::Lookup { host, waited } => write!(
                f,
                "looking up {host} took longer than connect_timeout ({} ms)",
                waited.as_millis()
            ),
            Timeout::Disconnect { threads } => write!(f, "client threads {threads:?} did not end"),
        }
    }
}

impl Error {
    /// The process exit code (README, Operating it): 2 config, 3 bind, 4 TLS, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 2,
            Error::Bind { .. } => 3,
            Error::Tls { .. } => 4,
            _ => 1,
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
            Error::Connect { url, source } => write!(f, "cannot reach {url}: {source}"),
            Error::Handshake { url, message } => {
                write!(f, "handshake with {url} failed: {message}")
            }
            Error::Rejected {
                status,
                code,
                message,
                ..
            } => write!(
                f,
                "server refused the connection: HTTP {status} {code}: {message}"
            ),
            Error::Server(e) => write!(f, "server error {}: {}", e.code.as_str(), e.message),
            Error::Refused(e) => write!(f, "refused ({}): {}", e.code.as_str(), e.message),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Disconnected => f.write_str("not connected to the server (the link is down)"),
            Error::QueueFull(what) => write!(f, "queue full: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. }
            | Error::Io { source, .. }
            | Error::Connect { source, .. } => Some(source),
            _ => None,
        }
    }
}
