//! A server's settings and the one builder every runtime configures them
//! with ([`ServerBuilder`]); the client's settings live on
//! [`Client`](crate::Client).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tftp_proto::options::Limits;
use tftp_proto::server::Admission;
use tftp_proto::stats::{ServerStats, Stats};

pub use tftp_proto::server::{
    DEFAULT_IPV6_PEER_PREFIX, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
};

/// Default for [`ServerBuilder::max_memory`]: 256 MiB of session buffers
/// for the whole server (a small VM's share), so 10 000 sessions at the
/// largest window cannot take gigabytes.
pub const DEFAULT_MAX_MEMORY: usize = 256 * 1024 * 1024;

/// Default for [`ServerBuilder::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval for periodic server statistics (as fbtftp).
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(60);
/// The smallest response (by its known size) that
/// [`ServerBuilder::session_threads`] moves to a thread: below it the
/// hand-off costs about what the thread saves.
pub const SESSION_THREAD_MIN_SIZE: u64 = 1024 * 1024;
/// How long aborted sessions get to send their ERROR after the drain timeout.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Called with each session's statistics when it ends.
pub type SessionCallback = Arc<dyn Fn(&Stats) + Send + Sync>;
/// Called periodically with the server's counters.
pub type ServerStatsCallback = Arc<dyn Fn(&ServerStats) + Send + Sync>;

/// A server's settings (what [`ServerBuilder`] collects).
#[derive(Clone)]
pub struct ServerConfig {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Listening sockets per address, spread by the kernel with `SO_REUSEPORT`
    /// when more than one.
    pub reuse_port: usize,
    /// The protocol policy.
    pub limits: Limits,
    /// Most sessions at once ([`DEFAULT_MAX_SESSIONS`]).
    pub max_sessions: usize,
    /// Most sessions at once from one peer: an IPv4 address or an IPv6 /64
    /// ([`DEFAULT_MAX_SESSIONS_PER_PEER`]).
    pub max_sessions_per_peer: usize,
    /// IPv6 peers are counted by this prefix length
    /// ([`DEFAULT_IPV6_PEER_PREFIX`], a /64).
    pub ipv6_peer_prefix: u8,
    /// Most sessions at once whose peer has not answered yet (`None`:
    /// [`tftp_proto::server::default_max_unverified`]: half of
    /// `max_sessions`).
    pub max_unverified: Option<usize>,
    /// Memory for all sessions' buffers together ([`DEFAULT_MAX_MEMORY`]).
    pub max_memory: usize,
    /// How long shutdown waits for running transfers ([`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
    /// Local ports for transfer sockets.
    pub port_range: Option<(u16, u16)>,
    /// Most lock-step sessions at once on threads of their own (0: none;
    /// see [`ServerBuilder::session_threads`]).
    pub session_threads: usize,
    /// Serve every transfer from the listening socket (see
    /// [`ServerBuilder::single_port`]).
    pub single_port: bool,
    /// Caps of `blksize` for requests sent to a local address (see
    /// [`ServerBuilder::max_blksize_at`]).
    pub max_blksize_at: Vec<(IpAddr, u16)>,
    /// Called when each session ends.
    pub on_session_end: Option<SessionCallback>,
    /// Called every interval with the counters.
    pub on_server_stats: Option<(Duration, ServerStatsCallback)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Vec::new(),
            reuse_port: 1,
            limits: Limits::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_peer: DEFAULT_MAX_SESSIONS_PER_PEER,
            ipv6_peer_prefix: DEFAULT_IPV6_PEER_PREFIX,
            max_unverified: None,
            max_memory: DEFAULT_MAX_MEMORY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            port_range: None,
            session_threads: 0,
            single_port: false,
            max_blksize_at: Vec::new(),
            on_session_end: None,
            on_server_stats: None,
        }
    }
}

impl ServerConfig {
    /// The protocol policy of a request sent to `local`: [`limits`](Self::limits)
    /// with `max_blksize` lowered to the address's cap, if it has one.
    pub fn limits_at(&self, local: Option<SocketAddr>) -> Limits {
        let mut limits = self.limits.clone();
        let cap = local.and_then(|local| {
            let ip = local.ip().to_canonical();
            self.max_blksize_at
                .iter()
                .rev()
                .find(|(at, _)| at.to_canonical() == ip)
        });
        if let Some(&(_, cap)) = cap {
            limits.max_blksize = limits.max_blksize.min(cap);
        }
        limits
    }

