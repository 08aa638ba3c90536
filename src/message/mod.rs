//! The message envelope of docs/protocol.md §2: parsing and validating what clients send, building
//! what the server sends (responses, events, errors).

#![forbid(unsafe_code)]

mod envelope;
mod incoming;
mod outgoing;

pub use envelope::{
    Command, ErrorCode, MAX_ID_LEN, MAX_JSON_DEPTH, MAX_NAME_LEN, MessageAuth, RESERVED_CHANNELS,
    WireError, format_time, is_reserved_channel, is_valid_name, timestamp_now,
};
pub(crate) use envelope::{Incoming, ReplyTo, ServiceResponse};
pub(crate) use incoming::parse_incoming;
pub(crate) use outgoing::{bare_error, error_reply, response_error, response_ok};
