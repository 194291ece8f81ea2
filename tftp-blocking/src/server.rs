//! The [`Server`] on std sockets: one accept thread per listening socket, one
//! thread per transfer (bounded by the session limit; a thread costs far less
//! than the socket and window it drives), and graceful shutdown through a
//! [`ShutdownHandle`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::registry::{Registry, Ticket};
use tftp_proto::options::Direction;
use tftp_proto::packet::ErrorCode;
use tftp_proto::server::{Admit, Request, ServerConfig, ServerSession};
use tftp_proto::session::Session;
use tftp_proto::stats::{ServerStats, Stats};

use crate::driver::{drive, Clock, Io};
use crate::handler::Handler;
use crate::net::{bind_listen_sockets, bind_transfer};

pub use tftp_proto::server::DEFAULT_DRAIN_TIMEOUT;
/// How often an accept thread looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

use tftp_proto::server::ServerStatsCallback as StatsCallback;

struct Shared<H> {
    handler: H,
    registry: Arc<Registry>,
    /// Set on shutdown: stop accepting.
    stopping: AtomicBool,
    /// Set after the drain deadline: abort running sessions.
    aborting: AtomicBool,
    /// Signalled on shutdown and whenever a session ends.
    changed: (Mutex<()>, Condvar),
    clock: Clock,
}

impl<H> Shared<H> {
    fn notify(&self) {
        let _guard = self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.1.notify_all();
    }

    /// Waits until `done()` or `timeout`; true if done.
    fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut guard = self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
        while !done() {
            guard = match deadline {
                None => self
                    .changed
                    .1
                    .wait(guard)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    self.changed
                        .1
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        true
    }
}

/// Configures and binds a [`Server`].
pub struct ServerBuilder<H> {
    handler: H,
    sockets: Vec<std::net::UdpSocket>,
    config: ServerConfig,
}

impl<H: Handler> ServerBuilder<H> {
    tftp_proto::server_setters!();

    /// Adds an already bound socket (systemd socket activation, inetd).
    pub fn listen_socket(mut self, socket: std::net::UdpSocket) -> Self {
        self.sockets.push(socket);
        self
    }

    /// Binds the listening sockets.
    pub fn bind(self) -> io::Result<Server<H>> {
        let mut sockets = self.sockets;
        for addr in &self.config.listen {
            sockets.extend(bind_listen_sockets(*addr, 1)?);
        }
        if sockets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listening address",
            ));
        }
        for s in &sockets {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(ACCEPT_POLL))?;
        }
        Ok(Server {
            shared: Arc::new(Shared {
                handler: self.handler,
                registry: Registry::new(self.config.clone()),
                stopping: AtomicBool::new(false),
                aborting: AtomicBool::new(false),
                changed: (Mutex::new(()), Condvar::new()),
                clock: Clock::new(),
            }),
            sockets,
            drain_timeout: self.config.drain_timeout,
            on_server_stats: self.config.on_server_stats.clone(),
        })
    }
}

/// A TFTP server on std sockets and threads.
pub struct Server<H> {
    shared: Arc<Shared<H>>,
    sockets: Vec<UdpSocket>,
    drain_timeout: Duration,
    on_server_stats: Option<(Duration, StatsCallback)>,
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

/// Stops a [`Server::serve`] from any thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<dyn Stop>);

trait Stop: Send + Sync {
    fn stop(&self);
    fn snapshot(&self) -> ServerStats;
}

impl<H: Send + Sync> Stop for Shared<H> {
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.notify();
    }
    fn snapshot(&self) -> ServerStats {
        self.registry.counters.snapshot()
    }
}

impl ShutdownHandle {
    /// Stops accepting; running transfers drain (see [`Server::serve`]).
    pub fn shutdown(&self) {
        self.0.stop();
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        self.0.snapshot()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShutdownHandle")
    }
}

impl Server<()> {
    /// Starts configuring a server with `handler`.
    pub fn builder<H: Handler>(handler: H) -> ServerBuilder<H> {
        ServerBuilder {
            handler,
            sockets: Vec::new(),
            config: ServerConfig::default(),
        }
    }
}

