//! # tftpd: the tftp-rs server
//!
//! `tftpd --root DIR` serves DIR read-only on 127.0.0.1:6969 without root
//! privileges; see `tftpd --help` and README.md for the flags, systemd socket
//! activation, inetd mode, metrics and exit codes.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT, transfers drained);
//! 1 on a runtime error (cannot bind, cannot open the root, cannot drop
//! privileges); 2 on a usage error.
#![forbid(unsafe_code)]

mod metrics;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tftp_origin::Origin;
use tftp_proto::options::{EnabledOptions, Limits, MAX_BLKSIZE, MIN_BLKSIZE};
use tftp_tokio::{bind_listen_sockets, escape_controls, DirHandler, Handler, Server};
use tftp_tokio::{Fallback, Remap, RemapRules};

/// Default listening address: loopback, unprivileged port.
const DEFAULT_LISTEN: &str = "127.0.0.1:6969";

/// A TFTP server for network boot (RFC 1350, 2347, 2348, 2349, 7440).
///
/// Serves the files under --root, read-only unless --allow-write. Paths
/// resolve as under a chroot to the root (openat2 RESOLVE_IN_ROOT): absolute
/// symlinks inside it work, nothing outside it is reachable.
#[derive(Parser, Debug)]
#[command(name = "tftpd", version)]
#[command(group = clap::ArgGroup::new("origin_source").args(["origin", "origin_file"]))]
struct Args {
    /// Directory to serve (default: the current directory, unless --origin
    /// is given; with both, names not found under DIR come from the origin).
    #[arg(long, env = "TFTPD_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Serve read requests from this origin URL template: http(s)://, s3://,
    /// gs://, az:// or file://, with {path} (the requested name, confined),
    /// {client_ip} and {local_ip}; e.g. http://repo/boot/{path}.
    #[arg(long, env = "TFTPD_ORIGIN", value_name = "URL-TEMPLATE")]
    origin: Option<String>,

    /// Read the --origin URL template from FILE (its first line that is
    /// neither empty nor a # comment), so that credentials or tokens in it
    /// do not show in the process's command line.
    #[arg(long, env = "TFTPD_ORIGIN_FILE", value_name = "FILE")]
    origin_file: Option<PathBuf>,

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
    cache_dir: Option<PathBuf>,

