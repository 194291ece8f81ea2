//! The [`Server`]: listening sockets, one task and one fresh UDP socket per
//! transfer, limits, statistics and graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tftp_proto::options::{Direction, Limits, TransferOptions};
use tftp_proto::packet::{encode_error, ErrorCode};
use tftp_proto::server::{accept, Request, ServerRead, ServerWrite};
use tftp_proto::session::Session;
use tftp_proto::stats::{Outcome, Stats};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};

use crate::driver::{drive, Clock, Io, Until};
use crate::handler::{Handler, RequestInfo};

/// Default for [`ServerBuilder::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default for [`ServerBuilder::max_sessions_per_peer`].
pub const DEFAULT_MAX_SESSIONS_PER_PEER: usize = 64;
/// Default for [`ServerBuilder::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval of [`ServerBuilder::on_server_stats`] (as fbtftp).
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(60);

/// Called with each session's statistics when it ends.
pub type SessionCallback = Arc<dyn Fn(&Stats) + Send + Sync>;
/// Called periodically with the server's counters.
pub type ServerStatsCallback = Arc<dyn Fn(&ServerStats) + Send + Sync>;

/// Server-wide counters (a snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions started (requests that got a transfer socket).
    pub sessions_started: u64,
    /// Sessions that completed.
    pub sessions_completed: u64,
    /// Sessions whose client refused our OACK with ERROR 8 (UEFI size probes).
    pub sessions_probed: u64,
    /// Sessions that failed (errors, timeouts, handler refusals).
    pub sessions_failed: u64,
    /// Sessions running now.
    pub sessions_active: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Datagrams sent by sessions.
    pub packets_sent: u64,
    /// Datagrams received by sessions.
    pub packets_received: u64,
    /// DATA retransmissions.
    pub retransmits: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    /// Sessions that ended with an ERROR, by code 0..=8 (index 9: others).
    pub errors_by_code: [u64; 10],
    /// Requests refused by a limit (sessions, sessions per peer).
    pub rejected_by_limits: u64,
    /// Retransmitted requests for a session that already runs (ignored).
    pub duplicate_requests: u64,
    /// Malformed requests answered with ERROR, and datagrams ignored on the
    /// listening socket.
    pub bad_requests: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    probed: AtomicU64,
    failed: AtomicU64,
    active: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    packets_sent: AtomicU64,
    packets_received: AtomicU64,
    retransmits: AtomicU64,
    timeouts: AtomicU64,
    errors_by_code: [AtomicU64; 10],
    rejected_by_limits: AtomicU64,
    duplicate_requests: AtomicU64,
    bad_requests: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn record(&self, stats: &Stats) {
        match stats.outcome {
            Some(Outcome::Completed) => add(&self.completed, 1),
            Some(Outcome::OptionsRefused) => add(&self.probed, 1),
            _ => add(&self.failed, 1),
        }
        add(&self.bytes_sent, stats.bytes_sent);
        add(&self.bytes_received, stats.bytes_received);
        add(&self.packets_sent, stats.packets_sent);
        add(&self.packets_received, stats.packets_received);
        add(&self.retransmits, stats.retransmits);
        add(&self.timeouts, stats.timeouts);
        if let (Some(error), Some(outcome)) = (&stats.error, stats.outcome) {
            if !outcome.is_success() {
                let i = usize::from(error.code.as_u16()).min(9);
                add(&self.errors_by_code[i], 1);
            }
        }
    }

    fn snapshot(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            sessions_started: get(&self.started),
            sessions_completed: get(&self.completed),
            sessions_probed: get(&self.probed),
            sessions_failed: get(&self.failed),
            sessions_active: get(&self.active),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            packets_sent: get(&self.packets_sent),
            packets_received: get(&self.packets_received),
            retransmits: get(&self.retransmits),
            timeouts: get(&self.timeouts),
            errors_by_code: std::array::from_fn(|i| get(&self.errors_by_code[i])),
            rejected_by_limits: get(&self.rejected_by_limits),
            duplicate_requests: get(&self.duplicate_requests),
            bad_requests: get(&self.bad_requests),
        }
    }
}

