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
    /// What the 16-bit block number does after 65535 (files over 32 MiB
    /// at 512-byte blocks). Default [`Rollover::Zero`]. In a handler's
    /// narrower policy ([`Limits::narrowed_by`]) `One` or `Refuse` replaces
    /// the server's rule; `Zero` keeps it (a handler cannot force 0 under
    /// a server set to 1 or refuse). Windows above 32767 blocks are not
    /// told apart across a rollover.
    pub rollover: Rollover,
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
            rollover: Rollover::Zero,
            unverified_retries: DEFAULT_UNVERIFIED_RETRIES,
            unverified_lifetime: DEFAULT_UNVERIFIED_LIFETIME,
            min_rate: DEFAULT_MIN_RATE,
            min_rate_grace: DEFAULT_MIN_RATE_GRACE,
        }
    }
}

/// What a transfer's 16-bit block number does after 65535. RFC 1350 is
/// silent; most clients and servers (tftpd-hpa, curl, iPXE, U-Boot, UEFI)
/// go on at 0, some firmware expects 1, and some cannot go on at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rollover {
    /// 65535 is followed by 0 (the common rule).
    #[default]
    Zero,
    /// 65535 is followed by 1: block 0 is only ever the answer to a
    /// request.
    One,
    /// No block after 65535: the transfer ends with ERROR 3 "File too
    /// large for the block numbers" when it would need one: a file of
    /// 65535 × blksize bytes or more (its last, short or empty, block
    /// would be 65536), whatever the peer numbers the block after 65535.
    Refuse,
}

/// The number space one rollover cycle of [`Rollover::One`] covers.
const CYCLE_ONE: u64 = 65535;

/// `n` in `0..CYCLE_ONE`.
fn in_cycle(n: u64) -> u64 {
    n.checked_rem(CYCLE_ONE).unwrap_or(0)
}

impl Rollover {
    /// The 16-bit number on the wire of 64-bit block `n`.
    pub fn wire(self, n: u64) -> u16 {
        match self {
            Rollover::Zero | Rollover::Refuse => n as u16,
            Rollover::One if n == 0 => 0,
            // 1..=65535.
            Rollover::One => in_cycle(n.saturating_sub(1)).saturating_add(1) as u16,
        }
    }

    /// How far past block `from` the nearest block at or after it numbered
    /// `wire` is (`None`: no such block: 0 after a [`Rollover::One`]
    /// rollover has started).
    pub fn forward(self, from: u64, wire: u16) -> Option<u64> {
        match self {
            Rollover::Zero | Rollover::Refuse => Some(u64::from(wire.wrapping_sub(from as u16))),
            Rollover::One => match (from, wire) {
                (0, w) => Some(u64::from(w)),
                (_, 0) => None,
                (f, w) => {
                    // Both positions in 0..CYCLE_ONE: the sum stays small.
                    let at = in_cycle(f.saturating_sub(1));
                    let to = u64::from(w).saturating_sub(1);
                    Some(in_cycle(to.saturating_add(CYCLE_ONE).saturating_sub(at)))
                }
            },
        }
    }

    /// The signed distance from block `from` (at least 1) to the nearest
    /// block numbered `wire` (negative: before it), or `None` when no
    /// block near it is numbered so.
    pub(crate) fn distance(self, from: u64, wire: u16) -> Option<i64> {
        match self {
            Rollover::Zero | Rollover::Refuse => {
                Some(i64::from(wire.wrapping_sub(from as u16) as i16))
            }
            Rollover::One if wire == 0 => (from <= 1).then_some(-1),
            Rollover::One => {
                // Below CYCLE_ONE: fits an i64, and so does the difference.
                let ahead = self.forward(from.max(1), wire)? as i64;
                let cycle = CYCLE_ONE as i64;
                Some(if ahead > cycle / 2 {
                    ahead.saturating_sub(cycle)
                } else {
                    ahead
                })
            }
        }
    }

    /// The last block a transfer may have (`u64::MAX`: unbounded).
    pub(crate) fn last_block(self) -> u64 {
        match self {
            Rollover::Refuse => u64::from(u16::MAX),
            Rollover::Zero | Rollover::One => u64::MAX,
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
    /// raised to `3 × seconds` (at most [`DEFAULT_MAX_RTO`]) if lower, so a
    /// server that does not acknowledge the option is still waited for as
    /// long. (The dally outlasts a server retransmitting every `seconds`
    /// in any case: it is at least twice a negotiated `timeout`.)
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
            // A client's quirk: the narrower policy's, unless it keeps the
            // default.
            rollover: match other.rollover {
                Rollover::Zero => self.rollover,
                quirk => quirk,
            },
            // The server's protection, not the transfer's shape: kept.
            unverified_retries: self.unverified_retries,
            unverified_lifetime: self.unverified_lifetime,
            min_rate: self.min_rate,
            min_rate_grace: self.min_rate_grace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule's wire numbers, and the way back from them, around the
    /// first and second rollover.
    #[test]
    fn rollover_numbers_and_back() {
        assert_eq!(Rollover::Zero.wire(65_535), 65_535);
        assert_eq!(Rollover::Zero.wire(65_536), 0);
        assert_eq!(Rollover::One.wire(0), 0);
        assert_eq!(Rollover::One.wire(65_535), 65_535);
        assert_eq!(Rollover::One.wire(65_536), 1);
        assert_eq!(Rollover::One.wire(131_070), 65_535);
        assert_eq!(Rollover::One.wire(131_071), 1);
        assert_eq!(Rollover::Refuse.last_block(), 65_535);
        assert_eq!(Rollover::Zero.last_block(), u64::MAX);
        for rule in [Rollover::Zero, Rollover::One] {
            for from in [
                0u64, 1, 2, 65_530, 65_535, 65_536, 131_069, 131_071, 200_000,
            ] {
                for n in from..from + 40 {
                    let wire = rule.wire(n);
                    assert_eq!(
                        rule.forward(from, wire),
                        Some(n - from),
                        "{rule:?} {from} {n}"
                    );
                    if from >= 1 {
                        assert_eq!(rule.distance(from, wire), Some((n - from) as i64));
                    }
                }
                for back in 1..40u64.min(from) {
                    let n = from - back;
                    if from >= 1 && (rule != Rollover::One || n >= 1) {
                        assert_eq!(rule.distance(from, rule.wire(n)), Some(-(back as i64)));
                    }
                }
            }
        }
        // 0 names no block after a rollover to 1 has started.
        assert_eq!(Rollover::One.forward(65_536, 0), None);
        assert_eq!(Rollover::One.distance(70_000, 0), None);
        assert_eq!(
            Rollover::One.distance(1, 0),
            Some(-1),
            "the request's answer"
        );
    }

    /// A handler's quirk replaces the server's default; the default does
    /// not undo the server's choice.
    #[test]
    fn rollover_narrowing() {
        let server = Limits {
            rollover: Rollover::One,
            ..Limits::default()
        };
        assert_eq!(
            server.narrowed_by(&Limits::default()).rollover,
            Rollover::One
        );
        let refuse = Limits {
            rollover: Rollover::Refuse,
            ..Limits::default()
        };
        assert_eq!(server.narrowed_by(&refuse).rollover, Rollover::Refuse);
        assert_eq!(
            Limits::default().narrowed_by(&refuse).rollover,
            Rollover::Refuse
        );
    }
}
