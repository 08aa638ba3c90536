//! The event bus: sessions, the channel index, the publish path (one mutex for the whole
//! fan-out, so every subscriber sees events in publish order), acks, redelivery and resume.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use crate::config::Config;
use crate::message::{ErrorCode, WireError, is_reserved_channel, is_valid_name, timestamp_now};
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::registry::histogram::LocalHistogram;
use crate::server::registry::metrics::Metrics;
use crate::server::security::identity::Identity;

use crate::server::events::direct::{self, Direct};
use crate::server::events::event::{Event, EventBody};
use crate::server::events::index::ChannelIndex;
use crate::server::events::session::{Session, SessionState, Unacked};
use crate::server::events::tap::EventTap;
use crate::server::status_types::EventFigures;

/// What a redelivery timer found.
pub(crate) enum Redelivery {
    /// Acknowledged meanwhile: nothing to do.
    Acked,
    /// Send this again (with `redelivered`).
    Resend(String),
    /// MaxRetries reached: close the client with 1008.
    GiveUp,
}

/// What `system/resume` did.
pub(crate) struct Resumed {
    pub session: Arc<Session>,
    pub response: Value,
    /// Events to send now, in seq order (empty after a gap).
    pub replay: Vec<(u64, Arc<EventBody>)>,
}

/// Counters reported in status and info.
#[derive(Debug, Default)]
pub(crate) struct EventMetrics {
    pub published: AtomicU64,
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub redelivered: AtomicU64,
    pub dropped: AtomicU64,
    pub slow_client_closes: AtomicU64,
    /// Sessions resumed with their missed events replayed.
    pub resumed: AtomicU64,
    /// Resumes refused with `gap` (events were no longer buffered).
    pub resume_gaps: AtomicU64,
    pub status_offered: AtomicU64,
    pub status_sent: AtomicU64,
}

/// Sessions, the subscription index, and the publish path.
#[derive(Default)]
pub(crate) struct EventBus {
    publish_order: Mutex<()>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub(super) by_channel: RwLock<ChannelIndex>,
    next_event: AtomicU64,
    pub metrics: EventMetrics,
    /// The MQTT bridge's queue, when the bridge runs: events on its channels go there too.
    pub tap: OnceLock<Arc<EventTap>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("sessions", &self.sessions.lock().len())
            .finish()
    }
}