/// Who is being served: for the per-peer limit and duplicate requests.
#[derive(Default)]
struct Table {
    per_ip: HashMap<IpAddr, usize>,
    running: HashSet<(SocketAddr, Direction, Vec<u8>)>,
    total: usize,
}

/// Why the table refused a request.
enum Refusal {
    Duplicate,
    Limit,
}

struct Shared<H> {
    handler: H,
    limits: Limits,
    max_sessions: usize,
    max_sessions_per_peer: usize,
    port_range: Option<(u16, u16)>,
    counters: Counters,
    table: Mutex<Table>,
    idle: Notify,
    on_session_end: Option<SessionCallback>,
    cancel: watch::Sender<bool>,
    clock: Clock,
}

/// Configures and binds a [`Server`].
pub struct ServerBuilder<H> {
    handler: H,
    listen: Vec<SocketAddr>,
    sockets: Vec<std::net::UdpSocket>,
    limits: Limits,
    max_sessions: usize,
    max_sessions_per_peer: usize,
    drain_timeout: Duration,
    port_range: Option<(u16, u16)>,
    reuse_port: usize,
    on_session_end: Option<SessionCallback>,
    on_server_stats: Option<(Duration, ServerStatsCallback)>,
}

impl<H: Handler> ServerBuilder<H> {
    /// Adds a listening address (IPv4 or IPv6; repeatable).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Adds an already bound socket (systemd socket activation, inetd).
    pub fn listen_socket(mut self, socket: std::net::UdpSocket) -> Self {
        self.sockets.push(socket);
        self
    }

    /// The protocol policy (options, request size, retransmission).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Most sessions at once; more requests get ERROR 0 "Server busy".
    /// Default [`DEFAULT_MAX_SESSIONS`].
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }

    /// Most sessions at once from one IP address. Default
    /// [`DEFAULT_MAX_SESSIONS_PER_PEER`].
    pub fn max_sessions_per_peer(mut self, n: usize) -> Self {
        self.max_sessions_per_peer = n;
        self
    }

    /// How long shutdown waits for running transfers before aborting them.
    /// Default [`DEFAULT_DRAIN_TIMEOUT`].
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Binds transfer sockets to ports in `low..=high` (for firewalls).
    pub fn port_range(mut self, low: u16, high: u16) -> Self {
        self.port_range = Some((low.min(high), low.max(high)));
        self
    }

    /// Binds `n` listening sockets per address with `SO_REUSEPORT`, so the
    /// kernel spreads requests across them (one accept task each).
    pub fn reuse_port(mut self, n: usize) -> Self {
        self.reuse_port = n;
        self
    }

    /// Calls `f` with each session's statistics when it ends (from the
    /// session's own task).
    pub fn on_session_end(mut self, f: impl Fn(&Stats) + Send + Sync + 'static) -> Self {
        self.on_session_end = Some(Arc::new(f));
        self
    }

    /// Calls `f` every `interval` with the server's counters (from a task of
    /// its own). fbtftp's default interval is [`DEFAULT_STATS_INTERVAL`].
    pub fn on_server_stats(
        mut self,
        interval: Duration,
        f: impl Fn(&ServerStats) + Send + Sync + 'static,
    ) -> Self {
        self.on_server_stats = Some((interval, Arc::new(f)));
        self
    }

    /// Binds the listening sockets.
    pub async fn bind(self) -> io::Result<Server<H>> {
        let mut sockets = Vec::new();
        for socket in self.sockets {
            socket.set_nonblocking(true)?;
            sockets.push(UdpSocket::from_std(socket)?);
        }
        for addr in &self.listen {
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
                limits: self.limits,
                max_sessions: self.max_sessions,
                max_sessions_per_peer: self.max_sessions_per_peer,
                port_range: self.port_range,
                counters: Counters::default(),
                table: Mutex::new(Table::default()),
                idle: Notify::new(),
                on_session_end: self.on_session_end,
                cancel,
                clock: Clock::new(),
            }),
            sockets: sockets.into_iter().map(Arc::new).collect(),
            drain_timeout: self.drain_timeout,
            on_server_stats: self.on_server_stats,
        })
    }
}

