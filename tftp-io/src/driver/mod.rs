//! The one session driver. [`SessionDriver`] is synchronous and does no
//! I/O: it owns a session and everything that runs beside it (the
//! read-ahead buffer, the spare receive slot, the memory lease of a server
//! session, what is half done of a block) and hands out one [`Step`] at a
//! time, from the core's outputs and what its executor reports back. The
//! two executors only perform steps:
//!
//! - [`future`]: on an async [`Runtime`](crate::Runtime)'s socket, timer and
//!   `futures_io` source or sink;
//! - [`threads`]: on a blocking std socket and `std::io` source or sink.
//!
//! No protocol decision is made here (that is the core's); what is decided
//! here, once for both executors, is how I/O results become the core's
//! inputs: a short read, a failed write, a stalled source, a stop.
//!
//! The contract, for an executor:
//!
//! ```text
//! loop {
//!     match driver.next(now) {
//!         Send(datagrams)                  => driver.sent(datagrams.send(fd)),
//!         Read { buf, deadline }           => driver.read(now, read_once(buf) or Expired or Stopped),
//!         Write(bytes)                     => driver.written(write_once(bytes)),
//!         Flush / Close                    => driver.flushed(flush() / close()),
//!         Wait { deadline, recv, top_up }  => one of driver.received(now), driver.timeout(now),
//!                                             driver.stop(why), driver.topped_up(read_once(top_up)),
//!         Again                            => {}
//!         Done(outcome)                    => return outcome,
//!     }
//! }
//! ```

pub(crate) mod future;
pub(crate) mod threads;

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tftp_proto::failure::Failure;
use tftp_proto::options::Limits;
use tftp_proto::session::{Batch, Output, Session};
use tftp_proto::stats::{Outcome, Stats};
use tftp_proto::time::Instant;

use crate::readahead::{Next, ReadAhead};
use crate::registry::Ticket;
use crate::session::{failure, Signal, Stage};
use crate::udp::{self, Got};

/// A source of the time: a runtime's clock (tokio's paused test clock,
/// say), or the system's ([`Wall`]).
pub(crate) trait Now: Clone {
    /// The time now.
    fn now(&self) -> std::time::Instant;
}

impl<R: crate::runtime::Runtime> Now for R {
    fn now(&self) -> std::time::Instant {
        crate::runtime::Runtime::now(self)
    }
}

/// A clock as the core's [`Instant`], from an epoch.
#[derive(Clone, Debug)]
pub(crate) struct Clock<R> {
    time: R,
    epoch: std::time::Instant,
}

impl<R: Now> Clock<R> {
    pub(crate) fn new(time: R) -> Self {
        let epoch = time.now();
        Clock { time, epoch }
    }

    /// The same clock (same epoch) read from `time`: for a session moved
    /// to a thread, whose runtime's clock is the system's.
    pub(crate) fn with_time<T: Now>(&self, time: T) -> Clock<T> {
        Clock {
            time,
            epoch: self.epoch,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        let elapsed = self.time.now().saturating_duration_since(self.epoch);
        Instant::from_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }

    pub(crate) fn to_std(&self, t: Instant) -> std::time::Instant {
        self.epoch + t.since_epoch()
    }

    pub(crate) fn runtime(&self) -> &R {
        &self.time
    }
}

/// What the executor does next (see the [module docs](self)).
#[must_use]
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// Send datagrams. Report with [`SessionDriver::sent`].
    Send(Datagrams<'a>),
    /// Read from the source once into `buf`. A server session waits for it
    /// no later than `deadline` (and stops when told to). Report with
    /// [`SessionDriver::read`].
    Read {
        buf: &'a mut [u8],
        deadline: Option<Instant>,
    },
    /// Write to the sink once. Report with [`SessionDriver::written`].
    Write(&'a [u8]),
    /// Flush the sink. Report with [`SessionDriver::flushed`].
    Flush,
    /// Close the sink of an upload, which commits it. Report with
    /// [`SessionDriver::flushed`].
    Close,
    /// Wait for datagrams (received into `recv`), the `deadline` or a stop;
    /// meanwhile a read into `top_up` may be done, if the executor can do
    /// it without blocking the wait. Report what ended the wait.
    Wait {
        deadline: Instant,
        recv: Recv<'a>,
        top_up: Option<&'a mut [u8]>,
    },
    /// Nothing to perform: ask again.
    Again,
    /// The session is over.
    Done(Outcome),
}

/// What a [`Step::Send`] sends: `bytes` to `to`, one datagram or
/// consecutive ones of `segment_size` bytes in one GSO send.
#[derive(Debug)]
pub(crate) struct Datagrams<'a> {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: &'a [u8],
    pub(crate) segment_size: usize,
}

impl Datagrams<'_> {
    /// Sends them on `fd` (from `src`, when given): true if they went as
    /// one batch.
    pub(crate) fn send(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        src: Option<std::net::IpAddr>,
    ) -> io::Result<bool> {
        udp::send(fd, self.to, self.bytes, self.segment_size, src)
    }

