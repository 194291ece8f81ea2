//! A session's read-ahead buffer: the bookkeeping of the session driver's
//! reads (see [`SessionDriver`](crate::driver::SessionDriver)).
//!
//! Once the peer is verified, blocks come out of one buffer of two windows
//! (at least [`MIN_READ_AHEAD`], or [`MIN_READ_AHEAD_ON_THREAD`] on a thread
//! of its own, at most [`READ_AHEAD`] bytes: one read per many small
//! blocks), an optional buffer of the memory budget. While the session waits for its peer and
//! the buffer is less than half full, the driver tops it up, so the next
//! blocks' read is not on the round trip (tftpd-hpa reads the next block
//! while it waits for the ACK, too).

use std::io;

use crate::registry::Ticket;

/// Bytes a verified session reads from its source at once, for blocks up
/// to this size (larger blocks are read straight into their packets).
pub const READ_AHEAD: usize = 64 * 1024;
/// The smallest read-ahead buffer of a session on the async executor (a
/// lock-step session's of small blocks): one page, 8 blocks of 512 bytes
/// per read, as much as a stdio server reads at once. Many such sessions
/// run at once, so this is what each of them costs.
pub const MIN_READ_AHEAD: usize = 4 * 1024;
/// The smallest read-ahead buffer of a session on a thread of its own (the
/// threads executor): 32 blocks of 512 bytes per read. A lock-step
/// transfer there is a large file, one per thread, so fewer reads count
/// more than the memory.
pub const MIN_READ_AHEAD_ON_THREAD: usize = 16 * 1024;

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
    /// No buffer: blocks are read one by one, straight into their packets.
    pub(crate) fn none() -> Self {
        Self::with_size(0)
    }

    /// The size of a verified session's buffer for blocks of `block` bytes
    /// and a window of `window` blocks: two windows, at least `min` (the
    /// executor's: [`MIN_READ_AHEAD`] or [`MIN_READ_AHEAD_ON_THREAD`]), at
    /// most [`READ_AHEAD`]; none for larger blocks
    /// (read straight into their packets). A source of known `size` up to
    /// [`READ_AHEAD`] gets a buffer that holds it whole instead: one read
    /// takes the rest of it, and a file source then closes its descriptor
    /// (a burst of small files holds one descriptor per session, its
    /// socket, not two). It comes out of `ticket`'s lease only while the
    /// budget is plentiful: if the whole file does not fit, two windows;
    /// none if that does not fit either.
    pub(crate) fn size_for(
        block: usize,
        window: usize,
        min: usize,
        size: Option<u64>,
        mut ticket: Option<&mut Ticket>,
    ) -> usize {
        if block > READ_AHEAD {
            return 0;
        }
        let windows = block
            .saturating_mul(window)
            .saturating_mul(2)
            .clamp(min.min(READ_AHEAD), READ_AHEAD);
        let whole = size
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s <= READ_AHEAD);
        let mut reserve = |want: usize| {
            ticket
                .as_deref_mut()
                .is_none_or(|t| t.reserve_optional(want))
        };
        match whole {
            Some(whole) if reserve(whole) => whole,
            Some(whole) if whole <= windows => 0,
            _ if reserve(windows) => windows,
            _ => 0,
        }
    }

    fn with_size(size: usize) -> Self {
        ReadAhead {
            buf: vec![0; size],
            start: 0,
            end: 0,
            eof: false,
            error: None,
        }
    }

    /// Gives the buffer `size` bytes, keeping what it holds.
    pub(crate) fn resize(&mut self, size: usize) {
        let _ = self.free();
        self.buf.resize(size.max(self.end), 0);
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

    /// A [`Next::Direct`] read found the end of the source.
    pub(crate) fn ended(&mut self) {
        self.eof = true;
    }

    /// Moves buffered bytes into `out[*filled..]` and says what the block
    /// needs next. A failed read is returned here, once, when the block
    /// needs more than the bytes read before it.
    pub(crate) fn next(&mut self, out: &mut [u8], filled: &mut usize) -> io::Result<Next> {
        let available = self.buf.get(self.start..self.end).unwrap_or_default();
        let rest = out.get_mut(*filled..).unwrap_or_default();
        let n = available.len().min(rest.len());
        if let (Some(to), Some(from)) = (rest.get_mut(..n), available.get(..n)) {
            to.copy_from_slice(from);
        }
        self.start += n;
        *filled += n;
        let rest = out.len().saturating_sub(*filled);
        if rest == 0 {
            return Ok(Next::Done);
        }
        // The buffer is empty now.
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        Ok(if self.eof {
            Next::Done
        } else if self.buf.is_empty() || rest > self.buf.len() / 4 {
            Next::Direct
        } else {
            Next::Refill
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Fills `out` from `source` as the session driver does: refills of
    /// the buffer, single reads straight into the block.
    fn fill_from(ra: &mut ReadAhead, source: &mut dyn Read, out: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match ra.next(out, &mut filled)? {
                Next::Done => return Ok(filled),
                Next::Refill => {
                    let read = source.read(ra.free());
                    ra.record(read);
                }
                Next::Direct => match source.read(&mut out[filled..]) {
                    Ok(0) => ra.ended(),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// One top-up read, if due.
    fn top_up_from(ra: &mut ReadAhead, source: &mut dyn Read) {
        if ra.wants_top_up() {
            let read = source.read(ra.free());
            ra.record(read);
        }
    }

    /// A source of `data` in reads of at most `chunk` bytes, every other
    /// one interrupted; then `Ok(0)`, or an error when `fails`.
    struct Chunks<'a> {
        data: &'a [u8],
        chunk: usize,
        interrupt: bool,
        fails: bool,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() && self.fails {
                return Err(io::Error::other("gone"));
            }
            let n = self.data.len().min(buf.len()).min(self.chunk);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Serves `source` in blocks of `block` bytes through `ra`, topping up
    /// between blocks as a waiting session does; the bytes, and the error
    /// that ended it if any.
    fn serve(ra: &mut ReadAhead, source: &mut Chunks<'_>, block: usize) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut out = vec![0; block];
        loop {
            match fill_from(ra, source, &mut out) {
                Ok(n) => {
                    got.extend_from_slice(&out[..n]);
                    if n < block {
                        return (got, false);
                    }
                }
                Err(_) => return (got, true),
            }
            for _ in 0..4 {
                top_up_from(ra, source);
            }
        }
    }

    fn data() -> Vec<u8> {
        (0..300_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn blocks_come_out_whole_and_in_order_with_top_ups_between() {
        let data = data();
        for block in [512, 1468, 16_384, 40_000, 65_464] {
            for chunk in [usize::MAX, 1000, 7] {
                for size in [READ_AHEAD, 0] {
                    let mut source = Chunks {
                        data: &data,
                        chunk,
                        interrupt: false,
                        fails: false,
                    };
                    let mut ra = ReadAhead::with_size(size);
                    let (got, failed) = serve(&mut ra, &mut source, block);
                    assert!(!failed);
                    assert!(got == data, "block {block} chunk {chunk} buffer {size}");
                }
            }
        }
    }

    #[test]
    fn a_failure_comes_after_every_byte_read_before_it_and_once() {
        let data = data();
        for block in [512, 1468, 65_464] {
            let mut source = Chunks {
                data: &data,
                chunk: 1000,
                interrupt: false,
                fails: true,
            };
            let mut ra = ReadAhead::with_size(READ_AHEAD);
            let (got, failed) = serve(&mut ra, &mut source, block);
            assert!(failed, "block {block}");
            // Every whole block before the failure was served.
            assert_eq!(got.len(), data.len() / block * block, "block {block}");
            assert!(got == data[..got.len()]);
            // Reported once: a source that works again is read again.
            let mut out = vec![0; block];
            let mut more = &b"more"[..];
            assert_eq!(fill_from(&mut ra, &mut more, &mut out).unwrap(), 4);
        }
    }

    #[test]
    fn no_top_up_after_a_failure_or_the_end() {
        let mut ra = ReadAhead::with_size(READ_AHEAD);
        let mut failing = Chunks {
            data: b"",
            chunk: 1,
            interrupt: true,
            fails: true,
        };
        top_up_from(&mut ra, &mut failing);
        assert!(!ra.wants_top_up(), "no top-up after a failure");
        let mut ra = ReadAhead::with_size(READ_AHEAD);
        top_up_from(&mut ra, &mut &b""[..]);
        assert!(!ra.wants_top_up(), "no top-up after the end");
        assert!(!ReadAhead::with_size(0).wants_top_up(), "no buffer");
    }

    #[test]
    fn the_buffer_is_two_windows_within_its_bounds() {
        assert_eq!(
            ReadAhead::size_for(512, 1, MIN_READ_AHEAD, None, None),
            MIN_READ_AHEAD
        );
        assert_eq!(
            ReadAhead::size_for(1468, 1, MIN_READ_AHEAD, None, None),
            MIN_READ_AHEAD,
            "two lock-step blocks of 1468 are less than a page"
        );
        // On a thread of its own: the larger floor, the same two windows
        // above it.
        assert_eq!(
            ReadAhead::size_for(512, 1, MIN_READ_AHEAD_ON_THREAD, None, None),
            MIN_READ_AHEAD_ON_THREAD
        );
        assert_eq!(
            ReadAhead::size_for(1468, 8, MIN_READ_AHEAD_ON_THREAD, None, None),
            1468 * 16
        );
        assert_eq!(
            ReadAhead::size_for(1468, 8, MIN_READ_AHEAD, None, None),
            1468 * 16
        );
        assert_eq!(
            ReadAhead::size_for(1468, 64, MIN_READ_AHEAD, None, None),
            READ_AHEAD
        );
        assert_eq!(
            ReadAhead::size_for(READ_AHEAD, 1, MIN_READ_AHEAD, None, None),
            READ_AHEAD
        );
        assert_eq!(
            ReadAhead::size_for(READ_AHEAD + 1, 1, MIN_READ_AHEAD, None, None),
            0,
            "larger blocks get none"
        );
        // A known size up to READ_AHEAD: the whole source, smaller or
        // larger than two windows.
        assert_eq!(
            ReadAhead::size_for(1468, 1, MIN_READ_AHEAD, Some(3000), None),
            3000
        );
        assert_eq!(
            ReadAhead::size_for(1468, 1, MIN_READ_AHEAD, Some(READ_AHEAD as u64), None),
            READ_AHEAD
        );
        assert_eq!(
            ReadAhead::size_for(1468, 1, MIN_READ_AHEAD, Some(READ_AHEAD as u64 + 1), None),
            MIN_READ_AHEAD,
            "larger sources: two windows"
        );
        assert_eq!(
            ReadAhead::size_for(512, 1, MIN_READ_AHEAD, Some(0), None),
            0
        );
    }
}
