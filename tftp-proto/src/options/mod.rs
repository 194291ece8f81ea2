//! TFTP options (RFC 2347 framework; blksize RFC 2348; timeout and tsize
//! RFC 2349; windowsize RFC 7440), the local policy ([`Limits`]) and
//! negotiation for both sides.
//!
//! The parser ([`crate::packet`]) records what the peer sent; this module
//! decides. All option rules live here and nowhere else.
//!
//! # Server policy ([`negotiate`])
//!
//! | option | acknowledged | lowered | not acknowledged |
//! |---|---|---|---|
//! | `blksize` | 8 ..= the limit | above [`Limits::max_blksize`] (or above 65464, or above one packet in [`Limits::max_window_bytes`], but not below 512) → the limit | below 8, not a number, disabled |
//! | `timeout` | 1 ..= 255 and inside [`Limits::min_timeout`]..=[`Limits::max_timeout`] (default 1 ..= 10) | never (RFC 2349: the server may not change it) | 0, above 255, outside the limits, not a number, disabled |
//! | `tsize` | RRQ: answered with the file size; WRQ: echoed | – | size unknown (e.g. netascii or a stream), empty file (curl rejects `tsize=0`), not a number, disabled |
//! | `windowsize` | 1 ..= the limit | above [`Limits::max_windowsize`], or above what [`Limits::max_window_bytes`] allows at the negotiated blksize | 0, above 65535, not a number, disabled |
//!
//! Names are case-insensitive. Unknown options (including things other
//! servers let a client set, such as `retries`, `mode` or `default_timeout`)
//! are kept aside for statistics and never acknowledged. **Duplicates**: the
//! first occurrence of an option counts; later ones are ignored and counted
//! ([`RequestedOptions::duplicates`]); the same rule applies to an OACK read by
//! a client. If nothing is acknowledged there is no OACK at all (plain RFC 1350
//! answer), never an empty one.
//!
//! # Client policy ([`validate_oack`])
//!
//! The server may only answer options that were asked for; it may lower
//! `blksize` (not below 8) and `windowsize` (not below 1), must echo `timeout`,
//! may answer any `tsize` to a RRQ and must echo `tsize` to a WRQ. Anything else
//! is an [`OackError`], to be answered with ERROR 8.

use core::fmt;
use core::time::Duration;

use crate::codec::{parse_decimal, Writer};
use crate::packet::{BufferTooSmall, RawOptions};

mod limits;
mod negotiate;
mod oack;

pub use limits::{Limits, Rollover};
pub use negotiate::{negotiate, IgnoreReason, Negotiation, Verdict};
pub use oack::{validate_oack, OackError};

/// Default block size (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest `blksize` (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest `blksize` (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest `timeout`, seconds (RFC 2349).
pub const MIN_TIMEOUT: u8 = 1;
/// Largest `timeout`, seconds (RFC 2349).
pub const MAX_TIMEOUT: u8 = 255;
/// Default window size: lock-step (RFC 1350).
pub const DEFAULT_WINDOWSIZE: u16 = 1;
/// Largest `windowsize` (RFC 7440).
pub const MAX_WINDOWSIZE: u16 = u16::MAX;

