//! The one driving loop on async-io: performs the core's outputs and reports
//! back. No protocol decision is made here.

use std::io;
use std::net::UdpSocket;

use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::{Async, Timer};
use tftp_proto::packet::ErrorCode;
use tftp_proto::session::{Output, Session};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;

/// Where file bytes come from or go to.
pub(crate) enum Io<'a> {
    Source(&'a mut (dyn AsyncRead + Send + Unpin)),
    /// `close`: close the sink at the end (a server's upload: commits it);
    /// otherwise only flush it (a client's caller keeps its writer).
    Sink(&'a mut (dyn AsyncWrite + Send + Unpin), bool),
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

    fn to_std(self, t: Instant) -> std::time::Instant {
        self.0 + t.since_epoch()
    }
}

enum Event {
    Datagram(io::Result<(usize, std::net::SocketAddr)>),
    Timeout,
    Cancel,
}

/// Drives `session` until it is done (or, with `until_complete`, until all
/// data is transferred); returns its outcome if it is done.
pub(crate) async fn drive<S: Session + ?Sized>(
    session: &mut S,
    socket: &Async<UdpSocket>,
    io: &mut Io<'_>,
    clock: Clock,
    buf: &mut [u8],
    mut cancel: Option<Receiver<()>>,
    until_complete: bool,
) -> Option<Outcome> {
    let mut timer = Timer::never();
    loop {
        match session.poll(clock.now()) {
            Output::Transmit { to, bytes } => {
                if let Err(e) = socket.send_to(bytes, to).await {
                    tracing::debug!(%to, error = %e, "send failed");
                }
            }
            Output::Fill(out) => {
                let result = match io {
                    Io::Source(source) => read_full(&mut **source, out).await,
                    _ => Err(io::Error::other("no source")),
                };
                match result {
                    Ok(n) => session.filled(n),
                    Err(_) => session.abort(ErrorCode::NotDefined, "Read error"),
                }
            }
            Output::Deliver(bytes) => {
                let result = match io {
                    Io::Sink(sink, _) => match sink.write_all(bytes).await {
                        Ok(()) => sink.flush().await,
                        Err(e) => Err(e),
                    },
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
                    Io::Sink(sink, true) => sink.close().await,
                    Io::Sink(sink, false) => sink.flush().await,
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
                    return None;
                }
                // A datagram already queued needs no timer or wake-up.
                match socket.get_ref().recv_from(buf) {
                    Ok((n, from)) => {
                        session.handle_datagram(clock.now(), from, &buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => continue,
                }
                timer.set_at(clock.to_std(deadline));
                let recv = async { Event::Datagram(socket.recv_from(buf).await) };
                let tick = async {
                    (&mut timer).await;
                    Event::Timeout
                };
                let cancelled = async {
                    match &cancel {
                        Some(rx) => {
                            let _ = rx.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                    Event::Cancel
                };
                match recv.or(tick).or(cancelled).await {
                    Event::Datagram(Ok((n, from))) => {
                        session.handle_datagram(clock.now(), from, &buf[..n])
                    }
                    Event::Datagram(Err(e)) => tracing::trace!(error = %e, "recv failed"),
                    Event::Timeout => session.handle_timeout(clock.now()),
                    Event::Cancel => {
                        cancel = None;
                        session.abort(ErrorCode::NotDefined, "Server shutting down");
                    }
                }
            }
            Output::Done(outcome) => return Some(outcome),
        }
    }
}

/// Reads until `buf` is full or the source ends.
async fn read_full(
    source: &mut (dyn AsyncRead + Send + Unpin),
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
