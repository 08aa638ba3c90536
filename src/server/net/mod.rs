//! The network edge of the data path: binding and accepting (`listener`), the HTTP upgrade
//! (`handshake`) and who may have a connection (`admission`), and the byte stream under the
//! WebSocket (`stream`, plain TCP or TLS from `tls`).
#![forbid(unsafe_code)]

pub(crate) mod admission;
pub(crate) mod endpoints;
pub(crate) mod handshake;
pub(crate) mod listener;
pub(crate) mod refusal;
pub(crate) mod request;
pub(crate) mod stream;
pub(crate) mod tls;
