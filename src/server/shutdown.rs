//! The five-phase shutdown (docs/behaviour.md, Shutdown), each phase timed and logged in
//! milliseconds: signal, close, join, cleanup, fallback. Every wait has a deadline; a second signal
//! ends the waits at once; the process never hangs on a stuck client.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::context::ServerContext;
use crate::server::runtime::threads::{StuckThread, ThreadRole};

/// How much longer than CloseWaitMs phase 2 waits: connection threads start their own
/// CloseWaitMs clock when they notice the shutdown, a little after phase 1.
const CLOSE_PHASE_MARGIN: Duration = Duration::from_millis(100);
/// After phase 5 shuts sockets down, how long it waits for their threads to notice.
const FALLBACK_GRACE: Duration = Duration::from_millis(200);

/// What a shutdown did and how long each phase took.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Milliseconds per phase: signal (from the first request until the shutdown runs),
    /// close, join, cleanup, fallback.
    pub phase_ms: [f64; 5],
    /// Milliseconds from the first shutdown request to the end of phase 5.
    pub total_ms: f64,
    /// Connections open (or handshaking) when the shutdown was first requested.
    pub connections_at_start: usize,
    /// Sockets phase 5 had to shut down by force.
    pub sockets_forced: usize,
    /// Threads still running at the end (named in the log); empty after a clean shutdown.
    pub stuck_threads: Vec<StuckThread>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Runs the five phases on the calling thread and returns the report.
pub(crate) fn run(ctx: &Arc<ServerContext>) -> ShutdownReport {
    let (start, open) = signal(ctx);
    let mut report = ShutdownReport {
        connections_at_start: open,
        ..ShutdownReport::default()
    };
    report.phase_ms[0] = ms(start);
    log::info!(
        "shutdown phase 1 (signal, {open} connections open): {:.2} ms",
        report.phase_ms[0]
    );
    report.phase_ms[1] = close(ctx);
    report.phase_ms[2] = join(ctx);
    report.phase_ms[3] = cleanup(ctx);
    report.phase_ms[4] = fallback(ctx, &mut report);
    report.total_ms = ms(start);
    log::info!("shutdown complete in {:.2} ms", report.total_ms);
    report
}

/// Phase 1: signal. The accept loop wakes on its descriptor and closes the listeners;
/// commands arriving from now on are answered `shutting_down`. A signal handler (or
/// `request_shutdown`) may have raised the flag already: the phase, and the report, start
/// there, so the hand-over to this thread is counted and so are the connections that were
/// open then. Returns when that was and how many were open.
fn signal(ctx: &ServerContext) -> (Instant, usize) {
    ctx.request_shutdown();
    ctx.shutdown
        .first_request()
        .expect("request_shutdown notes the first request")
}

/// Phase 2: close. Phase 1's write to the shutdown descriptor already woke every
/// connection thread; each flushes its queue, sends 1001 and waits for the client's close
/// frame (up to CloseWaitMs). Returns the phase's milliseconds.
fn close(ctx: &ServerContext) -> f64 {
    let t = Instant::now();
    let deadline = t + ctx.config.close_wait + CLOSE_PHASE_MARGIN;
    let closed = ctx
        .threads
        .wait_exited(Some(ThreadRole::Connection), deadline, true);
    let took = ms(t);
    log::info!(
        "shutdown phase 2 (close{}): {took:.2} ms",
        if closed { "" } else { ", some did not finish" },
    );
    took
}

/// Phase 3: join every thread that has signalled its exit, against one JoinMs deadline.
fn join(ctx: &ServerContext) -> f64 {
    let t = Instant::now();
    ctx.dispatch.stop_workers();
    let all_exited = ctx
        .threads
        .wait_exited(None, t + ctx.config.join_timeout, true);
    if !all_exited && ctx.shutdown.waits_skipped() {
        // Skipping waits is about clients; our own threads exit within microseconds of
        // being told, so give them a short grace rather than reporting them stuck.
        ctx.threads
            .wait_exited(None, Instant::now() + FALLBACK_GRACE, false);
    }
    let joined = ctx.threads.reap();
    let took = ms(t);
    log::info!("shutdown phase 3 (join {joined} threads): {took:.2} ms");
    took
}

/// Phase 4: cleanup. Listeners closed with the accept thread; free what is left and log the
/// totals (and the reliable events that end unacknowledged with the server).
fn cleanup(ctx: &ServerContext) -> f64 {
    let t = Instant::now();
    let (sessions, unacked) = ctx.events.clear_sessions();
    if unacked > 0 {
        log::warn!(
            "{unacked} reliable events were still unacknowledged in {sessions} sessions; they end with the server"
        );
    }
    let m = &ctx.metrics;
    let total = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    log::info!(
        "totals: {} connections, {} requests, {} messages in, {} out; {sessions} sessions freed",
        total(&m.total_connections),
        total(&m.total_requests),
        total(&m.messages_in),
        total(&m.messages_out),
    );
    let took = ms(t);
    log::info!("shutdown phase 4 (cleanup): {took:.2} ms");
    took
}

/// Phase 5: fallback. Sockets still open are shut down hard; threads still running are
/// named in the report and the log, and the caller goes on without them.
fn fallback(ctx: &ServerContext, report: &mut ShutdownReport) -> f64 {
    let t = Instant::now();
    let leftovers: Vec<_> = ctx.connections.lock().by_id.values().cloned().collect();
    for c in &leftovers {
        if c.shutdown_socket() {
            report.sockets_forced += 1;
            log::warn!(
                "shutdown: forced socket of conn {} {} closed (state {})",
                c.id,
                c.peer,
                c.state().as_str()
            );
        }
        c.waker.wake();
    }
    if report.sockets_forced > 0 || ctx.threads.running(None) > 0 {
        ctx.threads
            .wait_exited(None, Instant::now() + FALLBACK_GRACE, true);
    }
    ctx.threads.reap();
    report.stuck_threads = ctx.threads.stuck();
    for s in &report.stuck_threads {
        log::error!(
            "shutdown: thread {} ({}) still running in state {}; exiting without it",
            s.name,
            s.role,
            s.state
        );
    }
    let took = ms(t);
    log::info!(
        "shutdown phase 5 (fallback, {} sockets forced): {:.2} ms",
        report.sockets_forced,
        took
    );
    took
}
