//! Real figures of this process (threads, memory) and of the system it runs on, for the status
//! and info objects.
#![forbid(unsafe_code)]

use crate::server::status_types::SystemInfo;
use parking_lot::Mutex;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Samples this process's memory through sysinfo. Kept between calls: a refresh of one process
/// is a couple of `/proc` reads.
pub(crate) struct ProcessSampler {
    system: Mutex<Option<System>>,
    pid: Pid,
}

impl std::fmt::Debug for ProcessSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessSampler")
    }
}

/// Real figures of the process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessFigures {
    pub threads: u64,
    pub virtual_bytes: u64,
    pub resident_bytes: u64,
}

impl ProcessSampler {
    pub(crate) fn new() -> Self {
        ProcessSampler {
            system: Mutex::new(System::new().ok()),
            pid: Pid::from_u32(std::process::id()),
        }
    }

    pub(crate) fn sample(&self) -> ProcessFigures {
        let mut figures = ProcessFigures {
            threads: thread_count(),
            ..Default::default()
        };
        let mut guard = self.system.lock();
        if let Some(sys) = guard.as_mut() {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[self.pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().without_tasks(),
            );
            if let Some(p) = sys.process(self.pid) {
                figures.virtual_bytes = p.virtual_memory();
                figures.resident_bytes = p.memory();
            }
        }
        figures
    }
}

/// The process's thread count from `/proc/self/status` (`Threads:`); sysinfo would list every
/// task to count them, which costs a `/proc` read per thread.
fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The kernel's `uname(2)` fields.
pub(crate) fn uname() -> SystemInfo {
    let u = rustix::system::uname();
    let text = |f: &std::ffi::CStr| f.to_string_lossy().into_owned();
    SystemInfo {
        sysname: text(u.sysname()),
        nodename: text(u.nodename()),
        release: text(u.release()),
        version: text(u.version()),
        machine: text(u.machine()),
    }
}
