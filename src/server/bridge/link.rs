//! One connection to the broker: TCP (and TLS for `mqtts://`) on a non-blocking socket,
//! MQTT packets encoded and decoded by the `mqtt-protocol` crate, an output buffer the
//! bridge's thread flushes as the socket takes it, and CONNECT → CONNACK bounded by the
//! connect timeout.
#![forbid(unsafe_code)]

use std::io::{self, Cursor, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mqtt::control::FixedHeader;
use mqtt::control::fixed_header::FixedHeaderError;
use mqtt::control::variable_header::ConnectReturnCode;
use mqtt::packet::{ConnectPacket, VariablePacket};
use mqtt::{Decodable, Encodable, TopicName};

use crate::client::dial::{self, ClientTlsSession};
use crate::client::tls::ClientTls;
use crate::config::{MqttConfig, MqttUrl};
use crate::raw_socket::RawSocket;
use crate::wake::{self, Interest};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// The TCP connect gets at least this long, even when the deadline is nearly spent.
const MIN_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// What the broker is told at CONNECT: who we are, and the last will it publishes for us.
pub(super) struct Hello<'a> {
    pub config: &'a MqttConfig,
    pub will_topic: &'a str,
    pub will_payload: Vec<u8>,
}

/// A live connection to the broker.
pub(super) struct BrokerLink {
    tcp: TcpStream,
    tls: Option<Box<ClientTlsSession>>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Largest packet accepted from the broker; a larger one ends the link.
    max_packet: usize,
}

impl BrokerLink {
    /// Connects, sends CONNECT (clean session, keep-alive, will) and waits for CONNACK, all
    /// by `deadline`. Errors say why, for the log.
    pub(super) fn open(
        url: &MqttUrl,
        tls: Option<&ClientTls>,
        hello: &Hello<'_>,
        max_packet: usize,
        deadline: Instant,
    ) -> Result<BrokerLink, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let target = format!("mqtt broker {}:{}", url.host, url.port);
        let tcp = dial::connect_tcp(&target, &url.host, url.port, left.max(MIN_CONNECT_WAIT))
            .map_err(|e| e.to_string())?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tls = match tls {
            Some(config) => Some(
                dial::tls_handshake(config, &tcp, &url.host, deadline)
                    .map_err(|e| e.map_or_else(|why| why, |e| e.to_string()))?,
            ),
            None => None,
        };
        let mut link = BrokerLink {
            tcp,
            tls,
            input: Vec::new(),
            output: Vec::new(),
            max_packet,
        };
        link.send(&connect_packet(hello)?);
        link.await_connack(deadline)?;
        Ok(link)
    }

    /// Flushes CONNECT and reads until CONNACK arrives (accepted) or `deadline` passes.
    fn await_connack(&mut self, deadline: Instant) -> Result<(), String> {
        let mut packets = Vec::new();
        let mut ready = Vec::with_capacity(1);
        loop {
            self.flush().map_err(|e| format!("sending CONNECT: {e}"))?;
            self.receive(&mut packets)
                .map_err(|e| format!("waiting for CONNACK: {e}"))?;
            if let Some(first) = packets.first() {
                return match first {
                    VariablePacket::ConnackPacket(ack) => match ack.connect_return_code() {
                        ConnectReturnCode::ConnectionAccepted => Ok(()),
                        code => Err(format!(
                            "the broker refused the connection: {}",
                            refusal(code)
                        )),
                    },
                    other => Err(format!("the broker answered CONNECT with {other:?}")),
                };
            }
            if Instant::now() >= deadline {
                return Err("no CONNACK within ConnectTimeoutMs".into());
            }
            let interest = [self.interest(usize::MAX)];
            wake::wait(&interest, Some(deadline), &mut ready).map_err(|e| e.to_string())?;
        }
    }

    /// Appends `packet` to the output buffer (sent by [`BrokerLink::flush`]).
    pub(super) fn send(&mut self, packet: &impl Encodable) {
        // Writing into a Vec cannot fail.
        let _ = packet.encode(&mut self.output);
    }

    /// Bytes not yet taken by the socket.
    pub(super) fn unsent(&self) -> usize {
        self.output.len()
    }

    /// Writes what the socket takes now. Errors: the link is gone.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.output.len() {
                break self.socket().flush();
            }
            let chunk = &self.output[written..];
            let mut raw = RawSocket {
                tcp: &self.tcp,
                tls: self.tls.as_deref_mut(),
            };
            match raw.write(chunk) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.output.drain(..written);
        if self.output.capacity() > 64 * 1024 && self.output.len() < 4096 {
            self.output.shrink_to(4096);
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn socket(&mut self) -> RawSocket<'_, ClientTlsSession> {
        RawSocket {
            tcp: &self.tcp,
            tls: self.tls.as_deref_mut(),
        }
    }

    /// Reads until the socket has nothing more and decodes every whole packet into
    /// `packets`. Errors: the broker closed the link, or sent what is not MQTT.
    pub(super) fn receive(&mut self, packets: &mut Vec<VariablePacket>) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.socket().read(&mut chunk) {
                // What came before the end is handled first; the next call reports it.
                Ok(0) if !packets.is_empty() => return Ok(()),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.decode(packets)?;
        }
        self.decode(packets)
    }

    /// Moves every whole packet at the front of the input into `packets`.
    fn decode(&mut self, packets: &mut Vec<VariablePacket>) -> io::Result<()> {
        decode_packets(&mut self.input, self.max_packet, packets)
    }

    /// What to poll the socket for: reading unless `read_stop` bytes wait to be sent.
    pub(super) fn interest(&self, read_stop: usize) -> Interest {
        Interest {
            fd: self.raw_fd(),
            read: self.output.len() < read_stop,
            write: !self.output.is_empty(),
        }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

/// Moves every whole packet at the front of `input` (bytes from the broker) into `packets`.
/// Errors: what is not MQTT, or a packet over `max` bytes (the link is then dropped).
pub(crate) fn decode_packets(
    input: &mut Vec<u8>,
    max: usize,
    packets: &mut Vec<VariablePacket>,
) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut used = 0;
    while let Some(len) = whole_packet(&input[used..], max).map_err(bad)? {
        let mut bytes = &input[used..used + len];
        let packet = VariablePacket::decode(&mut bytes)
            .map_err(|e| bad(format!("the broker sent a malformed packet: {e}")))?;
        packets.push(packet);
        used += len;
    }
    input.drain(..used);
    Ok(())
}

