//! Device controllers as WebSocket clients (the `service` role, docs/protocol.md §3): a service
//! connection registers channels, receives every client command on them (with a fresh id and
//! an `origin` object), and answers; its answers are routed back to the caller under the
//! caller's id. When the service goes away its channels are unregistered and what it still
//! owed gets `unavailable`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use crate::message::{
    self, Command, ErrorCode, ReplyTo, ServiceResponse, WireError, is_valid_name, timestamp_now,
};
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::security::identity::Identity;
use crate::server::status_types::ServiceFigures;

struct Pending {
    caller: Arc<ConnectionHandle>,
    to: ReplyTo,
    service_id: u64,
}

/// Channel → service connection, and the commands services still owe an answer. A forwarded
/// command's deadline is its caller's (the caller's connection answers `timeout` and then
/// [`Services::forget`]s it); a command is forgotten too when its caller or service ends.
pub(crate) struct Services {
    /// Commands a service connection may have queued before it counts as overloaded.
    queue_limit: usize,
    routes: RwLock<HashMap<String, Arc<ConnectionHandle>>>,
    pending: Mutex<HashMap<String, Pending>>,
    next_id: AtomicU64,
    forwarded: AtomicU64,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("channels", &self.routes.read().len())
            .finish()
    }
}

impl Services {
    /// No services yet; a service's queue holds at most `queue_limit` commands.
    pub(crate) fn new(queue_limit: usize) -> Self {
        Services {
            queue_limit,
            routes: RwLock::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        }
    }

    /// `system/register {"channels":[..]}`: `service` now handles those channels, unless
    /// `has_handler` says a handler in this process serves one already.
    pub(crate) fn register(
        &self,
        has_handler: impl Fn(&str) -> bool,
        service: &Arc<ConnectionHandle>,
        data: &Value,
    ) -> Result<Value, WireError> {
        let channels: Vec<String> = match data.get("channels").and_then(Value::as_array) {
            Some(items) if !items.is_empty() => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| is_valid_name(s) && !crate::message::is_reserved_channel(s))
                        .map(str::to_string)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    WireError::new(
                        ErrorCode::InvalidMessage,
                        "channels must be names matching [a-z0-9_.-]{1,64}, not system",
                    )
                })?,
            _ => {
                return Err(WireError::new(
                    ErrorCode::InvalidMessage,
                    "system/register needs {\"channels\": [names]}",
                )
                .with_details(json!({"field": "channels"})));
            }
        };
        let mut routes = self.routes.write();
        for c in &channels {
            if has_handler(c) {
                return Err(WireError::new(
                    ErrorCode::InvalidMessage,
                    format!("channel {c} is served by the server itself"),
                ));
            }
            if let Some(other) = routes.get(c)
                && other.id != service.id
            {
                return Err(WireError::new(
                    ErrorCode::InvalidMessage,
                    format!(
                        "channel {c} is already registered by connection {}",
                        other.id
                    ),
                )
                .with_details(json!({"channel": c, "connection_id": other.id})));
            }
        }
        for c in &channels {
            routes.insert(c.clone(), service.clone());
        }
        let mine: Vec<String> = routes
            .iter()
            .filter(|(_, s)| s.id == service.id)
            .map(|(c, _)| c.clone())
            .collect();
        log::info!(
            "conn {} {}: registered as the service for {:?}",
            service.id,
            service.peer,
            channels
        );
        Ok(json!({"channels": mine}))
    }

    /// The service connection handling `channel`, if any.
    pub(crate) fn route(&self, channel: &str) -> Option<Arc<ConnectionHandle>> {
        self.routes.read().get(channel).cloned()
    }

    /// Sends `command` from `caller` to `service` under a fresh id, which it returns. The
    /// caller's own timer (HandlerTimeoutMs) answers `timeout` if the service stays silent.
    pub(crate) fn forward(
        &self,
        service: &Arc<ConnectionHandle>,
        caller: &Arc<ConnectionHandle>,
        identity: &Identity,
        command: &Command,
    ) -> Result<String, WireError> {
        let fresh = format!("fwd-{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let text = json!({
            "type": "command", "id": fresh, "timestamp": timestamp_now(),
            "channel": command.channel, "action": command.action, "data": command.data,
            "origin": {"connection_id": caller.id, "identity": identity.name, "role": identity.role.as_str(), "id": command.id},
        })
        .to_string();
        self.pending.lock().insert(
            fresh.clone(),
            Pending {
                caller: caller.clone(),
                to: ReplyTo::from(command),
                service_id: service.id,
            },
        );
        if service
            .push(Outbound::Text(text), self.queue_limit)
            .is_err()
        {
            self.pending.lock().remove(&fresh);
            return Err(WireError::new(
                ErrorCode::Unavailable,
                format!("the {} service is overloaded; retry later", command.channel),
            ));
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(fresh)
    }

    /// A response from service connection `service_id`: route it to the caller.
    pub(crate) fn on_response(
        &self,
        service_id: u64,
        response: ServiceResponse,
    ) -> Result<(), WireError> {
        let pending = {
            let mut map = self.pending.lock();
            match map.get(&response.id) {
                Some(p) if p.service_id == service_id => map.remove(&response.id),
                _ => None,
            }
        };
        let Some(p) = pending else {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                format!(
                    "no command {:?} is waiting for this connection's answer (answered already, or timed out)",
                    response.id
                ),
            ));
        };
        let text = match response.result {
            Ok(data) => message::response_ok(&p.to, &data),
            Err(err) => message::response_error(&p.to, &err),
        };
        let _ = p.caller.push(
            Outbound::Reply {
                id: p.to.id.clone(),
                text,
            },
            usize::MAX,
        );
        Ok(())
    }

    /// The service connection `service_id` ended: unregister its channels and answer what
    /// it owed with `unavailable`.
    pub(crate) fn service_gone(&self, service_id: u64) {
        // Called for every connection that ends; most never registered anything, so look
        // under the read lock before taking the write lock that stalls command routing.
        if !self.routes.read().values().any(|s| s.id == service_id) {
            return;
        }
        let channels: Vec<String> = {
            let mut routes = self.routes.write();
            let mine: Vec<String> = routes
                .iter()
                .filter(|(_, s)| s.id == service_id)
                .map(|(c, _)| c.clone())
                .collect();
            for c in &mine {
                routes.remove(c);
            }
            mine
        };
        if channels.is_empty() {
            return;
        }
        log::info!("conn {service_id}: service gone; channels {channels:?} unregistered");
        let owed: Vec<Pending> = {
            let mut map = self.pending.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, p)| p.service_id == service_id)
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for p in owed {
            let err = WireError::new(
                ErrorCode::Unavailable,
                format!("the {} service disconnected before answering", p.to.channel),
            );
            let _ = p.caller.push(
                Outbound::Reply {
                    id: p.to.id.clone(),
                    text: message::response_error(&p.to, &err),
                },
                usize::MAX,
            );
        }
    }

    /// Forgets the forwarded command `forwarded_id`: its caller answered `timeout` or went
    /// away, so a late answer has nobody to go to.
    pub(crate) fn forget(&self, forwarded_id: &str) {
        self.pending.lock().remove(forwarded_id);
    }

    /// Figures for status.
    pub(crate) fn figures(&self) -> ServiceFigures {
        ServiceFigures {
            service_channels: self.routes.read().len(),
            forwarded_commands: self.forwarded.load(Ordering::Relaxed),
            forwarded_pending: self.pending.lock().len(),
        }
    }
}
