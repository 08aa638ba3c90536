//! Channel → handler registry and the worker pool (`ThreadPoolSize` threads, fed through the
//! queue mutex of the C design) that runs application handlers, so that a slow handler never
//! stalls a connection's reads, writes or heartbeat.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::Value;

use crate::message::{self, Command, ErrorCode, ReplyTo, WireError};
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::registry::histogram::Histogram;
use crate::server::runtime::threads::{Activity, ThreadRegistry, ThreadRole, ThreadTag};
use crate::server::security::identity::Identity;

/// A command as a handler sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// The connection that sent it.
    pub connection_id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who sent it (key name and role).
    pub identity: Identity,
    /// The command: id, channel, action, data (always an object).
    pub command: Command,
}

/// What a handler returns: the response `data`, or an error the client receives as is.
pub type HandlerResult = Result<Value, WireError>;

pub(crate) type HandlerFn = dyn Fn(&Request) -> HandlerResult + Send + Sync + 'static;
type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, Default)]
struct WorkQueue {
    /// Waiting jobs with their channel.
    jobs: VecDeque<(String, JobBox)>,
    /// Workers busy per channel: a channel may hold at most `per_channel_cap` of them, so a
    /// handler that never returns cannot starve the other channels.
    busy: HashMap<String, usize>,
    stopping: bool,
}

impl WorkQueue {
    /// The first waiting job whose channel is under its cap.
    fn take_runnable(&mut self, cap: usize) -> Option<(String, JobBox)> {
        let busy = &self.busy;
        let pos = self
            .jobs
            .iter()
            .position(|(c, _)| busy.get(c).copied().unwrap_or(0) < cap)?;
        let job = self.jobs.remove(pos)?;
        *self.busy.entry(job.0.clone()).or_insert(0) += 1;
        Some(job)
    }

    fn finished(&mut self, channel: &str) {
        if let Some(n) = self.busy.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(channel);
            }
        }
    }
}

/// How many workers one channel may occupy at once: half the pool, rounded up (all of a pool
/// of one). The rest stay free for other channels.
pub(crate) fn per_channel_cap(pool_size: usize) -> usize {
    pool_size.div_ceil(2).max(1)
}

struct JobBox(Job);

