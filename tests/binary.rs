//! SPEC §2: the `hydrogen-ws` binary — arguments, config errors and exit codes, signals,
//! thread dump on SIGUSR1, and secrets kept out of the log.

mod support;

use serde_json::json;
use std::io::Read;
use std::process::{Child, Command};
use std::time::Duration;
use support::process::{self, ServerProcess, Started, temp_config, wait_line};
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;

const BIN: &str = env!("CARGO_BIN_EXE_hydrogen-ws");
const SECRET: &str = process::BINARY_KEY;

fn run(args: &[&str], key: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("HYDROGEN_API_KEY");
    if let Some(k) = key {
        cmd.env("HYDROGEN_API_KEY", k);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_version_and_bad_arguments() {
    let (code, out, _) = run(&["--version"], None);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(&["--help"], None);
    assert_eq!(code, 0);
    assert!(out.contains("--config") && out.contains("--check-config"));
    let (code, _, err) = run(&["--frobnicate"], None);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"));
}

#[test]
fn help_into_a_closed_pipe_exits_0() {
    // `hydrogen-ws --help | head -1`: the reader may be gone before the help is written.
    // The pipe's read end is closed before the child starts, so its write fails for sure.
    for args in [&["--help"][..], &["--version"], &["client", "--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn no_api_key_refuses_to_start_and_says_how_to_set_one() {
    let cfg = temp_config(r#"{"WebSocketServer":{"Port":0,"Interface":"127.0.0.1"}}"#);
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HYDROGEN_API_KEY") && err.contains("export"),
        "{err}"
    );
}

#[test]
fn bad_values_exit_2_naming_the_key() {
    for (body, key) in [
        (
            r#"{"WebSocketServer":{"Port":"abc"}}"#,
            "WebSocketServer.Port",
        ),
        (
            r#"{"WebSocketServer":{"MaxConnections":0}}"#,
            "WebSocketServer.MaxConnections",
        ),
        (
            r#"{"WebSocketServer":{"Interface":"localhost"}}"#,
            "WebSocketServer.Interface",
        ),
        (
            r#"{"WebSocketServer":{"Keys":[{"Key":"k","Role":"root"}]}}"#,
            "WebSocketServer.Keys[0].Role",
        ),
        ("{not json", "<file>"),
    ] {
        let cfg = temp_config(body);
        let (code, _, err) = run(
            &["--config", cfg.to_str().unwrap(), "--check-config"],
            Some(SECRET),
        );
        assert_eq!(code, 2, "{body}: {err}");
        assert!(err.contains(key), "{body}: {err}");
    }
    let (code, _, err) = run(&["--config", "/nonexistent/hws.json"], Some(SECRET));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/hws.json"));
}

#[test]
fn check_config_prints_effective_config_with_secrets_redacted() {
    let cfg = temp_config(
        r#"{"WebSocketServer":{"Port":6123,"Bogus":true},"Logging":{"Level":"debug"}}"#,
    );
    let (code, out, err) = run(
        &["--config", cfg.to_str().unwrap(), "--check-config"],
        Some(SECRET),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["WebSocketServer"]["Port"], 6123);
    assert_eq!(v["WebSocketServer"]["LogLevel"], "debug");
    assert_eq!(v["WebSocketServer"]["Delivery"]["MaxRetries"], 5);
    assert_eq!(v["WebSocketServer"]["Keys"][0]["Key"], "binar…");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    assert!(
        err.contains("WebSocketServer.Bogus"),
        "unknown keys are warned about: {err}"
    );
}

#[test]
fn disabled_server_exits_0() {
    let cfg = temp_config(r#"{"WebSocketServer":{"Enabled":false}}"#);
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()], Some(SECRET));
    assert_eq!(code, 0);
    assert!(err.contains("disabled"), "{err}");
}

#[test]
fn no_free_port_exits_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = temp_config(&format!(
        r#"{{"WebSocketServer":{{"Port":{port},"PortFallbackCount":1,"Interface":"127.0.0.1"}}}}"#
    ));
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()], Some(SECRET));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&port.to_string()));
}

#[test]
#[cfg(feature = "tls")]
fn unusable_tls_material_exits_4() {
    let cfg = temp_config(
        r#"{"WebSocketServer":{"Port":0,"Interface":"127.0.0.1","SecureMode":"tls",
            "CertificatePath":"/nonexistent/c.pem","KeyPath":"/nonexistent/k.pem"}}"#,
    );
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()], Some(SECRET));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    let cfg = temp_config(r#"{"WebSocketServer":{"SecureMode":"tls"}}"#);
    let (code, _, err) = run(&["--config", cfg.to_str().unwrap()], Some(SECRET));
    assert_eq!(code, 2, "TLS without paths is a config error: {err}");
    assert!(err.contains("WebSocketServer.CertificatePath"), "{err}");
}

