//! Per-session statistics, kept by the sessions as they run (what fbtftp
//! reports per session, and more), and the final [`Outcome`].

use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
#[cfg(target_has_atomic = "64")]
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use crate::options::{Direction, TransferOptions};
use crate::packet::{ErrorCode, Mode, RawOptions};
use crate::time::Instant;

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every byte was transferred and acknowledged.
    Completed,
    /// The peer answered our OACK with ERROR 8 (a normal UEFI `tsize` probe, or
    /// a client that refuses the options): not a failure.
    OptionsRefused,
    /// The peer sent an ERROR (its code is in [`Stats::error`]).
    PeerError(ErrorCode),
    /// This side ended the session with an ERROR to the peer (bad OACK,
    /// oversized transfer, local abort).
    LocalError(ErrorCode),
    /// The request was refused with this ERROR before any transfer
    /// ([`Transfer::refuse`], [`Stats::refused`]): the handler's answer, or
    /// no resources for it.
    ///
    /// [`Transfer::refuse`]: crate::session::Transfer::refuse
    Refused {
        /// The ERROR code sent.
        code: ErrorCode,
    },
    /// The peer went silent past the retry limit (or, before it was
    /// verified, past [`Limits::unverified_lifetime`]), or made less progress
    /// than [`Limits::min_rate`].
    ///
    /// [`Limits::unverified_lifetime`]: crate::options::Limits::unverified_lifetime
    /// [`Limits::min_rate`]: crate::options::Limits::min_rate
    TimedOut,
    /// The adapter cancelled the session without a word to the peer
    /// ([`Session::cancel`]): an unverified session that gave up its place to
    /// a newer request, or a single-port server's session whose peer sent a
    /// new request from the same address and port.
    ///
    /// [`Session::cancel`]: crate::session::Session::cancel
    Evicted,
}

impl Outcome {
    /// True for [`Outcome::Completed`] and [`Outcome::OptionsRefused`].
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Completed | Outcome::OptionsRefused)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed => f.write_str("completed"),
            Outcome::OptionsRefused => f.write_str("options refused by peer"),
            Outcome::PeerError(c) => write!(f, "peer error {}", c.as_u16()),
            Outcome::LocalError(c) => write!(f, "local error {}", c.as_u16()),
            Outcome::Refused { code } => write!(f, "refused with error {}", code.as_u16()),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Evicted => f.write_str("evicted"),
        }
    }
}

/// An ERROR sent or received, with its message (bytes, truncated to
/// [`MAX_ERROR_MESSAGE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The code.
    pub code: ErrorCode,
    /// The message.
    pub message: Vec<u8>,
    /// True when the peer sent it, false when this side did.
    pub from_peer: bool,
}

/// Longest error message kept in [`ErrorInfo`].
pub const MAX_ERROR_MESSAGE: usize = 128;

/// Counters and facts about one transfer. Allocated once when the session
/// starts (file name and options); updated in place afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The peer's address (its transfer ID).
    pub peer: SocketAddr,
    /// The local address, when the adapter knows it.
    pub local: Option<SocketAddr>,
    /// File name as requested.
    pub filename: Vec<u8>,
    /// Transfer mode.
    pub mode: Mode,
    /// Read (RRQ) or write (WRQ).
    pub direction: Direction,
    /// The options area of the request as sent (name/value pairs).
    pub options_requested: Vec<u8>,
    /// The options in effect after negotiation (empty: RFC 1350 defaults).
    pub options_negotiated: TransferOptions,
    /// When the session started.
    pub started: Instant,
    /// Whether the peer proved it is at its address: a server session's
    /// first ACK (DATA, for a write) from the request's address and port.
    /// Always true for a client session. An unverified session runs under
    /// [`Limits::unverified_retries`] and [`Limits::unverified_lifetime`].
    ///
    /// [`Limits::unverified_retries`]: crate::options::Limits::unverified_retries
    /// [`Limits::unverified_lifetime`]: crate::options::Limits::unverified_lifetime
    pub verified: bool,
    /// When it ended (`None` while running).
    pub finished: Option<Instant>,
    /// DATA packets sent, retransmissions included.
    pub data_packets_sent: u64,
    /// Distinct DATA blocks sent (without retransmissions).
    pub blocks_sent: u64,
    /// Payload bytes of distinct blocks sent.
    pub bytes_sent: u64,
    /// Distinct DATA blocks received in order.
    pub blocks_received: u64,
    /// Payload bytes received in order (as on the wire).
    pub bytes_received: u64,
    /// Datagrams sent to the peer (all kinds, retransmissions included).
    pub packets_sent: u64,
    /// Datagrams received from the peer.
    pub packets_received: u64,
    /// DATA blocks sent again.
    pub retransmits: u64,
    /// Control packets (request, OACK, ACK) sent again after a timeout.
    pub control_retransmits: u64,
    /// ACKs that acknowledged nothing new.
    pub duplicate_acks: u64,
    /// DATA blocks received again.
    pub duplicate_data: u64,
    /// DATA blocks received ahead of a gap (discarded).
    pub out_of_order_data: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    /// Datagrams from other addresses answered with ERROR 5.
    pub foreign_packets: u64,
    /// Datagrams from the peer that were malformed or unexpected (ignored).
    pub ignored_packets: u64,
    /// Transfer size learned from `tsize`, if any.
    pub transfer_size: Option<u64>,
    /// The ERROR that ended the session, if any.
    pub error: Option<ErrorInfo>,
    /// How it ended (`None` while running).
    pub outcome: Option<Outcome>,
}

