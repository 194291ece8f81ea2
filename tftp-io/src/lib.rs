//! # tftp-io: the std I/O layer of tftp-rs
//!
//! Everything between the sans-IO core ([`tftp_proto`]) and a runtime that
//! needs std but no particular runtime, written once:
//!
//! - sockets ([`net`]): listening sockets (optionally `SO_REUSEPORT`) and one
//!   fresh transfer socket per session (optionally in a port range), or, in
//!   single-port mode, the listening socket for every session, its
//!   datagrams routed to each by the accept loop (`demux`);
//! - confined files ([`root`], [`DirHandler`]): every open is resolved by the
//!   kernel beneath the served root;
//! - admission and counters ([`registry`]): limits, duplicate requests and
//!   the ticket that ends a session's admission exactly once;
//! - settings ([`ServerBuilder`], [`Client`]) and [`ClientError`];
//! - the framework API ([`Handler`], [`ReadResponse`], [`WriteResponse`]);
//! - **one** session driver, synchronous and I/O-free (`driver`), whose
//!   steps (send, read, write, flush, wait, done) two executors perform:
//!   an async one generic over a small [`Runtime`] trait (timer, spawn,
//!   clock, pollable UDP socket), in the shape of quinn's `runtime.rs`, and
//!   one for std threads;
//! - the async server ([`Server`]) and the threads server ([`blocking`]),
//!   sharing their state, admission and session start; the client on both.
//!
//! The adapter crates are the glue: `tftp-tokio` and `tftp-smol` implement
//! [`Runtime`] for their runtime and [`Serves`] / [`Wrap`] for their I/O
//! traits (tokio's `AsyncRead`/`AsyncWrite` through a compat wrapper;
//! `futures_io`, which smol uses, natively), and `tftp-blocking` re-exports
//! [`blocking`]. Every protocol decision stays in the core; every I/O
//! decision (which failure an I/O error is, start versus refuse, when a client
//! returns, shutdown and accept failures) is made here, once.
//!
//! ```text
//! tftp-proto        sans-IO core: packets, options, netascii, sessions
//!   └─ tftp-io      this crate: sockets, files, admission, server/client/driver
//!        ├─ tftp-tokio     Runtime for tokio, tokio I/O traits
//!        ├─ tftp-smol      Runtime for smol/async-io (also async-std)
//!        └─ tftp-blocking  std threads (re-exports `blocking`)
//! ```
//!
//! Applications use an adapter crate; this one is for writing adapters. A
//! runtime is about a hundred lines: see `tftp-smol`'s `lib.rs`.
#![forbid(unsafe_code)]

pub mod blocking;
mod client;
mod config;
mod demux;
mod dir;
mod driver;
mod error;
mod fallback;
mod handler;
pub mod http;
mod listen;
pub mod neighbour;
pub mod net;
mod offload;
mod readahead;
pub mod registry;
pub mod remap;
pub mod resolve;
pub mod root;
mod runtime;
mod server;
mod session;
mod shared;
mod text;
mod udp;

pub use client::{Client, DEFAULT_CLIENT_DALLY, DEFAULT_CLIENT_MAX_RTO};
pub use config::{
    ServerBuilder, ServerConfig, ServerStatsCallback, SessionCallback, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_MEMORY, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
    DEFAULT_STATS_INTERVAL, SESSION_THREAD_MIN_SIZE,
};
pub use demux::{SINGLE_PORT_QUEUE, SINGLE_PORT_QUEUE_BYTES, SINGLE_PORT_SESSION_BYTES};
pub use dir::{ClientKey, DirHandler};
pub use error::ClientError;
pub use fallback::Fallback;
pub use handler::{
    writes_refused, AsyncSink, AsyncSource, FromBytes, Handler, ReadResponse, Request, TftpError,
    WriteResponse,
};
pub use listen::{LISTEN_BATCH, LISTEN_RCVBUF};
pub use neighbour::{mac_of, Mac};
pub use readahead::{MIN_READ_AHEAD, MIN_READ_AHEAD_ON_THREAD, READ_AHEAD};
pub use root::DEFAULT_MAX_UPLOAD_SIZE;
pub use runtime::{AsyncUdpSocket, Runtime, Serves, Timer, Wrap};
pub use server::{Server, StatsHandle, MIN_STATS_INTERVAL};
pub use session::{
    DESCRIPTOR_TRIES, DESCRIPTOR_WAIT, DISK_FULL, FILE_EXISTS, HANDLER_TIMED_OUT, READ_ERROR,
    SHUTTING_DOWN, SOCKET_ERROR, WRITE_ERROR,
};
pub use text::escape_controls;
pub use tftp_proto;
pub use tftp_proto::stats::{ServerStats, Stats};
pub use udp::{MAX_BATCH_BYTES, MAX_SEGMENT_V4, MAX_SEGMENT_V6};

/// The README's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
