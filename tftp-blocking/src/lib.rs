//! # tftp-blocking: TFTP on std sockets and threads
//!
//! The same framework as `tftp-tokio` for programs that want no async
//! runtime (embedded Linux tools, scripts): a [`Server`] whose [`Handler`]
//! decides what each request gets, [`DirHandler`] (kernel-confined), per
//! session and periodic statistics, limits, graceful shutdown, a [`Client`]
//! and the one-call [`fetch`]. Each transfer runs on its own thread with its
//! own UDP socket; socket read timeouts come from the core's deadlines.
//!
//! The server, client and driving loop are [`tftp_io::blocking`]'s; this
//! crate names them for std users.
//!
//! ```no_run
//! use tftp_blocking::{DirHandler, Server};
//!
//! let server = Server::builder(DirHandler::new("/srv/tftp")?)
//!     .listen("127.0.0.1:6969".parse().unwrap())
//!     .on_session_end(|s| println!("{} {:?}", s.filename_lossy(), s.outcome))
//!     .bind()?;
//! let stop = server.shutdown_handle(); // call stop.shutdown() from elsewhere
//! server.serve()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ```no_run
//! let mut image = std::fs::File::create("pxelinux.0")?;
//! tftp_blocking::fetch("192.0.2.1:69".parse().unwrap(), "pxelinux.0", &mut image)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub use tftp_io::blocking::{
    fetch, Handler, Server, ShutdownHandle, Sink, StdSink, StdSource, Threads,
};
pub use tftp_io::remap::{self, Remap, RemapRules};
pub use tftp_io::{mac_of, ClientKey, Mac};
pub use tftp_io::{
    tftp_proto, ClientError, DirHandler, Fallback, Request, ServerStats, TftpError,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_MEMORY, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
    DEFAULT_STATS_INTERVAL,
};

/// What a read request gets: any [`std::io::Read`] plus its size if known.
pub type ReadResponse = tftp_io::ReadResponse<StdSource>;
/// What a write request gets: any [`std::io::Write`], or a [`Sink`] told
/// when the upload completed ([`WriteResponse::from_sink`]).
pub type WriteResponse = tftp_io::WriteResponse<StdSink>;
/// Configures a [`Server`].
pub type ServerBuilder<H> = tftp_io::ServerBuilder<H, Threads>;
/// A TFTP client on std sockets.
pub type Client = tftp_io::Client<Threads>;

/// The README's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