/// 128 random bits from the system's generator (ring's `SystemRandom`: getrandom(2)), in hex.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) does not fail for 16 bytes once the pool is initialised; should it
    // anyway, fall back on a randomly keyed hash of the time so ids stay unique.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        use std::hash::{BuildHasher, RandomState};
        let h = RandomState::new().hash_one(Instant::now()).to_le_bytes();
        bytes[..8].copy_from_slice(&h);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl EventBus {
    /// A new session for `identity`, attached to `conn`. When the identity already holds
    /// `max_per_identity` sessions, its oldest detached ones are expired first.
    pub(crate) fn create_session(
        &self,
        identity: Identity,
        conn: &Arc<ConnectionHandle>,
        max_per_identity: usize,
    ) -> Arc<Session> {
        self.expire_beyond(&identity, max_per_identity.saturating_sub(1));
        let state = SessionState {
            next_seq: 1,
            attached: Some(conn.clone()),
            ..Default::default()
        };
        let session = Arc::new(Session {
            id: new_session_id(),
            identity,
            state: Mutex::new(state),
            recent_ids: Mutex::default(),
        });
        self.sessions
            .lock()
            .insert(session.id.clone(), session.clone());
        session
    }

    /// The connection ended: the session waits SessionResumeSeconds for a resume (or less,
    /// when its identity holds more than `max_per_identity` sessions).
    pub(crate) fn detach(&self, session: &Session, conn_id: u64, max_per_identity: usize) {
        {
            let mut st = session.state.lock();
            if st.attached.as_ref().is_some_and(|c| c.id == conn_id) {
                st.attached = None;
                st.detached_at = Some(Instant::now());
            }
        }
        self.expire_beyond(&session.identity, max_per_identity);
    }

    /// The connection replaced its session (re-authentication): the old one is gone at
    /// once, so that one connection holds one session.
    pub(crate) fn discard(&self, session: &Arc<Session>) {
        self.drop_session(session);
    }

    /// Expires `identity`'s oldest detached sessions until it holds at most `keep`.
    fn expire_beyond(&self, identity: &Identity, keep: usize) {
        let mut detached: Vec<(Instant, Arc<Session>)> = Vec::new();
        let mut total = 0;
        for s in self.sessions.lock().values() {
            if s.identity != *identity {
                continue;
            }
            total += 1;
            if let Some(t) = s.state.lock().detached_at {
                detached.push((t, s.clone()));
            }
        }
        if total <= keep {
            return;
        }
        detached.sort_by_key(|(t, _)| *t);
        for (_, s) in detached.into_iter().take(total - keep) {
            if s.state.lock().attached.is_some() {
                continue; // resumed meanwhile
            }
            log::debug!(
                "session {} ({}) expired early: over MaxSessionsPerIdentity",
                s.id,
                s.identity.name
            );
            self.drop_session(&s);
        }
    }

    /// Fans `event` out to every subscriber; returns how many sessions got it.
    /// Idle subscribers get the event written at once (`connection::direct`); the others get
    /// it queued, and their threads woken. `metrics` counts what is written here. With
    /// `cork`, direct writes are buffered, not flushed: the caller flushes the list.
    pub(crate) fn publish(
        &self,
        config: &Config,
        metrics: &Metrics,
        event: Event,
        mut cork: Option<&mut Vec<Arc<ConnectionHandle>>>,
    ) -> Result<usize, WireError> {
        if !is_valid_name(&event.channel) || !is_valid_name(&event.action) {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                "event channel and action must match [a-z0-9_.-]{1,64}",
            ));
        }
        if is_reserved_channel(&event.channel) {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                format!(
                    "channel {:?} is reserved for the server: publish on your own channels",
                    event.channel
                ),
            )
            .with_details(json!({"channel": event.channel})));
        }
        let body = self.serialize(event.clone(), config);
        let _order = self.publish_order.lock();
        let subscribers = self.by_channel.read().subscribers(&event.channel);
        let mut count = 0;
        let mut latency = LocalHistogram::default();
        for session in subscribers {
            let mut st = session.state.lock();
            if !st.wants(&event.channel, &event.action) {
                continue;
            }
            count += 1;
            let seq = self.record(
                &session,
                &mut st,
                &body,
                config.delivery.replay_buffer_events,
            );
            if let Some(conn) = st.attached.clone() {
                let delivered =
                    direct::write_event(&conn, seq, &body, metrics, cork.as_deref_mut());
                if let Direct::Written = delivered {
                    latency.observe(body.published.elapsed());
                    self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                } else {
                    let limit = config.outbound_queue_limit;
                    self.queue_to(&session, &mut st, &conn, seq, &body, limit);
                }
            }
        }
        metrics.publish_to_write.merge(&mut latency);
        if let Some(tap) = self.tap.get().filter(|t| t.wants(&event.channel)) {
            tap.offer(&event.channel, &event.action, &body);
        }
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(count)
    }

    /// The event serialized once, with the next event id; reliable when it says so or its
    /// channel is one of ReliableChannels.
    fn serialize(&self, event: Event, config: &Config) -> Arc<EventBody> {
        let n = self.next_event.fetch_add(1, Ordering::Relaxed) + 1;
        let reliable = event.reliable || config.delivery.reliable_channels.contains(&event.channel);
        let id = format!("ev-{n}");
        let full = json!({"id": id, "timestamp": timestamp_now(), "channel": event.channel, "action": event.action, "data": event.data})
            .to_string();
        Arc::new(EventBody {
            id,
            published: std::time::Instant::now(),
            reliable,
            priority: event.priority,
            tail: full[1..].to_string(),
        })
    }

    /// Gives `body` the session's next seq and keeps it in the replay ring (and, when
    /// reliable, the outbox: its oldest entry goes when the outbox is full). Returns the seq.
    fn record(
        &self,
        session: &Session,
        st: &mut SessionState,
        body: &Arc<EventBody>,
        ring_cap: usize,
    ) -> u64 {
        let seq = st.next_seq;
        st.next_seq += 1;
        if st.ring.len() == ring_cap {
            st.ring.pop_front();
        }
        st.ring.push_back((seq, body.clone()));
        if body.reliable {
            if st.outbox.len() >= ring_cap {
                st.outbox_overflowed = true;
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "session {}: {} reliable events unacknowledged; dropping the oldest",
                    session.id,
                    ring_cap
                );
                st.outbox.pop_first();
            }
            let unacked = Unacked {
                body: body.clone(),
                retries: 0,
            };
            st.outbox.insert(seq, unacked);
        }
        seq
    }

    /// Queues the event to a connection that is busy; a connection over `queue_limit` is
    /// closed (1013) and its session detached, keeping everything for a resume.
    fn queue_to(
        &self,
        session: &Session,
        st: &mut SessionState,
        conn: &ConnectionHandle,
        seq: u64,
        body: &Arc<EventBody>,
        queue_limit: usize,
    ) {
        let event = Outbound::Event {
            seq,
            body: body.clone(),
        };
        if conn.push(event, queue_limit).is_ok() {
            self.metrics.queued.fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.attached = None;
        st.detached_at = Some(Instant::now());
        self.metrics
            .slow_client_closes
            .fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "conn {} {}: more than {} messages queued; closing it (1013), session {} stays resumable",
            conn.id,
            conn.peer,
            queue_limit,
            session.id
        );
        conn.close_urgently(1013);
    }

    /// Removes an acknowledged reliable event (by event id or seq); false if unknown.
    pub(crate) fn ack(&self, session: &Session, id: Option<&str>, seq: Option<u64>) -> bool {
        let mut st = session.state.lock();
        let seq = seq.or_else(|| {
            st.outbox
                .iter()
                .find(|(_, u)| Some(u.body.id.as_str()) == id)
                .map(|(s, _)| *s)
        });
        seq.is_some_and(|s| st.outbox.remove(&s).is_some())
    }

    /// A redelivery timer for `seq` fired.
    pub(crate) fn redeliver(&self, session: &Session, seq: u64, max_retries: u32) -> Redelivery {
        let mut st = session.state.lock();
        match st.outbox.get_mut(&seq) {
            None => Redelivery::Acked,
            Some(u) if u.retries >= max_retries => Redelivery::GiveUp,
            Some(u) => {
                u.retries += 1;
                self.metrics.redelivered.fetch_add(1, Ordering::Relaxed);
                Redelivery::Resend(u.body.text(seq, true))
            }
        }
    }

    /// `system/resume`: moves `conn` onto session `session_id` if it belongs to `identity`,
    /// replacing `current`. Events after `last_seq` are returned for replay, unless some of
    /// them are no longer buffered (a gap).
    pub(crate) fn resume(
        &self,
        current: &Arc<Session>,
        conn: &Arc<ConnectionHandle>,
        data: &Value,
    ) -> Result<Resumed, WireError> {
        let (Some(session_id), Some(last_seq)) = (
            data.get("session_id").and_then(Value::as_str),
            data.get("last_seq").and_then(Value::as_u64),
        ) else {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                "system/resume needs {\"session_id\": string, \"last_seq\": number}",
            ));
        };
        let Some(session) = self.sessions.lock().get(session_id).cloned() else {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                "no such session (expired, or the server restarted): subscribe again",
            )
            .with_details(json!({"session_id": session_id})));
        };
        if session.identity != current.identity {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                "that session belongs to another identity",
            ));
        }
        if Arc::ptr_eq(&session, current) {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                "this connection already has that session",
            ));
        }
        let mut st = session.state.lock();
        take_over(&mut st, conn);
        let (replay, response) = replay_after(&session, &mut st, conn, last_seq);
        drop(st);
        let counter = match response["resumed"].as_bool() {
            Some(true) => &self.metrics.resumed,
            _ => &self.metrics.resume_gaps,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.drop_session(current);
        Ok(Resumed {
            session,
            response,
            replay,
        })
    }

    fn drop_session(&self, session: &Arc<Session>) {
        self.sessions.lock().remove(&session.id);
        let channels: Vec<String> = session.state.lock().subscriptions.keys().cloned().collect();
        let mut index = self.by_channel.write();
        for c in channels {
            index.remove(&c, session);
        }
    }

    /// Removes sessions detached longer than `resume`; returns when the next one expires.
    pub(crate) fn expire(&self, resume: Duration) -> Option<Instant> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for s in self.sessions.lock().values() {
            if let Some(t) = s.state.lock().detached_at {
                if now >= t + resume {
                    expired.push(s.clone());
                } else {
                    next = Some(next.map_or(t + resume, |n| n.min(t + resume)));
                }
            }
        }
        for s in &expired {
            log::debug!("session {} ({}) expired", s.id, s.identity.name);
            self.drop_session(s);
        }
        next
    }

    /// Connections whose session subscribes to `system/status`.
    pub(crate) fn status_subscribers(&self) -> Vec<Arc<ConnectionHandle>> {
        let subscribers = self.by_channel.read().subscribers("system");
        subscribers
            .iter()
            .filter_map(|s| {
                let st = s.state.lock();
                if st.wants("system", "status") {
                    st.attached.clone()
                } else {
                    None
                }
            })
            .collect()
    }

    /// Shutdown phase 4: frees every session. Returns (sessions, reliable events still
    /// unacknowledged in them), which the caller logs: those are lost with the process.
    pub(crate) fn clear_sessions(&self) -> (usize, usize) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().drain().map(|(_, s)| s).collect();
        self.by_channel.write().clear();
        let unacked = sessions
            .iter()
            .map(|s| {
                let mut st = s.state.lock();
                let n = st.outbox.len();
                st.outbox.clear();
                st.ring.clear();
                st.attached = None;
                n
            })
            .sum();
        (sessions.len(), unacked)
    }

    /// Figures for status: sessions (attached, detached), subscriptions, unacked events.
    pub(crate) fn figures(&self) -> EventFigures {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        let (mut attached, mut subscriptions, mut unacked, mut buffered) = (0, 0, 0, 0);
        for s in &sessions {
            let st = s.state.lock();
            attached += usize::from(st.attached.is_some());
            subscriptions += st.subscriptions.len();
            unacked += st.outbox.len();
            buffered += st.ring.len();
        }
        let m = &self.metrics;
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EventFigures {
            sessions: sessions.len(),
            sessions_attached: attached,
            sessions_detached: sessions.len() - attached,
            subscriptions,
            unacked_events: unacked,
            replay_buffered_events: buffered,
            events_published: count(&m.published),
            events_queued: count(&m.queued),
            events_delivered: count(&m.delivered),
            events_redelivered: count(&m.redelivered),
            events_dropped: count(&m.dropped),
            slow_client_closes: count(&m.slow_client_closes),
            status_offered: count(&m.status_offered),
            status_sent: count(&m.status_sent),
        }
    }
}

