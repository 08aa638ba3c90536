//! Establishing one link: URL → TCP (connect timeout) → TLS → WebSocket upgrade (handshake
//! timeout), on a non-blocking socket so that every step is bounded by its deadline. HTTP
//! rejections are read into [`Error::Rejected`] with the server's error code.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::WebSocket;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;

use super::config::{ClientConfig, Credentials};
use super::dial::{self, ClientTlsSession};
use super::tls::{self, ClientTls};
use crate::deflate::{self, Deflate, negotiate};
use crate::error::Error;
use crate::raw_socket::RawSocket;
use crate::wake::{self, Interest};

/// tungstenite's read buffer per client (its default of 128 KiB is allocated eagerly).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The socket under a client's WebSocket: plain TCP or rustls over it.
#[derive(Debug)]
pub(crate) struct LinkStream {
    tcp: TcpStream,
    tls: Option<Box<ClientTlsSession>>,
    /// permessage-deflate, when the server accepted our offer.
    deflate: Option<Box<Deflate>>,
}

impl LinkStream {
    fn plain(tcp: TcpStream) -> LinkStream {
        LinkStream {
            tcp,
            tls: None,
            deflate: None,
        }
    }

    /// The socket (under TLS when there is TLS) and the deflate layer, borrowed apart.
    fn split(&mut self) -> (RawSocket<'_, ClientTlsSession>, Option<&mut Deflate>) {
        (
            RawSocket {
                tcp: &self.tcp,
                tls: self.tls.as_deref_mut(),
            },
            self.deflate.as_deref_mut(),
        )
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    /// Ends the TCP connection at once (no close handshake): for a link found dead.
    pub(crate) fn shutdown(&self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for LinkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (mut raw, d) = self.split();
        deflate::io::read(d, &mut raw, buf)
    }
}

impl Write for LinkStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (mut raw, d) = self.split();
        deflate::io::write(d, &mut raw, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        let (mut raw, d) = self.split();
        deflate::io::flush(d, &mut raw)
    }
}

pub(crate) type Socket = WebSocket<LinkStream>;

/// What the client needs to dial: the parsed URL and the TLS settings, built once.
pub(crate) struct Dialer {
    url: String,
    host: String,
    port: u16,
    tls: Option<ClientTls>,
    protocol: Option<String>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    max_message_size: usize,
    compression: deflate::Settings,
}

impl Dialer {
    /// Checks the URL and loads the TLS roots. Errors: `InvalidArgument` for a bad URL,
    /// `Tls` for an unreadable CA file or an empty system store.
    pub(crate) fn new(config: &ClientConfig) -> Result<Dialer, Error> {
        let request = config
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::InvalidArgument(format!("bad URL {:?}: {e}", config.url)))?;
        let uri = request.uri();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "bad URL {:?}: the scheme must be ws:// or wss://",
                    config.url
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::InvalidArgument(format!("bad URL {:?}: no host", config.url)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = if secure {
            Some(tls::client_config(&config.tls_roots)?)
        } else {
            None
        };
        Ok(Dialer {
            url: config.url.clone(),
            host,
            port,
            tls,
            protocol: config.protocol.clone(),
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
            max_message_size: config.max_message_size,
            compression: deflate::Settings {
                enabled: config.compression,
                context_takeover: config.compression_context_takeover,
                ..deflate::Settings::default()
            },
        })
    }