impl Stats {
    pub(crate) fn new(
        peer: SocketAddr,
        filename: &[u8],
        mode: Mode,
        direction: Direction,
        options_requested: &[u8],
        started: Instant,
    ) -> Self {
        Stats {
            peer,
            local: None,
            filename: filename.to_vec(),
            mode,
            direction,
            options_requested: options_requested.to_vec(),
            options_negotiated: TransferOptions::default(),
            started,
            verified: false,
            finished: None,
            data_packets_sent: 0,
            blocks_sent: 0,
            bytes_sent: 0,
            blocks_received: 0,
            bytes_received: 0,
            packets_sent: 0,
            packets_received: 0,
            retransmits: 0,
            control_retransmits: 0,
            duplicate_acks: 0,
            duplicate_data: 0,
            out_of_order_data: 0,
            timeouts: 0,
            foreign_packets: 0,
            ignored_packets: 0,
            transfer_size: None,
            error: None,
            outcome: None,
        }
    }

    /// The statistics of a request refused at `now` with ERROR `code` and
    /// `message` without a session (no transfer socket, for instance): outcome
    /// [`Outcome::Refused`], the error recorded as this side's.
    pub fn refused(
        request: &crate::server::Request,
        code: ErrorCode,
        message: &str,
        now: Instant,
    ) -> Self {
        let mut stats = Stats::new(
            request.peer,
            &request.filename,
            request.mode,
            request.direction,
            request.raw_options(),
            now,
        );
        stats.set_error(code, message.as_bytes(), false);
        stats.finished = Some(now);
        stats.outcome = Some(Outcome::Refused { code });
        stats
    }

    /// Time from start to end (or to `now` while running).
    pub fn duration(&self, now: Instant) -> Duration {
        self.finished
            .unwrap_or(now)
            .saturating_duration_since(self.started)
    }

    /// The requested options as pairs, in order.
    pub fn requested_options(&self) -> RawOptions<'_> {
        // Stored from a parsed request or built by a client: always well formed.
        RawOptions::parse(&self.options_requested).unwrap_or_default()
    }

    /// The file name, lossily as text (for logs).
    pub fn filename_lossy(&self) -> alloc::string::String {
        alloc::string::String::from_utf8_lossy(&self.filename).into_owned()
    }

    pub(crate) fn set_error(&mut self, code: ErrorCode, message: &[u8], from_peer: bool) {
        let message = message.get(..MAX_ERROR_MESSAGE).unwrap_or(message);
        self.error = Some(ErrorInfo {
            code,
            message: message.to_vec(),
            from_peer,
        });
    }
}

