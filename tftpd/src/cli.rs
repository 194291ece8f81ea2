//! The command line: [`Args`] and its value parsers, and what the flags
//! mean for the server ([`Args::limits`], [`Args::configure`]), parsed once.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tftp_proto::options::{EnabledOptions, Limits, Rollover, DEFAULT_INITIAL_RTO};
use tftp_proto::options::{MAX_BLKSIZE, MAX_TIMEOUT, MIN_BLKSIZE};
use tftp_tokio::{RemapRules, ServerBuilder};

/// Default listening address: loopback, unprivileged port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6969";

/// `--timeout`'s default: the core's first retransmission timeout, in ms.
const DEFAULT_TIMEOUT_MS: u64 = DEFAULT_INITIAL_RTO.as_millis() as u64;

/// A TFTP server for network boot (RFC 1350, 2347, 2348, 2349, 7440).
///
/// Serves the files under --root, read-only unless --allow-write. Paths
/// resolve as under a chroot to the root (openat2 RESOLVE_IN_ROOT): absolute
/// symlinks inside it work, nothing outside it is reachable.
#[derive(Parser, Debug)]
#[command(name = "tftpd", version)]
#[command(group = clap::ArgGroup::new("origin_source").args(["origin", "origin_file"]))]
pub struct Args {
    /// Directory to serve (default: the current directory, unless --origin
    /// is given; with both, names not found under DIR come from the origin).
    #[arg(long, env = "TFTPD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Serve read requests from this origin URL template: http(s)://, s3://,
    /// gs://, az:// or file://, with {path} (the requested name, confined),
    /// {client_ip} and {local_ip}; e.g. http://repo/boot/{path}.
    #[arg(long, env = "TFTPD_ORIGIN", value_name = "URL-TEMPLATE")]
    pub origin: Option<String>,

    /// Read the --origin URL template from FILE (its first line that is
    /// neither empty nor a # comment), so that credentials or tokens in it
    /// do not show in the process's command line. Read again on SIGHUP (a
    /// bad file keeps the template in use).
    #[arg(long, env = "TFTPD_ORIGIN_FILE", value_name = "FILE")]
    pub origin_file: Option<PathBuf>,

