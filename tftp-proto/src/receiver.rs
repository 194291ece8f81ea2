//! The receiving engine (server answering a WRQ, client doing a RRQ).
//!
//! In-order DATA is copied (or netascii-decoded) once into a block buffer and
//! handed to the adapter; the ACK goes out after the adapter has taken the
//! bytes. ACK rules (RFC 7440):
//! - one ACK per `windowsize` in-order blocks, and one for the final block;
//! - DATA beyond a gap is discarded and answered at once with an ACK of the
//!   last in-order block (up to [`GAP_ACKS`] times per gap), so the sender
//!   restarts from there without waiting for a timeout;
//! - a duplicate of the last acknowledged block is re-acknowledged (a lost
//!   ACK); other duplicates are counted and dropped.

use alloc::vec;
use alloc::vec::Vec;

use crate::netascii::Decoder;
use crate::options::Rollover;
use crate::stats::incr;

/// ACKs sent for one gap before waiting for the sender or the timer.
pub(crate) const GAP_ACKS: u32 = 3;

pub(crate) struct Receiver {
    blksize: usize,
    window: u64,
    /// Next in-order block (64-bit, never wraps).
    expected: u64,
    /// In-order blocks since the last ACK.
    since_ack: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` waiting for the adapter.
    pending: Option<usize>,
    /// After the pending bytes are taken: acknowledge (and whether it is final).
    ack_after: Option<bool>,
    decoder: Option<Decoder>,
    gap_acks: u32,
    max_blocks: u64,
    /// How 64-bit block numbers go on the wire.
    rollover: Rollover,
}

/// What a DATA packet did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DataEffect {
    /// New in-order data is waiting to be delivered.
    Delivered,
    /// Re-send the last reply (ACK or OACK): our ACK was lost.
    Reack,
    /// A gap: acknowledge the last in-order block now (the window restarts
    /// after it).
    GapAck,
    /// Nothing to send.
    Ignored,
    /// The block exceeds the negotiated size.
    TooLarge,
    /// The transfer exceeds the block limit.
    TooManyBlocks,
}

impl Receiver {
    pub(crate) fn new(
        blksize: u16,
        window: u16,
        netascii: bool,
        max_blocks: u64,
        rollover: Rollover,
    ) -> Self {
        let blksize = usize::from(blksize);
        Receiver {
            blksize,
            window: u64::from(window.max(1)),
            expected: 1,
            since_ack: 0,
            // One more byte for a CR held back at the end of a netascii stream.
            buf: vec![0; blksize.saturating_add(1)],
            pending: None,
            ack_after: None,
            decoder: netascii.then(Decoder::new),
            gap_acks: 0,
            max_blocks: max_blocks.min(rollover.last_block()),
            rollover,
        }
    }

    /// Bytes of its buffers.
    pub(crate) fn memory(&self) -> usize {
        self.buf.len()
    }

    /// The wire number of [`Receiver::last_in_order`], to acknowledge it.
    pub(crate) fn last_in_order_wire(&self) -> u16 {
        self.rollover.wire(self.last_in_order())
    }

    /// Whether the block limit that ended the transfer is the block
    /// numbers' ([`Rollover::Refuse`]).
    pub(crate) fn out_of_numbers(&self) -> bool {
        self.expected > self.rollover.last_block()
    }

    /// The last block received in order (64-bit).
    pub(crate) fn last_in_order(&self) -> u64 {
        // `expected` starts at 1 and only grows.
        self.expected.saturating_sub(1)
    }

    /// The bytes to deliver.
    pub(crate) fn pending(&self) -> Option<&[u8]> {
        // `n` never exceeds the buffer it was written into.
        self.pending
            .map(|n| self.buf.get(..n).unwrap_or(self.buf.as_slice()))
    }

    /// Handles DATA `wire` with `payload`; `stats` is updated.
    pub(crate) fn on_data(
        &mut self,
        wire: u16,
        payload: &[u8],
        stats: &mut crate::stats::Stats,
    ) -> DataEffect {
        if self.pending.is_some() {
            // The adapter has not taken the last block yet (a driving bug):
            // drop this one; the sender will resend it.
            incr(&mut stats.ignored_packets);
            return DataEffect::Ignored;
        }
        if payload.len() > self.blksize {
            return DataEffect::TooLarge;
        }
        // A number no block near the expected one has (0 after a rollover
        // to 1) counts as a stale duplicate.
        let delta = self
            .rollover
            .distance(self.expected, wire)
            .unwrap_or(i64::MIN);
        // Past the last number there is, anything but a duplicate is the
        // block after it, whatever the peer numbers it.
        if delta >= 0 && self.out_of_numbers() {
            return DataEffect::TooManyBlocks;
        }
        if delta > 0 {
            incr(&mut stats.out_of_order_data);
            if self.gap_acks < GAP_ACKS {
                self.gap_acks = self.gap_acks.saturating_add(1);
                self.since_ack = 0;
                return DataEffect::GapAck;
            }
            return DataEffect::Ignored;
        }
        if delta < 0 {
            incr(&mut stats.duplicate_data);
            if delta == -1 && self.since_ack == 0 {
                return DataEffect::Reack;
            }
            return DataEffect::Ignored;
        }
        if self.expected > self.max_blocks {
            return DataEffect::TooManyBlocks;
        }
        let last = payload.len() < self.blksize;
        let n = match &mut self.decoder {
            None => {
                // `payload` is at most `blksize` bytes (checked above) and
                // `buf` holds one more.
                if let Some(dst) = self.buf.get_mut(..payload.len()) {
                    dst.copy_from_slice(payload);
                }
                payload.len()
            }
            Some(decoder) => {
                // `buf` holds blksize + 1 bytes: all of the payload fits.
                let (_, mut w) = decoder.decode(payload, &mut self.buf);
                if last {
                    // `w` bytes of `buf` were just written: `w <= buf.len()`.
                    let rest = self.buf.get_mut(w..).unwrap_or_default();
                    w = w.saturating_add(decoder.finish(rest));
                }
                w
            }
        };
        incr(&mut stats.blocks_received);
        stats.bytes_received = stats.bytes_received.saturating_add(payload.len() as u64);
        self.pending = Some(n);
        // Block counts (at most `max_blocks`, checked above): never saturate.
        self.expected = self.expected.saturating_add(1);
        self.since_ack = self.since_ack.saturating_add(1);
        self.gap_acks = 0;
        if last || self.since_ack >= self.window {
            self.ack_after = Some(last);
        }
        DataEffect::Delivered
    }

    /// The adapter took the pending bytes. Returns `Some(final)` when an ACK
    /// of [`Receiver::last_in_order`] must go out now.
    pub(crate) fn delivered(&mut self) -> Option<bool> {
        self.pending.take()?;
        let ack = self.ack_after.take();
        if ack.is_some() {
            self.since_ack = 0;
        }
        ack
    }

    /// The timer fired: the ACK about to go out covers every block received
    /// so far, and the sender restarts its window after it.
    pub(crate) fn restart_window(&mut self) {
        self.since_ack = 0;
    }

    /// In-order blocks received since the last ACK (0 right after an ACK).
    pub(crate) fn since_ack(&self) -> u64 {
        self.since_ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Direction;
    use crate::packet::Mode;
    use crate::time::Instant;

    fn stats() -> crate::stats::Stats {
        crate::stats::Stats::new(
            "127.0.0.1:1".parse().unwrap(),
            b"f",
            Mode::Octet,
            Direction::Write,
            b"",
            Instant::ZERO,
        )
    }

    #[test]
    fn acks_per_window_and_final() {
        let mut r = Receiver::new(4, 2, false, u64::MAX, Rollover::Zero);
        let mut st = stats();
        assert_eq!(r.on_data(1, b"abcd", &mut st), DataEffect::Delivered);
        assert_eq!(r.pending(), Some(&b"abcd"[..]));
        assert_eq!(r.delivered(), None);
        assert_eq!(r.on_data(2, b"efgh", &mut st), DataEffect::Delivered);
        assert_eq!(r.delivered(), Some(false));
        assert_eq!(r.last_in_order(), 2);
        assert_eq!(r.on_data(3, b"ij", &mut st), DataEffect::Delivered);
        assert_eq!(r.delivered(), Some(true));
        assert_eq!(st.blocks_received, 3);
        assert_eq!(st.bytes_received, 10);
    }

    #[test]
    fn gap_and_duplicates() {
        let mut r = Receiver::new(4, 4, false, u64::MAX, Rollover::Zero);
        let mut st = stats();
        assert_eq!(r.on_data(1, b"abcd", &mut st), DataEffect::Delivered);
        r.delivered();
        for _ in 0..GAP_ACKS {
            assert_eq!(r.on_data(3, b"abcd", &mut st), DataEffect::GapAck);
        }
        assert_eq!(r.on_data(4, b"abcd", &mut st), DataEffect::Ignored);
        assert_eq!(st.out_of_order_data, 4);
        // The gap ACK covered block 1: its duplicate is re-acknowledged.
        assert_eq!(r.on_data(1, b"abcd", &mut st), DataEffect::Reack);
        assert_eq!(r.on_data(2, b"abcd", &mut st), DataEffect::Delivered);
        // A duplicate mid-window is not re-acknowledged (it would look like a gap).
        r.delivered();
        assert_eq!(r.on_data(2, b"abcd", &mut st), DataEffect::Ignored);
        assert_eq!(r.on_data(3, b"abcd", &mut st), DataEffect::Delivered);
        assert_eq!(
            r.on_data(4, b"abcd", &mut st),
            DataEffect::Ignored,
            "not delivered yet"
        );
        r.delivered();
        assert_eq!(r.on_data(4, b"abcd", &mut st), DataEffect::Delivered);
        r.delivered();
        assert_eq!(r.on_data(5, b"abcd", &mut st), DataEffect::Delivered);
        // Window of 4 since the gap ACK of block 1: blocks 2..=5.
        assert_eq!(r.delivered(), Some(false));
        // After the window ACK, a duplicate of its last block is re-acknowledged.
        assert_eq!(r.on_data(5, b"abcd", &mut st), DataEffect::Reack);
        assert_eq!(r.on_data(4, b"abcd", &mut st), DataEffect::Ignored);
    }

    #[test]
    fn limits() {
        let mut r = Receiver::new(4, 1, false, 1, Rollover::Zero);
        let mut st = stats();
        assert_eq!(r.on_data(1, b"abcde", &mut st), DataEffect::TooLarge);
        assert_eq!(r.on_data(1, b"abcd", &mut st), DataEffect::Delivered);
        r.delivered();
        assert_eq!(r.on_data(2, b"", &mut st), DataEffect::TooManyBlocks);
    }

    #[test]
    fn netascii_final_cr() {
        let mut r = Receiver::new(4, 1, true, u64::MAX, Rollover::Zero);
        let mut st = stats();
        assert_eq!(r.on_data(1, b"a\r\nb", &mut st), DataEffect::Delivered);
        assert_eq!(r.pending(), Some(&b"a\nb"[..]));
        r.delivered();
        assert_eq!(r.on_data(2, b"\r", &mut st), DataEffect::Delivered);
        assert_eq!(r.pending(), Some(&b"\r"[..]));
    }
}
