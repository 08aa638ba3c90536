//! The plain HTTP answers beside the upgrade (docs/protocol.md §1): `GET /health`,
//! `GET /metrics` (Prometheus text; a credential of any role unless
//! `Metrics.AllowUnauthenticated`), and `GET /` from a browser (the built-in status page,
//! `StatusPage`). Anything else is left to the upgrade path (which answers 426).
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::net::IpAddr;

use crate::server::context::ServerContext;
use crate::server::exposition;
use crate::server::net::admission;
use crate::server::net::refusal::Rejection;
use crate::server::net::request::RequestHead;
use crate::server::registry::state::ConnState;

/// The status page: one self-contained file, built into the binary.
pub(crate) const STATUS_PAGE: &str = include_str!("status_page.html");

/// What a non-upgrade request gets.
pub(super) enum Answer {
    /// 200 with this body.
    Page {
        content_type: &'static str,
        body: Cow<'static, str>,
    },
    /// Refused (401 for /metrics without a credential, ...).
    Refused(Rejection),
}

/// The answer for `head` when it asks for one of these pages; `None` for the upgrade path.
pub(super) fn answer(ctx: &ServerContext, peer: IpAddr, head: &RequestHead) -> Option<Answer> {
    if !head.is_get || head.is_upgrade {
        return None;
    }
    match head.path.as_str() {
        "/health" => Some(Answer::Page {
            content_type: "application/json",
            body: Cow::Borrowed("{\"status\":\"ok\"}"),
        }),
        "/metrics" if ctx.config.metrics.enabled => Some(metrics(ctx, peer, head)),
        "/" if ctx.config.status_page && head.accepts_html => Some(Answer::Page {
            content_type: "text/html; charset=utf-8",
            body: Cow::Borrowed(STATUS_PAGE),
        }),
        _ => None,
    }
}

/// `/metrics`: the exposition, for any authenticated caller (or anyone when allowed). A
/// blocked address, or one over HandshakesPerMinutePerIp, gets 429 first: the credential
/// check here must not become a way round the block for guessing keys.
fn metrics(ctx: &ServerContext, peer: IpAddr, head: &RequestHead) -> Answer {
    if let Err(r) = admission::address_allowed(ctx, peer) {
        return Answer::Refused(r);
    }
    if !ctx.config.metrics.allow_unauthenticated {
        match admission::identity(ctx, head) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Answer::Refused(
                    Rejection::new(
                        401,
                        "Unauthorized",
                        "auth_failed",
                        "/metrics needs a credential: Authorization: Key <key> or Bearer \
                         <token> (or set Metrics.AllowUnauthenticated)",
                    )
                    .header("WWW-Authenticate", "Key realm=\"hydrogen-ws\"")
                    .state(ConnState::Rejected),
                );
            }
            Err(r) => return Answer::Refused(r),
        }
    }
    Answer::Page {
        content_type: exposition::CONTENT_TYPE,
        body: Cow::Owned(exposition::render(ctx)),
    }
}
