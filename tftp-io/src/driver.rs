//! The one async driving loop (see `tftp_proto::session`): performs the
//! core's outputs on a runtime's socket, timer and the transfer's source or
//! sink, and reports back. No protocol decision is made here.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::{pin, Pin};
use std::task::{Poll, Waker};
use std::time::Duration;

use event_listener::EventListener;
use futures_io::{AsyncRead, AsyncWrite};
use tftp_proto::failure::Failure;
use tftp_proto::options::Limits;
use tftp_proto::session::{Batch, Output, Session};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;

use crate::readahead::{Next, ReadAhead};
use crate::registry::Ticket;
use crate::runtime::{AsyncUdpSocket, Runtime, Timer};
use crate::session::{note_verified, report_delivered, report_filled, Signal};
use crate::udp::{self, Got};

/// Where file bytes come from or go to.
pub(crate) enum Io<'a> {
    Source(Pin<&'a mut (dyn AsyncRead + Send)>),
    /// A server's upload: closed at the end (which commits it).
    Upload(Pin<&'a mut (dyn AsyncWrite + Send)>),
    /// A client's download: flushed at the end (the caller keeps its writer).
    Download(Pin<&'a mut (dyn AsyncWrite + Send)>),
    None,
}

/// A runtime's clock as the core's [`Instant`], from an epoch.
#[derive(Clone, Debug)]
pub(crate) struct Clock<R> {
    runtime: R,
    epoch: std::time::Instant,
}

impl<R: Runtime> Clock<R> {
    pub(crate) fn new(runtime: R) -> Self {
        let epoch = runtime.now();
        Clock { runtime, epoch }
    }

    pub(crate) fn now(&self) -> Instant {
        let elapsed = self.runtime.now().saturating_duration_since(self.epoch);
        Instant::from_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }

    pub(crate) fn to_std(&self, t: Instant) -> std::time::Instant {
        self.epoch + t.since_epoch()
    }

    pub(crate) fn runtime(&self) -> &R {
        &self.runtime
    }
}

enum Event {
    Datagrams(io::Result<()>),
    Timeout,
    Stopped(Stop),
}

/// Why a session is told to stop.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stop {
    /// The server's drain timeout passed.
    Abort,
    /// The session's place went to a newer request.
    Cancel,
}

/// The two signals that stop a session, each watched from one task: the
/// server's abort and the session's cancel. Abort is looked at first, so a
/// flood of datagrams or a ready source cannot hide it; each is reported
/// once.
#[derive(Default)]
pub(crate) struct Stops {
    abort_watch: Watch,
    cancel_watch: Watch,
    aborted: bool,
    cancelled: bool,
}

impl Stops {
    /// The signal raised, if any (`cx` is woken when one is).
    pub(crate) fn poll(
        &mut self,
        abort: Option<&Signal>,
        cancel: Option<&Signal>,
        cx: &mut std::task::Context<'_>,
    ) -> Option<Stop> {
        if let Some(signal) = abort.filter(|_| !self.aborted) {
            if self.abort_watch.poll(signal, cx) {
                self.aborted = true;
                return Some(Stop::Abort);
            }
        }
        if let Some(signal) = cancel.filter(|_| !self.cancelled) {
            if self.cancel_watch.poll(signal, cx) {
                self.cancelled = true;
                return Some(Stop::Cancel);
            }
        }
        None
    }
}

/// Tells `session` to stop: an abort ends it with ERROR 0 "Server shutting
/// down", a cancel silently (the core decides whether it applies).
fn stop<S: Session + ?Sized>(session: &mut S, stop: Stop) {
    match stop {
        Stop::Abort => session.fail(Failure::ShuttingDown),
        Stop::Cancel => session.cancel(),
    }
}

/// Drives `session` until it is done; `abort`, when raised, ends it with
/// ERROR 0 "Server shutting down". A server session's `ticket` hears when
/// its peer is verified, and its cancel signal ends the session silently.
pub(crate) async fn drive<R: Runtime, S: Session + ?Sized>(
    session: &mut S,
    socket: &R::Socket,
    io: &mut Io<'_>,
    clock: &Clock<R>,
    buf: &mut [u8],
    abort: Option<&Signal>,
    mut ticket: Option<&mut Ticket>,
) -> Outcome {
    // One timer for the whole session. It is moved only to an earlier
    // deadline: a later one (every ACK pushes the deadline on) waits until
    // the timer fires early, once per timeout at most, and is re-armed then.
    // `armed` is `None` after the timer fired. And one watch each for
    // `abort` and the cancel signal (registered once, not per wait).
    let mut timer: Option<(R::Timer, Option<Instant>)> = None;
    let mut stops = Stops::default();
    // A second receive slot as large as a small buffer (a read's, or a
    // write's of small blocks): one `recvmmsg` then takes two datagrams and
    // tells when the queue is empty. It only goes faster, so it comes out of
    // the memory budget only while that is at most half used: the room a
    // session gave back when it opened (an unverified read holds no window)
    // stays there for its window.
    let mut spare_len = if udp::MULTI_RECV && buf.len() <= udp::MAX_SPARE_FOR {
        buf.len()
    } else {
        0
    };
    if let Some(t) = ticket.as_deref_mut() {
        if spare_len > 0 && !t.reserve_optional(spare_len) {
            spare_len = 0;
        }
    }
    let mut spare = vec![0u8; spare_len];
    let mut got: Got = [None, None];
    // A datagram received into the spare slot, not handled yet.
    let mut second: Option<(usize, std::net::SocketAddr)> = None;
    let mut read_ahead: Option<ReadAhead> = None;
    session.set_batch(udp::batch_for(session.stats().peer));
    loop {
        let (verified, started) = {
            let stats = session.stats();
            (stats.verified, stats.started)
        };
        match session.poll(clock.now()) {
            Output::Transmit {
                to,
                bytes,
                segment_size,
            } => {
                let mut batched = true;
                let mut send = |fd: BorrowedFd<'_>| {
                    udp::send(fd, to, bytes, segment_size).map(|b| batched = b)
                };
                if let Err(e) = poll_fn(|cx| socket.poll_send_with(cx, &mut send)).await {
                    tracing::debug!(%to, error = %e, "send failed");
                }
                if !batched {
                    session.set_batch(Batch::ONE);
                }
            }
            Output::Fill(out) => {
                if read_ahead.is_none() {
                    read_ahead = ReadAhead::for_session(ticket.as_deref_mut(), out.len());
                }
                // A source that waits (an origin's headers or body, a
                // handler's stream) waits within the session's budget: the
                // abort and cancel signals, and a deadline (see
                // `source_deadline`). One that is ready costs no timer.
                let waited = {
                    let filling = async {
                        match (&mut *io, &mut read_ahead) {
                            (Io::Source(source), Some(ra)) => fill(ra, source.as_mut(), out).await,
                            (Io::Source(source), None) => read_full(source.as_mut(), out).await,
                            _ => Err(io::Error::other("no source")),
                        }
                    };
                    let mut filling = pin!(filling);
                    let mut source_timer: Option<R::Timer> = None;
                    poll_fn(|cx| {
                        if let Poll::Ready(result) = filling.as_mut().poll(cx) {
                            return Poll::Ready(Waited::Done(result));
                        }
                        let cancel = ticket.as_deref().map(Ticket::cancel_signal);
                        if let Some(why) = stops.poll(abort, cancel, cx) {
                            return Poll::Ready(Waited::Stopped(why));
                        }
                        if let Some(t) = ticket.as_deref() {
                            let timer = source_timer.get_or_insert_with(|| {
                                let deadline =
                                    source_deadline(t.limits(), verified, started, clock.now());
                                clock.runtime().timer(clock.to_std(deadline))
                            });
                            if timer.poll_expired(cx).is_ready() {
                                return Poll::Ready(Waited::Expired);
                            }
                        }
                        Poll::Pending
                    })
                    .await
                };
                match waited {
                    Waited::Done(result) => report_filled(session, result),
                    Waited::Stopped(why) => stop(session, why),
                    Waited::Expired if verified => {
                        tracing::warn!("the transfer's source stalled past the session's patience");
                        session.fail(Failure::ReadError);
                    }
                    Waited::Expired => {
                        // Past the unverified lifetime: the core ends it
                        // (timed out, silently); should it not, it is
                        // cancelled, so the loop cannot spin.
                        session.handle_timeout(clock.now());
                        session.cancel();
                    }
                }
            }
            Output::Deliver(bytes) => {
                let result = match io {
                    // Flushed per block, so a write error (disk full) is seen
                    // before the block is acknowledged.
                    Io::Upload(sink) | Io::Download(sink) => write_all(sink.as_mut(), bytes).await,
                    _ => Err(io::Error::other("no sink")),
                };
                report_delivered(session, result);
            }
            Output::Finish => {
                let result = match io {
                    Io::Upload(sink) => poll_fn(|cx| sink.as_mut().poll_close(cx)).await,
                    Io::Download(sink) => poll_fn(|cx| sink.as_mut().poll_flush(cx)).await,
                    _ => Ok(()),
                };
                report_delivered(session, result);
            }
            Output::Verified => {
                if let Some(t) = ticket.as_deref_mut() {
                    note_verified(session, t);
                }
            }
            Output::Wait(deadline) => {
                if let Some((n, from)) = second.take() {
                    let datagram = spare.get(..n).unwrap_or_default();
                    session.handle_datagram(clock.now(), from, datagram);
                    continue;
                }
                let (timer, armed) = match &mut timer {
                    Some(t) => t,
                    slot => slot.insert((
                        clock.runtime().timer(clock.to_std(deadline)),
                        Some(deadline),
                    )),
                };
                if armed.is_none_or(|at| deadline < at) {
                    timer.reset(clock.to_std(deadline));
                    *armed = Some(deadline);
                }
                let event = poll_fn(|cx| {
                    let cancel = ticket.as_deref().map(Ticket::cancel_signal);
                    if let Some(why) = stops.poll(abort, cancel, cx) {
                        return Poll::Ready(Event::Stopped(why));
                    }
                    let mut recv = |fd: BorrowedFd<'_>| udp::recv(fd, buf, &mut spare, &mut got);
                    if let Poll::Ready(r) = socket.poll_recv_drain(cx, &mut recv) {
                        return Poll::Ready(Event::Datagrams(r));
                    }
                    if timer.poll_expired(cx).is_ready() {
                        return Poll::Ready(Event::Timeout);
                    }
                    // Nothing to handle: read what the next blocks need now,
                    // not after the peer's answer.
                    if let (Io::Source(source), Some(ra)) = (&mut *io, &mut read_ahead) {
                        while ra.wants_top_up() {
                            match source.as_mut().poll_read(cx, ra.free()) {
                                Poll::Ready(read) => ra.record(read),
                                Poll::Pending => break,
                            }
                        }
                    }
                    Poll::Pending
                })
                .await;
                match event {
                    Event::Datagrams(Ok(())) => {
                        let now = clock.now();
                        if let Some((n, from)) = got[0] {
                            let datagram = buf.get(..n).unwrap_or_default();
                            session.handle_datagram(now, from, datagram);
                        }
                        // The second waits in its slot until the session has
                        // done what the first asked (a receiver takes one
                        // block at a time).
                        second = got[1];
                        // Nor can it hide the deadline (a spurious timeout is
                        // a no-op in the core).
                        if now >= deadline {
                            session.handle_timeout(now);
                        }
                    }
                    // ICMP errors surface here on some systems: nothing to do.
                    Event::Datagrams(Err(e)) => tracing::trace!(error = %e, "recv failed"),
                    Event::Timeout => {
                        *armed = None;
                        // It may have fired for an earlier deadline.
                        let now = clock.now();
                        if now >= deadline {
                            session.handle_timeout(now);
                        }
                    }
                    Event::Stopped(why) => stop(session, why),
                }
            }
            Output::Done(outcome) => return outcome,
        }
    }
}

