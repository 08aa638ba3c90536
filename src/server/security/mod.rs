//! Who a client is and what it may do: credentials (`auth`: API keys, `jwt`,
//! `session_tokens`), signed commands (`signature`), and rate limits and blocks (`limits`).
#![forbid(unsafe_code)]

pub(crate) mod auth;
pub(crate) mod authorization;
pub(crate) mod identity;
pub(crate) mod jwt;
pub(crate) mod limits;
pub(crate) mod session_tokens;
pub(crate) mod signature;
