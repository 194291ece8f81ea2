//! [`Limits`]: the local policy, with a named default for every field.

use super::*;

/// Local policy: what options may be negotiated, how large a request may be,
/// and how sessions retransmit. Every field has a named default
/// (`DEFAULT_*`); [`Limits::default`] is a sensible public-server policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted (clamped to 8..=65464). Default 65464.
    pub max_blksize: u16,
    /// Largest window granted. Default [`DEFAULT_MAX_WINDOWSIZE`].
    pub max_windowsize: u16,
    /// Largest `blksize × windowsize` in flight: the memory a sending session
    /// keeps. Default [`DEFAULT_MAX_WINDOW_BYTES`].
    pub max_window_bytes: usize,
    /// Smallest `timeout` option accepted, seconds. Default 1.
    pub min_timeout: u8,
    /// Largest `timeout` option accepted, seconds. Default
    /// [`DEFAULT_MAX_TIMEOUT`] (U-Boot asks 5, curl 6): a larger value is not
    /// acknowledged and the adaptive timer applies, so no request can make
    /// the server wait minutes per retransmission.
    pub max_timeout: u8,
    /// Options that may be negotiated at all. Default: all.
    pub enabled: EnabledOptions,
    /// Largest request datagram (file name + mode + options) accepted.
    /// Default [`DEFAULT_MAX_REQUEST_SIZE`] (RFC 2347's 512 bytes).
    pub max_request_size: usize,
    /// Retransmissions of one packet before the session gives up.
    /// Default [`DEFAULT_RETRIES`].
    pub retries: u32,
    /// First retransmission timeout, before any round trip was measured,
    /// when no `timeout` option was negotiated. Default 1 s.
    pub initial_rto: Duration,
    /// Floor of the adaptive retransmission timeout. Default 20 ms.
    pub min_rto: Duration,
    /// Ceiling of the adaptive retransmission timeout (also of its backoff).
    /// Default 10 s.
    pub max_rto: Duration,
    /// How long a receiver lingers after its final ACK to answer a
    /// retransmitted last DATA. Default 3 s.
    pub dally: Duration,
    /// Most DATA blocks in one transfer (bounds a write's size together with
    /// the block size). Default: no bound.
    pub max_transfer_blocks: u64,
    /// Retransmissions a server session makes before its peer is verified
    /// (its first ACK, or DATA for a write, from the request's address and
    /// port): the spoofed source of an unanswered request gets at most
    /// `1 + unverified_retries` datagrams. Default
    /// [`DEFAULT_UNVERIFIED_RETRIES`].
    pub unverified_retries: u32,
    /// Longest a server session lives before its peer is verified, whatever
    /// `timeout` it asked for (the negotiated `timeout` applies only once the
    /// peer is verified). Default [`DEFAULT_UNVERIFIED_LIFETIME`].
    pub unverified_lifetime: Duration,
    /// Slowest average progress, in payload bytes per second, a server
    /// transfer may make once [`Limits::min_rate_grace`] has passed: bytes
    /// the client acknowledged (read) or sent in order (write), so a peer
    /// that answers just before each timeout cannot hold a session forever.
    /// It ends with ERROR 0 "Transfer too slow". 0 disables the rule; client
    /// sessions are not subject to it. Default [`DEFAULT_MIN_RATE`].
    pub min_rate: u32,
    /// Time from the start of a transfer before [`Limits::min_rate`] applies.
    /// Default [`DEFAULT_MIN_RATE_GRACE`].
    pub min_rate_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: DEFAULT_MAX_WINDOWSIZE,
            max_window_bytes: DEFAULT_MAX_WINDOW_BYTES,
            min_timeout: MIN_TIMEOUT,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            enabled: EnabledOptions::ALL,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            retries: DEFAULT_RETRIES,
            initial_rto: DEFAULT_INITIAL_RTO,
            min_rto: DEFAULT_MIN_RTO,
            max_rto: DEFAULT_MAX_RTO,
            dally: DEFAULT_DALLY,
            max_transfer_blocks: DEFAULT_MAX_TRANSFER_BLOCKS,
            unverified_retries: DEFAULT_UNVERIFIED_RETRIES,
            unverified_lifetime: DEFAULT_UNVERIFIED_LIFETIME,
            min_rate: DEFAULT_MIN_RATE,
            min_rate_grace: DEFAULT_MIN_RATE_GRACE,
        }
    }
}

