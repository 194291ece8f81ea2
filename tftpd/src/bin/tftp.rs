//! # tftp: the tftp-rs client
//!
//! `tftp get HOST[:PORT] REMOTE [LOCAL]` and `tftp put HOST[:PORT] LOCAL
//! [REMOTE]`. Exit codes: 0 success, 1 transfer failed (the server's ERROR,
//! a timeout, a local I/O error), 2 usage error.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tftp_proto::options::{MAX_BLKSIZE, MIN_BLKSIZE};
use tftp_proto::packet::Mode;
use tftp_proto::stats::Stats;
use tftp_tokio::{Client, ClientError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TFTP client (RFC 1350, 2347, 2348, 2349, 7440).
#[derive(Parser, Debug)]
#[command(name = "tftp", version)]
struct Args {
    #[command(subcommand)]
    command: Command,

    /// Block size to ask for (8..=65464).
    #[arg(short, long, global = true, value_parser = clap::value_parser!(u16).range(i64::from(MIN_BLKSIZE)..=i64::from(MAX_BLKSIZE)))]
    blksize: Option<u16>,

    /// Window size to ask for (RFC 7440).
    #[arg(short, long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    windowsize: Option<u16>,

    /// Retransmission timeout to ask for, in seconds (RFC 2349).
    #[arg(short, long, global = true, value_parser = clap::value_parser!(u8).range(1..))]
    timeout: Option<u8>,

    /// Ask for (get) or announce (put) the transfer size.
    #[arg(long, global = true)]
    tsize: bool,

    /// Transfer mode.
    #[arg(long, global = true, value_enum, default_value_t = ModeArg::Octet)]
    mode: ModeArg,

    /// Retransmissions before giving up.
    #[arg(long, global = true, default_value_t = tftp_proto::options::DEFAULT_RETRIES)]
    retries: u32,

    /// Print the negotiated options and the transfer statistics.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// No progress bar.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download REMOTE from HOST into LOCAL (default: REMOTE's base name; - is stdout).
    Get {
        /// Server, HOST or HOST:PORT (port 69 by default).
        host: String,
        /// File name on the server.
        remote: String,
        /// Local file.
        local: Option<PathBuf>,
    },
    /// Upload LOCAL to HOST as REMOTE (default: LOCAL's base name).
    Put {
        /// Server, HOST or HOST:PORT (port 69 by default).
        host: String,
        /// Local file.
        local: PathBuf,
        /// File name on the server.
        remote: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Raw bytes.
    Octet,
    /// Text with CR LF line ends on the wire.
    Netascii,
}

fn resolve(host: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 69));
    }
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:69")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tftp: {e}");
            return ExitCode::from(1);
        }
    };
    let start = std::time::Instant::now();
    let result = runtime.block_on(run(&args));
    let secs = start.elapsed().as_secs_f64();
    match result {
        Ok(stats) => {
            if args.verbose {
                print_stats(&stats, secs);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tftp: {e}");
            if args.verbose {
                if let Some(stats) = error_stats(&e) {
                    print_stats(stats, secs);
                }
            }
            ExitCode::from(1)
        }
    }
}

/// Errors of this tool: the client's, or a local one.
#[derive(Debug)]
enum Failure {
    Client(ClientError),
    Local(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => write!(f, "{e}"),
            Failure::Local(e) => f.write_str(e),
        }
    }
}

fn error_stats(e: &Failure) -> Option<&Stats> {
    match e {
        Failure::Client(ClientError::Server { stats, .. })
        | Failure::Client(ClientError::Timeout { stats })
        | Failure::Client(ClientError::Aborted { stats, .. }) => Some(stats),
        _ => None,
    }
}

fn client(args: &Args, server: SocketAddr) -> Client {
    let mut c = Client::new(server)
        .tsize(args.tsize)
        .retries(args.retries)
        .mode(match args.mode {
            ModeArg::Octet => Mode::Octet,
            ModeArg::Netascii => Mode::Netascii,
        });
    if let Some(b) = args.blksize {
        c = c.blksize(b);
    }
    if let Some(w) = args.windowsize {
        c = c.windowsize(w);
    }
    if let Some(t) = args.timeout {
        c = c.timeout(t);
    }
    c
}

fn progress(args: &Args, len: Option<u64>) -> Option<ProgressBar> {
    if args.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} {eta}")
                .expect("template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}").expect("template"),
        ),
    };
    Some(bar)
}

/// `.NAME.tftp-PID` beside `local`.
fn temp_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    local.with_file_name(format!(".{name}.tftp-{}", std::process::id()))
}

/// Clears the progress bar and returns the client's result.
fn finish(bar: Option<ProgressBar>, result: Result<Stats, ClientError>) -> Result<Stats, Failure> {
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.map_err(Failure::Client)
}

fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into())
}