    /// Keep the origin cache in files under this directory instead of
    /// memory: created 0700 for the user tftpd runs as (--user, or nobody),
    /// refused if it is another user's or group- or world-writable. Several
    /// tftpd can share it: each keeps its files in a subdirectory of its own.
    #[arg(
        long,
        env = "TFTPD_CACHE_DIR",
        value_name = "DIR",
        requires = "origin_source"
    )]
    pub cache_dir: Option<PathBuf>,

    /// Most bytes the origin cache stores (default 256 MiB in memory, 4 GiB
    /// with --cache-dir; 0: no caching).
    #[arg(
        long,
        env = "TFTPD_CACHE_SIZE",
        value_name = "BYTES",
        requires = "origin_source"
    )]
    pub cache_size: Option<u64>,

    /// Seconds an object the origin sent without a Cache-Control lifetime
    /// is served before it is revalidated.
    #[arg(long, env = "TFTPD_CACHE_TTL", value_name = "SECS", default_value_t = tftp_origin::DEFAULT_TTL.as_secs(), requires = "origin_source")]
    pub cache_ttl: u64,

    /// Origin connect timeout, wait for response headers and longest pause
    /// in a body, in seconds (fractions allowed).
    #[arg(long, env = "TFTPD_ORIGIN_TIMEOUT", value_name = "SECS", default_value = "5", value_parser = parse_seconds, requires = "origin_source")]
    pub origin_timeout: Duration,

    /// Retries of a failed origin request (before its first body byte), 0..=10.
    #[arg(long, env = "TFTPD_ORIGIN_RETRIES", value_name = "N", default_value_t = tftp_origin::DEFAULT_RETRIES, value_parser = clap::value_parser!(u32).range(0..=tftp_origin::MAX_RETRIES as i64), requires = "origin_source")]
    pub origin_retries: u32,

    /// Most origin requests at once (headers and bodies); more wait in
    /// line, each within its transfer's deadline.
    #[arg(long, env = "TFTPD_ORIGIN_MAX_REQUESTS", value_name = "N", default_value_t = tftp_origin::DEFAULT_MAX_REQUESTS as u64, value_parser = clap::value_parser!(u64).range(1..=100_000), requires = "origin_source")]
    pub origin_max_requests: u64,

    /// Longest a cached copy is served stale while the origin fails, in
    /// seconds from when it went stale; past it, requests get the error.
    #[arg(long, env = "TFTPD_STALE_IF_ERROR", value_name = "SECS", default_value_t = tftp_origin::DEFAULT_STALE_IF_ERROR.as_secs(), requires = "origin_source")]
    pub stale_if_error: u64,

    /// Address to listen on, IPv4 or IPv6 (repeatable). Without a port, 69.
    /// Default 127.0.0.1:6969, unless sockets come from systemd or inetd.
    #[arg(long, env = "TFTPD_LISTEN", value_name = "ADDR", value_delimiter = ',', value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,

    /// Rewrite requested file names with tftpd-hpa's remap rules (its -m).
    /// Read again on SIGHUP (a bad file keeps the rules in use and logs
    /// the line).
    #[arg(short = 'm', long, env = "TFTPD_MAP_FILE", value_name = "FILE")]
    pub map_file: Option<PathBuf>,

    /// Serve each client from its own directory when it exists (dnsmasq's
    /// tftp-unique-root): ROOT/CLIENT-IP/ (ip), or ROOT/01-aa-bb-cc-dd-ee-ff/
    /// by the MAC in the neighbour table, then ROOT/CLIENT-IP/ (mac); other
    /// clients get ROOT.
    #[arg(long, env = "TFTPD_PER_CLIENT_ROOT", value_name = "KEY", value_enum)]
    pub per_client_root: Option<ClientKey>,

    /// Accept uploads (WRQ) of new files.
    #[arg(long, env = "TFTPD_ALLOW_WRITE")]
    pub allow_write: bool,

    /// Let uploads replace existing files (needs --allow-write).
    #[arg(
        long,
        env = "TFTPD_ALLOW_OVERWRITE",
        requires_if("true", "allow_write")
    )]
    pub allow_overwrite: bool,

    /// Largest upload accepted, in bytes: a larger announced tsize, or an
    /// upload growing past it, gets ERROR 3 and leaves nothing behind.
    #[arg(long, env = "TFTPD_MAX_UPLOAD_SIZE", value_name = "BYTES", default_value_t = tftp_tokio::DEFAULT_MAX_UPLOAD_SIZE)]
    pub max_upload_size: u64,

    /// Accept uploads only for names under this directory of the root (e.g.
    /// incoming), so no client can plant pxelinux.cfg/01-MAC files.
    #[arg(long, env = "TFTPD_UPLOAD_DIR", value_name = "DIR")]
    pub upload_dir: Option<String>,

    /// File mode creation mask for uploads, octal (e.g. 022, 077).
    #[arg(long, env = "TFTPD_UMASK", value_name = "MASK", value_parser = parse_umask)]
    pub umask: Option<u32>,

    /// Largest blksize granted (8..=65464); ADDR=BYTES caps it only for
    /// requests sent to ADDR (an interface with a small MTU), repeatable.
    #[arg(long, env = "TFTPD_MAX_BLKSIZE", value_name = "[ADDR=]BYTES", value_delimiter = ',', value_parser = parse_blksize_cap)]
    pub max_blksize: Vec<BlksizeCap>,

    /// Largest windowsize granted.
    #[arg(long, env = "TFTPD_MAX_WINDOWSIZE", value_name = "BLOCKS", default_value_t = tftp_proto::options::DEFAULT_MAX_WINDOWSIZE, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_windowsize: u16,

    /// Largest blksize × windowsize in flight per session (memory per session).
    #[arg(long, env = "TFTPD_MAX_WINDOW_BYTES", value_name = "BYTES", default_value_t = tftp_proto::options::DEFAULT_MAX_WINDOW_BYTES)]
    pub max_window_bytes: usize,

    /// First retransmission timeout in milliseconds when the client asks for
    /// no `timeout` option (it then adapts to the measured round trip).
    #[arg(long, env = "TFTPD_TIMEOUT", value_name = "MS", default_value_t = DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=u64::from(MAX_TIMEOUT) * 1000))]
    pub timeout: u64,

    /// Retransmissions of one packet before a transfer is abandoned.
    #[arg(long, env = "TFTPD_RETRIES", default_value_t = tftp_proto::options::DEFAULT_RETRIES)]
    pub retries: u32,

    /// Largest `timeout` option acknowledged, in seconds (1..=255); a larger
    /// request is not acknowledged and the adaptive timer applies.
    #[arg(long, env = "TFTPD_MAX_TIMEOUT", value_name = "SECS", default_value_t = tftp_proto::options::DEFAULT_MAX_TIMEOUT, value_parser = clap::value_parser!(u8).range(1..))]
    pub max_timeout: u8,

    /// Slowest transfer kept, in bytes per second on average after its
    /// first 30 s (0: no minimum); slower ones end with ERROR 0 (an HTTP
    /// answer whose client takes it slower: the connection is closed).
    #[arg(long, env = "TFTPD_MIN_RATE", value_name = "BYTES", default_value_t = tftp_proto::options::DEFAULT_MIN_RATE)]
    pub min_rate: u32,

    /// Most transfers at once.
    #[arg(long, env = "TFTPD_MAX_SESSIONS", value_name = "N", default_value_t = tftp_tokio::DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,

    /// Most transfers at once from one client IP address (IPv6: one /64).
    #[arg(long, env = "TFTPD_MAX_SESSIONS_PER_PEER", value_name = "N", default_value_t = tftp_tokio::DEFAULT_MAX_SESSIONS_PER_PEER)]
    pub max_sessions_per_peer: usize,

    /// IPv6 clients count as one peer per this prefix length for
    /// --max-sessions-per-peer (0..=128; 128: every address apart, for a LAN
    /// whose clients all share one /64).
    #[arg(long, env = "TFTPD_IPV6_PEER_PREFIX", value_name = "BITS", default_value_t = tftp_proto::server::DEFAULT_IPV6_PEER_PREFIX, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub ipv6_peer_prefix: u8,

    /// Most transfers at once whose client has not answered its first
    /// packet yet (default: half of --max-sessions); past it the oldest
    /// gives its place to the newest.
    #[arg(long, env = "TFTPD_MAX_UNVERIFIED", value_name = "N")]
    pub max_unverified: Option<usize>,

    /// Memory for all transfers' buffers together, in bytes; past it,
    /// windows shrink, then requests get ERROR 0 "Server busy".
    #[arg(long, env = "TFTPD_MAX_MEMORY", value_name = "BYTES", default_value_t = tftp_tokio::DEFAULT_MAX_MEMORY)]
    pub max_memory: usize,

    /// Never acknowledge this option (repeatable, or comma-separated): for
    /// boot ROMs that choke on it (tftpd-hpa's -r).
    #[arg(
        long,
        env = "TFTPD_REFUSE",
        value_name = "OPTION",
        value_enum,
        value_delimiter = ','
    )]
    pub refuse: Vec<RefuseArg>,

    /// What the 16-bit block number does after 65535 (files over 32 MiB
    /// at 512-byte blocks): 0 (most clients), 1 (some firmware), or
    /// refuse (ERROR 3 at block 65536, for clients that cannot roll over).
    #[arg(
        long,
        env = "TFTPD_ROLLOVER",
        value_name = "RULE",
        value_enum,
        default_value_t = RolloverArg::Zero
    )]
    pub rollover: RolloverArg,

    /// Local ports for transfer sockets, e.g. 50000:50100 (for firewalls).
    #[arg(long, env = "TFTPD_PORT_RANGE", value_name = "LOW:HIGH", value_parser = parse_port_range)]
    pub port_range: Option<(u16, u16)>,

    /// Serve every transfer from the listening port instead of a new port
    /// per transfer (dnsmasq's tftp-single-port): for clients behind NAT,
    /// in port-mapped containers and behind Kubernetes Services.
    #[arg(long, env = "TFTPD_SINGLE_PORT", conflicts_with = "port_range")]
    pub single_port: bool,

    /// Listening sockets per address (SO_REUSEPORT) and runtime threads.
    /// Default: the number of CPUs.
    #[arg(long, env = "TFTPD_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Lock-step transfers of files of 1 MiB or more run on threads of
    /// their own, up to N at once (0..=256), instead of the runtime (about
    /// a tenth less CPU per block); 0: none. Default: --workers.
    #[arg(long, env = "TFTPD_SESSION_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(..=MAX_SESSION_THREADS as i64))]
    pub session_threads: Option<u16>,

    /// Seconds a shutdown waits for running transfers before aborting them.
    #[arg(
        long,
        env = "TFTPD_DRAIN_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30
    )]
    pub drain_timeout: u64,

    /// Serve Prometheus metrics over HTTP on this address (GET /metrics).
    #[arg(long, env = "TFTPD_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Also serve the same names read-only over HTTP on this address (GET
    /// and HEAD, Range, conditional requests), through the same root,
    /// --map-file, --per-client-root and --origin cache: for iPXE, GRUB and
    /// UEFI HTTP Boot after the TFTP stage. Repeatable or comma-separated.
    #[arg(long, env = "TFTPD_HTTP", value_name = "ADDR", value_delimiter = ',')]
    pub http: Vec<SocketAddr>,

    /// Most HTTP connections at once; past it a connection gets 503.
    #[arg(
        long,
        env = "TFTPD_HTTP_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = tftp_tokio::http::DEFAULT_HTTP_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub http_max_connections: usize,

    /// Most HTTP connections at once from one client address.
    #[arg(
        long,
        env = "TFTPD_HTTP_MAX_CONNECTIONS_PER_CLIENT",
        value_name = "N",
        default_value_t = tftp_tokio::http::DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub http_max_connections_per_client: usize,

    /// Seconds an HTTP connection may go with nothing moving either way (a
    /// stalled client) before it is closed; also the longest the handler or
    /// origin may take to answer (then 504).
    #[arg(
        long,
        env = "TFTPD_HTTP_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = tftp_tokio::http::DEFAULT_HTTP_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub http_idle_timeout: u64,

    /// After binding and opening the root, switch to this user (a name, or
    /// UID:GID). Started as root without it, tftpd becomes nobody, as
    /// tftpd-hpa does; `--user root` keeps root.
    #[arg(long, env = "TFTPD_USER", value_name = "USER")]
    pub user: Option<String>,

    /// inetd mode: the listening socket is standard input.
    #[arg(long, env = "TFTPD_INETD")]
    pub inetd: bool,

    /// More logging (-v debug, -vv trace).
    #[arg(short, long, env = "TFTPD_VERBOSE", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format on standard error.
    #[arg(long, env = "TFTPD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Args {
    /// Reads the files the flags name and checks what they hold: the
    /// `--origin-file` template (into `origin`), the `--map-file` rules, and
    /// the origin template. A file that cannot be used is a usage error, like
    /// a bad flag; the error names the flag. Called before privileges are
    /// dropped: the files may be root's alone.
    pub fn read_files(&mut self) -> Result<Option<RemapRules>, String> {
        if let Some(file) = self.origin_file.as_deref() {
            let template = read_origin_file(file)
                .map_err(|e| format!("--origin-file {}: {e}", file.display()))?;
            self.origin = Some(template);
        }
        let rules = match self.map_file.as_deref() {
            Some(file) => Some(
                RemapRules::from_file(file)
                    .map_err(|e| format!("--map-file {}: {e}", file.display()))?,
            ),
            None => None,
        };
        if let Some(Err(e)) = self.origin.as_deref().map(tftp_origin::Template::parse) {
            let flag = match self.origin_file {
                Some(_) => "--origin-file",
                None => "--origin",
            };
            return Err(format!("{flag}: {e}"));
        }
        Ok(rules)
    }

    /// The directory to serve: `--root`; without it the current directory,
    /// unless `--origin` is given (then a root is served only when named).
    /// Meant for after [`Args::read_files`], which may set the origin.
    pub fn root(&self) -> Option<PathBuf> {
        match (&self.root, &self.origin) {
            (Some(root), _) => Some(root.clone()),
            (None, None) => Some(PathBuf::from(".")),
            (None, Some(_)) => None,
        }
    }

    /// Listening sockets per address and runtime threads: `--workers`, or
    /// the number of CPUs.
    pub fn workers(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The largest blksize for every address: the last `--max-blksize`
    /// without an address, else the protocol's largest.
    pub fn max_blksize(&self) -> u16 {
        self.max_blksize
            .iter()
            .rev()
            .find(|cap| cap.at.is_none())
            .map_or(MAX_BLKSIZE, |cap| cap.bytes)
    }

    /// The protocol policy the flags ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_blksize: self.max_blksize(),
            max_windowsize: self.max_windowsize,
            max_window_bytes: self.max_window_bytes,
            retries: self.retries,
            initial_rto: Duration::from_millis(self.timeout),
            max_timeout: self.max_timeout,
            min_rate: self.min_rate,
            enabled: enabled_options(&self.refuse),
            rollover: self.rollover.into(),
            ..Limits::default()
        }
    }

    /// `builder` with the server settings the flags ask for: the limits,
    /// the admission caps, memory, ports (or single-port mode), session
    /// threads and the drain timeout (not the sockets, nor the per-session
    /// callback).
    pub fn configure<H>(&self, builder: ServerBuilder<H>) -> ServerBuilder<H> {
        let mut builder = builder
            .limits(self.limits())
            .max_sessions(self.max_sessions)
            .max_sessions_per_peer(self.max_sessions_per_peer)
            .max_memory(self.max_memory)
            .ipv6_peer_prefix(self.ipv6_peer_prefix)
            .drain_timeout(Duration::from_secs(self.drain_timeout))
            .session_threads(
                self.session_threads
                    .map_or_else(|| self.workers(), usize::from)
                    .min(usize::from(MAX_SESSION_THREADS)),
            );
        if let Some((low, high)) = self.port_range {
            builder = builder.port_range(low, high);
        }
        if self.single_port {
            builder = builder.single_port(true);
        }
        for cap in &self.max_blksize {
            if let Some(ip) = cap.at {
                builder = builder.max_blksize_at(ip, cap.bytes);
            }
        }
        if let Some(n) = self.max_unverified {
            builder = builder.max_unverified(n);
        }
        builder
    }
}

