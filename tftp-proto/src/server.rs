//! Server side: [`accept`] turns the first datagram on the listening socket
//! into a [`Request`] (or a [`Reject`]); [`ServerRead`] and [`ServerWrite`]
//! run the transfer on a fresh socket (the server's transfer ID).
//!
//! Typical flow in an adapter:
//!
//! 1. `accept(datagram, peer, &limits)` → `Request`;
//! 2. the application decides (file or generated data, optional per-request
//!    narrower [`Limits`], known size);
//! 3. `request.negotiate(&limits, size)` → the OACK contents;
//! 4. `ServerRead::new(&request, negotiation.oack, &limits, now)` and drive it
//!    (see [`crate::session`]).

use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::options::{
    negotiate, Direction, Limits, Negotiation, RequestedOptions, TransferOptions,
};
use crate::packet::{encode_error, encode_oack, ErrorCode, Mode, Packet, ParseError, RawOptions};
use crate::session::{impl_session, Ctx, Role, State, Transfer};
use crate::stats::Stats;
use crate::time::Instant;

/// A read or write request accepted on the listening socket (owned: it moves
/// into the task or thread that serves it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// RRQ (read) or WRQ (write).
    pub direction: Direction,
    /// The file name as sent (bytes; not assumed UTF-8).
    pub filename: Vec<u8>,
    /// Transfer mode.
    pub mode: Mode,
    /// The client's address and port (its transfer ID).
    pub peer: SocketAddr,
    options: Vec<u8>,
}

impl Request {
    /// The options as sent, in order.
    pub fn options(&self) -> RawOptions<'_> {
        // Stored from a parsed request: always well formed.
        RawOptions::parse(&self.options).unwrap_or_default()
    }

    /// The options sorted into the known ones, unknown ones and duplicates.
    pub fn requested(&self) -> RequestedOptions<'_> {
        RequestedOptions::from_raw(self.options())
    }

    /// Negotiates the request's options under `limits`. `size` is the size of
    /// the file for a read when known in advance. In netascii mode a read's
    /// size on the wire (after CR LF expansion) is not known in advance, so
    /// `tsize` is then not acknowledged.
    pub fn negotiate(&self, limits: &Limits, size: Option<u64>) -> Negotiation {
        let size = if self.mode == Mode::Netascii {
            None
        } else {
            size
        };
        negotiate(&self.requested(), limits, self.direction, size)
    }
}

/// Why the first datagram does not start a session, and what to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not a request (garbage, or a packet that only makes sense on a
    /// transfer socket): send nothing.
    Ignore,
    /// A broken or unsupported request: answer with this ERROR.
    Error {
        /// The code to send.
        code: ErrorCode,
        /// The message to send.
        message: &'static str,
    },
}

impl Reject {
    /// Encodes the answer into `buf`, if there is one.
    pub fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Reject::Ignore => None,
            Reject::Error { code, message } => encode_error(buf, *code, message.as_bytes()).ok(),
        }
    }
}

/// Turns the first datagram on the listening socket into a [`Request`].
///
/// Requests larger than [`Limits::max_request_size`] and malformed requests
/// are answered with ERROR 4 (an unsupported mode too); anything that is not
/// a request is ignored, so the listening port never answers garbage or
/// reflects traffic.
pub fn accept(datagram: &[u8], peer: SocketAddr, limits: &Limits) -> Result<Request, Reject> {
    let is_request = matches!(datagram, [0, 1, ..] | [0, 2, ..]);
    if datagram.len() > limits.max_request_size {
        return Err(if is_request {
            Reject::Error {
                code: ErrorCode::IllegalOperation,
                message: "Request too large",
            }
        } else {
            Reject::Ignore
        });
    }
    match Packet::parse(datagram) {
        Ok(Packet::Rrq(req)) | Ok(Packet::Wrq(req)) => Ok(Request {
            direction: if matches!(datagram, [0, 1, ..]) {
                Direction::Read
            } else {
                Direction::Write
            },
            filename: req.filename.to_vec(),
            mode: req.mode,
            peer,
            options: req.options.as_bytes().to_vec(),
        }),
        Ok(_) => Err(Reject::Ignore),
        Err(e) if is_request => Err(rejection(e)),
        Err(_) => Err(Reject::Ignore),
    }
}

/// The one place a request's parse error becomes an answer.
fn rejection(error: ParseError) -> Reject {
    let message = match error {
        ParseError::MailMode | ParseError::UnknownMode => "Unsupported transfer mode",
        ParseError::TooManyOptions => "Too many options",
        ParseError::EmptyFilename => "Empty file name",
        _ => "Malformed request",
    };
    Reject::Error {
        code: ErrorCode::IllegalOperation,
        message,
    }
}

