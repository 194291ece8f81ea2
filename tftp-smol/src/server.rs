//! The [`Server`] on async-io: listening sockets, one task and one fresh UDP
//! socket per transfer (spawned on smol's global executor, which also runs
//! under async-std), limits, statistics and graceful shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, Timer};
use tftp_blocking::net::{bind_listen_sockets, bind_transfer};
use tftp_blocking::registry::{Registry, Ticket};
use tftp_proto::options::Direction;
use tftp_proto::packet::ErrorCode;
use tftp_proto::server::{Admit, Request, ServerConfig, ServerSession};
use tftp_proto::session::Session;
use tftp_proto::stats::{ServerStats, Stats};

use crate::driver::{drive, Clock, Io};
use crate::handler::Handler;

pub use tftp_proto::server::DEFAULT_DRAIN_TIMEOUT;

use tftp_proto::server::ServerStatsCallback as StatsCallback;

struct Shared<H> {
    handler: H,
    registry: Arc<Registry>,
    /// Closed to abort running sessions.
    abort: (Sender<()>, Receiver<()>),
    /// One message per ended session (wakes the drain).
    ended: (Sender<()>, Receiver<()>),
    clock: Clock,
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
        let sockets = sockets
            .into_iter()
            .map(Async::new)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Server {
            shared: Arc::new(Shared {
                handler: self.handler,
                registry: Registry::new(self.config.clone()),
                abort: smol::channel::bounded(1),
                ended: smol::channel::unbounded(),
                clock: Clock::new(),
            }),
            sockets: sockets.into_iter().map(Arc::new).collect(),
            drain_timeout: self.config.drain_timeout,
            on_server_stats: self.config.on_server_stats.clone(),
        })
    }
}

/// A TFTP server on async-io.
pub struct Server<H> {
    shared: Arc<Shared<H>>,
    sockets: Vec<Arc<Async<UdpSocket>>>,
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
            .filter_map(|s| s.get_ref().local_addr().ok())
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.registry.counters.snapshot()
    }
}

/// Reads a running server's counters.
#[derive(Clone)]
pub struct StatsHandle(Arc<dyn Fn() -> ServerStats + Send + Sync>);

impl StatsHandle {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ServerStats {
        (self.0)()
    }
}

impl fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatsHandle")
    }
}

impl<H: Handler> Server<H> {
    /// A handle that reads the counters while the server runs.
    pub fn stats_handle(&self) -> StatsHandle {
        let shared = Arc::clone(&self.shared);
        StatsHandle(Arc::new(move || shared.registry.counters.snapshot()))
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets transfers
    /// finish for up to the drain timeout, aborts the rest (ERROR 0 "Server
    /// shutting down") and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let accepts: Vec<_> = self
            .sockets
            .iter()
            .map(|s| smol::spawn(accept_loop(Arc::clone(&self.shared), Arc::clone(s))))
            .collect();
        let stats_task = self.on_server_stats.clone().map(|(interval, f)| {
            let shared = Arc::clone(&self.shared);
            smol::spawn(async move {
                let mut tick = Timer::interval(interval);
                loop {
                    smol::stream::StreamExt::next(&mut tick).await;
                    f(&shared.registry.counters.snapshot());
                }
            })
        });
        shutdown.await;
        let result = Ok(());
        for a in accepts {
            a.cancel().await;
        }
        drop(self.sockets);
        let shared = &self.shared;
        if !wait_idle(shared, self.drain_timeout).await {
            shared.abort.0.close();
            wait_idle(shared, Duration::from_secs(2)).await;
        }
        if let Some(t) = stats_task {
            t.cancel().await;
        }
        result
    }
}

/// Waits until no session runs or `timeout` passes; true if idle.
async fn wait_idle<H>(shared: &Shared<H>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while shared.registry.counters.active() > 0 {
        let ended = async { shared.ended.1.recv().await.is_ok() };
        let late = async {
            Timer::at(deadline).await;
            false
        };
        if !ended.or(late).await {
            return shared.registry.counters.active() == 0;
        }
    }
    true
}

async fn accept_loop<H: Handler>(shared: Arc<Shared<H>>, socket: Arc<Async<UdpSocket>>) {
    if let Err(e) = accept_requests(shared, socket).await {
        tracing::error!(error = %e, "listening socket failed");
    }
}

async fn accept_requests<H: Handler>(
    shared: Arc<Shared<H>>,
    socket: Arc<Async<UdpSocket>>,
) -> io::Result<()> {
    let local = socket.get_ref().local_addr()?;
    let mut buf = vec![0u8; shared.registry.config.limits.max_request_size + 1];
    let mut reply = [0u8; 128];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
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
                let _ = socket.send_to(&reply[..len], peer).await;
                continue;
            }
            Admit::Ignore => continue,
        };
        let notify = Arc::clone(&shared);
        let ticket = Ticket::new(Arc::clone(&shared.registry), key, move || {
            let _ = notify.ended.0.try_send(());
        });
        let shared = Arc::clone(&shared);
        smol::spawn(async move {
            let stats = run_session(&shared, &request).await;
            ticket.finish(&stats);
        })
        .detach();
    }
}

async fn run_session<H: Handler>(shared: &Shared<H>, request: &Request) -> Stats {
    let clock = shared.clock;
    let listen = request.local.unwrap_or(request.peer);
    let seed = clock.now().as_micros() ^ u64::from(request.peer.port());
    let socket = match bind_transfer(listen.ip(), shared.registry.config.port_range, seed)
        .and_then(Async::new)
    {
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
        Direction::Read => match shared.handler.read(request).await {
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
        Direction::Write => match shared.handler.write(request).await {
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
    session.stats_mut().local = socket.get_ref().local_addr().ok();
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
        Some(shared.abort.1.clone()),
        false,
    )
    .await;
    session.stats().clone()
}
