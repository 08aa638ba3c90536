//! A TCP proxy on 127.0.0.1 between a client and the server, to make the network misbehave on
//! purpose: `cut` drops every connection without a WebSocket close frame (the client sees the
//! TCP stream end), `stall` keeps connections open but forwards nothing (a half-open link after
//! a network cut), `refuse` closes new connections at once (the server looks down).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

/// How often a forwarding thread with nothing to read looks at the stop flag.
const PROXY_TICK: Duration = Duration::from_millis(20);

#[derive(Default)]
struct ProxyState {
    stop: AtomicBool,
    stalled: AtomicBool,
    refusing: AtomicBool,
    accepted: AtomicUsize,
    open: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => break,
                };
                if st.stop.load(Ordering::SeqCst) {
                    break; // the wake-up connection from Drop
                }
                st.accepted.fetch_add(1, Ordering::SeqCst);
                if st.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                st.open.lock().push(client.try_clone().unwrap());
                st.open.lock().push(server.try_clone().unwrap());
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let st2 = st.clone();
                    let h = std::thread::spawn(move || forward(from, to, &st2));
                    st.threads.lock().push(h);
                }
            }
        });
        Proxy {
            addr,
            state,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Drops every open connection (FIN both ways, no close frame).
    pub fn cut(&self) {
        for s in self.state.open.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops (true) or resumes (false) forwarding, without closing anything.
    pub fn stall(&self, on: bool) {
        self.state.stalled.store(on, Ordering::SeqCst);
    }

    /// New connections are closed at once while on.
    pub fn refuse(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, st: &ProxyState) {
    from.set_read_timeout(Some(PROXY_TICK)).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !st.stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if st.stalled.load(Ordering::SeqCst) {
                    continue; // swallowed: neither side hears of it
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the blocking accept
        self.cut();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for h in self.state.threads.lock().drain(..) {
            let _ = h.join();
        }
    }
}
