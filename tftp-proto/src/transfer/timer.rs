//! The session's clock work: the retransmission timer (deadline, retries,
//! the adaptive [`Rto`] with Karn's rule and the "unsure" sample), the
//! dally linger, and the hard deadline of a running transfer ([`expiry`]).

use core::time::Duration;

use crate::options::Limits;
use crate::rto::Rto;
use crate::time::Instant;

/// Why a session ends at its hard deadline ([`expiry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The peer was not verified within [`Limits::unverified_lifetime`].
    Unverified,
    /// The transfer fell below [`Limits::min_rate`].
    TooSlow,
}

/// The retransmission timer.
pub(crate) struct Timer {
    /// The adaptive (or, once verified, negotiated) timeout.
    rto: Rto,
    /// When the running timer expires; `None` when it is not running.
    deadline: Option<Instant>,
    /// Expiries since the last progress.
    retries: u32,
    /// The block (as on the wire) last acknowledged after a retransmission,
    /// and the round trip of its first copy: a repeated ACK of it suggests
    /// that the timeout was early (the peer got both copies), and the
    /// round trip is sampled then (Karn's rule alone would never measure
    /// it: when a storm stretches round trips past the estimate, each block
    /// would time out early in turn).
    unsure: Option<(u16, Duration)>,
}

impl Timer {
    /// A stopped timer with the adaptive timeout of `limits`.
    pub(crate) fn new(limits: &Limits) -> Self {
        Timer {
            rto: Rto::new(limits, None),
            deadline: None,
            retries: 0,
            unsure: None,
        }
    }

    /// The current timeout.
    #[cfg(test)]
    pub(crate) fn rto(&self) -> Duration {
        self.rto.current()
    }

    /// Replaces the timeout policy (`fixed`: a negotiated `timeout`), keeping
    /// a round trip already measured.
    pub(crate) fn reset(&mut self, limits: &Limits, fixed: Option<u8>) {
        let mut rto = Rto::new(limits, fixed);
        rto.inherit(&self.rto);
        self.rto = rto;
    }

    /// The running timer's deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Starts (or restarts) the timer at `now`.
    pub(crate) fn arm(&mut self, now: Instant) {
        self.deadline = Some(now.saturating_add(self.rto.current()));
    }

    /// Starts the timer at `now` unless it runs.
    pub(crate) fn arm_if_stopped(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.arm(now);
        }
    }

    /// Sets the deadline (the end of a dally).
    pub(crate) fn set(&mut self, at: Instant) {
        self.deadline = Some(at);
    }

    /// Stops the timer (it restarts with the next wait or send).
    pub(crate) fn stop(&mut self) {
        self.deadline = None;
    }

    /// The deadline to wait for; a waiting session always has one (a timer
    /// that was not running starts now), so every wait ends in a timeout that
    /// counts toward the retry limit. It is never later than `expiry`.
    pub(crate) fn wait_deadline(&mut self, now: Instant, expiry: Option<Instant>) -> Instant {
        // The timeout is computed only when the timer starts (not on every
        // wait: this runs once per packet handled).
        let rto = &self.rto;
        let timer = *self
            .deadline
            .get_or_insert_with(|| now.saturating_add(rto.current()));
        expiry.map_or(timer, |e| timer.min(e))
    }

    /// The timer expired: stops it and counts a retry. Returns the retries
    /// since the last progress.
    pub(crate) fn expired(&mut self) -> u32 {
        self.retries = self.retries.saturating_add(1);
        self.deadline = None;
        self.retries
    }

    /// Backs the timeout off after an expiry that is retried.
    pub(crate) fn back_off(&mut self) {
        self.rto.on_timeout();
    }

    /// The peer made progress: the retry count restarts.
    pub(crate) fn progress(&mut self) {
        self.retries = 0;
        self.rto.on_progress();
    }

    /// A round trip measured on a packet sent once.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        self.rto.sample(rtt);
    }

    /// Remembers (or forgets, with `None`) the round trip of the first copy
    /// of `block` after a retransmission.
    pub(crate) fn set_unsure(&mut self, block: u16, rtt: Option<Duration>) {
        self.unsure = rtt.map(|rtt| (block, rtt));
    }

    /// A duplicate ACK of `block`: if it is the block acknowledged after a
    /// retransmission, the timeout was most likely early: learn the round
    /// trip and restart the timer with it (if the first copy was lost after
    /// all, and this is the peer's own retransmission, the sample overstates
    /// the round trip once, within `max_rto`).
    pub(crate) fn duplicate_ack(&mut self, block: u16) {
        if let Some((_, rtt)) = self.unsure.take_if(|(b, _)| *b == block) {
            self.rto.sample(rtt);
            self.deadline = None;
        }
    }

    /// How long a receiver lingers after its final ACK: at least `dally`,
    /// long enough to hear a sender whose timer has backed off (up to the
    /// RTO ceiling), and, when a `timeout` was negotiated, twice that: the
    /// sender re-sends its last DATA after exactly that long, whatever the
    /// ceiling (RFC 1350 section 6: the final ACK must outlast the peer's
    /// retransmission). The option is at most 255 s, and a server accepts
    /// at most its `max_timeout`.
    pub(crate) fn linger(&self, limits: &Limits) -> Duration {
        let negotiated = self.rto.fixed().unwrap_or_default().saturating_mul(2);
        limits
            .dally
            .max(self.rto.current().saturating_mul(3).min(limits.max_rto))
            .max(negotiated)
    }
}

