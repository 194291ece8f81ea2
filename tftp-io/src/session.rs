//! The decisions every driver shares, made once: how a handler's answer
//! starts a session or refuses it, and how a local I/O failure becomes the
//! ERROR the peer gets.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::{Event, EventListener};
use tftp_proto::failure::Failure;
use tftp_proto::server::{Request, ServerSession, TftpError};
use tftp_proto::session::Session;
use tftp_proto::stats::Stats;
use tftp_proto::time::Instant;

use crate::config::ServerConfig;
use crate::driver::{Stop, Waited};
use crate::handler::{ReadResponse, WriteResponse};
use crate::registry::Ticket;

// The ERROR texts of local failures, named for the API: each is the core's
// table entry (`tftp_proto::failure::Failure`), the one place they are set.

/// ERROR text sent to sessions aborted at the end of a graceful shutdown
/// ([`Failure::ShuttingDown`]).
pub const SHUTTING_DOWN: &str = Failure::ShuttingDown.message();
/// ERROR text (with ERROR 0) when the handler did not answer a request
/// within the unverified lifetime (an origin that does not answer;
/// [`Failure::HandlerTimedOut`]).
pub const HANDLER_TIMED_OUT: &str = Failure::HandlerTimedOut.message();
/// ERROR text when the response source fails ([`Failure::ReadError`]).
pub const READ_ERROR: &str = Failure::ReadError.message();
/// ERROR text when the sink fails, other than a full disk
/// ([`Failure::WriteError`]).
pub const WRITE_ERROR: &str = Failure::WriteError.message();
/// ERROR text when a new-only upload finds its name taken at the end (sent
/// with ERROR 6; [`Failure::FileExists`]).
pub const FILE_EXISTS: &str = Failure::FileExists.message();
/// ERROR text when the sink reports a full disk (sent with ERROR 3;
/// [`Failure::DiskFull`]).
pub const DISK_FULL: &str = Failure::DiskFull.message();
/// ERROR text (with ERROR 0) when a request cannot have a session now: no
/// transfer socket could be opened (out of descriptors or ports), no
/// session thread started, no memory ([`Failure::Busy`],
/// [`TftpError::busy`]).
pub const SOCKET_ERROR: &str = Failure::Busy.message();

/// How long a session waits for descriptors when the process has none left
/// (a burst larger than its `RLIMIT_NOFILE`) before its client hears
/// ERROR 0 [`SOCKET_ERROR`]: once for its transfer socket, once more for the
/// handler (whose file may not open for the same reason). Shorter than a
/// client's retransmission of its request.
pub const DESCRIPTOR_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// How many times a request that found the process out of descriptors (for
/// its transfer socket, or a handler's [`TftpError::busy`] answer) is tried
/// again within [`DESCRIPTOR_WAIT`], evenly spaced, before its client hears
/// ERROR 0 [`SOCKET_ERROR`].
pub const DESCRIPTOR_TRIES: u32 = 25;

/// The wait for descriptors of one attempt (binding a transfer socket,
/// asking the handler): at most [`DESCRIPTOR_TRIES`] more tries within
/// [`DESCRIPTOR_WAIT`]. In a burst larger than `RLIMIT_NOFILE`, sessions
/// end meanwhile and give their sockets and files back, so a request is
/// answered "busy" only when none came back (the wait is shorter than a
/// client's retransmission of its request).
#[derive(Debug)]
pub(crate) struct DescriptorWait {
    left: u32,
}

impl DescriptorWait {
    pub(crate) fn new() -> Self {
        DescriptorWait {
            left: DESCRIPTOR_TRIES,
        }
    }

    /// After an attempt that was `starving` for descriptors (or not): how
    /// long to wait before trying again, if at all.
    pub(crate) fn again(&mut self, starving: bool) -> Option<std::time::Duration> {
        if !starving || self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(DESCRIPTOR_WAIT / DESCRIPTOR_TRIES)
    }
}

