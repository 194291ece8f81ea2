//! Byte cursors for reading and writing packets without index arithmetic.

use crate::packet::BufferTooSmall;

/// A read cursor over a datagram: every read consumes from the front, so there
/// is never an index computed in one place and used in another.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// A big-endian `u16`, or `None` when fewer than two bytes remain.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let (head, rest) = self.rest.split_first_chunk::<2>()?;
        self.rest = rest;
        Some(u16::from_be_bytes(*head))
    }

    /// The bytes up to the next NUL (excluded), consuming the NUL too.
    pub(crate) fn cstr(&mut self) -> Option<&'a [u8]> {
        let nul = self.rest.iter().position(|&b| b == 0)?;
        let (s, rest) = self.rest.split_at(nul);
        // `rest` starts with the NUL found above.
        self.rest = rest.get(1..).unwrap_or_default();
        Some(s)
    }

    /// Everything not read yet, consuming it.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

/// A write cursor over a caller's buffer.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.pos.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u16(&mut self, value: u16) -> Result<(), BufferTooSmall> {
        self.bytes(&value.to_be_bytes())
    }

    /// `bytes` followed by a NUL terminator.
    pub(crate) fn cstr(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        self.bytes(bytes)?;
        self.bytes(&[0])
    }

    /// `value` in decimal ASCII followed by a NUL terminator.
    pub(crate) fn decimal(&mut self, value: u64) -> Result<(), BufferTooSmall> {
        let mut digits = [0u8; 20];
        let len = format_decimal(value, &mut digits);
        self.cstr(digits.get(..len).unwrap_or_default())
    }
}

/// Writes `value` in decimal into `out` (20 bytes hold any `u64`), returning the length.
pub(crate) fn format_decimal(mut value: u64, out: &mut [u8; 20]) -> usize {
    // Digits are written from the back of `tmp`; the slots left over at the
    // front tell how many there are.
    let mut tmp = [0u8; 20];
    let mut slots = tmp.iter_mut().rev();
    for slot in slots.by_ref() {
        // `value % 10` is one digit: the cast keeps it and the sum is at most b'9'.
        *slot = b'0'.saturating_add((value % 10) as u8);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let unused = slots.len();
    let digits = tmp.get(unused..).unwrap_or_default();
    for (dst, src) in out.iter_mut().zip(digits) {
        *dst = *src;
    }
    digits.len()
}

/// Number of decimal digits of `value`.
pub(crate) fn decimal_len(value: u64) -> usize {
    let mut digits = [0u8; 20];
    format_decimal(value, &mut digits)
}

/// Parses a non-empty string of ASCII digits into a `u64`; anything else
/// (signs, spaces, overflow) is `None`.
pub(crate) fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        // Radix 10 takes exactly the ASCII digits.
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trip() {
        for v in [0u64, 1, 9, 10, 512, 65464, u64::MAX] {
            let mut buf = [0u8; 21];
            let mut w = Writer::new(&mut buf);
            w.decimal(v).unwrap();
            let len = w.position();
            assert_eq!(len, decimal_len(v) + 1);
            assert_eq!(parse_decimal(&buf[..len - 1]), Some(v));
        }
    }

    #[test]
    fn decimal_rejects_garbage() {
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b" 1"), None);
        assert_eq!(parse_decimal(b"1x"), None);
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"007"), Some(7));
    }

    #[test]
    fn writer_reports_short_buffer() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        assert!(w.u16(1).is_ok());
        assert_eq!(w.cstr(b"a"), Err(BufferTooSmall));
    }

    #[test]
    fn reader_cstr() {
        let mut r = Reader::new(b"ab\0\0c");
        assert_eq!(r.cstr(), Some(&b"ab"[..]));
        assert_eq!(r.cstr(), Some(&b""[..]));
        assert_eq!(r.cstr(), None);
        assert_eq!(r.rest(), b"c");
        assert!(r.remaining().is_empty());
    }
}
