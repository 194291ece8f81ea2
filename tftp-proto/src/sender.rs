//! The sending engine (server answering a RRQ, client doing a WRQ).
//!
//! One engine for lock-step and windowed transfers: lock-step is a window of
//! one. The engine keeps the current window's blocks (at most `windowsize`
//! slots of `4 + blksize` bytes, allocated once) so that retransmissions never
//! re-read the source; [`Limits::max_window_bytes`] bounds that memory.
//!
//! ACK rules (RFC 7440 with RFC 1123 4.2.3.1):
//! - an ACK of the last block sent slides the window;
//! - an ACK inside the window means the receiver saw a gap after it: the
//!   window restarts right after the acknowledged block, at once;
//! - an ACK of the block before the window is a duplicate and sends nothing
//!   (no Sorcerer's Apprentice), except that with a window above one the
//!   second duplicate for the same window position restarts it once (the
//!   receiver's gap report when the first block of a window was lost);
//! - anything else is stale and ignored.
//!
//! [`Limits::max_window_bytes`]: crate::options::Limits::max_window_bytes

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::num::{NonZeroU16, NonZeroU64};

use crate::netascii::Encoder;
use crate::options::Rollover;
use crate::packet::{encode_data_header, DATA_HEADER_LEN};
use crate::stats::incr;
use crate::time::Instant;

/// Duplicate ACKs for one window position that restart the window.
const DUP_ACK_THRESHOLD: u32 = 2;
/// Largest netascii staging buffer: a block is encoded from as many fills
/// as it takes, so a session's netascii memory stays small at any blksize.
const NETASCII_STAGE: usize = 4096;

pub(crate) struct Sender {
    blksize: usize,
    window: NonZeroU64,
    /// `window` slots of `DATA_HEADER_LEN + blksize` bytes; block `n` uses
    /// slot `(n - 1) % window`.
    slots: Vec<u8>,
    lens: Vec<usize>,
    sent_at: Vec<Instant>,
    resent: Vec<bool>,
    /// Oldest unacknowledged block.
    base: u64,
    /// Next block to transmit.
    next: u64,
    /// Highest block whose data is complete.
    filled: u64,
    /// Highest block ever transmitted.
    high: u64,
    /// The final (short) block, once known.
    last: Option<u64>,
    dup_acks: u32,
    /// Window position (`base`) already restarted by duplicate ACKs.
    restarted_at: u64,
    /// How many datagrams one transmission may carry.
    batch: Batch,
    source: Source,
    /// How 64-bit block numbers go on the wire.
    rollover: Rollover,
}

/// How many DATA packets of a window one [`Output::Transmit`] may carry:
/// consecutive full blocks, in contiguous slots, sent by the adapter with
/// one syscall (UDP GSO). The default is one packet per transmission.
///
/// [`Output::Transmit`]: crate::session::Output::Transmit
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Most datagrams in one transmission (at least 1).
    pub segments: usize,
    /// Most bytes in one transmission (a transmission always carries at
    /// least one datagram, whatever this says).
    pub bytes: usize,
    /// Packets longer than this always go alone (the path's MTU bounds a
    /// GSO segment).
    pub max_segment: usize,
}

impl Batch {
    /// One datagram per transmission.
    pub const ONE: Batch = Batch {
        segments: 1,
        bytes: usize::MAX,
        max_segment: 0,
    };

    /// This batch for packets of `segment` bytes: one datagram per
    /// transmission when they are longer than `max_segment`.
    fn for_segment(self, segment: usize) -> Batch {
        if segment > self.max_segment {
            Batch::ONE
        } else {
            Batch {
                segments: self.segments.max(1),
                ..self
            }
        }
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::ONE
    }
}

enum Source {
    /// Bytes are read straight into the slot's payload area.
    Octet,
    /// Bytes are read into a staging buffer and encoded into the slot.
    Netascii(Box<NetasciiStage>),
}

struct NetasciiStage {
    encoder: Encoder,
    stage: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Encoded bytes already in the block being built.
    partial: usize,
}

/// What the engine wants next.
pub(crate) enum Step {
    /// Transmit `len` bytes from the start of slot `slot`: `count` packets
    /// in consecutive slots, all of them full but the last.
    Transmit {
        slot: usize,
        len: usize,
        count: usize,
    },
    /// The adapter must fill this much of the block being built (`Octet`) or
    /// the staging buffer (`Netascii`).
    Fill,
    /// Nothing to do until an ACK or the timer.
    Wait,
}

