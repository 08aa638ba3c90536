//! Where a command on an application channel goes: its handler in this process first, else
//! the service connection that registered the channel, else `unknown_channel`.
#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::message::{Command, ErrorCode, WireError};
use crate::server::dispatch::handlers::Dispatcher;
use crate::server::dispatch::services::Services;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::security::identity::Identity;

/// Routes `command` from `conn` (authenticated as `identity`). Returns the id a service got
/// it under when a service has it (`None` for a handler). Errors (no handler or service,
/// shutting down, service overloaded) are for the caller to send at once.
pub(crate) fn route(
    handlers: &Dispatcher,
    services: &Services,
    conn: &Arc<ConnectionHandle>,
    identity: &Identity,
    command: Command,
) -> Result<Option<String>, WireError> {
    if let Some(handler) = handlers.handler_for(&command.channel) {
        return handlers
            .submit_command(handler, conn, identity, command)
            .map(|()| None);
    }
    match services.route(&command.channel) {
        Some(service) => services
            .forward(&service, conn, identity, &command)
            .map(Some),
        None => Err(WireError::new(
            ErrorCode::UnknownChannel,
            format!(
                "no handler or service is registered for channel {:?}",
                command.channel
            ),
        )
        .with_details(serde_json::json!({"channel": command.channel}))),
    }
}