/// What names a client's own directory (`--per-client-root`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientKey {
    /// The client's IP address as text: 192.0.2.7, 2001:db8::7.
    Ip,
    /// The client's MAC address as pxelinux spells it: 01-aa-bb-cc-dd-ee-ff
    /// (clients on the server's own link), else its IP address.
    Mac,
}

/// An option `--refuse` can turn off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RefuseArg {
    /// RFC 2348 block size.
    Blksize,
    /// RFC 2349 transfer size.
    Tsize,
    /// RFC 2349 retransmission timeout.
    Timeout,
    /// RFC 7440 window size.
    Windowsize,
}

/// Most `--session-threads`: half of tokio's blocking pool (512 threads),
/// which the origin's file opens and uploads' commits share.
pub const MAX_SESSION_THREADS: u16 = 256;

/// `--rollover`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RolloverArg {
    /// 65535 is followed by 0.
    #[value(name = "0")]
    Zero,
    /// 65535 is followed by 1.
    #[value(name = "1")]
    One,
    /// No block after 65535: ERROR 3 instead.
    Refuse,
}

impl From<RolloverArg> for Rollover {
    fn from(arg: RolloverArg) -> Self {
        match arg {
            RolloverArg::Zero => Rollover::Zero,
            RolloverArg::One => Rollover::One,
            RolloverArg::Refuse => Rollover::Refuse,
        }
    }
}

