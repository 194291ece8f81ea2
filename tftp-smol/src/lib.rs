//! # tftp-smol: the TFTP framework on smol / async-io
//!
//! The same concepts and names as `tftp-tokio` — [`Server`] with a
//! per-request [`Handler`], response sources (`futures_io::AsyncRead`) with
//! an optional size, per-session and periodic statistics, limits, graceful
//! shutdown, a kernel-confined [`DirHandler`] and a [`Client`] — on
//! `async-io` with no tokio in the dependency tree. Session tasks run on
//! smol's global executor, so the crate also works from async-std (built on
//! the same reactor).
//!
//! ```no_run
//! use tftp_smol::{DirHandler, Server};
//!
//! smol::block_on(async {
//!     let server = Server::builder(DirHandler::new("/srv/tftp")?)
//!         .listen("127.0.0.1:6969".parse().unwrap())
//!         .bind()?;
//!     server.serve(std::future::pending()).await
//! })
//! # ; Ok::<(), std::io::Error>(())
//! ```
//!
//! ```no_run
//! smol::block_on(async {
//!     let client = tftp_smol::Client::new("127.0.0.1:6969".parse().unwrap()).blksize(1468).windowsize(16);
//!     let mut image = Vec::new();
//!     client.get("pxelinux.0", &mut image).await
//! })?;
//! # Ok::<(), tftp_smol::ClientError>(())
//! ```
#![forbid(unsafe_code)]

mod client;
mod driver;
mod handler;
mod server;

pub use client::Client;
pub use handler::{DirHandler, Handler, ReadResponse, WriteResponse};
pub use server::{Server, ServerBuilder, StatsHandle, DEFAULT_DRAIN_TIMEOUT};
pub use tftp_blocking::ClientError;
pub use tftp_proto;
pub use tftp_proto::server::{Request, TftpError};
pub use tftp_proto::stats::ServerStats;
