//! The one session type, [`Transfer`]: its protocol [`State`], what every
//! state shares, [`Transfer::poll`] and the inputs. The contract it
//! implements is in [`crate::session`]; the pieces are in
//! [`timer`] (retransmission timer, dally, hard deadlines), [`control`]
//! (control packets, ERROR 5 to strangers) and [`handshake`] (how each role
//! starts and the client's first answer). The constructors are with their
//! roles: [`crate::server`] and [`crate::client`].

use core::fmt;
use core::net::SocketAddr;

use crate::failure::Failure;
use crate::options::{Limits, TransferOptions};
use crate::packet::{ErrorCode, Packet, DATA_HEADER_LEN};
use crate::receiver::{DataEffect, Receiver};
use crate::sender::{AckEffect, Batch, Sender, Step};
use crate::session::{Output, Session};
use crate::stats::{incr, Outcome, Stats};
use crate::time::Instant;

pub(crate) mod control;
pub(crate) mod handshake;
pub(crate) mod timer;

use control::ControlTx;
use timer::{expiry, Expiry, Timer};

/// Receive buffer for a session that only receives control packets (ACK,
/// OACK, ERROR): a server's read, a client's upload.
const CONTROL_DATAGRAM: usize = 1024;
/// Receive buffer of a client's download, whose block size is not known
/// before the server's answer: the largest DATA (65464 + 4) and one byte.
const DOWNLOAD_DATAGRAM: usize = 65_536;

/// Which of the four roles this session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    ServerRead,
    ServerWrite,
    ClientGet,
    ClientPut,
}

impl Role {
    fn is_server(self) -> bool {
        matches!(self, Role::ServerRead | Role::ServerWrite)
    }
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

/// Whether the peer has proved itself, and whether the adapter heard it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verification {
    /// A server's peer that has not answered from its address yet.
    Pending,
    /// Verified; [`Output::Verified`] not returned yet.
    Unreported,
    /// Verified (a client's chosen server from the start).
    Reported,
}

/// Everything but the protocol state.
pub(crate) struct Ctx {
    pub(crate) role: Role,
    pub(crate) peer: Peer,
    pub(crate) limits: Limits,
    pub(crate) netascii: bool,
    /// What a client asked for (to check the OACK).
    pub(crate) asked: TransferOptions,
    pub(crate) timer: Timer,
    pub(crate) control: ControlTx,
    pub(crate) verification: Verification,
    /// How many DATA packets one transmission may carry.
    pub(crate) batch: Batch,
    pub(crate) stats: Stats,
}

