//! Server-side negotiation ([`negotiate`]): the module docs of
//! [`crate::options`] give the rules.

use super::*;

/// What negotiation did with one option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The client did not ask for it.
    NotRequested,
    /// Acknowledged as asked (for a RRQ's `tsize`: answered with the size).
    Accepted,
    /// Acknowledged with a lower value than asked.
    Lowered {
        /// The value the client asked for.
        requested: u64,
    },
    /// Not acknowledged.
    Ignored(IgnoreReason),
}

/// Why an option was not acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Disabled by [`Limits::enabled`].
    Disabled,
    /// The value is not a decimal number.
    NotNumeric,
    /// Outside the range its RFC allows.
    OutOfRange,
    /// Inside the RFC range but outside [`Limits`] (a `timeout` the server
    /// may not change).
    OutsideLimits,
    /// `tsize` for a RRQ whose size is not known in advance.
    SizeUnknown,
    /// `tsize` for a RRQ of an empty file (curl rejects `tsize=0` in an
    /// OACK, so it is not answered).
    EmptyFile,
}

/// The server's answer to a request's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiation {
    /// What goes into the OACK; empty means no OACK (plain RFC 1350 answer).
    pub oack: TransferOptions,
    /// What happened to `blksize`.
    pub blksize: Verdict,
    /// What happened to `timeout`.
    pub timeout: Verdict,
    /// What happened to `tsize`.
    pub tsize: Verdict,
    /// What happened to `windowsize`.
    pub windowsize: Verdict,
}

/// Server-side negotiation: the client's options under `limits` (and the
/// size of the file for a RRQ's `tsize`, `None` if unknown) give the OACK.
/// See the module docs for the rules.
pub fn negotiate(
    requested: &RequestedOptions<'_>,
    limits: &Limits,
    direction: Direction,
    file_size: Option<u64>,
) -> Negotiation {
    let mut oack = TransferOptions::default();
    let gate = |name: OptionName| -> Result<u64, Verdict> {
        match requested.get(name) {
            Requested::Absent => Err(Verdict::NotRequested),
            _ if !limits.enabled.get(name) => Err(Verdict::Ignored(IgnoreReason::Disabled)),
            Requested::NotNumeric => Err(Verdict::Ignored(IgnoreReason::NotNumeric)),
            Requested::Value(v) => Ok(v),
        }
    };

    let blksize = gate(OptionName::Blksize).map_or_else(
        |v| v,
        |asked| {
            if asked < u64::from(MIN_BLKSIZE) {
                return Verdict::Ignored(IgnoreReason::OutOfRange);
            }
            let max = limits.effective_max_blksize();
            let granted = asked.min(u64::from(max)) as u16;
            oack.blksize = Some(granted);
            lowered_or_accepted(asked, granted.into())
        },
    );

    let timeout = gate(OptionName::Timeout).map_or_else(
        |v| v,
        |asked| {
            if !(u64::from(MIN_TIMEOUT)..=u64::from(MAX_TIMEOUT)).contains(&asked) {
                return Verdict::Ignored(IgnoreReason::OutOfRange);
            }
            if !(u64::from(limits.min_timeout)..=u64::from(limits.max_timeout)).contains(&asked) {
                return Verdict::Ignored(IgnoreReason::OutsideLimits);
            }
            oack.timeout = Some(asked as u8);
            Verdict::Accepted
        },
    );

    let tsize = gate(OptionName::Tsize).map_or_else(
        |v| v,
        |asked| match direction {
            Direction::Read => match file_size {
                // curl (up to at least 8.x) refuses an OACK with tsize 0 as
                // invalid; an empty file is sent without the answer instead.
                Some(0) => Verdict::Ignored(IgnoreReason::EmptyFile),
                Some(size) => {
                    oack.tsize = Some(size);
                    Verdict::Accepted
                }
                None => Verdict::Ignored(IgnoreReason::SizeUnknown),
            },
            Direction::Write => {
                oack.tsize = Some(asked);
                Verdict::Accepted
            }
        },
    );

    let windowsize = gate(OptionName::Windowsize).map_or_else(
        |v| v,
        |asked| {
            if !(1..=u64::from(MAX_WINDOWSIZE)).contains(&asked) {
                return Verdict::Ignored(IgnoreReason::OutOfRange);
            }
            let max = limits.max_window_at(oack.block_size());
            let granted = asked.min(u64::from(max)) as u16;
            oack.windowsize = Some(granted);
            lowered_or_accepted(asked, granted.into())
        },
    );

    Negotiation {
        oack,
        blksize,
        timeout,
        tsize,
        windowsize,
    }
}

fn lowered_or_accepted(asked: u64, granted: u64) -> Verdict {
    if granted < asked {
        Verdict::Lowered { requested: asked }
    } else {
        Verdict::Accepted
    }
}
