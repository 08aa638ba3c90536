//! The handshake as a client's bytes reach it: one real server (in this process, on 127.0.0.1)
//! gets each input on a fresh TCP connection, followed by end of input, and the target reads
//! the answer until the server closes. Head parsing, limits, credentials, the subprotocol and
//! tungstenite's upgrade all run as in production; a panic on any server thread aborts.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fn server() -> SocketAddr {
    static SERVER: OnceLock<hydrogen_ws::ServerHandle> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let (mut config, _) = hydrogen_ws::Config::from_json_str(
                r#"{"WebSocketServer": {"Interface": "127.0.0.1", "Port": 0,
                    "Key": "fuzz-key-0123456789abcdef", "HandshakeTimeoutMs": 1000,
                    "MaxConnectionsPerIp": 1000000,
                    "RateLimit": {"MessagesPerSecond": 0, "HandshakesPerMinutePerIp": 0}}}"#,
            )
            .unwrap();
            config.close_wait = Duration::from_millis(50);
            hydrogen_ws::Server::start(config).unwrap()
        })
        .bound_addr()
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut tcp) = TcpStream::connect(server()) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = tcp.write_all(data);
    let _ = tcp.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
});