/// A TFTP session of any of the four roles (server read or write, client
/// download or upload): the one type behind
/// [`ServerSession`](crate::server::ServerSession),
/// [`ServerRead`](crate::server::ServerRead),
/// [`ServerWrite`](crate::server::ServerWrite),
/// [`ClientGet`](crate::client::ClientGet) and
/// [`ClientPut`](crate::client::ClientPut). Start one with
/// [`Transfer::start`], [`Transfer::server_read`],
/// [`Transfer::server_write`], [`Transfer::refuse`], [`Transfer::get`] or
/// [`Transfer::put`], and drive it through [`Session`].
pub struct Transfer {
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
        control: ControlTx,
    ) -> Self {
        let mut stats = stats;
        // A client chose its peer; a server must hear from its peer first.
        stats.verified = !role.is_server();
        Ctx {
            role,
            peer: if role.is_server() {
                Peer::Locked(peer)
            } else {
                Peer::Listening(peer)
            },
            limits: limits.clone(),
            netascii,
            asked: TransferOptions::default(),
            timer: Timer::new(limits),
            control,
            verification: if role.is_server() {
                Verification::Pending
            } else {
                Verification::Reported
            },
            batch: Batch::ONE,
            stats,
        }
    }

    fn queue_error(&mut self, code: ErrorCode, message: &[u8]) {
        self.control.queue_error(code, message);
        self.stats.set_error(code, message, false);
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
        self.timer.reset(&self.limits, fixed);
    }

    /// The peer answered from the request's address and port.
    fn verify(&mut self) {
        if !self.stats.verified {
            self.stats.verified = true;
            self.verification = Verification::Unreported;
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

    fn progress(&mut self) {
        self.timer.progress();
    }

    /// A round trip sample from the control packet's first copy, if it was
    /// sent once.
    fn sample_tx_rtt(&mut self, now: Instant) {
        if let Some(at) = self.control.sent_once_at() {
            self.timer.sample(now.saturating_duration_since(at));
        }
    }
}

impl Transfer {
    pub(crate) fn poll(&mut self, now: Instant) -> Output<'_> {
        if self.ctx.verification == Verification::Unreported {
            self.ctx.verification = Verification::Reported;
            return Output::Verified;
        }
        if let Some(to) = self.ctx.control.take_stranger() {
            let bytes = self.ctx.control.unknown_tid();
            return Output::Transmit {
                to,
                bytes,
                segment_size: bytes.len(),
            };
        }
        if matches!(&self.state, State::Sending(s) if s.out_of_numbers()) {
            self.fail(Failure::OutOfBlockNumbers);
        }
        if self.ctx.control.is_queued() {
            return self.transmit_control(now);
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
                    ctx.timer.arm_if_stopped(now);
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
                Step::Wait => Output::Wait(ctx.timer.wait_deadline(now, expiry)),
            },
            State::Receiving(receiver) => match receiver.pending() {
                Some(bytes) => Output::Deliver(bytes),
                None => Output::Wait(ctx.timer.wait_deadline(now, expiry)),
            },
            State::Finishing { .. } => Output::Finish,
            _ => Output::Wait(ctx.timer.wait_deadline(now, expiry)),
        }
    }

    /// The hard deadline of a running transfer ([`timer::expiry`]).
    fn expiry(&self) -> Option<(Instant, Expiry)> {
        if !matches!(
            self.state,
            State::OackSent | State::Sending(_) | State::Receiving(_)
        ) {
            return None;
        }
        let ctx = &self.ctx;
        // Progress the peer confirmed: bytes it acknowledged, or sent in order.
        let progress = match &self.state {
            State::Sending(sender) => sender.acknowledged_bytes(),
            _ => ctx.stats.bytes_received,
        };
        expiry(
            &ctx.limits,
            ctx.stats.started,
            ctx.stats.verified,
            ctx.role.is_server(),
            progress,
        )
    }

    /// Sends the queued control packet, with its bookkeeping.
    fn transmit_control(&mut self, now: Instant) -> Output<'_> {
        let ctx = &mut self.ctx;
        incr(&mut ctx.stats.packets_sent);
        match &mut self.state {
            State::Dallying { until, .. } => {
                let end = *until.get_or_insert(now.saturating_add(ctx.timer.linger(&ctx.limits)));
                ctx.timer.set(end);
            }
            State::Closing(_) | State::Done(_) => {}
            _ => ctx.timer.arm(now),
        }
        let to = ctx.peer.addr();
        let Some((bytes, resend)) = ctx.control.transmit(now) else {
            return Output::Wait(now);
        };
        if resend {
            incr(&mut ctx.stats.control_retransmits);
        }
        Output::Transmit {
            to,
            bytes,
            segment_size: bytes.len(),
        }
    }

    fn finish(&mut self, now: Instant, outcome: Outcome) {
        self.ctx.stats.finished = Some(now);
        self.ctx.stats.outcome = Some(outcome);
        self.ctx.timer.stop();
        self.ctx.control.clear();
        self.state = State::Done(outcome);
    }

    /// Ends with an ERROR to the peer and `outcome` (a client that has no
    /// answer from the server yet has no transfer ID to tell, and ends
    /// silently).
    fn close(&mut self, code: ErrorCode, message: &[u8], outcome: Outcome) {
        self.ctx.queue_error(code, message);
        if let Peer::Listening(_) = self.ctx.peer {
            self.ctx.control.clear();
        }
        self.state = State::Closing(outcome);
    }

    /// Ends with a local failure's ERROR.
    fn fail(&mut self, failure: Failure) {
        let code = failure.code();
        self.close(
            code,
            failure.message().as_bytes(),
            Outcome::LocalError(code),
        );
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.expiry() {
            Some((at, Expiry::Unverified)) if now >= at => {
                incr(&mut self.ctx.stats.timeouts);
                self.finish(now, Outcome::TimedOut);
                return;
            }
            Some((at, Expiry::TooSlow)) if now >= at => {
                let f = Failure::TooSlow;
                self.ctx.queue_error(f.code(), f.message().as_bytes());
                self.state = State::Closing(Outcome::TimedOut);
                return;
            }
            _ => {}
        }
        let Some(deadline) = self.ctx.timer.deadline() else {
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
        if ctx.timer.expired() > ctx.retry_limit() {
            self.finish(now, Outcome::TimedOut);
            return;
        }
        ctx.timer.back_off();
        match &mut self.state {
            State::Sending(sender) => sender.on_timeout(),
            // Tell the sender where the window stands: it restarts after the
            // last block received in order.
            State::Receiving(receiver) if receiver.since_ack() > 0 => {
                receiver.restart_window();
                ctx.control.queue_ack(receiver.last_in_order_wire());
                ctx.control.mark_resend();
            }
            _ => ctx.control.resend(),
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
                        self.ctx.control.answer_stranger(from);
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
                self.ctx.sample_tx_rtt(now);
                self.ctx.progress();
                self.start_sending();
            }
            (State::Sending(sender), Packet::Ack { block }) => {
                let (rtt_from, finished) = match sender.on_ack(block) {
                    AckEffect::Duplicate => {
                        incr(&mut self.ctx.stats.duplicate_acks);
                        self.ctx.timer.duplicate_ack(block);
                        return;
                    }
                    AckEffect::Progress {
                        rtt_from,
                        unsure_from,
                    } => {
                        let unsure = unsure_from.map(|sent| now.saturating_duration_since(sent));
                        self.ctx.timer.set_unsure(block, unsure);
                        (rtt_from, false)
                    }
                    AckEffect::Finished { rtt_from } => (rtt_from, true),
                };
                if let Some(sent) = rtt_from {
                    self.ctx.timer.sample(now.saturating_duration_since(sent));
                }
                self.ctx.progress();
                self.ctx.timer.stop();
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
                    self.ctx.control.resend();
                }
            }
            _ => incr(&mut self.ctx.stats.ignored_packets),
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
                    self.ctx.sample_tx_rtt(now);
                }
                self.ctx.progress();
                // Restart the timer on progress.
                self.ctx.timer.arm(now);
            }
            DataEffect::Reack => self.ctx.control.resend(),
            DataEffect::GapAck => match receiver.last_in_order() {
                // Nothing received yet: repeat the handshake answer (ACK 0 or OACK).
                0 => self.ctx.control.resend(),
                _ => self.ctx.control.queue_ack(receiver.last_in_order_wire()),
            },
            DataEffect::Ignored => {}
            DataEffect::TooLarge => self.fail(Failure::OversizedData),
            DataEffect::TooManyBlocks if receiver.out_of_numbers() => {
                self.fail(Failure::OutOfBlockNumbers)
            }
            DataEffect::TooManyBlocks => self.fail(Failure::TooManyBlocks),
        }
    }

    pub(crate) fn start_sending(&mut self) {
        let o = self.ctx.stats.options_negotiated;
        self.ctx.timer.stop();
        self.state = State::Sending(Sender::new(
            o.block_size(),
            o.window_size(),
            self.ctx.netascii,
            self.ctx.batch,
            self.ctx.limits.rollover,
        ));
    }

    pub(crate) fn start_receiving(&mut self, options: TransferOptions) {
        self.state = State::Receiving(Receiver::new(
            options.block_size(),
            options.window_size(),
            self.ctx.netascii,
            self.ctx.limits.max_transfer_blocks,
            self.ctx.limits.rollover,
        ));
    }

    pub(crate) fn filled(&mut self, n: usize) {
        if let State::Sending(sender) = &mut self.state {
            sender.filled(n);
        }
    }

    pub(crate) fn delivered(&mut self) {
        if let State::Finishing { last } = self.state {
            self.ctx.control.queue_ack(last);
            self.state = State::Dallying { last, until: None };
            return;
        }
        let State::Receiving(receiver) = &mut self.state else {
            return;
        };
        let Some(last) = receiver.delivered() else {
            return;
        };
        let block = receiver.last_in_order_wire();
        if last {
            self.state = State::Finishing { last: block };
        } else {
            self.ctx.control.queue_ack(block);
        }
    }

    pub(crate) fn abort(&mut self, code: ErrorCode, message: &str) {
        match self.state {
            State::Closing(_) | State::Done(_) => {}
            // Everything was delivered and acknowledged: an ERROR now would
            // tell a peer re-sending its last DATA that a transfer failed
            // which did not (a shutdown's drain can reach a long dally).
            State::Dallying { .. } => self.state = State::Closing(Outcome::Completed),
            _ => self.close(code, message.as_bytes(), Outcome::LocalError(code)),
        }
    }

    pub(crate) fn set_batch(&mut self, batch: Batch) {
        self.ctx.batch = batch;
        if let State::Sending(sender) = &mut self.state {
            sender.set_batch(batch);
        }
    }

    pub(crate) fn abandon(&mut self) {
        // Not even a pending ERROR goes out: the peer's address and port
        // belong to its new transfer now.
        self.ctx.control.clear();
        self.ctx.control.forget_stranger();
        self.state = match &self.state {
            State::Done(_) => return,
            State::Closing(outcome) => State::Closing(*outcome),
            // Everything was delivered and acknowledged.
            State::Dallying { .. } => State::Closing(Outcome::Completed),
            _ => State::Closing(Outcome::Evicted),
        };
    }

    pub(crate) fn cancel(&mut self) {
        // A verified session's peer answered in the meantime: it goes on. A
        // closing one sends its ERROR first.
        if !self.ctx.stats.verified && !matches!(self.state, State::Closing(_) | State::Done(_)) {
            self.ctx.control.clear();
            self.ctx.control.forget_stranger();
            self.state = State::Closing(Outcome::Evicted);
        }
    }

    /// The largest datagram the session expects from its peer: size the
    /// receive buffer with it (one byte more reveals an oversized DATA). A
    /// server's write knows its block size from the start; a client's
    /// download does not, and takes the largest DATA; the others receive
    /// only control packets.
    pub fn max_datagram(&self) -> usize {
        match self.ctx.role {
            Role::ServerRead | Role::ClientPut => CONTROL_DATAGRAM,
            // A u16 block size plus five bytes: never saturates.
            Role::ServerWrite => DATA_HEADER_LEN
                .saturating_add(usize::from(self.ctx.stats.options_negotiated.block_size()))
                .saturating_add(1),
            Role::ClientGet => DOWNLOAD_DATAGRAM,
        }
    }

    /// Bytes of the buffers this transfer holds now (a read's window exists
    /// only once its OACK is acknowledged), the adapter's receive buffer of
    /// [`Transfer::max_datagram`] included.
    pub(crate) fn memory(&self) -> usize {
        let engine = match &self.state {
            State::Sending(sender) => sender.memory(),
            State::Receiving(receiver) => receiver.memory(),
            _ => 0,
        };
        self.ctx
            .control
            .memory()
            .saturating_add(engine)
            .saturating_add(self.max_datagram())
    }

    pub(crate) fn is_transfer_complete(&self) -> bool {
        match self.state {
            State::Dallying { .. } => true,
            State::Done(outcome) => outcome == Outcome::Completed,
            _ => false,
        }
    }
}

