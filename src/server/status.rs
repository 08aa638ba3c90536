//! The status object of docs/protocol.md §3 (with the process's real thread count and memory) and
//! the `system/info` object.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::message::format_time;
use crate::server::context::ServerContext;
use crate::server::events::event::unsequenced_event;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::registry::state::ConnState;
use crate::server::runtime::sampler::uname;
use crate::server::runtime::threads::{Activity, ThreadRole, ThreadTag};
use crate::server::status_types::{BridgeStatus, ProcessStatus, Status};

/// The status object (docs/protocol.md §3) with extra fields: bound port, connections by state,
/// traffic, rejections by reason.
pub(crate) fn status_object(ctx: &ServerContext) -> Status {
    let m = &ctx.metrics;
    let figures = ctx.sampler.sample();
    let started = format_time(ctx.started);
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let connections_by_state = ConnState::ALL
        .iter()
        .map(|s| {
            (
                s.as_str().to_string(),
                m.states[*s as usize].load(Ordering::Relaxed),
            )
        })
        .collect();
    let (established, live) = {
        let r = ctx.connections.lock();
        (r.established, r.by_id.len())
    };
    let (bound, port) = bound_addresses(ctx);
    let rejected = m
        .rejected
        .lock()
        .iter()
        .map(|(k, v)| ((*k).to_string(), *v))
        .collect();
    let shutting_down = ctx.shutdown.is_requested();
    Status {
        server_start_time: started.clone(),
        active_connections: established,
        total_connections: count(&m.total_connections),
        total_requests: count(&m.total_requests),
        system: uname(),
        status: ProcessStatus {
            running: !shutting_down,
            shutting_down,
            total_threads: figures.threads,
            total_virtual_memory_bytes: figures.virtual_bytes,
            total_resident_memory_bytes: figures.resident_bytes,
            server_started: started,
        },
        bound,
        port,
        uptime_ms: ctx.uptime_ms(),
        connection_threads: live,
        connections_by_state,
        messages_in: count(&m.messages_in),
        messages_out: count(&m.messages_out),
        bytes_in: count(&m.bytes_in),
        bytes_out: count(&m.bytes_out),
        rejected,
        handler_backlog: ctx.dispatch.backlog(),
        blocked_addresses: ctx.limits.blocked_count(),
        events: ctx.events.figures(),
        services: ctx.services.figures(),
        mqtt: bridge_status(ctx),
    }
}

/// The bridge's figures, when it runs.
fn bridge_status(ctx: &ServerContext) -> Option<BridgeStatus> {
    let tap = ctx.events.tap.get()?;
    let figures = &ctx.metrics.bridge;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Some(BridgeStatus {
        connected: figures.connected.load(std::sync::atomic::Ordering::Relaxed),
        connects: count(&figures.connects),
        events_sent: count(&figures.events_sent),
        events_buffered: tap.len(),
        events_dropped: count(&tap.dropped),
        commands: count(&figures.commands),
    })
}

/// The status object as JSON, for the wire.
pub(crate) fn status_json(ctx: &ServerContext) -> Value {
    serde_json::to_value(status_object(ctx)).unwrap_or_default()
}

/// The listening addresses as text, and the port of the first.
fn bound_addresses(ctx: &ServerContext) -> (Vec<String>, Option<u16>) {
    let state = ctx.state.lock();
    let text = state.bound.iter().map(|a| a.to_string()).collect();
    (text, state.bound.first().map(|a| a.port()))
}

/// `system/info`: version, protocol, bound port, TLS, and the limits in force.
pub(crate) fn info_object(ctx: &ServerContext) -> Value {
    let c = &ctx.config;
    let (bound, port) = bound_addresses(ctx);
    json!({
        "name": "hydrogen-ws",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": c.protocol,
        "port": port,
        "bound": bound,
        "tls": ctx.tls.is_some(),
        "auth_required": c.auth_required,
        "channels": ctx.dispatch.channels(),
        "limits": {
            "MaxConnections": c.max_connections,
            "MaxConnectionsPerIp": c.max_connections_per_ip,
            "MaxMessageSize": c.max_message_size,
            "HandshakeTimeoutMs": c.handshake_timeout.as_millis() as u64,
            "AuthTimeoutMs": c.auth_timeout.as_millis() as u64,
            "HeartbeatIntervalMs": c.heartbeat_interval.as_millis() as u64,
            "PongTimeoutMs": c.pong_timeout.as_millis() as u64,
            "IdleTimeout": c.idle_timeout.map_or(0, |d| d.as_secs()),
            "OutboundQueueLimit": c.outbound_queue_limit,
            "ThreadPoolSize": c.thread_pool_size,
            "HandlerTimeoutMs": c.handler_timeout.as_millis() as u64,
            "MessagesPerSecond": c.rate_limit.messages_per_second,
            "Burst": c.rate_limit.burst,
            "MaxChannelsPerSession": c.max_channels_per_session,
            "MaxSessionsPerIdentity": c.sessions_per_identity(),
        },
        "delivery": {
            "AckTimeoutMs": c.delivery.ack_timeout.as_millis() as u64,
            "MaxRetries": c.delivery.max_retries,
            "SessionResumeSeconds": c.delivery.session_resume.as_secs(),
            "ReplayBufferEvents": c.delivery.replay_buffer_events,
            "ReliableChannels": c.delivery.reliable_channels,
        },
        "events": ctx.events.figures(),
        "services": ctx.services.figures(),
    })
}

