//! # tftp-blocking: TFTP on std sockets and threads
//!
//! The same framework as `tftp-tokio` for programs that want no async
//! runtime (embedded Linux tools, scripts): a [`Server`] whose [`Handler`]
//! decides what each request gets, [`DirHandler`] (kernel-confined), per
//! session and periodic statistics, limits, graceful shutdown, a [`Client`]
//! and the one-call [`fetch`]. Each transfer runs on its own thread with its
//! own UDP socket; socket read timeouts come from the core's deadlines.
//!
//! The crate is also the std layer the async adapters share: [`root::Root`]
//! (directory confinement), [`net`] (listening and transfer sockets) and
//! [`ClientError`].
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

mod client;
mod driver;
mod error;
mod handler;
pub mod net;
pub mod registry;
pub mod root;
mod server;

pub use client::{fetch, Client};
pub use error::ClientError;
pub use handler::{DirHandler, Handler, ReadResponse, Sink, WriteResponse};
pub use server::{Server, ServerBuilder, ShutdownHandle, DEFAULT_DRAIN_TIMEOUT};
pub use tftp_proto;
pub use tftp_proto::server::{Request, TftpError};
pub use tftp_proto::stats::ServerStats;