async fn run(args: &Args) -> Result<Stats, Failure> {
    match &args.command {
        Command::Get {
            host,
            remote,
            local,
        } => {
            let server = resolve(host).map_err(Failure::Local)?;
            let local = local
                .clone()
                .unwrap_or_else(|| PathBuf::from(base_name(remote)));
            let bar = progress(args, None);
            // A device, a FIFO or a symlink as LOCAL is written in place;
            // only a missing or regular file goes through a temporary file.
            let in_place = std::fs::symlink_metadata(&local).is_ok_and(|m| !m.is_file());
            let result = if local.as_os_str() == "-" || in_place {
                if in_place {
                    let file = tokio::fs::OpenOptions::new()
                        .write(true)
                        .open(&local)
                        .await
                        .map_err(|e| {
                            Failure::Local(format!("cannot open {}: {e}", local.display()))
                        })?;
                    let mut out = Counting {
                        inner: file,
                        bar: bar.clone(),
                    };
                    return finish(bar, client(args, server).get(remote, &mut out).await);
                }
                let mut out = Counting {
                    inner: tokio::io::stdout(),
                    bar: bar.clone(),
                };
                client(args, server).get(remote, &mut out).await
            } else {
                // Into a temporary file beside the target, renamed over it
                // only when the download completed: a failed download never
                // harms an existing file.
                let temp = temp_path(&local);
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temp)
                    .await
                    .map_err(|e| {
                        Failure::Local(format!("cannot create {}: {e}", temp.display()))
                    })?;
                let mut out = Counting {
                    inner: file,
                    bar: bar.clone(),
                };
                let r = client(args, server).get(remote, &mut out).await;
                let synced = match &r {
                    Ok(_) => out.inner.sync_all().await,
                    Err(_) => Ok(()),
                };
                drop(out);
                let placed = match (&r, synced) {
                    (Ok(_), Ok(())) => tokio::fs::rename(&temp, &local).await,
                    (Ok(_), Err(e)) => Err(e),
                    (Err(_), _) => Ok(()),
                };
                if r.is_err() || placed.is_err() {
                    let _ = tokio::fs::remove_file(&temp).await;
                }
                if let Err(e) = placed {
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    return Err(Failure::Local(format!(
                        "cannot write {}: {e}",
                        local.display()
                    )));
                }
                r
            };
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            result.map_err(Failure::Client)
        }
        Command::Put {
            host,
            local,
            remote,
        } => {
            let server = resolve(host).map_err(Failure::Local)?;
            let remote = remote
                .clone()
                .unwrap_or_else(|| base_name(&local.to_string_lossy()));
            let file = tokio::fs::File::open(local)
                .await
                .map_err(|e| Failure::Local(format!("cannot open {}: {e}", local.display())))?;
            let size = file.metadata().await.ok().map(|m| m.len());
            let bar = progress(args, size);
            let mut input = Counting {
                inner: file,
                bar: bar.clone(),
            };
            let result = client(args, server).put(&remote, &mut input, size).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            result.map_err(Failure::Client)
        }
    }
}

fn print_stats(s: &Stats, secs: f64) {
    let negotiated: Vec<String> = s
        .options_negotiated
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let bytes = s.bytes_received.max(s.bytes_sent);
    eprintln!(
        "server {} options [{}] {} bytes in {:.3} s ({:.1} KB/s); blocks {} retransmits {} duplicates {} timeouts {} outcome {}",
        s.peer,
        if negotiated.is_empty() { "none (RFC 1350 defaults)".to_string() } else { negotiated.join(" ") },
        bytes,
        secs,
        if secs > 0.0 { bytes as f64 / secs / 1000.0 } else { 0.0 },
        s.blocks_received.max(s.blocks_sent),
        s.retransmits,
        s.duplicate_acks + s.duplicate_data,
        s.timeouts,
        s.outcome.map(|o| o.to_string()).unwrap_or_else(|| "data complete".into()),
    );
}

/// Counts bytes through a reader or writer for the progress bar.
struct Counting<T> {
    inner: T,
    bar: Option<ProgressBar>,
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(bar)) = (&r, &self.bar) {
            bar.inc(*n as u64);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(bar)) = (&r, &self.bar) {
            bar.inc((buf.filled().len() - before) as u64);
        }
        r
    }
}

#[cfg(test)]
#[path = "../man_check.rs"]
mod man_check;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn man_page_is_current() {
        super::man_check::check(Args::command(), "tftp.1");
    }

    fn blksize(n: u16) -> Result<Args, clap::Error> {
        Args::try_parse_from(["tftp", "get", "localhost", "f", "--blksize", &n.to_string()])
    }

    #[test]
    fn blksize_is_the_protocol_range() {
        assert_eq!(blksize(MIN_BLKSIZE).unwrap().blksize, Some(MIN_BLKSIZE));
        assert_eq!(blksize(MAX_BLKSIZE).unwrap().blksize, Some(MAX_BLKSIZE));
        assert!(blksize(MIN_BLKSIZE - 1).is_err());
        assert!(blksize(MAX_BLKSIZE + 1).is_err());
        let command = Args::command();
        let help = command
            .get_arguments()
            .find(|a| a.get_id() == "blksize")
            .and_then(|a| a.get_help())
            .unwrap()
            .to_string();
        assert!(
            help.contains(&format!("({MIN_BLKSIZE}..={MAX_BLKSIZE})")),
            "{help}"
        );
    }
}