/// Default for [`Limits::max_windowsize`].
pub const DEFAULT_MAX_WINDOWSIZE: u16 = 64;
/// Default for [`Limits::max_window_bytes`]: 512 KiB per session.
pub const DEFAULT_MAX_WINDOW_BYTES: usize = 512 * 1024;
/// Default for [`Limits::max_request_size`]: RFC 2347 caps a request at 512 bytes.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 512;
/// Default for [`Limits::retries`].
pub const DEFAULT_RETRIES: u32 = 6;
/// Default for [`Limits::initial_rto`].
pub const DEFAULT_INITIAL_RTO: Duration = Duration::from_millis(1000);
/// Default for [`Limits::min_rto`].
pub const DEFAULT_MIN_RTO: Duration = Duration::from_millis(20);
/// Default for [`Limits::max_rto`].
pub const DEFAULT_MAX_RTO: Duration = Duration::from_secs(10);
/// Default for [`Limits::dally`].
pub const DEFAULT_DALLY: Duration = Duration::from_secs(3);
/// Default for a client's [`Limits::dally`] ([`Limits::client`]): long
/// enough to re-acknowledge a final block that a server with a fixed
/// one-second timer retransmits.
pub const DEFAULT_CLIENT_DALLY: Duration = Duration::from_secs(1);
/// Default for a client's [`Limits::max_rto`] ([`Limits::client`]): with the
/// default 1 s first timeout and 6 retries, a silent server is given up
/// after 1 + 2 + 4 + 4 + 4 + 4 + 4 = 23 s (tftp-hpa gives up after 25 s).
pub const DEFAULT_CLIENT_MAX_RTO: Duration = Duration::from_secs(4);
/// Default for [`Limits::max_transfer_blocks`]: unbounded in practice.
pub const DEFAULT_MAX_TRANSFER_BLOCKS: u64 = u64::MAX;
/// Default for [`Limits::max_timeout`], seconds.
pub const DEFAULT_MAX_TIMEOUT: u8 = 10;
/// Default for [`Limits::unverified_retries`]: with the 1 s initial timeout
/// and its doubling, an unanswered request costs 4 datagrams (at 0, 1, 3 and
/// 7 s) and ends at 15 s.
pub const DEFAULT_UNVERIFIED_RETRIES: u32 = 3;
/// Default for [`Limits::unverified_lifetime`].
pub const DEFAULT_UNVERIFIED_LIFETIME: Duration = Duration::from_secs(15);
/// Default for [`Limits::min_rate`]: one 512-byte block per second.
pub const DEFAULT_MIN_RATE: u32 = 512;
/// Default for [`Limits::min_rate_grace`].
pub const DEFAULT_MIN_RATE_GRACE: Duration = Duration::from_secs(30);

/// The four TFTP options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptionName {
    /// `blksize` (RFC 2348).
    Blksize,
    /// `timeout` (RFC 2349).
    Timeout,
    /// `tsize` (RFC 2349).
    Tsize,
    /// `windowsize` (RFC 7440).
    Windowsize,
}

impl OptionName {
    /// Recognises an option name, case-insensitively.
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        [
            OptionName::Blksize,
            OptionName::Timeout,
            OptionName::Tsize,
            OptionName::Windowsize,
        ]
        .into_iter()
        .find(|o| name.eq_ignore_ascii_case(o.as_str().as_bytes()))
    }

    /// The canonical lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OptionName::Blksize => "blksize",
            OptionName::Timeout => "timeout",
            OptionName::Tsize => "tsize",
            OptionName::Windowsize => "windowsize",
        }
    }
}

impl fmt::Display for OptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Values of the four options: what a client asks for, or what an OACK
/// carries. `None` means absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TransferOptions {
    /// Block size in bytes.
    pub blksize: Option<u16>,
    /// Retransmission timeout in seconds.
    pub timeout: Option<u8>,
    /// Transfer size in bytes.
    pub tsize: Option<u64>,
    /// Blocks per window.
    pub windowsize: Option<u16>,
}

impl TransferOptions {
    /// True when no option is set (no OACK is sent for an empty set).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The block size in effect: the option or 512.
    pub fn block_size(&self) -> u16 {
        self.blksize.unwrap_or(DEFAULT_BLKSIZE)
    }

    /// The window size in effect: the option or 1.
    pub fn window_size(&self) -> u16 {
        self.windowsize.unwrap_or(DEFAULT_WINDOWSIZE)
    }

    /// The same options forced into their RFC ranges (`blksize` 8..=65464,
    /// `timeout` ≥ 1, `windowsize` ≥ 1): what a session runs with, whatever
    /// an application passed in.
    pub fn clamped_to_rfc(self) -> Self {
        TransferOptions {
            blksize: self.blksize.map(|b| b.clamp(MIN_BLKSIZE, MAX_BLKSIZE)),
            timeout: self.timeout.map(|t| t.max(MIN_TIMEOUT)),
            tsize: self.tsize,
            windowsize: self.windowsize.map(|w| w.max(1)),
        }
    }

    /// The same options inside `limits` as well: `blksize` at most
    /// [`Limits::max_blksize`], `windowsize` at most what
    /// [`Limits::max_window_at`] allows, so a session's window memory stays
    /// bounded whatever it is asked to run with.
    pub fn clamped_to(self, limits: &Limits) -> Self {
        let o = self.clamped_to_rfc();
        let blksize = o.blksize.map(|b| b.min(limits.effective_max_blksize()));
        let block = blksize.unwrap_or(DEFAULT_BLKSIZE);
        TransferOptions {
            blksize,
            windowsize: o.windowsize.map(|w| w.min(limits.max_window_at(block))),
            ..o
        }
    }