/// What an ACK did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AckEffect {
    /// New data acknowledged; `rtt_from` is the first send time of the
    /// acknowledged block when it was sent only once (Karn). When it was
    /// retransmitted in lock-step, `unsure_from` is its first send time
    /// instead: should the peer acknowledge it again (most likely it got a
    /// second copy), this ACK answered the first, and the timeout was early.
    Progress {
        rtt_from: Option<Instant>,
        unsure_from: Option<Instant>,
    },
    /// The final block is acknowledged.
    Finished { rtt_from: Option<Instant> },
    /// A duplicate or stale ACK.
    Duplicate,
}

impl Sender {
    pub(crate) fn new(
        blksize: u16,
        window: u16,
        netascii: bool,
        batch: Batch,
        rollover: Rollover,
    ) -> Self {
        let blksize = usize::from(blksize);
        let window = NonZeroU16::new(window).unwrap_or(NonZeroU16::MIN);
        let w = usize::from(window.get());
        let source = if netascii {
            Source::Netascii(Box::new(NetasciiStage {
                encoder: Encoder::new(),
                stage: vec![0; blksize.min(NETASCII_STAGE)],
                start: 0,
                end: 0,
                eof: false,
                partial: 0,
            }))
        } else {
            Source::Octet
        };
        Sender {
            blksize,
            window: NonZeroU64::from(window),
            // At most 65535 slots of 65539 bytes (sessions run with clamped
            // options, far below that); saturating only guards the product.
            slots: vec![0; w.saturating_mul(slot_size(blksize))],
            lens: vec![0; w],
            sent_at: vec![Instant::ZERO; w],
            resent: vec![false; w],
            base: 1,
            next: 1,
            filled: 0,
            high: 0,
            last: None,
            dup_acks: 0,
            restarted_at: 0,
            batch: batch.for_segment(slot_size(blksize)),
            source,
            rollover,
        }
    }

    /// Whether the next step would build a block past the last one the
    /// block numbers allow ([`Rollover::Refuse`]): the transfer must end.
    pub(crate) fn out_of_numbers(&self) -> bool {
        self.last.is_none() && self.next > self.filled && self.filled >= self.rollover.last_block()
    }

    /// Changes how many packets one transmission may carry.
    pub(crate) fn set_batch(&mut self, batch: Batch) {
        self.batch = batch.for_segment(slot_size(self.blksize));
    }

    /// Bytes of its buffers: the window's slots and their bookkeeping, and
    /// the netascii staging buffer.
    pub(crate) fn memory(&self) -> usize {
        Self::memory_for(
            self.blksize,
            self.lens.len(),
            matches!(self.source, Source::Netascii(_)),
        )
    }

    /// Payload bytes the receiver acknowledged (blocks before the window are
    /// full, so this is exact until the final block).
    pub(crate) fn acknowledged_bytes(&self) -> u64 {
        // `base >= 1`; the product saturates only past 2^64 bytes.
        self.base
            .saturating_sub(1)
            .saturating_mul(self.blksize as u64)
    }

    /// What [`Sender::memory`] is for a sender of these parameters.
    fn memory_for(blksize: usize, window: usize, netascii: bool) -> usize {
        let per_slot = slot_size(blksize)
            .saturating_add(core::mem::size_of::<usize>())
            .saturating_add(core::mem::size_of::<Instant>())
            .saturating_add(1);
        let stage = if netascii {
            blksize.min(NETASCII_STAGE)
        } else {
            0
        };
        window.max(1).saturating_mul(per_slot).saturating_add(stage)
    }

    /// The slot of `block` (blocks start at 1): always below `window`.
    fn slot(&self, block: u64) -> usize {
        (block.saturating_sub(1) % self.window) as usize
    }

    fn slot_bytes(&mut self, slot: usize) -> &mut [u8] {
        slot_in(&mut self.slots, self.blksize, slot)
    }

    /// Bytes of a transmission: `len` bytes from the start of slot `slot`
    /// (what `step` returned: one packet, or consecutive ones).
    pub(crate) fn packet(&mut self, slot: usize, len: usize) -> &[u8] {
        let start = slot.saturating_mul(slot_size(self.blksize));
        self.slots
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }

