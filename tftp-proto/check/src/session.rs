//! The `session` fuzz target: one session of any of the four types fed an
//! arbitrary sequence of datagrams (from the peer and from strangers, well
//! formed and not) and clock advances.
//!
//! Invariants checked: no panic; each drain of `poll` yields a bounded number
//! of outputs; DATA goes only to the peer, never beyond the negotiated block
//! size, and never beyond one window past the highest block the peer
//! acknowledged; ERROR 5 is the only thing strangers get; once the peer is
//! silent the session ends within its retry budget; before a server's peer
//! is verified it gets at most `1 + unverified_retries` datagrams (ERRORs
//! aside), all inside the unverified lifetime; a cancelled unverified
//! session ends at once without sending anything (but an ERROR it was
//! closing with). With batching on, a transmission carries at most the
//! allowed packets and bytes, all of them consecutive DATA blocks of one
//! segment size but the last.

use core::net::SocketAddr;
use core::time::Duration;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};

use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::{encode_oack, ErrorCode, Mode, Packet};
use tftp_proto::server::accept;
use tftp_proto::session::{Batch, Output, Session, Transfer};
use tftp_proto::time::Instant;

use crate::Fnv;

/// Which session to fuzz.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FuzzRole {
    ServerRead,
    ServerWrite,
    ClientGet,
    ClientPut,
}

/// Input of the `session` target.
#[derive(Arbitrary, Debug)]
pub struct SessionInput<'a> {
    /// The session type.
    pub role: FuzzRole,
    /// Options requested (servers: in the request; clients: asked).
    pub options: TransferOptions,
    /// Netascii instead of octet.
    pub netascii: bool,
    /// Bytes the sending side has to send.
    pub source_len: u16,
    /// Retry limit (small values reach the give-up path).
    pub retries: u8,
    /// Batching: up to `batch % 8` packets per transmission (0 and 1: one),
    /// in at most `batch_bytes * 64` bytes, of at most `batch_bytes` each.
    pub batch: u8,
    /// See `batch`.
    pub batch_bytes: u16,
    /// The events.
    pub ops: Vec<Op<'a>>,
}

/// One event.
#[derive(Arbitrary, Debug)]
pub enum Op<'a> {
    /// A well-formed packet from the peer.
    Peer(FuzzPacket),
    /// Raw bytes from the peer or a stranger.
    Raw {
        /// From a stranger rather than the peer.
        stranger: bool,
        /// The datagram.
        bytes: &'a [u8],
    },
    /// The clock moves on by this many milliseconds (and the timer is
    /// reported if due).
    Advance(u16),
    /// The clock jumps to the session's deadline.
    Timeout,
    /// The adapter aborts the session.
    Abort,
    /// The adapter cancels the session (eviction): nothing more is sent.
    Cancel,
}

/// Packets a plausible (or hostile) peer sends.
#[derive(Arbitrary, Debug)]
pub enum FuzzPacket {
    /// ACK of the highest DATA seen plus an offset.
    AckNear(i8),
    /// ACK of any block.
    Ack(u16),
    /// DATA with the block the session expects plus an offset.
    DataNear {
        /// Offset from the next expected block.
        offset: i8,
        /// Payload length.
        len: u16,
    },
    /// An ERROR.
    Error(u16),
    /// An OACK with these options.
    Oack(TransferOptions),
}

const PEER: &str = "10.1.0.1:5000";
const STRANGER: &str = "10.1.0.9:5001";
const LISTEN: &str = "10.1.0.2:69";
const SERVER_TID: &str = "10.1.0.2:7000";

struct Harness {
    batch: Batch,
    session: Box<dyn Session>,
    now: Instant,
    deadline: Option<Instant>,
    done: bool,
    peer: SocketAddr,
    stranger_pending: u32,
    source: Vec<u8>,
    read: usize,
    /// Highest DATA block seen from the session (64-bit).
    data_high: u64,
    /// Highest block the fuzzer acknowledged, as the session would map it.
    acked: u64,
    /// Next block the fuzzer would send as DATA (wire number).
    next_data: u16,
    /// Datagrams sent, all kinds.
    sent_total: u64,
    /// Datagrams (other than ERROR) sent while the peer was unverified.
    unverified_sent: u32,
    /// Retransmissions allowed before verification.
    unverified_budget: u32,
    /// End of the unverified lifetime.
    unverified_until: Instant,
    /// Digest of what the session sent.
    wire: Fnv,
}

