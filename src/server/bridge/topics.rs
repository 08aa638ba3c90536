//! The bridge's topics under `TopicPrefix` (docs/behaviour.md, "MQTT bridge"), and the
//! presence payloads.
#![forbid(unsafe_code)]

use serde_json::{Value, json};

use crate::message::timestamp_now;

/// Longest `reply_to` topic accepted from a command.
const MAX_REPLY_TOPIC_BYTES: usize = 512;

/// Every topic the bridge uses.
#[derive(Debug, Clone)]
pub(super) struct Topics {
    prefix: String,
    /// `<prefix>/status`: the status object, every StatusIntervalMs.
    pub status: String,
    /// `<prefix>/online`: presence, retained; the last will says offline.
    pub online: String,
    /// `<prefix>/request`: commands in (with `Commands`).
    pub request: String,
    /// `<prefix>/errors`: answers to requests that named no usable `reply_to`.
    pub errors: String,
}

impl Topics {
    pub(super) fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.to_string(),
            status: format!("{prefix}/status"),
            online: format!("{prefix}/online"),
            request: format!("{prefix}/request"),
            errors: format!("{prefix}/errors"),
        }
    }

    /// `<prefix>/events/<channel>/<action>` (names are `[a-z0-9_.-]`, valid topic levels).
    pub(super) fn event(&self, channel: &str, action: &str) -> String {
        format!("{}/events/{channel}/{action}", self.prefix)
    }

    /// Whether a command's `reply_to` may be answered on: a topic name (no wildcards, not
    /// `$`-reserved, not empty, bounded) that is not our own request topic, which would
    /// loop.
    pub(super) fn reply_topic_ok(&self, topic: &str) -> bool {
        !topic.is_empty()
            && topic.len() <= MAX_REPLY_TOPIC_BYTES
            && !topic.starts_with('$')
            && !topic.contains(['+', '#', '\0'])
            && topic != self.request
    }
}

/// The retained presence message while the bridge is connected.
pub(super) fn online(ws_port: Option<u16>) -> Value {
    json!({"online": true, "since": timestamp_now(), "version": env!("CARGO_PKG_VERSION"),
        "port": ws_port})
}

/// The presence message when the server goes away: the last will (`reason` "lost"), or what
/// a clean shutdown publishes (`reason` "shutdown").
pub(super) fn offline(reason: &str) -> Value {
    json!({"online": false, "reason": reason})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_reply_topics() {
        let t = Topics::new("hydrogen/p1");
        assert_eq!(
            t.event("print", "progress"),
            "hydrogen/p1/events/print/progress"
        );
        assert_eq!(t.status, "hydrogen/p1/status");
        assert!(t.reply_topic_ok("dash/replies/7"));
        for bad in ["", "a/+", "a/#", "$SYS/x", "hydrogen/p1/request"] {
            assert!(!t.reply_topic_ok(bad), "{bad}");
        }
    }
}
