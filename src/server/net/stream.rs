//! The client's byte stream: a TCP socket, plain or under rustls, that first replays the
//! request head the handshake already read (so tungstenite's own handshake can parse it).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::tls_io;

/// The client's socket (plain, or TLS through rustls), replaying the request head we read to
/// tungstenite's handshake.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(super) tcp: Arc<TcpStream>,
    pub(super) tls: Option<Box<rustls::ServerConnection>>,
    pub(super) replay: Vec<u8>,
    pub(super) replay_pos: usize,
    /// The last write met a full socket (`WouldBlock`): output is waiting in tungstenite.
    pub(super) last_write_blocked: bool,
}

impl Transport {
    /// The socket's descriptor, for `poll(2)`.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp.as_raw_fd()
    }

    /// Whether output is waiting for the socket: the last write would have blocked, or
    /// rustls holds records the socket did not take. Tungstenite queues pongs and close
    /// replies while it reads, so the connection asks this after every frame it reads and
    /// stops reading until the client takes its output (backpressure).
    pub(crate) fn output_pending(&self) -> bool {
        self.last_write_blocked || self.tls.as_ref().is_some_and(|c| c.wants_write())
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
        match &mut self.tls {
            Some(conn) => tls_io::read(conn, &self.tcp, buf),
            None => (&*self.tcp).read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = match &mut self.tls {
            Some(conn) => tls_io::write(conn, &self.tcp, buf),
            None => (&*self.tcp).write(buf),
        };
        self.last_write_blocked =
            matches!(&written, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        written
    }
    /// Tungstenite flushes the stream only once its own buffer is written out, so success
    /// here means nothing is waiting any more.
    fn flush(&mut self) -> io::Result<()> {
        let flushed = match &mut self.tls {
            Some(conn) => tls_io::write_pending(conn, &self.tcp),
            None => (&*self.tcp).flush(),
        };
        if flushed.is_ok() {
            self.last_write_blocked = false;
        }
        flushed
    }
}