impl Session for Transfer {
    fn poll(&mut self, now: Instant) -> Output<'_> {
        Transfer::poll(self, now)
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        Transfer::handle_datagram(self, now, from, datagram)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Transfer::handle_timeout(self, now)
    }
    fn filled(&mut self, n: usize) {
        Transfer::filled(self, n)
    }
    fn delivered(&mut self) {
        Transfer::delivered(self)
    }
    fn abort(&mut self, code: ErrorCode, message: &str) {
        Transfer::abort(self, code, message)
    }
    fn fail(&mut self, failure: Failure) {
        Transfer::abort(self, failure.code(), failure.message())
    }
    fn cancel(&mut self) {
        Transfer::cancel(self)
    }
    fn abandon(&mut self) {
        Transfer::abandon(self)
    }
    fn set_batch(&mut self, batch: Batch) {
        Transfer::set_batch(self, batch)
    }
    fn max_datagram(&self) -> usize {
        Transfer::max_datagram(self)
    }
    fn memory(&self) -> usize {
        Transfer::memory(self)
    }
    fn stats(&self) -> &Stats {
        &self.ctx.stats
    }
    fn is_transfer_complete(&self) -> bool {
        Transfer::is_transfer_complete(self)
    }
}

impl fmt::Debug for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("role", &self.ctx.role)
            .field("peer", &self.ctx.peer.addr())
            .field("state", &format_args!("{}", self.state))
            .finish()
    }
}
