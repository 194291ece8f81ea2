//! The state machine behind the four session types: one [`Transfer`] with
//! its protocol [`State`] and the context every state shares. The contract
//! it implements is in [`crate::session`].

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::options::{Direction, Limits, TransferOptions};
use crate::packet::{encode_ack, encode_error, ErrorCode, Packet};
use crate::receiver::{DataEffect, Receiver};
use crate::rto::Rto;
use crate::sender::{AckEffect, Batch, Sender, Step};
use crate::session::Output;
use crate::stats::{incr, Outcome, Stats};
use crate::time::Instant;
use core::time::Duration;

/// The ERROR 5 answer to strangers.
const UNKNOWN_TID: &[u8] = b"\x00\x05\x00\x05Unknown transfer ID\x00";
/// Size of the control packet buffer when no request is stored in it.
const CONTROL_BUF: usize = 512;
/// ERROR text for a transfer slower than [`Limits::min_rate`].
pub const TOO_SLOW: &str = "Transfer too slow";

/// Why a session ends at its hard deadline ([`Transfer::expiry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// The peer was not verified within [`Limits::unverified_lifetime`].
    Unverified,
    /// The transfer fell below [`Limits::min_rate`].
    TooSlow,
}

/// Which of the four sessions this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    ServerRead,
    ServerWrite,
    ClientGet,
    ClientPut,
}

/// Protocol state; each variant carries its own data.
pub(crate) enum State {
    /// Client: the request is out, waiting for the server's first answer.
    Requesting,
    /// Server read: the OACK is out, waiting for ACK 0.
    OackSent,
    /// Sending DATA.
    Sending(Sender),
    /// Receiving DATA.
    Receiving(Receiver),
    /// All data delivered; waiting for the adapter to make it durable before
    /// the final ACK of block `last`.
    Finishing { last: u16 },
    /// Final ACK sent; answering a retransmitted last block until `until`
    /// (set when the final ACK goes out).
    Dallying { last: u16, until: Option<Instant> },
    /// An ERROR is queued; the session ends once it is sent.
    Closing(Outcome),
    /// Over.
    Done(Outcome),
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Requesting => "requesting",
            State::OackSent => "oack-sent",
            State::Sending(_) => "sending",
            State::Receiving(_) => "receiving",
            State::Finishing { .. } => "finishing",
            State::Dallying { .. } => "dallying",
            State::Closing(_) => "closing",
            State::Done(_) => "done",
        })
    }
}

/// The peer's address, and whether it is its transfer ID yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A client before the server's first answer: the server's listening
    /// address (the answer's port becomes the transfer ID).
    Listening(SocketAddr),
    /// The peer's transfer ID.
    Locked(SocketAddr),
}

impl Peer {
    pub(crate) fn addr(self) -> SocketAddr {
        match self {
            Peer::Listening(a) | Peer::Locked(a) => a,
        }
    }
}

/// Where the control packet (request, OACK, ACK or ERROR) in `Ctx::tx`
/// stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
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

/// Everything but the protocol state.
pub(crate) struct Ctx {
    pub(crate) role: Role,
    pub(crate) peer: Peer,
    pub(crate) limits: Limits,
    pub(crate) netascii: bool,
    /// What a client asked for (to check the OACK).
    pub(crate) asked: TransferOptions,
    pub(crate) rto: Rto,
    /// The block (as on the wire) last acknowledged after a retransmission,
    /// and the round trip of its first copy: a repeated ACK of it suggests
    /// that the timeout was early (the peer got both copies), and the
    /// round trip is sampled then (Karn's rule alone would never measure
    /// it: when a storm stretches round trips past the estimate, each block
    /// would time out early in turn).
    pub(crate) unsure: Option<(u16, Duration)>,
    pub(crate) retries: u32,
    pub(crate) deadline: Option<Instant>,
    /// The buffer of the control packet (request, OACK, ACK, ERROR).
    pub(crate) tx: Vec<u8>,
    /// Where the control packet in `tx` stands.
    pub(crate) control: Control,
    /// A stranger to answer with ERROR 5.
    pub(crate) stranger: Option<SocketAddr>,
    /// How many DATA packets one transmission may carry.
    pub(crate) batch: Batch,
    pub(crate) stats: Stats,
}

