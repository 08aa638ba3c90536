//! Admission of an upgrade request: the subprotocol, the credentials (header or query), the
//! address's block and handshake rate, and a MaxConnections / MaxConnectionsPerIp slot.

use crate::server::auth::{Credential, Identity};
use crate::server::context::{ConnState, ConnectionShared, ServerContext};
use crate::server::handshake::{Rejection, RequestHead};

pub(super) struct Admitted {
    pub(super) protocol: Option<String>,
    pub(super) identity: Option<Identity>,
}

/// Subprotocol, credentials, limits; on success a MaxConnections slot is taken.
pub(super) fn admit(
    ctx: &ServerContext,
    conn: &ConnectionShared,
    head: &RequestHead,
) -> Result<Admitted, Rejection> {
    let config = &ctx.config;
    let ip = conn.peer.ip();
    if let Some(left) = ctx.limits.blocked_for(ip) {
        let secs = left.as_secs() + 1;
        return Err(Rejection::new(
            429,
            "Too Many Requests",
            "rate_limited",
            format!("{ip} is blocked for {secs} more seconds after repeated violations"),
        )
        .header("Retry-After", secs.to_string()));
    }
    if !ctx.limits.admit_handshake(ip) {
        return Err(Rejection::new(
            429,
            "Too Many Requests",
            "rate_limited",
            format!(
                "more than {} upgrade attempts from {ip} this minute (HandshakesPerMinutePerIp)",
                ctx.limits.config().handshakes_per_minute_per_ip
            ),
        )
        .header("Retry-After", "60"));
    }
    let protocol = head
        .protocols
        .iter()
        .find(|p| **p == config.protocol)
        .cloned();
    if protocol.is_none() && config.require_protocol {
        let offered = if head.protocols.is_empty() {
            "none".to_string()
        } else {
            head.protocols.join(", ")
        };
        return Err(Rejection::new(
            400,
            "Bad Request",
            "invalid_protocol",
            format!(
                "subprotocol {:?} is required (Sec-WebSocket-Protocol); offered: {offered}",
                config.protocol
            ),
        ));
    }
    let identity = match credential(head) {
        Some(Ok(cred)) => match ctx.auth.verify(&cred) {
            Ok(identity) => Some(identity),
            Err(why) => return Err(unauthorized(why.0)),
        },
        Some(Err(why)) => return Err(unauthorized(why)),
        None => ctx.auth.anonymous(),
    };
    if ctx.shutdown.is_requested() {
        return Err(Rejection::new(
            503,
            "Service Unavailable",
            "shutting_down",
            "the server is shutting down",
        )
        .header("Retry-After", "5"));
    }
    let mut registry = ctx.connections.lock();
    if registry.established >= config.max_connections {
        return Err(Rejection::new(
            503,
            "Service Unavailable",
            "server_busy",
            format!(
                "MaxConnections ({}) reached; retry later",
                config.max_connections
            ),
        )
        .header("Retry-After", "5"));
    }
    let ip = conn.peer.ip();
    let from_ip = registry.established_per_ip.get(&ip).copied().unwrap_or(0);
    if from_ip >= config.max_connections_per_ip {
        return Err(Rejection::new(
            429,
            "Too Many Requests",
            "rate_limited",
            format!(
                "MaxConnectionsPerIp ({}) reached for {ip}",
                config.max_connections_per_ip
            ),
        )
        .header("Retry-After", "5"));
    }
    registry.established += 1;
    *registry.established_per_ip.entry(ip).or_insert(0) += 1;
    Ok(Admitted { protocol, identity })
}

/// 401 for credentials that are present but wrong: the connection ends Rejected and the
/// failure counts against the address (ViolationsBeforeBlock).
fn unauthorized(why: impl Into<String>) -> Rejection {
    Rejection::new(401, "Unauthorized", "auth_failed", why)
        .header("WWW-Authenticate", "Key realm=\"hydrogen-ws\"")
        .state(ConnState::Rejected)
        .violation()
}

/// Gives back the MaxConnections slot taken by [`admit`].
pub(crate) fn release_slot(ctx: &ServerContext, conn: &ConnectionShared) {
    let mut registry = ctx.connections.lock();
    registry.established = registry.established.saturating_sub(1);
    let ip = conn.peer.ip();
    if let Some(n) = registry.established_per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            registry.established_per_ip.remove(&ip);
        }
    }
}

/// The credential in the request: `Authorization` header first, then `?key=` / `?token=`.
fn credential(head: &RequestHead) -> Option<Result<Credential, &'static str>> {
    if let Some(auth) = &head.authorization {
        let (scheme, value) = auth.trim().split_once(' ').unwrap_or((auth.as_str(), ""));
        let value = value.trim().to_string();
        return Some(match scheme {
            s if s.eq_ignore_ascii_case("key") && !value.is_empty() => Ok(Credential::Key(value)),
            s if s.eq_ignore_ascii_case("bearer") && !value.is_empty() => {
                Ok(Credential::Bearer(value))
            }
            _ => Err("Authorization must be `Key <key>` or `Bearer <token>`"),
        });
    }
    for (k, v) in form_urlencoded::parse(head.query.as_bytes()) {
        match k.as_ref() {
            "key" => return Some(Ok(Credential::Key(v.into_owned()))),
            "token" => return Some(Ok(Credential::Bearer(v.into_owned()))),
            _ => {}
        }
    }
    None
}
