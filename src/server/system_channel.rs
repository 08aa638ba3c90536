//! The built-in `system` channel (SPEC §7): ping, status, info, threads, disconnect. These
//! run inline on the connection thread: each is a few microseconds of work and no I/O.
//! (`auth` is handled by the connection itself, because it changes the connection's state.)

use serde_json::{Value, json};

use crate::message::{Command, ErrorCode, WireError};
use crate::server::auth::{Identity, Role};
use crate::server::context::{ConnectionShared, Outbound, ServerContext};
use crate::server::status;

/// The role each built-in action needs; `None` for actions that do not exist.
fn required_role(action: &str) -> Option<Role> {
    match action {
        "ping" | "status" | "info" => Some(Role::Viewer),
        "threads" | "disconnect" => Some(Role::Admin),
        _ => None,
    }
}

/// Runs a `system` command for an authenticated client; the result becomes the response.
pub(crate) fn handle(
    ctx: &ServerContext,
    caller: &ConnectionShared,
    identity: &Identity,
    cmd: &Command,
) -> Result<Value, WireError> {
    let Some(required) = required_role(&cmd.action) else {
        let planned = matches!(
            cmd.action.as_str(),
            "subscribe" | "unsubscribe" | "resume" | "register" | "publish"
        );
        let message = if planned {
            format!(
                "system/{} is not available in this version of the server",
                cmd.action
            )
        } else {
            format!(
                "system has no action {:?}; actions: ping, status, info, auth, threads, disconnect",
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
            let threads = ctx.threads.dump(ctx);
            Ok(json!({"count": threads.len(), "threads": threads}))
        }
        "disconnect" => disconnect(ctx, caller, identity, cmd),
        _ => unreachable!("required_role covers every action handled here"),
    }
}

fn disconnect(
    ctx: &ServerContext,
    caller: &ConnectionShared,
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
