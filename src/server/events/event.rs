//! What is published: [`Event`] and its [`Priority`], the once-serialized [`EventBody`] every
//! subscriber shares.
#![forbid(unsafe_code)]

use serde_json::{Value, json};

use crate::message::timestamp_now;

/// Delivery order within a connection's backlog: higher first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Sent before normal and low events that are waiting.
    High,
    /// The default.
    #[default]
    Normal,
    /// Sent after everything else that is waiting.
    Low,
}

impl Priority {
    /// `high`, `normal`, `low`.
    pub fn from_name(name: &str) -> Option<Priority> {
        match name {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// An event to publish.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// Channel (`[a-z0-9_.-]{1,64}`); subscribers of it receive the event.
    pub channel: String,
    /// Action within the channel (same syntax); subscribers may filter on it.
    pub action: String,
    /// Payload.
    pub data: Value,
    /// Must be acknowledged by each subscriber (also implied by `ReliableChannels`).
    pub reliable: bool,
    /// Order within a connection's backlog.
    pub priority: Priority,
}

impl Event {
    /// A normal-priority, unreliable event.
    pub fn new(channel: &str, action: &str, data: Value) -> Self {
        Event {
            channel: channel.into(),
            action: action.into(),
            data,
            reliable: false,
            priority: Priority::Normal,
        }
    }

    /// The same event, to be acknowledged by every subscriber.
    pub fn reliable(mut self) -> Self {
        self.reliable = true;
        self
    }

    /// The same event with `priority`.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
}

/// An event serialized once and shared by all its subscribers.
#[derive(Debug)]
pub(crate) struct EventBody {
    pub id: String,
    /// When it was published: `/metrics`'s publish-to-write latency starts here.
    pub published: std::time::Instant,
    pub reliable: bool,
    pub priority: Priority,
    /// The JSON after `"seq":N,`: `"id":…,"timestamp":…,"channel":…,"action":…,"data":…}`.
    pub(super) tail: String,
}

impl EventBody {
    /// The frame text for one session.
    pub(crate) fn text(&self, seq: u64, redelivered: bool) -> String {
        let mut s = String::with_capacity(self.tail.len() + 64);
        s.push_str("{\"type\":\"event\",\"seq\":");
        s.push_str(&seq.to_string());
        s.push(',');
        if self.reliable {
            s.push_str("\"ack\":true,");
        }
        if redelivered {
            s.push_str("\"redelivered\":true,");
        }
        s.push_str(&self.tail);
        s
    }
}

impl EventBody {
    /// The event as a subscriber gets it, without a session's `seq` (the MQTT bridge).
    pub(crate) fn unsequenced_text(&self) -> String {
        let mut s = String::with_capacity(self.tail.len() + 16);
        s.push_str("{\"type\":\"event\",");
        s.push_str(&self.tail);
        s
    }
}

/// An unsequenced event sent to one connection (welcome, status).
pub(crate) fn unsequenced_event(channel: &str, action: &str, data: &Value) -> String {
    json!({"type": "event", "timestamp": timestamp_now(), "channel": channel, "action": action, "data": data}).to_string()
}