/// Whether `e` says the process or the system is out of descriptors (then
/// the attempt is repeated within [`DESCRIPTOR_WAIT`]: in a burst, sessions
/// end meanwhile and give their sockets and files back).
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::MFILE.raw_os_error() || c == rustix::io::Errno::NFILE.raw_os_error())
}

/// What a local I/O failure was doing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stage {
    /// Opening a file for a handler's answer.
    Open,
    /// Reading the response source (a read request, or a client's upload).
    Source,
    /// Writing the sink (a write request, or a client's download).
    Sink,
}

/// The one mapping from a local I/O failure to the [`Failure`] whose ERROR
/// the peer gets (the core's table has its code and text).
pub(crate) fn failure(stage: Stage, e: &io::Error) -> Failure {
    use io::ErrorKind::{AlreadyExists, FileTooLarge, NotFound, StorageFull};
    match (stage, e.kind()) {
        (Stage::Source, _) => Failure::ReadError,
        (Stage::Open, NotFound) => Failure::NotFound,
        // A new-only upload whose name was taken (meanwhile, for the loser
        // of two concurrent uploads of one name).
        (_, AlreadyExists) => Failure::FileExists,
        (_, StorageFull) => Failure::DiskFull,
        (Stage::Sink, FileTooLarge) => Failure::TooLarge,
        (Stage::Sink, _) => Failure::WriteError,
        // Out of descriptors: the file is there, the server is busy.
        (Stage::Open, _) if out_of_descriptors(e) => Failure::Busy,
        // Permission denied, and paths that would leave the root.
        (Stage::Open, _) => Failure::AccessViolation,
    }
}

/// What the handler granted.
pub(crate) enum Granted<S, W> {
    Read(ReadResponse<S>),
    Write(WriteResponse<W>),
}

/// The source or sink the session's data goes through.
pub(crate) enum Data<S, W> {
    /// The response's source, and its size if known (a file or bytes,
    /// whose reads do not wait on anyone, rather than a stream).
    Source(S, Option<u64>),
    Sink(W),
    None,
}

impl<S, W> Data<S, W> {
    /// What the session driver sees of it.
    pub(crate) fn kind(&self) -> crate::driver::Data {
        match self {
            Data::Source(_, size) => crate::driver::Data::Source(*size),
            Data::Sink(_) => crate::driver::Data::Upload,
            Data::None => crate::driver::Data::None,
        }
    }
}

/// The handler's answer, as the session starts with it.
pub(crate) enum Answer<S, W> {
    /// What the handler decided: a grant or a refusal.
    Decided(Result<Granted<S, W>, TftpError>),
    /// The session's place went to a newer request while the handler
    /// worked: it ends silently, as an evicted session does.
    Evicted,
}

impl<S, W> Answer<S, W> {
    /// The answer from a handler's bounded wait: an abort refuses with
    /// ERROR 0 "Server shutting down", an expired wait with ERROR 0
    /// [`HANDLER_TIMED_OUT`].
    pub(crate) fn from_wait(
        waited: Waited<Result<Granted<S, W>, TftpError>>,
        request: &Request,
    ) -> Self {
        let refused = |failure: Failure| Answer::Decided(Err(TftpError::from(failure)));
        match waited {
            Waited::Done(answer) => Answer::Decided(answer),
            Waited::Stopped(Stop::Abort) => refused(Failure::ShuttingDown),
            Waited::Stopped(Stop::Cancel | Stop::RouteGone) => Answer::Evicted,
            Waited::Expired => {
                tracing::warn!(peer = %request.peer, "the handler did not answer within the unverified lifetime");
                refused(Failure::HandlerTimedOut)
            }
        }
    }
}

