//! The async executor: performs a [`SessionDriver`]'s steps on a
//! [`Runtime`]'s socket and timer and a `futures_io` source or sink, and
//! the waits of a session's start (its handler) within the same budget.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use event_listener::EventListener;
use futures_io::{AsyncRead, AsyncWrite};
use tftp_proto::session::Session;
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;

use super::{Clock, Datagrams, Executor, Recv, SessionDriver, Step, Stop, Waited};
use crate::demux::Route;
use crate::runtime::{AsyncUdpSocket, Runtime, Timer};
use crate::session::Signal;
use crate::udp;

/// Where file bytes come from or go to.
pub(crate) enum Io<'a> {
    Source(Pin<&'a mut (dyn AsyncRead + Send)>),
    /// A server's upload: closed at the end (which commits it).
    Upload(Pin<&'a mut (dyn AsyncWrite + Send)>),
    /// A client's download: flushed at the end (the caller keeps its writer).
    Download(Pin<&'a mut (dyn AsyncWrite + Send)>),
    None,
}

/// What ended a wait.
enum Event {
    Datagrams(io::Result<()>),
    Timeout,
    ToppedUp(io::Result<usize>),
    Stopped(Stop),
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

/// What the async executor can do: read a source while it waits (a
/// pending read does not block the wait), and receive two datagrams at once.
pub(crate) const ASYNC: Executor = Executor {
    top_up: true,
    two_slots: true,
    min_read_ahead: crate::MIN_READ_AHEAD,
};

/// Where a session's datagrams go and come from: a transfer socket of its
/// own, or, in single-port mode, the listening socket and the session's
/// route of the accept loop's [`Demux`](crate::demux::Demux).
pub(crate) enum Link<'a, S> {
    /// A socket of the session's own.
    Own(&'a S),
    /// The listening socket, sending from the address the request came to.
    Shared {
        socket: &'a S,
        route: &'a Route,
        /// The source address to set (none: the socket's own).
        src: Option<IpAddr>,
        listener: Option<EventListener>,
    },
}

impl<'a, S: AsyncUdpSocket> Link<'a, S> {
    /// A single-port session's link: `socket` bound to `bound`.
    pub(crate) fn shared(socket: &'a S, bound: SocketAddr, route: &'a Route) -> Self {
        let from = route.local().ip();
        Link::Shared {
            socket,
            route,
            src: (from != bound.ip()).then_some(from),
            listener: None,
        }
    }

    /// Sends `datagrams`: true if they went as one batch.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        datagrams: &Datagrams<'_>,
    ) -> Poll<io::Result<bool>> {
        let mut batched = true;
        match self {
            Link::Own(socket) => {
                let mut send = |fd: BorrowedFd<'_>| datagrams.send(fd, None).map(|b| batched = b);
                socket.poll_send_with(cx, &mut send)
            }
            // Many tasks send on the listening socket, and a runtime wakes
            // only the last one to wait for its writability: never a wait
            // (see `Datagrams::send_shared`), and nothing once the route is
            // gone.
            Link::Shared {
                socket, src, route, ..
            } => {
                let mut send =
                    |fd: BorrowedFd<'_>| datagrams.send_shared(fd, *src).map(|b| batched = b);
                let sent = route.send_if_live(|| socket.try_send_with(&mut send));
                Poll::Ready(sent.unwrap_or(Ok(())))
            }
        }
        .map(|sent| sent.map(|()| batched))
    }

    /// A single-port session whose route is gone (see [`Route::is_gone`]).
    fn is_gone(&self) -> bool {
        matches!(self, Link::Shared { route, .. } if route.is_gone())
    }

    /// Receives into `recv`'s slots (ready without datagrams once
    /// [`is_gone`](Self::is_gone)).
    fn poll_recv(&mut self, cx: &mut Context<'_>, recv: &mut Recv<'_>) -> Poll<io::Result<()>> {
        match self {
            Link::Own(socket) => {
                let mut receive =
                    |fd: BorrowedFd<'_>| udp::recv(fd, recv.first, recv.second, recv.got);
                socket.poll_recv_drain(cx, &mut receive)
            }
            Link::Shared {
                route, listener, ..
            } => {
                route.cut_to(recv.first.len());
                route
                    .poll_take(cx, listener, recv.first, recv.second, recv.got)
                    .map(Ok)
            }
        }
    }
}

/// Drives `driver` to its end on `link`, with `io` the transfer's
/// source or sink; `abort`, when raised, ends the session with ERROR 0
/// "Server shutting down", and a server session's cancel signal ends it
/// silently.
pub(crate) async fn run<R: Runtime, S: Session>(
    driver: &mut SessionDriver<'_, S>,
    link: &mut Link<'_, R::Socket>,
    io: &mut Io<'_>,
    clock: &Clock<R>,
    abort: Option<&Signal>,
) -> Outcome {
    let cancel = driver.cancel_signal();
    // One timer for the whole session. It is moved only to an earlier
    // deadline: a later one (every ACK pushes the deadline on) waits until
    // the timer fires early, once per timeout at most, and is re-armed then.
    // `armed` is `None` after the timer fired.
    let mut timer: Option<(R::Timer, Option<Instant>)> = None;
    let mut stops = Stops::default();
    let mut gone = false;
    loop {
        // Before anything is sent: not a datagram to a peer that moved on.
        if !gone && link.is_gone() {
            gone = true;
            driver.stop(Stop::RouteGone);
        }
        match driver.next(clock.now()) {
            Step::Send(datagrams) => {
                let sent = poll_fn(|cx| link.poll_send(cx, &datagrams)).await;
                driver.sent(sent);
            }
            Step::Read { buf, deadline } => {
                // A source that waits (an origin's headers or body, a
                // handler's stream) waits within the session's budget; one
                // that is ready costs no timer.
                let mut source_timer: Option<R::Timer> = None;
                let waited = poll_fn(|cx| {
                    let Io::Source(source) = &mut *io else {
                        return Poll::Ready(Waited::Done(Err(io::Error::other("no source"))));
                    };
                    if let Poll::Ready(read) = source.as_mut().poll_read(cx, buf) {
                        return Poll::Ready(Waited::Done(read));
                    }
                    if let Some(why) = stops.poll(abort, cancel.as_deref(), cx) {
                        return Poll::Ready(Waited::Stopped(why));
                    }
                    if let Some(deadline) = deadline {
                        let timer = source_timer
                            .get_or_insert_with(|| clock.runtime().timer(clock.to_std(deadline)));
                        if timer.poll_expired(cx).is_ready() {
                            return Poll::Ready(Waited::Expired);
                        }
                    }
                    Poll::Pending
                })
                .await;
                driver.read(clock.now(), waited);
            }
            Step::Write(bytes) => {
                let written = match io {
                    Io::Upload(sink) | Io::Download(sink) => {
                        poll_fn(|cx| sink.as_mut().poll_write(cx, bytes)).await
                    }
                    _ => Err(io::Error::other("no sink")),
                };
                driver.written(written);
            }
            Step::Flush => {
                let flushed = match io {
                    Io::Upload(sink) | Io::Download(sink) => {
                        poll_fn(|cx| sink.as_mut().poll_flush(cx)).await
                    }
                    _ => Ok(()),
                };
                driver.flushed(flushed);
            }
            Step::Close => {
                let closed = match io {
                    Io::Upload(sink) | Io::Download(sink) => {
                        poll_fn(|cx| sink.as_mut().poll_close(cx)).await
                    }
                    _ => Ok(()),
                };
                driver.flushed(closed);
            }
            Step::Wait {
                deadline,
                mut recv,
                mut top_up,
            } => {
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
                    if let Some(why) = stops.poll(abort, cancel.as_deref(), cx) {
                        return Poll::Ready(Event::Stopped(why));
                    }
                    if let Poll::Ready(r) = link.poll_recv(cx, &mut recv) {
                        return Poll::Ready(Event::Datagrams(r));
                    }
                    if timer.poll_expired(cx).is_ready() {
                        return Poll::Ready(Event::Timeout);
                    }
                    // Nothing to handle: read what the next blocks need
                    // now, not after the peer's answer.
                    if let (Some(buf), Io::Source(source)) = (top_up.as_deref_mut(), &mut *io) {
                        if let Poll::Ready(read) = source.as_mut().poll_read(cx, buf) {
                            return Poll::Ready(Event::ToppedUp(read));
                        }
                    }
                    Poll::Pending
                })
                .await;
                match event {
                    Event::Datagrams(Ok(())) => driver.received(clock.now()),
                    // ICMP errors surface here on some systems: nothing to do.
                    Event::Datagrams(Err(e)) => tracing::trace!(error = %e, "recv failed"),
                    Event::Timeout => {
                        *armed = None;
                        driver.timeout(clock.now());
                    }
                    Event::ToppedUp(read) => driver.topped_up(read),
                    Event::Stopped(why) => driver.stop(why),
                }
            }
            Step::Again => {}
            Step::Done(outcome) => return outcome,
        }
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
