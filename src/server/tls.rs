//! TLS (`SecureMode: "tls"`): a rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3) from PEM
//! files, parsed with rustls-pki-types; and the non-blocking TLS handshake, bounded by the
//! handshake deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;
use crate::wake::{self, Interest};

fn tls_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Tls {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Loads the certificate chain and private key. Errors ([`Error::Tls`], exit code 4) name
/// the file and say what is wrong with it.
pub(crate) fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| tls_error(cert_path, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(cert_path, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        tls_error(
            key_path,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls_error(
                key_path,
                format!("certificate and key do not make a usable pair: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on a non-blocking socket until it completes, fails, or `deadline`
/// passes. Returns why it failed, for the log.
pub(crate) fn handshake(
    conn: &mut rustls::ServerConnection,
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
pub(crate) fn read(
    conn: &mut rustls::ServerConnection,
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
pub(crate) fn write(
    conn: &mut rustls::ServerConnection,
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
pub(crate) fn write_pending(
    conn: &mut rustls::ServerConnection,
    tcp: &TcpStream,
) -> io::Result<()> {
    let mut io = tcp;
    while conn.wants_write() {
        conn.write_tls(&mut io)?;
    }
    Ok(())
}
