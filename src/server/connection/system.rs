//! The built-in `system` channel (docs/protocol.md §3), all of it: `auth` and `resume`, which
//! change the connection, and ping, status, info, threads, disconnect, subscribe,
//! unsubscribe, publish, register. They run inline on the connection thread: each is a few
//! microseconds of work and no I/O. Which role each needs is `security::authorization`'s.
#![forbid(unsafe_code)]

use std::sync::Arc;

use serde_json::{Value, json};

use super::Connection;
use crate::message::{self, Command, ErrorCode, ReplyTo, WireError};
use crate::server::context::ServerContext;
use crate::server::events::event::{Event, Priority};
use crate::server::events::session::Session;
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::registry::state::ConnState;
use crate::server::security::identity::{Credential, Identity};
use crate::server::status;

impl Connection {
    /// A `system` command from an authenticated client whose role allows it; `auth` and
    /// `resume` change the connection, the rest are answered from the server's state.
    pub(super) fn on_system(&mut self, identity: &Identity, cmd: Command) {
        match cmd.action.as_str() {
            "auth" => return self.late_auth(cmd),
            "resume" => return self.resume(cmd),
            _ => {}
        }
        let to = ReplyTo::from(&cmd);
        let session = self
            .session
            .clone()
            .expect("authenticated connections have a session");
        let result = answer(&self.ctx, &self.shared, identity, Some(&session), &cmd);
        self.send(match result {
            Ok(data) => message::response_ok(&to, &data),
            Err(err) => message::response_error(&to, &err),
        });
    }

    /// `system/auth`: authenticates a connection that upgraded without credentials (or
    /// replaces its identity and session).
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
}

/// Answers a stateless `system` action (the caller's role was checked). Without a session
/// (a command through the MQTT bridge) the actions that need one — subscriptions and
/// service registration — are refused with `unknown_action`.
pub(crate) fn answer(
    ctx: &ServerContext,
    caller: &Arc<ConnectionHandle>,
    identity: &Identity,
    session: Option<&Arc<Session>>,
    cmd: &Command,
) -> Result<Value, WireError> {
    let Some(session) = session else {
        return match cmd.action.as_str() {
            "subscribe" | "unsubscribe" | "register" | "auth" | "resume" => Err(WireError::new(
                ErrorCode::UnknownAction,
                format!(
                    "system/{} needs a WebSocket session; it is not available here",
                    cmd.action
                ),
            )),
            _ => answer_stateless(ctx, caller, identity, cmd),
        };
    };
    match cmd.action.as_str() {
        "subscribe" => {
            ctx.events
                .subscribe(session, &cmd.data, ctx.config.max_channels_per_session)
        }
        "unsubscribe" => ctx.events.unsubscribe(session, &cmd.data),
        "register" => ctx
            .services
            .register(|c| ctx.dispatch.has_handler(c), caller, &cmd.data),
        _ => answer_stateless(ctx, caller, identity, cmd),
    }
}

/// The `system` actions that need no session.
fn answer_stateless(
    ctx: &ServerContext,
    caller: &Arc<ConnectionHandle>,
    identity: &Identity,
    cmd: &Command,
) -> Result<Value, WireError> {
    match cmd.action.as_str() {
        "ping" => Ok(json!({"pong": true})),
        "status" => Ok(status::status_json(ctx)),
        "info" => Ok(status::info_object(ctx)),
        "threads" => {
            let threads = ctx.threads.dump(ctx.uptime_ms());
            Ok(json!({"count": threads.len(), "threads": threads}))
        }
        "disconnect" => disconnect(ctx, caller, identity, cmd),
        "publish" => publish(ctx, caller, &cmd.data),
        other => Err(WireError::new(
            ErrorCode::UnknownAction,
            format!("system has no action {other:?}"),
        )),
    }
}

fn disconnect(
    ctx: &ServerContext,
    caller: &ConnectionHandle,
    identity: &Identity,
    cmd: &Command,
) -> Result<Value, WireError> {
    let Some(id) = cmd.data.get("connection_id").and_then(Value::as_u64) else {
        return Err(WireError::new(
            ErrorCode::InvalidMessage,
            "system/disconnect needs data {\"connection_id\": <number>}",
        )
        .with_details(json!({"field": "data.connection_id"})));
    };
    let Some(target) = ctx.connection(id) else {
        return Err(WireError::new(
            ErrorCode::InvalidMessage,
            format!("no connection with id {id}"),
        )
        .with_details(json!({"connection_id": id})));
    };
    log::info!(
        "conn {} disconnected by {} (conn {})",
        id,
        identity.name,
        caller.id
    );
    let _ = target.push(
        Outbound::Close {
            code: 1008,
            reason: "disconnected by an administrator",
        },
        usize::MAX,
    );
    Ok(json!({"disconnected": id}))
}

/// `system/publish {"channel","action","data","reliable"?,"priority"?}` from a service.
/// The caller's direct writes are corked: its connection flushes them when its read round
/// ends (`connection::direct`).
fn publish(
    ctx: &ServerContext,
    caller: &ConnectionHandle,
    data: &Value,
) -> Result<Value, WireError> {
    let field = |k: &str| data.get(k).and_then(Value::as_str);
    let (Some(channel), Some(action)) = (field("channel"), field("action")) else {
        return Err(WireError::new(
            ErrorCode::InvalidMessage,
            "system/publish needs {\"channel\", \"action\", \"data\"?, \"reliable\"?, \"priority\"?}",
        ));
    };
    let priority = match field("priority") {
        None => Priority::Normal,
        Some(p) => Priority::from_name(p).ok_or_else(|| {
            WireError::new(
                ErrorCode::InvalidMessage,
                "priority must be high, normal or low",
            )
            .with_details(json!({"field": "priority"}))
        })?,
    };
    let mut event = Event::new(
        channel,
        action,
        data.get("data").cloned().unwrap_or(json!({})),
    )
    .priority(priority);
    if data.get("reliable").and_then(Value::as_bool) == Some(true) {
        event = event.reliable();
    }
    let mut corked = caller.corked.lock();
    let delivered_to = ctx
        .events
        .publish(&ctx.config, &ctx.metrics, event, Some(&mut corked))?;
    Ok(json!({"delivered_to": delivered_to}))
}
