//! Channel → handler registry and the worker pool (`ThreadPoolSize` threads, fed through the
//! queue mutex of the C design) that runs application handlers, so that a slow handler never
//! stalls a connection's reads, writes or heartbeat.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::Value;

use crate::message::{self, Command, ErrorCode, ReplyTo, WireError};
use crate::server::context::{ConnectionShared, Outbound, ServerContext};
use crate::server::runtime::threads::{Activity, ThreadRegistry, ThreadRole};
use crate::server::security::auth::Identity;

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

type HandlerFn = dyn Fn(&Request) -> HandlerResult + Send + Sync + 'static;
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
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("channels", &self.handlers.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Dispatcher {
    pub(crate) fn new() -> Self {
        Dispatcher {
            handlers: RwLock::new(HashMap::new()),
            queue: Mutex::new(WorkQueue::default()),
            queue_ready: Condvar::new(),
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

    /// Starts `ThreadPoolSize` workers named `hws-worker-<n>`.
    pub(crate) fn start_workers(ctx: &Arc<ServerContext>) -> std::io::Result<()> {
        let cap = per_channel_cap(ctx.config.thread_pool_size);
        for n in 0..ctx.config.thread_pool_size {
            let worker_ctx = ctx.clone();
            ThreadRegistry::spawn(
                ctx,
                ThreadRole::Worker,
                format!("hws-worker-{n}"),
                WORKER_STACK,
                None,
                move |tag| {
                    let d = &worker_ctx.dispatch;
                    loop {
                        let (channel, job) = {
                            let mut q = d.queue.lock();
                            loop {
                                if q.stopping {
                                    return;
                                }
                                if let Some(job) = q.take_runnable(cap) {
                                    break job;
                                }
                                tag.set(Activity::Waiting, worker_ctx.uptime_ms());
                                d.queue_ready.wait(&mut q);
                            }
                        };
                        tag.set(Activity::Running, worker_ctx.uptime_ms());
                        (job.0)();
                        d.queue.lock().finished(&channel);
                        // A job of this channel may have been waiting for the cap.
                        d.queue_ready.notify_all();
                    }
                },
            )?;
        }
        Ok(())
    }

    /// Routes a command on an application channel to its handler on the worker pool. The
    /// response (or error) is queued to `conn` under the command's id. Errors returned here
    /// (no handler, shutting down) are for the caller to send at once.
    pub(crate) fn dispatch(
        ctx: &Arc<ServerContext>,
        conn: &Arc<ConnectionShared>,
        identity: &Identity,
        command: Command,
    ) -> Result<(), WireError> {
        let handler = ctx.dispatch.handlers.read().get(&command.channel).cloned();
        let Some(handler) = handler else {
            return match ctx.services.route(&command.channel) {
                Some(service) => ctx
                    .services
                    .forward(ctx, &service, conn, identity, &command),
                None => Err(WireError::new(
                    ErrorCode::UnknownChannel,
                    format!(
                        "no handler or service is registered for channel {:?}",
                        command.channel
                    ),
                )
                .with_details(serde_json::json!({"channel": command.channel}))),
            };
        };
        let request = Request {
            connection_id: conn.id,
            peer: conn.peer,
            identity: identity.clone(),
            command,
        };
        let conn = conn.clone();
        let channel = request.command.channel.clone();
        ctx.dispatch.submit(
            &channel,
            Box::new(move || run_handler(&*handler, &request, &conn)),
        )
    }
}

/// Stack for worker threads: handlers are application code, so give them more than a
/// connection thread gets.
const WORKER_STACK: usize = 1 << 20;

fn run_handler(handler: &HandlerFn, request: &Request, conn: &ConnectionShared) {
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