/// How a wait bounded by the session's budget ended.
pub(crate) enum Waited<T> {
    /// The awaited work finished.
    Done(T),
    /// The session was told to stop.
    Stopped(Stop),
    /// The deadline passed first.
    Expired,
}

/// Until when a server session may wait for its source (or its handler)
/// before it gives up: an unverified session no longer than its lifetime
/// ([`Limits::unverified_lifetime`] from its start); a verified one as long
/// as it would wait for a silent peer ([`Limits::retries`] timeouts of the
/// longest retransmission timeout, at least a second).
pub(crate) fn source_deadline(
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

/// Runs `work` until it finishes, `abort` or `cancel` is raised, or
/// `deadline` passes.
pub(crate) async fn bounded<R: Runtime, T>(
    work: impl Future<Output = T>,
    clock: &Clock<R>,
    deadline: Instant,
    abort: &Signal,
    cancel: &Signal,
) -> Waited<T> {
    let mut work = pin!(work);
    let mut timer: Option<R::Timer> = None;
    let mut stops = Stops::default();
    poll_fn(|cx| {
        if let Some(why) = stops.poll(Some(abort), Some(cancel), cx) {
            return Poll::Ready(Waited::Stopped(why));
        }
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Waited::Done(done));
        }
        let timer = timer.get_or_insert_with(|| clock.runtime().timer(clock.to_std(deadline)));
        if timer.poll_expired(cx).is_ready() {
            return Poll::Ready(Waited::Expired);
        }
        Poll::Pending
    })
    .await
}

