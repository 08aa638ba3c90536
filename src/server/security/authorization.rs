//! What each role may do (docs/protocol.md §3): the one table of the roles commands need.
#![forbid(unsafe_code)]

use serde_json::json;

use crate::message::{Command, ErrorCode, WireError};
use crate::server::security::identity::{Identity, Role};

/// The role each `system` action needs; `None` for actions that do not exist.
fn system_action_role(action: &str) -> Option<Role> {
    match action {
        "ping" | "status" | "info" | "subscribe" | "unsubscribe" | "auth" | "resume" => {
            Some(Role::Viewer)
        }
        "publish" | "register" => Some(Role::Service),
        "threads" | "disconnect" => Some(Role::Admin),
        _ => None,
    }
}

/// Whether `identity` may send `cmd`: `unknown_action` for a `system` action that does not
/// exist, `forbidden` (naming the role needed) when its role is too low. Commands on
/// application channels need `operator`.
pub(crate) fn authorize(identity: &Identity, cmd: &Command) -> Result<(), WireError> {
    let have = identity.role;
    if cmd.channel != "system" {
        if have.allows(Role::Operator) {
            return Ok(());
        }
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "role {} may not send commands on {}",
                have.as_str(),
                cmd.channel
            ),
        ));
    }
    let Some(required) = system_action_role(&cmd.action) else {
        return Err(WireError::new(
            ErrorCode::UnknownAction,
            format!(
                "system has no action {:?}; actions: ping, status, info, auth, subscribe, unsubscribe, resume, publish, threads, disconnect",
                cmd.action
            ),
        )
        .with_details(json!({"action": cmd.action})));
    };
    if have.allows(required) {
        return Ok(());
    }
    Err(WireError::new(
        ErrorCode::Forbidden,
        format!(
            "system/{} needs role {}; this connection has role {}",
            cmd.action,
            required.as_str(),
            have.as_str()
        ),
    ))
}