/// Attaches `conn` to the session; a connection that had it is closed (1008).
fn take_over(st: &mut SessionState, conn: &Arc<ConnectionHandle>) {
    if let Some(old) = st.attached.take()
        && old.id != conn.id
    {
        let _ = old.push(
            Outbound::Close {
                code: 1008,
                reason: "session resumed on another connection",
            },
            usize::MAX,
        );
    }
    st.attached = Some(conn.clone());
    st.detached_at = None;
}

/// What a resume after `last_seq` replays, and its response: everything up to `last_seq`
/// reached the client (reliable events among them count as acked); a gap when events after
/// it are no longer buffered or reliable ones were dropped.
fn replay_after(
    session: &Session,
    st: &mut SessionState,
    conn: &ConnectionHandle,
    last_seq: u64,
) -> (Vec<(u64, Arc<EventBody>)>, Value) {
    st.outbox.retain(|s, _| *s > last_seq);
    let oldest_kept = st.ring.front().map_or(st.next_seq, |(s, _)| *s);
    let gap = st.outbox_overflowed || (last_seq + 1 < oldest_kept && last_seq + 1 < st.next_seq);
    st.outbox_overflowed = false;
    let replay: Vec<(u64, Arc<EventBody>)> = if gap {
        Vec::new()
    } else {
        st.ring
            .iter()
            .filter(|(s, _)| *s > last_seq)
            .cloned()
            .collect()
    };
    let mut response = st.subscription_set();
    response["session_id"] = json!(session.id);
    response["connection_id"] = json!(conn.id);
    response["next_seq"] = json!(st.next_seq);
    if gap {
        response["resumed"] = json!(false);
        response["reason"] = json!("gap");
    } else {
        response["resumed"] = json!(true);
        response["replayed"] = json!(replay.len());
    }
    (replay, response)
}
