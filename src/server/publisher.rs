//! [`Publisher`]: how application code (a controller embedding the server) publishes events.
#![forbid(unsafe_code)]

use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::message::{ErrorCode, WireError};
use crate::server::context::ServerContext;
use crate::server::events::event::Event;

/// Publishes events from application code (a controller embedding the server). Cheap to
/// clone; usable from any thread. Publishing never blocks on clients.
#[derive(Clone, Debug)]
pub struct Publisher {
    pub(crate) ctx: Arc<ServerContext>,
}

impl Publisher {
    /// Publishes an unreliable, normal-priority event; returns how many subscribers got it.
    pub fn publish(&self, channel: &str, action: &str, data: Value) -> Result<usize, Error> {
        self.publish_event(Event::new(channel, action, data))
    }

    /// Publishes `event`; returns how many subscribers got it. Errors ([`Error::Refused`]): `invalid_message` for
    /// a bad channel or action name, `shutting_down` once shutdown began.
    pub fn publish_event(&self, event: Event) -> Result<usize, Error> {
        if self.ctx.shutdown.is_requested() {
            return Err(Error::Refused(WireError::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            )));
        }
        // Direct writes are corked and flushed by `hws-flush`: the caller's thread only
        // copies frames, and a burst of publishes goes out in one send per subscriber.
        let mut corked = Vec::new();
        let delivered = self.ctx.events.publish(
            &self.ctx.config,
            &self.ctx.metrics,
            event,
            Some(&mut corked),
        );
        self.ctx.flusher.hand_over(&mut corked);
        delivered.map_err(Error::Refused)
    }
}
