//! The one driving loop (see `tftp_proto::session`): performs the core's
//! outputs on a tokio UDP socket, a source or a sink, and reports back. No
//! protocol decision is made here.

use std::io;

use tftp_proto::packet::ErrorCode;
use tftp_proto::session::{Output, Session};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Where file bytes come from or go to.
pub(crate) enum Io<'a> {
    Source(&'a mut (dyn AsyncRead + Send + Unpin)),
    /// `close`: shut the sink down at the end (a server's upload: commits it);
    /// otherwise only flush it (a client's caller keeps its writer).
    Sink(&'a mut (dyn AsyncWrite + Send + Unpin), bool),
    None,
}

/// The adapter's clock: tokio's (so paused-time tests work), from an epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            epoch: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn to_tokio(self, t: Instant) -> tokio::time::Instant {
        self.epoch + t.since_epoch()
    }
}

/// When to stop driving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// The session is done.
    Done,
    /// All data is transferred (a client need not wait out the dally).
    TransferComplete,
}

/// Drives `session` until `until`; returns its outcome if it is done.
pub(crate) async fn drive<S: Session + ?Sized>(
    session: &mut S,
    socket: &UdpSocket,
    io: &mut Io<'_>,
    clock: Clock,
    recv_buf: &mut [u8],
    mut cancel: Option<watch::Receiver<bool>>,
    until: Until,
) -> Option<Outcome> {
    // One timer for the whole session, moved only when the deadline changes.
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    loop {
        let now = clock.now();
        match session.poll(now) {
            Output::Transmit { to, bytes } => {
                if let Err(e) = socket.send_to(bytes, to).await {
                    tracing::debug!(%to, error = %e, "send failed");
                }
            }
            Output::Fill(buf) => {
                let result = match io {
                    Io::Source(source) => read_full(&mut **source, buf).await,
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
                    // Flushed per block, so a write error (disk full) is seen
                    // before the block is acknowledged.
                    Io::Sink(sink, _) => match sink.write_all(bytes).await {
                        Ok(()) => sink.flush().await,
                        Err(e) => Err(e),
                    },
                    _ => Err(io::Error::other("no sink")),
                };
                match result {
                    Ok(()) => session.delivered(),
                    Err(e) => {
                        tracing::warn!(error = %e, "sink write failed");
                        session.abort(write_error_code(&e), "Write error");
                    }
                }
            }
            Output::Finish => {
                let result = match io {
                    Io::Sink(sink, true) => sink.shutdown().await,
                    Io::Sink(sink, false) => sink.flush().await,
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => session.delivered(),
                    Err(e) => {
                        tracing::warn!(error = %e, "completing the sink failed");
                        session.abort(write_error_code(&e), "Write error");
                    }
                }
            }
            Output::Wait(deadline) => {
                if until == Until::TransferComplete && session.is_transfer_complete() {
                    return None;
                }
                // A datagram already queued needs no timer or wake-up.
                match socket.try_recv_from(recv_buf) {
                    Ok((n, from)) => {
                        session.handle_datagram(clock.now(), from, &recv_buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        tracing::trace!(error = %e, "recv failed");
                        continue;
                    }
                }
                let wake = clock.to_tokio(deadline);
                if sleep.deadline() != wake {
                    sleep.as_mut().reset(wake);
                }
                let cancelled = async {
                    match cancel.as_mut() {
                        Some(rx) => {
                            let _ = rx.wait_for(|stop| *stop).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    biased;
                    received = socket.recv_from(recv_buf) => match received {
                        Ok((n, from)) => session.handle_datagram(clock.now(), from, &recv_buf[..n]),
                        // ICMP errors surface here on some systems: nothing to do.
                        Err(e) => tracing::trace!(error = %e, "recv failed"),
                    },
                    () = sleep.as_mut() => session.handle_timeout(clock.now()),
                    () = cancelled => {
                        cancel = None;
                        session.abort(ErrorCode::NotDefined, "Server shutting down");
                    }
                }
            }
            Output::Done(outcome) => return Some(outcome),
        }
    }
}

/// The ERROR code for a failed write.
fn write_error_code(e: &io::Error) -> ErrorCode {
    if e.kind() == io::ErrorKind::StorageFull {
        ErrorCode::DiskFull
    } else {
        ErrorCode::NotDefined
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
