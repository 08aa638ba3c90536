//! permessage-deflate (RFC 7692) beside tungstenite, which has none and refuses RSV1 frames:
//! [`Deflate`] sits in the byte stream under tungstenite's `WebSocket` (server `Transport`,
//! client `LinkStream`). Frames are read and written with tungstenite's own public frame
//! types (`FrameHeader::parse`, `Frame::format`); DEFLATE is flate2 on its pure-Rust backend
//! (miniz_oxide), so ARM cross-builds need no C zlib.
//!
//! Inbound, a compressed message's frames are inflated (bounded by MaxMessageSize *while*
//! inflating: a bomb becomes a frame header tungstenite refuses as too large, so the
//! connection closes 1009 and the expansion is never allocated) and handed on with RSV1
//! clear. Outbound, each unfragmented data message of at least `MinSize` bytes is deflated
//! and sent with RSV1 set, unless that would not make it smaller. Control frames pass as
//! they are. Negotiation is in [`negotiate`]; the settings and their costs are in
//! docs/behaviour.md, "Compression".
#![forbid(unsafe_code)]

mod codec;
pub(crate) mod io;
pub(crate) mod negotiate;
mod params;
mod pool;

pub(crate) use codec::Deflate;
#[cfg(feature = "fuzzing")]
pub(crate) use params::Params;
pub(crate) use params::Settings;
