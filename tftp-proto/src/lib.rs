//! # tftp-proto: the sans-IO TFTP core
//!
//! Pure, deterministic TFTP (RFC 1350, with the option extensions of RFC
//! 2347, 2348, 2349 and 7440) that never touches a socket, a clock, a file or
//! an async runtime: it takes datagrams, time and file bytes in and hands back
//! datagrams to send, buffers to fill or deliver, deadlines and a final
//! outcome with statistics. The adapters (`tftp-tokio`, `tftp-smol`,
//! `tftp-blocking`) only move bytes; every protocol decision is made here.
//!
//! - [`packet`]: zero-copy [`Packet`](packet::Packet) parsing and encoders
//!   that write into the caller's buffer.
//! - [`options`]: typed options, the local [`Limits`](options::Limits) and
//!   the negotiation rules for servers ([`negotiate`](options::negotiate))
//!   and clients ([`validate_oack`](options::validate_oack)).
//! - [`netascii`]: streaming encoder and decoder that keep state across blocks.
//! - [`server`]: [`accept`](server::accept) for the listening socket, and the
//!   [`ServerRead`](server::ServerRead) / [`ServerWrite`](server::ServerWrite)
//!   sessions; [`client`]: [`ClientGet`](client::ClientGet) /
//!   [`ClientPut`](client::ClientPut).
//! - [`session`]: the [`Session`](session::Session) trait and the
//!   [`Output`](session::Output) every adapter drains; [`stats`]: per-session
//!   counters and the [`Outcome`](stats::Outcome); [`time`]: the core's
//!   [`Instant`](time::Instant).
//!
//! One sending engine serves lock-step and windowed transfers (lock-step is a
//! window of one) and keeps the current window's blocks for retransmission, so
//! the source is read exactly once, straight into the DATA packets; one
//! receiving engine acknowledges per window, reports gaps at once and dallies
//! after the last block. Block numbers are 64-bit inside and wrap 65535 → 0 on
//! the wire.
//!
//! The crate is `#![no_std]` with `alloc`; the default `std` feature only adds
//! `std::error::Error` impls. It contains no `unsafe` code. Sessions allocate
//! their buffers when they start (and once more when the handshake fixes the
//! block and window sizes), never per packet.
//!
//! # Panic policy
//!
//! Bytes from the network never cause a panic: every parse failure is a named
//! [`ParseError`](packet::ParseError), every unexpected packet is counted and
//! ignored or answered with an ERROR. A panic is a bug. The crate's non-test
//! code is compiled with `clippy::unwrap_used`, `expect_used`,
//! `indexing_slicing`, `arithmetic_side_effects` and `panic` denied: slices
//! are read with `get`, counters saturate, and the few remaining `expect`s
//! (encoding a control packet into a buffer sized for it) each carry an
//! `#[allow]` with the invariant.
//!
//! # Example: a client fetching from a server, both in memory
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use tftp_proto::client::ClientGet;
//! use tftp_proto::options::{Limits, TransferOptions};
//! use tftp_proto::packet::Mode;
//! use tftp_proto::server::{accept, ServerRead};
//! use tftp_proto::session::{Transfer, Output, Session};
//! use tftp_proto::stats::Outcome;
//! use tftp_proto::time::Instant;
//!
//! let listen: SocketAddr = "192.0.2.1:69".parse().unwrap();
//! let server_tid: SocketAddr = "192.0.2.1:50000".parse().unwrap();
//! let client_addr: SocketAddr = "192.0.2.7:40000".parse().unwrap();
//! let file: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
//! let limits = Limits::default();
//! let now = Instant::ZERO; // a real adapter passes its clock's time
//!
//! // The client asks for 1024-byte blocks, a window of 4 and the size.
//! let ask = TransferOptions { blksize: Some(1024), windowsize: Some(4), tsize: Some(0), timeout: None };
//! let mut client = Transfer::get(listen, b"boot.img", Mode::Octet, ask, &limits, now).unwrap();
//! let mut server: Option<ServerRead> = None;
//! let mut to_server: VecDeque<(SocketAddr, Vec<u8>)> = VecDeque::new();
//! let mut to_client: VecDeque<Vec<u8>> = VecDeque::new();
//! let (mut received, mut read) = (Vec::new(), 0);
//!
//! // Drains the client: the loop every adapter runs after every input.
//! fn drain(client: &mut ClientGet, now: Instant, out: &mut VecDeque<(SocketAddr, Vec<u8>)>,
//!          received: &mut Vec<u8>) -> Option<Outcome> {
//!     loop {
//!         match client.poll(now) {
//!             Output::Transmit { to, bytes, .. } => out.push_back((to, bytes.to_vec())),
//!             Output::Deliver(bytes) => { received.extend_from_slice(bytes); client.delivered(); }
//!             Output::Finish => client.delivered(), // the data is complete (and durable)
//!             Output::Verified => {}
//!             Output::Fill(_) => unreachable!("a downloading client never fills"),
//!             Output::Wait(_deadline) => return None,
//!             Output::Done(outcome) => return Some(outcome),
//!         }
//!     }
//! }
//!
//! drain(&mut client, now, &mut to_server, &mut received);
//! let outcome = loop {
//!     // Deliver the client's datagrams: the first one to the listening socket.
//!     while let Some((to, datagram)) = to_server.pop_front() {
//!         if to == listen {
//!             let request = accept(&datagram, client_addr, &limits).unwrap();
//!             let negotiated = request.negotiate(&limits, Some(file.len() as u64));
//!             server = Some(Transfer::server_read(&request, negotiated.oack, &limits, now));
//!         } else if let Some(s) = server.as_mut() {
//!             s.handle_datagram(now, client_addr, &datagram);
//!         }
//!         // Drain the server, reading the file straight into its DATA packets.
//!         let s = server.as_mut().unwrap();
//!         loop {
//!             match s.poll(now) {
//!                 Output::Transmit { bytes, .. } => to_client.push_back(bytes.to_vec()),
//!                 Output::Fill(buf) => {
//!                     let n = buf.len().min(file.len() - read);
//!                     buf[..n].copy_from_slice(&file[read..read + n]);
//!                     read += n;
//!                     s.filled(n);
//!                 }
//!                 Output::Deliver(_) | Output::Finish => unreachable!("a read server never delivers"),
//!                 Output::Verified => {}
//!                 Output::Wait(_) | Output::Done(_) => break,
//!             }
//!         }
//!     }
//!     while let Some(datagram) = to_client.pop_front() {
//!         client.handle_datagram(now, server_tid, &datagram);
//!         drain(&mut client, now, &mut to_server, &mut received);
//!     }
//!     // The client lingers (dallies) after its final ACK; the data is complete.
//!     if client.is_transfer_complete() {
//!         break Outcome::Completed;
//!     }
//! };
//! assert_eq!(outcome, Outcome::Completed);
//! assert_eq!(received, file);
//! assert_eq!(client.transfer_size(), Some(10_000));
//! assert_eq!(client.stats().options_negotiated.window_size(), 4);
//! ```
#![no_std]
#![forbid(unsafe_code, unused_must_use)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::panic
    )
)]
#![warn(missing_docs)]
#![warn(
    clippy::std_instead_of_core,
    clippy::alloc_instead_of_core,
    clippy::std_instead_of_alloc
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod client;
mod codec;
pub mod failure;
pub mod netascii;
pub mod options;
pub mod packet;
mod receiver;
mod rto;
mod sender;
pub mod server;
pub mod session;
pub mod stats;
pub mod time;
mod transfer;

/// The README's example, run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