    /// Bytes of the `name NUL value NUL` pairs.
    pub fn encoded_len(&self) -> usize {
        use crate::codec::decimal_len;
        // At most four pairs of a few dozen bytes: nothing saturates.
        self.iter()
            .map(|(name, v)| {
                name.as_str()
                    .len()
                    .saturating_add(decimal_len(v))
                    .saturating_add(2)
            })
            .fold(0, usize::saturating_add)
    }

    /// The set options as `(name, value)` in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (OptionName, u64)> {
        [
            (OptionName::Blksize, self.blksize.map(u64::from)),
            (OptionName::Timeout, self.timeout.map(u64::from)),
            (OptionName::Tsize, self.tsize),
            (OptionName::Windowsize, self.windowsize.map(u64::from)),
        ]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v?)))
    }

    pub(crate) fn write_pairs(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        for (name, value) in self.iter() {
            w.cstr(name.as_str().as_bytes())?;
            w.decimal(value)?;
        }
        Ok(())
    }
}

/// Which options are enabled at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnabledOptions {
    /// Accept `blksize`.
    pub blksize: bool,
    /// Accept `timeout`.
    pub timeout: bool,
    /// Accept `tsize`.
    pub tsize: bool,
    /// Accept `windowsize`.
    pub windowsize: bool,
}

impl EnabledOptions {
    /// Every option enabled.
    pub const ALL: Self = Self {
        blksize: true,
        timeout: true,
        tsize: true,
        windowsize: true,
    };
    /// No option: every request is answered as RFC 1350 does.
    pub const NONE: Self = Self {
        blksize: false,
        timeout: false,
        tsize: false,
        windowsize: false,
    };

    fn get(&self, name: OptionName) -> bool {
        match name {
            OptionName::Blksize => self.blksize,
            OptionName::Timeout => self.timeout,
            OptionName::Tsize => self.tsize,
            OptionName::Windowsize => self.windowsize,
        }
    }
}

impl Default for EnabledOptions {
    fn default() -> Self {
        Self::ALL
    }
}

/// Direction of a transfer, named by the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Direction {
    /// RRQ: the server sends.
    Read,
    /// WRQ: the client sends.
    Write,
}

/// What the peer sent for one known option (first occurrence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requested {
    /// Not in the request.
    #[default]
    Absent,
    /// A decimal number.
    Value(u64),
    /// Present but not a decimal number that fits in 64 bits.
    NotNumeric,
}

impl Requested {
    fn from_value(value: &[u8]) -> Self {
        parse_decimal(value).map_or(Requested::NotNumeric, Requested::Value)
    }
}

/// The options of a request, sorted into the four known ones, unknown ones
/// and duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestedOptions<'a> {
    /// `blksize` as sent.
    pub blksize: Requested,
    /// `timeout` as sent.
    pub timeout: Requested,
    /// `tsize` as sent.
    pub tsize: Requested,
    /// `windowsize` as sent.
    pub windowsize: Requested,
    /// Options that are not TFTP options (never acknowledged).
    pub unknown: usize,
    /// Repeated known options that were ignored (the first one counts).
    pub duplicates: usize,
    raw: RawOptions<'a>,
}

impl<'a> RequestedOptions<'a> {
    /// Sorts a request's options.
    pub fn from_raw(raw: RawOptions<'a>) -> Self {
        let mut out = RequestedOptions {
            blksize: Requested::Absent,
            timeout: Requested::Absent,
            tsize: Requested::Absent,
            windowsize: Requested::Absent,
            unknown: 0,
            duplicates: 0,
            raw,
        };
        for pair in raw {
            let Some(name) = OptionName::from_bytes(pair.name) else {
                out.unknown = out.unknown.saturating_add(1);
                continue;
            };
            let slot = out.slot(name);
            if *slot == Requested::Absent {
                *slot = Requested::from_value(pair.value);
            } else {
                out.duplicates = out.duplicates.saturating_add(1);
            }
        }
        out
    }

    fn slot(&mut self, name: OptionName) -> &mut Requested {
        match name {
            OptionName::Blksize => &mut self.blksize,
            OptionName::Timeout => &mut self.timeout,
            OptionName::Tsize => &mut self.tsize,
            OptionName::Windowsize => &mut self.windowsize,
        }
    }

