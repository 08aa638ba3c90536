//! The built-in `system` channel (docs/protocol.md §3): ping, status, info, threads, disconnect.
//! These run inline on the connection thread: each is a few microseconds of work and no I/O.
//! (`auth` is handled by the connection itself, because it changes the connection's state.)

use std::sync::Arc;

use serde_json::{Value, json};

use crate::message::{Command, ErrorCode, WireError};
use crate::server::context::ServerContext;
use crate::server::events::event::{Event, Priority};
use crate::server::events::session::Session;
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::security::identity::{Identity, Role};
use crate::server::status;

/// The role each built-in action needs; `None` for actions that do not exist.
pub(crate) fn required_role(action: &str) -> Option<Role> {
    match action {
        "ping" | "status" | "info" | "subscribe" | "unsubscribe" => Some(Role::Viewer),
        "publish" | "register" => Some(Role::Service),
        "threads" | "disconnect" => Some(Role::Admin),
        _ => None,
    }
}

/// Runs a `system` command for an authenticated client; the result becomes the response.
pub(crate) fn handle(
    ctx: &ServerContext,
    caller: &Arc<ConnectionHandle>,
    identity: &Identity,
    session: &Arc<Session>,
    cmd: &Command,
) -> Result<Value, WireError> {
    let Some(required) = required_role(&cmd.action) else {
        let planned = false;
        let message = if planned {
            format!(
                "system/{} is not available in this version of the server",
                cmd.action
            )
        } else {
            format!(
                "system has no action {:?}; actions: ping, status, info, auth, subscribe, unsubscribe, resume, publish, threads, disconnect",
                cmd.action
            )
        };
        return Err(WireError::new(ErrorCode::UnknownAction, message)
            .with_details(json!({"action": cmd.action})));
    };
    if !identity.role.allows(required) {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "system/{} needs role {}; this connection has role {}",
                cmd.action,
                required.as_str(),
                identity.role.as_str()
            ),
        ));
    }
    match cmd.action.as_str() {
        "ping" => Ok(json!({"pong": true})),
        "status" => Ok(status::status_object(ctx)),
        "info" => Ok(status::info_object(ctx)),
        "threads" => {
            let threads = ctx.threads.dump(ctx.uptime_ms());
            Ok(json!({"count": threads.len(), "threads": threads}))
        }
        "disconnect" => disconnect(ctx, caller, identity, cmd),
        "subscribe" => {
            ctx.events
                .subscribe(session, &cmd.data, ctx.config.max_channels_per_session)
        }
        "unsubscribe" => ctx.events.unsubscribe(session, &cmd.data),
        "publish" => publish(ctx, caller, &cmd.data),
        "register" => ctx
            .services
            .register(|c| ctx.dispatch.has_handler(c), caller, &cmd.data),
        _ => unreachable!("required_role covers every action handled here"),
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