/// Runs [`check_session`] on fuzzer bytes, then the same input again with
/// the session abandoned (a single-port server's session whose peer sent a
/// new request) before one of its events, chosen by the input.
/// Returns whether the bytes decoded into an input.
pub fn run_session(data: &[u8]) -> bool {
    match SessionInput::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => {
            check_session(&input);
            let at = usize::from(input.batch_bytes) % (input.ops.len().min(2_000) + 1);
            check_abandoned(&input, at);
            true
        }
        Err(_) => false,
    }
}

/// Drives one session through `input` like [`check_session`], abandoning
/// it before event `at` (or after the last): it must end at once and send
/// nothing more.
pub fn check_abandoned(input: &SessionInput<'_>, at: usize) {
    let _ = drive(input, Some(at));
}

/// [`session_digest`] of fuzzer bytes; `None` if they decode into no input.
pub fn session_digest_of(data: &[u8]) -> Option<u64> {
    SessionInput::arbitrary_take_rest(Unstructured::new(data))
        .ok()
        .map(|input| session_digest(&input))
}

/// Drives one session through `input`, asserting the invariants.
pub fn check_session(input: &SessionInput<'_>) {
    let _ = session_digest(input);
}

/// [`check_session`], returning a digest of every datagram the session sent
/// (with its time and destination) and of its outcome; 0 when the input
/// starts no session.
pub fn session_digest(input: &SessionInput<'_>) -> u64 {
    drive(input, None)
}

fn drive(input: &SessionInput<'_>, abandon_at: Option<usize>) -> u64 {
    let limits = Limits {
        retries: u32::from(input.retries % 8),
        dally: Duration::from_millis(500),
        max_window_bytes: 64 * 1024,
        ..Limits::default()
    };
    let mode = if input.netascii {
        Mode::Netascii
    } else {
        Mode::Octet
    };
    let now = Instant::ZERO;
    let peer: SocketAddr = PEER.parse().expect("address");
    let server_tid: SocketAddr = SERVER_TID.parse().expect("address");
    let listen: SocketAddr = LISTEN.parse().expect("address");
    let (mut session, peer): (Box<dyn Session>, SocketAddr) = match input.role {
        FuzzRole::ServerRead | FuzzRole::ServerWrite => {
            let write = input.role == FuzzRole::ServerWrite;
            let mut req = vec![0u8; 600];
            let Ok(n) =
                tftp_proto::packet::encode_request(&mut req, write, b"file", mode, &input.options)
            else {
                return 0;
            };
            let Ok(request) = accept(&req[..n], peer, &limits) else {
                return 0;
            };
            let oack = request
                .negotiate(&limits, Some(u64::from(input.source_len)))
                .oack;
            if write {
                (
                    Box::new(Transfer::server_write(&request, oack, &limits, now)),
                    peer,
                )
            } else {
                (
                    Box::new(Transfer::server_read(&request, oack, &limits, now)),
                    peer,
                )
            }
        }
        FuzzRole::ClientGet => (
            Box::new(
                Transfer::get(listen, b"file", mode, input.options, &limits, now).expect("request"),
            ),
            server_tid,
        ),
        FuzzRole::ClientPut => (
            Box::new(
                Transfer::put(listen, b"file", mode, input.options, &limits, now).expect("request"),
            ),
            server_tid,
        ),
    };
    let batch = Batch {
        segments: usize::from(input.batch % 8).max(1),
        bytes: usize::from(input.batch_bytes).saturating_mul(64),
        max_segment: usize::from(input.batch_bytes),
    };
    session.set_batch(batch);
    let mut h = Harness {
        batch,
        session,
        now,
        deadline: None,
        done: false,
        peer,
        stranger_pending: 0,
        source: vec![0x5a; usize::from(input.source_len)],
        read: 0,
        data_high: 0,
        acked: 0,
        next_data: 1,
        sent_total: 0,
        unverified_sent: 0,
        unverified_budget: limits.retries.min(limits.unverified_retries),
        unverified_until: now + limits.unverified_lifetime,
        wire: Fnv::default(),
    };
    h.drain();
    let stranger: SocketAddr = STRANGER.parse().expect("address");
    let mut buf = vec![0u8; 70_000];
    for (i, op) in input.ops.iter().take(2_000).enumerate() {
        if abandon_at == Some(i) {
            h.abandon();
            return h.wire.0;
        }
        match op {
            Op::Peer(p) => {
                let len = h.encode(p, &mut buf);
                h.session.handle_datagram(h.now, h.peer, &buf[..len]);
            }
            Op::Raw { stranger: s, bytes } => {
                let from = if *s { stranger } else { h.peer };
                if *s && !matches!(Packet::parse(bytes), Ok(Packet::Error { .. })) {
                    h.stranger_pending += 1;
                }
                // A raw datagram from the peer that parses moves the session
                // like a scripted one: track it the same way.
                if !*s {
                    h.note_raw(bytes);
                }
                h.session.handle_datagram(h.now, from, bytes);
            }
            Op::Advance(ms) => {
                h.now = h.now + Duration::from_millis(u64::from(*ms));
                if h.deadline.is_some_and(|d| d <= h.now) {
                    h.session.handle_timeout(h.now);
                }
            }
            Op::Timeout => {
                if let Some(d) = h.deadline {
                    h.now = h.now.max(d);
                    h.session.handle_timeout(h.now);
                }
            }
            Op::Abort => h.session.abort(ErrorCode::NotDefined, "abort"),
            Op::Cancel if !h.done && !h.session.stats().verified => {
                h.session.cancel();
                let sent = h.sent_total;
                h.drain();
                assert!(h.done, "a cancelled session ends at once");
                // Nothing, or the ERROR it was already closing with.
                let outcome = h.session.stats().outcome;
                if outcome == Some(tftp_proto::stats::Outcome::Evicted) {
                    assert_eq!(h.sent_total, sent, "a cancelled session sends nothing");
                } else {
                    assert!(h.sent_total <= sent + 1, "more than its last ERROR");
                }
            }
            // A verified (or ended) session is left alone.
            Op::Cancel => h.session.cancel(),
        }
        h.drain();
    }
    if abandon_at.is_some() {
        h.abandon();
        return h.wire.0;
    }
    // The peer goes silent: the session must end within its retry budget,
    // each wait at most the RTO ceiling or the negotiated `timeout` (255 s),
    // a dally at most twice that.
    let silent_from = h.now;
    let budget = (limits.retries + 3) as usize;
    for _ in 0..budget {
        if h.done {
            break;
        }
        let Some(d) = h.deadline else {
            panic!("a waiting session has no deadline")
        };
        h.now = h.now.max(d);
        h.session.handle_timeout(h.now);
        h.drain();
    }
    assert!(h.done, "session still running after the retry budget");
    let silent = h.now - silent_from;
    let per_wait = limits.max_rto.max(Duration::from_secs(2 * 255));
    assert!(
        silent <= per_wait * (limits.retries + 3),
        "took {silent:?} to give up"
    );
    h.wire.write_debug(&h.session.stats().outcome);
    h.wire.0
}

