//! # tftp-tokio: a TFTP server framework and client on tokio
//!
//! What fbtftp gives Python users, in Rust: a [`Server`] whose [`Handler`]
//! decides per request what the client gets (a file, bytes generated on the
//! fly, a stream from another store), per-session statistics when each
//! transfer ends, periodic server counters, limits and graceful shutdown; a
//! [`Client`]; and [`DirHandler`], a directory server confined by the kernel.
//!
//! The crate is a thin driver of [`tftp_proto`]: it moves datagrams between
//! UDP sockets and the core's sessions and bytes between sources/sinks and
//! the core. Every protocol decision is made in the core. Each transfer runs
//! in its own task with its own UDP socket (the server's transfer ID), bound
//! to the local address the request arrived on; the handler runs inside that
//! task, never in the accept loop.
//!
//! ```no_run
//! use tftp_tokio::{DirHandler, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder(DirHandler::new("/srv/tftp")?)
//!     .listen("127.0.0.1:6969".parse().unwrap())
//!     .on_session_end(|stats| println!("{} {}: {:?}", stats.peer, stats.filename_lossy(), stats.outcome))
//!     .bind()
//!     .await?;
//! server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! Fetching with the client:
//!
//! ```no_run
//! # async fn run() -> Result<(), tftp_tokio::ClientError> {
//! let client = tftp_tokio::Client::new("127.0.0.1:6969".parse().unwrap()).blksize(1468).windowsize(16).tsize(true);
//! let mut file = tokio::fs::File::create("pxelinux.0").await?;
//! let stats = client.get("pxelinux.0", &mut file).await?;
//! println!("{} bytes", stats.bytes_received);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod client;
mod dir;
mod driver;
mod handler;
mod server;

pub use client::{Client, ClientError};
pub use dir::DirHandler;
pub use handler::{Handler, ReadResponse, RequestInfo, TftpError, WriteResponse};
pub use server::{
    bind_listen_sockets, Server, ServerBuilder, ServerStats, ServerStatsCallback, SessionCallback,
    StatsHandle, DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
    DEFAULT_STATS_INTERVAL,
};
pub use tftp_proto;
