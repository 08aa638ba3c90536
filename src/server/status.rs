//! The status object of docs/protocol.md §3 (with the process's real thread count and memory) and
//! the `system/info` object.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::message::format_time;
use crate::server::context::ServerContext;
use crate::server::events::event::unsequenced_event;
use crate::server::registry::state::ConnState;
use crate::server::runtime::sampler::uname;
use crate::server::runtime::threads::{Activity, ThreadTag};

/// The status object (docs/protocol.md §3) with extra fields: bound port, connections by state,
/// traffic, rejections by reason.
pub(crate) fn status_object(ctx: &ServerContext) -> Value {
    let m = &ctx.metrics;
    let figures = ctx.sampler.sample();
    let started = format_time(ctx.started);
    let mut by_state = Map::new();
    for s in ConnState::ALL {
        by_state.insert(
            s.as_str().into(),
            json!(m.states[s as usize].load(Ordering::Relaxed)),
        );
    }
    let (established, live) = {
        let r = ctx.connections.lock();
        (r.established, r.by_id.len())
    };
    let (bound, port) = bound_addresses(ctx);
    let rejected: Map<String, Value> = m
        .rejected
        .lock()
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    let shutting_down = ctx.shutdown.is_requested();
    json!({
        "server_start_time": started,
        "active_connections": established,
        "total_connections": m.total_connections.load(Ordering::Relaxed),
        "total_requests": m.total_requests.load(Ordering::Relaxed),
        "system": uname(),
        "status": {
            "running": !shutting_down,
            "shutting_down": shutting_down,
            "totalThreads": figures.threads,
            "totalVirtualMemoryBytes": figures.virtual_bytes,
            "totalResidentMemoryBytes": figures.resident_bytes,
            "server_started": started,
        },
        "bound": bound,
        "port": port,
        "uptime_ms": ctx.uptime_ms(),
        "connection_threads": live,
        "connections_by_state": by_state,
        "messages_in": m.messages_in.load(Ordering::Relaxed),
        "messages_out": m.messages_out.load(Ordering::Relaxed),
        "bytes_in": m.bytes_in.load(Ordering::Relaxed),
        "bytes_out": m.bytes_out.load(Ordering::Relaxed),
        "rejected": rejected,
        "handler_backlog": ctx.dispatch.backlog(),
        "blocked_addresses": ctx.limits.blocked_count(),
        "events": ctx.events.figures(),
        "services": ctx.services.figures(),
    })
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
/// connections subscribed to `system` (coalesced: a client that is behind gets only the
/// newest), and it expires detached sessions. It sleeps on the shutdown condvar, so shutdown
/// wakes it at once; with no subscribers it builds no status at all.
pub(crate) fn status_loop(ctx: Arc<ServerContext>, tag: Arc<ThreadTag>) {
    let interval = ctx.config.status_interval;
    let resume = ctx.config.delivery.session_resume;
    let mut next_status = interval.map(|i| Instant::now() + i);
    let mut next_expiry: Option<Instant> = None;
    while !ctx.shutdown.is_requested() {
        tag.set(Activity::Waiting, ctx.uptime_ms());
        // Sessions detach at any time; look at least once per resume window.
        let sweep =
            next_expiry.unwrap_or_else(|| Instant::now() + resume.max(Duration::from_secs(1)));
        let wake_at = next_status.map_or(sweep, |s| s.min(sweep));
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
            let subscribers = ctx.events.status_subscribers();
            if !subscribers.is_empty() {
                let text: Arc<str> =
                    unsequenced_event("system", "status", &status_object(&ctx)).into();
                for conn in subscribers {
                    conn.offer_status(text.clone());
                    ctx.events
                        .metrics
                        .status_offered
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            next_status = Some(due + i).filter(|n| *n > now).or(Some(now + i));
        }
        next_expiry = ctx.events.expire(resume);
        ctx.limits.sweep();
    }
}
