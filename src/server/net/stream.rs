//! The client's byte stream: a TCP socket, plain or under rustls (feature `tls`), that first
//! replays the request head the handshake already read (so tungstenite's own handshake can
//! parse it).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
#[cfg(feature = "tls")]
use std::time::Instant;

use crate::deflate::{self, Deflate};
use crate::raw_socket::RawSocket;

/// The TLS session type of a server connection (none without the `tls` feature).
#[cfg(feature = "tls")]
type ServerTls = rustls::ServerConnection;
#[cfg(not(feature = "tls"))]
type ServerTls = crate::raw_socket::NoTls;
#[cfg(feature = "tls")]
use crate::tls_io;

/// The client's socket (plain, or TLS through rustls), replaying the request head we read to
/// tungstenite's handshake.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(super) tcp: Arc<TcpStream>,
    tls: Option<Box<ServerTls>>,
    pub(super) replay: Vec<u8>,
    replay_pos: usize,
    /// The last write met a full socket (`WouldBlock`): output is waiting in tungstenite.
    last_write_blocked: bool,
    /// permessage-deflate, once negotiated (between tungstenite and the socket).
    deflate: Option<Box<Deflate>>,
}

impl Transport {
    /// A plain stream over `tcp`.
    pub(super) fn new(tcp: Arc<TcpStream>) -> Transport {
        Transport {
            tcp,
            tls: None,
            replay: Vec::new(),
            replay_pos: 0,
            last_write_blocked: false,
            deflate: None,
        }
    }

    /// Runs the TLS handshake (until `deadline`); afterwards every byte goes through rustls.
    #[cfg(feature = "tls")]
    pub(super) fn start_tls(
        &mut self,
        config: &Arc<rustls::ServerConfig>,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut conn = rustls::ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
        tls_io::handshake(&mut conn, &self.tcp, deadline)?;
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    /// From now on messages go through permessage-deflate (after the upgrade negotiated it).
    pub(crate) fn start_deflate(&mut self, deflate: Deflate) {
        self.deflate = Some(Box::new(deflate));
    }

    /// Whether permessage-deflate is on.
    pub(crate) fn compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// The socket (under TLS when there is TLS) and the deflate layer, borrowed apart.
    fn split(&mut self) -> (RawSocket<'_, ServerTls>, Option<&mut Deflate>) {
        (
            RawSocket {
                tcp: &self.tcp,
                tls: self.tls.as_deref_mut(),
            },
            self.deflate.as_deref_mut(),
        )
    }

    /// The socket's descriptor, for `poll(2)`.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp.as_raw_fd()
    }

    /// Whether output is waiting for the socket: the last write would have blocked, or
    /// rustls holds records the socket did not take. Tungstenite queues pongs and close
    /// replies while it reads, so the connection asks this after every frame it reads and
    /// stops reading until the client takes its output (backpressure).
    pub(crate) fn output_pending(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|c| c.wants_write()) {
            return true;
        }
        self.last_write_blocked || self.deflate.as_ref().is_some_and(|d| d.has_output())
    }

    /// Ends our sending side: TLS close_notify (best effort), then the TCP half-close.
    pub(super) fn shutdown_write(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(conn) = &mut self.tls {
            conn.send_close_notify();
            let _ = tls_io::write_pending(conn, &self.tcp);
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    fn write_through(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (mut raw, d) = self.split();
        deflate::io::write(d, &mut raw, buf)
    }

    fn flush_through(&mut self) -> io::Result<()> {
        let (mut raw, d) = self.split();
        deflate::io::flush(d, &mut raw)
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.replay_pos < self.replay.len() {
            let n = buf.len().min(self.replay.len() - self.replay_pos);
            buf[..n].copy_from_slice(&self.replay[self.replay_pos..self.replay_pos + n]);
            self.replay_pos += n;
            if self.replay_pos == self.replay.len() {
                self.replay = Vec::new();
                self.replay_pos = 0;
            }
            return Ok(n);
        }
        let (mut raw, d) = self.split();
        deflate::io::read(d, &mut raw, buf)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.write_through(buf);
        self.last_write_blocked =
            matches!(&written, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        written
    }
    /// Tungstenite flushes the stream only once its own buffer is written out, so success
    /// here means nothing is waiting any more.
    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.flush_through();
        if flushed.is_ok() {
            self.last_write_blocked = false;
        }
        flushed
    }
}
