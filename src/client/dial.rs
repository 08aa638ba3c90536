//! The steps of reaching a server that the WebSocket client and the server's MQTT bridge
//! share: the name lookup bounded by the connect timeout, the TCP connect to each address,
//! and the TLS handshake (verifying the host name) on the non-blocking socket.
#![forbid(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use super::tls::ClientTls;
use crate::error::{Error, Timeout};
#[cfg(feature = "tls")]
use crate::tls_io;

/// Stack of the name-lookup thread (getaddrinfo and its NSS modules need more than a little).
const RESOLVER_STACK_BYTES: usize = 128 * 1024;

/// The TLS session type of a dialled socket (none without the `tls` feature).
#[cfg(feature = "tls")]
pub(crate) type ClientTlsSession = rustls::ClientConnection;
#[cfg(not(feature = "tls"))]
pub(crate) type ClientTlsSession = crate::raw_socket::NoTls;

/// Connects to `host:port`, trying each address within `timeout`. `url` names the target in
/// errors ([`Error::Connect`], or [`Error::Timeout`] for a lookup that does not answer).
pub(crate) fn connect_tcp(
    url: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let connect_error = |source| Error::Connect {
        url: url.to_owned(),
        source,
    };
    let addrs = resolve(host, port, timeout).map_err(|e| match e {
        Lookup::Failed(source) => connect_error(source),
        Lookup::TimedOut => Error::Timeout(Timeout::Lookup {
            host: host.to_owned(),
            waited: timeout,
        }),
    })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(connect_error(last))
}

enum Lookup {
    Failed(io::Error),
    TimedOut,
}

/// The host's addresses. An IP literal needs no lookup; a name is looked up on a short-lived
/// `hwc-resolve` thread so that the lookup, which the system resolver may block for many
/// seconds, is bounded by `timeout` like the connect itself. A lookup that runs past it is
/// abandoned: its thread ends when the resolver returns.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, Lookup> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let host = host.to_owned();
    thread::Builder::new()
        .name("hwc-resolve".into())
        .stack_size(RESOLVER_STACK_BYTES)
        .spawn(move || {
            let found = (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            let _ = tx.send(found);
        })
        .map_err(Lookup::Failed)?;
    match rx.recv_timeout(timeout) {
        Ok(found) => found.map_err(Lookup::Failed),
        Err(_) => Err(Lookup::TimedOut),
    }
}

/// The TLS handshake over the non-blocking `tcp`, verifying the server's certificate for
/// `host`, by `deadline`. Errors: [`Error::InvalidArgument`] for a host that cannot be a
/// server name, otherwise why the handshake failed (for [`Error::Handshake`]).
#[cfg(feature = "tls")]
pub(crate) fn tls_handshake(
    config: &ClientTls,
    tcp: &TcpStream,
    host: &str,
    deadline: Instant,
) -> Result<Box<ClientTlsSession>, Result<Error, String>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Ok(Error::InvalidArgument(format!("bad host {host:?}: {e}"))))?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| Err(format!("TLS: {e}")))?;
    tls_io::handshake(&mut conn, tcp, deadline).map_err(Err)?;
    Ok(Box::new(conn))
}

/// Without the `tls` feature no TLS settings exist, so this is never called.
#[cfg(not(feature = "tls"))]
pub(crate) fn tls_handshake(
    config: &ClientTls,
    _: &TcpStream,
    _: &str,
    _: Instant,
) -> Result<Box<ClientTlsSession>, Result<Error, String>> {
    match *config {}
}
