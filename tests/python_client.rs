//! A client that is not ours: Python's `websockets` (installed by `make test`) talks to the
//! server, then receives close 1001 when the server shuts down.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::*;

#[test]
fn python_websockets_client_round_trip_and_shutdown_close() {
    let python = std::env::var("HWS_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import websockets"])
        .status();
    assert!(
        probe.map(|s| s.success()).unwrap_or(false),
        "{python} cannot import websockets: run `make test` (it installs it) or `pip install websockets`"
    );
    let server = start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_client.py"
    );
    let mut child = Command::new(&python)
        .arg(script)
        .arg(server.bound_addr().port().to_string())
        .arg(ADMIN_KEY)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line == "READY" {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "WELCOME ok",
            "PING ok",
            "STATUS ok",
            "BADJSON ok",
            "SIGNED ok",
            "LATEAUTH ok",
            "READY"
        ]
    );
    let report = server.shutdown();
    let close = lines.next().expect("a CLOSE line").unwrap();
    assert_eq!(close, "CLOSE 1001 server shutting down");
    assert!(child.wait().unwrap().success());
    assert!(report.stuck_threads.is_empty());
}