/// Watches a raise-only [`Signal`] (shutdown, abort, a session's cancel)
/// from one task. Its listener is polled, which takes the event's lock to
/// store the task's waker, only when the waker is not the one stored: every
/// other poll is one atomic load. (A signal that is notified without being
/// raised would leave the listener spent: such signals use [`wait_until`].)
#[derive(Default)]
pub(crate) struct Watch {
    listener: Option<EventListener>,
    waker: Option<Waker>,
}

impl Watch {
    /// True once `signal` is raised; otherwise `cx` is woken when it is.
    pub(crate) fn poll(&mut self, signal: &Signal, cx: &mut std::task::Context<'_>) -> bool {
        loop {
            if signal.is_raised() {
                return true;
            }
            if self.listener.is_some()
                && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            {
                return false;
            }
            match &mut self.listener {
                None => self.listener = Some(signal.listen()),
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => (self.listener, self.waker) = (None, None),
                    Poll::Pending => {
                        self.waker = Some(cx.waker().clone());
                        return false;
                    }
                },
            }
        }
    }
}

/// Waits until `done()` holds (re-checked whenever `signal` notifies) or
/// `timer` fires; true if done.
pub(crate) async fn wait_until<T: Timer>(
    signal: &Signal,
    done: impl Fn() -> bool,
    timer: Option<&mut T>,
) -> bool {
    let mut timer = timer;
    let mut listener: Option<EventListener> = None;
    poll_fn(|cx| loop {
        if done() {
            return Poll::Ready(true);
        }
        if let Some(t) = timer.as_deref_mut() {
            if t.poll_expired(cx).is_ready() {
                return Poll::Ready(done());
            }
        }
        match &mut listener {
            None => listener = Some(signal.listen()),
            Some(l) => match Pin::new(l).poll(cx) {
                Poll::Ready(()) => listener = None,
                Poll::Pending => return Poll::Pending,
            },
        }
    })
    .await
}

