//! The [`Server`]: listening sockets, one task and one fresh UDP socket per
//! transfer, limits, statistics and graceful shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tftp_blocking::registry::{Registry, Ticket};
use tftp_proto::options::Direction;
use tftp_proto::packet::ErrorCode;
use tftp_proto::server::{Admit, Request, ServerConfig, ServerSession};
use tftp_proto::session::Session;
use tftp_proto::stats::Stats;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};

use crate::driver::{drive, Clock, Io, Until};
use crate::handler::Handler;

pub use tftp_proto::server::{
    ServerStatsCallback, SessionCallback, DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_PEER, DEFAULT_STATS_INTERVAL,
};
pub use tftp_proto::stats::ServerStats;

struct Shared<H> {
    handler: H,
    registry: Arc<Registry>,
    idle: Notify,
    cancel: watch::Sender<bool>,
    clock: Clock,
}

/// Configures and binds a [`Server`].
pub struct ServerBuilder<H> {
    handler: H,
    sockets: Vec<std::net::UdpSocket>,
    reuse_port: usize,
    config: ServerConfig,
}

impl<H: Handler> ServerBuilder<H> {
    tftp_proto::server_setters!();

    /// Adds an already bound socket (systemd socket activation, inetd).
    pub fn listen_socket(mut self, socket: std::net::UdpSocket) -> Self {
        self.sockets.push(socket);
        self
    }

    /// Binds `n` listening sockets per address with `SO_REUSEPORT`, so the
    /// kernel spreads requests across them (one accept task each).
    pub fn reuse_port(mut self, n: usize) -> Self {
        self.reuse_port = n;
        self
    }

    /// Binds the listening sockets.
    pub async fn bind(self) -> io::Result<Server<H>> {
        let mut sockets = Vec::new();
        for socket in self.sockets {
            socket.set_nonblocking(true)?;
            sockets.push(UdpSocket::from_std(socket)?);
        }
        for addr in &self.config.listen {
            for socket in bind_listen_sockets(*addr, self.reuse_port.max(1))? {
                sockets.push(UdpSocket::from_std(socket)?);
            }
        }
        if sockets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listening address",
            ));
        }
        let (cancel, _) = watch::channel(false);
        Ok(Server {
            shared: Arc::new(Shared {
                handler: self.handler,
                registry: Registry::new(self.config.clone()),
                idle: Notify::new(),
                cancel,
                clock: Clock::new(),
            }),
            sockets: sockets.into_iter().map(Arc::new).collect(),
            drain_timeout: self.config.drain_timeout,
            on_server_stats: self.config.on_server_stats.clone(),
        })
    }
}

pub use tftp_blocking::net::bind_listen_sockets;
use tftp_blocking::net::bind_transfer;

/// A TFTP server: see [`Server::builder`].
pub struct Server<H> {
    shared: Arc<Shared<H>>,
    sockets: Vec<Arc<UdpSocket>>,
    drain_timeout: Duration,
    on_server_stats: Option<(Duration, ServerStatsCallback)>,
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

impl Server<()> {
    /// Starts configuring a server with `handler`.
    pub fn builder<H: Handler>(handler: H) -> ServerBuilder<H> {
        ServerBuilder {
            handler,
            sockets: Vec::new(),
            reuse_port: 0,
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

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.registry.counters.snapshot()
    }

    /// A handle that reads the counters while the server runs.
    pub fn stats_handle(&self) -> StatsHandle
    where
        H: Send + Sync + 'static,
    {
        let shared: Arc<dyn CountersSource> = self.shared.clone();
        StatsHandle { shared }
    }
}

trait CountersSource: Send + Sync {
    fn snapshot(&self) -> ServerStats;
}

impl<H: Send + Sync> CountersSource for Shared<H> {
    fn snapshot(&self) -> ServerStats {
        self.registry.counters.snapshot()
    }
}

/// Reads a running server's counters (e.g. for a metrics endpoint).
#[derive(Clone)]
pub struct StatsHandle {
    shared: Arc<dyn CountersSource>,
}

impl StatsHandle {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ServerStats {
        self.shared.snapshot()
    }
}

impl fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsHandle").finish()
    }
}