    /// What was sent for `name`.
    pub fn get(&self, name: OptionName) -> Requested {
        match name {
            OptionName::Blksize => self.blksize,
            OptionName::Timeout => self.timeout,
            OptionName::Tsize => self.tsize,
            OptionName::Windowsize => self.windowsize,
        }
    }

    /// All options as sent, in order (known, unknown and duplicates).
    pub fn raw(&self) -> RawOptions<'a> {
        self.raw
    }

    /// The options that are not TFTP options, in order.
    pub fn unknown_options(&self) -> impl Iterator<Item = crate::packet::OptionPair<'a>> {
        self.raw
            .iter()
            .filter(|p| OptionName::from_bytes(p.name).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build_options;

    fn req<'b>(buf: &'b mut [u8], pairs: &[(&[u8], &[u8])]) -> RequestedOptions<'b> {
        RequestedOptions::from_raw(build_options(buf, pairs).unwrap())
    }

    fn neg(
        pairs: &[(&[u8], &[u8])],
        limits: &Limits,
        dir: Direction,
        size: Option<u64>,
    ) -> Negotiation {
        let mut buf = [0u8; 512];
        negotiate(&req(&mut buf, pairs), limits, dir, size)
    }

    #[test]
    fn ipxe_request() {
        let n = neg(
            &[(b"blksize", b"1432"), (b"tsize", b"0")],
            &Limits::default(),
            Direction::Read,
            Some(1234),
        );
        assert_eq!(
            n.oack,
            TransferOptions {
                blksize: Some(1432),
                tsize: Some(1234),
                ..Default::default()
            }
        );
        assert_eq!(n.blksize, Verdict::Accepted);
        assert_eq!(n.tsize, Verdict::Accepted);
        assert_eq!(n.timeout, Verdict::NotRequested);
    }

    #[test]
    fn blksize_rules() {
        let l = Limits {
            max_blksize: 1468,
            ..Limits::default()
        };
        let b = |v: &[u8]| neg(&[(b"BLKSIZE", v)], &l, Direction::Read, None);
        assert_eq!(b(b"8").oack.blksize, Some(8));
        assert_eq!(b(b"7").blksize, Verdict::Ignored(IgnoreReason::OutOfRange));
        assert_eq!(b(b"7").oack, TransferOptions::default());
        assert_eq!(b(b"1468").oack.blksize, Some(1468));
        assert_eq!(b(b"1469").oack.blksize, Some(1468));
        assert_eq!(b(b"1469").blksize, Verdict::Lowered { requested: 1469 });
        assert_eq!(b(b"99999999").oack.blksize, Some(1468));
        assert_eq!(
            b(b"abc").blksize,
            Verdict::Ignored(IgnoreReason::NotNumeric)
        );
        let d = Limits::default();
        assert_eq!(
            neg(&[(b"blksize", b"65465")], &d, Direction::Read, None)
                .oack
                .blksize,
            Some(65464)
        );
        assert_eq!(
            neg(&[(b"blksize", b"65464")], &d, Direction::Read, None).blksize,
            Verdict::Accepted
        );
        let tiny = Limits {
            max_blksize: 0,
            ..Limits::default()
        };
        assert_eq!(
            neg(&[(b"blksize", b"512")], &tiny, Direction::Read, None)
                .oack
                .blksize,
            Some(8)
        );
    }

    #[test]
    fn timeout_rules() {
        let l = Limits {
            min_timeout: 2,
            max_timeout: 10,
            ..Limits::default()
        };
        let t = |v: &[u8]| neg(&[(b"timeout", v)], &l, Direction::Read, None);
        assert_eq!(t(b"0").timeout, Verdict::Ignored(IgnoreReason::OutOfRange));
        assert_eq!(
            t(b"256").timeout,
            Verdict::Ignored(IgnoreReason::OutOfRange)
        );
        assert_eq!(
            t(b"1").timeout,
            Verdict::Ignored(IgnoreReason::OutsideLimits)
        );
        assert_eq!(
            t(b"11").timeout,
            Verdict::Ignored(IgnoreReason::OutsideLimits)
        );
        assert_eq!(t(b"2").oack.timeout, Some(2));
        assert_eq!(t(b"10").oack.timeout, Some(10));
        // By default 1..=10: U-Boot's 5 and curl's 6 are acknowledged, a
        // slot-holding 255 (or 11) is not; the RFC maximum can be allowed.
        let d = Limits::default();
        let at = |v: &[u8], l: &Limits| neg(&[(b"timeout", v)], l, Direction::Read, None);
        assert_eq!(at(b"10", &d).oack.timeout, Some(10));
        assert_eq!(
            at(b"11", &d).timeout,
            Verdict::Ignored(IgnoreReason::OutsideLimits)
        );
        assert_eq!(
            at(b"255", &d).timeout,
            Verdict::Ignored(IgnoreReason::OutsideLimits)
        );
        let rfc = Limits {
            max_timeout: MAX_TIMEOUT,
            ..Limits::default()
        };
        assert_eq!(at(b"255", &rfc).oack.timeout, Some(255));
        assert_eq!(
            neg(&[(b"timeout", b"1")], &d, Direction::Read, None)
                .oack
                .timeout,
            Some(1)
        );
    }

    #[test]
    fn tsize_rules() {
        let d = Limits::default();
        assert_eq!(
            neg(&[(b"tsize", b"0")], &d, Direction::Read, None).tsize,
            Verdict::Ignored(IgnoreReason::SizeUnknown)
        );
        assert_eq!(
            neg(&[(b"tsize", b"0")], &d, Direction::Read, Some(0)).tsize,
            Verdict::Ignored(IgnoreReason::EmptyFile)
        );
        assert_eq!(
            neg(&[(b"tsize", b"0")], &d, Direction::Read, Some(1))
                .oack
                .tsize,
            Some(1)
        );
        assert_eq!(
            neg(&[(b"tsize", b"77")], &d, Direction::Write, None)
                .oack
                .tsize,
            Some(77)
        );
        assert_eq!(
            neg(&[(b"tsize", b"x")], &d, Direction::Write, None).tsize,
            Verdict::Ignored(IgnoreReason::NotNumeric)
        );
    }

    #[test]
    fn windowsize_rules() {
        let l = Limits {
            max_windowsize: 32,
            max_window_bytes: 16 * 1468,
            ..Limits::default()
        };
        let w = |b: &[u8], v: &[u8]| {
            neg(
                &[(b"blksize", b), (b"windowsize", v)],
                &l,
                Direction::Read,
                None,
            )
        };
        assert_eq!(
            w(b"1468", b"0").windowsize,
            Verdict::Ignored(IgnoreReason::OutOfRange)
        );
        assert_eq!(
            w(b"1468", b"65536").windowsize,
            Verdict::Ignored(IgnoreReason::OutOfRange)
        );
        assert_eq!(w(b"1468", b"16").oack.windowsize, Some(16));
        assert_eq!(w(b"1468", b"17").oack.windowsize, Some(16));
        assert_eq!(w(b"512", b"64").oack.windowsize, Some(32));
        // bytes in flight: 65464-byte blocks leave room for one only.
        assert_eq!(w(b"65464", b"16").oack.windowsize, Some(1));
        assert_eq!(
            w(b"65464", b"16").windowsize,
            Verdict::Lowered { requested: 16 }
        );
        // ... and a block itself no larger than the window memory.
        assert_eq!(w(b"65464", b"16").oack.blksize, Some(16 * 1468 - 4));
        let tiny = Limits {
            max_window_bytes: 100,
            ..Limits::default()
        };
        let b = |v: &[u8]| neg(&[(b"blksize", v)], &tiny, Direction::Read, None);
        assert_eq!(b(b"1468").oack.blksize, Some(512), "never below 512");
        assert_eq!(b(b"300").oack.blksize, Some(300));
    }

    #[test]
    fn unknown_duplicates_and_disabled() {
        let mut buf = [0u8; 512];
        let r = req(
            &mut buf,
            &[
                (b"retries", b"100"),
                (b"blksize", b"1024"),
                (b"Blksize", b"2048"),
                (b"mode", b"x"),
                (b"default_timeout", b"1"),
            ],
        );
        assert_eq!(r.unknown, 3);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.blksize, Requested::Value(1024));
        assert_eq!(r.unknown_options().count(), 3);
        let n = negotiate(&r, &Limits::default(), Direction::Read, None);
        assert_eq!(
            n.oack,
            TransferOptions {
                blksize: Some(1024),
                ..Default::default()
            }
        );
        let off = Limits {
            enabled: EnabledOptions::NONE,
            ..Limits::default()
        };
        let n = negotiate(&r, &off, Direction::Read, None);
        assert!(n.oack.is_empty());
        assert_eq!(n.blksize, Verdict::Ignored(IgnoreReason::Disabled));
    }

    #[test]
    fn oack_encoding() {
        let o = TransferOptions {
            blksize: Some(1432),
            tsize: Some(0),
            ..Default::default()
        };
        let mut buf = [0u8; 64];
        let n = crate::packet::encode_oack(&mut buf, &o).unwrap();
        assert_eq!(&buf[..n], b"\x00\x06blksize\x001432\x00tsize\x000\x00");
        assert_eq!(n, 2 + o.encoded_len());
    }

    fn oack(
        pairs: &[(&[u8], &[u8])],
        asked: &TransferOptions,
        dir: Direction,
    ) -> Result<TransferOptions, OackError> {
        let mut buf = [0u8; 512];
        validate_oack(asked, build_options(&mut buf, pairs).unwrap(), dir)
    }

    #[test]
    fn client_validation() {
        let asked = TransferOptions {
            blksize: Some(1468),
            timeout: Some(5),
            tsize: Some(0),
            windowsize: Some(16),
        };
        let r = oack(
            &[
                (b"blksize", b"1024"),
                (b"tsize", b"999"),
                (b"windowsize", b"4"),
                (b"timeout", b"5"),
            ],
            &asked,
            Direction::Read,
        );
        assert_eq!(
            r,
            Ok(TransferOptions {
                blksize: Some(1024),
                timeout: Some(5),
                tsize: Some(999),
                windowsize: Some(4)
            })
        );
        assert_eq!(
            oack(&[], &asked, Direction::Read),
            Ok(TransferOptions::default())
        );
        assert_eq!(
            oack(&[(b"blksize", b"1469")], &asked, Direction::Read),
            Err(OackError::BadValue(OptionName::Blksize))
        );
        assert_eq!(
            oack(&[(b"blksize", b"7")], &asked, Direction::Read),
            Err(OackError::BadValue(OptionName::Blksize))
        );
        assert_eq!(
            oack(&[(b"windowsize", b"0")], &asked, Direction::Read),
            Err(OackError::BadValue(OptionName::Windowsize))
        );
        assert_eq!(
            oack(&[(b"windowsize", b"17")], &asked, Direction::Read),
            Err(OackError::BadValue(OptionName::Windowsize))
        );
        assert_eq!(
            oack(&[(b"timeout", b"6")], &asked, Direction::Read),
            Err(OackError::BadValue(OptionName::Timeout))
        );
        assert_eq!(
            oack(&[(b"tsize", b"1")], &asked, Direction::Write),
            Err(OackError::BadValue(OptionName::Tsize))
        );
        assert_eq!(
            oack(&[(b"foo", b"1")], &asked, Direction::Read),
            Err(OackError::UnknownOption)
        );
        assert_eq!(
            oack(&[(b"blksize", b"x")], &asked, Direction::Read),
            Err(OackError::NotNumeric(OptionName::Blksize))
        );
        let none = TransferOptions::default();
        assert_eq!(
            oack(&[(b"tsize", b"1")], &none, Direction::Read),
            Err(OackError::NotRequested(OptionName::Tsize))
        );
        assert_eq!(
            oack(
                &[(b"blksize", b"512"), (b"blksize", b"9999")],
                &asked,
                Direction::Read
            )
            .unwrap()
            .blksize,
            Some(512)
        );
    }

    #[test]
    fn narrowing_only_restricts() {
        let server = Limits::default();
        let handler = Limits {
            max_blksize: 1024,
            enabled: EnabledOptions {
                windowsize: false,
                ..EnabledOptions::ALL
            },
            ..Limits::default()
        };
        let n = server.narrowed_by(&handler);
        assert_eq!(n.max_blksize, 1024);
        assert!(!n.enabled.windowsize);
        let wide = Limits {
            max_windowsize: 65535,
            ..Limits::default()
        };
        assert_eq!(
            server.narrowed_by(&wide).max_windowsize,
            DEFAULT_MAX_WINDOWSIZE
        );
    }
}