/// Starts serving `request` with the handler's answer, or refuses it with
/// the handler's error (sent from the transfer socket at `local`).
///
/// The session's buffers come out of the server's memory budget (held by
/// `ticket`): with little left its window is narrowed to what remains, and
/// if not even that fits it is refused with ERROR 0 [`SOCKET_ERROR`].
pub(crate) fn open<S, W>(
    request: &Request,
    config: &ServerConfig,
    answer: Answer<S, W>,
    local: Option<SocketAddr>,
    now: Instant,
    ticket: &mut Ticket,
) -> (ServerSession, Data<S, W>) {
    let answer = match answer {
        Answer::Decided(answer) => answer,
        Answer::Evicted => {
            let mut session = ServerSession::start(request, &config.limits, None, None, now);
            session.cancel();
            return (session, Data::None);
        }
    };
    let mut limits = config.limits_at(request.local);
    // The window may use what the budget would grant beyond a lock-step
    // session's fixed buffers. Only what the session holds now is taken
    // (an unverified read has no window yet; it takes it once verified), so
    // spoofed requests hold no budget for their windows.
    let granted = ticket.reserve(limits.max_window_bytes.saturating_add(SESSION_OVERHEAD));
    limits.max_window_bytes = limits
        .max_window_bytes
        .min(granted.saturating_sub(SESSION_OVERHEAD));
    let (mut session, data) = match answer {
        Ok(Granted::Read(r)) => (
            ServerSession::start(request, &limits, r.limits.as_ref(), r.size, now),
            Data::Source(r.source, r.size),
        ),
        Ok(Granted::Write(w)) => (
            ServerSession::start(request, &limits, w.limits.as_ref(), None, now),
            Data::Sink(w.sink),
        ),
        Err(e) => (
            ServerSession::refuse(request, e.code, &e.message, &limits, now),
            Data::None,
        ),
    };
    if let Some(local) = local {
        session.set_local(local);
    }
    if !ticket.settle(session.memory()) {
        tracing::warn!(limit = config.max_memory, "session memory budget exhausted");
        let mut refused = ServerSession::refuse_with(request, Failure::Busy, &limits, now);
        if let Some(local) = local {
            refused.set_local(local);
        }
        return (refused, Data::None);
    }
    (session, data)
}

/// Buffers of a session besides its window: the control packet and the
/// receive buffer of a read (a write's receive buffer grows with its
/// blksize and is counted by the session itself).
pub(crate) const SESSION_OVERHEAD: usize = 2048;

/// The statistics of a request that could not get a transfer socket: refused
/// busy (its client heard ERROR 0 [`SOCKET_ERROR`] from the listening socket).
pub(crate) fn no_socket(request: &Request, e: &io::Error, now: Instant) -> Stats {
    tracing::warn!(error = %e, "cannot bind a transfer socket");
    let busy = Failure::Busy;
    Stats::refused(request, busy.code(), busy.message(), now)
}

/// The ERROR 0 [`SOCKET_ERROR`] packet, in `buf`.
pub(crate) fn busy_packet(buf: &mut [u8; 64]) -> &[u8] {
    let busy = Failure::Busy;
    let len =
        tftp_proto::packet::encode_error(buf, busy.code(), busy.message().as_bytes()).unwrap_or(0);
    buf.get(..len).unwrap_or_default()
}

/// Whether an accept loop survives a receive error: ICMP errors reported on
/// the socket, interruptions and spurious wake-ups are transient; anything
/// else means the socket is gone, and the server stops (the same policy on
/// every runtime).
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// A one-way flag with waiters (stop accepting, abort sessions, session
/// ended): cheap to check, and async code can wait for it.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    set: AtomicBool,
    event: Event,
}

impl Signal {
    /// Raises the flag and wakes every waiter.
    pub(crate) fn raise(&self) {
        self.set.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// Wakes every waiter without raising the flag.
    pub(crate) fn notify(&self) {
        self.event.notify(usize::MAX);
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Waits on this thread until `done()` holds (checked again whenever
    /// the signal notifies) or `deadline` passes; true if done.
    pub(crate) fn wait_blocking(
        &self,
        done: impl Fn() -> bool,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        use event_listener::Listener;
        loop {
            if done() {
                return true;
            }
            let listener = self.listen();
            if done() {
                return true;
            }
            match deadline {
                None => listener.wait(),
                Some(d) => {
                    if listener.wait_deadline(d).is_none() {
                        return done();
                    }
                }
            }
        }
    }

    /// A listener for the next notification; check the condition after
    /// creating it and before awaiting it.
    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }
}
