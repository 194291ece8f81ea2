//! The threads executor: performs a [`SessionDriver`]'s steps on a blocking
//! std socket and a `std::io` source or sink, on the session's own thread.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use tftp_proto::session::Session;
use tftp_proto::stats::Outcome;

use super::{Clock, Datagrams, Recv, SessionDriver, Step, Stop, Waited};
use crate::blocking::{Sink, Threads};
use crate::demux::Route;
use crate::session::Signal;
use event_listener::Listener as _;

/// How often a blocked thread looks at the stop signals.
pub(crate) const POLL_STOPS: Duration = Duration::from_millis(100);

/// Where file bytes come from or go to.
pub(crate) enum Io<'a> {
    Source(&'a mut (dyn Read + Send)),
    /// A caller's writer: flushed at the end.
    Download(&'a mut (dyn Write + Send)),
    /// A server's upload: completed (committed) at the end.
    Upload(&'a mut dyn Sink),
    None,
}

/// Where a session's datagrams go and come from, on a thread: a blocking
/// transfer socket of its own, or, in single-port mode, the listening
/// socket and the session's route.
pub(crate) enum Link<'a> {
    /// A socket of the session's own, and the receive timeout last set on
    /// it: changed only when it would wait past the deadline or is far
    /// shorter than the wait (not once per block).
    Own(&'a UdpSocket, Option<Duration>),
    /// The listening socket, sending from the address the request came to
    /// (`None`: the socket's own).
    Shared(&'a UdpSocket, &'a Route, Option<IpAddr>),
}

impl<'a> Link<'a> {
    /// A session's own `socket`, made blocking.
    pub(crate) fn own(socket: &'a UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(false)?;
        Ok(Link::Own(socket, None))
    }

    /// A single-port session's link: the blocking listening `socket`,
    /// bound to `bound`.
    pub(crate) fn shared(socket: &'a UdpSocket, bound: SocketAddr, route: &'a Route) -> Self {
        let from = route.local().ip();
        Link::Shared(socket, route, (from != bound.ip()).then_some(from))
    }

    fn send(&self, datagrams: &Datagrams<'_>) -> io::Result<bool> {
        match self {
            Link::Own(socket, _) => datagrams.send(socket.as_fd(), None),
            // Nothing once the route is gone.
            Link::Shared(socket, route, src) => route
                .send_if_live(|| datagrams.send_shared(socket.as_fd(), *src))
                .unwrap_or(Ok(true)),
        }
    }

    /// Sets the socket's receive timeout for a wait of `wait` (a failure
    /// ends the session).
    fn set_wait(&mut self, wait: Duration) -> io::Result<()> {
        if let Link::Own(socket, timeout_set) = self {
            if timeout_set.is_none_or(|t| t > wait || t < wait / 2) {
                socket.set_read_timeout(Some(wait))?;
                *timeout_set = Some(wait);
            }
        }
        Ok(())
    }

    /// Waits up to `wait` (once [`set_wait`](Self::set_wait)) for a
    /// datagram into `recv`: false if none came.
    fn recv(&mut self, recv: &mut Recv<'_>, wait: Duration) -> io::Result<bool> {
        match self {
            Link::Own(socket, _) => match socket.recv_from(recv.first) {
                Ok((n, from)) => {
                    *recv.got = [Some((n, from)), None];
                    Ok(true)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            },
            Link::Shared(_, route, _) => {
                route.cut_to(recv.first.len());
                let deadline = std::time::Instant::now() + wait;
                loop {
                    if route.take(recv.first, recv.second, recv.got) {
                        return Ok(true);
                    }
                    if route.is_gone() {
                        return Ok(false);
                    }
                    let listener = route.listen();
                    if route.take(recv.first, recv.second, recv.got) {
                        return Ok(true);
                    }
                    if route.is_gone() {
                        return Ok(false);
                    }
                    if listener.wait_deadline(deadline).is_none() {
                        return Ok(route.take(recv.first, recv.second, recv.got));
                    }
                }
            }
        }
    }
}

/// Drives `driver` to its end on `link`; `abort`, when raised, ends the
/// session with ERROR 0 "Server shutting down", and a server session's
/// cancel signal ends it silently (both looked at every [`POLL_STOPS`]).
pub(crate) fn run<S: Session>(
    driver: &mut SessionDriver<'_, S>,
    link: &mut Link<'_>,
    io: &mut Io<'_>,
    clock: &Clock<Threads>,
    abort: Option<&Signal>,
) -> io::Result<Outcome> {
    let cancel = driver.cancel_signal();
    let (mut abort, mut cancel) = (abort, cancel.as_deref());
    let mut gone = false;
    loop {
        // Before anything is sent: not a datagram to a peer that moved on.
        if !gone && matches!(link, Link::Shared(_, route, _) if route.is_gone()) {
            gone = true;
            driver.stop(Stop::RouteGone);
        }
        match driver.next(clock.now()) {
            Step::Send(datagrams) => {
                let sent = link.send(&datagrams);
                driver.sent(sent);
            }
            Step::Read { buf, .. } => {
                let read = match io {
                    Io::Source(source) => source.read(buf),
                    _ => Err(io::Error::other("no source")),
                };
                driver.read(clock.now(), Waited::Done(read));
            }
            Step::Write(bytes) => {
                let written = match io {
                    Io::Download(sink) => sink.write(bytes),
                    Io::Upload(sink) => sink.write(bytes),
                    _ => Err(io::Error::other("no sink")),
                };
                driver.written(written);
            }
            Step::Flush => driver.flushed(match io {
                Io::Download(sink) => sink.flush(),
                Io::Upload(sink) => sink.flush(),
                _ => Ok(()),
            }),
            Step::Close => driver.flushed(match io {
                Io::Upload(sink) => sink.complete(),
                Io::Download(sink) => sink.flush(),
                _ => Ok(()),
            }),
            Step::Wait {
                deadline,
                mut recv,
                top_up,
            } => {
                if abort.take_if(|s| s.is_raised()).is_some() {
                    driver.stop(Stop::Abort);
                    continue;
                }
                if cancel.take_if(|s| s.is_raised()).is_some() {
                    driver.stop(Stop::Cancel);
                    continue;
                }

                // Read what the next blocks need now, not after the peer's
                // answer (which waits in the socket meanwhile).
                if let (Some(buf), Io::Source(source)) = (top_up, &mut *io) {
                    let read = source.read(buf);
                    driver.topped_up(read);
                    continue;
                }
                let now = clock.now();
                if deadline <= now {
                    driver.timeout(now);
                    continue;
                }
                let mut wait = deadline - now;
                if abort.is_some() || cancel.is_some() {
                    wait = wait.min(POLL_STOPS);
                }
                let wait = wait.max(Duration::from_micros(1));
                link.set_wait(wait)?;
                match link.recv(&mut recv, wait) {
                    Ok(true) => driver.received(clock.now()),
                    Ok(false) => driver.timeout(clock.now()),
                    // ICMP errors and interruptions: wait again.
                    Err(e) => tracing::trace!(error = %e, "recv failed"),
                }
            }
            Step::Again => {}
            Step::Done(outcome) => return Ok(outcome),
        }
    }
}