    /// Most bytes the origin cache stores (default 256 MiB in memory, 4 GiB
    /// with --cache-dir; 0: no caching).
    #[arg(
        long,
        env = "TFTPD_CACHE_SIZE",
        value_name = "BYTES",
        requires = "origin_source"
    )]
    cache_size: Option<u64>,

    /// Seconds an object the origin sent without a Cache-Control lifetime
    /// is served before it is revalidated.
    #[arg(long, env = "TFTPD_CACHE_TTL", value_name = "SECS", default_value_t = tftp_origin::DEFAULT_TTL.as_secs(), requires = "origin_source")]
    cache_ttl: u64,

    /// Origin connect timeout, wait for response headers and longest pause
    /// in a body, in seconds (fractions allowed).
    #[arg(long, env = "TFTPD_ORIGIN_TIMEOUT", value_name = "SECS", default_value = "5", value_parser = parse_seconds, requires = "origin_source")]
    origin_timeout: Duration,

    /// Retries of a failed origin request (before its first body byte), 0..=10.
    #[arg(long, env = "TFTPD_ORIGIN_RETRIES", value_name = "N", default_value_t = tftp_origin::DEFAULT_RETRIES, value_parser = clap::value_parser!(u32).range(0..=tftp_origin::MAX_RETRIES as i64), requires = "origin_source")]
    origin_retries: u32,

    /// Most origin requests at once (headers and bodies); more wait in
    /// line, each within its transfer's deadline.
    #[arg(long, env = "TFTPD_ORIGIN_MAX_REQUESTS", value_name = "N", default_value_t = tftp_origin::DEFAULT_MAX_REQUESTS as u64, value_parser = clap::value_parser!(u64).range(1..=100_000), requires = "origin_source")]
    origin_max_requests: u64,

    /// Longest a cached copy is served stale while the origin fails, in
    /// seconds from when it went stale; past it, requests get the error.
    #[arg(long, env = "TFTPD_STALE_IF_ERROR", value_name = "SECS", default_value_t = tftp_origin::DEFAULT_STALE_IF_ERROR.as_secs(), requires = "origin_source")]
    stale_if_error: u64,

    /// Address to listen on, IPv4 or IPv6 (repeatable). Without a port, 69.
    /// Default 127.0.0.1:6969, unless sockets come from systemd or inetd.
    #[arg(long, env = "TFTPD_LISTEN", value_name = "ADDR", value_delimiter = ',', value_parser = parse_listen)]
    listen: Vec<SocketAddr>,

    /// Rewrite requested file names with tftpd-hpa's remap rules (its -m).
    #[arg(short = 'm', long, env = "TFTPD_MAP_FILE", value_name = "FILE")]
    map_file: Option<PathBuf>,

    /// Serve each client from ROOT/CLIENT-IP/ when that directory exists
    /// (dnsmasq's tftp-unique-root); other clients get ROOT.
    #[arg(long, env = "TFTPD_PER_CLIENT_ROOT", value_name = "KEY", value_enum)]
    per_client_root: Option<ClientKey>,

    /// Accept uploads (WRQ) of new files.
    #[arg(long, env = "TFTPD_ALLOW_WRITE")]
    allow_write: bool,

    /// Let uploads replace existing files (needs --allow-write).
    #[arg(
        long,
        env = "TFTPD_ALLOW_OVERWRITE",
        requires_if("true", "allow_write")
    )]
    allow_overwrite: bool,

    /// Largest upload accepted, in bytes: a larger announced tsize, or an
    /// upload growing past it, gets ERROR 3 and leaves nothing behind.
    #[arg(long, env = "TFTPD_MAX_UPLOAD_SIZE", value_name = "BYTES", default_value_t = tftp_tokio::DEFAULT_MAX_UPLOAD_SIZE)]
    max_upload_size: u64,

    /// Accept uploads only for names under this directory of the root (e.g.
    /// incoming), so no client can plant pxelinux.cfg/01-MAC files.
    #[arg(long, env = "TFTPD_UPLOAD_DIR", value_name = "DIR")]
    upload_dir: Option<String>,

    /// File mode creation mask for uploads, octal (e.g. 022, 077).
    #[arg(long, env = "TFTPD_UMASK", value_name = "MASK", value_parser = parse_umask)]
    umask: Option<u32>,

    /// Largest blksize granted (8..=65464).
    #[arg(long, env = "TFTPD_MAX_BLKSIZE", value_name = "BYTES", default_value_t = MAX_BLKSIZE, value_parser = clap::value_parser!(u16).range(i64::from(MIN_BLKSIZE)..=i64::from(MAX_BLKSIZE)))]
    max_blksize: u16,

    /// Largest windowsize granted.
    #[arg(long, env = "TFTPD_MAX_WINDOWSIZE", value_name = "BLOCKS", default_value_t = tftp_proto::options::DEFAULT_MAX_WINDOWSIZE, value_parser = clap::value_parser!(u16).range(1..))]
    max_windowsize: u16,

    /// Largest blksize × windowsize in flight per session (memory per session).
    #[arg(long, env = "TFTPD_MAX_WINDOW_BYTES", value_name = "BYTES", default_value_t = tftp_proto::options::DEFAULT_MAX_WINDOW_BYTES)]
    max_window_bytes: usize,

    /// First retransmission timeout in milliseconds when the client asks for
    /// no `timeout` option (it then adapts to the measured round trip).
    #[arg(long, env = "TFTPD_TIMEOUT", value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=255_000))]
    timeout: u64,

    /// Retransmissions of one packet before a transfer is abandoned.
    #[arg(long, env = "TFTPD_RETRIES", default_value_t = tftp_proto::options::DEFAULT_RETRIES)]
    retries: u32,

    /// Largest `timeout` option acknowledged, in seconds (1..=255); a larger
    /// request is not acknowledged and the adaptive timer applies.
    #[arg(long, env = "TFTPD_MAX_TIMEOUT", value_name = "SECS", default_value_t = tftp_proto::options::DEFAULT_MAX_TIMEOUT, value_parser = clap::value_parser!(u8).range(1..))]
    max_timeout: u8,

    /// Slowest transfer kept, in bytes per second on average after its
    /// first 30 s (0: no minimum); slower ones end with ERROR 0.
    #[arg(long, env = "TFTPD_MIN_RATE", value_name = "BYTES", default_value_t = tftp_proto::options::DEFAULT_MIN_RATE)]
    min_rate: u32,

    /// Most transfers at once.
    #[arg(long, env = "TFTPD_MAX_SESSIONS", value_name = "N", default_value_t = tftp_tokio::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,

    /// Most transfers at once from one client IP address (IPv6: one /64).
    #[arg(long, env = "TFTPD_MAX_SESSIONS_PER_PEER", value_name = "N", default_value_t = tftp_tokio::DEFAULT_MAX_SESSIONS_PER_PEER)]
    max_sessions_per_peer: usize,

    /// IPv6 clients count as one peer per this prefix length for
    /// --max-sessions-per-peer (0..=128; 128: every address apart, for a LAN
    /// whose clients all share one /64).
    #[arg(long, env = "TFTPD_IPV6_PEER_PREFIX", value_name = "BITS", default_value_t = tftp_proto::server::DEFAULT_IPV6_PEER_PREFIX, value_parser = clap::value_parser!(u8).range(0..=128))]
    ipv6_peer_prefix: u8,

    /// Most transfers at once whose client has not answered its first
    /// packet yet (default: half of --max-sessions); past it the oldest
    /// gives its place to the newest.
    #[arg(long, env = "TFTPD_MAX_UNVERIFIED", value_name = "N")]
    max_unverified: Option<usize>,

    /// Memory for all transfers' buffers together, in bytes; past it,
    /// windows shrink, then requests get ERROR 0 "Server busy".
    #[arg(long, env = "TFTPD_MAX_MEMORY", value_name = "BYTES", default_value_t = tftp_tokio::DEFAULT_MAX_MEMORY)]
    max_memory: usize,

    /// Never acknowledge this option (repeatable, or comma-separated): for
    /// boot ROMs that choke on it (tftpd-hpa's -r).
    #[arg(
        long,
        env = "TFTPD_REFUSE",
        value_name = "OPTION",
        value_enum,
        value_delimiter = ','
    )]
    refuse: Vec<RefuseArg>,

    /// Local ports for transfer sockets, e.g. 50000:50100 (for firewalls).
    #[arg(long, env = "TFTPD_PORT_RANGE", value_name = "LOW:HIGH", value_parser = parse_port_range)]
    port_range: Option<(u16, u16)>,

    /// Listening sockets per address (SO_REUSEPORT) and runtime threads.
    /// Default: the number of CPUs.
    #[arg(long, env = "TFTPD_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Seconds a shutdown waits for running transfers before aborting them.
    #[arg(
        long,
        env = "TFTPD_DRAIN_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30
    )]
    drain_timeout: u64,

    /// Serve Prometheus metrics over HTTP on this address (GET /metrics).
    #[arg(long, env = "TFTPD_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// After binding and opening the root, switch to this user (a name, or
    /// UID:GID). Started as root without it, tftpd becomes nobody, as
    /// tftpd-hpa does; `--user root` keeps root.
    #[arg(long, env = "TFTPD_USER", value_name = "USER")]
    user: Option<String>,

    /// inetd mode: the listening socket is standard input.
    #[arg(long, env = "TFTPD_INETD")]
    inetd: bool,

    /// More logging (-v debug, -vv trace).
    #[arg(short, long, env = "TFTPD_VERBOSE", action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log format on standard error.
    #[arg(long, env = "TFTPD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// What names a client's own directory (`--per-client-root`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClientKey {
    /// The client's IP address as text: 192.0.2.7, 2001:db8::7.
    Ip,
}