    /// Sends them on a socket several sessions share (single-port mode),
    /// like [`send`](Self::send) but never waiting: a send that would block
    /// is a loss (the session retransmits as after any), and a source
    /// address the kernel refuses is left to the kernel to choose.
    pub(crate) fn send_shared(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        src: Option<std::net::IpAddr>,
    ) -> io::Result<bool> {
        match self.send(fd, src) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) if src.is_some() => {
                tracing::debug!(error = %e, "send from the request's address failed");
                self.send_shared(fd, None)
            }
            sent => sent,
        }
    }
}

/// Where a [`Step::Wait`]'s datagrams go: `first`, and `second` when it is
/// not empty (one `recvmmsg` takes both); `got` says what came.
#[derive(Debug)]
pub(crate) struct Recv<'a> {
    pub(crate) first: &'a mut [u8],
    pub(crate) second: &'a mut [u8],
    pub(crate) got: &'a mut Got,
}

/// Why a session is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server's drain timeout passed.
    Abort,
    /// The session's place went to a newer request.
    Cancel,
    /// A single-port session's route is gone: its peer sent a new request
    /// from the same address and port (the new session has the route), or
    /// the server's accept loops ended.
    RouteGone,
}

/// How a wait bounded by the session's budget ended.
#[derive(Debug)]
pub(crate) enum Waited<T> {
    /// The awaited work finished.
    Done(T),
    /// The session was told to stop.
    Stopped(Stop),
    /// The deadline passed first.
    Expired,
}

/// Where the session's file bytes come from or go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Data {
    /// A source (a read request's response, a client's upload), with its
    /// size when known.
    Source(Option<u64>),
    /// A server's upload: closed at the end, which commits it.
    Upload,
    /// A client's download: flushed at the end (the caller keeps it).
    Download,
    /// Nothing (a refused request).
    None,
}

/// What the executor can do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Executor {
    /// It can read the source while it waits without blocking the wait
    /// (an async source, or a blocking one of known size).
    pub(crate) top_up: bool,
    /// It receives with one `recvmmsg` into two slots.
    pub(crate) two_slots: bool,
    /// Its smallest read-ahead: [`MIN_READ_AHEAD`](crate::MIN_READ_AHEAD)
    /// where many sessions share a thread,
    /// [`MIN_READ_AHEAD_ON_THREAD`](crate::MIN_READ_AHEAD_ON_THREAD) where
    /// each has one.
    pub(crate) min_read_ahead: usize,
}

/// A result to hand to the session before it is polled again.
#[derive(Debug, Default)]
enum Report {
    #[default]
    None,
    /// The block of the last `Fill` has this many bytes.
    Filled(usize),
    /// The last `Deliver` or `Finish` is done.
    Delivered,
    /// The source or sink failed.
    Failed(Stage, io::Error),
    /// The session's peer was just verified.
    Verified,
}

/// The I/O of a step in progress, to tell what its result belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Into the read-ahead buffer.
    Refill,
    /// Straight into the block.
    Direct,
}

