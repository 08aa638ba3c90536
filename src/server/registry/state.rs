//! The states a connection goes through (docs/protocol.md §6), as the thread dump and the status
//! object name them.
#![forbid(unsafe_code)]

/// The connection states (docs/protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ConnState {
    Connecting = 0,
    Verifying,
    Established,
    Connected,
    Heartbeat,
    Inactive,
    Closing,
    Closed,
    Failed,
    Rejected,
}

pub(crate) const STATE_COUNT: usize = 10;

impl ConnState {
    pub(crate) const ALL: [ConnState; STATE_COUNT] = [
        ConnState::Connecting,
        ConnState::Verifying,
        ConnState::Established,
        ConnState::Connected,
        ConnState::Heartbeat,
        ConnState::Inactive,
        ConnState::Closing,
        ConnState::Closed,
        ConnState::Failed,
        ConnState::Rejected,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Verifying => "verifying",
            ConnState::Established => "established",
            ConnState::Connected => "connected",
            ConnState::Heartbeat => "heartbeat",
            ConnState::Inactive => "inactive",
            ConnState::Closing => "closing",
            ConnState::Closed => "closed",
            ConnState::Failed => "failed",
            ConnState::Rejected => "rejected",
        }
    }

    /// Closed, Failed and Rejected are where a connection ends; status counts them as totals.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            ConnState::Closed | ConnState::Failed | ConnState::Rejected
        )
    }
}
