//! The threads executor: performs a [`SessionDriver`]'s steps on a blocking
//! std socket and a `std::io` source or sink, on the session's own thread.

use std::io::{self, Read, Write};
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::Duration;

use tftp_proto::session::Session;
use tftp_proto::stats::Outcome;

use super::{Clock, SessionDriver, Step, Stop, Waited};
use crate::blocking::{Sink, Threads};
use crate::session::Signal;

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

/// Drives `driver` to its end on `socket`; `abort`, when raised, ends the
/// session with ERROR 0 "Server shutting down", and a server session's
/// cancel signal ends it silently (both looked at every [`POLL_STOPS`]).
pub(crate) fn run<S: Session>(
    driver: &mut SessionDriver<'_, S>,
    socket: &UdpSocket,
    io: &mut Io<'_>,
    clock: &Clock<Threads>,
    abort: Option<&Signal>,
) -> io::Result<Outcome> {
    socket.set_nonblocking(false)?;
    let cancel = driver.cancel_signal();
    let (mut abort, mut cancel) = (abort, cancel.as_deref());
    // The receive timeout last set: changed only when it would wait past the
    // deadline or is far shorter than the wait (not once per block).
    let mut timeout_set: Option<Duration> = None;
    loop {
        match driver.next(clock.now()) {
            Step::Send(datagrams) => {
                let sent = datagrams.send(socket.as_fd());
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
                recv,
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
                if timeout_set.is_none_or(|t| t > wait || t < wait / 2) {
                    socket.set_read_timeout(Some(wait))?;
                    timeout_set = Some(wait);
                }
                match socket.recv_from(recv.first) {
                    Ok((n, from)) => {
                        *recv.got = [Some((n, from)), None];
                        driver.received(clock.now());
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        driver.timeout(clock.now());
                    }
                    // ICMP errors and interruptions: wait again.
                    Err(e) => tracing::trace!(error = %e, "recv failed"),
                }
            }
            Step::Again => {}
            Step::Done(outcome) => return Ok(outcome),
        }
    }
}