/// A session and everything that runs beside it, without I/O.
pub(crate) struct SessionDriver<'t, S> {
    session: S,
    data: Data,
    executor: Executor,
    /// A server session's place: memory lease, verification, cancel.
    ticket: Option<&'t mut Ticket>,
    started: Instant,
    first: Vec<u8>,
    second: Vec<u8>,
    got: Got,
    /// A datagram received into `second`, not handled yet.
    queued: Option<(usize, SocketAddr)>,
    /// Hand `queued` to the session: it asked to wait.
    take_queued: bool,
    /// The last wait's deadline.
    deadline: Option<Instant>,
    read_ahead: ReadAhead,
    /// Whether `read_ahead` has its size (decided at the first block after
    /// verification).
    sized: bool,
    reading: Reading,
    /// Bytes of the current block filled so far.
    filled: usize,
    /// Bytes of the current delivery written so far.
    written: usize,
    report: Report,
}

impl<'t, S: Session> SessionDriver<'t, S> {
    /// A driver for `session`. A server session's buffers beyond the
    /// session's own come out of `ticket`'s memory lease, and only while
    /// the budget is plentiful.
    pub(crate) fn new(
        mut session: S,
        data: Data,
        mut ticket: Option<&'t mut Ticket>,
        executor: Executor,
    ) -> Self {
        session.set_batch(udp::batch_for(session.stats().peer));
        let max_datagram = session.max_datagram();
        // A second receive slot as large as a small buffer (a read's, or a
        // write's of small blocks): one `recvmmsg` then takes two datagrams
        // and tells when the queue is empty. It only goes faster, so it
        // comes out of the memory budget only while that is at most half
        // used.
        let mut spare =
            if executor.two_slots && udp::MULTI_RECV && max_datagram <= udp::MAX_SPARE_FOR {
                max_datagram
            } else {
                0
            };
        if let Some(t) = ticket.as_deref_mut() {
            if spare > 0 && !t.reserve_optional(spare) {
                spare = 0;
            }
        }
        let started = session.stats().started;
        SessionDriver {
            session,
            data,
            executor,
            ticket,
            started,
            first: vec![0; max_datagram],
            second: vec![0; spare],
            got: [None, None],
            queued: None,
            take_queued: false,
            deadline: None,
            read_ahead: ReadAhead::none(),
            sized: false,
            reading: Reading::Direct,
            filled: 0,
            written: 0,
            report: Report::None,
        }
    }

    /// The session's statistics.
    pub(crate) fn stats(&self) -> &Stats {
        self.session.stats()
    }

    /// The signal that cancels a server session, to watch while it waits.
    pub(crate) fn cancel_signal(&self) -> Option<Arc<Signal>> {
        self.ticket.as_deref().map(Ticket::cancel_handle)
    }