/// A board's minimal build (`--no-default-features`) refuses what it cannot do, naming the
/// setting and the feature, before it binds anything (exit 2).
#[test]
#[cfg(not(all(feature = "tls", feature = "jwt")))]
fn a_build_without_a_feature_refuses_its_settings() {
    let refused = [
        (
            !cfg!(feature = "tls"),
            r#""SecureMode":"tls","CertificatePath":"/c","KeyPath":"/k""#,
            "SecureMode",
            "tls",
        ),
        (
            !cfg!(feature = "jwt"),
            r#""Jwt":{"PublicKeyPath":"/p"}"#,
            "Jwt",
            "jwt",
        ),
        (
            !cfg!(feature = "jwt"),
            r#""SessionTokens":{"PrivateKeyPath":"/p"}"#,
            "SessionTokens",
            "jwt",
        ),
    ];
    for (_, setting, key, feature) in refused.iter().filter(|r| r.0) {
        let cfg = temp_config(&format!(
            r#"{{"WebSocketServer":{{"Port":0,"Interface":"127.0.0.1",{setting}}}}}"#
        ));
        let (code, _, err) = run(&["--config", cfg.to_str().unwrap()], Some(SECRET));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("WebSocketServer.{key}")), "{err}");
        assert!(err.contains(&format!("`{feature}` feature")), "{err}");
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
#[cfg(feature = "jwt")]
fn serves_until_sigterm_dumps_threads_on_sigusr1_and_never_logs_secrets() {
    // Bearer JWTs (ES256) and server-issued session tokens are on too, so the log check covers
    // tokens as well as keys. RUST_LOG=trace, the most a user can ask for (issue #11 §5:
    // tungstenite traces whole frames and the client's request head there).
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let jwt_public = temp_config(&ec.public_key_pem());
    let (rsa_private, _) = rsa_keypair();
    let session_key = temp_config(&rsa_private);
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "bob", "role": "viewer", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let cfg = temp_config(
        &json!({"WebSocketServer": {"Port": 0, "Interface": "127.0.0.1", "ShutdownTimeouts": {"CloseWaitMs": 300},
            "Jwt": {"PublicKeyPath": jwt_public, "Algorithms": ["ES256"]},
            "SessionTokens": {"PrivateKeyPath": session_key}}})
        .to_string(),
    );
    let Started {
        mut child,
        rx,
        reader,
        mut log,
        addr,
    } = ServerProcess::start(&cfg, "trace", &[]);

    let mut ws = connect(addr, Some(SECRET));
    assert_eq!(
        request(&mut ws, "1", "system", "ping", json!({}))["status"],
        "ok"
    );
    let mut by_query = try_connect(addr, None, &format!("/?key={SECRET}"), Some(PROTOCOL)).unwrap();
    assert_eq!(
        request(&mut by_query, "1", "system", "ping", json!({}))["status"],
        "ok"
    );
    let mut late = connect(addr, None);
    assert_eq!(
        request(&mut late, "1", "system", "auth", json!({"key": SECRET}))["status"],
        "ok"
    );
    let (_, welcome) = connect_with_welcome(addr, Some(SECRET));
    let session_token = welcome["session_token"].as_str().unwrap().to_string();
    let mut by_token = try_connect(addr, None, &format!("/?token={jwt}"), Some(PROTOCOL)).unwrap();
    assert_eq!(read_welcome(&mut by_token)["role"], "viewer");
    let mut late_token = connect(addr, None);
    request_ok(
        &mut late_token,
        "1",
        "system",
        "auth",
        json!({"token": session_token}),
    );
    let mut wrong = connect(addr, None);
    assert_eq!(
        request(
            &mut wrong,
            "1",
            "system",
            "auth",
            json!({"key": "wrong-key-abcdef"})
        )["error"]["code"],
        "auth_failed"
    );

    signal(&child, libc::SIGUSR1);
    wait_line(&rx, &mut log, |l| {
        l.contains("thread") && l.contains("hws-accept")
    });

    signal(&child, libc::SIGTERM);
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Away);
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "binary did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    reader.join().unwrap();
    log.extend(rx.try_iter());
    let all = log.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    for phase in 1..=5 {
        assert!(
            all.contains(&format!("shutdown phase {phase}")),
            "phase {phase} not logged:\n{all}"
        );
    }
    assert!(all.contains("shutdown complete in"), "{all}");
    assert!(!all.contains(SECRET), "the key appeared in the log");
    assert!(!all.contains(&jwt), "a JWT appeared in the log");
    assert!(
        !all.contains(&session_token),
        "a session token appeared in the log"
    );
    assert!(
        !all.contains(&jwt[jwt.len() - 20..]),
        "part of a JWT signature appeared in the log"
    );
    assert!(
        !all.contains("key=binary"),
        "a query string appeared in the log"
    );
    assert!(
        !all.contains("wrong-key-abcdef"),
        "a presented key appeared in the log"
    );
}