/// One transfer: the shared machinery behind the four session types.
pub(crate) struct Transfer {
    pub(crate) ctx: Ctx,
    pub(crate) state: State,
}

impl Ctx {
    pub(crate) fn new(
        role: Role,
        peer: SocketAddr,
        limits: &Limits,
        netascii: bool,
        stats: Stats,
    ) -> Self {
        let mut stats = stats;
        // A client chose its peer; a server must hear from its peer first.
        stats.verified = matches!(role, Role::ClientGet | Role::ClientPut);
        Ctx {
            role,
            peer: match role {
                Role::ServerRead | Role::ServerWrite => Peer::Locked(peer),
                Role::ClientGet | Role::ClientPut => Peer::Listening(peer),
            },
            limits: limits.clone(),
            netascii,
            asked: TransferOptions::default(),
            rto: Rto::new(limits, None),
            unsure: None,
            retries: 0,
            deadline: None,
            tx: vec![0; CONTROL_BUF],
            control: Control::Empty,
            stranger: None,
            batch: Batch::ONE,
            stats,
        }
    }

    /// Queues `len` bytes already written into `tx` as a new control packet.
    pub(crate) fn queue_tx(&mut self, len: usize) {
        self.control = Control::Queued { len, resend: false };
    }

    fn queue_ack(&mut self, block: u16) {
        // NOTE(unwrap): `tx` holds at least CONTROL_BUF bytes.
        #[allow(clippy::expect_used)]
        let len = encode_ack(&mut self.tx, block).expect("tx holds an ACK");
        self.queue_tx(len);
    }

    fn queue_error(&mut self, code: ErrorCode, message: &[u8]) {
        // NOTE(unwrap): `tx` holds at least CONTROL_BUF bytes; messages are truncated.
        #[allow(clippy::expect_used)]
        let len = encode_error(&mut self.tx, code, message).expect("tx holds an ERROR");
        self.stats.set_error(code, message, false);
        self.queue_tx(len);
    }

    fn resend_tx(&mut self) {
        if let Control::Queued { len, .. } | Control::Sent { len, .. } = self.control {
            self.control = Control::Queued { len, resend: true };
        }
    }

    /// Applies the negotiated options (timer, stats). A negotiated `timeout`
    /// fixes the timer only once the peer is verified: until then the
    /// adaptive timer from [`Limits::initial_rto`] runs.
    pub(crate) fn apply_options(&mut self, options: TransferOptions) {
        self.stats.options_negotiated = options;
        if options.tsize.is_some() {
            self.stats.transfer_size = options.tsize;
        }
        self.reset_rto();
    }

    fn reset_rto(&mut self) {
        let fixed = self
            .stats
            .options_negotiated
            .timeout
            .filter(|_| self.stats.verified);
        let mut rto = Rto::new(&self.limits, fixed);
        // Keep a round trip already measured during the handshake.
        rto.inherit(&self.rto);
        self.rto = rto;
    }

    /// The peer answered from the request's address and port.
    fn verify(&mut self) {
        if !self.stats.verified {
            self.stats.verified = true;
            if self.stats.options_negotiated.timeout.is_some() {
                self.reset_rto();
            }
        }
    }

    /// Retransmissions allowed before giving up.
    fn retry_limit(&self) -> u32 {
        if self.stats.verified {
            self.limits.retries
        } else {
            self.limits.retries.min(self.limits.unverified_retries)
        }
    }

    fn arm(&mut self, now: Instant) {
        self.deadline = Some(now.saturating_add(self.rto.current()));
    }

