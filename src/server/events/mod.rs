//! Subscriptions, fan-out, sessions, reliable delivery and resume (docs/protocol.md §5).
//!
//! An event is serialized once ([`EventBody`]) and shared by every subscriber; each session
//! gives it its own `seq` and keeps `(seq, body)` in a ring of the last ReplayBufferEvents
//! events (16 bytes an entry), so a client that lost its connection can resume without a gap.
//! Reliable events also stay in the session's outbox until acknowledged. Publishing takes one
//! mutex for the whole fan-out, so every subscriber sees events in the same (publish) order,
//! and never blocks on a client: it pushes onto each connection's queue and wakes it.
#![forbid(unsafe_code)]

pub(crate) mod bus;
pub(crate) mod direct;
pub(crate) mod event;
pub(crate) mod index;
pub(crate) mod session;
pub(crate) mod subscriptions;
pub(crate) mod tap;
