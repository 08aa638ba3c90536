//! What comes from the client: frames read until the socket has no more (with backpressure
//! when the client does not take our output), read errors as close codes, and each message
//! counted against the rate and passed on.
#![forbid(unsafe_code)]

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tungstenite::{Error as WsError, Message};

use super::{Connection, Flow};
use crate::message::{self, ErrorCode, WireError};
use crate::server::events::direct;
use crate::server::registry::metrics::Metrics;
use crate::server::registry::state::ConnState;
use crate::wake;

impl Connection {
    /// Reads every complete frame available without blocking, then flushes what its
    /// publishes wrote to other connections.
    pub(super) fn read_frames(&mut self) -> Flow {
        let flow = self.read_available_frames();
        self.flush_corked();
        flow
    }

    /// Flushes the events this connection's publishes wrote to subscribers (corked).
    pub(super) fn flush_corked(&mut self) {
        self.messages_this_round = 0;
        let mut corked = self.shared.corked.lock();
        if !corked.is_empty() {
            direct::flush_corked(&mut corked);
        }
    }

    /// Reads and handles frames until the socket has no more, the client stops taking our
    /// output (backpressure), or the connection ends.
    pub(super) fn read_available_frames(&mut self) -> Flow {
        loop {
            let read = self.ws().read();
            let msg = match read {
                Ok(msg) => msg,
                Err(e) => return self.on_read_error(e),
            };
            let now = Instant::now();
            self.last_frame = now;
            if self.ping_sent.take().is_some() && self.shared.state() == ConnState::Heartbeat {
                self.shared
                    .set_state(ConnState::Connected, &self.ctx.metrics);
            }
            self.on_message(msg, now);
            self.messages_this_round += 1;
            if self.messages_this_round >= direct::CORK_EVENTS {
                self.flush_corked();
            }
            if self.ws().get_ref().output_pending() || self.write_blocked {
                // Backpressure: the client is not taking what we send (responses, pongs);
                // read nothing more until it does.
                self.write_blocked = true;
                return Flow::Continue;
            }
            if self.broken {
                return Flow::Stop;
            }
        }
    }

    /// What a read that returned no message means: nothing more to read now, the end, or a
    /// client error answered with its close code (1009, 1007, 1002).
    pub(super) fn on_read_error(&mut self, error: WsError) -> Flow {
        match error {
            WsError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.input_pending = false;
                Flow::Continue
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => Flow::Stop,
            WsError::Capacity(e) => {
                log::info!(
                    "conn {} {}: {e}; closing with 1009",
                    self.shared.id,
                    self.shared.peer
                );
                let err = WireError::new(
                    ErrorCode::MessageTooLarge,
                    format!(
                        "message larger than MaxMessageSize ({} bytes)",
                        self.ctx.config.max_message_size
                    ),
                );
                self.send(message::bare_error(&err));
                self.start_close(1009, "message too large");
                Flow::Continue
            }
            WsError::Utf8(_) => {
                self.start_close(1007, "invalid UTF-8 in text frame");
                self.fail_after_flush = true;
                Flow::Continue
            }
            WsError::Protocol(p) => self.on_protocol_error(p),
            e => {
                log::debug!(
                    "conn {} {}: read ended: {e}",
                    self.shared.id,
                    self.shared.peer
                );
                Flow::Stop
            }
        }
    }

    /// A frame that breaks RFC 6455: close 1002 (or stop, when closing already or reset).
    pub(super) fn on_protocol_error(&mut self, p: tungstenite::error::ProtocolError) -> Flow {
        if self.close_deadline.is_some() {
            return Flow::Stop;
        }
        log::info!(
            "conn {} {}: protocol error: {p}",
            self.shared.id,
            self.shared.peer
        );
        if matches!(
            p,
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
        ) {
            return Flow::Stop;
        }
        self.start_close(1002, "protocol error");
        self.fail_after_flush = true;
        Flow::Continue
    }

    /// One message read from the client. Text, binary and ping frames count against the
    /// connection's rate; before authentication only a text `system/auth` is accepted.
    pub(super) fn on_message(&mut self, msg: Message, now: Instant) {
        let counted = matches!(
            msg,
            Message::Text(_) | Message::Binary(_) | Message::Ping(_)
        );
        if counted {
            self.last_message = now;
            if !self.bucket.take(now) {
                return self.rate_limited();
            }
        }
        match msg {
            Message::Text(text) => self.on_text_frame(text.as_str()),
            Message::Binary(data) if self.echoes() => {
                if self.close_deadline.is_none() {
                    self.send_message(Message::Binary(data));
                }
            }
            Message::Binary(_) if self.identity.is_none() => self.fail_auth(
                None,
                "authenticate first: the only message accepted before authentication is a text system/auth command",
            ),
            Message::Binary(_) => {
                let err = WireError::new(
                    ErrorCode::InvalidMessage,
                    "binary frames are not accepted: send JSON text frames",
                );
                self.send(message::bare_error(&err));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                self.close_code.get_or_insert(code);
                // tungstenite queued the reply; flushing sends it, then the next read
                // reports the connection closed.
                if self.close_deadline.is_none() {
                    self.close_deadline = Some(wake::after(self.ctx.config.close_wait));
                    self.shared.set_state(ConnState::Closing, &self.ctx.metrics);
                }
            }
        }
    }

    /// A text message: echoed (EchoMode) or handled as a command, with a handler panic
    /// closing only this client (1011).
    pub(super) fn on_text_frame(&mut self, text: &str) {
        self.shared
            .last_activity_ms
            .store(self.ctx.uptime_ms(), Ordering::Relaxed);
        Metrics::add(&self.ctx.metrics.messages_in, 1);
        Metrics::add(&self.ctx.metrics.bytes_in, text.len() as u64);
        self.ctx
            .metrics
            .total_requests
            .fetch_add(1, Ordering::Relaxed);
        if self.close_deadline.is_some() {
            return;
        }
        if self.echoes() {
            return self.send_message(Message::Text(text.into()));
        }
        // Events queued before this message arrived go out before its response: a command
        // is a barrier for the client.
        self.drain_outbound();
        if catch_unwind(AssertUnwindSafe(|| self.on_text(text))).is_err() {
            log::error!(
                "conn {} {}: panic while handling a message; closing with 1011",
                self.shared.id,
                self.shared.peer
            );
            self.start_close(1011, "internal error");
        }
    }
}