impl<H> Server<H> {
    /// The bound listening addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

impl<H: Handler> Server<H> {
    /// A handle that stops [`Server::serve`] and reads the counters.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Serves until [`ShutdownHandle::shutdown`]; then stops accepting, lets
    /// transfers finish for up to the drain timeout, aborts the rest (they get
    /// ERROR 0 "Server shutting down") and returns.
    pub fn serve(self) -> io::Result<()> {
        let mut accept_threads = Vec::new();
        for socket in self.sockets {
            let shared = Arc::clone(&self.shared);
            accept_threads.push(std::thread::spawn(move || accept_loop(&shared, &socket)));
        }
        let stats_thread = self.on_server_stats.map(|(interval, f)| {
            let shared = Arc::clone(&self.shared);
            std::thread::spawn(move || loop {
                if shared.wait_until(interval, || shared.stopping.load(Ordering::Acquire)) {
                    return;
                }
                f(&shared.registry.counters.snapshot());
            })
        });
        let shared = &self.shared;
        shared.wait_until(Duration::MAX, || shared.stopping.load(Ordering::Acquire));
        let mut result = Ok(());
        for t in accept_threads {
            if let Ok(Err(e)) = t.join() {
                result = Err(e);
            }
        }
        if !shared.wait_until(self.drain_timeout, || {
            shared.registry.counters.active() == 0
        }) {
            shared.aborting.store(true, Ordering::Release);
            shared.wait_until(Duration::from_secs(2), || {
                shared.registry.counters.active() == 0
            });
        }
        if let Some(t) = stats_thread {
            let _ = t.join();
        }
        result
    }
}

fn accept_loop<H: Handler>(shared: &Arc<Shared<H>>, socket: &UdpSocket) -> io::Result<()> {
    let local = socket.local_addr()?;
    let mut buf = vec![0u8; shared.registry.config.limits.max_request_size + 1];
    let mut reply = [0u8; 128];
    while !shared.stopping.load(Ordering::Acquire) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let admit = shared
            .registry
            .on_datagram(&buf[..n], peer, local, &mut reply);
        let (request, key) = match admit {
            Admit::Start { request, key } => (request, key),
            Admit::Reply(len) => {
                let _ = socket.send_to(&reply[..len], peer);
                continue;
            }
            Admit::Ignore => continue,
        };
        let notify = Arc::clone(shared);
        let ticket = Ticket::new(Arc::clone(&shared.registry), key, move || notify.notify());
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            let stats = run_session(&shared, &request);
            ticket.finish(&stats);
        });
    }
    Ok(())
}

fn run_session<H: Handler>(shared: &Shared<H>, request: &Request) -> Stats {
    let clock = shared.clock;
    let listen = request.local.unwrap_or(request.peer);
    let seed = clock.now().as_micros() ^ u64::from(request.peer.port());
    let socket = match bind_transfer(listen.ip(), shared.registry.config.port_range, seed) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot bind a transfer socket");
            let s = ServerSession::refuse(
                request,
                ErrorCode::NotDefined,
                "Server error",
                &shared.registry.config.limits,
                clock.now(),
            );
            return s.stats().clone();
        }
    };
    let (mut session, mut source, mut sink) = match request.direction {
        Direction::Read => match shared.handler.read(request) {
            Ok(r) => (
                ServerSession::start(
                    request,
                    &shared.registry.config.limits,
                    r.limits.as_ref(),
                    r.size,
                    clock.now(),
                ),
                Some(r.source),
                None,
            ),
            Err(e) => (
                ServerSession::refuse(
                    request,
                    e.code,
                    &e.message,
                    &shared.registry.config.limits,
                    clock.now(),
                ),
                None,
                None,
            ),
        },
        Direction::Write => match shared.handler.write(request) {
            Ok(w) => (
                ServerSession::start(
                    request,
                    &shared.registry.config.limits,
                    w.limits.as_ref(),
                    None,
                    clock.now(),
                ),
                None,
                Some(w.sink),
            ),
            Err(e) => (
                ServerSession::refuse(
                    request,
                    e.code,
                    &e.message,
                    &shared.registry.config.limits,
                    clock.now(),
                ),
                None,
                None,
            ),
        },
    };
    session.stats_mut().local = socket.local_addr().ok();
    let mut io = match (source.as_mut(), sink.as_mut()) {
        (Some(source), _) => Io::Source(&mut **source),
        (_, Some(sink)) => Io::Upload(&mut **sink),
        _ => Io::None,
    };
    let mut buf = vec![0u8; session.max_datagram()];
    let stop = Some(&shared.aborting);
    if let Err(e) = drive(&mut session, &socket, &mut io, clock, &mut buf, stop, false) {
        tracing::warn!(error = %e, "transfer socket failed");
    }
    session.stats().clone()
}
