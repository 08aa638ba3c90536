//! The client's byte stream: a TCP socket, plain or under rustls, that first replays the
//! request head the handshake already read (so tungstenite's own handshake can parse it).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::tls_io;

/// The client's socket (plain, or TLS through rustls), replaying the request head we read to
/// tungstenite's handshake.
#[derive(Debug)]
pub(crate) struct ClientStream {
    pub(super) tcp: Arc<TcpStream>,
    pub(super) tls: Option<Box<rustls::ServerConnection>>,
    pub(super) replay: Vec<u8>,
    pub(super) replay_pos: usize,
}

impl ClientStream {
    /// The socket's descriptor, for `poll(2)`.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.tcp.as_raw_fd()
    }
}

impl Read for ClientStream {
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

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(conn) => tls_io::write(conn, &self.tcp, buf),
            None => (&*self.tcp).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(conn) => tls_io::write_pending(conn, &self.tcp),
            None => (&*self.tcp).flush(),
        }
    }
}