/// Binds `count` UDP sockets on `addr` (all on the same port, with
/// `SO_REUSEPORT` when `count > 1`, so the kernel spreads requests across
/// them). For binding before dropping privileges; pass the sockets to
/// [`ServerBuilder::listen_socket`].
pub fn bind_listen_sockets(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(count.max(1));
    let mut port = addr.port();
    for _ in 0..count.max(1) {
        let socket = bind_udp(SocketAddr::new(addr.ip(), port), count > 1)?;
        port = socket.local_addr()?.port();
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Binds a UDP socket, optionally with `SO_REUSEPORT`.
fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

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
            listen: Vec::new(),
            sockets: Vec::new(),
            limits: Limits::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_peer: DEFAULT_MAX_SESSIONS_PER_PEER,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            port_range: None,
            reuse_port: 0,
            on_session_end: None,
            on_server_stats: None,
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
        self.shared.counters.snapshot()
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
        self.counters.snapshot()
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
                    f(&shared.counters.snapshot());
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
        if shared.counters.active.load(Ordering::Acquire) == 0 {
            return true;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => {
                return shared.counters.active.load(Ordering::Acquire) == 0;
            }
        }
    }
}

async fn accept_loop<H: Handler>(shared: Arc<Shared<H>>, socket: Arc<UdpSocket>) -> io::Result<()> {
    let local = socket.local_addr()?;
    // One byte more than allowed, to tell an oversized request.
    let mut buf = vec![0u8; shared.limits.max_request_size + 1];
    let mut reply = [0u8; 128];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let request = match accept(&buf[..n], peer, &shared.limits) {
            Ok(request) => request,
            Err(reject) => {
                add(&shared.counters.bad_requests, 1);
                if let Some(len) = reject.encode(&mut reply) {
                    let _ = socket.send_to(&reply[..len], peer).await;
                }
                continue;
            }
        };
        match admit(&shared, &request) {
            Ok(()) => {}
            Err(Refusal::Duplicate) => {
                add(&shared.counters.duplicate_requests, 1);
                continue;
            }
            Err(Refusal::Limit) => {
                add(&shared.counters.rejected_by_limits, 1);
                if let Ok(len) = encode_error(
                    &mut reply,
                    ErrorCode::NotDefined,
                    b"Server busy, try again later",
                ) {
                    let _ = socket.send_to(&reply[..len], peer).await;
                }
                continue;
            }
        }
        add(&shared.counters.started, 1);
        add(&shared.counters.active, 1);
        let guard = SessionGuard {
            shared: Arc::clone(&shared),
            key: key(&request),
        };
        tokio::spawn(async move {
            let stats = run_session(&guard.shared, request, local).await;
            guard.shared.counters.record(&stats);
            if let Some(f) = &guard.shared.on_session_end {
                f(&stats);
            }
            drop(guard);
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

fn key(request: &Request) -> (SocketAddr, Direction, Vec<u8>) {
    (request.peer, request.direction, request.filename.clone())
}

fn admit<H>(shared: &Shared<H>, request: &Request) -> Result<(), Refusal> {
    // NOTE(unwrap): the lock is never held across an await or a panic point.
    let mut table = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    let k = key(request);
    if table.running.contains(&k) {
        return Err(Refusal::Duplicate);
    }
    let ip = request.peer.ip();
    let per_peer = table.per_ip.get(&ip).copied().unwrap_or(0);
    if table.total >= shared.max_sessions || per_peer >= shared.max_sessions_per_peer {
        return Err(Refusal::Limit);
    }
    table.running.insert(k);
    *table.per_ip.entry(ip).or_insert(0) += 1;
    table.total += 1;
    Ok(())
}

/// Releases a session's place in the table and counters, even on panic.
struct SessionGuard<H> {
    shared: Arc<Shared<H>>,
    key: (SocketAddr, Direction, Vec<u8>),
}

impl<H> Drop for SessionGuard<H> {
    fn drop(&mut self) {
        {
            let mut table = self.shared.table.lock().unwrap_or_else(|p| p.into_inner());
            table.running.remove(&self.key);
            let ip = self.key.0.ip();
            if let Some(n) = table.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    table.per_ip.remove(&ip);
                }
            }
            table.total -= 1;
        }
        self.shared.counters.active.fetch_sub(1, Ordering::AcqRel);
        self.shared.idle.notify_waiters();
    }
}

/// Binds the transfer socket (the server's TID) on the local IP the request
/// arrived on.
fn bind_transfer(
    local_ip: IpAddr,
    port_range: Option<(u16, u16)>,
    seed: u64,
) -> io::Result<std::net::UdpSocket> {
    let Some((low, high)) = port_range else {
        return bind_udp(SocketAddr::new(local_ip, 0), false);
    };
    let span = u64::from(high - low) + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free port in range");
    for i in 0..span.min(256) {
        let port = low + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        match bind_udp(SocketAddr::new(local_ip, port), false) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs one transfer to its end and returns its statistics.
async fn run_session<H: Handler>(
    shared: &Shared<H>,
    request: Request,
    listen: SocketAddr,
) -> Stats {
    let clock = shared.clock;
    let seed = clock.now().as_micros() ^ u64::from(request.peer.port());
    let socket =
        match bind_transfer(listen.ip(), shared.port_range, seed).and_then(UdpSocket::from_std) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot bind a transfer socket");
                let mut s = ServerRead::new(
                    &request,
                    TransferOptions::default(),
                    &shared.limits,
                    clock.now(),
                );
                s.abort(ErrorCode::NotDefined, "Server error");
                let _ = s.poll(clock.now());
                return s.stats().clone();
            }
        };
    let local = socket.local_addr().ok();
    let info = RequestInfo::new(request.clone(), listen);
    let cancel = Some(shared.cancel.subscribe());
    match request.direction {
        Direction::Read => {
            let response = shared.handler.read(&info).await;
            let (mut session, mut source) = match response {
                Ok(resp) => {
                    let limits = narrowed(&shared.limits, resp.limits.as_ref());
                    let oack = request.negotiate(&limits, resp.size).oack;
                    (
                        ServerRead::new(&request, oack, &limits, clock.now()),
                        Some(resp.source),
                    )
                }
                Err(e) => {
                    let mut s = ServerRead::new(
                        &request,
                        TransferOptions::default(),
                        &shared.limits,
                        clock.now(),
                    );
                    s.abort(e.code, &e.message);
                    (s, None)
                }
            };
            session.stats_mut().local = local;
            let mut io = match source.as_mut() {
                Some(src) => Io::Source(src),
                None => Io::None,
            };
            let mut buf = vec![0u8; 1024];
            drive(
                &mut session,
                &socket,
                &mut io,
                clock,
                &mut buf,
                cancel,
                Until::Done,
            )
            .await;
            session.stats().clone()
        }
        Direction::Write => {
            let response = shared.handler.write(&info).await;
            let (mut session, mut sink) = match response {
                Ok(resp) => {
                    let limits = narrowed(&shared.limits, resp.limits.as_ref());
                    let oack = request.negotiate(&limits, None).oack;
                    (
                        ServerWrite::new(&request, oack, &limits, clock.now()),
                        Some(resp.sink),
                    )
                }
                Err(e) => {
                    let mut s = ServerWrite::new(
                        &request,
                        TransferOptions::default(),
                        &shared.limits,
                        clock.now(),
                    );
                    s.abort(e.code, &e.message);
                    (s, None)
                }
            };
            session.stats_mut().local = local;
            let blksize = usize::from(session.stats().options_negotiated.block_size());
            let mut io = match sink.as_mut() {
                Some(sink) => Io::Sink(sink),
                None => Io::None,
            };
            let mut buf = vec![0u8; blksize + 5];
            let outcome = drive(
                &mut session,
                &socket,
                &mut io,
                clock,
                &mut buf,
                cancel,
                Until::Done,
            )
            .await;
            if let (Some(sink), Some(Outcome::Completed)) = (sink.as_mut(), outcome) {
                use tokio::io::AsyncWriteExt;
                if let Err(e) = sink.shutdown().await {
                    tracing::warn!(error = %e, "closing the uploaded file failed");
                }
            }
            session.stats().clone()
        }
    }
}

fn narrowed(server: &Limits, handler: Option<&Limits>) -> Limits {
    match handler {
        Some(h) => server.narrowed_by(h),
        None => server.clone(),
    }
}
