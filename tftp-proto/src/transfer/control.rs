//! The session's control packets: the one request, OACK, ACK or ERROR kept
//! for retransmission ([`ControlTx`]), and the ERROR 5 owed to a stranger.

use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::packet::{encode_ack, encode_error, ErrorCode};
use crate::time::Instant;

/// Size of the control packet buffer when no request is stored in it.
pub(crate) const CONTROL_BUF: usize = 512;
/// The text of the ERROR 5 answer to strangers.
const UNKNOWN_TID: &[u8] = b"Unknown transfer ID";
/// Length of that ERROR packet: opcode, code, text and NUL.
const UNKNOWN_TID_LEN: usize = UNKNOWN_TID.len() + 5;

/// Where the control packet stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    /// Nothing to send or resend.
    Empty,
    /// `len` bytes to send; `resend` when they went out before.
    Queued { len: usize, resend: bool },
    /// `len` bytes out since `at`, kept for retransmission; `resent` when
    /// sent more than once (Karn: no round-trip sample then).
    Sent {
        len: usize,
        at: Instant,
        resent: bool,
    },
}

/// The control packet buffer, its state, and a stranger to answer.
pub(crate) struct ControlTx {
    /// The buffer of the control packet (request, OACK, ACK, ERROR).
    tx: Vec<u8>,
    state: Control,
    /// A stranger to answer with ERROR 5.
    stranger: Option<SocketAddr>,
    /// That ERROR 5, encoded once.
    unknown_tid: [u8; UNKNOWN_TID_LEN],
}

impl ControlTx {
    /// An empty control buffer of [`CONTROL_BUF`] bytes.
    pub(crate) fn new() -> Self {
        Self::with_buffer(vec![0; CONTROL_BUF])
    }

    /// An empty control buffer in `tx` (a client's, sized for its request).
    pub(crate) fn with_buffer(tx: Vec<u8>) -> Self {
        let mut unknown_tid = [0; UNKNOWN_TID_LEN];
        // NOTE(unwrap): the array is sized for exactly this packet.
        #[allow(clippy::expect_used)]
        encode_error(&mut unknown_tid, ErrorCode::UnknownTid, UNKNOWN_TID)
            .expect("sized for ERROR 5");
        ControlTx {
            tx,
            state: Control::Empty,
            stranger: None,
            unknown_tid,
        }
    }

    /// The buffer, to encode a packet into before [`ControlTx::queue`].
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.tx
    }

    /// Bytes held.
    pub(crate) fn memory(&self) -> usize {
        self.tx.len()
    }

    /// Queues `len` bytes already written into the buffer as a new packet.
    pub(crate) fn queue(&mut self, len: usize) {
        self.state = Control::Queued { len, resend: false };
    }

    /// Queues an ACK of `block`.
    pub(crate) fn queue_ack(&mut self, block: u16) {
        // NOTE(unwrap): `tx` holds at least CONTROL_BUF bytes.
        #[allow(clippy::expect_used)]
        let len = encode_ack(&mut self.tx, block).expect("tx holds an ACK");
        self.queue(len);
    }

    /// Queues an ERROR (the message truncated to fit).
    pub(crate) fn queue_error(&mut self, code: ErrorCode, message: &[u8]) {
        // NOTE(unwrap): `tx` holds at least CONTROL_BUF bytes; messages are truncated.
        #[allow(clippy::expect_used)]
        let len = encode_error(&mut self.tx, code, message).expect("tx holds an ERROR");
        self.queue(len);
    }

    /// Queues the last packet again, if there is one.
    pub(crate) fn resend(&mut self) {
        if let Control::Queued { len, .. } | Control::Sent { len, .. } = self.state {
            self.state = Control::Queued { len, resend: true };
        }
    }

    /// Marks a queued packet as a retransmission (for the counters).
    pub(crate) fn mark_resend(&mut self) {
        if let Control::Queued { resend, .. } = &mut self.state {
            *resend = true;
        }
    }

    /// Forgets the packet: nothing to send or resend.
    pub(crate) fn clear(&mut self) {
        self.state = Control::Empty;
    }

    /// Whether a packet waits to be sent.
    pub(crate) fn is_queued(&self) -> bool {
        matches!(self.state, Control::Queued { .. })
    }

    /// Sends the queued packet at `now`: its bytes, and whether it is a
    /// retransmission. `None` if nothing is queued.
    pub(crate) fn transmit(&mut self, now: Instant) -> Option<(&[u8], bool)> {
        let Control::Queued { len, resend } = self.state else {
            return None;
        };
        self.state = Control::Sent {
            len,
            at: now,
            resent: resend,
        };
        Some((self.tx.get(..len).unwrap_or_default(), resend))
    }

    /// When the packet went out, if it went out exactly once (Karn: only
    /// then does an answer measure a round trip).
    pub(crate) fn sent_once_at(&self) -> Option<Instant> {
        match self.state {
            Control::Sent {
                at, resent: false, ..
            } => Some(at),
            _ => None,
        }
    }

    /// Owes `from` an ERROR 5.
    pub(crate) fn answer_stranger(&mut self, from: SocketAddr) {
        self.stranger = Some(from);
    }

    /// Forgets a stranger's answer.
    pub(crate) fn forget_stranger(&mut self) {
        self.stranger = None;
    }

    /// Who is owed an ERROR 5 (once).
    pub(crate) fn take_stranger(&mut self) -> Option<SocketAddr> {
        self.stranger.take()
    }

    /// The ERROR 5 answer to strangers.
    pub(crate) fn unknown_tid(&self) -> &[u8] {
        &self.unknown_tid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_sent_then_resent_and_only_the_first_copy_times() {
        let mut c = ControlTx::new();
        assert_eq!(c.memory(), CONTROL_BUF);
        assert!(c.transmit(Instant::ZERO).is_none());
        c.queue_ack(3);
        assert!(c.is_queued());
        let t = Instant::ZERO + core::time::Duration::from_millis(5);
        assert_eq!(c.transmit(t), Some((&b"\x00\x04\x00\x03"[..], false)));
        assert_eq!(c.sent_once_at(), Some(t));
        c.resend();
        assert_eq!(c.transmit(t), Some((&b"\x00\x04\x00\x03"[..], true)));
        assert_eq!(c.sent_once_at(), None);
        c.clear();
        c.resend();
        assert!(!c.is_queued());
    }

    #[test]
    fn errors_are_truncated_to_the_buffer_and_marked_resends_count() {
        let mut c = ControlTx::with_buffer(vec![0; 12]);
        c.queue_error(ErrorCode::DiskFull, b"a long message");
        let (bytes, resend) = c.transmit(Instant::ZERO).unwrap();
        assert_eq!(bytes, b"\x00\x05\x00\x03a long \x00");
        assert!(!resend);
        c.queue_ack(1);
        c.mark_resend();
        assert!(c.transmit(Instant::ZERO).unwrap().1);
    }

    #[test]
    fn a_stranger_gets_error_5_once() {
        let mut c = ControlTx::new();
        let s: SocketAddr = "192.0.2.9:9".parse().unwrap();
        c.answer_stranger(s);
        assert_eq!(c.take_stranger(), Some(s));
        assert_eq!(c.unknown_tid(), b"\x00\x05\x00\x05Unknown transfer ID\x00");
        assert!(c.take_stranger().is_none());
        c.answer_stranger(s);
        c.forget_stranger();
        assert!(c.take_stranger().is_none());
    }
}
