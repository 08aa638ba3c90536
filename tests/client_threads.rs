//! Dropping a client joins its three threads and closes its socket: thread and descriptor
//! counts of this process (read from /proc/self/task and /proc/self/fd) return to where they
//! were. A file of its own, so no other test's clients are counted.

mod support;

use std::time::Duration;

use hydrogen_ws::client::{Client, ClientConfig, Credentials};
use serde_json::json;
use support::{VIEWER_KEY, WAIT, start, threads_named, wait_for};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn drop_joins_every_thread_and_closes_every_descriptor() {
    let server = start();
    let url = format!("ws://{}/", server.bound_addr());
    // Warm up once so lazily created process-wide descriptors are in the baseline.
    drop(
        Client::connect(ClientConfig::new(&url).with_credentials(Credentials::key(VIEWER_KEY)))
            .unwrap(),
    );
    wait_for("the warm-up connection is gone", || {
        server.connection_count() == 0 && threads_named("hws-conn").is_empty()
    });
    // pthread_join returns when the thread has released its stack; the kernel drops it from
    // /proc/self/task a moment later.
    wait_for("no client threads", || threads_named("hwc-").is_empty());
    let fds = open_fds();
    for round in 0..3 {
        let config = ClientConfig::new(&url).with_credentials(Credentials::key(VIEWER_KEY));
        let client = Client::connect(config).unwrap();
        let sub = client.subscribe("print").unwrap();
        client.request("system", "ping", json!({}), WAIT).unwrap();
        let mut names = threads_named("hwc-");
        names.sort();
        assert_eq!(
            names,
            ["hwc-heartbeat", "hwc-io", "hwc-reconnect"],
            "round {round}"
        );
        drop(sub);
        drop(client);
        wait_for("threads joined by Drop", || {
            threads_named("hwc-").is_empty()
        });
        wait_for("the server closed its side", || {
            server.connection_count() == 0
        });
        wait_for("descriptors back to baseline", || open_fds() == fds);
    }
    // A client whose server went away still stops within its close timeout.
    let mut config = ClientConfig::new(&url).with_credentials(Credentials::key(VIEWER_KEY));
    config.close_timeout = Duration::from_millis(300);
    let client = Client::connect(config).unwrap();
    server.shutdown();
    let t0 = std::time::Instant::now();
    drop(client);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    wait_for("threads joined by Drop", || {
        threads_named("hwc-").is_empty()
    });
}
