//! permessage-deflate (RFC 7692; docs/behaviour.md, Compression): negotiated with Python
//! `websockets` (both ways: against our server, and our client against its server), with
//! our own client, compressed on the wire, turned off by `Compression.Enabled`, and a
//! decompression bomb closed 1009 without the server's memory growing.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use hydrogen_ws::client::Credentials;
use hydrogen_ws::{Client, ClientConfig};
use serde_json::{Value, json};
use support::process::{BINARY_KEY, ServerProcess, temp_config};
use support::*;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{Role, WebSocket};

/// A server with compression on, whatever HWS_COMPRESSION says.
fn compressing() -> hydrogen_ws::Server {
    start_with(|c| c.compression.enabled = true)
}

fn python() -> String {
    std::env::var("HWS_PYTHON").unwrap_or_else(|_| "python3".into())
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/compression.py");

/// A raw upgrade offering `extensions`: the socket after the 101 and the response head.
fn raw_upgrade(addr: SocketAddr, key: &str, extensions: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: hydrogen-protocol\r\nAuthorization: Key {key}\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (tcp, String::from_utf8(head).unwrap())
}

/// One masked client frame on the raw socket.
fn send_frame(tcp: &mut TcpStream, rsv1: bool, payload: &[u8]) {
    let header = FrameHeader {
        is_final: true,
        rsv1,
        opcode: OpCode::Data(Data::Text),
        mask: Some([7, 1, 7, 1]),
        ..FrameHeader::default()
    };
    let mut out = Vec::new();
    Frame::from_payload(header, payload.to_vec().into())
        .format(&mut out)
        .unwrap();
    tcp.write_all(&out).unwrap();
}

/// The next frame the server sends: its header and payload, as on the wire. `buf` keeps
/// what was read past it.
fn read_frame(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> (FrameHeader, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        let mut cursor = std::io::Cursor::new(&buf[..]);
        if let Some((h, len)) = FrameHeader::parse(&mut cursor).unwrap() {
            let at = cursor.position() as usize;
            let end = at + len as usize;
            if buf.len() >= end {
                let payload = buf[at..end].to_vec();
                buf.drain(..end);
                return (h, payload);
            }
        }
        let n = tcp.read(&mut chunk).expect("a frame from the server");
        assert!(n > 0, "the server closed the socket");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    loop {
        let done = c.total_in() as usize;
        if out.capacity() == out.len() {
            out.reserve(4096);
        }
        c.compress_vec(&data[done..], &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}

#[test]
fn responses_are_compressed_on_the_wire_and_small_ones_are_not() {
    let server = compressing();
    let (mut tcp, head) = raw_upgrade(
        server.bound_addr(),
        ADMIN_KEY,
        "permessage-deflate; client_max_window_bits",
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate; client_no_context_takeover"),
        "{head}"
    );
    send_frame(
        &mut tcp,
        false,
        command("p1", "system", "ping", json!({})).as_bytes(),
    );
    let mut buf = Vec::new();
    let _welcome = read_frame(&mut tcp, &mut buf);
    let (pong, payload) = read_frame(&mut tcp, &mut buf);
    assert!(
        !pong.rsv1,
        "a small response goes uncompressed: {payload:?}"
    );
    send_frame(
        &mut tcp,
        false,
        command("s1", "system", "status", json!({})).as_bytes(),
    );
    let (status, packed) = read_frame(&mut tcp, &mut buf);
    assert!(status.rsv1, "the status response is compressed");
    let mut d = flate2::Decompress::new(false);
    let mut plain = Vec::with_capacity(64 * 1024);
    let input = [packed.clone(), vec![0, 0, 0xff, 0xff]].concat();
    d.decompress_vec(&input, &mut plain, flate2::FlushDecompress::Sync)
        .unwrap();
    let response: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(response["id"], "s1");
    assert!(
        packed.len() * 10 < plain.len() * 7,
        "{} bytes for {}",
        packed.len(),
        plain.len()
    );
    // A compressed command is inflated and answered.
    let big = command("c2", "system", "ping", json!({"pad": "p".repeat(3000)}));
    send_frame(&mut tcp, true, &deflate(big.as_bytes()));
    let (_, reply) = read_frame(&mut tcp, &mut buf);
    assert!(String::from_utf8_lossy(&reply).contains("c2"), "{reply:?}");
}

#[test]
fn compression_off_declines_every_offer() {
    let server = start_with(|c| c.compression.enabled = false);
    let (_, head) = raw_upgrade(server.bound_addr(), ADMIN_KEY, "permessage-deflate");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    // Our client still works with a server that declines.
    let mut cfg = ClientConfig::new(format!("ws://{}/", server.bound_addr()));
    cfg.credentials = Some(Credentials::key(ADMIN_KEY));
    let client = Client::connect(cfg).unwrap();
    let r = client.request("system", "ping", json!({}), WAIT).unwrap();
    assert_eq!(r, json!({"pong": true}));
}

#[test]
fn a_decompression_bomb_closes_1009_and_holds_no_memory() {
    let cfg = temp_config(r#"{"WebSocketServer":{"Port":0,"Interface":"127.0.0.1"}}"#);
    let started = ServerProcess::start(&cfg, "info", &[]);
    let bomb = deflate(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    let before = started.rss_kib();
    for _ in 0..3 {
        let (mut tcp, head) = raw_upgrade(started.addr, BINARY_KEY, "permessage-deflate");
        assert!(head.contains("permessage-deflate"), "{head}");
        send_frame(&mut tcp, true, &bomb);
        let mut ws = WebSocket::from_raw_socket(tcp, Role::Client, None);
        let close = expect_close(&mut ws).expect("a close frame");
        assert_eq!(u16::from(close.code), 1009, "{close:?}");
    }
    let after = started.rss_kib();
    assert!(
        after < before + 8 * 1024,
        "RSS {before} KiB -> {after} KiB: the 64 MiB expansion was allocated"
    );
    // The server goes on serving.
    let mut ws = connect(started.addr, Some(BINARY_KEY));
    request_ok(&mut ws, "p", "system", "ping", json!({}));
}

#[test]
fn our_client_and_python_websockets_compress_both_ways() {
    // Our client against our server: the admin's dump shows the connection compressed.
    let server = compressing();
    let mut cfg = ClientConfig::new(format!("ws://{}/", server.bound_addr()));
    cfg.credentials = Some(Credentials::key(ADMIN_KEY));
    let client = Client::connect(cfg).unwrap();
    let pad = "z".repeat(10_000);
    let r = client
        .request("system", "ping", json!({"pad": pad}), WAIT)
        .unwrap();
    assert_eq!(r["pong"], true);
    let dump = client
        .request("system", "threads", json!({}), WAIT)
        .unwrap();
    let compressed = dump["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["compression"] == "permessage-deflate")
        .count();
    assert_eq!(compressed, 1, "{dump}");

    // Our client against Python `websockets`' server, which compresses by default.
    let mut py = Command::new(python())
        .args([SCRIPT, "server"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs (make test makes .venv)");
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    let port_line = lines.next().unwrap().unwrap();
    let port = port_line.strip_prefix("PORT ").unwrap();
    let mut cfg = ClientConfig::new(format!("ws://127.0.0.1:{port}/"));
    cfg.reconnect.enabled = false;
    let client = Client::connect(cfg).unwrap();
    let r = client
        .request("demo", "echo", json!({"blob": "b".repeat(8000)}), WAIT)
        .unwrap();
    let _ = py.kill();
    let _ = py.wait();
    assert_eq!(r["received"], 8000, "{r}");
    assert_eq!(r["blob"].as_str().unwrap().len(), 4096);
    assert!(
        r["extensions"].to_string().contains("permessage-deflate"),
        "{r}"
    );
    assert!(
        r["header"]
            .as_str()
            .unwrap()
            .starts_with("permessage-deflate"),
        "{r}"
    );
}

#[test]
fn python_websockets_negotiates_with_our_server() {
    let server = compressing();
    let mut py = Command::new(python())
        .args([
            SCRIPT,
            "client",
            &server.bound_addr().port().to_string(),
            ADMIN_KEY,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("a line from the script").unwrap();
    let ext: Value = serde_json::from_str(next().strip_prefix("EXTENSIONS ").unwrap()).unwrap();
    assert!(
        ext["header"]
            .as_str()
            .unwrap()
            .starts_with("permessage-deflate"),
        "{ext}"
    );
    assert!(
        ext["active"].to_string().contains("permessage-deflate"),
        "{ext}"
    );
    assert_eq!(next(), "STATUS ok");
    assert_eq!(next(), "SUBSCRIBED");
    let detail = "d".repeat(2000);
    let delivered = server
        .publisher()
        .publish("print", "progress", json!({"percent": 7, "detail": detail}))
        .unwrap();
    assert_eq!(delivered, 1);
    let event: Value = serde_json::from_str(next().strip_prefix("EVENT ").unwrap()).unwrap();
    assert_eq!(event["percent"], 7);
    assert_eq!(event["detail"].as_str().unwrap().len(), 2000);
    let status = py.wait().unwrap();
    assert!(status.success());
}

#[test]
fn invalid_deflate_data_closes_1002() {
    let server = compressing();
    let (mut tcp, _) = raw_upgrade(server.bound_addr(), ADMIN_KEY, "permessage-deflate");
    // A block type of 3 (reserved) in the first byte: not DEFLATE.
    send_frame(&mut tcp, true, &[0xff, 0xff, 0xff, 0x00, 0x12]);
    let mut ws = WebSocket::from_raw_socket(tcp, Role::Client, None);
    let close = expect_close(&mut ws).expect("a close frame");
    assert_eq!(u16::from(close.code), 1002, "{close:?}");
}
