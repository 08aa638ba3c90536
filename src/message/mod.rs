//! The message envelope of docs/protocol.md §2: parsing and validating what clients send, building
//! what the server sends (responses, events, errors).

#![forbid(unsafe_code)]

mod envelope;
mod incoming;
mod outgoing;

pub use envelope::{Command, ErrorCode, MessageAuth, WireError};
pub(crate) use envelope::{Incoming, ReplyTo, ServiceResponse};
pub(crate) use envelope::{format_time, is_reserved_channel, is_valid_name, timestamp_now};
pub(crate) use incoming::parse_incoming;
pub(crate) use outgoing::{bare_error, error_reply, response_error, response_ok};
