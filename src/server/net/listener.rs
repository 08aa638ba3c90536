//! Binding (Interface and Port, falling back through Port..Port+PortFallbackCount-1; IPv4
//! and/or IPv6) and the accept loop (`hws-accept`): one `poll(2)` over the listeners and the
//! shutdown wake descriptor, so shutdown stops accepting at once.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::config::Config;
use crate::error::Error;
use crate::server::connection;
use crate::server::context::ServerContext;
use crate::server::runtime::threads::{Activity, ThreadTag};
use crate::wake::{self, Interest, Waker};

/// Pending connections the kernel queues for us.
const LISTEN_BACKLOG: i32 = 1024;
/// Connection threads allowed beyond MaxConnections, for clients still handshaking (they
/// get a proper 503 once their request is read). Past that, sockets are refused at accept.
const HANDSHAKE_HEADROOM: usize = 64;
/// How long the accept loop pauses when the process is out of file descriptors or threads.
const SHORTAGE_PAUSE: Duration = Duration::from_millis(100);

/// The addresses to listen on, from Interface / EnableIPv4 / EnableIPv6.
fn addresses(config: &Config) -> Vec<IpAddr> {
    let mut out = Vec::new();
    match config.interface {
        IpAddr::V4(v4) => {
            if config.enable_ipv4 {
                out.push(IpAddr::V4(v4));
            }
            if config.enable_ipv6 {
                if v4.is_unspecified() {
                    out.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                } else if v4.is_loopback() {
                    out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
                } else {
                    log::warn!(
                        "EnableIPv6 is on but Interface {v4} has no IPv6 counterpart; listening on IPv4 only"
                    );
                }
            }
        }
        IpAddr::V6(v6) => out.push(IpAddr::V6(v6)),
    }
    out
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds every address on the first port of the range where all of them bind.
/// Errors: [`Error::Bind`] naming the addresses and ports tried.
pub(crate) fn bind(config: &Config) -> Result<Vec<TcpListener>, Error> {
    let addrs = addresses(config);
    let count = if config.port == 0 {
        1
    } else {
        config.port_fallback_count
    };
    let last_port = config.port.saturating_add(count - 1);
    let mut last_err = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind");
    for port in config.port..=last_port {
        let mut listeners: Vec<TcpListener> = Vec::new();
        let mut port_in_use = port;
        let mut failed = None;
        for ip in &addrs {
            match bind_one(SocketAddr::new(*ip, port_in_use)) {
                Ok(l) => {
                    if port_in_use == 0 {
                        port_in_use = l.local_addr().map(|a| a.port()).unwrap_or(0);
                    }
                    listeners.push(l);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                for l in &listeners {
                    if let Ok(a) = l.local_addr() {
                        log::info!(
                            "listening on {a}{}",
                            if port == config.port {
                                ""
                            } else {
                                " (fallback port)"
                            }
                        );
                    }
                }
                return Ok(listeners);
            }
            Some(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
            {
                log::warn!("port {port} unavailable ({e}); trying the next");
                last_err = e;
            }
            Some(e) => {
                return Err(Error::Bind {
                    attempted: format!("{:?} port {port}", addrs),
                    source: e,
                });
            }
        }
    }
    Err(Error::Bind {
        attempted: format!("{:?} ports {}..={last_port}", addrs, config.port),
        source: last_err,
    })
}

/// Refuses a client before its request is read (no thread or descriptor for it): a 503
/// with `Retry-After` and the JSON error body, counted as `server_busy`.
fn refuse_busy(ctx: &ServerContext, tcp: &TcpStream) {
    refuse_early(
        ctx,
        tcp,
        "503 Service Unavailable",
        "server_busy",
        "the server is out of connection slots or resources; retry later",
    );
}

/// Writes a complete HTTP refusal straight from the accept loop, before any thread exists
/// for the client. The socket is fresh, so a response this small fits its send buffer and
/// the write does not block. A TLS port gets no plain-text answer (the client expects a
/// TLS record): the socket is just closed.
fn refuse_early(
    ctx: &ServerContext,
    mut tcp: &TcpStream,
    status: &str,
    code: &'static str,
    message: &str,
) {
    ctx.metrics.count_rejection(code);
    if ctx.tls.is_some() {
        return;
    }
    let body =
        serde_json::json!({"error": {"code": code, "message": message, "details": {}}}).to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nRetry-After: 5\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes());
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A shortage of something every client needs (file descriptors, threads), as the accept
/// loop sees it: logged when it starts and when it ends, not at each of its pauses (ten a
/// second), however long it lasts.
struct Shortage {
    what: &'static str,
    advice: &'static str,
    since: Option<Instant>,
    pauses: u64,
}

impl Shortage {
    fn new(what: &'static str, advice: &'static str) -> Self {
        Shortage {
            what,
            advice,
            since: None,
            pauses: 0,
        }
    }

    /// Notes `e` (logged if it starts an episode) and waits SHORTAGE_PAUSE, or until
    /// shutdown is requested.
    fn pause(&mut self, e: &io::Error, ctx: &ServerContext) {
        self.pauses += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            log::error!(
                "accept: out of {} ({e}); new clients get a 503 or wait in the listen backlog, \
                 retrying every {} ms ({})",
                self.what,
                SHORTAGE_PAUSE.as_millis(),
                self.advice
            );
        }
        ctx.shutdown.wait_requested(Some(SHORTAGE_PAUSE));
    }

    fn end(&mut self) {
        if let Some(since) = self.since.take() {
            log::warn!(
                "accept: accepting again after {} ms out of {} ({} pauses)",
                since.elapsed().as_millis(),
                self.what,
                std::mem::take(&mut self.pauses)
            );
        }
    }
}

/// The accept loop: runs until shutdown is requested, then drops (closes) the listeners.
pub(crate) fn accept_loop(
    ctx: Arc<ServerContext>,
    listeners: Vec<TcpListener>,
    tag: Arc<ThreadTag>,
) {
    let mut interests: Vec<Interest> = listeners
        .iter()
        .map(|l| Interest {
            fd: l.as_raw_fd(),
            read: true,
            write: false,
        })
        .collect();
    interests.push(Interest {
        fd: ctx.shutdown.waker.raw_fd(),
        read: true,
        write: false,
    });
    let mut ready = Vec::with_capacity(interests.len());
    let mut acceptor = Acceptor::new(&ctx);
    while !ctx.shutdown.is_requested() {
        tag.set(Activity::Waiting, ctx.uptime_ms());
        if let Err(e) = wake::wait(&interests, None, &mut ready) {
            log::error!("accept loop: poll failed: {e}");
            break;
        }
        tag.set(Activity::Running, ctx.uptime_ms());
        if ctx.shutdown.is_requested() {
            break;
        }
        for (listener, r) in listeners.iter().zip(&ready) {
            if r.readable {
                acceptor.drain(listener);
            }
        }
        ctx.threads.reap();
    }
    log::debug!(
        "accept loop stopped; closing {} listener(s)",
        listeners.len()
    );
}

/// Takes connections off a listener and starts their threads, within the limits.
struct Acceptor<'a> {
    ctx: &'a Arc<ServerContext>,
    /// Connection threads at most (established and handshaking).
    max_threads: usize,
    descriptors: Shortage,
    threads: Shortage,
}

/// Whether the acceptor goes on with the listener's backlog.
enum Next {
    More,
    Pause,
}

impl<'a> Acceptor<'a> {
    fn new(ctx: &'a Arc<ServerContext>) -> Self {
        Acceptor {
            ctx,
            max_threads: ctx.config.max_connections + HANDSHAKE_HEADROOM,
            descriptors: Shortage::new(
                "file descriptors",
                "raise `ulimit -n` or lower MaxConnections",
            ),
            threads: Shortage::new(
                "threads",
                "lower MaxConnections or ThreadStackSize, or raise the process's memory or thread limits",
            ),
        }
    }

    /// Accepts until the listener's backlog is empty or a shortage pauses the loop.
    fn drain(&mut self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((tcp, peer)) => {
                    if let Next::Pause = self.take(tcp, peer) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_out_of_descriptors(&e) => {
                    self.descriptors.pause(&e, self.ctx);
                    return;
                }
                Err(e) => {
                    log::debug!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// One accepted socket: refused early (per-address or thread limit, no wake descriptor,
    /// no thread) or given its connection thread.
    fn take(&mut self, tcp: TcpStream, peer: SocketAddr) -> Next {
        let ctx = self.ctx;
        let per_ip = ctx.config.max_connections_per_ip;
        if ctx.connections_from(peer.ip()) >= per_ip {
            log::debug!("refusing {peer}: MaxConnectionsPerIp ({per_ip}) open or handshaking");
            let why = format!(
                "MaxConnectionsPerIp ({per_ip}) reached for {}: connections still in their handshake count too",
                peer.ip()
            );
            refuse_early(ctx, &tcp, "429 Too Many Requests", "rate_limited", &why);
            return Next::More;
        }
        if ctx.live_connections() >= self.max_threads {
            log::warn!(
                "refusing {peer}: {} connections already open or handshaking",
                self.max_threads
            );
            refuse_busy(ctx, &tcp);
            return Next::More;
        }
        // The connection's wake descriptor: with the socket, one of the two descriptors a
        // client costs. Without it the client gets a 503 (it would otherwise see its
        // connection dropped without a word) and the loop pauses as when accept itself runs
        // out.
        let waker = match Waker::new() {
            Ok(w) => w,
            Err(e) => {
                refuse_busy(ctx, &tcp);
                if is_out_of_descriptors(&e) {
                    self.descriptors.pause(&e, ctx);
                    return Next::Pause;
                }
                log::error!("refusing {peer}: no wake descriptor: {e}");
                return Next::More;
            }
        };
        self.descriptors.end();
        // No thread for it (memory or thread limits): a 503 as well, and a pause, so that a
        // shortage is not a storm of failing clients.
        match connection::spawn(ctx, tcp, peer, waker) {
            Ok(()) => {
                self.threads.end();
                Next::More
            }
            Err((e, socket)) => {
                refuse_busy(ctx, &socket);
                self.threads.pause(&e, ctx);
                Next::Pause
            }
        }
    }
}