    /// Bytes of one full packet: the segment size of a batched transmission.
    pub(crate) fn segment_size(&self) -> usize {
        slot_size(self.blksize)
    }

    /// Blocks transmitted and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> bool {
        self.next > self.base
    }

    /// The highest block number transmitted so far (64-bit).
    #[cfg(test)]
    pub(crate) fn highest_sent(&self) -> u64 {
        self.high
    }

    /// Decides the next step; records the transmission it returns.
    pub(crate) fn step(&mut self, now: Instant, stats: &mut crate::stats::Stats) -> Step {
        loop {
            // Block numbers are 64-bit and count from 1: adding 1 to them
            // (or the window) never saturates.
            if self.next <= self.filled && !self.fill_first() {
                let slot = self.slot(self.next);
                let mut len = self.transmit_next(now, stats);
                let mut count = 1;
                let segment = slot_size(self.blksize);
                // Consecutive full packets in the following slots join it.
                while count < self.batch.segments
                    && len == count.saturating_mul(segment)
                    && self.next <= self.filled
                    && self.slot(self.next) == slot.saturating_add(count)
                    && len.saturating_add(self.packet_len(self.next)) <= self.batch.bytes
                {
                    len = len.saturating_add(self.transmit_next(now, stats));
                    count = count.saturating_add(1);
                }
                return Step::Transmit { slot, len, count };
            }
            let room = self.filled.saturating_add(1) < self.base.saturating_add(self.window.get());
            // No block past the last number there is (see `out_of_numbers`).
            if self.last.is_some() || !room || self.filled >= self.rollover.last_block() {
                return Step::Wait;
            }
            // Build block `filled + 1`.
            let block = self.filled.saturating_add(1);
            let slot = self.slot(block);
            let blksize = self.blksize;
            match &mut self.source {
                Source::Octet => return Step::Fill,
                Source::Netascii(st) => {
                    // `start <= end <= stage.len()` and `partial <= blksize`:
                    // the sub-slices always exist.
                    let payload = slot_in(&mut self.slots, blksize, slot)
                        .get_mut(DATA_HEADER_LEN..)
                        .unwrap_or_default();
                    let (c, w) = st.encoder.encode(
                        st.stage.get(st.start..st.end).unwrap_or_default(),
                        payload.get_mut(st.partial..).unwrap_or_default(),
                    );
                    st.start = st.start.saturating_add(c);
                    st.partial = st.partial.saturating_add(w);
                    let drained = st.start == st.end && !st.encoder.has_pending();
                    if st.partial == blksize || (drained && st.eof) {
                        let len = st.partial;
                        st.partial = 0;
                        self.complete(len);
                        continue;
                    }
                    if drained {
                        return Step::Fill;
                    }
                }
            }
        }
    }

    /// Length of the packet of `block` (filled).
    fn packet_len(&self, block: u64) -> usize {
        let payload = self.lens.get(self.slot(block)).copied().unwrap_or(0);
        DATA_HEADER_LEN.saturating_add(payload)
    }

    /// Records the transmission of block `next` (which is filled) and
    /// returns its packet's length.
    fn transmit_next(&mut self, now: Instant, stats: &mut crate::stats::Stats) -> usize {
        let n = self.next;
        let slot = self.slot(n);
        // Slot indexes are below `window`, the length of the per-slot
        // vectors: the lookups below always succeed.
        let payload_len = self.lens.get(slot).copied().unwrap_or(0);
        if n <= self.high {
            if let Some(resent) = self.resent.get_mut(slot) {
                *resent = true;
            }
            incr(&mut stats.retransmits);
        } else {
            self.high = n;
            if let Some(sent_at) = self.sent_at.get_mut(slot) {
                *sent_at = now;
            }
            if let Some(resent) = self.resent.get_mut(slot) {
                *resent = false;
            }
            incr(&mut stats.blocks_sent);
            stats.bytes_sent = stats.bytes_sent.saturating_add(payload_len as u64);
        }
        incr(&mut stats.data_packets_sent);
        self.next = n.saturating_add(1);
        self.packet_len(n)
    }

    /// With batching, new blocks are built before any of them is sent, so
    /// that they go out together: true while the unsent new blocks are
    /// fewer than a batch, the window has room, the next block's slot
    /// follows theirs and the source is not exhausted. The first block
    /// after the peer acknowledged everything goes alone at once, so the
    /// peer is busy with it while the rest of the window is built.
    fn fill_first(&self) -> bool {
        let pending = self.filled.saturating_add(1).saturating_sub(self.next);
        self.batch.segments > 1
            && self.in_flight()
            && self.next > self.high
            && self.last.is_none()
            && pending < self.batch.segments as u64
            && self.filled.saturating_add(1) < self.base.saturating_add(self.window.get())
            && self.slot(self.filled.saturating_add(1))
                == self.slot(self.next).saturating_add(pending as usize)
            && (pending.saturating_add(1) as usize).saturating_mul(slot_size(self.blksize))
                <= self.batch.bytes
    }

    /// The buffer the adapter must fill after [`Step::Fill`].
    pub(crate) fn fill_buffer(&mut self) -> &mut [u8] {
        let slot = self.slot(self.filled.saturating_add(1));
        if matches!(self.source, Source::Octet) {
            // A slot is the header and `blksize` bytes of payload.
            return self
                .slot_bytes(slot)
                .get_mut(DATA_HEADER_LEN..)
                .unwrap_or_default();
        }
        match &mut self.source {
            Source::Netascii(st) => &mut st.stage[..],
            Source::Octet => &mut [],
        }
    }

    /// The adapter put `n` bytes into the fill buffer; fewer than its length
    /// means the source is exhausted.
    pub(crate) fn filled(&mut self, n: usize) {
        if self.last.is_some() {
            return;
        }
        match &mut self.source {
            Source::Octet => {
                let n = n.min(self.blksize);
                self.complete(n);
            }
            Source::Netascii(st) => {
                let n = n.min(st.stage.len());
                st.start = 0;
                st.end = n;
                st.eof = n < st.stage.len();
            }
        }
    }

    fn complete(&mut self, len: usize) {
        let block = self.filled.saturating_add(1);
        let slot = self.slot(block);
        if let Some(slot_len) = self.lens.get_mut(slot) {
            *slot_len = len;
        }
        let wire = self.rollover.wire(block);
        // NOTE(unwrap): a slot always has room for the 4-byte header.
        #[allow(clippy::expect_used)]
        encode_data_header(self.slot_bytes(slot), wire).expect("slot holds a header");
        self.filled = block;
        if len < self.blksize {
            self.last = Some(block);
        }
    }

    /// Handles an ACK with the 16-bit block number `wire`.
    pub(crate) fn on_ack(&mut self, wire: u16) -> AckEffect {
        // `next >= base >= 1`, and 64-bit block numbers never reach the top.
        let lo = self.base.saturating_sub(1);
        let hi = self.next.saturating_sub(1);
        let Some(ahead) = self.rollover.forward(lo, wire) else {
            // A number no block near the window has (0 after a rollover
            // to 1).
            return AckEffect::Duplicate;
        };
        let a = lo.saturating_add(ahead);
        if a == lo {
            self.dup_acks = self.dup_acks.saturating_add(1);
            if self.window.get() > 1
                && self.dup_acks >= DUP_ACK_THRESHOLD
                && self.restarted_at != self.base
                && self.in_flight()
            {
                self.restarted_at = self.base;
                self.next = self.base;
            }
            return AckEffect::Duplicate;
        }
        if a > hi {
            return AckEffect::Duplicate;
        }
        let slot = self.slot(a);
        // Lock-step only: in a window, a repeated ACK is how the peer
        // reports a gap, not a second copy.
        let lock_step = self.window.get() == 1;
        let (rtt_from, unsure_from) = match (self.resent.get(slot), self.sent_at.get(slot)) {
            (Some(false), Some(&sent_at)) => (Some(sent_at), None),
            (_, sent_at) => (None, sent_at.copied().filter(|_| lock_step)),
        };
        self.base = a.saturating_add(1);
        self.dup_acks = 0;
        if a < hi {
            // A gap after `a`: restart the window there, once for this position.
            self.restarted_at = self.base;
            self.next = self.base;
        }
        if self.last == Some(a) {
            AckEffect::Finished { rtt_from }
        } else {
            AckEffect::Progress {
                rtt_from,
                unsure_from,
            }
        }
    }

    /// The retransmission timer fired: resend the window from its start.
    pub(crate) fn on_timeout(&mut self) {
        self.next = self.base;
    }
}

