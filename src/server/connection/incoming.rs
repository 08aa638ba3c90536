//! What a message from the client means: validation, authentication before anything else,
//! the system channel, routing to handlers and services, acks, resume.
#![forbid(unsafe_code)]

use serde_json::json;

use super::{Connection, InFlight, MAX_IN_FLIGHT};
use crate::message::{self, Command, ErrorCode, Incoming, ReplyTo, WireError};
use crate::server::context::ServerContext;
use crate::server::dispatch::router;
use crate::server::security::authorization;
use crate::server::security::identity::{Identity, Role};
use crate::server::security::signature;
use crate::server::status;
use crate::wake;

impl Connection {
    pub(super) fn on_text(&mut self, text: &str) {
        let incoming = message::parse_incoming(text);
        if matches!(
            incoming,
            Ok(Incoming::Command(_) | Incoming::Ack { .. } | Incoming::Response(_))
        ) {
            self.spoke_envelope();
        }
        if self.identity.is_none() {
            return match incoming {
                Ok(Incoming::Command(cmd)) if cmd.channel == "system" && cmd.action == "auth" => {
                    self.late_auth(cmd)
                }
                other => {
                    let to = match &other {
                        Ok(Incoming::Command(c)) => Some(ReplyTo::from(c)),
                        Err(inv) => inv.reply_to.clone(),
                        _ => None,
                    };
                    self.fail_auth(to.as_ref(), "authenticate first: the only command accepted before authentication is system/auth");
                }
            };
        }
        match incoming {
            Err(invalid) => self.send(message::error_reply(
                invalid.reply_to.as_ref(),
                &invalid.error,
            )),
            Ok(Incoming::LegacyStatus) => self.send(status::status_json(&self.ctx).to_string()),
            Ok(Incoming::Ack { id }) => {
                let known = self
                    .session
                    .as_ref()
                    .is_some_and(|s| self.ctx.events.ack(s, Some(&id), None));
                if !known {
                    log::debug!("conn {}: ack {id} for no outstanding event", self.shared.id);
                }
            }
            Ok(Incoming::Command(cmd)) => self.on_command(cmd),
            Ok(Incoming::Response(response)) => {
                let id = response.id.clone();
                let is_service = self
                    .identity
                    .as_ref()
                    .is_some_and(|i| i.role.allows(Role::Service));
                let routed = if is_service {
                    self.ctx.services.on_response(self.shared.id, response)
                } else {
                    Err(WireError::new(
                        ErrorCode::Forbidden,
                        "only service connections send responses",
                    ))
                };
                if let Err(err) = routed {
                    let err = err.with_details(json!({"id": id}));
                    self.send(message::bare_error(&err));
                }
            }
        }
    }

    /// The client's first envelope message: it gets its welcome now, right before the
    /// answer, and LegacyStatusPush stops.
    fn spoke_envelope(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        // Once: a store per message would keep dirtying the handle's cache line, which
        // publishers on other threads read.
        if !self.shared.spoke_envelope.load(Relaxed) {
            self.shared.spoke_envelope.store(true, Relaxed);
        }
        if let Some(welcome) = self.welcome.take() {
            self.send(welcome);
        }
    }

    /// A command from an authenticated client: checked (fresh id, not shutting down, the
    /// role, the signature), then answered by the system channel or routed to its handler
    /// or service.
    pub(super) fn on_command(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        let identity = self
            .identity
            .clone()
            .expect("commands are only handled once authenticated");
        if let Err(err) = self.check_command(&identity, &cmd) {
            self.send(message::response_error(&to, &err));
            if err.code == ErrorCode::AuthFailed && self.violation() {
                self.start_close(1008, "too many failed message checks");
            }
            return;
        }
        if cmd.channel == "system" {
            return self.on_system(&identity, cmd);
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let err = WireError::new(
                ErrorCode::RateLimited,
                format!(
                    "{MAX_IN_FLIGHT} commands already wait for a handler; wait for their responses"
                ),
            );
            return self.send(message::response_error(&to, &err));
        }
        let ctx = &self.ctx;
        match router::route(&ctx.dispatch, &ctx.services, &self.shared, &identity, cmd) {
            Ok(forwarded_as) => self.in_flight.push(InFlight {
                to,
                deadline: wake::after(self.ctx.config.handler_timeout),
                forwarded_as,
            }),
            Err(err) => self.send(message::response_error(&to, &err)),
        }
    }

    /// What may refuse a command before it runs ([`check_command`]), its id looked up in
    /// the session's recent ones.
    fn check_command(&self, identity: &Identity, cmd: &Command) -> Result<(), WireError> {
        let seen_before = self
            .session
            .as_ref()
            .is_some_and(|s| s.recent_ids.lock().seen_before(&cmd.id));
        check_command(&self.ctx, identity, cmd, seen_before, "this session")
    }

    /// A message over the connection's rate: dropped with `rate_limited`; enough of them
    /// (with other violations from the address) close the connection and block the address.
    pub(super) fn rate_limited(&mut self) {
        self.ctx.metrics.count_rejection("rate_limited");
        let limits = self.ctx.limits.config();
        let err = WireError::new(
            ErrorCode::RateLimited,
            format!(
                "over {} messages per second (burst {}): message dropped; slow down",
                limits.messages_per_second, limits.burst
            ),
        );
        self.send(message::bare_error(&err));
        if self.violation() {
            self.start_close(1008, "rate limit exceeded");
        }
    }

    /// Counts a violation (over the rate, a bad signature or token on a message). Before
    /// authentication it counts against the address, which gets blocked after
    /// ViolationsBeforeBlock; once authenticated, against this connection only, so one
    /// client cannot lock out every other user of its address. True when the limit is
    /// reached.
    pub(super) fn violation(&mut self) -> bool {
        if self.identity.is_none() {
            return self.ctx.limits.violation(self.shared.peer.ip());
        }
        self.violations += 1;
        self.violations >= self.ctx.limits.config().violations_before_block
    }

    /// `auth_failed` (as a response when the id is known) and close 1008.
    pub(super) fn fail_auth(&mut self, to: Option<&ReplyTo>, why: &str) {
        log::info!(
            "conn {} {}: authentication failed: {why}",
            self.shared.id,
            self.shared.peer
        );
        self.ctx.metrics.count_rejection("auth_failed");
        self.ctx.limits.violation(self.shared.peer.ip());
        let err = WireError::new(ErrorCode::AuthFailed, why);
        self.send(message::error_reply(to, &err));
        self.rejected = true;
        self.start_close(1008, "authentication failed");
    }
}

/// What may refuse a command before it runs, wherever it came from (a WebSocket, the MQTT
/// bridge): an id `seen_before` in `scope`, shutdown, the caller's role (told so by the
/// command's own path, not asked for a signature), its `auth` object.
pub(crate) fn check_command(
    ctx: &ServerContext,
    identity: &Identity,
    cmd: &Command,
    seen_before: bool,
    scope: &str,
) -> Result<(), WireError> {
    if seen_before {
        return Err(WireError::new(
            ErrorCode::DuplicateId,
            format!("command id {:?} was already used in {scope}", cmd.id),
        ));
    }
    if ctx.shutdown.is_requested() {
        return Err(WireError::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down; reconnect later",
        ));
    }
    authorization::authorize(identity, cmd)?;
    signature::check(&ctx.signed, &ctx.auth, identity, cmd)
}