    /// The next step (see the [module docs](self)).
    pub(crate) fn next(&mut self, now: Instant) -> Step<'_> {
        match mem::take(&mut self.report) {
            Report::None => {}
            Report::Filled(n) => self.session.filled(n),
            Report::Delivered => self.session.delivered(),
            Report::Failed(stage, e) => {
                tracing::warn!(error = %e, ?stage, "transfer I/O failed");
                self.session.fail(failure(stage, &e));
            }
            Report::Verified => self.note_verified(),
        }
        if mem::take(&mut self.take_queued) {
            if let Some((n, from)) = self.queued.take() {
                let datagram = self.second.get(..n).unwrap_or_default();
                self.session.handle_datagram(now, from, datagram);
            }
        }
        let verified = self.session.stats().verified;
        // The read-ahead is sized once the options are settled: for a
        // server, once its peer is verified (the first blocks of an
        // unverified one are read one by one: a spoofed request gets no
        // extra memory); for a client's upload, once the server answered.
        if !self.sized && self.settled() {
            self.sized = true;
            if let Data::Source(size) = self.data {
                let block = self.session.stats().options_negotiated;
                let window = usize::from(block.windowsize.unwrap_or(1));
                let block = usize::from(block.blksize.unwrap_or(512));
                self.read_ahead.resize(ReadAhead::size_for(
                    block,
                    window,
                    self.executor.min_read_ahead,
                    size,
                    self.ticket.as_deref_mut(),
                ));
            }
        }
        match self.session.poll(now) {
            Output::Transmit {
                to,
                bytes,
                segment_size,
            } => Step::Send(Datagrams {
                to,
                bytes,
                segment_size,
            }),
            Output::Fill(out) => match self.read_ahead.next(out, &mut self.filled) {
                Ok(Next::Done) => {
                    self.report = Report::Filled(mem::take(&mut self.filled));
                    Step::Again
                }
                Ok(Next::Refill) => {
                    self.reading = Reading::Refill;
                    Step::Read {
                        buf: self.read_ahead.free(),
                        deadline: source_deadline(
                            self.ticket.as_deref(),
                            verified,
                            self.started,
                            now,
                        ),
                    }
                }
                Ok(Next::Direct) => {
                    self.reading = Reading::Direct;
                    Step::Read {
                        buf: out.get_mut(self.filled..).unwrap_or_default(),
                        deadline: source_deadline(
                            self.ticket.as_deref(),
                            verified,
                            self.started,
                            now,
                        ),
                    }
                }
                Err(e) => {
                    self.filled = 0;
                    self.report = Report::Failed(Stage::Source, e);
                    Step::Again
                }
            },
            Output::Deliver(bytes) => match bytes.get(self.written..) {
                Some(rest) if !rest.is_empty() => Step::Write(rest),
                // Flushed per block, so a write error (disk full) is seen
                // before the block is acknowledged.
                _ => Step::Flush,
            },
            Output::Finish => match self.data {
                Data::Upload => Step::Close,
                Data::Download => Step::Flush,
                Data::Source(_) | Data::None => {
                    self.report = Report::Delivered;
                    Step::Again
                }
            },
            Output::Wait(deadline) => {
                if self.queued.is_some() {
                    // The second datagram waited in its slot until the
                    // session had done what the first asked.
                    self.take_queued = true;
                    return Step::Again;
                }
                self.deadline = Some(deadline);
                let top_up = self.executor.top_up
                    && matches!(self.data, Data::Source(_))
                    && self.read_ahead.wants_top_up();
                Step::Wait {
                    deadline,
                    recv: Recv {
                        first: &mut self.first,
                        second: &mut self.second,
                        got: &mut self.got,
                    },
                    top_up: top_up.then(|| self.read_ahead.free()),
                }
            }
            Output::Verified => {
                self.report = Report::Verified;
                Step::Again
            }
            Output::Done(outcome) => Step::Done(outcome),
        }
    }

    /// Whether the transfer's options are settled (see [`Self::next`]).
    fn settled(&self) -> bool {
        match self.ticket.as_deref() {
            Some(t) => t.is_verified(),
            None => self.session.stats().packets_received > 0,
        }
    }

    /// The result of a [`Step::Send`]: `Ok(false)` if the datagrams could
    /// not go as one batch (the session then sends one at a time).
    pub(crate) fn sent(&mut self, result: io::Result<bool>) {
        match result {
            Ok(true) => {}
            Ok(false) => self.session.set_batch(Batch::ONE),
            Err(e) => tracing::debug!(error = %e, "send failed"),
        }
    }

    /// How a [`Step::Read`] ended.
    pub(crate) fn read(&mut self, now: Instant, waited: Waited<io::Result<usize>>) {
        match waited {
            Waited::Done(result) => match (self.reading, result) {
                (Reading::Refill, result) => self.read_ahead.record(result),
                (Reading::Direct, Ok(0)) => self.read_ahead.ended(),
                (Reading::Direct, Ok(n)) => self.filled = self.filled.saturating_add(n),
                (Reading::Direct, Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                (Reading::Direct, Err(e)) => {
                    self.filled = 0;
                    self.report = Report::Failed(Stage::Source, e);
                }
            },
            Waited::Stopped(why) => self.stop(why),
            Waited::Expired if self.session.stats().verified => {
                tracing::warn!("the transfer's source stalled past the session's patience");
                self.session.fail(Failure::ReadError);
            }
            Waited::Expired => {
                // Past the unverified lifetime: the core ends it (timed
                // out, silently); should it not, it is cancelled, so the
                // loop cannot spin.
                self.session.handle_timeout(now);
                self.session.cancel();
            }
        }
    }

    /// The result of a [`Step::Write`].
    pub(crate) fn written(&mut self, result: io::Result<usize>) {
        match result {
            Ok(0) => self.sink_failed(io::ErrorKind::WriteZero.into()),
            Ok(n) => self.written = self.written.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.sink_failed(e),
        }
    }

    /// The result of a [`Step::Flush`] or [`Step::Close`].
    pub(crate) fn flushed(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {
                self.written = 0;
                self.report = Report::Delivered;
            }
            Err(e) => self.sink_failed(e),
        }
    }

    fn sink_failed(&mut self, e: io::Error) {
        self.written = 0;
        self.report = Report::Failed(Stage::Sink, e);
    }

    /// A [`Step::Wait`] received datagrams (`recv.got` says which).
    pub(crate) fn received(&mut self, now: Instant) {
        let got = mem::take(&mut self.got);
        if let Some((n, from)) = got[0] {
            let datagram = self.first.get(..n).unwrap_or_default();
            self.session.handle_datagram(now, from, datagram);
        }
        // The second waits in its slot until the session has done what the
        // first asked (a receiver takes one block at a time).
        self.queued = got[1];
        // Nor can datagrams hide the deadline (a spurious timeout is a
        // no-op in the core).
        if self.deadline.is_some_and(|d| now >= d) {
            self.session.handle_timeout(now);
        }
    }

    /// A [`Step::Wait`]'s deadline passed (or may have: a timeout before
    /// the session's deadline is a no-op).
    pub(crate) fn timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }

    /// The read a [`Step::Wait`] allowed into its `top_up` buffer.
    pub(crate) fn topped_up(&mut self, result: io::Result<usize>) {
        self.read_ahead.record(result);
    }

    /// The session is told to stop: an abort ends it with ERROR 0 "Server
    /// shutting down", a cancel silently (the core decides whether it
    /// applies).
    pub(crate) fn stop(&mut self, why: Stop) {
        match why {
            Stop::Abort => self.session.fail(Failure::ShuttingDown),
            Stop::Cancel => self.session.cancel(),
            Stop::RouteGone => self.session.abandon(),
        }
    }

    /// Tells the ticket that the session's peer is verified (the core's
    /// [`Output::Verified`]). A session whose window no longer
    /// fits the memory budget then is refused with ERROR 0 "busy".
    fn note_verified(&mut self) {
        let Some(ticket) = self.ticket.as_deref_mut() else {
            return;
        };
        if self.session.stats().verified
            && !ticket.is_verified()
            && !ticket.verified(self.session.memory())
        {
            tracing::warn!("session memory budget exhausted");
            self.session.fail(Failure::Busy);
        }
    }
}

/// Until when a server session may wait for its source (or its handler)
/// before it gives up (`None` for a client's, which waits for its caller):
/// see [`deadline_for`].
fn source_deadline(
    ticket: Option<&Ticket>,
    verified: bool,
    started: Instant,
    now: Instant,
) -> Option<Instant> {
    ticket.map(|t| deadline_for(t.limits(), verified, started, now))
}

/// Until when a server session may wait for its source (or its handler)
/// before it gives up: an unverified session no longer than its lifetime
/// ([`Limits::unverified_lifetime`] from its start); a verified one as long
/// as it would wait for a silent peer ([`Limits::retries`] timeouts of the
/// longest retransmission timeout, at least a second).
pub(crate) fn deadline_for(
    limits: &Limits,
    verified: bool,
    started: Instant,
    now: Instant,
) -> Instant {
    if verified {
        let patience = limits
            .max_rto
            .saturating_mul(limits.retries)
            .max(Duration::from_secs(1));
        now + patience
    } else {
        started + limits.unverified_lifetime
    }
}

#[cfg(test)]
mod tests;