/// The length of the packet at the front of `input` when all of it is there; `None` when more
/// is needed. Errors: a header that is not MQTT, or a packet over `max` bytes.
fn whole_packet(input: &[u8], max: usize) -> Result<Option<usize>, String> {
    let header = match FixedHeader::decode(&mut Cursor::new(input)) {
        Ok(h) => h,
        Err(FixedHeaderError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(None);
        }
        Err(e) => return Err(format!("the broker sent a bad packet header: {e}")),
    };
    let total = header.encoded_length() as usize + header.remaining_length as usize;
    if total > max {
        return Err(format!(
            "the broker sent a packet of {total} bytes; at most {max} are accepted"
        ));
    }
    Ok((input.len() >= total).then_some(total))
}

/// What a CONNACK's refusal means, for the log.
fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::UnacceptableProtocolVersion => "it does not speak MQTT 3.1.1",
        ConnectReturnCode::IdentifierRejected => "ClientId rejected",
        ConnectReturnCode::ServiceUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNameOrPassword => "bad Username or Password",
        ConnectReturnCode::NotAuthorized => "not authorized (check Username and Password)",
        _ => "unknown reason",
    }
}

/// CONNECT: clean session, keep-alive, credentials, and the will (retained, QoS 1).
fn connect_packet(hello: &Hello<'_>) -> Result<ConnectPacket, String> {
    let config = hello.config;
    let mut packet = ConnectPacket::new(config.client_id.clone());
    packet.set_clean_session(true);
    packet.set_keep_alive(config.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16);
    packet.set_user_name(config.username.clone());
    packet.set_password(config.password.as_ref().map(|p| p.expose().to_owned()));
    let topic = TopicName::new(hello.will_topic).map_err(|e| e.to_string())?;
    packet.set_will(Some((topic, hello.will_payload.clone())));
    packet.set_will_retain(true);
    packet.set_will_qos(1);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::packet::PingrespPacket;

    #[test]
    fn packets_are_framed_by_their_header() {
        let mut bytes = Vec::new();
        PingrespPacket::new().encode(&mut bytes).unwrap();
        assert_eq!(whole_packet(&bytes, 100), Ok(Some(2)));
        assert_eq!(whole_packet(&bytes[..1], 100), Ok(None));
        // PUBLISH claiming 200 bytes: too big for a limit of 100, whatever follows.
        assert!(whole_packet(&[0x30, 0xC8, 0x01], 100).is_err());
        assert_eq!(whole_packet(&[0x30, 0x05, 0, 1], 100), Ok(None));
    }
}
