//! A session's read-ahead buffer, for both drivers (async and threads): the
//! buffer bookkeeping lives here; each driver only performs the reads.
//!
//! Once the peer is verified, blocks come out of one buffer of
//! [`READ_AHEAD`] bytes (one read per many small blocks), an optional
//! buffer of the memory budget. While the session waits for its peer and
//! the buffer is less than half full, the driver tops it up, so the next
//! blocks' read is not on the round trip (tftpd-hpa reads the next block
//! while it waits for the ACK, too).

use std::io::{self, Read};

use crate::registry::Ticket;

/// Bytes a verified session reads from its source at once, for blocks up
/// to this size (larger blocks are read straight into their packets).
pub const READ_AHEAD: usize = 64 * 1024;

/// The buffer. Each read returns what the source has (a stream's first
/// bytes are not held back to fill it).
pub(crate) struct ReadAhead {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// A read's failure, reported by the next fill.
    error: Option<io::Error>,
}

/// What filling a block needs next.
pub(crate) enum Next {
    /// The block is full, or the source has ended.
    Done,
    /// Read into [`ReadAhead::free`], then [`ReadAhead::record`] the result.
    Refill,
    /// The buffer is empty and the rest of the block large: read it straight
    /// into `out[filled..]`, then [`ReadAhead::record_direct`].
    Direct,
}

impl ReadAhead {
    /// The read-ahead for a session about to fill a block of `block` bytes,
    /// once its peer is verified (`None` before: an unverified peer gets no
    /// extra memory). Its buffer is empty, so blocks are read one by one,
    /// when the budget cannot spare it.
    pub(crate) fn for_session(ticket: Option<&mut Ticket>, block: usize) -> Option<Self> {
        if block > READ_AHEAD || !ticket.as_deref().is_none_or(Ticket::is_verified) {
            return None;
        }
        let granted = ticket.is_none_or(|t| t.reserve_optional(READ_AHEAD));
        Some(ReadAhead {
            buf: vec![0; if granted { READ_AHEAD } else { 0 }],
            start: 0,
            end: 0,
            eof: false,
            error: None,
        })
    }

    /// Whether a top-up is due: less than half the buffer is left and the
    /// source may have more.
    pub(crate) fn wants_top_up(&self) -> bool {
        !self.eof && self.error.is_none() && (self.end - self.start) < self.buf.len() / 2
    }

    /// The free room after what is left (moved to the front first).
    pub(crate) fn free(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Records a read into [`free`](Self::free).
    pub(crate) fn record(&mut self, read: io::Result<usize>) {
        match read {
            Ok(0) => self.eof = true,
            Ok(n) => self.end = (self.end + n).min(self.buf.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.error = Some(e),
        }
    }

    /// Records a [`Next::Direct`] read of `n` of `wanted` bytes (fewer:
    /// the source has ended).
    pub(crate) fn record_direct(&mut self, n: usize, wanted: usize) {
        self.eof = n < wanted;
    }

    /// Moves buffered bytes into `out[*filled..]` and says what the block
    /// needs next; a failed read is returned once, here.
    pub(crate) fn next(&mut self, out: &mut [u8], filled: &mut usize) -> io::Result<Next> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let available = self.buf.get(self.start..self.end).unwrap_or_default();
        let rest = out.get_mut(*filled..).unwrap_or_default();
        let n = available.len().min(rest.len());
        if let (Some(to), Some(from)) = (rest.get_mut(..n), available.get(..n)) {
            to.copy_from_slice(from);
        }
        self.start += n;
        *filled += n;
        let rest = out.len().saturating_sub(*filled);
        Ok(if rest == 0 || self.eof {
            Next::Done
        } else if self.buf.is_empty() || rest > self.buf.len() / 4 {
            Next::Direct
        } else {
            Next::Refill
        })
    }
}

/// The threads driver's reads (the async driver's are in `driver`).
impl ReadAhead {
    /// Fills `out` from a blocking `source`, until it is full or the source
    /// ends.
    pub(crate) fn fill_from(
        &mut self,
        source: &mut (dyn Read + Send),
        out: &mut [u8],
    ) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.next(out, &mut filled)? {
                Next::Done => return Ok(filled),
                Next::Refill => {
                    let read = source.read(self.free());
                    self.record(read);
                }
                Next::Direct => {
                    let rest = out.get_mut(filled..).unwrap_or_default();
                    let n = crate::blocking::read_full(source, rest)?;
                    self.record_direct(n, rest.len());
                    filled += n;
                }
            }
        }
    }

    /// Tops the buffer up from a blocking `source` while it is due.
    pub(crate) fn top_up_from(&mut self, source: &mut (dyn Read + Send)) {
        while self.wants_top_up() {
            let read = source.read(self.free());
            self.record(read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_out_whole_and_in_order_with_top_ups_between() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for block in [512, 1468, 16_384, 40_000, 65_464] {
            let mut source = &data[..];
            let mut ra = ReadAhead::for_session(None, block).unwrap();
            let mut got = Vec::new();
            let mut out = vec![0; block];
            loop {
                let n = ra.fill_from(&mut source, &mut out).unwrap();
                got.extend_from_slice(&out[..n]);
                if n < block {
                    break;
                }
                ra.top_up_from(&mut source);
            }
            assert_eq!(got, data, "block {block}");
        }
    }

    #[test]
    fn a_failed_top_up_is_reported_by_the_next_block_once() {
        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("gone"))
            }
        }
        let mut ra = ReadAhead::for_session(None, 512).unwrap();
        ra.top_up_from(&mut Failing);
        assert!(!ra.wants_top_up(), "no top-up after a failure");
        let mut out = [0; 512];
        assert!(ra.fill_from(&mut &b""[..], &mut out).is_err());
    }

    #[test]
    fn larger_blocks_get_no_read_ahead() {
        assert!(ReadAhead::for_session(None, READ_AHEAD + 1).is_none());
        assert!(ReadAhead::for_session(None, READ_AHEAD).is_some());
    }
}