/// CPU time (user + system) the process `pid` has used, in clock ticks (100 a second).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Opens a WebSocket with the admin key; `None` if the server does not complete the upgrade
/// within `timeout`.
fn try_upgrade(addr: std::net::SocketAddr, timeout: Duration) -> Option<TestSocket> {
    upgrade_or_status(addr, timeout).ok()
}

/// Opens a WebSocket with the admin key, or says what came instead: the HTTP status of a
/// refusal, or `None` (no answer within `timeout`, or the connection was dropped).
fn upgrade_or_status(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<TestSocket, Option<u16>> {
    use tungstenite::client::IntoClientRequest;
    let tcp = std::net::TcpStream::connect(addr).map_err(|_| None)?;
    tcp.set_read_timeout(Some(timeout)).unwrap();
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    let headers = req.headers_mut();
    headers.insert("Authorization", format!("Key {SECRET}").parse().unwrap());
    headers.insert("Sec-WebSocket-Protocol", PROTOCOL.parse().unwrap());
    match tungstenite::client(req, tcp) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(Some(r.status().as_u16()))
        }
        Err(_) => Err(None),
    }
}

/// Lowers the soft `resource` limit of process `pid` to `value` from outside, with
/// prlimit(2) (not setrlimit between fork and exec: valgrind, under which `make memcheck`
/// runs these tests, refuses that). Below what is in use already is allowed: it applies to
/// the next allocation.
fn lower_soft_limit(pid: u32, resource: libc::__rlimit_resource_t, value: libc::rlim_t) {
    let pid = pid as libc::pid_t;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads and writes plain rlimit structs we own.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, resource, std::ptr::null(), &mut limit),
            0
        );
        limit.rlim_cur = value;
        assert_eq!(
            libc::prlimit(pid, resource, &limit, std::ptr::null_mut()),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// After a shortage of `what` ("threads", "file descriptors") has passed: a new client is
/// served, the end of the shortage is logged, and the server exits cleanly on SIGTERM.
/// Returns how many shortage episodes the log shows (each is logged when it starts).
fn recovers_from_shortage(mut s: Started, what: &str) -> usize {
    let mut ws = (0..20)
        .find_map(|_| try_upgrade(s.addr, Duration::from_millis(500)))
        .unwrap_or_else(|| panic!("the server serves again once {what} are available"));
    assert_eq!(
        request(&mut ws, "1", "system", "ping", json!({}))["status"],
        "ok"
    );
    wait_line(&s.rx, &mut s.log, |l| {
        l.contains("accepting again after") && l.contains(what)
    });
    signal(&s.child, libc::SIGTERM);
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    s.reader.join().unwrap();
    s.log.extend(s.rx.try_iter());
    let start_line = format!("accept: out of {what}");
    s.log.iter().filter(|l| l.contains(&start_line)).count()
}

#[test]
fn out_of_threads_answers_503_pauses_and_recovers() {
    // Connection threads with 64 MiB stacks under an address-space limit that leaves room
    // for two of them: the third cannot be started. One malloc arena (MALLOC_ARENA_MAX), so
    // that new threads do not take 64 MiB arenas out of that room.
    const STACK: u64 = 64 << 20;
    let cfg = temp_config(
        &json!({"WebSocketServer": {"Port": 0, "Interface": "127.0.0.1", "ThreadStackSize": STACK,
            "RateLimit": {"HandshakesPerMinutePerIp": 0}, "ShutdownTimeouts": {"CloseWaitMs": 300}}})
        .to_string(),
    );
    let mut s = ServerProcess::start(&cfg, "info", &[("MALLOC_ARENA_MAX", "1")]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    lower_soft_limit(
        s.child.id(),
        libc::RLIMIT_AS,
        vm_kib * 1024 + 2 * STACK + STACK / 2,
    );
    let mut held = Vec::new();
    let refused = loop {
        match upgrade_or_status(s.addr, Duration::from_secs(2)) {
            Ok(ws) => held.push(ws),
            Err(status) => break status,
        }
        assert!(held.len() <= 4, "no thread refused under the limit");
    };
    assert_eq!(refused, Some(503), "the client is told, not dropped");
    assert!(!held.is_empty(), "no client got in at all");
    wait_line(&s.rx, &mut s.log, |l| l.contains("out of threads"));
    // The others are still served.
    assert_eq!(
        request(&mut held[0], "1", "system", "ping", json!({}))["status"],
        "ok"
    );
    // Their threads end, their stacks are unmapped: a new client gets in again.
    drop(held);
    let episodes = recovers_from_shortage(s, "threads");
    assert!(episodes <= 2, "{episodes} episodes");
}

#[test]
fn out_of_file_descriptors_pauses_accepting_without_spinning_and_recovers() {
    // A client costs two descriptors (socket, wake descriptor), so the limit's parity decides
    // whether the server runs out at accept (none free) or after it (one free: the client gets
    // a 503). Inherited descriptors shift it, so both limits are run.
    for limit in [48, 49] {
        fd_exhaustion_scenario(limit);
    }
}

fn fd_exhaustion_scenario(fd_limit: libc::rlim_t) {
    const CLIENTS: usize = 40; // past any of the limits
    let cfg = temp_config(
        &json!({"WebSocketServer": {"Port": 0, "Interface": "127.0.0.1", "MaxConnections": 1000,
            "MaxConnectionsPerIp": 1000, "RateLimit": {"HandshakesPerMinutePerIp": 0},
            "ShutdownTimeouts": {"CloseWaitMs": 300}}})
        .to_string(),
    );
    let mut s = ServerProcess::start(&cfg, "info", &[]);
    lower_soft_limit(s.child.id(), libc::RLIMIT_NOFILE, fd_limit);
    // Clients one after another, each kept open, until one is not let in (a 503, or no answer
    // within 1 s): the server is out of descriptors.
    let mut held: Vec<TestSocket> = Vec::new();
    while let Some(ws) = try_upgrade(s.addr, Duration::from_secs(1)) {
        held.push(ws);
        assert!(
            held.len() < CLIENTS,
            "{CLIENTS} clients got in under a limit of {fd_limit} descriptors"
        );
    }
    assert!(!held.is_empty(), "no client got in at all");
    wait_line(&s.rx, &mut s.log, |l| l.contains("out of file descriptors"));
    // More clients arrive while the server is out of descriptors. With none free, accept
    // fails and they wait in the backlog; with one free, accept takes it, the wake descriptor
    // cannot be had, and the client gets a 503. Either way the accept loop must pause between
    // tries: a spinning loop burns ~100 ticks a second, or answers them all at once.
    let waiting: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
        .collect();
    let before = cpu_ticks(s.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(s.child.id()) - before;
    assert!(
        used < 40,
        "{used} ticks of CPU in 1 s while out of descriptors"
    );
    let answered_503 = waiting
        .iter()
        .filter(|tcp| {
            tcp.set_nonblocking(true).unwrap();
            let mut head = [0u8; 12];
            matches!((&mut &**tcp).read(&mut head), Ok(12) if &head == b"HTTP/1.1 503")
        })
        .count();
    assert!(
        answered_503 <= 15,
        "{answered_503} of 30 waiting clients answered within 1 s: the loop does not pause"
    );
    drop(waiting);
    drop(held);
    // Logged when an episode starts (and ends), not at each pause: the one above lasted over a
    // second, ten pauses or more. Accepting the 30 stale connections once the clients left
    // may run short again briefly: a second episode.
    let episodes = recovers_from_shortage(s, "file descriptors");
    assert!(episodes <= 4, "{episodes} episodes");
}

#[test]
fn info_logs_one_line_per_arrival_and_departure() {
    let cfg = temp_config(r#"{"WebSocketServer":{"Port":0,"Interface":"127.0.0.1"}}"#);
    let mut s = ServerProcess::start(&cfg, "info", &[]);
    let mut ws = connect(s.addr, Some(SECRET));
    request_ok(&mut ws, "1", "system", "ping", json!({}));
    let arrived = wait_line(&s.rx, &mut s.log, |l| l.contains("connected as default"));
    let bye = tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).unwrap();
    let _ = expect_close(&mut ws);
    let left = wait_line(&s.rx, &mut s.log, |l| l.contains(": left ("));
    let id = arrived
        .split("conn ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        left.contains(&format!("conn {id} "))
            && left.contains("default")
            && left.contains("close 1000")
            && left.contains(" s)"),
        "{left}"
    );
    assert!(!left.contains(SECRET));
    // The log says which signal started the shutdown.
    signal(&s.child, libc::SIGTERM);
    wait_line(&s.rx, &mut s.log, |l| {
        l.contains("SIGTERM received: shutting down")
    });
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
}