    /// One attempt: connect, TLS, upgrade. The socket is left non-blocking.
    pub(crate) fn dial(&self, credentials: Option<&Credentials>) -> Result<Socket, Error> {
        let tcp = self.connect_tcp()?;
        let deadline = wake::after(self.handshake_timeout);
        tcp.set_nonblocking(true)
            .map_err(|e| self.connect_error(e))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            Some(config) => self.secure(config, tcp, deadline)?,
            None => LinkStream::plain(tcp),
        };
        self.upgrade(stream, credentials, deadline)
    }

    /// The TLS handshake over `tcp`, verifying the server's name against the host.
    fn secure(
        &self,
        config: &ClientTls,
        tcp: TcpStream,
        deadline: Instant,
    ) -> Result<LinkStream, Error> {
        let tls = dial::tls_handshake(config, &tcp, &self.host, deadline)
            .map_err(|e| e.unwrap_or_else(|why| self.handshake_error(why)))?;
        Ok(LinkStream {
            tcp,
            tls: Some(tls),
            deflate: None,
        })
    }

    fn connect_tcp(&self) -> Result<TcpStream, Error> {
        dial::connect_tcp(&self.url, &self.host, self.port, self.connect_timeout)
    }

    fn upgrade(
        &self,
        stream: LinkStream,
        credentials: Option<&Credentials>,
        deadline: Instant,
    ) -> Result<Socket, Error> {
        let fd = stream.raw_fd();
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let headers = request.headers_mut();
        if let Some(p) = &self.protocol {
            let v = HeaderValue::from_str(p)
                .map_err(|_| Error::InvalidArgument(format!("bad protocol name {p:?}")))?;
            headers.insert("Sec-WebSocket-Protocol", v);
        }
        if let Some(c) = credentials {
            let mut v = HeaderValue::from_str(&c.header_value()).map_err(|_| {
                Error::InvalidArgument("credentials must be printable ASCII".into())
            })?;
            v.set_sensitive(true);
            headers.insert("Authorization", v);
        }
        if let Some(offer) = negotiate::client_offer(&self.compression) {
            let v = HeaderValue::from_str(&offer).expect("our offer is ASCII");
            headers.insert("Sec-WebSocket-Extensions", v);
        }
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        let mut attempt = tungstenite::client::client_with_config(request, stream, Some(ws_config));
        let mut ready = Vec::with_capacity(1);
        loop {
            match attempt {
                Ok((ws, response)) => return self.with_extensions(ws, &response),
                Err(HandshakeError::Failure(e)) => return Err(self.upgrade_error(e)),
                Err(HandshakeError::Interrupted(mid)) => {
                    if Instant::now() >= deadline {
                        return Err(self.handshake_error(format!(
                            "no upgrade response within the handshake timeout ({} ms)",
                            self.handshake_timeout.as_millis()
                        )));
                    }
                    let interest = [Interest {
                        fd,
                        read: true,
                        write: false,
                    }];
                    wake::wait(&interest, Some(deadline), &mut ready)
                        .map_err(|e| self.handshake_error(e.to_string()))?;
                    attempt = mid.handshake();
                }
            }
        }
    }

    /// Turns on what the server's `Sec-WebSocket-Extensions` accepted; a handshake error
    /// for an answer we cannot honour (RFC 7692 §5: the client fails the connection).
    fn with_extensions(
        &self,
        mut ws: Socket,
        response: &tungstenite::handshake::client::Response,
    ) -> Result<Socket, Error> {
        let answers = response
            .headers()
            .get_all(tungstenite::http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok());
        match negotiate::client_accept(answers, &self.compression) {
            Ok(Some(params)) => {
                let d = Deflate::new(params, &self.compression, self.max_message_size);
                ws.get_mut().deflate = Some(Box::new(d));
                Ok(ws)
            }
            Ok(None) => Ok(ws),
            Err(why) => Err(self.handshake_error(format!("permessage-deflate: {why}"))),
        }
    }

    fn connect_error(&self, source: io::Error) -> Error {
        Error::Connect {
            url: self.url.clone(),
            source,
        }
    }

    fn handshake_error(&self, message: impl Into<String>) -> Error {
        Error::Handshake {
            url: self.url.clone(),
            message: message.into(),
        }
    }

    fn upgrade_error(&self, e: tungstenite::Error) -> Error {
        match e {
            tungstenite::Error::Http(response) => {
                let retry_after = response
                    .headers()
                    // The typed name, not "Retry-After": parsing a name from a string runs
                    // http's HdrName scratch-buffer compare, which memcheck flags.
                    .get(tungstenite::http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body: Value = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                let text = |k: &str| {
                    body["error"][k]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_default()
                };
                Error::Rejected {
                    status: response.status().as_u16(),
                    code: text("code"),
                    message: text("message"),
                    retry_after,
                }
            }
            other => self.handshake_error(other.to_string()),
        }
    }
}

/// Whether a failed attempt is worth repeating: refusals that only a change of configuration
/// or credentials can fix are not.
pub(crate) fn is_fatal(error: &Error) -> bool {
    match error {
        Error::Rejected { status, .. } => matches!(status, 400 | 401 | 403 | 404 | 426),
        Error::InvalidArgument(_) | Error::Tls { .. } => true,
        _ => false,
    }
}

/// Whether a close code from the server allows reconnecting: not after a policy violation
/// (1008: authentication failed, session taken over, disconnected by an admin) or a protocol
/// or data error the same client would repeat.
pub(crate) fn close_allows_reconnect(code: u16) -> bool {
    !matches!(code, 1002 | 1003 | 1007 | 1008 | 1010)
}
