//! Every thread the server starts: named (`gdb` → `info threads` shows who is who), recorded with
//! its role, OS thread id, state and activity for the thread dump (README, Operating it), and
//! joined only after it has signalled its exit (Rust has no timed join).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::message::format_time;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::runtime::signal::ShutdownSignal;

/// What a thread is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum ThreadRole {
    Accept,
    Connection,
    Worker,
    Status,
    Flush,
    Bridge,
}

impl ThreadRole {
    fn as_str(self) -> &'static str {
        match self {
            ThreadRole::Accept => "accept",
            ThreadRole::Connection => "connection",
            ThreadRole::Worker => "worker",
            ThreadRole::Status => "status",
            ThreadRole::Flush => "flush",
            ThreadRole::Bridge => "mqtt",
        }
    }
}

/// What a background thread is doing now (connection threads report their connection state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Activity {
    Waiting = 0,
    Running,
    Exited,
}

impl Activity {
    fn as_str(v: u8) -> &'static str {
        ["waiting", "running", "exited"]
            .get(v as usize)
            .copied()
            .unwrap_or("?")
    }
}

/// The part of a thread's record the thread itself updates.
#[derive(Debug, Default)]
pub(crate) struct ThreadTag {
    tid: AtomicU64,
    activity: AtomicU8,
    last_activity_ms: AtomicU64,
}

impl ThreadTag {
    /// Records what the thread is doing; `now_ms` is the server's uptime in ms.
    pub(crate) fn set(&self, activity: Activity, now_ms: u64) {
        self.activity.store(activity as u8, Ordering::Relaxed);
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct ThreadEntry {
    role: ThreadRole,
    name: String,
    started: SystemTime,
    tag: Arc<ThreadTag>,
    connection: Option<Arc<ConnectionHandle>>,
    handle: Option<JoinHandle<()>>,
    exited: bool,
}

/// The threads the server started and has not joined yet. Each thread that ends notifies
/// `signal`'s condvar (when it was the last of its role), which [`ThreadRegistry::wait_exited`]
/// and the shutdown phases wait on.
#[derive(Debug)]
pub(crate) struct ThreadRegistry {
    signal: Arc<ShutdownSignal>,
    entries: Mutex<HashMap<u64, ThreadEntry>>,
    next_key: AtomicU64,
    /// Threads started and not yet exited, per [`ThreadRole`]: what the shutdown waits on,
    /// readable without the lock.
    running: [AtomicUsize; 6],
}

/// A thread that did not exit before a deadline.
#[derive(Debug, Clone)]
pub struct StuckThread {
    /// The thread's name (`hws-conn-7`, ...).
    pub name: String,
    /// What it is for (`connection`, `worker`, ...).
    pub role: &'static str,
    /// Its state when the deadline passed.
    pub state: String,
}

/// The calling thread's OS id (what `gdb`'s `info threads` and `/proc/self/task` show).
pub(crate) fn current_tid() -> u64 {
    rustix::thread::gettid().as_raw_nonzero().get() as u64
}

/// How long starting a background thread waits for it to run.
const THREAD_START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Stack kept below the caller's frame when [`release_stack_below`] gives pages back: room
/// for the calls it makes and the x86-64 red zone, with margin.
const STACK_MARGIN: usize = 4 * 1024;

/// Gives the kernel back the pages of this thread's stack below the caller's frame, which a
/// deep call that has returned (the handshake: HTTP parsing, tungstenite's upgrade) left
/// resident. A connection thread then idles on the few pages its loop uses. The pages come
/// back zero-filled if the stack grows there again. Linux only; a no-op where the stack's
/// bounds cannot be read.
#[inline(never)]
pub(crate) fn release_stack_below() {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which is then only read
    // and destroyed. madvise(MADV_DONTNEED) is applied to whole pages of this thread's own
    // stack strictly below the current frame minus STACK_MARGIN: memory no live frame uses
    // (the stack grows down; nothing below the stack pointer holds data once the calls that
    // used it have returned), so discarding its contents is harmless.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        let page = 4096;
        let (low, top) = (
            low as usize,
            here.saturating_sub(STACK_MARGIN) & !(page - 1),
        );
        if got == 0 && low % page == 0 && top > low && here < low + size {
            libc::madvise(low as *mut libc::c_void, top - low, libc::MADV_DONTNEED);
        }
    }
}

impl ThreadRegistry {
    /// An empty registry whose exiting threads notify `signal`.
    pub(crate) fn new(signal: Arc<ShutdownSignal>) -> Self {
        ThreadRegistry {
            signal,
            entries: Mutex::default(),
            next_key: AtomicU64::new(0),
            running: Default::default(),
        }
    }