impl Harness {
    /// Abandons the session: it ends at once, sends nothing more (not even
    /// an ERROR it was closing with), and stays ended.
    fn abandon(&mut self) {
        let (was_done, sent) = (self.done, self.sent_total);
        let before = self.session.stats().outcome;
        self.session.abandon();
        self.drain();
        assert!(self.done, "an abandoned session ends at once");
        assert_eq!(self.sent_total, sent, "an abandoned session sends nothing");
        let outcome = self.session.stats().outcome;
        if was_done {
            assert_eq!(outcome, before, "a session already done is left alone");
        } else if outcome == Some(tftp_proto::stats::Outcome::Completed) {
            assert!(
                self.session.is_transfer_complete(),
                "abandoned as completed before the end"
            );
        }
        self.now = self.now + Duration::from_secs(60);
        self.session.handle_timeout(self.now);
        self.drain();
        assert_eq!(self.sent_total, sent, "an abandoned session woke up");
        assert_eq!(self.session.stats().outcome, outcome);
    }

    fn drain(&mut self) {
        let negotiated = self.session.stats().options_negotiated;
        let window = u64::from(negotiated.window_size());
        let blksize = usize::from(negotiated.block_size());
        let mut transmits = 0u64;
        for _ in 0..(window as usize + 10) * 4 {
            let verified = self.session.stats().verified;
            match self.session.poll(self.now) {
                Output::Transmit {
                    to,
                    bytes,
                    segment_size,
                } => {
                    self.wire
                        .write_u64(self.now.since_epoch().as_micros() as u64);
                    self.wire.write_debug(&(to, segment_size));
                    self.wire.write(bytes);
                    let segment_size = segment_size.max(1);
                    let count = bytes.len().div_ceil(segment_size);
                    if count > 1 {
                        assert!(count <= self.batch.segments, "{count} packets in one batch");
                        assert!(bytes.len() <= self.batch.bytes, "batch above its bytes");
                        assert_eq!(segment_size, blksize + 4, "batch of short packets");
                    }
                    let mut expect_block: Option<u16> = None;
                    'datagrams: for bytes in bytes.chunks(segment_size) {
                        if count > 1 {
                            let Ok(Packet::Data { block, .. }) = Packet::parse(bytes) else {
                                panic!("a batch of other than DATA");
                            };
                            if let Some(b) = expect_block {
                                assert_eq!(block, b, "batch of non-consecutive blocks");
                            }
                            expect_block = Some(block.wrapping_add(1));
                        }
                        transmits += 1;
                        self.sent_total += 1;
                        assert!(
                            transmits <= window + 4 + u64::from(self.stranger_pending),
                            "too many datagrams at once"
                        );
                        if to.port() == 69 {
                            // A client's request (or its retransmission) to the listening port.
                            assert!(matches!(
                                Packet::parse(bytes),
                                Ok(Packet::Rrq(_) | Packet::Wrq(_))
                            ));
                            continue 'datagrams;
                        }
                        if to != self.peer {
                            assert!(
                                self.stranger_pending > 0,
                                "datagram to {to}, neither peer nor stranger"
                            );
                            assert_eq!(bytes, b"\x00\x05\x00\x05Unknown transfer ID\x00");
                            self.stranger_pending -= 1;
                            continue 'datagrams;
                        }
                        let parsed = Packet::parse(bytes);
                        if !verified && !matches!(parsed, Ok(Packet::Error { .. })) {
                            // Before the peer is verified: a small budget, all of
                            // it inside the unverified lifetime.
                            self.unverified_sent += 1;
                            assert!(
                                self.unverified_sent <= 1 + self.unverified_budget,
                                "{} datagrams to an unverified peer",
                                self.unverified_sent
                            );
                            assert!(
                                self.now < self.unverified_until,
                                "datagram to an unverified peer at {:?}",
                                self.now
                            );
                        }
                        if let Ok(Packet::Data { block, payload }) = parsed {
                            assert!(payload.len() <= blksize, "DATA above the block size");
                            let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                            assert!(
                                ahead >= 1 && ahead <= window,
                                "DATA {block} beyond the window (acked {})",
                                self.acked
                            );
                            self.data_high = self.data_high.max(self.acked + ahead);
                        }
                    }
                }
                Output::Fill(buf) => {
                    let rest = self.source.get(self.read..).unwrap_or_default();
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.read += n;
                    self.session.filled(n);
                }
                Output::Deliver(bytes) => {
                    assert!(bytes.len() <= blksize + 1, "delivered more than a block");
                    self.session.delivered();
                }
                Output::Finish => self.session.delivered(),
                Output::Verified => {}
                Output::Wait(d) => {
                    assert!(!self.done);
                    self.deadline = Some(d);
                    return;
                }
                Output::Done(_) => {
                    self.done = true;
                    self.deadline = None;
                    return;
                }
            }
        }
        panic!("poll did not settle");
    }

    fn encode(&mut self, p: &FuzzPacket, buf: &mut [u8]) -> usize {
        let put = |buf: &mut [u8], op: u16, block: u16| {
            buf[..2].copy_from_slice(&op.to_be_bytes());
            buf[2..4].copy_from_slice(&block.to_be_bytes());
        };
        match p {
            FuzzPacket::AckNear(offset) => {
                let block = (self.data_high as u16).wrapping_add(*offset as u16);
                self.note_ack(block);
                put(buf, 4, block);
                4
            }
            FuzzPacket::Ack(block) => {
                self.note_ack(*block);
                put(buf, 4, *block);
                4
            }
            FuzzPacket::DataNear { offset, len } => {
                let block = self.next_data.wrapping_add(*offset as u16);
                if *offset == 0 {
                    self.next_data = self.next_data.wrapping_add(1);
                }
                put(buf, 3, block);
                let len = usize::from(*len).min(buf.len() - 4);
                4 + len
            }
            FuzzPacket::Error(code) => {
                put(buf, 5, *code);
                buf[4] = 0;
                5
            }
            FuzzPacket::Oack(options) => encode_oack(buf, options).unwrap_or(0),
        }
    }

    /// Tracks a raw datagram from the peer that the session accepts.
    fn note_raw(&mut self, bytes: &[u8]) {
        match Packet::parse(bytes) {
            Ok(Packet::Ack { block }) => self.note_ack(block),
            Ok(Packet::Data { block, .. }) if block == self.next_data => {
                self.next_data = self.next_data.wrapping_add(1);
            }
            _ => {}
        }
    }

    /// Mirrors how a sender maps an ACK: only blocks it has sent count.
    fn note_ack(&mut self, block: u16) {
        let delta = u64::from(block.wrapping_sub(self.acked as u16));
        if delta >= 1 && self.acked + delta <= self.data_high {
            self.acked += delta;
        }
    }
}