    /// The admission policy these settings describe.
    pub fn admission(&self) -> Admission {
        let admission = Admission::new(self.max_sessions, self.max_sessions_per_peer)
            .with_ipv6_prefix(self.ipv6_peer_prefix);
        match self.max_unverified {
            Some(n) => admission.with_max_unverified(n),
            None => admission,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("reuse_port", &self.reuse_port)
            .field("limits", &self.limits)
            .field("max_sessions", &self.max_sessions)
            .field("max_sessions_per_peer", &self.max_sessions_per_peer)
            .field("ipv6_peer_prefix", &self.ipv6_peer_prefix)
            .field("max_unverified", &self.max_unverified)
            .field("max_memory", &self.max_memory)
            .field("drain_timeout", &self.drain_timeout)
            .field("port_range", &self.port_range)
            .field("session_threads", &self.session_threads)
            .field("single_port", &self.single_port)
            .field("max_blksize_at", &self.max_blksize_at)
            .finish_non_exhaustive()
    }
}

/// Configures a server on runtime `R` (a marker type of the adapter crate,
/// or [`Threads`](crate::blocking::Threads)) serving handler `H`; `bind`
/// (defined per kind of runtime) opens the listening sockets.
pub struct ServerBuilder<H, R> {
    pub(crate) handler: H,
    pub(crate) runtime: R,
    pub(crate) sockets: Vec<std::net::UdpSocket>,
    pub(crate) config: ServerConfig,
}

impl<H, R> ServerBuilder<H, R> {
    pub(crate) fn new(handler: H, runtime: R) -> Self {
        ServerBuilder {
            handler,
            runtime,
            sockets: Vec::new(),
            config: ServerConfig::default(),
        }
    }

    /// Adds a listening address (IPv4 or IPv6; repeatable).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen.push(addr);
        self
    }

    /// Adds an already bound socket (systemd socket activation, inetd).
    pub fn listen_socket(mut self, socket: std::net::UdpSocket) -> Self {
        self.sockets.push(socket);
        self
    }

    /// Binds `n` listening sockets per address with `SO_REUSEPORT`, so the
    /// kernel spreads requests across them (one accept loop each).
    pub fn reuse_port(mut self, n: usize) -> Self {
        self.config.reuse_port = n.max(1);
        self
    }