    /// Starts a named thread with `stack_size` bytes of stack running `body`. When `body`
    /// returns (or panics) the thread marks itself exited and notifies the shutdown condvar.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        role: ThreadRole,
        name: String,
        stack_size: usize,
        connection: Option<Arc<ConnectionHandle>>,
        body: impl FnOnce(Arc<ThreadTag>) + Send + 'static,
    ) -> io::Result<()> {
        let registry = self;
        let key = registry.next_key.fetch_add(1, Ordering::Relaxed);
        let tag = Arc::new(ThreadTag::default());
        registry.entries.lock().insert(
            key,
            ThreadEntry {
                role,
                name: name.clone(),
                started: SystemTime::now(),
                tag: tag.clone(),
                connection,
                handle: None,
                exited: false,
            },
        );
        registry.running[role as usize].fetch_add(1, Ordering::AcqRel);
        let thread_registry = self.clone();
        // Background threads are waited for, so that once `Server::start` returns every one
        // of them runs under its name (gdb, thread dumps, tests that count threads). A
        // connection thread is not: the accept loop must not wait on the scheduler.
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let started_tx = (role != ThreadRole::Connection).then_some(started_tx);
        let spawned = std::thread::Builder::new()
            .name(name)
            .stack_size(stack_size)
            .spawn(move || {
                let _exit = ExitSignal {
                    registry: thread_registry,
                    key,
                    role,
                };
                tag.tid.store(current_tid(), Ordering::Relaxed);
                if let Some(tx) = started_tx {
                    let _ = tx.send(());
                }
                body(tag);
            });
        match spawned {
            Ok(handle) => {
                if let Some(e) = registry.entries.lock().get_mut(&key) {
                    e.handle = Some(handle);
                }
                if role != ThreadRole::Connection {
                    let _ = started.recv_timeout(THREAD_START_WAIT);
                }
                Ok(())
            }
            Err(e) => {
                registry.entries.lock().remove(&key);
                registry.running[role as usize].fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Joins every thread that has signalled its exit (each join returns at once).
    pub(crate) fn reap(&self) -> usize {
        let finished: Vec<JoinHandle<()>> = {
            let mut entries = self.entries.lock();
            let keys: Vec<u64> = entries
                .iter()
                .filter(|(_, e)| e.exited && e.handle.is_some())
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| entries.remove(&k).and_then(|e| e.handle))
                .collect()
        };
        let n = finished.len();
        for h in finished {
            let _ = h.join();
        }
        n
    }

    /// Threads not yet exited, optionally only those with `role`.
    pub(crate) fn running(&self, role: Option<ThreadRole>) -> usize {
        match role {
            Some(r) => self.running[r as usize].load(Ordering::Acquire),
            None => self.running.iter().map(|n| n.load(Ordering::Acquire)).sum(),
        }
    }

    /// Whether the threads of `role` answer: at least one is alive, and none has been busy
    /// (`running`) for longer than `within_ms` (a thread waiting in poll or on its condvar
    /// is answering). `now_ms` is the server's uptime. The error names the thread.
    pub(crate) fn responsive(
        &self,
        role: ThreadRole,
        now_ms: u64,
        within_ms: u64,
    ) -> Result<(), String> {
        let entries = self.entries.lock();
        let mut alive = false;
        for e in entries.values().filter(|e| e.role == role && !e.exited) {
            alive = true;
            let busy = e.tag.activity.load(Ordering::Relaxed) == Activity::Running as u8;
            let since = now_ms.saturating_sub(e.tag.last_activity_ms.load(Ordering::Relaxed));
            if busy && since > within_ms {
                return Err(format!("{} has been busy for {since} ms", e.name));
            }
        }
        if alive {
            Ok(())
        } else {
            Err(format!("no {} thread is running", role.as_str()))
        }
    }

    /// Threads still running, with their role and state.
    pub(crate) fn stuck(&self) -> Vec<StuckThread> {
        self.entries
            .lock()
            .values()
            .filter(|e| !e.exited)
            .map(|e| StuckThread {
                name: e.name.clone(),
                role: e.role.as_str(),
                state: state_of(e),
            })
            .collect()
    }

    /// The thread dump (README, Operating it): one object per thread, by name. `now_ms` is
    /// the server's uptime, which the idle times are measured against.
    pub(crate) fn dump(&self, now_ms: u64) -> Vec<Value> {
        let entries = self.entries.lock();
        let mut out: Vec<(String, Value)> = entries
            .values()
            .filter(|e| !e.exited)
            .map(|e| {
                let mut v = json!({
                    "name": e.name,
                    "role": e.role.as_str(),
                    "tid": e.tag.tid.load(Ordering::Relaxed),
                    "state": state_of(e),
                    "started": format_time(e.started),
                });
                let last = match &e.connection {
                    Some(c) => {
                        v["connection_id"] = json!(c.id);
                        v["peer"] = json!(c.peer.to_string());
                        if let Some(id) = c.identity.lock().as_ref() {
                            v["identity"] = json!(id.name);
                            v["role_of_client"] = json!(id.role.as_str());
                        }
                        v["queued"] = json!(c.queued());
                        if c.compressed.load(Ordering::Relaxed) {
                            v["compression"] = json!("permessage-deflate");
                        }
                        c.last_activity_ms.load(Ordering::Relaxed)
                    }
                    None => e.tag.last_activity_ms.load(Ordering::Relaxed),
                };
                v["idle_ms"] = json!(now_ms.saturating_sub(last));
                (e.name.clone(), v)
            })
            .collect();
        drop(entries);
        let ours: Vec<u64> = out.iter().filter_map(|(_, v)| v["tid"].as_u64()).collect();
        out.extend(
            other_threads(&ours)
                .into_iter()
                .map(|v| (v["name"].as_str().unwrap_or_default().to_string(), v)),
        );
        out.sort_by_key(|(name, _)| natural_key(name));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Waits (on the shutdown condvar) until no thread of `role` is running, up to `deadline`.
    pub(crate) fn wait_exited(
        &self,
        role: Option<ThreadRole>,
        deadline: Instant,
        skippable: bool,
    ) -> bool {
        self.signal
            .wait_until(deadline, skippable, || self.running(role) == 0)
    }
}

/// The process's threads that the registry does not know (`main`, the signal threads, a
/// controller's own): name and tid from `/proc/self/task`, role `process`.
fn other_threads(known: &[u64]) -> Vec<Value> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|tid| !known.contains(tid))
        .map(|tid| {
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"));
            let name = comm.map_or_else(|_| "?".to_string(), |c| c.trim().to_string());
            json!({"name": name, "role": "process", "tid": tid, "state": "running"})
        })
        .collect()
}

/// Sorts names with their numbers in numeric order: `hws-conn-2` before `hws-conn-10`.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem.to_string(), number.parse().unwrap_or(0))
}

fn state_of(e: &ThreadEntry) -> String {
    match &e.connection {
        Some(c) => c.state().as_str().to_string(),
        None => Activity::as_str(e.tag.activity.load(Ordering::Relaxed)).to_string(),
    }
}

/// Marks the thread exited when its body ends, however it ends.
struct ExitSignal {
    registry: Arc<ThreadRegistry>,
    key: u64,
    role: ThreadRole,
}

impl Drop for ExitSignal {
    fn drop(&mut self) {
        if let Some(e) = self.registry.entries.lock().get_mut(&self.key) {
            e.exited = true;
            e.tag
                .activity
                .store(Activity::Exited as u8, Ordering::Relaxed);
            e.connection = None;
        }
        // Waiters wait for a role (or all roles) to reach zero: wake them only then, not
        // once per exiting thread (1000 connections would mean 1000 wake-ups and rescans).
        let threads = &self.registry;
        if threads.running[self.role as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
            threads.signal.notify();
        }
    }
}