/// Bytes of one slot: the DATA header and `blksize` bytes of payload.
fn slot_size(blksize: usize) -> usize {
    DATA_HEADER_LEN.saturating_add(blksize)
}

/// Slot `slot` of `slots` (`window` slots of [`slot_size`] bytes); the slot
/// index is always below `window`, so the slot always exists.
fn slot_in(slots: &mut [u8], blksize: usize, slot: usize) -> &mut [u8] {
    slots
        .chunks_exact_mut(slot_size(blksize))
        .nth(slot)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Direction;
    use crate::packet::Mode;

    fn stats() -> crate::stats::Stats {
        crate::stats::Stats::new(
            "127.0.0.1:1".parse().unwrap(),
            b"f",
            Mode::Octet,
            Direction::Read,
            b"",
            Instant::ZERO,
        )
    }

    /// Drives the sender with `data`, returning the block numbers transmitted.
    fn pump(s: &mut Sender, data: &mut &[u8], st: &mut crate::stats::Stats) -> Vec<u16> {
        pump_batches(s, data, st).concat()
    }

    #[test]
    fn window_slides_and_restarts_on_gap() {
        let mut s = Sender::new(8, 4, false, Batch::ONE, Rollover::Zero);
        let mut st = stats();
        let bytes = [7u8; 8 * 10];
        let mut data = &bytes[..];
        assert_eq!(pump(&mut s, &mut data, &mut st), [1, 2, 3, 4]);
        assert!(matches!(s.on_ack(4), AckEffect::Progress { .. }));
        assert_eq!(pump(&mut s, &mut data, &mut st), [5, 6, 7, 8]);
        // Gap after 5: resend from 6 at once.
        assert!(matches!(s.on_ack(5), AckEffect::Progress { .. }));
        assert_eq!(pump(&mut s, &mut data, &mut st), [6, 7, 8, 9]);
        assert_eq!(st.retransmits, 3);
        // Duplicates of 5 do nothing (Sorcerer's Apprentice), even twice:
        // this position was already restarted.
        assert_eq!(s.on_ack(5), AckEffect::Duplicate);
        assert_eq!(s.on_ack(5), AckEffect::Duplicate);
        assert_eq!(pump(&mut s, &mut data, &mut st), Vec::<u16>::new());
        assert!(matches!(s.on_ack(9), AckEffect::Progress { .. }));
        // 10 full blocks, then the empty final block 11.
        assert_eq!(pump(&mut s, &mut data, &mut st), [10, 11]);
        assert!(matches!(s.on_ack(11), AckEffect::Finished { .. }));
    }

    #[test]
    fn lock_step_duplicate_ack_sends_nothing() {
        let mut s = Sender::new(8, 1, false, Batch::ONE, Rollover::Zero);
        let mut st = stats();
        let bytes = [1u8; 20];
        let mut data = &bytes[..];
        assert_eq!(pump(&mut s, &mut data, &mut st), [1]);
        s.on_ack(1);
        assert_eq!(pump(&mut s, &mut data, &mut st), [2]);
        for _ in 0..5 {
            assert_eq!(s.on_ack(1), AckEffect::Duplicate);
            assert_eq!(pump(&mut s, &mut data, &mut st), Vec::<u16>::new());
        }
        s.on_timeout();
        assert_eq!(pump(&mut s, &mut data, &mut st), [2]);
        assert_eq!(st.retransmits, 1);
    }

    #[test]
    fn first_block_of_window_lost_restarts_after_two_duplicates() {
        let mut s = Sender::new(8, 4, false, Batch::ONE, Rollover::Zero);
        let mut st = stats();
        let bytes = [1u8; 8 * 9];
        let mut data = &bytes[..];
        pump(&mut s, &mut data, &mut st);
        s.on_ack(4);
        assert_eq!(pump(&mut s, &mut data, &mut st), [5, 6, 7, 8]);
        assert_eq!(s.on_ack(4), AckEffect::Duplicate);
        assert_eq!(pump(&mut s, &mut data, &mut st), Vec::<u16>::new());
        assert_eq!(s.on_ack(4), AckEffect::Duplicate);
        assert_eq!(pump(&mut s, &mut data, &mut st), [5, 6, 7, 8]);
        assert_eq!(s.on_ack(4), AckEffect::Duplicate);
        assert_eq!(pump(&mut s, &mut data, &mut st), Vec::<u16>::new());
    }

    #[test]
    fn rollover_maps_acks_to_64_bits() {
        let mut s = Sender::new(8, 2, false, Batch::ONE, Rollover::Zero);
        let mut st = stats();
        let bytes = vec![0u8; 8 * 65_540];
        let mut data = &bytes[..];
        let mut acked = 0u64;
        while acked < 65_538 {
            let sent = pump(&mut s, &mut data, &mut st);
            let last = *sent.last().unwrap();
            assert!(matches!(s.on_ack(last), AckEffect::Progress { .. }));
            acked += sent.len() as u64;
        }
        assert_eq!(s.highest_sent(), 65_538);
        assert_eq!(pump(&mut s, &mut data, &mut st), [3, 4]);
    }

    /// With [`Rollover::One`], 65535 is followed by 1, and ACKs map back to
    /// the 64-bit blocks across it (a stray ACK 0 is a duplicate).
    #[test]
    fn rollover_to_one() {
        let mut s = Sender::new(8, 2, false, Batch::ONE, Rollover::One);
        let mut st = stats();
        let bytes = vec![0u8; 8 * 65_540];
        let mut data = &bytes[..];
        let mut wires = Vec::new();
        let mut acked = 0u64;
        while acked < 65_538 {
            let sent = pump(&mut s, &mut data, &mut st);
            wires.extend_from_slice(&sent);
            let last = *sent.last().unwrap();
            assert!(matches!(s.on_ack(last), AckEffect::Progress { .. }));
            acked += sent.len() as u64;
        }
        assert_eq!(&wires[65_532..65_538], [65_533, 65_534, 65_535, 1, 2, 3]);
        assert_eq!(s.highest_sent(), 65_538);
        assert_eq!(s.on_ack(0), AckEffect::Duplicate);
        assert_eq!(pump(&mut s, &mut data, &mut st), [4, 5]);
    }

    /// With [`Rollover::Refuse`], block 65535 is the last one there can be:
    /// past it the sender is out of numbers (whatever its window).
    #[test]
    fn refused_rollover_ends_at_65535() {
        for window in [1, 4] {
            let mut s = Sender::new(8, window, false, Batch::ONE, Rollover::Refuse);
            let mut st = stats();
            let bytes = vec![0u8; 8 * 65_536];
            let mut data = &bytes[..];
            let mut highest = 0;
            while !s.out_of_numbers() {
                let sent = pump(&mut s, &mut data, &mut st);
                if let Some(&last) = sent.last() {
                    highest = last;
                    s.on_ack(last);
                }
            }
            assert_eq!(highest, 65_535, "window {window}");
            assert_eq!(s.highest_sent(), 65_535);
        }
        // A file that ends before 65535 blocks never runs out.
        let mut s = Sender::new(8, 1, false, Batch::ONE, Rollover::Refuse);
        let mut st = stats();
        let bytes = vec![0u8; 8 * 65_534 + 3];
        let mut data = &bytes[..];
        loop {
            assert!(!s.out_of_numbers());
            let sent = pump(&mut s, &mut data, &mut st);
            let last = *sent.last().unwrap();
            if let AckEffect::Finished { .. } = s.on_ack(last) {
                assert_eq!(last, 65_535);
                break;
            }
        }
    }

    /// Drives the sender with `data`, returning each transmission's block
    /// numbers.
    fn pump_batches(
        s: &mut Sender,
        data: &mut &[u8],
        st: &mut crate::stats::Stats,
    ) -> Vec<Vec<u16>> {
        let mut sent = Vec::new();
        loop {
            match s.step(Instant::ZERO, st) {
                Step::Transmit { slot, len, count } => {
                    let p = s.packet(slot, len).to_vec();
                    let blocks: Vec<u16> = p
                        .chunks(4 + 8)
                        .map(|packet| u16::from_be_bytes([packet[2], packet[3]]))
                        .collect();
                    assert_eq!(blocks.len(), count);
                    sent.push(blocks);
                }
                Step::Fill => {
                    let buf = s.fill_buffer();
                    let n = buf.len().min(data.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    *data = &data[n..];
                    s.filled(n);
                }
                Step::Wait => return sent,
            }
        }
    }

    const BATCH4: Batch = Batch {
        segments: 4,
        bytes: 1000,
        max_segment: 12,
    };

    #[test]
    fn batches_carry_consecutive_blocks_after_a_lone_first() {
        let mut s = Sender::new(8, 8, false, BATCH4, Rollover::Zero);
        let mut st = stats();
        let bytes = [3u8; 8 * 13 + 5];
        let mut data = &bytes[..];
        // The first block goes alone (the peer waits); the rest of the
        // window in batches of at most 4.
        assert_eq!(
            pump_batches(&mut s, &mut data, &mut st),
            [vec![1], vec![2, 3, 4, 5], vec![6, 7, 8]]
        );
        assert_eq!(st.data_packets_sent, 8);
        // A gap after 5: the resend of 6..8 is one batch (up to the last
        // slot); the new blocks 9.. start again at the first slot.
        s.on_ack(5);
        assert_eq!(
            pump_batches(&mut s, &mut data, &mut st),
            [vec![6, 7, 8], vec![9, 10, 11, 12], vec![13]]
        );
        assert_eq!(st.retransmits, 3);
        s.on_ack(13);
        // The short final block ends a run.
        assert_eq!(pump_batches(&mut s, &mut data, &mut st), [vec![14]]);
        assert!(matches!(s.on_ack(14), AckEffect::Finished { .. }));
    }

    #[test]
    fn a_timeout_resends_the_window_in_batches() {
        let mut s = Sender::new(8, 4, false, BATCH4, Rollover::Zero);
        let mut st = stats();
        let bytes = [3u8; 8 * 10];
        let mut data = &bytes[..];
        assert_eq!(
            pump_batches(&mut s, &mut data, &mut st),
            [vec![1], vec![2, 3, 4]]
        );
        s.on_timeout();
        assert_eq!(pump_batches(&mut s, &mut data, &mut st), [vec![1, 2, 3, 4]]);
    }

    #[test]
    fn batch_limits_are_kept() {
        // Bytes: two packets of 12 fit in 30, three do not.
        let by_bytes = Batch {
            bytes: 30,
            ..BATCH4
        };
        let mut s = Sender::new(8, 8, false, by_bytes, Rollover::Zero);
        let mut st = stats();
        let bytes = [3u8; 8 * 10];
        let mut data = &bytes[..];
        assert_eq!(
            pump_batches(&mut s, &mut data, &mut st),
            [vec![1], vec![2, 3], vec![4, 5], vec![6, 7], vec![8]]
        );
        // Packets above `max_segment` go alone; so do they with batching off.
        for batch in [
            Batch {
                max_segment: 11,
                ..BATCH4
            },
            Batch::ONE,
        ] {
            let mut s = Sender::new(8, 4, false, batch, Rollover::Zero);
            let mut data = &bytes[..];
            assert_eq!(
                pump_batches(&mut s, &mut data, &mut st),
                [vec![1], vec![2], vec![3], vec![4]]
            );
        }
        // Lock-step is unchanged by batching.
        let mut s = Sender::new(8, 1, false, BATCH4, Rollover::Zero);
        let mut data = &bytes[..];
        assert_eq!(pump_batches(&mut s, &mut data, &mut st), [vec![1]]);
    }

    #[test]
    fn netascii_expands_across_blocks() {
        let mut s = Sender::new(8, 1, true, Batch::ONE, Rollover::Zero);
        let mut st = stats();
        let bytes = b"abcdefg\nxy\r".to_vec();
        let mut data = &bytes[..];
        let mut out = Vec::new();
        loop {
            match s.step(Instant::ZERO, &mut st) {
                Step::Transmit { slot, len, .. } => {
                    let p = s.packet(slot, len).to_vec();
                    out.extend_from_slice(&p[4..]);
                    let block = u16::from_be_bytes([p[2], p[3]]);
                    if s.on_ack(block)
                        != (AckEffect::Progress {
                            rtt_from: Some(Instant::ZERO),
                            unsure_from: None,
                        })
                    {
                        break;
                    }
                }
                Step::Fill => {
                    let buf = s.fill_buffer();
                    let n = buf.len().min(data.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    s.filled(n);
                }
                Step::Wait => panic!("lock-step with immediate ACKs never waits"),
            }
        }
        assert_eq!(out, b"abcdefg\r\nxy\r\0");
    }
}