impl<H: Handler> Server<H> {
    /// Serves until `shutdown` resolves; then stops accepting, lets running
    /// transfers finish for up to the drain timeout, aborts the rest (they get
    /// ERROR 0 "Server shutting down") and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut accept_tasks = tokio::task::JoinSet::new();
        for socket in &self.sockets {
            accept_tasks.spawn(accept_loop(Arc::clone(&self.shared), Arc::clone(socket)));
        }
        let stats_task = self.on_server_stats.clone().map(|(interval, f)| {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tick.tick().await;
                    f(&shared.registry.counters.snapshot());
                }
            })
        });
        tokio::select! {
            () = shutdown => {}
            Some(result) = accept_tasks.join_next() => {
                // An accept loop only ends on a socket error.
                accept_tasks.abort_all();
                if let Some(t) = stats_task { t.abort() }
                return match result {
                    Ok(r) => r,
                    Err(e) => Err(io::Error::other(e)),
                };
            }
        }
        accept_tasks.abort_all();
        let Server {
            shared,
            sockets,
            drain_timeout,
            ..
        } = self;
        drop(sockets);
        let deadline = tokio::time::Instant::now() + drain_timeout;
        if !wait_idle(&shared, deadline).await {
            let _ = shared.cancel.send(true);
            // Aborted sessions send their ERROR and end at once.
            wait_idle(
                &shared,
                tokio::time::Instant::now() + Duration::from_secs(2),
            )
            .await;
        }
        if let Some(t) = stats_task {
            t.abort();
        }
        Ok(())
    }
}

/// Waits until no session runs, or `deadline`; true if idle.
async fn wait_idle<H>(shared: &Shared<H>, deadline: tokio::time::Instant) -> bool {
    loop {
        let notified = shared.idle.notified();
        if shared.registry.counters.active() == 0 {
            return true;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => {
                return shared.registry.counters.active() == 0;
            }
        }
    }
}

async fn accept_loop<H: Handler>(shared: Arc<Shared<H>>, socket: Arc<UdpSocket>) -> io::Result<()> {
    let local = socket.local_addr()?;
    // One byte more than allowed, to tell an oversized request.
    let mut buf = vec![0u8; shared.registry.config.limits.max_request_size + 1];
    let mut reply = [0u8; 128];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let admit = shared
            .registry
            .on_datagram(&buf[..n], peer, local, &mut reply);
        let (request, key) = match admit {
            Admit::Start { request, key } => (request, key),
            Admit::Reply(len) => {
                let _ = socket.send_to(&reply[..len], peer).await;
                continue;
            }
            Admit::Ignore => continue,
        };
        let notify = Arc::clone(&shared);
        let ticket = Ticket::new(Arc::clone(&shared.registry), key, move || {
            notify.idle.notify_waiters()
        });
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let stats = run_session(&shared, request, local).await;
            ticket.finish(&stats);
        });
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Runs one transfer to its end and returns its statistics.
async fn run_session<H: Handler>(
    shared: &Shared<H>,
    mut request: Request,
    listen: SocketAddr,
) -> Stats {
    let clock = shared.clock;
    request.local = Some(listen);
    let seed = clock.now().as_micros() ^ u64::from(request.peer.port());
    let socket = match bind_transfer(listen.ip(), shared.registry.config.port_range, seed)
        .and_then(UdpSocket::from_std)
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot bind a transfer socket");
            let s = ServerSession::refuse(
                &request,
                ErrorCode::NotDefined,
                "Server error",
                &shared.registry.config.limits,
                clock.now(),
            );
            return s.stats().clone();
        }
    };
    let (mut session, mut source, mut sink) = match request.direction {
        Direction::Read => match shared.handler.read(&request).await {
            Ok(r) => (
                ServerSession::start(
                    &request,
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
                    &request,
                    e.code,
                    &e.message,
                    &shared.registry.config.limits,
                    clock.now(),
                ),
                None,
                None,
            ),
        },
        Direction::Write => match shared.handler.write(&request).await {
            Ok(w) => (
                ServerSession::start(
                    &request,
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
                    &request,
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
        (Some(source), _) => Io::Source(source),
        (_, Some(sink)) => Io::Sink(sink, true),
        _ => Io::None,
    };
    let mut buf = vec![0u8; session.max_datagram()];
    drive(
        &mut session,
        &socket,
        &mut io,
        clock,
        &mut buf,
        Some(shared.cancel.subscribe()),
        Until::Done,
    )
    .await;
    session.stats().clone()
}
