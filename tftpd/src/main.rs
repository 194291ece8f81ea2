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

mod cli;
mod log;
#[cfg(test)]
mod man_check;
mod metrics;
mod process;
mod reload;
mod sockets;
mod stack;

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tftp_origin::Origin;
use tftp_tokio::{RemapRules, Server};

use cli::{Args, LogFormat};
use stack::Stack;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let mut args = Args::parse();
    log::init(args.verbose, args.log_format);
    let rules = match args.read_files() {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("tftpd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args, rules) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Opens the sockets, the root and the metrics listener with the privileges
/// tftpd starts with, drops them, and only then starts threads and serves.
fn run(args: Args, rules: Option<RemapRules>) -> Result<(), BoxError> {
    process::raise_descriptor_limit(args.max_sessions);
    let workers = args.workers();
    let sockets = sockets::listening(&args, workers)?;
    let root = args.root();
    let dir = root
        .as_deref()
        .map(|r| stack::open_root(&args, r))
        .transpose()?;
    if let Some(mask) = args.umask {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
    }
    let metrics_listener = args.metrics.map(metrics::bind).transpose()?;
    process::become_user(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    // Built after the switch: the cache's files belong to the user tftpd
    // runs as.
    let origin = args
        .origin
        .as_deref()
        .map(|t| stack::build_origin(&args, t))
        .transpose()?;
    let handler = Stack::new(dir, origin.clone(), rules)?;
    runtime.block_on(serve(
        args,
        root,
        sockets,
        metrics_listener,
        handler,
        origin,
    ))
}

/// Serves until SIGTERM or SIGINT, then drains the running transfers.
async fn serve(
    args: Args,
    root: Option<PathBuf>,
    sockets: Vec<UdpSocket>,
    metrics_listener: Option<TcpListener>,
    handler: Stack,
    origin: Option<Origin>,
) -> Result<(), BoxError> {
    let shutdown = process::shutdown_signal();
    reload::Reload {
        rules: args.map_file.clone().zip(handler.rules()),
        origin: args.origin_file.clone().zip(origin.clone()),
    }
    .spawn()?;
    let durations = metrics::Durations::default();
    let recorded = durations.clone();
    // JSON escapes every string itself; text lines need it done here.
    let escape = args.log_format == LogFormat::Text;
    let mut builder = args
        .configure(Server::builder(handler))
        .on_session_end(move |s| {
            recorded.observe(s);
            log::session(s, escape);
        });
    for socket in sockets {
        builder = builder.listen_socket(socket);
    }
    let server = builder.bind()?;
    let (addrs, origin_url) = (server.local_addrs(), args.origin.as_deref());
    log::listening(&addrs, root.as_deref(), origin_url, args.allow_write);
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        metrics::spawn(listener, server.stats_handle(), &durations, origin)?;
    }
    server.serve(shutdown).await?;
    tracing::info!("shut down");
    Ok(())
}