/// The negotiable options left after `--refuse`.
fn enabled_options(refused: &[RefuseArg]) -> EnabledOptions {
    let on = |o| !refused.contains(&o);
    EnabledOptions {
        blksize: on(RefuseArg::Blksize),
        tsize: on(RefuseArg::Tsize),
        timeout: on(RefuseArg::Timeout),
        windowsize: on(RefuseArg::Windowsize),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 69))
        .map_err(|_| format!("not an address: {s} (examples: 0.0.0.0, [::]:69, 192.0.2.1:6969)"))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    if !(0.001..=3600.0).contains(&secs) {
        return Err("must be between 0.001 and 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_umask(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("not an octal mask: {s} (examples: 022, 077)"))
}

/// One `--max-blksize`: for every address, or only for requests sent to
/// `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlksizeCap {
    /// The local address it applies to (none: all).
    pub at: Option<IpAddr>,
    /// The largest blksize granted there.
    pub bytes: u16,
}

fn parse_blksize_cap(s: &str) -> Result<BlksizeCap, String> {
    let (at, bytes) = match s.split_once('=') {
        Some((addr, bytes)) => {
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{addr:?} is not an IP address"))?;
            (Some(ip), bytes)
        }
        None => (None, s),
    };
    let bytes: u16 = bytes
        .parse()
        .ok()
        .filter(|b| (MIN_BLKSIZE..=MAX_BLKSIZE).contains(b))
        .ok_or_else(|| format!("{bytes:?} is not a blksize in {MIN_BLKSIZE}..={MAX_BLKSIZE}"))?;
    Ok(BlksizeCap { at, bytes })
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (low, high) = s.split_once(':').ok_or("expected LOW:HIGH")?;
    let low: u16 = low.parse().map_err(|_| "LOW is not a port")?;
    let high: u16 = high.parse().map_err(|_| "HIGH is not a port")?;
    if low == 0 || low > high {
        return Err("expected 1 <= LOW <= HIGH".into());
    }
    Ok((low, high))
}

