//! What permessage-deflate is configured with (`Settings`) and what a negotiation put in
//! force on one connection (`Params`).
#![forbid(unsafe_code)]

/// The `Compression` settings a connection negotiates with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub enabled: bool,
    /// Messages shorter than this go uncompressed.
    pub min_size: usize,
    /// DEFLATE level, 1 (fastest) to 9 (smallest).
    pub level: u32,
    /// Keep each direction's DEFLATE context between messages (better ratio, but a
    /// compressor or inflater held by every connection).
    pub context_takeover: bool,
    /// Largest window (8–15) our compressor uses.
    pub max_window_bits: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            min_size: 256,
            level: 1,
            context_takeover: false,
            max_window_bits: 15,
        }
    }
}

/// What a negotiation put in force on one connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Params {
    /// Our compressor's window: no back-reference reaches further than `1 << bits` bytes.
    pub own_window_bits: u8,
    /// We may keep our compressor's context between messages.
    pub own_context_takeover: bool,
    /// The peer may keep its context: our inflater must live between messages.
    pub peer_context_takeover: bool,
}