/// The `hws-status` thread: every StatusIntervalMs it offers a fresh status event to the
/// connections subscribed to `system` ([`offer_status`]), and between times it does the
/// server's housekeeping ([`housekeeping`]). It sleeps on the shutdown condvar, so shutdown
/// wakes it at once; with no subscribers it builds no status at all.
pub(crate) fn status_loop(ctx: Arc<ServerContext>, tag: Arc<ThreadTag>) {
    let interval = ctx.config.status_interval;
    let resume = ctx.config.delivery.session_resume;
    let mut next_status = interval.map(|i| Instant::now() + i);
    let mut next_expiry: Option<Instant> = None;
    let watchdog = ctx.service_manager.watchdog_period();
    let mut next_ping = watchdog.map(|_| Instant::now());
    while !ctx.shutdown.is_requested() {
        tag.set(Activity::Waiting, ctx.uptime_ms());
        // Sessions detach at any time; look at least once per resume window.
        let sweep =
            next_expiry.unwrap_or_else(|| Instant::now() + resume.max(Duration::from_secs(1)));
        let wake_at = [next_status, next_ping]
            .into_iter()
            .flatten()
            .fold(sweep, Instant::min);
        ctx.shutdown
            .wait_until(wake_at, false, || ctx.shutdown.is_requested());
        if ctx.shutdown.is_requested() {
            break;
        }
        tag.set(Activity::Running, ctx.uptime_ms());
        let now = Instant::now();
        if let (Some(due), Some(i)) = (next_status, interval)
            && now >= due
        {
            offer_status(&ctx);
            next_status = Some(due + i).filter(|n| *n > now).or(Some(now + i));
        }
        next_expiry = housekeeping(&ctx);
        if let (Some(due), Some(period)) = (next_ping, watchdog)
            && now >= due
        {
            ping_watchdog(&ctx);
            next_ping = Some(now + period);
        }
    }
}

/// `WATCHDOG=1`, unless the accept thread has been busy (not back in `poll`) for a whole
/// watchdog timeout. This thread sends it, so a stuck status thread sends nothing either.
fn ping_watchdog(ctx: &ServerContext) {
    let within = ctx
        .service_manager
        .watchdog_timeout()
        .map_or(u64::MAX, |t| t.as_millis() as u64);
    let answer = ctx
        .threads
        .responsive(ThreadRole::Accept, ctx.uptime_ms(), within);
    ctx.service_manager.watchdog(answer);
}

/// Offers the status event to every connection subscribed to `system/status`, and the bare
/// status object to legacy listeners and the MQTT bridge (coalesced: whoever is behind gets
/// only the newest). Built once for all of them.
fn offer_status(ctx: &ServerContext) {
    let mut listeners = legacy_listeners(ctx);
    listeners.extend(ctx.bridge.get().cloned());
    let subscribers = ctx.events.status_subscribers();
    if subscribers.is_empty() && listeners.is_empty() {
        return;
    }
    let status = status_json(ctx);
    if !listeners.is_empty() {
        let bare: Arc<str> = status.to_string().into();
        for conn in listeners {
            conn.offer_status(bare.clone());
        }
    }
    if subscribers.is_empty() {
        return;
    }
    let text: Arc<str> = unsequenced_event("system", "status", &status).into();
    for conn in subscribers {
        conn.offer_status(text.clone());
        ctx.events
            .metrics
            .status_offered
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// With LegacyStatusPush: the authenticated connections that have sent no envelope message
/// (Hydrogen's first clients connect and listen for bare status objects).
fn legacy_listeners(ctx: &ServerContext) -> Vec<Arc<ConnectionHandle>> {
    if !ctx.config.legacy_status_push {
        return Vec::new();
    }
    let registry = ctx.connections.lock();
    registry
        .by_id
        .values()
        .filter(|c| {
            !c.spoke_envelope.load(Ordering::Relaxed)
                && matches!(c.state(), ConnState::Connected | ConnState::Heartbeat)
                && c.identity.lock().is_some()
        })
        .cloned()
        .collect()
}

/// Expires sessions detached longer than SessionResumeSeconds and forgets rate-limit state
/// of addresses gone quiet. Returns when the next session expires.
fn housekeeping(ctx: &ServerContext) -> Option<Instant> {
    let next_expiry = ctx.events.expire(ctx.config.delivery.session_resume);
    ctx.limits.sweep();
    next_expiry
}
