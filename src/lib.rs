//! hydrogen-ws: a WebSocket server and client for device controllers — 3D printers and other
//! small boards. It speaks the Hydrogen WebSocket interface: JSON command/response
//! envelopes over the `hydrogen-protocol` subprotocol, API-key authentication, a built-in
//! `system` channel (ping, status, info, threads, disconnect), and application channels
//! served by handlers you register.
//!
//! The design is synchronous, one named OS thread per client (`hws-conn-<id>`) that sleeps in
//! `poll(2)` until its socket, its queue or a timer needs it; the README's Layout section and
//! `docs/protocol.md` (the wire protocol) in the repository say more.
//!
//! Start a server on a free loopback port and answer commands on a `print` channel:
//!
//! ```
//! use hydrogen_ws::{ApiKey, Config, Role, Secret, Server};
//! use serde_json::json;
//!
//! let mut config = Config::default();
//! config.interface = "127.0.0.1".parse().unwrap();
//! config.port = 0;
//! config.keys.push(ApiKey::new("printer-ui", Secret::new("a-long-random-key-1234"), Role::Operator));
//! let server = Server::builder(config)
//!     .handler("print", |req| match req.command.action.as_str() {
//!         "start" => Ok(json!({"started": req.command.data["file"]})),
//!         other => Err(hydrogen_ws::WireError::new(
//!             hydrogen_ws::ErrorCode::UnknownAction,
//!             format!("print has no action {other}"),
//!         )),
//!     })
//!     .start()
//!     .unwrap();
//! println!("listening on {}, {} clients", server.bound_addr(), server.status().active_connections);
//! let report = server.shutdown();
//! assert!(report.stuck_threads.is_empty());
//! ```
//!
//! The client side is [`client::Client`]: requests, subscriptions, and a link that reconnects
//! and resumes its session by itself.
//!
//! Load the shipped `config.json` the way the binary does:
//!
//! ```no_run
//! let (config, report) = hydrogen_ws::Config::load("config.json".as_ref()).unwrap();
//! for warning in report.warnings {
//!     eprintln!("{warning}");
//! }
//! let server = hydrogen_ws::Server::start(config).unwrap();
//! server.join(); // until request_shutdown() or a signal handler asks
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
mod deflate;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod json_keys;
mod message;
mod raw_socket;
mod secret;
mod server;
#[cfg(feature = "tls")]
mod tls_io;
mod wake;

pub use client::{Client, ClientConfig};
pub use config::Config;
pub use error::{Error, Timeout};
pub use message::{Command, ErrorCode, MessageAuth, WireError};
pub use server::{
    ApiKey, AuthMethod, HandlerResult, Identity, Request, Role, Secret, Server, ServerBuilder,
    ShutdownReport, StuckThread,
};
pub use server::{Event, JwtConfig, Priority, Publisher, SessionTokenConfig, Status};

/// The parts of a [`Status`] (what `system/status` answers, typed).
pub mod status {
    pub use crate::server::{
        BridgeStatus, EventFigures, ProcessStatus, ServiceFigures, SystemInfo,
    };
}