/// Fills `out` through the read-ahead buffer (see [`ReadAhead`]).
async fn fill(
    ra: &mut ReadAhead,
    mut source: Pin<&mut (dyn AsyncRead + Send)>,
    out: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    loop {
        match ra.next(out, &mut filled)? {
            Next::Done => return Ok(filled),
            Next::Refill => {
                let read = poll_fn(|cx| source.as_mut().poll_read(cx, ra.free())).await;
                ra.record(read);
            }
            Next::Direct => {
                let rest = out.get_mut(filled..).unwrap_or_default();
                let n = read_full(source.as_mut(), rest).await?;
                ra.record_direct(n, rest.len());
                filled += n;
            }
        }
    }
}

/// Reads until `buf` is full or the source ends.
async fn read_full(
    mut source: Pin<&mut (dyn AsyncRead + Send)>,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match poll_fn(|cx| source.as_mut().poll_read(cx, rest)).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes all of `bytes` and flushes.
async fn write_all(
    mut sink: Pin<&mut (dyn AsyncWrite + Send)>,
    mut bytes: &[u8],
) -> io::Result<()> {
    while !bytes.is_empty() {
        match poll_fn(|cx| sink.as_mut().poll_write(cx, bytes)).await {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    poll_fn(|cx| sink.as_mut().poll_flush(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unverified session waits for its source no longer than its
    /// lifetime from its start; a verified one as long as it would wait for
    /// a silent peer (`retries` of the longest timeout, at least a second).
    #[test]
    fn source_deadlines() {
        let limits = Limits::default();
        let started = Instant::from_micros(1_000_000);
        let now = Instant::from_micros(5_000_000);
        assert_eq!(
            source_deadline(&limits, false, started, now),
            started + limits.unverified_lifetime
        );
        assert_eq!(
            source_deadline(&limits, true, started, now),
            now + limits.max_rto * limits.retries
        );
        let impatient = Limits {
            retries: 0,
            ..Limits::default()
        };
        assert_eq!(
            source_deadline(&impatient, true, started, now),
            now + Duration::from_secs(1)
        );
    }
}
