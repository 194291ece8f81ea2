//! Retransmission timeout: fixed when the `timeout` option was negotiated,
//! otherwise estimated from round trips (RFC 6298 smoothing, Karn's rule:
//! the caller samples only packets that were not retransmitted), clamped to
//! [`Limits::min_rto`]..=[`Limits::max_rto`], doubled on each consecutive
//! timeout and reset on progress.
//!
//! [`Limits::min_rto`]: crate::options::Limits::min_rto
//! [`Limits::max_rto`]: crate::options::Limits::max_rto

use core::time::Duration;

use crate::options::Limits;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Rto {
    fixed: Option<Duration>,
    srtt: Option<Duration>,
    rttvar: Duration,
    initial: Duration,
    min: Duration,
    max: Duration,
    backoff: u32,
    /// [`Rto::current`], recomputed when an input changes (it is read far
    /// more often than they change).
    timeout: Duration,
}

/// Clock granularity term of RFC 6298 (`G`).
const GRANULARITY: Duration = Duration::from_millis(1);

impl Rto {
    pub(crate) fn new(limits: &Limits, timeout_option: Option<u8>) -> Self {
        let max = limits.max_rto.max(limits.min_rto);
        let mut rto = Rto {
            fixed: timeout_option.map(|s| Duration::from_secs(u64::from(s))),
            srtt: None,
            rttvar: Duration::ZERO,
            initial: limits.initial_rto.clamp(limits.min_rto, max),
            min: limits.min_rto,
            max,
            backoff: 0,
            timeout: Duration::ZERO,
        };
        rto.recompute();
        rto
    }

    /// The negotiated `timeout`, if any: the peer's timer too.
    pub(crate) fn fixed(&self) -> Option<Duration> {
        self.fixed
    }

    /// The current timeout, backoff included.
    pub(crate) fn current(&self) -> Duration {
        self.timeout
    }

    fn recompute(&mut self) {
        self.timeout = self.compute();
    }

    fn compute(&self) -> Duration {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        let base = match self.srtt {
            None => self.initial,
            Some(srtt) => srtt
                .saturating_add(self.rttvar.saturating_mul(4).max(GRANULARITY))
                .clamp(self.min, self.max),
        };
        base.saturating_mul(1u32 << self.backoff.min(16))
            .min(self.max)
    }

    /// A round-trip measurement of a packet sent once.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = div(rtt, 2);
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = div(self.rttvar.saturating_mul(3).saturating_add(delta), 4);
                self.srtt = Some(div(srtt.saturating_mul(7).saturating_add(rtt), 8));
            }
        }
        self.recompute();
    }

    /// Takes over the round-trip estimate of `other` (measured during the
    /// handshake, before the negotiated options were known).
    pub(crate) fn inherit(&mut self, other: &Rto) {
        self.srtt = other.srtt;
        self.rttvar = other.rttvar;
        self.recompute();
    }

    pub(crate) fn on_timeout(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
        self.recompute();
    }

    pub(crate) fn on_progress(&mut self) {
        if self.backoff != 0 {
            self.backoff = 0;
            self.recompute();
        }
    }
}

/// `d / n` for a constant `n > 0` (`checked_div` only fails for `n == 0`).
fn div(d: Duration, n: u32) -> Duration {
    d.checked_div(n).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            initial_rto: Duration::from_millis(1000),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(10),
            ..Limits::default()
        }
    }

    #[test]
    fn initial_then_estimated_then_backoff() {
        let mut r = Rto::new(&limits(), None);
        assert_eq!(r.current(), Duration::from_millis(1000));
        r.sample(Duration::from_millis(10));
        // srtt 10 + 4 * 5 = 30 ms
        assert_eq!(r.current(), Duration::from_millis(30));
        for _ in 0..20 {
            r.sample(Duration::from_millis(10));
        }
        assert!(
            r.current() >= Duration::from_millis(20) && r.current() < Duration::from_millis(30)
        );
        r.on_timeout();
        r.on_timeout();
        assert!(r.current() >= Duration::from_millis(80));
        for _ in 0..40 {
            r.on_timeout();
        }
        assert_eq!(r.current(), Duration::from_secs(10));
        r.on_progress();
        assert!(r.current() < Duration::from_millis(30));
    }

    #[test]
    fn floor_applies() {
        let mut r = Rto::new(&limits(), None);
        r.sample(Duration::from_micros(30));
        assert_eq!(r.current(), Duration::from_millis(20));
    }

    #[test]
    fn fixed_timeout_option() {
        let mut r = Rto::new(&limits(), Some(5));
        r.sample(Duration::from_millis(1));
        r.on_timeout();
        assert_eq!(r.current(), Duration::from_secs(5));
    }
}