    /// The protocol policy (options, request size, retransmission).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Most sessions at once; more requests get ERROR 0 "Server busy".
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.config.max_sessions = n;
        self
    }

    /// Most sessions at once from one peer (an IPv4 address, or an IPv6
    /// /64).
    pub fn max_sessions_per_peer(mut self, n: usize) -> Self {
        self.config.max_sessions_per_peer = n;
        self
    }

    /// Counts IPv6 peers by `/prefix` for the per-peer limit (default 64, as
    /// a host may use any address of its /64; 128 counts each address, for a
    /// boot LAN whose clients all share one /64).
    pub fn ipv6_peer_prefix(mut self, prefix: u8) -> Self {
        self.config.ipv6_peer_prefix = prefix.min(128);
        self
    }

    /// Most sessions at once whose peer has not answered its first packet
    /// yet (default: half of [`ServerBuilder::max_sessions`]). Past
    /// it, or when the table is full, the oldest unverified session gives
    /// its place to the new request, as a SYN backlog does.
    pub fn max_unverified(mut self, n: usize) -> Self {
        self.config.max_unverified = Some(n);
        self
    }

    /// Memory for all sessions' buffers (windows, staging, receive buffers)
    /// together: a session that would exceed it gets a smaller window, or,
    /// if not even a lock-step one fits, ERROR 0 "Server busy".
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.config.max_memory = bytes;
        self
    }

    /// How long shutdown waits for running transfers before aborting them.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.config.drain_timeout = d;
        self
    }

    /// Binds transfer sockets to ports in `low..=high` (for firewalls).
    pub fn port_range(mut self, low: u16, high: u16) -> Self {
        self.config.port_range = Some((low.min(high), low.max(high)));
        self
    }

    /// Runs up to `n` lock-step transfers at once on threads of their own
    /// instead of the runtime's tasks (async servers; default 0: none).
    ///
    /// A thread blocked in its socket's receive wakes once per ACK, where
    /// a task waits for the reactor's `epoll_wait` and then receives: about
    /// a tenth less CPU per block (the side-by-side benchmark in the
    /// README). Only transfers that gain from it move: lock-step (window
    /// of one block), a file of [`DirHandler`](crate::DirHandler) of at
    /// least [`SESSION_THREAD_MIN_SIZE`] bytes; the rest, and any past `n`,
    /// stay on the runtime. A thread session obeys the same limits, abort
    /// and eviction (looked at every 100 ms while it waits) and ends with
    /// the same statistics. It keeps the system clock: leave it at 0 under
    /// a runtime whose clock is virtual (tokio's paused time).
    pub fn session_threads(mut self, n: usize) -> Self {
        self.config.session_threads = n;
        self
    }

    /// Serves every transfer from the listening socket instead of a fresh
    /// socket per transfer (default off), as dnsmasq's `tftp-single-port`:
    /// for clients behind NAT, in port-mapped containers and behind
    /// Kubernetes Services, which pass only the server's one port.
    ///
    /// The accept loop then reads every datagram: requests go to admission
    /// as always, and anything else goes to the session of its sender's
    /// address and port, or nowhere.
    /// A new request from an address and port that has a session starts a
    /// new one only if admission says so (not a retransmission): it takes
    /// the old one's place, which ends silently. Each session's queue is
    /// bounded ([`SINGLE_PORT_QUEUE`](crate::SINGLE_PORT_QUEUE) datagrams
    /// and [`SINGLE_PORT_SESSION_BYTES`](crate::SINGLE_PORT_SESSION_BYTES),
    /// each datagram kept up to the largest the session takes;
    /// [`SINGLE_PORT_QUEUE_BYTES`](crate::SINGLE_PORT_QUEUE_BYTES) for all).
    ///
    /// The trade-off: one socket's receive queue and one accept loop per
    /// listening socket (see [`reuse_port`](Self::reuse_port)) carry every
    /// transfer; [`port_range`](Self::port_range) and
    /// [`session_threads`](Self::session_threads) do not apply.
    pub fn single_port(mut self, on: bool) -> Self {
        self.config.single_port = on;
        self
    }

    /// Grants at most `blksize` to requests sent to `ip` (repeatable; the
    /// last for an address wins; never above [`limits`](Self::limits)'
    /// `max_blksize`): an interface whose path MTU is small, or whose
    /// embedded clients cannot take fragments, gets blocks that fit one
    /// frame (1468 on a 1500-byte Ethernet over IPv4, 1448 over IPv6) while
    /// the others keep theirs. `ip` is the address the client sends to:
    /// a listening address, or one of a wildcard listener's.
    pub fn max_blksize_at(mut self, ip: IpAddr, blksize: u16) -> Self {
        self.config.max_blksize_at.push((ip, blksize));
        self
    }

    /// Calls `f` with each session's statistics when it ends (from the
    /// session's own task or thread).
    pub fn on_session_end(mut self, f: impl Fn(&Stats) + Send + Sync + 'static) -> Self {
        self.config.on_session_end = Some(Arc::new(f));
        self
    }

    /// Calls `f` every `interval` with the server's counters (from a task
    /// or thread of its own).
    pub fn on_server_stats(
        mut self,
        interval: Duration,
        f: impl Fn(&ServerStats) + Send + Sync + 'static,
    ) -> Self {
        self.config.on_server_stats = Some((interval, Arc::new(f)));
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the configured addresses and returns every listening socket
    /// (the pre-bound ones first), each non-blocking.
    pub(crate) fn bind_sockets(&mut self) -> std::io::Result<Vec<std::net::UdpSocket>> {
        let mut sockets = std::mem::take(&mut self.sockets);
        for addr in &self.config.listen {
            sockets.extend(crate::net::bind_listen_sockets(
                *addr,
                self.config.reuse_port,
            )?);
        }
        if sockets.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no listening address",
            ));
        }
        for s in &sockets {
            s.set_nonblocking(true)?;
        }
        Ok(sockets)
    }
}

impl<H, R> fmt::Debug for ServerBuilder<H, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
