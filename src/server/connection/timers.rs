//! The connection's timers: shutdown flush and close, close-handshake deadline, late
//! authentication, heartbeat ping and pong timeout, idle timeout, redelivery of reliable
//! events, handler deadlines; and the next of them, which is how long the loop may sleep.

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
        let ctx = self.ctx.clone();
        let config = &ctx.config;
        if self.ctx.shutdown.is_requested() {
            if self.ctx.shutdown.waits_skipped() {
                return Flow::Stop;
            }
            // Half of CloseWaitMs to flush the queue and collect answers of commands still
            // with a handler; the other half for the close handshake.
            let deadline = *self
                .shutdown_deadline
                .get_or_insert_with(|| wake::after(config.close_wait / 2));
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
            // The whole shutdown of this connection stays within CloseWaitMs of noticing
            // it, whatever ran first: a write-blocked client gets no extra half.
            let last = deadline + config.close_wait / 2;
            self.close_deadline = self.close_deadline.map(|d| d.min(last));
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
        match self.ping_sent {
            Some(sent) if now >= sent + config.pong_timeout => {
                log::info!(
                    "conn {} {}: no frame within {:?} of a ping; closing",
                    self.shared.id,
                    self.shared.peer,
                    config.pong_timeout
                );
                self.start_close(1011, "heartbeat timeout");
                return Flow::Continue;
            }
            None if now >= self.last_frame + config.heartbeat_interval => {
                self.ping_sent = Some(now);
                self.shared
                    .set_state(ConnState::Heartbeat, &self.ctx.metrics);
                self.send_message(Message::Ping(Default::default()));
            }
            _ => {}
        }
        if let Some(idle) = config.idle_timeout
            && now >= self.last_message + idle
        {
            // A subscriber is listening, not idle; the heartbeat watches its liveness.
            if self.session.as_ref().is_some_and(|s| s.has_subscriptions()) {
                self.last_message = now;
            } else {
                self.shared
                    .set_state(ConnState::Inactive, &self.ctx.metrics);
                self.start_close(1000, "idle timeout");
                return Flow::Continue;
            }
        }
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
                    return Flow::Continue;
                }
            }
        }
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
                    to.channel, config.handler_timeout
                ),
            );
            self.send(message::response_error(&to, &err));
        }
        Flow::Continue
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