impl Limits {
    /// A client's policy: the defaults with a [`DEFAULT_CLIENT_DALLY`] dally
    /// and a [`DEFAULT_CLIENT_MAX_RTO`] timer ceiling.
    pub fn client() -> Self {
        Limits {
            dally: DEFAULT_CLIENT_DALLY,
            max_rto: DEFAULT_CLIENT_MAX_RTO,
            ..Limits::default()
        }
    }

    /// A client asking for a `timeout` of `seconds`: the timer ceiling is
    /// raised to `3 × seconds` (at most [`DEFAULT_MAX_RTO`]) if lower, so the
    /// dally (`max(dally, 3 × RTO)` capped by `max_rto`) still outlasts a
    /// server retransmitting every `seconds`.
    pub fn fit_timeout(&mut self, seconds: u8) {
        let linger = Duration::from_secs(u64::from(seconds).saturating_mul(3)).min(DEFAULT_MAX_RTO);
        self.max_rto = self.max_rto.max(linger);
    }

    /// The largest block size granted: `max_blksize` forced into the RFC
    /// range, and no larger than one DATA packet within `max_window_bytes`
    /// (but never below the RFC 1350 512 bytes every client can take, unless
    /// `max_blksize` is): a session's buffers stay within the window memory
    /// even at a window of one.
    pub fn effective_max_blksize(&self) -> u16 {
        let by_memory = self
            .max_window_bytes
            .saturating_sub(crate::packet::DATA_HEADER_LEN);
        let by_memory = u16::try_from(by_memory)
            .unwrap_or(u16::MAX)
            .max(DEFAULT_BLKSIZE);
        self.max_blksize
            .clamp(MIN_BLKSIZE, MAX_BLKSIZE)
            .min(by_memory)
    }

    /// The largest window allowed at `blksize`: `max_windowsize` capped by
    /// `max_window_bytes`, never below 1.
    pub fn max_window_at(&self, blksize: u16) -> u16 {
        // A block size of 0 counts as 1 (`checked_div` fails only for 0).
        let by_bytes = self
            .max_window_bytes
            .checked_div(usize::from(blksize))
            .unwrap_or(self.max_window_bytes);
        let by_bytes = u16::try_from(by_bytes).unwrap_or(u16::MAX);
        self.max_windowsize.min(by_bytes).max(1)
    }

    /// The tighter of two policies, field by field (for per-request narrowing:
    /// a handler can only ever restrict what the server allows). The timers
    /// and the server's protections (`initial_rto`, `min_rto`, `max_rto`,
    /// `dally`, `unverified_*`, `min_rate*`) stay as in `self`.
    pub fn narrowed_by(&self, other: &Limits) -> Limits {
        Limits {
            max_blksize: self.max_blksize.min(other.max_blksize),
            max_windowsize: self.max_windowsize.min(other.max_windowsize),
            max_window_bytes: self.max_window_bytes.min(other.max_window_bytes),
            min_timeout: self.min_timeout.max(other.min_timeout),
            max_timeout: self.max_timeout.min(other.max_timeout),
            enabled: EnabledOptions {
                blksize: self.enabled.blksize && other.enabled.blksize,
                timeout: self.enabled.timeout && other.enabled.timeout,
                tsize: self.enabled.tsize && other.enabled.tsize,
                windowsize: self.enabled.windowsize && other.enabled.windowsize,
            },
            max_request_size: self.max_request_size.min(other.max_request_size),
            retries: self.retries.min(other.retries),
            initial_rto: self.initial_rto,
            min_rto: self.min_rto,
            max_rto: self.max_rto,
            dally: self.dally,
            max_transfer_blocks: self.max_transfer_blocks.min(other.max_transfer_blocks),
            // The server's protection, not the transfer's shape: kept.
            unverified_retries: self.unverified_retries,
            unverified_lifetime: self.unverified_lifetime,
            min_rate: self.min_rate,
            min_rate_grace: self.min_rate_grace,
        }
    }
}
