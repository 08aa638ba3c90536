//! What a message from the client means: validation, authentication before anything else,
//! the system channel, routing to handlers and services, acks, resume.

use serde_json::{Value, json};

use super::system as system_channel;
use super::{Connection, InFlight, MAX_IN_FLIGHT};
use crate::message::{self, Command, ErrorCode, Incoming, ReplyTo, WireError};
use crate::server::dispatch::router;
use crate::server::registry::state::ConnState;
use crate::server::security::identity::{Credential, Role};
use crate::server::security::signature;
use crate::server::status;
use crate::wake;

impl Connection {
    pub(super) fn on_text(&mut self, text: &str) {
        let incoming = message::parse_incoming(text);
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
            Ok(Incoming::LegacyStatus) => self.send(status::status_object(&self.ctx).to_string()),
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

    pub(super) fn on_command(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        let seen_before = self
            .session
            .as_ref()
            .is_some_and(|s| s.recent_ids.lock().seen_before(&cmd.id));
        if seen_before {
            let err = WireError::new(
                ErrorCode::DuplicateId,
                format!("command id {:?} was already used in this session", cmd.id),
            );
            return self.send(message::response_error(&to, &err));
        }
        if self.ctx.shutdown.is_requested() {
            let err = WireError::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect later",
            );
            return self.send(message::response_error(&to, &err));
        }
        let identity = self
            .identity
            .clone()
            .expect("commands are only handled once authenticated");
        // Authorization first: a caller whose role does not allow the command is told so by
        // the command's own path, not asked for a signature.
        let permitted = if cmd.channel == "system" {
            system_channel::required_role(&cmd.action).is_none_or(|r| identity.role.allows(r))
        } else {
            identity.role.allows(Role::Operator)
        };
        let checked = if permitted {
            signature::check(&self.ctx.signed, &self.ctx.auth, &identity, &cmd)
        } else {
            Ok(())
        };
        if let Err(err) = checked {
            self.send(message::response_error(&to, &err));
            if err.code == ErrorCode::AuthFailed && self.violation() {
                self.start_close(1008, "too many failed message checks");
            }
            return;
        }
        if cmd.channel == "system" {
            if cmd.action == "auth" {
                return self.late_auth(cmd);
            }
            if cmd.action == "resume" {
                return self.resume(cmd);
            }
            let session = self
                .session
                .clone()
                .expect("authenticated connections have a session");
            let result = system_channel::handle(&self.ctx, &self.shared, &identity, &session, &cmd);
            return self.send(match result {
                Ok(data) => message::response_ok(&to, &data),
                Err(err) => message::response_error(&to, &err),
            });
        }
        if !identity.role.allows(Role::Operator) {
            let err = WireError::new(
                ErrorCode::Forbidden,
                format!(
                    "role {} may not send commands on {}",
                    identity.role.as_str(),
                    cmd.channel
                ),
            );
            return self.send(message::response_error(&to, &err));
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

    pub(super) fn late_auth(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        let credential = match (cmd.data.get("key"), cmd.data.get("token")) {
            (Some(Value::String(k)), _) => Credential::Key(k.clone()),
            (_, Some(Value::String(t))) => Credential::Bearer(t.clone()),
            _ => {
                return self.fail_auth(
                    Some(&to),
                    "system/auth needs data {\"key\": \"...\"} or {\"token\": \"...\"}",
                );
            }
        };
        match self.ctx.auth.verify(&credential) {
            Ok(identity) => {
                log::info!(
                    "conn {} {}: authenticated as {} ({})",
                    self.shared.id,
                    self.shared.peer,
                    identity.name,
                    identity.role.as_str()
                );
                let session_id = self.start_session(&identity);
                let mut data = json!({"role": identity.role.as_str(), "name": identity.name,
                    "connection_id": self.shared.id, "session_id": session_id});
                if let Some(tokens) = self.ctx.auth.session_tokens() {
                    data["session_token"] = json!(tokens.issue(&identity, &session_id));
                }
                *self.shared.identity.lock() = Some(identity.clone());
                self.identity = Some(identity);
                self.auth_deadline = None;
                if self.shared.state() == ConnState::Verifying {
                    self.shared
                        .set_state(ConnState::Connected, &self.ctx.metrics);
                }
                self.send(message::response_ok(&to, &data));
            }
            Err(why) => self.fail_auth(Some(&to), &why.0),
        }
    }

    /// `system/resume`: take over a detached session and replay what the client missed.
    pub(super) fn resume(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        let current = self
            .session
            .clone()
            .expect("authenticated connections have a session");
        // A session token names its session: {"session_token", "last_seq"} works like
        // {"session_id", "last_seq"}, and the token must still be valid.
        let mut data = cmd.data.clone();
        if let Some(token) = cmd.data.get("session_token").and_then(Value::as_str) {
            let Some(tokens) = self.ctx.auth.session_tokens() else {
                let err = WireError::new(
                    ErrorCode::InvalidMessage,
                    "this server issues no session tokens",
                );
                return self.send(message::response_error(&to, &err));
            };
            match tokens.verify(token) {
                Ok(claims) => data["session_id"] = json!(claims.session_id),
                Err(why) => {
                    return self.send(message::response_error(
                        &to,
                        &WireError::new(ErrorCode::AuthFailed, why),
                    ));
                }
            }
        }
        match self.ctx.events.resume(&current, &self.shared, &data) {
            Err(err) => self.send(message::response_error(&to, &err)),
            Ok(resumed) => {
                log::info!(
                    "conn {} {}: resumed session {} ({} events to replay)",
                    self.shared.id,
                    self.shared.peer,
                    resumed.session.id,
                    resumed.replay.len()
                );
                self.session = Some(resumed.session);
                // Events queued for the discarded session are not this client's any more.
                self.ack_timers.clear();
                self.send(message::response_ok(&to, &resumed.response));
                self.replay = resumed.replay.into();
            }
        }
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
