//! A printer controller that embeds the server: it answers `print/start`, `print/pause` and
//! `print/status` from a handler on the worker pool, and runs until Ctrl-C.
//!
//! ```text
//! HYDROGEN_API_KEY=$(head -c 24 /dev/urandom | base64) cargo run --example print_handler
//! ```

use std::sync::Arc;

use hydrogen_ws::{ApiKey, Config, ErrorCode, Role, Secret, Server, WireError};
use parking_lot::Mutex;
use serde_json::json;

#[derive(Default)]
struct Printer {
    job: Option<String>,
    paused: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let key = std::env::var("HYDROGEN_API_KEY").map_err(|_| "set HYDROGEN_API_KEY")?;
    let mut config = Config::default();
    config
        .keys
        .push(ApiKey::new("example", Secret::new(key), Role::Operator));
    let server = Arc::new(Server::start(config)?);

    let printer = Arc::new(Mutex::new(Printer::default()));
    server.register_handler("print", move |req| {
        let mut p = printer.lock();
        match req.command.action.as_str() {
            "start" => {
                let file = req.command.data["file"]
                    .as_str()
                    .unwrap_or("untitled.gcode")
                    .to_string();
                p.job = Some(file.clone());
                p.paused = false;
                Ok(json!({"started": file}))
            }
            "pause" if p.job.is_some() => {
                p.paused = true;
                Ok(json!({"paused": true}))
            }
            "pause" => Err(WireError::new(
                ErrorCode::InvalidMessage,
                "nothing is printing",
            )),
            "status" => Ok(json!({"job": p.job, "paused": p.paused})),
            other => Err(WireError::new(
                ErrorCode::UnknownAction,
                format!("print has no action {other}"),
            )),
        }
    })?;
    println!(
        "print controller on {}; Ctrl-C to stop",
        server.bound_addr()
    );
    let s = server.clone();
    ctrlc::set_handler(move || s.request_shutdown())?;
    server.wait_for_shutdown_request(None);
    let report = server.shutdown();
    println!("stopped in {:.1} ms", report.total_ms);
    Ok(())
}
