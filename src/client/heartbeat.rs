//! The `hwc-heartbeat` thread: pings after `heartbeat_interval` of silence and declares the
//! link dead when nothing at all arrives within `pong_timeout` of the ping (a half-open socket
//! after a network cut sends no error, only silence). It sleeps on the state condvar until the
//! next of those instants, so an idle client costs one wake-up per interval.
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::shared::{IoCommand, Shared};

pub(crate) fn run(shared: Arc<Shared>) {
    let interval = shared.config.heartbeat_interval;
    let pong_timeout = shared.config.pong_timeout;
    loop {
        let mut st = shared.state.lock();
        if st.stopping {
            break;
        }
        if !st.link_up {
            shared.changed.wait(&mut st);
            continue;
        }
        let generation = st.generation;
        drop(st);
        let now = std::time::Instant::now();
        let due = match shared.ping_sent() {
            Some(sent) if now >= sent + pong_timeout => {
                let why = format!("no frame within {} ms of a ping", pong_timeout.as_millis());
                log::info!("client: {why}; dropping the link");
                let _ = shared.to_io.send(IoCommand::LinkDead { generation, why });
                shared.io_waker.wake();
                // Sleep until the I/O thread has moved on to another link (or none).
                let mut st = shared.state.lock();
                while !st.stopping && st.link_up && st.generation == generation {
                    shared.changed.wait(&mut st);
                }
                continue;
            }
            Some(sent) => sent + pong_timeout,
            None if now >= shared.last_frame() + interval => {
                shared.note_ping_sent();
                let _ = shared.to_io.send(IoCommand::Ping { generation });
                shared.io_waker.wake();
                now + pong_timeout
            }
            None => shared.last_frame() + interval,
        };
        let mut st = shared.state.lock();
        if !st.stopping && st.link_up && st.generation == generation {
            shared.changed.wait_until(&mut st, due);
        }
    }
}