impl std::fmt::Debug for JobBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// The handler registry and the worker queue.
pub(crate) struct Dispatcher {
    handlers: RwLock<HashMap<String, Arc<HandlerFn>>>,
    queue: Mutex<WorkQueue>,
    queue_ready: Condvar,
    /// How long each handler took (`/metrics`).
    handling_time: Arc<Histogram>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("channels", &self.handlers.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher without handlers; each handler's time goes into `handling_time`.
    pub(crate) fn new(handling_time: Arc<Histogram>) -> Self {
        Dispatcher {
            handlers: RwLock::new(HashMap::new()),
            queue: Mutex::new(WorkQueue::default()),
            queue_ready: Condvar::new(),
            handling_time,
        }
    }

    pub(crate) fn register(
        &self,
        channel: &str,
        handler: Arc<HandlerFn>,
    ) -> Option<Arc<HandlerFn>> {
        self.handlers.write().insert(channel.to_string(), handler)
    }

    pub(crate) fn channels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether a library handler serves `channel`.
    pub(crate) fn has_handler(&self, channel: &str) -> bool {
        self.handlers.read().contains_key(channel)
    }

    /// Jobs waiting for a worker.
    pub(crate) fn backlog(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    fn submit(&self, channel: &str, job: Job) -> Result<(), WireError> {
        let mut q = self.queue.lock();
        if q.stopping {
            return Err(WireError::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        q.jobs.push_back((channel.to_owned(), JobBox(job)));
        drop(q);
        // Not notify_one: the woken worker may find only jobs of a channel at its cap.
        self.queue_ready.notify_all();
        Ok(())
    }

    /// Tells the workers to finish: queued jobs are dropped (their connections are closing).
    pub(crate) fn stop_workers(&self) {
        let mut q = self.queue.lock();
        q.stopping = true;
        q.jobs.clear();
        drop(q);
        self.queue_ready.notify_all();
    }

    /// Starts `pool_size` workers named `hws-worker-<n>` in `threads`; `started_at` is the
    /// server's start, which their activity stamps count from.
    pub(crate) fn start_workers(
        self: &Arc<Self>,
        threads: &Arc<ThreadRegistry>,
        pool_size: usize,
        started_at: std::time::Instant,
    ) -> std::io::Result<()> {
        let cap = per_channel_cap(pool_size);
        for n in 0..pool_size {
            let d = self.clone();
            threads.spawn(
                ThreadRole::Worker,
                format!("hws-worker-{n}"),
                WORKER_STACK,
                None,
                move |tag| d.work(cap, &tag, started_at),
            )?;
        }
        Ok(())
    }

    /// A worker's loop: runs jobs whose channel is under `cap` until the workers stop.
    fn work(&self, cap: usize, tag: &ThreadTag, started_at: std::time::Instant) {
        let now_ms = || started_at.elapsed().as_millis() as u64;
        loop {
            let (channel, job) = {
                let mut q = self.queue.lock();
                loop {
                    if q.stopping {
                        return;
                    }
                    if let Some(job) = q.take_runnable(cap) {
                        break job;
                    }
                    tag.set(Activity::Waiting, now_ms());
                    self.queue_ready.wait(&mut q);
                }
            };
            tag.set(Activity::Running, now_ms());
            (job.0)();
            self.queue.lock().finished(&channel);
            // A job of this channel may have been waiting for the cap.
            self.queue_ready.notify_all();
        }
    }

    /// The handler registered for `channel`, if any.
    pub(crate) fn handler_for(&self, channel: &str) -> Option<Arc<HandlerFn>> {
        self.handlers.read().get(channel).cloned()
    }

    /// Runs `command` with `handler` on the worker pool; the response (or error) is queued
    /// to `conn` under the command's id. An error (shutting down) is for the caller to send
    /// at once.
    pub(crate) fn submit_command(
        &self,
        handler: Arc<HandlerFn>,
        conn: &Arc<ConnectionHandle>,
        identity: &Identity,
        command: Command,
    ) -> Result<(), WireError> {
        let request = Request {
            connection_id: conn.id,
            peer: conn.peer,
            identity: identity.clone(),
            command,
        };
        let conn = conn.clone();
        let channel = request.command.channel.clone();
        let handling_time = self.handling_time.clone();
        self.submit(
            &channel,
            Box::new(move || {
                let started = std::time::Instant::now();
                run_handler(&*handler, &request, &conn);
                handling_time.observe(started.elapsed());
            }),
        )
    }
}

/// Stack for worker threads: handlers are application code, so give them more than a
/// connection thread gets.
const WORKER_STACK: usize = 1 << 20;

fn run_handler(handler: &HandlerFn, request: &Request, conn: &ConnectionHandle) {
    let to = ReplyTo::from(&request.command);
    let outcome = catch_unwind(AssertUnwindSafe(|| handler(request)));
    let text = match &outcome {
        Ok(Ok(data)) => message::response_ok(&to, data),
        Ok(Err(err)) => message::response_error(&to, err),
        Err(_) => {
            log::error!(
                "handler for {}/{} panicked (conn {} {}); closing that client with 1011",
                request.command.channel,
                request.command.action,
                conn.id,
                conn.peer
            );
            message::response_error(
                &to,
                &WireError::new(ErrorCode::ServerError, "the handler failed (panicked)"),
            )
        }
    };
    // Replies are bounded by the per-connection in-flight limit, not by the queue limit.
    let _ = conn.push(
        Outbound::Reply {
            id: to.id.clone(),
            text,
        },
        usize::MAX,
    );
    if outcome.is_err() {
        let _ = conn.push(
            Outbound::Close {
                code: 1011,
                reason: "handler failed",
            },
            usize::MAX,
        );
    }
}
