//! # tftp-proto: the sans-IO TFTP core
//!
//! Pure, deterministic building blocks of TFTP (RFC 1350, with the option
//! extensions of RFC 2347, 2348, 2349 and 7440) that never touch a socket, a
//! clock, a file or an async runtime. The adapters (`tftp-tokio`, `tftp-smol`,
//! `tftp-blocking`) move bytes between the network, files and this crate; every
//! protocol decision is made here.
//!
//! - [`packet`]: zero-copy [`Packet`](packet::Packet) parsing and encoders that
//!   write into the caller's buffer.
//! - [`options`]: typed options, the local [`Limits`](options::Limits) and the
//!   negotiation rules for servers ([`negotiate`](options::negotiate)) and
//!   clients ([`validate_oack`](options::validate_oack)).
//! - [`netascii`]: streaming encoder and decoder that keep state across blocks.
//!
//! The crate is `#![no_std]` with `alloc`; the default `std` feature only adds
//! `std::error::Error` impls. It contains no `unsafe` code.
//!
//! # Panic policy
//!
//! Bytes from the network never cause a panic: every parse failure is a named
//! [`ParseError`](packet::ParseError). A panic is a bug.
//!
//! # Example
//!
//! ```
//! use tftp_proto::options::{negotiate, Direction, Limits, RequestedOptions};
//! use tftp_proto::packet::{encode_oack, Packet};
//!
//! let datagram = b"\x00\x01pxelinux.0\x00octet\x00blksize\x001432\x00tsize\x000\x00";
//! let Ok(Packet::Rrq(request)) = Packet::parse(datagram) else { panic!() };
//! assert_eq!(request.filename, b"pxelinux.0");
//!
//! let asked = RequestedOptions::from_raw(request.options);
//! let answer = negotiate(&asked, &Limits::default(), Direction::Read, Some(26_140));
//! let mut buf = [0u8; 64];
//! let len = encode_oack(&mut buf, &answer.oack).unwrap();
//! assert_eq!(&buf[..len], b"\x00\x06blksize\x001432\x00tsize\x0026140\x00");
//! ```
#![no_std]
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs)]

// Used by the tests and the `fuzzing` module; the sessions will use it too.
#[allow(unused_extern_crates)]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod codec;
pub mod netascii;
pub mod options;
pub mod packet;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
