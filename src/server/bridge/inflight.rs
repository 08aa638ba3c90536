//! QoS 1 packets the broker has not acknowledged yet, by packet id: events (sent again after
//! a reconnect, in their order) and the bridge's own messages (presence, replies).
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use crate::server::events::tap::Tapped;

/// What a packet id stands for.
pub(super) enum Sent {
    Event(Tapped),
    /// Presence or a reply: not sent again (presence is re-published on reconnect, and a
    /// reply belongs to the link it answered on).
    Own,
}

/// The unacknowledged QoS 1 packets, oldest first.
#[derive(Default)]
pub(super) struct Inflight {
    entries: VecDeque<(u16, Sent)>,
    last_pid: u16,
}

impl Inflight {
    /// Unacknowledged QoS 1 packets of every kind.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Unacknowledged events.
    pub(super) fn events(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, s)| matches!(s, Sent::Event(_)))
            .count()
    }

    /// Gives `sent` a packet id not in use and keeps it until acknowledged.
    pub(super) fn assign(&mut self, sent: Sent) -> u16 {
        loop {
            self.last_pid = self.last_pid.checked_add(1).unwrap_or(1);
            let pid = self.last_pid;
            if !self.entries.iter().any(|(p, _)| *p == pid) {
                self.entries.push_back((pid, sent));
                return pid;
            }
        }
    }

    /// PUBACK (or SUBACK) for `pid`: what it stood for, `None` when nothing waited for it.
    pub(super) fn acked(&mut self, pid: u16) -> Option<Sent> {
        let i = self.entries.iter().position(|(p, _)| *p == pid)?;
        self.entries.remove(i).map(|(_, s)| s)
    }

    /// Whether `pid` is still unacknowledged.
    pub(super) fn waits_for(&self, pid: u16) -> bool {
        self.entries.iter().any(|(p, _)| *p == pid)
    }

    /// The link is gone: every unacknowledged event, in order (to send again), and the rest
    /// forgotten.
    pub(super) fn take_events(&mut self) -> Vec<Tapped> {
        self.entries
            .drain(..)
            .filter_map(|(_, s)| match s {
                Sent::Event(t) => Some(t),
                Sent::Own => None,
            })
            .collect()
    }
}
