//! The connection's timers: shutdown flush and close, close-handshake deadline, late
//! authentication, heartbeat ping and pong timeout, idle timeout, redelivery of reliable
//! events, handler deadlines; and the next of them, which is how long the loop may sleep.
#![forbid(unsafe_code)]

use std::time::Instant;

use tungstenite::Message;

use super::{Connection, Flow, InFlight};
use crate::message::{self, ErrorCode, WireError};
use crate::server::events::bus::Redelivery;
use crate::server::registry::state::ConnState;
use crate::wake;

impl Connection {
    /// Fires due timers; returns Stop when the connection must end now.
    pub(super) fn check_timers(&mut self) -> Flow {
        let now = Instant::now();
        if self.ctx.shutdown.is_requested() && self.shutdown_step(now) == Flow::Stop {
            return Flow::Stop;
        }
        if let Some(d) = self.close_deadline {
            return if now >= d { Flow::Stop } else { Flow::Continue };
        }
        if self.auth_deadline.is_some_and(|d| now >= d) {
            self.fail_auth(
                None,
                "authentication timeout: send system/auth within AuthTimeoutMs",
            );
            return Flow::Continue;
        }
        if self.heartbeat_step(now) || self.idle_step(now) || self.redeliver_due(now) {
            return Flow::Continue;
        }
        self.expire_commands(now);
        Flow::Continue
    }

    /// Shutdown: half of CloseWaitMs to flush the queue and collect answers of commands
    /// still with a handler, the other half for the close handshake. Stop when the waits
    /// were skipped (a second signal).
    fn shutdown_step(&mut self, now: Instant) -> Flow {
        let config = &self.ctx.config;
        if self.ctx.shutdown.waits_skipped() {
            return Flow::Stop;
        }
        let close_wait = config.close_wait;
        let deadline = *self
            .shutdown_deadline
            .get_or_insert_with(|| wake::after(close_wait / 2));
        let flushed = self.rx.is_empty()
            && self.batch.is_empty()
            && !self.write_blocked
            && self.in_flight.is_empty();
        if self.close_deadline.is_none() && (flushed || now >= deadline) {
            for pending in std::mem::take(&mut self.in_flight) {
                if let Some(id) = &pending.forwarded_as {
                    self.ctx.services.forget(id);
                }
                let err = WireError::new(
                    ErrorCode::ShuttingDown,
                    "the server shut down before the handler answered",
                );
                self.send(message::response_error(&pending.to, &err));
            }
            self.start_close(1001, "server shutting down");
        }
        // The whole shutdown of this connection stays within CloseWaitMs of noticing it,
        // whatever ran first: a write-blocked client gets no extra half.
        let last = deadline + close_wait / 2;
        self.close_deadline = self.close_deadline.map(|d| d.min(last));
        Flow::Continue
    }

    /// Pings after HeartbeatIntervalMs of silence; closes 1011 when no frame follows within
    /// PongTimeoutMs. True when it started a close.
    fn heartbeat_step(&mut self, now: Instant) -> bool {
        let config = &self.ctx.config;
        match self.ping_sent {
            Some(sent) if now >= sent + config.pong_timeout => {
                log::info!(
                    "conn {} {}: no frame within {:?} of a ping; closing",
                    self.shared.id,
                    self.shared.peer,
                    config.pong_timeout
                );
                self.start_close(1011, "heartbeat timeout");
                true
            }
            None if now >= self.last_frame + config.heartbeat_interval => {
                self.ping_sent = Some(now);
                self.shared
                    .set_state(ConnState::Heartbeat, &self.ctx.metrics);
                self.send_message(Message::Ping(Default::default()));
                false
            }
            _ => false,
        }
    }

    /// Closes 1000 after IdleTimeout without a message, unless the client subscribes to
    /// something (a listener is not idle). True when it started a close.
    fn idle_step(&mut self, now: Instant) -> bool {
        let Some(idle) = self.ctx.config.idle_timeout else {
            return false;
        };
        if now < self.last_message + idle {
            return false;
        }
        if self.session.as_ref().is_some_and(|s| s.has_subscriptions()) {
            self.last_message = now;
            return false;
        }
        self.shared
            .set_state(ConnState::Inactive, &self.ctx.metrics);
        self.start_close(1000, "idle timeout");
        true
    }

    /// Sends again reliable events whose ack is overdue; closes 1008 after MaxRetries.
    /// True when it started a close.
    fn redeliver_due(&mut self, now: Instant) -> bool {
        let ctx = self.ctx.clone();
        let config = &ctx.config;
        while let Some(&(due, seq)) = self.ack_timers.front() {
            if now < due {
                break;
            }
            self.ack_timers.pop_front();
            let Some(session) = self.session.clone() else {
                break;
            };
            match self
                .ctx
                .events
                .redeliver(&session, seq, config.delivery.max_retries)
            {
                Redelivery::Acked => {}
                Redelivery::Resend(text) => {
                    self.send(text);
                    self.ack_timers
                        .push_back((wake::after(config.delivery.ack_timeout), seq));
                }
                Redelivery::GiveUp => {
                    log::info!(
                        "conn {} {}: event seq {seq} not acknowledged after {} redeliveries; closing",
                        self.shared.id,
                        self.shared.peer,
                        config.delivery.max_retries
                    );
                    self.start_close(1008, "events not acknowledged");
                    return true;
                }
            }
        }
        false
    }

    /// Answers `timeout` for commands whose handler or service has not answered within
    /// HandlerTimeoutMs, and tells the services to forget those they had.
    fn expire_commands(&mut self, now: Instant) {
        let handler_timeout = self.ctx.config.handler_timeout;
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|f| now >= f.deadline);
        self.in_flight = waiting;
        for InFlight {
            to, forwarded_as, ..
        } in expired
        {
            if let Some(id) = forwarded_as {
                self.ctx.services.forget(&id);
            }
            let err = WireError::new(
                ErrorCode::Timeout,
                format!(
                    "no response from the {} handler within {:?}",
                    to.channel, handler_timeout
                ),
            );
            self.send(message::response_error(&to, &err));
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let c = &self.ctx.config;
        if self.close_deadline.is_some() {
            return self.close_deadline;
        }
        let heartbeat = match self.ping_sent {
            Some(sent) => sent + c.pong_timeout,
            None => self.last_frame + c.heartbeat_interval,
        };
        wake::earliest([
            Some(heartbeat),
            self.auth_deadline,
            self.shutdown_deadline,
            c.idle_timeout.map(|i| self.last_message + i),
            self.in_flight.iter().map(|f| f.deadline).min(),
            self.ack_timers.front().map(|(due, _)| *due),
        ])
    }
}