    /// The deadline to wait for; a waiting session always has one (a timer
    /// that was not running starts now), so every wait ends in a timeout that
    /// counts toward the retry limit. It is never later than `expiry`.
    fn wait_deadline(&mut self, now: Instant, expiry: Option<Instant>) -> Instant {
        // The timeout is computed only when the timer starts (not on every
        // wait: this runs once per packet handled).
        let rto = &self.rto;
        let timer = *self
            .deadline
            .get_or_insert_with(|| now.saturating_add(rto.current()));
        expiry.map_or(timer, |e| timer.min(e))
    }
}

impl Transfer {
    pub(crate) fn poll(&mut self, now: Instant) -> Output<'_> {
        if let Some(to) = self.ctx.stranger.take() {
            return Output::Transmit {
                to,
                bytes: UNKNOWN_TID,
                segment_size: UNKNOWN_TID.len(),
            };
        }
        if let Control::Queued { len, .. } = self.ctx.control {
            self.record_tx(now);
            let bytes = self.ctx.tx.get(..len).unwrap_or_default();
            return Output::Transmit {
                to: self.ctx.peer.addr(),
                bytes,
                segment_size: bytes.len(),
            };
        }
        let expiry = self.expiry().map(|(at, _)| at);
        let ending = match self.state {
            State::Closing(outcome) => Some(outcome),
            State::Dallying {
                until: Some(until), ..
            } if until <= now => Some(Outcome::Completed),
            _ => None,
        };
        if let Some(outcome) = ending {
            self.finish(now, outcome);
        }
        let ctx = &mut self.ctx;
        match &mut self.state {
            State::Done(outcome) => Output::Done(*outcome),
            State::Sending(sender) => match sender.step(now, &mut ctx.stats) {
                Step::Transmit { slot, len, count } => {
                    ctx.stats.packets_sent = ctx.stats.packets_sent.saturating_add(count as u64);
                    if ctx.deadline.is_none() {
                        ctx.arm(now);
                    }
                    let segment_size = if count > 1 {
                        sender.segment_size()
                    } else {
                        len
                    };
                    Output::Transmit {
                        to: ctx.peer.addr(),
                        bytes: sender.packet(slot, len),
                        segment_size,
                    }
                }
                Step::Fill => Output::Fill(sender.fill_buffer()),
                Step::Wait => Output::Wait(ctx.wait_deadline(now, expiry)),
            },
            State::Receiving(receiver) => match receiver.pending() {
                Some(bytes) => Output::Deliver(bytes),
                None => Output::Wait(ctx.wait_deadline(now, expiry)),
            },
            State::Finishing { .. } => Output::Finish,
            _ => Output::Wait(ctx.wait_deadline(now, expiry)),
        }
    }

    /// The hard deadline of a running transfer, whatever its timer says:
    /// the end of an unverified session's lifetime, or the moment it falls
    /// below the minimum rate (moving later with every byte transferred).
    fn expiry(&self) -> Option<(Instant, Expiry)> {
        let ctx = &self.ctx;
        let limits = &ctx.limits;
        if !matches!(
            self.state,
            State::OackSent | State::Sending(_) | State::Receiving(_)
        ) {
            return None;
        }
        if !ctx.stats.verified {
            let end = ctx.stats.started.saturating_add(limits.unverified_lifetime);
            return Some((end, Expiry::Unverified));
        }
        // A server's rule: a client decides for itself how long to wait.
        if !matches!(ctx.role, Role::ServerRead | Role::ServerWrite) {
            return None;
        }
        // Progress the peer confirmed: bytes it acknowledged, or sent in order.
        let bytes = match &self.state {
            State::Sending(sender) => sender.acknowledged_bytes(),
            _ => ctx.stats.bytes_received,
        };
        // `None` only for a rate of 0: the rule is off.
        let earned = bytes
            .saturating_mul(1_000_000)
            .checked_div(u64::from(limits.min_rate))?;
        let end = ctx
            .stats
            .started
            .saturating_add(limits.min_rate_grace)
            .saturating_add(Duration::from_micros(earned));
        Some((end, Expiry::TooSlow))
    }

    /// Bookkeeping for the control packet about to be transmitted.
    fn record_tx(&mut self, now: Instant) {
        let ctx = &mut self.ctx;
        let Control::Queued { len, resend } = ctx.control else {
            return;
        };
        ctx.control = Control::Sent {
            len,
            at: now,
            resent: resend,
        };
        incr(&mut ctx.stats.packets_sent);
        if resend {
            incr(&mut ctx.stats.control_retransmits);
        }
        match &mut self.state {
            State::Dallying { until, .. } => {
                // Linger at least `dally`, and long enough to hear a sender
                // whose timer has backed off (up to the RTO ceiling).
                let linger = ctx
                    .limits
                    .dally
                    .max(ctx.rto.current().saturating_mul(3).min(ctx.limits.max_rto));
                let end = *until.get_or_insert(now.saturating_add(linger));
                ctx.deadline = Some(end);
            }
            State::Closing(_) | State::Done(_) => {}
            _ => ctx.arm(now),
        }
    }

    fn finish(&mut self, now: Instant, outcome: Outcome) {
        self.ctx.stats.finished = Some(now);
        self.ctx.stats.outcome = Some(outcome);
        self.ctx.deadline = None;
        self.ctx.control = Control::Empty;
        self.state = State::Done(outcome);
    }

    /// Ends with an ERROR to the peer (a client that has no answer from the
    /// server yet has no transfer ID to tell, and ends silently).
    fn fail(&mut self, code: ErrorCode, message: &[u8]) {
        self.ctx.queue_error(code, message);
        if let Peer::Listening(_) = self.ctx.peer {
            self.ctx.control = Control::Empty;
        }
        self.state = State::Closing(Outcome::LocalError(code));
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.expiry() {
            Some((at, Expiry::Unverified)) if now >= at => {
                incr(&mut self.ctx.stats.timeouts);
                self.finish(now, Outcome::TimedOut);
                return;
            }
            Some((at, Expiry::TooSlow)) if now >= at => {
                self.ctx
                    .queue_error(ErrorCode::NotDefined, TOO_SLOW.as_bytes());
                self.state = State::Closing(Outcome::TimedOut);
                return;
            }
            _ => {}
        }
        let Some(deadline) = self.ctx.deadline else {
            return;
        };
        if now < deadline || matches!(self.state, State::Closing(_) | State::Done(_)) {
            return;
        }
        if let State::Dallying { .. } = self.state {
            self.finish(now, Outcome::Completed);
            return;
        }
        let ctx = &mut self.ctx;
        incr(&mut ctx.stats.timeouts);
        ctx.retries = ctx.retries.saturating_add(1);
        ctx.deadline = None;
        if ctx.retries > ctx.retry_limit() {
            self.finish(now, Outcome::TimedOut);
            return;
        }
        ctx.rto.on_timeout();
        match &mut self.state {
            State::Sending(sender) => sender.on_timeout(),
            // Tell the sender where the window stands: it restarts after the
            // last block received in order.
            State::Receiving(receiver) if receiver.since_ack() > 0 => {
                receiver.restart_window();
                ctx.queue_ack(receiver.last_in_order() as u16);
                if let Control::Queued { resend, .. } = &mut ctx.control {
                    *resend = true;
                }
            }
            _ => ctx.resend_tx(),
        }
    }

    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if matches!(self.state, State::Closing(_) | State::Done(_)) {
            return;
        }
        let parsed = Packet::parse(datagram);
        if from != self.ctx.peer.addr() {
            match self.ctx.peer {
                Peer::Listening(listen)
                    if from.ip() == listen.ip() && self.is_first_answer(&parsed) =>
                {
                    // The server's first answer comes from its transfer port.
                    self.ctx.peer = Peer::Locked(from);
                    self.ctx.stats.peer = from;
                }
                Peer::Listening(_) => {
                    // No transfer ID exists yet: nobody to tell.
                    incr(&mut self.ctx.stats.foreign_packets);
                    return;
                }
                Peer::Locked(_) => {
                    incr(&mut self.ctx.stats.foreign_packets);
                    // Never answer an ERROR.
                    if !matches!(parsed, Ok(Packet::Error { .. })) {
                        self.ctx.stranger = Some(from);
                    }
                    return;
                }
            }
        }
        incr(&mut self.ctx.stats.packets_received);
        let Ok(packet) = parsed else {
            incr(&mut self.ctx.stats.ignored_packets);
            return;
        };
        match (self.ctx.role, &packet) {
            (Role::ServerRead, Packet::Ack { .. }) | (Role::ServerWrite, Packet::Data { .. }) => {
                self.ctx.verify()
            }
            _ => {}
        }
        if let Packet::Error { code, message } = packet {
            self.ctx.stats.set_error(code, message, true);
            let outcome = if matches!(self.state, State::Dallying { .. }) {
                Outcome::Completed
            } else if code == ErrorCode::OptionNegotiation && self.oack_unanswered() {
                Outcome::OptionsRefused
            } else {
                Outcome::PeerError(code)
            };
            self.finish(now, outcome);
            return;
        }
        match (&mut self.state, packet) {
            (State::Requesting, packet) => self.on_first_answer(now, packet),
            (State::OackSent, Packet::Ack { block: 0 }) => {
                self.sample_tx_rtt(now);
                self.progress();
                self.start_sending();
            }
            (State::Sending(sender), Packet::Ack { block }) => {
                let (rtt_from, finished) = match sender.on_ack(block) {
                    AckEffect::Duplicate => {
                        incr(&mut self.ctx.stats.duplicate_acks);
                        if let Some((_, rtt)) = self.ctx.unsure.take_if(|(b, _)| *b == block) {
                            // The timeout was most likely early: learn the
                            // round trip and restart the timer with it (if
                            // the first copy was lost after all, and this is
                            // the peer's own retransmission, the sample
                            // overstates the round trip once, within
                            // `max_rto`).
                            self.ctx.rto.sample(rtt);
                            self.ctx.deadline = None;
                        }
                        return;
                    }
                    AckEffect::Progress {
                        rtt_from,
                        unsure_from,
                    } => {
                        self.ctx.unsure =
                            unsure_from.map(|sent| (block, now.saturating_duration_since(sent)));
                        (rtt_from, false)
                    }
                    AckEffect::Finished { rtt_from } => (rtt_from, true),
                };
                if let Some(sent) = rtt_from {
                    self.ctx.rto.sample(now.saturating_duration_since(sent));
                }
                self.progress();
                self.ctx.deadline = None;
                if finished {
                    self.finish(now, Outcome::Completed);
                }
            }
            (State::Receiving(_), Packet::Data { block, payload }) => {
                self.on_data(now, block, payload)
            }
            (State::Dallying { last, .. }, Packet::Data { block, .. }) => {
                if block == *last {
                    incr(&mut self.ctx.stats.duplicate_data);
                    self.ctx.resend_tx();
                }
            }
            _ => incr(&mut self.ctx.stats.ignored_packets),
        }
    }

    /// Whether a client may take `packet` as the server's first answer (and
    /// fix the server's transfer port from it).
    fn is_first_answer(&self, packet: &Result<Packet<'_>, crate::packet::ParseError>) -> bool {
        matches!(
            (self.ctx.role, packet),
            (_, Ok(Packet::Error { .. } | Packet::Oack(_)))
                | (Role::ClientGet, Ok(Packet::Data { block: 1, .. }))
                | (Role::ClientPut, Ok(Packet::Ack { block: 0 }))
        )
    }

    fn progress(&mut self) {
        self.ctx.retries = 0;
        self.ctx.rto.on_progress();
    }

    /// A server's OACK is out and nothing has answered it with progress yet
    /// (a read waits for ACK 0; a write has received no DATA in order).
    fn oack_unanswered(&self) -> bool {
        match &self.state {
            State::OackSent => true,
            State::Receiving(receiver) => {
                self.ctx.role == Role::ServerWrite
                    && !self.ctx.stats.options_negotiated.is_empty()
                    && receiver.last_in_order() == 0
            }
            _ => false,
        }
    }

    fn sample_tx_rtt(&mut self, now: Instant) {
        if let Control::Sent {
            at, resent: false, ..
        } = self.ctx.control
        {
            self.ctx.rto.sample(now.saturating_duration_since(at));
        }
    }

    fn on_data(&mut self, now: Instant, block: u16, payload: &[u8]) {
        let State::Receiving(receiver) = &mut self.state else {
            return;
        };
        let first_since_ack = receiver.since_ack() == 0;
        match receiver.on_data(block, payload, &mut self.ctx.stats) {
            DataEffect::Delivered => {
                if first_since_ack {
                    self.sample_tx_rtt(now);
                }
                self.progress();
                // Restart the timer on progress.
                self.ctx.arm(now);
            }
            DataEffect::Reack => self.ctx.resend_tx(),
            DataEffect::GapAck => match receiver.last_in_order() {
                // Nothing received yet: repeat the handshake answer (ACK 0 or OACK).
                0 => self.ctx.resend_tx(),
                last => self.ctx.queue_ack(last as u16),
            },
            DataEffect::Ignored => {}
            DataEffect::TooLarge => self.fail(
                ErrorCode::IllegalOperation,
                b"DATA larger than the block size",
            ),
            DataEffect::TooManyBlocks => self.fail(ErrorCode::DiskFull, b"Transfer too large"),
        }
    }

    /// A client's first answer from the server.
    fn on_first_answer(&mut self, now: Instant, packet: Packet<'_>) {
        let role = self.ctx.role;
        match (role, packet) {
            (Role::ClientGet | Role::ClientPut, Packet::Oack(raw)) => {
                let direction = if role == Role::ClientGet {
                    Direction::Read
                } else {
                    Direction::Write
                };
                match crate::options::validate_oack(&self.ctx.asked, raw, direction) {
                    Ok(options) => {
                        self.sample_tx_rtt(now);
                        self.progress();
                        self.ctx.apply_options(options);
                        if role == Role::ClientGet {
                            self.start_receiving(options);
                            self.ctx.queue_ack(0);
                        } else {
                            self.start_sending();
                        }
                    }
                    Err(e) => self.fail(ErrorCode::OptionNegotiation, e.message().as_bytes()),
                }
            }
            (
                Role::ClientGet,
                Packet::Data {
                    block: block @ 1,
                    payload,
                },
            ) => {
                // The server ignored our options: RFC 1350 defaults.
                self.sample_tx_rtt(now);
                self.ctx.apply_options(TransferOptions::default());
                self.start_receiving(TransferOptions::default());
                // The request is no reply to resend: until ACK 1 exists, a
                // duplicate DATA 1 or a timeout sends nothing.
                self.ctx.control = Control::Empty;
                self.on_data(now, block, payload);
            }
            (Role::ClientPut, Packet::Ack { block: 0 }) => {
                self.sample_tx_rtt(now);
                self.progress();
                self.ctx.apply_options(TransferOptions::default());
                self.start_sending();
            }
            _ => incr(&mut self.ctx.stats.ignored_packets),
        }
    }

    pub(crate) fn start_sending(&mut self) {
        let o = self.ctx.stats.options_negotiated;
        self.ctx.deadline = None;
        self.state = State::Sending(Sender::new(
            o.block_size(),
            o.window_size(),
            self.ctx.netascii,
            self.ctx.batch,
        ));
    }

    pub(crate) fn start_receiving(&mut self, options: TransferOptions) {
        self.state = State::Receiving(Receiver::new(
            options.block_size(),
            options.window_size(),
            self.ctx.netascii,
            self.ctx.limits.max_transfer_blocks,
        ));
    }

    pub(crate) fn filled(&mut self, n: usize) {
        if let State::Sending(sender) = &mut self.state {
            sender.filled(n);
        }
    }

    pub(crate) fn delivered(&mut self) {
        if let State::Finishing { last } = self.state {
            self.ctx.queue_ack(last);
            self.state = State::Dallying { last, until: None };
            return;
        }
        let State::Receiving(receiver) = &mut self.state else {
            return;
        };
        let Some(last) = receiver.delivered() else {
            return;
        };
        let block = receiver.last_in_order() as u16;
        if last {
            self.state = State::Finishing { last: block };
        } else {
            self.ctx.queue_ack(block);
        }
    }

    pub(crate) fn abort(&mut self, code: ErrorCode, message: &str) {
        if !matches!(self.state, State::Closing(_) | State::Done(_)) {
            self.fail(code, message.as_bytes());
        }
    }

    pub(crate) fn set_batch(&mut self, batch: Batch) {
        self.ctx.batch = batch;
        if let State::Sending(sender) = &mut self.state {
            sender.set_batch(batch);
        }
    }

    pub(crate) fn cancel(&mut self) {
        // A verified session's peer answered in the meantime: it goes on. A
        // closing one sends its ERROR first.
        if !self.ctx.stats.verified && !matches!(self.state, State::Closing(_) | State::Done(_)) {
            self.ctx.control = Control::Empty;
            self.ctx.stranger = None;
            self.state = State::Closing(Outcome::Evicted);
        }
    }

    /// Bytes of the buffers this transfer holds now (a read's window exists
    /// only once its OACK is acknowledged).
    pub(crate) fn memory(&self) -> usize {
        let engine = match &self.state {
            State::Sending(sender) => sender.memory(),
            State::Receiving(receiver) => receiver.memory(),
            _ => 0,
        };
        self.ctx.tx.len().saturating_add(engine)
    }

    pub(crate) fn is_transfer_complete(&self) -> bool {
        match self.state {
            State::Dallying { .. } => true,
            State::Done(outcome) => outcome == Outcome::Completed,
            _ => false,
        }
    }
}

