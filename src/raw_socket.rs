//! The socket under a WebSocket as one `Read + Write`: TLS records when the connection has
//! TLS, else the TCP stream itself. Both ends use it (server `Transport`, client
//! `LinkStream`), with permessage-deflate on top when negotiated.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A TLS connection's plaintext I/O over its TCP socket.
pub(crate) trait TlsSession {
    fn read_plain(&mut self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize>;
    fn write_plain(&mut self, tcp: &TcpStream, buf: &[u8]) -> io::Result<usize>;
    fn write_pending(&mut self, tcp: &TcpStream) -> io::Result<()>;
}

#[cfg(feature = "tls")]
impl<C, Side> TlsSession for C
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<Side>>,
{
    fn read_plain(&mut self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        crate::tls_io::read(self, tcp, buf)
    }
    fn write_plain(&mut self, tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        crate::tls_io::write(self, tcp, buf)
    }
    fn write_pending(&mut self, tcp: &TcpStream) -> io::Result<()> {
        crate::tls_io::write_pending(self, tcp)
    }
}

/// Without the `tls` feature no session exists: this type has no values.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) enum NoTls {}

#[cfg(not(feature = "tls"))]
impl TlsSession for NoTls {
    fn read_plain(&mut self, _: &TcpStream, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    fn write_plain(&mut self, _: &TcpStream, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
    fn write_pending(&mut self, _: &TcpStream) -> io::Result<()> {
        match *self {}
    }
}

/// The socket, borrowed: TLS when `tls` is some.
pub(crate) struct RawSocket<'a, T: TlsSession> {
    pub tcp: &'a TcpStream,
    pub tls: Option<&'a mut T>,
}

impl<T: TlsSession> Read for RawSocket<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(conn) => conn.read_plain(self.tcp, buf),
            None => (&mut &*self.tcp).read(buf),
        }
    }
}

impl<T: TlsSession> Write for RawSocket<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(conn) => conn.write_plain(self.tcp, buf),
            None => (&mut &*self.tcp).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(conn) => conn.write_pending(self.tcp),
            None => (&mut &*self.tcp).flush(),
        }
    }
}
