//! The driving contract of the one session type, [`Transfer`], in its four
//! roles (server read and write, client download and upload).
//!
//! # The driving loop
//!
//! A session is a pure state machine. The adapter drains [`Session::poll`]
//! until it returns [`Output::Wait`] or [`Output::Done`], performing each
//! output, then waits for a datagram or the deadline and reports it with
//! [`Session::handle_datagram`] or [`Session::handle_timeout`]:
//!
//! ```
//! # use tftp_proto::session::{Output, Session};
//! # use tftp_proto::time::Instant;
//! # use tftp_proto::stats::Outcome;
//! # trait Io { fn now(&self) -> Instant; fn send(&mut self, to: std::net::SocketAddr, b: &[u8]);
//! #   fn read_full(&mut self, b: &mut [u8]) -> usize; fn write_all(&mut self, b: &[u8]); fn flush(&mut self);
//! #   fn recv_until(&mut self, t: Instant) -> Option<(std::net::SocketAddr, Vec<u8>)>; }
//! fn drive(session: &mut impl Session, io: &mut impl Io) -> Outcome {
//!     loop {
//!         let now = io.now();
//!         match session.poll(now) {
//!             Output::Transmit { to, bytes, .. } => io.send(to, bytes),
//!             Output::Fill(buf) => {
//!                 let n = io.read_full(buf); // fewer than buf.len() bytes = end of file
//!                 session.filled(n);
//!             }
//!             Output::Deliver(bytes) => {
//!                 io.write_all(bytes);
//!                 session.delivered();
//!             }
//!             Output::Finish => {
//!                 io.flush(); // make the received file durable first
//!                 session.delivered();
//!             }
//!             Output::Verified => {} // a server's peer answered: it is real
//!             Output::Wait(deadline) => match io.recv_until(deadline) {
//!                 Some((from, datagram)) => session.handle_datagram(io.now(), from, &datagram),
//!                 None => session.handle_timeout(io.now()),
//!             },
//!             Output::Done(outcome) => return outcome,
//!         }
//!     }
//! }
//! ```
//!
//! Rules: `Fill` must be answered with [`Session::filled`] (or
//! [`Session::abort`] if the source failed), `Deliver` and `Finish` with
//! [`Session::delivered`] before the next `poll`; a timeout reported before
//! the deadline is a no-op; after `Done` every call is a no-op and `poll`
//! keeps returning `Done`. An I/O failure on the adapter's side (source read
//! error, disk full, shutdown) is reported with [`Session::fail`] (or
//! [`Session::abort`] with a code and text of the application's own), which
//! sends the peer an ERROR.
//!
//! No call allocates: buffers (the window, one block, one control packet) are
//! allocated when the session is created and reused.

use core::net::SocketAddr;

pub use crate::failure::Failure;
use crate::packet::ErrorCode;
pub use crate::sender::Batch;
use crate::stats::{Outcome, Stats};
use crate::time::Instant;
pub use crate::transfer::Transfer;

/// What the adapter must do next.
#[must_use]
#[derive(Debug)]
pub enum Output<'a> {
    /// Send `bytes` to `to`.
    Transmit {
        /// Destination: the peer, or a stranger getting ERROR 5.
        to: SocketAddr,
        /// The datagram; or, once [`Session::set_batch`] allowed more than
        /// one, consecutive datagrams of `segment_size` bytes each (the last
        /// may be shorter), for one UDP GSO send.
        bytes: &'a [u8],
        /// Length of each datagram in `bytes`: `bytes.len()` for one.
        segment_size: usize,
    },
    /// Sender only: fill this buffer from the source (as full as the source
    /// allows: fewer bytes mean end of file), then call [`Session::filled`].
    /// In octet mode it is the payload area of the next DATA packet itself.
    Fill(&'a mut [u8]),
    /// Receiver only: write these bytes to the sink, then call
    /// [`Session::delivered`].
    Deliver(&'a [u8]),
    /// Receiver only: every byte has been delivered. Make the sink durable
    /// (flush, close, rename into place) and call [`Session::delivered`], or
    /// [`Session::abort`] if that failed: the final ACK goes out only then,
    /// so a peer never hears "done" for data that did not make it.
    Finish,
    /// A server session's peer has just proved itself (it answered from the
    /// request's address and port): returned once, before anything else,
    /// by the first `poll` after the datagram that verified it. Client
    /// sessions never return it (their server is verified from the start).
    /// [`Stats::verified`] says the same for later reading.
    Verified,
    /// Nothing to do until a datagram arrives or this deadline passes.
    Wait(Instant),
    /// The session is over; [`Session::stats`] has the details.
    Done(Outcome),
}

/// The interface every session type implements; see the [module
/// docs](self) for the driving loop.
pub trait Session {
    /// The next thing to do.
    fn poll(&mut self, now: Instant) -> Output<'_>;
    /// A datagram arrived on the session's socket from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    /// The deadline of the last [`Output::Wait`] passed.
    fn handle_timeout(&mut self, now: Instant);
    /// `n` bytes were put into the last [`Output::Fill`] buffer.
    fn filled(&mut self, n: usize);
    /// The last [`Output::Deliver`] bytes were written, or, after
    /// [`Output::Finish`], the received data is durable.
    fn delivered(&mut self);
    /// Ends the session with an ERROR to the peer: a code and text the
    /// application chose. A session already closing or done is left alone;
    /// one whose transfer is complete (a receiver dallying after its final
    /// ACK) ends [`Outcome::Completed`]
    /// without a word.
    fn abort(&mut self, code: ErrorCode, message: &str);
    /// Ends the session with the ERROR of a local failure (its code and text
    /// from the core's table, [`Failure::code`] and [`Failure::message`]),
    /// like [`Session::abort`].
    fn fail(&mut self, failure: Failure);
    /// Ends an unverified session at once without a word to the peer
    /// (outcome [`Outcome::Evicted`]): for one whose place in the server's
    /// table went to a newer request; an ERROR would only be one more
    /// datagram to a possibly spoofed address. A session whose peer was
    /// verified in the meantime, or that is already closing, is left alone.
    fn cancel(&mut self);
    /// Ends the session at once without a word to the peer, verified or
    /// not, dropping even an ERROR it was closing with: for a single-port
    /// server's session whose peer sent a new request from the same address
    /// and port, so that the peer's new transfer hears nothing from the old
    /// one. The outcome is [`Outcome::Evicted`], or the one it was closing
    /// with, or [`Outcome::Completed`] when it was only dallying after its
    /// final ACK. A session already done is left alone.
    fn abandon(&mut self);
    /// Lets one [`Output::Transmit`] carry up to `batch.segments` DATA
    /// packets (consecutive blocks of a window, each `segment_size` long
    /// but the last) for an adapter that sends them with one syscall (UDP
    /// GSO). The default is one packet per transmission; control packets
    /// (OACK, ACK, ERROR) always go alone.
    fn set_batch(&mut self, batch: Batch);
    /// The largest datagram the session expects from its peer: size the
    /// receive buffer with it (one byte more reveals an oversized DATA).
    fn max_datagram(&self) -> usize;
    /// Bytes of the buffers the session holds now (window slots, netascii
    /// staging, control packet, and the adapter's receive buffer of
    /// [`Session::max_datagram`]), for a server-wide memory budget.
    fn memory(&self) -> usize;
    /// Statistics so far (final once `Done`).
    fn stats(&self) -> &Stats;
    /// True once all data has been transferred and acknowledged, even if the
    /// session still lingers to re-acknowledge a retransmitted last block.
    fn is_transfer_complete(&self) -> bool;
}
