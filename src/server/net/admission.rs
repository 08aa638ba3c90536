//! Admission of an upgrade request: the subprotocol, the credentials (header or query), the
//! address's block and handshake rate, and a MaxConnections / MaxConnectionsPerIp slot.
#![forbid(unsafe_code)]

use crate::config::Config;
use crate::server::context::ServerContext;
use crate::server::net::refusal::Rejection;
use crate::server::net::request::RequestHead;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::registry::state::ConnState;
use crate::server::security::identity::{Credential, Identity};

pub(super) struct Admitted {
    pub(super) protocol: Option<String>,
    pub(super) identity: Option<Identity>,
}

/// Subprotocol, credentials, limits; on success a MaxConnections slot is taken.
pub(super) fn admit(
    ctx: &ServerContext,
    conn: &ConnectionHandle,
    head: &RequestHead,
) -> Result<Admitted, Rejection> {
    address_allowed(ctx, conn.peer.ip())?;
    let protocol = subprotocol(&ctx.config, head)?;
    let identity = identity(ctx, head)?;
    take_slot(ctx)?;
    Ok(Admitted { protocol, identity })
}

/// 429 for a blocked address, or one over HandshakesPerMinutePerIp.
pub(super) fn address_allowed(ctx: &ServerContext, ip: std::net::IpAddr) -> Result<(), Rejection> {
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
    Ok(())
}

/// Our subprotocol, when the request offers it (the upgrade must then echo it).
pub(super) fn offered_protocol(config: &Config, head: &RequestHead) -> Option<String> {
    head.protocols
        .iter()
        .find(|p| **p == config.protocol)
        .cloned()
}

/// Our subprotocol when the client offers it; 400 when it does not and RequireProtocol.
fn subprotocol(config: &Config, head: &RequestHead) -> Result<Option<String>, Rejection> {
    let protocol = offered_protocol(config, head);
    if protocol.is_some() || !config.require_protocol {
        return Ok(protocol);
    }
    let offered = if head.protocols.is_empty() {
        "none".to_string()
    } else {
        head.protocols.join(", ")
    };
    Err(Rejection::new(
        400,
        "Bad Request",
        "invalid_protocol",
        format!(
            "subprotocol {:?} is required (Sec-WebSocket-Protocol); offered: {offered}",
            config.protocol
        ),
    ))
}

/// Who the request's credentials say it is: `None` when it gave none and must authenticate
/// later (or the anonymous viewer without AuthRequired); 401 or 400 for bad ones.
pub(super) fn identity(
    ctx: &ServerContext,
    head: &RequestHead,
) -> Result<Option<Identity>, Rejection> {
    match credential(head) {
        Some(Ok(cred)) => match ctx.auth.verify(&cred) {
            Ok(identity) => Ok(Some(identity)),
            Err(why) => Err(unauthorized(why.0)),
        },
        Some(Err(CredentialProblem::Malformed(why))) => Err(unauthorized(why)),
        Some(Err(CredentialProblem::Ambiguous(why))) => {
            Err(Rejection::new(400, "Bad Request", "invalid_message", why)
                .state(ConnState::Rejected))
        }
        None => Ok(ctx.auth.anonymous()),
    }
}

/// Takes a MaxConnections slot; 503 when none is left or the server is shutting down.
/// MaxConnectionsPerIp was applied at accept, to every connection of the address
/// (handshaking ones included), so an established slot per address needs no count here.
fn take_slot(ctx: &ServerContext) -> Result<(), Rejection> {
    if ctx.shutdown.is_requested() {
        return Err(Rejection::new(
            503,
            "Service Unavailable",
            "shutting_down",
            "the server is shutting down",
        )
        .header("Retry-After", "5"));
    }
    let max = ctx.config.max_connections;
    let mut registry = ctx.connections.lock();
    if registry.established >= max {
        return Err(Rejection::new(
            503,
            "Service Unavailable",
            "server_busy",
            format!("MaxConnections ({max}) reached; retry later"),
        )
        .header("Retry-After", "5"));
    }
    registry.established += 1;
    Ok(())
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
pub(crate) fn release_slot(ctx: &ServerContext) {
    let mut registry = ctx.connections.lock();
    registry.established = registry.established.saturating_sub(1);
}

/// Why a request's credentials cannot be used.
enum CredentialProblem {
    /// Present but not of a form we read: 401.
    Malformed(&'static str),
    /// More than one, and they disagree: 400 (refused, not guessed).
    Ambiguous(&'static str),
}

/// The credential in the request: an `Authorization` header, or `?key=` / `?token=`. Two
/// headers, two query credentials, or a header and a query credential that differ are
/// ambiguous and refused; the same credential given both ways is accepted.
fn credential(head: &RequestHead) -> Option<Result<Credential, CredentialProblem>> {
    if head.authorization.len() > 1 {
        return Some(Err(CredentialProblem::Ambiguous(
            "more than one Authorization header: send exactly one",
        )));
    }
    let from_header = head.authorization.first().map(|auth| {
        let (scheme, value) = auth.trim().split_once(' ').unwrap_or((auth.as_str(), ""));
        let value = value.trim().to_string();
        match scheme {
            s if s.eq_ignore_ascii_case("key") && !value.is_empty() => Ok(Credential::Key(value)),
            s if s.eq_ignore_ascii_case("bearer") && !value.is_empty() => {
                Ok(Credential::Bearer(value))
            }
            _ => Err(CredentialProblem::Malformed(
                "Authorization must be `Key <key>` or `Bearer <token>`",
            )),
        }
    });
    let mut from_query =
        form_urlencoded::parse(head.query.as_bytes()).filter_map(|(k, v)| match k.as_ref() {
            "key" => Some(Credential::Key(v.into_owned())),
            "token" => Some(Credential::Bearer(v.into_owned())),
            _ => None,
        });
    let query = from_query.next();
    if from_query.next().is_some() {
        return Some(Err(CredentialProblem::Ambiguous(
            "more than one key= or token= in the query: send exactly one credential",
        )));
    }
    match (from_header, query) {
        (None, q) => q.map(Ok),
        (Some(h), None) => Some(h),
        (Some(Ok(h)), Some(q)) if h == q => Some(Ok(h)),
        (Some(_), Some(_)) => Some(Err(CredentialProblem::Ambiguous(
            "the Authorization header and the query's key= or token= differ: send one credential",
        ))),
    }
}