/// An option `--refuse` can turn off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RefuseArg {
    /// RFC 2348 block size.
    Blksize,
    /// RFC 2349 transfer size.
    Tsize,
    /// RFC 2349 retransmission timeout.
    Timeout,
    /// RFC 7440 window size.
    Windowsize,
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
enum LogFormat {
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

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (low, high) = s.split_once(':').ok_or("expected LOW:HIGH")?;
    let low: u16 = low.parse().map_err(|_| "LOW is not a port")?;
    let high: u16 = high.parse().map_err(|_| "HIGH is not a port")?;
    if low == 0 || low > high {
        return Err("expected 1 <= LOW <= HIGH".into());
    }
    Ok((low, high))
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    init_logging(&args);
    // Read before privileges are dropped: the file may be root's alone.
    if let Some(file) = args.origin_file.as_deref() {
        match read_origin_file(file) {
            Ok(template) => args.origin = Some(template),
            Err(e) => {
                eprintln!("tftpd: --origin-file {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    // A rule file that cannot be used is a usage error, like a bad flag.
    let rules = match args.map_file.as_deref().map(RemapRules::from_file) {
        Some(Err(e)) => {
            let file = args.map_file.as_deref().unwrap_or(Path::new("")).display();
            eprintln!("tftpd: --map-file {file}: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(rules)) => Some(rules),
        None => None,
    };
    if let Some(Err(e)) = args.origin.as_deref().map(tftp_origin::Template::parse) {
        let flag = match args.origin_file {
            Some(_) => "--origin-file",
            None => "--origin",
        };
        eprintln!("tftpd: {flag}: {e}");
        return ExitCode::from(2);
    }
    match run(args, rules) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// The template in an `--origin-file`: its first line that is neither
/// empty nor a `#` comment, trimmed.
fn read_origin_file(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| "no URL template in it (only empty or # lines)".to_owned())
}

fn init_logging(args: &Args) {
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Descriptors a session may hold: its socket and usually a file.
const DESCRIPTORS_PER_SESSION: u64 = 2;
/// Descriptors besides the sessions': listening sockets, the root, the
/// runtime, the metrics endpoint and its connections, logs.
const DESCRIPTORS_SPARE: u64 = 256;

/// Raises the soft limit on open descriptors to the hard one, and, when
/// started privileged, both to what `max_sessions` sessions need: each
/// holds a socket and usually a file, and the default soft limit (often
/// 1024) would run out long before `--max-sessions`.
fn raise_descriptor_limit(max_sessions: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let need = (max_sessions as u64)
        .saturating_mul(DESCRIPTORS_PER_SESSION)
        .saturating_add(DESCRIPTORS_SPARE);
    if limit.maximum.is_some_and(|hard| hard < need) {
        // Only with CAP_SYS_RESOURCE; the kernel caps it at fs.nr_open.
        let wanted = Rlimit {
            current: Some(need),
            maximum: Some(need),
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            tracing::debug!(limit = need, "raised the descriptor limit");
            return;
        }
    }
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(soft = ?limit.maximum, "raised the descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    if soft.is_some_and(|n| n < need) {
        tracing::warn!(
            limit = ?soft,
            need,
            "the descriptor limit is below what --max-sessions needs (raise ulimit -n)"
        );
    }
}

fn run(args: Args, rules: Option<RemapRules>) -> Result<(), BoxError> {
    raise_descriptor_limit(args.max_sessions);
    let workers = args.workers.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Sockets and the root are opened first, with the privileges we start
    // with; then privileges are dropped; only then do threads start.
    let sockets = listening_sockets(&args, workers)?;
    // Without --origin the root defaults to the current directory; with
    // it, a root is served only when named.
    let root = match (&args.root, &args.origin) {
        (Some(root), _) => Some(root.clone()),
        (None, None) => Some(PathBuf::from(".")),
        (None, Some(_)) => None,
    };
    let dir = match &root {
        Some(root) => Some(open_root(&args, root)?),
        None => None,
    };
    if let Some(mask) = args.umask {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
    }
    let metrics_listener = match args.metrics {
        Some(addr) => Some(metrics::bind(addr)?),
        None => None,
    };
    let switch_to = match (args.user.as_deref(), rustix::process::geteuid().is_root()) {
        // Explicitly asked to stay root.
        (Some("root"), true) => {
            tracing::warn!("running as root (--user root)");
            None
        }
        (Some("root"), false) => None,
        (Some(user), _) => Some(user),
        // Started as root with no --user: as tftpd-hpa, become nobody.
        (None, true) => Some(DEFAULT_USER),
        (None, false) => None,
    };
    if let Some(user) = switch_to {
        let (uid, gid) = lookup_user(user).map_err(|e| {
            format!("cannot drop privileges to {user}: {e} (--user root keeps root)")
        })?;
        // The cache directory is made for the user tftpd becomes (created
        // 0700 and given to it, or checked to be its own), while tftpd may
        // still create it where that user could not.
        if let Some(dir) = &args.cache_dir {
            tftp_origin::prepare_cache_dir(dir, Some((uid, gid)))?;
        }
        drop_privileges(user, uid, gid)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    // Built after the switch: the cache's files belong to the user tftpd
    // runs as.
    let origin = args
        .origin
        .as_deref()
        .map(|t| build_origin(&args, t))
        .transpose()?;
    let ctx = Serve {
        args,
        sockets,
        metrics_listener,
        origin: origin.clone(),
    };
    if let Some(rules) = &rules {
        tracing::info!(rules = rules.len(), "file name remapping");
    }
    // One instantiation per handler shape.
    runtime.block_on(async move {
        match (dir, origin, rules) {
            (Some(d), None, None) => serve(ctx, d).await,
            (Some(d), None, Some(r)) => serve(ctx, Remap::new(r, d)).await,
            (None, Some(o), None) => serve(ctx, o).await,
            (None, Some(o), Some(r)) => serve(ctx, Remap::new(r, o)).await,
            (Some(d), Some(o), None) => serve(ctx, Fallback::new(d, o)).await,
            (Some(d), Some(o), Some(r)) => serve(ctx, Remap::new(r, Fallback::new(d, o))).await,
            (None, None, _) => Err("nothing to serve".into()),
        }
    })
}

/// Opens the root to serve (with the privileges tftpd starts with).
fn open_root(args: &Args, root: &Path) -> Result<DirHandler, BoxError> {
    let handler = DirHandler::new(root)
        .map_err(|e| format!("cannot open root {}: {e}", root.display()))?
        .allow_write(args.allow_write)
        .allow_overwrite(args.allow_overwrite)
        .per_client_root(args.per_client_root == Some(ClientKey::Ip))
        .max_upload_size(args.max_upload_size);
    let handler = match &args.upload_dir {
        Some(dir) => handler.upload_dir(dir),
        None => handler,
    };
    if args.allow_write {
        // A crash can leave half-written uploads; they are never served,
        // and are removed here.
        match handler.root().remove_stale_uploads() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale upload temporary files"),
            Err(e) => tracing::warn!(error = %e, "cannot remove stale upload temporary files"),
        }
    }
    Ok(handler)
}

/// The `--origin` handler, with its cache and a debug line per lookup.
fn build_origin(args: &Args, template: &str) -> Result<Origin, BoxError> {
    let mut builder = Origin::builder(template)?
        .ttl(Duration::from_secs(args.cache_ttl))
        .timeout(args.origin_timeout)
        .retries(args.origin_retries)
        .max_requests(args.origin_max_requests as usize)
        .stale_if_error(Duration::from_secs(args.stale_if_error))
        .on_lookup(|l| {
            tracing::debug!(
                peer = %l.peer,
                url = %tftp_origin::redact(l.url.as_deref().unwrap_or("-")),
                cache = l.result.as_str(),
                size = l.size,
                elapsed_ms = l.elapsed.as_millis() as u64,
                error = l.error,
                "origin lookup"
            )
        });
    if let Some(dir) = &args.cache_dir {
        builder = builder.cache_dir(dir);
    }
    if let Some(size) = args.cache_size {
        builder = builder.cache_size(size);
    }
    let origin = builder.build()?;
    tracing::info!(
        origin = %tftp_origin::redact(template),
        cache = %args.cache_dir.as_deref().map_or("memory".into(), |d| d.display().to_string()),
        "serving from an origin"
    );
    Ok(origin)
}

/// What `serve` needs besides the handler.
struct Serve {
    args: Args,
    sockets: Vec<std::net::UdpSocket>,
    metrics_listener: Option<std::net::TcpListener>,
    origin: Option<Origin>,
}

fn listening_sockets(args: &Args, workers: usize) -> Result<Vec<std::net::UdpSocket>, BoxError> {
    let mut sockets = Vec::new();
    // systemd socket activation (LISTEN_FDS, LISTEN_PID).
    let mut fds = listenfd::ListenFd::from_env();
    for i in 0..fds.len() {
        if let Some(socket) = fds.take_udp_socket(i)? {
            tracing::info!(fd = 3 + i, "socket from systemd");
            sockets.push(socket);
        }
    }
    if args.inetd {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        sockets.push(std::net::UdpSocket::from(fd));
        tracing::info!("socket from inetd (standard input)");
    }
    let mut listen = args.listen.clone();
    if listen.is_empty() && sockets.is_empty() {
        listen.push(DEFAULT_LISTEN.parse().expect("default address"));
    }
    for addr in listen {
        let bound = bind_listen_sockets(addr, workers)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        sockets.extend(bound);
    }
    Ok(sockets)
}

/// The user a root-started tftpd switches to without `--user`.
const DEFAULT_USER: &str = "nobody";

/// Switches to `user` (`uid`:`gid`, as [`lookup_user`] found "name", "uid"
/// or "uid:gid"; the name is for the log) before any thread starts,
/// so the per-thread Linux calls apply to the whole process (and refuses if
/// a thread exists already, since it would keep the privileges). Switching
/// away from uid 0 clears every capability.
fn drop_privileges(user: &str, uid: u32, gid: u32) -> Result<(), BoxError> {
    use rustix::process::{Gid, Uid};
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    match std::fs::read_dir("/proc/self/task").map(|d| d.count()) {
        Ok(1) => {}
        Ok(threads) => {
            return Err(format!("cannot drop privileges: {threads} threads already run").into())
        }
        // No /proc to look at: nothing in tftpd starts a thread before this.
        Err(e) => tracing::warn!(error = %e, "cannot count threads before dropping privileges"),
    }
    let gid = Gid::from_raw(gid);
    let uid = Uid::from_raw(uid);
    set_thread_groups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    set_thread_res_gid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    set_thread_res_uid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    tracing::info!(
        user,
        uid = uid.as_raw(),
        gid = gid.as_raw(),
        "dropped privileges"
    );
    Ok(())
}

fn lookup_user(user: &str) -> Result<(u32, u32), BoxError> {
    if let Some((u, g)) = user.split_once(':') {
        if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
            return Ok((u, g));
        }
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && (fields[0] == user || fields[2] == user) {
            return Ok((fields[2].parse()?, fields[3].parse()?));
        }
    }
    Err(format!("unknown user {user}").into())
}

async fn serve<H: Handler>(ctx: Serve, handler: H) -> Result<(), BoxError> {
    let Serve {
        args,
        sockets,
        metrics_listener,
        origin,
    } = ctx;
    let shutdown = shutdown_signal();
    let limits = Limits {
        max_blksize: args.max_blksize,
        max_windowsize: args.max_windowsize,
        max_window_bytes: args.max_window_bytes,
        retries: args.retries,
        initial_rto: Duration::from_millis(args.timeout),
        max_timeout: args.max_timeout,
        min_rate: args.min_rate,
        enabled: enabled_options(&args.refuse),
        ..Limits::default()
    };
    let durations = metrics::Durations::default();
    let recorded = durations.clone();
    // JSON escapes every string itself; text lines need it done here.
    let escape = args.log_format == LogFormat::Text;
    let mut builder = Server::builder(handler)
        .limits(limits)
        .max_sessions(args.max_sessions)
        .max_sessions_per_peer(args.max_sessions_per_peer)
        .max_memory(args.max_memory)
        .ipv6_peer_prefix(args.ipv6_peer_prefix)
        .drain_timeout(Duration::from_secs(args.drain_timeout))
        .on_session_end(move |s| {
            recorded.observe(s);
            log_session(s, escape);
        });
    if let Some((low, high)) = args.port_range {
        builder = builder.port_range(low, high);
    }
    if let Some(n) = args.max_unverified {
        builder = builder.max_unverified(n);
    }
    for socket in sockets {
        builder = builder.listen_socket(socket);
    }
    let server = builder.bind()?;
    for (addr, sockets) in group_addrs(&server.local_addrs()) {
        let root = match (&args.root, &args.origin) {
            (Some(root), _) => root.display().to_string(),
            (None, None) => ".".to_owned(),
            (None, Some(_)) => "-".to_owned(),
        };
        let origin = args.origin.as_deref().map(tftp_origin::redact);
        tracing::info!(%addr, sockets, root, origin = origin.as_deref(), write = args.allow_write, "listening");
    }
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        metrics::spawn(listener, server.stats_handle(), &durations, origin)?;
    }
    server.serve(shutdown).await?;
    tracing::info!("shut down");
    Ok(())
}

/// Each distinct listening address with its number of sockets (workers),
/// in order of first appearance.
fn group_addrs(addrs: &[SocketAddr]) -> Vec<(SocketAddr, usize)> {
    let mut groups: Vec<(SocketAddr, usize)> = Vec::new();
    for addr in addrs {
        match groups.iter_mut().find(|(a, _)| a == addr) {
            Some((_, n)) => *n += 1,
            None => groups.push((*addr, 1)),
        }
    }
    groups
}

/// SIGTERM or SIGINT. The handlers are installed at once (before the
/// "listening" line), not when the future is first polled: a signal that
/// arrives right after start-up drains instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining transfers"),
            _ = int.recv() => tracing::info!("SIGINT: draining transfers"),
        }
    }
}

/// A session's outcome in one word: `completed`, `options_refused` (the
/// client declined the OACK, e.g. a UEFI tsize probe), `peer_error`,
/// `refused` (this server answered the request with an ERROR: no OACK, no
/// data), `failed` (it ended a started transfer with an ERROR), `timed_out`
/// or `evicted` (an unverified session that gave its place to a newer
/// request).
fn outcome_word(s: &tftp_proto::stats::Stats) -> &'static str {
    use tftp_proto::stats::Outcome;
    match s.outcome {
        Some(Outcome::Completed) => "completed",
        Some(Outcome::OptionsRefused) => "options_refused",
        Some(Outcome::PeerError(_)) => "peer_error",
        Some(Outcome::Refused { .. }) => "refused",
        Some(Outcome::LocalError(_)) => "failed",
        Some(Outcome::TimedOut) => "timed_out",
        Some(Outcome::Evicted) => "evicted",
        None => "unfinished",
    }
}

/// One structured line per finished session. Peer-supplied fields (file
/// name, options, the peer's ERROR text) have their control characters
/// escaped when `escape` is set (the text format), so they cannot forge a
/// line or reach a terminal as escape sequences.
fn log_session(s: &tftp_proto::stats::Stats, escape: bool) {
    let clean = |text: String| -> String {
        if escape {
            escape_controls(&text).into_owned()
        } else {
            text
        }
    };
    let options: Vec<String> = s
        .requested_options()
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                String::from_utf8_lossy(o.name),
                String::from_utf8_lossy(o.value)
            )
        })
        .collect();
    let options = clean(options.join(","));
    let negotiated: Vec<String> = s
        .options_negotiated
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let (error_code, error_message) = match &s.error {
        Some(e) => (
            Some(e.code.as_u16()),
            clean(String::from_utf8_lossy(&e.message).into_owned()),
        ),
        None => (None, String::new()),
    };
    let file = clean(s.filename_lossy());
    // Rounded to whole milliseconds.
    let duration_ms = s
        .finished
        .map(|f| (f - s.started).as_micros().saturating_add(500) / 1000)
        .unwrap_or(0);
    tracing::info!(
        target: "tftpd::session",
        peer = %s.peer,
        local = %s.local.map(|l| l.to_string()).unwrap_or_default(),
        file = %file,
        direction = ?s.direction,
        mode = %s.mode,
        options_requested = %options,
        options_negotiated = %negotiated.join(","),
        outcome = %outcome_word(s),
        verified = s.verified,
        bytes_sent = s.bytes_sent,
        bytes_received = s.bytes_received,
        blocks_sent = s.blocks_sent,
        blocks_received = s.blocks_received,
        retransmits = s.retransmits,
        duplicate_acks = s.duplicate_acks,
        duplicate_data = s.duplicate_data,
        timeouts = s.timeouts,
        error_code,
        error_message = %error_message,
        duration_ms,
        "session"
    );
}