/// The hard deadline of a running transfer, whatever its timer says: the end
/// of an unverified session's lifetime (`started` + lifetime), or for a
/// verified `server` the moment it falls below the minimum rate, moving later
/// with every byte of `progress` (bytes the peer confirmed). `None`: no hard
/// deadline (a verified client, or a rate of 0).
pub(crate) fn expiry(
    limits: &Limits,
    started: Instant,
    verified: bool,
    server: bool,
    progress: u64,
) -> Option<(Instant, Expiry)> {
    if !verified {
        let end = started.saturating_add(limits.unverified_lifetime);
        return Some((end, Expiry::Unverified));
    }
    // A server's rule: a client decides for itself how long to wait.
    if !server {
        return None;
    }
    // `None` only for a rate of 0: the rule is off.
    let earned = progress
        .saturating_mul(1_000_000)
        .checked_div(u64::from(limits.min_rate))?;
    let end = started
        .saturating_add(limits.min_rate_grace)
        .saturating_add(Duration::from_micros(earned));
    Some((end, Expiry::TooSlow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(n)
    }

    #[test]
    fn a_wait_starts_the_timer_once_and_never_passes_the_expiry() {
        let limits = Limits::default();
        let mut t = Timer::new(&limits);
        assert_eq!(t.deadline(), None);
        let d = t.wait_deadline(ms(0), None);
        assert_eq!(d, ms(0) + limits.initial_rto);
        // A later wait keeps the running timer.
        assert_eq!(t.wait_deadline(ms(500), None), d);
        assert_eq!(t.wait_deadline(ms(500), Some(ms(10))), ms(10));
        t.stop();
        t.arm_if_stopped(ms(100));
        assert_eq!(t.deadline(), Some(ms(100) + limits.initial_rto));
        t.arm_if_stopped(ms(200));
        assert_eq!(t.deadline(), Some(ms(100) + limits.initial_rto));
    }

    #[test]
    fn expiries_count_until_progress() {
        let mut t = Timer::new(&Limits::default());
        t.arm(ms(0));
        assert_eq!(t.expired(), 1);
        assert_eq!(t.deadline(), None);
        t.back_off();
        assert!(t.rto() > Limits::default().initial_rto);
        assert_eq!(t.expired(), 2);
        t.progress();
        assert_eq!(t.expired(), 1);
    }

    #[test]
    fn a_duplicate_ack_of_the_unsure_block_samples_its_first_round_trip() {
        let limits = Limits::default();
        let mut t = Timer::new(&limits);
        t.set_unsure(7, Some(Duration::from_millis(40)));
        t.arm(ms(0));
        // Another block: nothing learned.
        t.duplicate_ack(8);
        assert!(t.deadline().is_some());
        assert_eq!(t.rto(), limits.initial_rto);
        t.duplicate_ack(7);
        assert_eq!(t.deadline(), None, "restarted with the new estimate");
        assert!(t.rto() < limits.initial_rto);
        // Learned once.
        let rto = t.rto();
        t.duplicate_ack(7);
        assert_eq!(t.rto(), rto);
    }

    #[test]
    fn the_linger_outlasts_a_backed_off_sender() {
        let limits = Limits::default();
        let mut t = Timer::new(&limits);
        assert_eq!(t.linger(&limits), limits.dally.max(limits.initial_rto * 3));
        for _ in 0..10 {
            t.back_off();
        }
        assert_eq!(t.linger(&limits), limits.dally.max(limits.max_rto));
    }

    /// A negotiated timeout above the RTO ceiling: the sender waits that
    /// long before it re-sends its last DATA, so the receiver stays twice
    /// as long to answer it.
    #[test]
    fn the_linger_outlasts_a_negotiated_timeout() {
        let limits = Limits::default();
        let mut t = Timer::new(&limits);
        t.reset(&limits, Some(30));
        assert!(limits.max_rto < Duration::from_secs(30));
        assert_eq!(t.linger(&limits), Duration::from_secs(60));
        t.reset(&limits, Some(1));
        assert_eq!(
            t.linger(&limits),
            limits.dally.max(Duration::from_secs(3)),
            "a short one: three timeouts, as without the option"
        );
    }

    #[test]
    fn hard_deadlines() {
        let limits = Limits::default();
        let start = ms(1000);
        assert_eq!(
            expiry(&limits, start, false, true, 0),
            Some((start + limits.unverified_lifetime, Expiry::Unverified))
        );
        assert_eq!(expiry(&limits, start, true, false, 0), None);
        let rate = u64::from(limits.min_rate);
        assert_eq!(
            expiry(&limits, start, true, true, rate * 2),
            Some((
                start + limits.min_rate_grace + Duration::from_secs(2),
                Expiry::TooSlow
            ))
        );
        let off = Limits {
            min_rate: 0,
            ..Limits::default()
        };
        assert_eq!(expiry(&off, start, true, true, 10), None);
    }
}