/// Implements [`Session`] for a newtype around [`Transfer`].
macro_rules! impl_session {
    ($ty:ty) => {
        impl $crate::session::Session for $ty {
            fn poll(&mut self, now: $crate::time::Instant) -> $crate::session::Output<'_> {
                self.0.poll(now)
            }
            fn handle_datagram(
                &mut self,
                now: $crate::time::Instant,
                from: core::net::SocketAddr,
                datagram: &[u8],
            ) {
                self.0.handle_datagram(now, from, datagram)
            }
            fn handle_timeout(&mut self, now: $crate::time::Instant) {
                self.0.handle_timeout(now)
            }
            fn filled(&mut self, n: usize) {
                self.0.filled(n)
            }
            fn delivered(&mut self) {
                self.0.delivered()
            }
            fn abort(&mut self, code: $crate::packet::ErrorCode, message: &str) {
                self.0.abort(code, message)
            }
            fn cancel(&mut self) {
                self.0.cancel()
            }
            fn set_batch(&mut self, batch: $crate::session::Batch) {
                self.0.set_batch(batch)
            }
            fn memory(&self) -> usize {
                self.0.memory()
            }
            fn stats(&self) -> &$crate::stats::Stats {
                &self.0.ctx.stats
            }
            fn is_transfer_complete(&self) -> bool {
                self.0.is_transfer_complete()
            }
        }

        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("peer", &self.0.ctx.peer.addr())
                    .field("state", &format_args!("{}", self.0.state))
                    .finish()
            }
        }
    };
}
pub(crate) use impl_session;
