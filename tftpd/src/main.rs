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
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tftp_origin::Origin;
use tftp_tokio::http::HttpServer;
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
    let http_listeners = args
        .http
        .iter()
        .map(|&addr| sockets::bind_tcp(addr, "HTTP"))
        .collect::<Result<Vec<_>, _>>()?;
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
        Listeners {
            udp: sockets,
            metrics: metrics_listener,
            http: http_listeners,
        },
        handler,
        origin,
    ))
}

/// The sockets opened before privileges are dropped.
struct Listeners {
    udp: Vec<UdpSocket>,
    metrics: Option<TcpListener>,
    http: Vec<TcpListener>,
}

/// Serves until SIGTERM or SIGINT, then drains the running transfers (and
/// HTTP answers).
async fn serve(
    args: Args,
    root: Option<PathBuf>,
    listeners: Listeners,
    handler: Stack,
    origin: Option<Origin>,
) -> Result<(), BoxError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The handlers are installed here, before anything is served.
    let signalled = process::shutdown_signal();
    tokio::spawn(async move {
        signalled.await;
        let _ = stop.send(true);
    });
    let shutdown = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: shut down as well.
        let _ = stopped.wait_for(|s| *s).await;
    };
    reload::Reload {
        rules: args.map_file.clone().zip(handler.rules()),
        origin: args.origin_file.clone().zip(origin.clone()),
    }
    .spawn()?;
    let durations = metrics::Durations::default();
    let recorded = durations.clone();
    // JSON escapes every string itself; text lines need it done here.
    let escape = args.log_format == LogFormat::Text;
    let handler = Arc::new(handler);
    let http = (!listeners.http.is_empty()).then(|| {
        let recorded = durations.clone();
        HttpServer::builder(handler.clone())
            .max_connections(args.http_max_connections)
            .max_connections_per_peer(args.http_max_connections_per_client)
            .idle_timeout(Duration::from_secs(args.http_idle_timeout))
            .min_rate(
                args.min_rate,
                tftp_tokio::tftp_proto::options::DEFAULT_MIN_RATE_GRACE,
            )
            .drain_timeout(Duration::from_secs(args.drain_timeout))
            .ipv6_peer_prefix(args.ipv6_peer_prefix)
            .on_request_end(move |s| {
                recorded.observe_http(s);
                log::http(s, escape);
            })
            .build()
    });
    let mut builder = args
        .configure(Server::builder(handler))
        .on_session_end(move |s| {
            recorded.observe(s);
            log::session(s, escape);
        });
    for socket in listeners.udp {
        builder = builder.listen_socket(socket);
    }
    let server = builder.bind()?;
    let (addrs, origin_url) = (server.local_addrs(), args.origin.as_deref());
    log::listening(&addrs, root.as_deref(), origin_url, args.allow_write);
    if let Some(listener) = listeners.metrics {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        metrics::spawn(
            listener,
            server.stats_handle(),
            &durations,
            origin,
            http.clone(),
        )?;
    }
    let mut http_listeners = Vec::new();
    for listener in listeners.http {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "HTTP on http://{addr}/");
        http_listeners.push(tokio::net::TcpListener::from_std(listener)?);
    }
    let http_served = async {
        match &http {
            Some(http) => http.serve(http_listeners, shutdown(stopped.clone())).await,
            None => Ok(()),
        }
    };
    let (tftp_served, http_served) =
        tokio::join!(server.serve(shutdown(stopped.clone())), http_served);
    tftp_served?;
    http_served?;
    tracing::info!("shut down");
    Ok(())
}
