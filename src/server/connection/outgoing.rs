//! What goes to the client from other threads: the queue (handler answers, forwarded
//! commands, events, closes), events batched and written in priority order, the coalesced
//! status slot, and the redelivery timers of reliable events.
#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::Ordering;

use tungstenite::{Error as WsError, Message, WebSocket};

use super::Connection;
use crate::server::events::event::EventBody;
use crate::server::net::handshake;
use crate::server::net::stream::Transport;
use crate::server::registry::handle::Outbound;
use crate::server::registry::metrics::Metrics;
use crate::wake;

/// Events taken off the queue before they are written (and sorted by priority).
pub(super) const EVENT_BATCH: usize = 64;

impl Connection {
    /// Writes one event of the session and arms its redelivery timer when reliable.
    pub(super) fn send_event(&mut self, seq: u64, body: &EventBody, redelivered: bool) {
        self.send(body.text(seq, redelivered));
        if !redelivered {
            self.latency.observe(body.published.elapsed());
        }
        self.ctx
            .events
            .metrics
            .delivered
            .fetch_add(1, Ordering::Relaxed);
        if body.reliable {
            let due = wake::after(self.ctx.config.delivery.ack_timeout);
            self.ack_timers.push_back((due, seq));
        }
    }

    /// Takes queued messages while the socket accepts writes.
    pub(super) fn drain_outbound(&mut self) {
        if let Some(code) = self.shared.urgent_close()
            && self.close_deadline.is_none()
        {
            // Slow client: what is queued stays in its session for a resume.
            self.batch.clear();
            while self.rx.try_recv().is_ok() {
                self.shared.took_one();
            }
            self.start_close(code, "too slow: resume the session");
            return;
        }
        self.write_replay();
        self.write_batch();
        while self.replay.is_empty()
            && !self.write_blocked
            && self.close_deadline.is_none()
            && !self.broken
        {
            let Ok(msg) = self.rx.try_recv() else { break };
            self.shared.took_one();
            match msg {
                Outbound::Text(text) => {
                    self.write_batch();
                    self.send(text);
                }
                Outbound::Event { seq, body } => {
                    self.batch.push((seq, body));
                    if self.batch.len() >= EVENT_BATCH {
                        self.write_batch();
                    }
                }
                Outbound::Reply { id, text } => {
                    if let Some(i) = self.in_flight.iter().position(|f| f.to.id == id) {
                        self.in_flight.swap_remove(i);
                        self.send(text);
                    }
                }
                Outbound::Close { code, reason } => {
                    self.write_batch();
                    self.start_close(code, reason);
                }
            }
        }
        self.write_batch();
        if !self.write_blocked
            && self.close_deadline.is_none()
            && let Some(status) = self.shared.take_status()
        {
            self.send(status.to_string());
            self.ctx
                .events
                .metrics
                .status_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queued or batched output, a pending status, or an urgent close.
    pub(super) fn has_output_waiting(&self) -> bool {
        !self.replay.is_empty()
            || !self.rx.is_empty()
            || !self.batch.is_empty()
            || self.shared.has_status()
            || self.shared.urgent_close().is_some()
    }

    /// Writes what a resume replays, oldest first, until the socket stops accepting.
    fn write_replay(&mut self) {
        while !self.write_blocked && !self.broken && self.close_deadline.is_none() {
            let Some((seq, body)) = self.replay.pop_front() else {
                return;
            };
            self.send_event(seq, &body, true);
        }
    }

    /// Writes batched events, highest priority first (stable: publish order within a
    /// priority), until the socket stops accepting; the rest wait for the next round.
    pub(super) fn write_batch(&mut self) {
        if self.batch.is_empty() || self.close_deadline.is_some() {
            return;
        }
        self.batch.sort_by_key(|(_, body)| body.priority);
        let mut written = 0;
        while written < self.batch.len() && !self.write_blocked && !self.broken {
            let (seq, body) = self.batch[written].clone();
            self.send_event(seq, &body, false);
            written += 1;
        }
        self.batch.drain(..written);
    }
}

impl Connection {
    /// Writes a text message into tungstenite's buffer (flushed before the loop sleeps).
    pub(super) fn send(&mut self, text: String) {
        self.send_message(Message::Text(text.into()));
    }

    /// Writes `msg`; a client whose output passes the cap is dropped (`broken`).
    pub(super) fn send_message(&mut self, msg: Message) {
        let len = msg.len() as u64;
        let cap = handshake::write_buffer_cap(self.ctx.config.max_message_size, msg.len());
        let written = {
            let mut ws = self.ws();
            raise_write_cap(&mut ws, cap);
            ws.write(msg)
        };
        match written {
            Ok(()) => {}
            // The frame is in tungstenite's buffer; the socket is full for now.
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true
            }
            Err(WsError::WriteBufferFull(_)) => {
                log::info!(
                    "conn {} {}: not reading its responses; dropping it",
                    self.shared.id,
                    self.shared.peer
                );
                self.broken = true;
                return;
            }
            Err(e) => {
                log::debug!("conn {}: write failed: {e}", self.shared.id);
                self.broken = true;
                return;
            }
        }
        Metrics::add(&self.ctx.metrics.messages_out, 1);
        Metrics::add(&self.ctx.metrics.bytes_out, len);
    }

    /// Writes out what tungstenite holds; once everything is out, its output cap goes back
    /// to the base (a large event may have raised it, see `send_message`).
    pub(super) fn flush(&mut self) {
        self.ctx.metrics.publish_to_write.merge(&mut self.latency);
        let base = handshake::write_buffer_cap(self.ctx.config.max_message_size, 0);
        let flushed = {
            let mut ws = self.ws();
            let flushed = ws.flush();
            if flushed.is_ok() && ws.get_config().max_write_buffer_size != base {
                ws.set_config(|c| c.max_write_buffer_size = base);
            }
            flushed
        };
        match flushed {
            Ok(()) => self.write_blocked = false,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true
            }
            Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => self.broken = true,
            Err(e) => {
                log::debug!("conn {}: flush failed: {e}", self.shared.id);
                self.broken = true;
            }
        }
    }
}

/// Raises tungstenite's output cap to `cap` if it is lower, so that a message the server
/// itself sends (an event from a `Publisher`, which may pass MaxMessageSize) fits beside a
/// batch; clients' own messages never need it.
fn raise_write_cap(ws: &mut WebSocket<Transport>, cap: usize) {
    if ws.get_config().max_write_buffer_size < cap {
        ws.set_config(|c| c.max_write_buffer_size = cap);
    }
}
