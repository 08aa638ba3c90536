//! TLS over a non-blocking socket, for both ends (server connections and the client): the
//! handshake bounded by a deadline, and plaintext reads and writes that turn "rustls has
//! nothing / the socket is full" into `WouldBlock` the way tungstenite expects.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

use rustls::ConnectionCommon;

use crate::wake::{self, Interest};

/// Runs the TLS handshake on a non-blocking socket until it completes, fails, or `deadline`
/// passes. Returns why it failed, for the log.
pub(crate) fn handshake<Side>(
    conn: &mut ConnectionCommon<Side>,
    tcp: &TcpStream,
    deadline: Instant,
) -> Result<(), String> {
    let mut ready = Vec::with_capacity(1);
    let mut io = tcp;
    while conn.is_handshaking() || conn.wants_write() {
        match conn.complete_io(&mut io) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err("TLS handshake not complete within the handshake timeout".into());
                }
                let interest = [Interest {
                    fd: tcp.as_raw_fd(),
                    read: conn.wants_read(),
                    write: conn.wants_write(),
                }];
                wake::wait(&interest, Some(deadline), &mut ready).map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(format!("TLS handshake failed: {e}")),
        }
    }
    Ok(())
}

/// Reads plaintext: what rustls has buffered first, then more records from the socket.
/// `WouldBlock` only when neither has anything, so a caller that reads until `WouldBlock`
/// never sleeps on buffered plaintext.
pub(crate) fn read<Side>(
    conn: &mut ConnectionCommon<Side>,
    tcp: &TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut io = tcp;
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        match conn.read_tls(&mut io)? {
            0 => return Ok(0),
            _ => {
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                // Alerts or key updates rustls wants to send go out now; a full socket is
                // fine, the next write or flush takes them.
                let _ = write_pending(conn, tcp);
            }
        }
    }
}

/// Encrypts `buf` (as much as rustls buffers) and writes what the socket takes.
pub(crate) fn write<Side>(
    conn: &mut ConnectionCommon<Side>,
    tcp: &TcpStream,
    buf: &[u8],
) -> io::Result<usize> {
    let n = conn.writer().write(buf)?;
    match write_pending(conn, tcp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => {}
        Err(e) => return Err(e),
    }
    if n == 0 {
        // rustls's buffer is full and the socket takes nothing: that is "would block", not
        // the zero-length write tungstenite reads as a reset.
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

/// Writes every TLS record rustls holds; `WouldBlock` if the socket is full.
pub(crate) fn write_pending<Side>(
    conn: &mut ConnectionCommon<Side>,
    tcp: &TcpStream,
) -> io::Result<()> {
    let mut io = tcp;
    while conn.wants_write() {
        conn.write_tls(&mut io)?;
    }
    Ok(())
}