/// Adds one to a per-session counter (saturating: a `u64` of packets never
/// gets there).
pub(crate) fn incr(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Server-wide counters, updated lock-free by every session as it ends
/// ([`ServerCounters::record`]) and by the accept loop. Shared by the adapters.
#[cfg(target_has_atomic = "64")]
#[derive(Debug, Default)]
pub struct ServerCounters {
    started: AtomicU64,
    completed: AtomicU64,
    probed: AtomicU64,
    failed: AtomicU64,
    active: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    packets_sent: AtomicU64,
    packets_received: AtomicU64,
    retransmits: AtomicU64,
    timeouts: AtomicU64,
    errors_by_code: [AtomicU64; 10],
    rejected_by_limits: AtomicU64,
    evicted: AtomicU64,
    unverified: AtomicU64,
    duplicate_requests: AtomicU64,
    bad_requests: AtomicU64,
}

/// A snapshot of [`ServerCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions started (requests that got a transfer socket).
    pub sessions_started: u64,
    /// Sessions that completed.
    pub sessions_completed: u64,
    /// Sessions whose client refused our OACK with ERROR 8 (size probes).
    pub sessions_probed: u64,
    /// Sessions that failed (errors, timeouts, handler refusals).
    pub sessions_failed: u64,
    /// Sessions running now.
    pub sessions_active: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Datagrams sent by sessions.
    pub packets_sent: u64,
    /// Datagrams received by sessions.
    pub packets_received: u64,
    /// DATA retransmissions.
    pub retransmits: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    /// Sessions that ended with an ERROR, by code 0..=8 (index 9: others).
    pub errors_by_code: [u64; 10],
    /// Requests refused by a limit (sessions, sessions per peer).
    pub rejected_by_limits: u64,
    /// Unverified sessions that gave up their place to a newer request.
    pub sessions_evicted: u64,
    /// Sessions that timed out or were evicted before their peer was
    /// verified: requests from spoofed or vanished sources.
    pub sessions_unverified: u64,
    /// Retransmitted requests for a session that already runs (ignored).
    pub duplicate_requests: u64,
    /// Malformed requests answered with ERROR, and datagrams ignored on the
    /// listening socket.
    pub bad_requests: u64,
}

#[cfg(target_has_atomic = "64")]
fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[cfg(target_has_atomic = "64")]
impl ServerCounters {
    /// A session started.
    pub fn session_started(&self) {
        bump(&self.started, 1);
        bump(&self.active, 1);
    }

    /// A session ended with these statistics.
    pub fn record(&self, stats: &Stats) {
        match stats.outcome {
            Some(Outcome::Completed) => bump(&self.completed, 1),
            Some(Outcome::OptionsRefused) => bump(&self.probed, 1),
            Some(Outcome::Evicted) => {
                bump(&self.evicted, 1);
                bump(&self.failed, 1);
            }
            _ => bump(&self.failed, 1),
        }
        if !stats.verified && matches!(stats.outcome, Some(Outcome::TimedOut | Outcome::Evicted)) {
            bump(&self.unverified, 1);
        }
        bump(&self.bytes_sent, stats.bytes_sent);
        bump(&self.bytes_received, stats.bytes_received);
        bump(&self.packets_sent, stats.packets_sent);
        bump(&self.packets_received, stats.packets_received);
        bump(&self.retransmits, stats.retransmits);
        bump(&self.timeouts, stats.timeouts);
        if let (Some(error), Some(outcome)) = (&stats.error, stats.outcome) {
            if !outcome.is_success() {
                let i = usize::from(error.code.as_u16()).min(9);
                if let Some(c) = self.errors_by_code.get(i) {
                    bump(c, 1);
                }
            }
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// A session ended without statistics (its task failed): counted as
    /// failed.
    pub fn session_lost(&self) {
        bump(&self.failed, 1);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// A request refused by a limit.
    pub fn rejected(&self) {
        bump(&self.rejected_by_limits, 1);
    }

    /// A retransmitted request ignored.
    pub fn duplicate(&self) {
        bump(&self.duplicate_requests, 1);
    }

    /// A malformed request or ignored datagram on the listening socket.
    pub fn bad_request(&self) {
        bump(&self.bad_requests, 1);
    }

    /// Sessions running now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    /// A snapshot.
    pub fn snapshot(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            sessions_started: get(&self.started),
            sessions_completed: get(&self.completed),
            sessions_probed: get(&self.probed),
            sessions_failed: get(&self.failed),
            sessions_active: get(&self.active),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            packets_sent: get(&self.packets_sent),
            packets_received: get(&self.packets_received),
            retransmits: get(&self.retransmits),
            timeouts: get(&self.timeouts),
            errors_by_code: self.errors_by_code.each_ref().map(get),
            rejected_by_limits: get(&self.rejected_by_limits),
            sessions_evicted: get(&self.evicted),
            sessions_unverified: get(&self.unverified),
            duplicate_requests: get(&self.duplicate_requests),
            bad_requests: get(&self.bad_requests),
        }
    }
}