fn server_transfer(
    request: &Request,
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
        &request.options,
        now,
    );
    let mut ctx = Ctx::new(
        role,
        request.peer,
        limits,
        request.mode == Mode::Netascii,
        stats,
    );
    ctx.apply_options(options);
    if !options.is_empty() {
        // NOTE(unwrap): an OACK of the four options is under 100 bytes; tx holds 512.
        let len = encode_oack(&mut ctx.tx, &options).expect("tx holds an OACK");
        ctx.queue_tx(len);
        ctx.oack_outstanding = true;
    }
    Transfer {
        ctx,
        state: State::Requesting,
    }
}

/// Serves a read request: OACK (if options were negotiated) and ACK 0, then
/// DATA from the source.
pub struct ServerRead(Transfer);

impl ServerRead {
    /// Starts the session. `options` is the final negotiation result (usually
    /// [`Request::negotiate`]`(..).oack`, possibly narrowed by the
    /// application); an empty set means no OACK and DATA 1 at once.
    pub fn new(request: &Request, options: TransferOptions, limits: &Limits, now: Instant) -> Self {
        let mut t = server_transfer(request, options, limits, now);
        if t.ctx.oack_outstanding {
            t.state = State::OackSent;
        } else {
            t.start_sending();
        }
        ServerRead(t)
    }
}

impl_session!(ServerRead);

/// Serves a write request: OACK (if options were negotiated) or ACK 0, then
/// DATA into the sink.
pub struct ServerWrite(Transfer);

impl ServerWrite {
    /// Starts the session; see [`ServerRead::new`] for `options`.
    pub fn new(request: &Request, options: TransferOptions, limits: &Limits, now: Instant) -> Self {
        let mut t = server_transfer(request, options, limits, now);
        if !t.ctx.oack_outstanding {
            // NOTE(unwrap): tx holds 512 bytes.
            let len = crate::packet::encode_ack(&mut t.ctx.tx, 0).expect("tx holds an ACK");
            t.ctx.queue_tx(len);
        }
        let negotiated = t.ctx.stats.options_negotiated;
        t.start_receiving(negotiated);
        ServerWrite(t)
    }
}

impl_session!(ServerWrite);

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    #[test]
    fn accepts_requests() {
        let r = accept(
            b"\x00\x01a/b\x00octet\x00tsize\x000\x00",
            peer(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.direction, Direction::Read);
        assert_eq!(r.filename, b"a/b");
        assert_eq!(r.options().len(), 1);
        let r = accept(b"\x00\x02x\x00netascii\x00", peer(), &Limits::default()).unwrap();
        assert_eq!(r.direction, Direction::Write);
        assert_eq!(r.mode, Mode::Netascii);
    }

    #[test]
    fn rejects() {
        let l = Limits::default();
        assert_eq!(accept(b"", peer(), &l), Err(Reject::Ignore));
        assert_eq!(accept(b"\x00\x03\x00\x01", peer(), &l), Err(Reject::Ignore));
        assert_eq!(
            accept(b"\x00\x05\x00\x01x\x00", peer(), &l),
            Err(Reject::Ignore)
        );
        assert_eq!(accept(b"\x00\x09", peer(), &l), Err(Reject::Ignore));
        let e = accept(b"\x00\x01f\x00mail\x00", peer(), &l).unwrap_err();
        assert_eq!(
            e,
            Reject::Error {
                code: ErrorCode::IllegalOperation,
                message: "Unsupported transfer mode"
            }
        );
        let mut buf = [0u8; 64];
        let n = e.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x00\x05\x00\x04Unsupported transfer mode\x00");
        assert!(matches!(
            accept(b"\x00\x01f", peer(), &l),
            Err(Reject::Error { .. })
        ));
    }

    #[test]
    fn request_size_limit_edge() {
        let l = Limits {
            max_request_size: 20,
            ..Limits::default()
        };
        let mut ok = b"\x00\x01".to_vec();
        ok.extend_from_slice(&[b'a'; 11]);
        ok.extend_from_slice(b"\x00octet\x00");
        assert_eq!(ok.len(), 20);
        assert!(accept(&ok, peer(), &l).is_ok());
        let mut big = b"\x00\x01".to_vec();
        big.extend_from_slice(&[b'a'; 12]);
        big.extend_from_slice(b"\x00octet\x00");
        assert_eq!(
            accept(&big, peer(), &l),
            Err(Reject::Error {
                code: ErrorCode::IllegalOperation,
                message: "Request too large"
            })
        );
        assert_eq!(
            accept(
                &[0u8, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                peer(),
                &l
            ),
            Err(Reject::Ignore)
        );
    }

    #[test]
    fn netascii_read_does_not_answer_tsize() {
        let r = accept(
            b"\x00\x01f\x00netascii\x00tsize\x000\x00",
            peer(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.negotiate(&Limits::default(), Some(10)).oack.tsize, None);
        let r = accept(
            b"\x00\x01f\x00octet\x00tsize\x000\x00",
            peer(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            r.negotiate(&Limits::default(), Some(10)).oack.tsize,
            Some(10)
        );
    }
}
