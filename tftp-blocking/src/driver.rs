//! The one driving loop on a blocking socket: socket read timeouts come from
//! the core's deadlines. No protocol decision is made here.

use std::io::{self, Read, Write};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tftp_proto::packet::ErrorCode;
use tftp_proto::session::{Output, Session};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;

/// Where file bytes come from or go to.
pub(crate) enum Io<'a> {
    Source(&'a mut (dyn Read + Send)),
    /// A caller's writer: flushed at the end.
    Sink(&'a mut (dyn Write + Send)),
    /// A server's upload: completed (committed) at the end.
    Upload(&'a mut dyn crate::handler::Sink),
    None,
}

/// The adapter's clock: `std::time::Instant` from an epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(std::time::Instant::now())
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as u64)
    }
}

/// How often a waiting session looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Drives `session` until it is done (or, with `until_complete`, until all
/// data is transferred); returns its outcome if it is done.
pub(crate) fn drive<S: Session + ?Sized>(
    session: &mut S,
    socket: &UdpSocket,
    io: &mut Io<'_>,
    clock: Clock,
    buf: &mut [u8],
    stop: Option<&AtomicBool>,
    until_complete: bool,
) -> io::Result<Option<Outcome>> {
    socket.set_nonblocking(false)?;
    let mut stopped = false;
    loop {
        match session.poll(clock.now()) {
            Output::Transmit { to, bytes } => {
                if let Err(e) = socket.send_to(bytes, to) {
                    tracing::debug!(%to, error = %e, "send failed");
                }
            }
            Output::Fill(out) => {
                let result = match io {
                    Io::Source(source) => read_full(&mut **source, out),
                    _ => Err(io::Error::other("no source")),
                };
                match result {
                    Ok(n) => session.filled(n),
                    Err(e) => {
                        tracing::warn!(error = %e, "source read failed");
                        session.abort(ErrorCode::NotDefined, "Read error");
                    }
                }
            }
            Output::Deliver(bytes) => {
                let result = match io {
                    Io::Sink(sink) => sink.write_all(bytes).and_then(|()| sink.flush()),
                    Io::Upload(sink) => sink.write_all(bytes).and_then(|()| sink.flush()),
                    _ => Err(io::Error::other("no sink")),
                };
                match result {
                    Ok(()) => session.delivered(),
                    Err(e) => {
                        let code = if e.kind() == io::ErrorKind::StorageFull {
                            ErrorCode::DiskFull
                        } else {
                            ErrorCode::NotDefined
                        };
                        session.abort(code, "Write error");
                    }
                }
            }
            Output::Finish => {
                let result = match io {
                    Io::Sink(sink) => sink.flush(),
                    Io::Upload(sink) => sink.complete(),
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => session.delivered(),
                    Err(e) => {
                        let code = if e.kind() == io::ErrorKind::StorageFull {
                            ErrorCode::DiskFull
                        } else {
                            ErrorCode::NotDefined
                        };
                        session.abort(code, "Write error");
                    }
                }
            }
            Output::Wait(deadline) => {
                if until_complete && session.is_transfer_complete() {
                    return Ok(None);
                }
                if !stopped && stop.is_some_and(|s| s.load(Ordering::Acquire)) {
                    stopped = true;
                    session.abort(ErrorCode::NotDefined, "Server shutting down");
                    continue;
                }
                let now = clock.now();
                if deadline <= now {
                    session.handle_timeout(now);
                    continue;
                }
                let mut wait = deadline - now;
                if stop.is_some() && !stopped {
                    wait = wait.min(STOP_CHECK);
                }
                socket.set_read_timeout(Some(wait.max(Duration::from_micros(1))))?;
                match socket.recv_from(buf) {
                    Ok((n, from)) => session.handle_datagram(clock.now(), from, &buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        let now = clock.now();
                        if now >= deadline {
                            session.handle_timeout(now);
                        }
                    }
                    // ICMP errors and interruptions: wait again.
                    Err(e) => tracing::trace!(error = %e, "recv failed"),
                }
            }
            Output::Done(outcome) => return Ok(Some(outcome)),
        }
    }
}

/// Reads until `buf` is full or the source ends.
fn read_full(source: &mut (dyn Read + Send), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
