//! How each role starts (a server's OACK, ACK 0 or DATA 1; a client's
//! request) and a client's first answer from the server (OACK, DATA 1,
//! ACK 0 or ERROR).

use alloc::vec;
use core::net::SocketAddr;

use crate::options::{validate_oack, Direction, Limits, TransferOptions};
use crate::packet::{
    encode_oack, encode_request, EncodeError, ErrorCode, Mode, Packet, ParseError,
};
use crate::stats::{incr, Stats};
use crate::time::Instant;

use super::control::{ControlTx, CONTROL_BUF};
use super::{Ctx, Role, State, Transfer};

impl Transfer {
    /// A server session for `request` answering with `options` (the
    /// negotiation's result): the OACK queued when there is one, then the
    /// role's first state without passing through a client's.
    pub(crate) fn server(
        request: &crate::server::Request,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Transfer {
        let options = options.clamped_to(limits);
        let role = match request.direction {
            Direction::Read => Role::ServerRead,
            Direction::Write => Role::ServerWrite,
        };
        let stats = Stats::new(
            request.peer,
            &request.filename,
            request.mode,
            request.direction,
            request.raw_options(),
            now,
        );
        let mut ctx = Ctx::new(
            role,
            request.peer,
            limits,
            request.mode == Mode::Netascii,
            stats,
            ControlTx::new(),
        );
        ctx.apply_options(options);
        if !options.is_empty() {
            // NOTE(unwrap): an OACK of the four options is under 100 bytes; tx holds 512.
            #[allow(clippy::expect_used)]
            let len = encode_oack(ctx.control.buf_mut(), &options).expect("tx holds an OACK");
            ctx.control.queue(len);
        }
        let oack = !options.is_empty();
        let mut t = Transfer {
            ctx,
            state: State::OackSent,
        };
        match role {
            // The OACK waits for ACK 0; without one, DATA 1 goes at once.
            Role::ServerRead if oack => {}
            Role::ServerRead => t.start_sending(),
            // The OACK, or ACK 0, asks for DATA 1.
            _ => {
                if !oack {
                    t.ctx.control.queue_ack(0);
                }
                t.start_receiving(options);
            }
        }
        t
    }

    /// A client session: the request to `server` (its listening address) is
    /// queued.
    pub(crate) fn client(
        role: Role,
        server: SocketAddr,
        filename: &[u8],
        mode: Mode,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Result<Transfer, EncodeError> {
        // Never ask for more than this side's own limits allow.
        let options = options.clamped_to(limits);
        let write = role == Role::ClientPut;
        // "opcode filename NUL mode NUL": 4 bytes besides the two strings.
        let head = filename
            .len()
            .saturating_add(mode.as_str().len())
            .saturating_add(4);
        let len = head.saturating_add(options.encoded_len());
        let mut tx = vec![0u8; len.max(CONTROL_BUF)];
        let n = encode_request(&mut tx, write, filename, mode, &options)?;
        let direction = if write {
            Direction::Write
        } else {
            Direction::Read
        };
        // The option pairs follow "opcode filename NUL mode NUL".
        let pairs = tx.get(head..n).unwrap_or_default();
        let stats = Stats::new(server, filename, mode, direction, pairs, now);
        let mut ctx = Ctx::new(
            role,
            server,
            limits,
            mode == Mode::Netascii,
            stats,
            ControlTx::with_buffer(tx),
        );
        ctx.asked = options;
        ctx.control.queue(n);
        Ok(Transfer {
            ctx,
            state: State::Requesting,
        })
    }

    /// Whether a client may take `packet` as the server's first answer (and
    /// fix the server's transfer port from it).
    pub(crate) fn is_first_answer(&self, packet: &Result<Packet<'_>, ParseError>) -> bool {
        matches!(
            (self.ctx.role, packet),
            (_, Ok(Packet::Error { .. } | Packet::Oack(_)))
                | (Role::ClientGet, Ok(Packet::Data { block: 1, .. }))
                | (Role::ClientPut, Ok(Packet::Ack { block: 0 }))
        )
    }

    /// A server's OACK is out and nothing has answered it with progress yet
    /// (a read waits for ACK 0; a write has received no DATA in order).
    pub(crate) fn oack_unanswered(&self) -> bool {
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

    /// A client's first answer from the server.
    pub(crate) fn on_first_answer(&mut self, now: Instant, packet: Packet<'_>) {
        let role = self.ctx.role;
        match (role, packet) {
            (Role::ClientGet | Role::ClientPut, Packet::Oack(raw)) => {
                let direction = if role == Role::ClientGet {
                    Direction::Read
                } else {
                    Direction::Write
                };
                match validate_oack(&self.ctx.asked, raw, direction) {
                    Ok(options) => {
                        self.ctx.sample_tx_rtt(now);
                        self.ctx.progress();
                        self.ctx.apply_options(options);
                        if role == Role::ClientGet {
                            self.start_receiving(options);
                            self.ctx.control.queue_ack(0);
                        } else {
                            self.start_sending();
                        }
                    }
                    Err(e) => {
                        let code = ErrorCode::OptionNegotiation;
                        self.close(
                            code,
                            e.message().as_bytes(),
                            crate::stats::Outcome::LocalError(code),
                        )
                    }
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
                self.ctx.sample_tx_rtt(now);
                self.ctx.apply_options(TransferOptions::default());
                self.start_receiving(TransferOptions::default());
                // The request is no reply to resend: until ACK 1 exists, a
                // duplicate DATA 1 or a timeout sends nothing.
                self.ctx.control.clear();
                self.on_data(now, block, payload);
            }
            (Role::ClientPut, Packet::Ack { block: 0 }) => {
                self.ctx.sample_tx_rtt(now);
                self.ctx.progress();
                self.ctx.apply_options(TransferOptions::default());
                self.start_sending();
            }
            _ => incr(&mut self.ctx.stats.ignored_packets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Output;

    fn peer() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    fn request(datagram: &[u8]) -> crate::server::Request {
        crate::server::accept(datagram, peer(), &Limits::default()).unwrap()
    }

    fn first(t: &mut Transfer) -> alloc::vec::Vec<u8> {
        match t.poll(Instant::ZERO) {
            Output::Transmit { bytes, .. } => bytes.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_read_with_options_waits_for_ack_0_after_its_oack() {
        let r = request(b"\x00\x01f\x00octet\x00blksize\x001024\x00");
        let oack = r.negotiate(&Limits::default(), None).oack;
        let mut t = Transfer::server(&r, oack, &Limits::default(), Instant::ZERO);
        assert!(matches!(t.state, State::OackSent));
        assert_eq!(first(&mut t), b"\x00\x06blksize\x001024\x00");
    }

    #[test]
    fn a_server_without_options_starts_its_engine_at_once() {
        let r = request(b"\x00\x01f\x00octet\x00");
        let t = Transfer::server(
            &r,
            TransferOptions::default(),
            &Limits::default(),
            Instant::ZERO,
        );
        assert!(matches!(t.state, State::Sending(_)));
        let r = request(b"\x00\x02f\x00octet\x00");
        let mut t = Transfer::server(
            &r,
            TransferOptions::default(),
            &Limits::default(),
            Instant::ZERO,
        );
        assert!(matches!(t.state, State::Receiving(_)));
        assert_eq!(first(&mut t), b"\x00\x04\x00\x00");
    }

    #[test]
    fn a_client_sends_its_request_and_takes_the_first_answer_port() {
        let listen: SocketAddr = "192.0.2.2:69".parse().unwrap();
        let mut t = Transfer::client(
            Role::ClientGet,
            listen,
            b"f",
            Mode::Octet,
            TransferOptions::default(),
            &Limits::default(),
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!(first(&mut t), b"\x00\x01f\x00octet\x00");
        assert!(t.is_first_answer(&Packet::parse(b"\x00\x03\x00\x01x")));
        assert!(!t.is_first_answer(&Packet::parse(b"\x00\x04\x00\x00")));
        let tid: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        t.handle_datagram(Instant::ZERO, tid, b"\x00\x03\x00\x01x");
        assert_eq!(t.ctx.peer.addr(), tid);
        assert!(matches!(t.state, State::Receiving(_)));
    }

    #[test]
    fn a_client_refuses_an_oack_it_did_not_ask_for() {
        let listen: SocketAddr = "192.0.2.2:69".parse().unwrap();
        let mut t = Transfer::client(
            Role::ClientPut,
            listen,
            b"f",
            Mode::Octet,
            TransferOptions::default(),
            &Limits::default(),
            Instant::ZERO,
        )
        .unwrap();
        let _ = first(&mut t);
        let tid: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        t.handle_datagram(Instant::ZERO, tid, b"\x00\x06blksize\x00512\x00");
        assert!(matches!(t.state, State::Closing(_)));
        assert_eq!(first(&mut t)[..4], *b"\x00\x05\x00\x08");
    }
}