/// The template in an `--origin-file`: its first line that is neither
/// empty nor a `#` comment, trimmed.
pub fn read_origin_file(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| "no URL template in it (only empty or # lines)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use clap::CommandFactory;
    use tftp_proto::options::{DEFAULT_MAX_TIMEOUT, DEFAULT_MIN_RATE, DEFAULT_RETRIES};
    use tftp_proto::server::DEFAULT_IPV6_PEER_PREFIX;
    use tftp_tokio::{Handler, ReadResponse, RequestInfo, Server, TftpError};
    use tftp_tokio::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_MEMORY, DEFAULT_MAX_SESSIONS};
    use tftp_tokio::{DEFAULT_MAX_SESSIONS_PER_PEER, DEFAULT_MAX_UPLOAD_SIZE};

    use super::*;

    /// A handler to build a server with; never asked.
    struct Nothing;

    impl Handler for Nothing {
        async fn read(&self, _: &RequestInfo) -> Result<ReadResponse, TftpError> {
            Err(TftpError::not_found())
        }
    }

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tftpd").chain(flags.iter().copied()))
    }

    fn ok(flags: &[&str]) -> Args {
        parse(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"))
    }

    fn rejected(flags: &[&str]) {
        assert!(parse(flags).is_err(), "{flags:?} was accepted");
    }

    /// A server builder with the settings `flags` give (read them with
    /// `.config()`).
    fn configured(flags: &[&str]) -> ServerBuilder<Nothing> {
        ok(flags).configure(Server::builder(Nothing))
    }

    #[test]
    fn defaults_are_the_libraries_defaults() {
        let args = ok(&[]);
        assert_eq!(args.limits(), Limits::default());
        let builder = configured(&[]);
        let config = builder.config();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(config.max_sessions_per_peer, DEFAULT_MAX_SESSIONS_PER_PEER);
        assert_eq!(config.ipv6_peer_prefix, DEFAULT_IPV6_PEER_PREFIX);
        assert_eq!(config.max_unverified, None);
        assert_eq!(config.max_memory, DEFAULT_MAX_MEMORY);
        assert_eq!(config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(config.port_range, None);
        assert_eq!(config.session_threads, args.workers(), "one per worker");
        assert!(config.listen.is_empty());
        assert_eq!(args.max_upload_size, DEFAULT_MAX_UPLOAD_SIZE);
        assert_eq!(args.root(), Some(PathBuf::from(".")));
        assert!(args.listen.is_empty() && args.workers.is_none() && args.user.is_none());
        assert!(!args.allow_write && !args.allow_overwrite && !args.inetd);
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.cache_ttl, tftp_origin::DEFAULT_TTL.as_secs());
        assert_eq!(args.origin_timeout, tftp_origin::DEFAULT_TIMEOUT);
        assert_eq!(args.origin_retries, tftp_origin::DEFAULT_RETRIES);
        assert_eq!(
            args.origin_max_requests,
            tftp_origin::DEFAULT_MAX_REQUESTS as u64
        );
        assert_eq!(
            args.stale_if_error,
            tftp_origin::DEFAULT_STALE_IF_ERROR.as_secs()
        );
    }

    #[test]
    fn default_listen_address_parses() {
        let addr: SocketAddr = DEFAULT_LISTEN.parse().unwrap();
        assert!(addr.ip().is_loopback());
    }

    #[test]
    fn each_limit_flag() {
        let limits = ok(&[
            "--max-blksize",
            "1468",
            "--max-windowsize",
            "16",
            "--max-window-bytes",
            "100000",
            "--timeout",
            "250",
            "--retries",
            "9",
            "--max-timeout",
            "30",
            "--min-rate",
            "0",
            "--refuse",
            "tsize,timeout",
            "--rollover",
            "1",
        ])
        .limits();
        let expected = Limits {
            max_blksize: 1468,
            max_windowsize: 16,
            max_window_bytes: 100_000,
            initial_rto: Duration::from_millis(250),
            retries: 9,
            max_timeout: 30,
            min_rate: 0,
            enabled: EnabledOptions {
                tsize: false,
                timeout: false,
                ..EnabledOptions::ALL
            },
            rollover: Rollover::One,
            ..Limits::default()
        };
        assert_eq!(limits, expected);
        for (arg, rule) in [
            ("0", Rollover::Zero),
            ("1", Rollover::One),
            ("refuse", Rollover::Refuse),
        ] {
            assert_eq!(ok(&["--rollover", arg]).limits().rollover, rule);
        }
        rejected(&["--rollover", "2"]);
        // Each flag alone changes its own field only.
        let limits = ok(&["--retries", "2"]).limits();
        assert_eq!(limits.retries, 2);
        assert_eq!(limits.max_timeout, DEFAULT_MAX_TIMEOUT);
        assert_eq!(limits.min_rate, DEFAULT_MIN_RATE);
        assert_eq!(
            ok(&["--retries", "0"]).limits(),
            Limits {
                retries: 0,
                ..Limits::default()
            }
        );
        assert_ne!(DEFAULT_RETRIES, 0);
    }

    #[test]
    fn refuse_turns_options_off() {
        assert_eq!(ok(&[]).limits().enabled, EnabledOptions::ALL);
        let all = ok(&[
            "--refuse",
            "blksize,tsize",
            "--refuse",
            "timeout",
            "--refuse",
            "windowsize",
        ]);
        assert_eq!(all.limits().enabled, EnabledOptions::NONE);
        let one = ok(&["--refuse", "windowsize"]).limits().enabled;
        assert_eq!(
            one,
            EnabledOptions {
                windowsize: false,
                ..EnabledOptions::ALL
            }
        );
        rejected(&["--refuse", "mtu"]);
    }

    #[test]
    fn each_server_flag() {
        let builder = configured(&[
            "--max-sessions",
            "100",
            "--max-sessions-per-peer",
            "3",
            "--ipv6-peer-prefix",
            "128",
            "--max-unverified",
            "20",
            "--max-memory",
            "1000000",
            "--drain-timeout",
            "5",
            "--port-range",
            "50000:50100",
            "--max-blksize",
            "512",
            "--session-threads",
            "0",
        ]);
        let config = builder.config();
        assert_eq!(config.max_sessions, 100);
        assert_eq!(config.max_sessions_per_peer, 3);
        assert_eq!(config.ipv6_peer_prefix, 128);
        assert_eq!(config.max_unverified, Some(20));
        assert_eq!(config.max_memory, 1_000_000);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.port_range, Some((50000, 50100)));
        assert_eq!(config.limits.max_blksize, 512);
        assert_eq!(config.session_threads, 0);
        let threads = |n: &str| {
            configured(&["--session-threads", n])
                .config()
                .session_threads
        };
        assert_eq!(threads("256"), usize::from(MAX_SESSION_THREADS));
        rejected(&["--session-threads", "257"]);
        assert!(!config.single_port);
        // Per address: the cap of the address a request was sent to, the
        // global one elsewhere; IPv6 in brackets or not, IPv4-mapped alike.
        let builder = configured(&[
            "--max-blksize",
            "8192,192.0.2.1=1468",
            "--max-blksize",
            "[2001:db8::1]=1448",
            "--max-blksize",
            "192.0.2.2=9000,192.0.2.2=1024",
        ]);
        let config = builder.config();
        let at = |addr: &str| {
            let local = Some(SocketAddr::new(addr.parse().unwrap(), 69));
            config.limits_at(local).max_blksize
        };
        assert_eq!(at("192.0.2.1"), 1468);
        assert_eq!(at("::ffff:192.0.2.1"), 1468);
        assert_eq!(at("2001:db8::1"), 1448);
        assert_eq!(at("192.0.2.2"), 1024, "the last for an address");
        assert_eq!(at("192.0.2.9"), 8192);
        assert_eq!(config.limits_at(None).max_blksize, 8192);
        assert!(configured(&["--single-port"]).config().single_port);
        rejected(&["--single-port", "--port-range", "50000:50100"]);
    }

    #[test]
    fn man_page_is_current() {
        crate::man_check::check(Args::command(), "tftpd.8");
    }

    #[test]
    fn max_blksize_is_the_protocol_range() {
        let blksize = |n: u16| parse(&["--max-blksize", &n.to_string()]);
        assert_eq!(ok(&[]).max_blksize(), MAX_BLKSIZE);
        assert_eq!(blksize(MIN_BLKSIZE).unwrap().max_blksize(), MIN_BLKSIZE);
        assert_eq!(blksize(MAX_BLKSIZE).unwrap().max_blksize(), MAX_BLKSIZE);
        assert!(blksize(MIN_BLKSIZE - 1).is_err());
        assert!(blksize(MAX_BLKSIZE + 1).is_err());
        rejected(&["--max-blksize", "192.0.2.1=7"]);
        rejected(&["--max-blksize", "192.0.2.1=65465"]);
        rejected(&["--max-blksize", "eth0=1468"]);
        rejected(&["--max-blksize", "192.0.2.1="]);
        // The help text names the same range.
        let command = Args::command();
        let help = command
            .get_arguments()
            .find(|a| a.get_id() == "max_blksize")
            .and_then(|a| a.get_help())
            .unwrap()
            .to_string();
        assert!(
            help.contains(&format!("({MIN_BLKSIZE}..={MAX_BLKSIZE})")),
            "{help}"
        );
    }

    #[test]
    fn rejected_values() {
        for flags in [
            &["--timeout", "0"][..],
            &[
                "--timeout",
                &(u64::from(MAX_TIMEOUT) * 1000 + 1).to_string(),
            ],
            &["--max-windowsize", "0"],
            &["--max-timeout", "0"],
            &["--ipv6-peer-prefix", "129"],
            &["--workers", "0"],
            &["--max-sessions", "-1"],
            &["--port-range", "0:10"],
            &["--port-range", "10:5"],
            &["--port-range", "69"],
            &["--port-range", "1:65536"],
            &["--umask", "1000"],
            &["--umask", "8"],
            &["--umask", "rw"],
            &["--listen", "tftp.example"],
            &["--listen", "192.0.2.1:99999"],
            &["--metrics", "9469"],
            &["--per-client-root", "hostname"],
            &["--log-format", "xml"],
            &["--no-such-flag"],
        ] {
            rejected(flags);
        }
        // The edges that are accepted.
        ok(&["--timeout", &(u64::from(MAX_TIMEOUT) * 1000).to_string()]);
        ok(&["--ipv6-peer-prefix", "0"]);
        ok(&["--port-range", "69:69"]);
    }

    #[test]
    fn value_parsers() {
        let listen = ok(&[
            "--listen",
            "192.0.2.1,[::]",
            "--listen",
            "[::1]:6969",
            "--listen",
            "0.0.0.0:0",
        ])
        .listen;
        assert_eq!(
            listen,
            [
                SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 69)),
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 69)),
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6969, 0, 0)),
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            ]
        );
        assert_eq!(ok(&["--umask", "022"]).umask, Some(0o022));
        assert_eq!(ok(&["--umask", "777"]).umask, Some(0o777));
        assert_eq!(
            ok(&["--port-range", "50000:50100"]).port_range,
            Some((50000, 50100))
        );
        assert_eq!(ok(&["--workers", "3"]).workers(), 3);
        assert!(ok(&[]).workers() >= 1);
        assert_eq!(ok(&["-vv"]).verbose, 2);
        assert_eq!(ok(&["--log-format", "json"]).log_format, LogFormat::Json);
    }

    #[test]
    fn conflicting_flags() {
        // Overwrites need writes.
        rejected(&["--allow-overwrite"]);
        let both = ok(&["--allow-write", "--allow-overwrite"]);
        assert!(both.allow_write && both.allow_overwrite);
        // One origin source.
        rejected(&["--origin", "http://a/{path}", "--origin-file", "/etc/o"]);
        // The cache and origin flags need an origin.
        for flags in [
            &["--cache-dir", "/var/cache/tftpd"][..],
            &["--cache-size", "0"],
            &["--cache-ttl", "1"],
            &["--origin-timeout", "1"],
            &["--origin-retries", "1"],
            &["--origin-max-requests", "1"],
            &["--stale-if-error", "1"],
        ] {
            rejected(flags);
            let with_origin: Vec<&str> = ["--origin", "http://a/{path}"]
                .iter()
                .chain(flags)
                .copied()
                .collect();
            ok(&with_origin);
            let with_file: Vec<&str> = ["--origin-file", "/etc/o"]
                .iter()
                .chain(flags)
                .copied()
                .collect();
            ok(&with_file);
        }
    }

    #[test]
    fn per_client_root() {
        assert_eq!(ok(&[]).per_client_root, None);
        let args = ok(&["--root", "/srv/tftp", "--per-client-root", "ip"]);
        assert_eq!(args.per_client_root, Some(ClientKey::Ip));
        assert_eq!(args.root(), Some(PathBuf::from("/srv/tftp")));
        let args = ok(&["--per-client-root", "mac"]);
        assert_eq!(args.per_client_root, Some(ClientKey::Mac));
        rejected(&["--per-client-root", "hostname"]);
    }

    #[test]
    fn map_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.remap");
        std::fs::write(&good, "# Windows\nrg \\\\ /\nr ^/tftpboot/\n").unwrap();
        for flag in ["-m", "--map-file"] {
            let mut args = ok(&[flag, good.to_str().unwrap()]);
            assert_eq!(args.map_file.as_deref(), Some(good.as_path()));
            assert_eq!(args.read_files().unwrap().map(|r| r.len()), Some(2));
        }
        assert!(ok(&[]).read_files().unwrap().is_none());
        // A bad rule is a usage error naming the flag, the file and the line.
        let bad = dir.path().join("bad.remap");
        std::fs::write(&bad, "r a b\nq x y\n").unwrap();
        let e = ok(&["-m", bad.to_str().unwrap()]).read_files().unwrap_err();
        assert!(
            e.starts_with(&format!("--map-file {}: line 2:", bad.display())),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = ok(&["-m", missing.to_str().unwrap()])
            .read_files()
            .unwrap_err();
        assert!(e.starts_with("--map-file "), "{e}");
    }

    #[test]
    fn origin_options() {
        let mut args = ok(&[
            "--origin",
            "http://repo/boot/{path}",
            "--cache-dir",
            "/var/cache/tftpd",
            "--cache-size",
            "1000",
            "--cache-ttl",
            "7",
            "--origin-timeout",
            "0.5",
            "--origin-retries",
            &tftp_origin::MAX_RETRIES.to_string(),
            "--origin-max-requests",
            "8",
            "--stale-if-error",
            "0",
        ]);
        assert_eq!(args.read_files().unwrap().map(|r| r.len()), None);
        assert_eq!(args.origin.as_deref(), Some("http://repo/boot/{path}"));
        // With an origin, a root is served only when named.
        assert_eq!(args.root(), None);
        assert_eq!(
            args.cache_dir.as_deref(),
            Some(Path::new("/var/cache/tftpd"))
        );
        assert_eq!(args.cache_size, Some(1000));
        assert_eq!(args.cache_ttl, 7);
        assert_eq!(args.origin_timeout, Duration::from_millis(500));
        assert_eq!(args.origin_retries, tftp_origin::MAX_RETRIES);
        assert_eq!(args.origin_max_requests, 8);
        assert_eq!(args.stale_if_error, 0);
        let with_root = ok(&["--root", "/srv", "--origin", "s3://b/{path}"]);
        assert_eq!(with_root.root(), Some(PathBuf::from("/srv")));

        let origin = |flags: &[&str]| {
            let mut all = vec!["--origin", "http://a/{path}"];
            all.extend_from_slice(flags);
            parse(&all)
        };
        let retries = tftp_origin::MAX_RETRIES + 1;
        assert!(origin(&["--origin-retries", &retries.to_string()]).is_err());
        assert!(origin(&["--origin-max-requests", "0"]).is_err());
        assert!(origin(&["--origin-timeout", "0"]).is_err());
        assert!(origin(&["--origin-timeout", "3601"]).is_err());
        assert!(origin(&["--origin-timeout", "soon"]).is_err());
        assert!(origin(&["--origin-timeout", "3600"]).is_ok());

        // A template that does not parse is a usage error naming its flag.
        let e = ok(&["--origin", "ftp://a/{path}"])
            .read_files()
            .unwrap_err();
        assert!(e.starts_with("--origin: "), "{e}");
    }

    #[test]
    fn origin_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("origin");
        std::fs::write(
            &file,
            "# the token is secret\n\n  https://prov/api?file={path}&t=x  \nhttp://second/{path}\n",
        )
        .unwrap();
        let mut args = ok(&["--origin-file", file.to_str().unwrap()]);
        assert!(args.read_files().unwrap().is_none());
        assert_eq!(
            args.origin.as_deref(),
            Some("https://prov/api?file={path}&t=x")
        );
        assert_eq!(args.root(), None);

        std::fs::write(&file, "# nothing\n\n").unwrap();
        let e = ok(&["--origin-file", file.to_str().unwrap()])
            .read_files()
            .unwrap_err();
        assert!(
            e.starts_with(&format!(
                "--origin-file {}: no URL template",
                file.display()
            )),
            "{e}"
        );
        std::fs::write(&file, "ftp://a/{path}\n").unwrap();
        let e = ok(&["--origin-file", file.to_str().unwrap()])
            .read_files()
            .unwrap_err();
        assert!(e.starts_with("--origin-file: "), "{e}");
    }

    /// The `tftpd` command lines the READMEs show still parse.
    #[test]
    fn readme_commands_parse() {
        let mut seen = 0;
        for readme in ["../README.md", "README.md"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(readme);
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let command = match line.split_once("/usr/local/bin/tftpd ") {
                    Some(("ExecStart=", rest)) => rest,
                    _ => match line.strip_prefix("tftpd ") {
                        Some(rest) if rest.starts_with('-') => rest,
                        _ => continue,
                    },
                };
                let command = command.split("  #").next().unwrap_or_default();
                let words: Vec<String> = command
                    .split_whitespace()
                    .map(|w| w.trim_matches('\'').to_owned())
                    .collect();
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                ok(&words);
                seen += 1;
            }
        }
        assert!(seen >= 10, "only {seen} commands found");
    }
}
