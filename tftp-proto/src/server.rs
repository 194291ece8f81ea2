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

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

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
    /// The local address the request arrived on, when the adapter knows it.
    pub local: Option<SocketAddr>,
    options: Vec<u8>,
}

impl Request {
    /// The file name as sent (bytes: not assumed to be UTF-8).
    pub fn filename(&self) -> &[u8] {
        &self.filename
    }

    /// The file name as text, with invalid UTF-8 replaced.
    pub fn filename_lossy(&self) -> alloc::borrow::Cow<'_, str> {
        alloc::string::String::from_utf8_lossy(&self.filename)
    }

    /// Transfer mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Read (RRQ) or write (WRQ).
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The local address the request arrived on (set by the adapter).
    pub fn local(&self) -> Option<SocketAddr> {
        self.local
    }

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

/// What an application answers a request with when it refuses it: sent to
/// the client as an ERROR packet with this code and message. Shared by the
/// adapters' handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TftpError {
    /// The ERROR code.
    pub code: ErrorCode,
    /// The message (keep it short; never put local paths in it).
    pub message: alloc::string::String,
}

impl TftpError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<alloc::string::String>) -> Self {
        TftpError {
            code,
            message: message.into(),
        }
    }

    /// ERROR 1, "File not found".
    pub fn not_found() -> Self {
        Self::new(ErrorCode::FileNotFound, "File not found")
    }

    /// ERROR 2 with a message.
    pub fn access_violation(message: impl Into<alloc::string::String>) -> Self {
        Self::new(ErrorCode::AccessViolation, message)
    }
}

impl core::fmt::Display for TftpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TFTP error {}: {}", self.code.as_u16(), self.message)
    }
}

impl core::error::Error for TftpError {}

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
            local: None,
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

/// Default for [`Admission`]'s session limit.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default for [`Admission`]'s per-address limit.
pub const DEFAULT_MAX_SESSIONS_PER_PEER: usize = 256;

/// Which requests get a session: at most `max_sessions` at once, at most
/// `max_sessions_per_peer` from one IP address, and one per (peer address
/// and port, direction, file name) while it runs: a retransmitted request
/// does not start a second session. Adapters keep one behind a lock and call
/// [`Admission::admit`] in the accept loop and [`Admission::release`] when the
/// session ends.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    max_sessions: usize,
    max_sessions_per_peer: usize,
    per_ip: BTreeMap<IpAddr, usize>,
    running: BTreeSet<SessionKey>,
}

/// Identifies a running session for duplicate detection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    peer: SocketAddr,
    write: bool,
    filename: Vec<u8>,
}

/// Why [`Admission::admit`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The same request is being served: stay silent (the running session
    /// answers it).
    Duplicate,
    /// A limit is reached: answer with [`Refusal::encode`] (ERROR 0).
    Busy,
}

impl Refusal {
    /// The answer to send from the listening socket, if any.
    pub fn encode(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Refusal::Duplicate => None,
            Refusal::Busy => {
                encode_error(buf, ErrorCode::NotDefined, b"Server busy, try again later").ok()
            }
        }
    }
}

impl Admission {
    /// A policy with these limits.
    pub fn new(max_sessions: usize, max_sessions_per_peer: usize) -> Self {
        Admission {
            max_sessions,
            max_sessions_per_peer,
            ..Admission::default()
        }
    }

    /// Admits `request` (and counts it) or says why not.
    pub fn admit(&mut self, request: &Request) -> Result<SessionKey, Refusal> {
        let key = SessionKey {
            peer: request.peer,
            write: request.direction == Direction::Write,
            filename: request.filename.clone(),
        };
        if self.running.contains(&key) {
            return Err(Refusal::Duplicate);
        }
        let ip = request.peer.ip();
        let from_peer = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.running.len() >= self.max_sessions || from_peer >= self.max_sessions_per_peer {
            return Err(Refusal::Busy);
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.running.insert(key.clone());
        Ok(key)
    }

    /// The session admitted under `key` ended.
    pub fn release(&mut self, key: &SessionKey) {
        if self.running.remove(key) {
            let ip = key.peer.ip();
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    /// Sessions running.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

/// What the listening socket does with one datagram.
#[derive(Debug)]
pub enum Admit {
    /// Start a session for this request (release `key` when it ends).
    Start {
        /// The request, with `local` set.
        request: Request,
        /// Its admission, for [`Admission::release`].
        key: SessionKey,
    },
    /// Send the first `n` bytes of the reply buffer back to the sender.
    Reply(usize),
    /// Send nothing.
    Ignore,
}

#[cfg(target_has_atomic = "64")]
impl Admission {
    /// The whole decision for one datagram on the listening socket at
    /// `local`: parse it ([`accept`]), apply the limits, count it in
    /// `counters`; an answer to send goes into `reply`.
    pub fn admit_datagram(
        &mut self,
        datagram: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
        limits: &Limits,
        counters: &crate::stats::ServerCounters,
        reply: &mut [u8],
    ) -> Admit {
        let answer = |len: Option<usize>| len.map_or(Admit::Ignore, Admit::Reply);
        let mut request = match accept(datagram, peer, limits) {
            Ok(request) => request,
            Err(reject) => {
                counters.bad_request();
                return answer(reject.encode(reply));
            }
        };
        match self.admit(&request) {
            Ok(key) => {
                counters.session_started();
                request.local = Some(local);
                Admit::Start { request, key }
            }
            Err(refusal) => {
                match refusal {
                    Refusal::Duplicate => counters.duplicate(),
                    Refusal::Busy => counters.rejected(),
                }
                answer(refusal.encode(reply))
            }
        }
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

/// A server session of either direction, started from a request and the
/// application's answer: what every adapter runs after calling its handler.
pub enum ServerSession {
    /// Serving a RRQ.
    Read(ServerRead),
    /// Serving a WRQ.
    Write(ServerWrite),
}

impl ServerSession {
    /// Starts serving `request` under the server's `limits`, narrowed by the
    /// application's `narrow` (it can only restrict them); `size` is the
    /// size of a read's source when known (answered to `tsize`).
    pub fn start(
        request: &Request,
        limits: &Limits,
        narrow: Option<&Limits>,
        size: Option<u64>,
        now: Instant,
    ) -> Self {
        let limits = match narrow {
            Some(n) => limits.narrowed_by(n),
            None => limits.clone(),
        };
        match request.direction {
            Direction::Read => {
                let oack = request.negotiate(&limits, size).oack;
                ServerSession::Read(ServerRead::new(request, oack, &limits, now))
            }
            Direction::Write => {
                let oack = request.negotiate(&limits, None).oack;
                ServerSession::Write(ServerWrite::new(request, oack, &limits, now))
            }
        }
    }

    /// A session that answers `request` with ERROR `code` and `message` (from
    /// the transfer socket, as RFC 1350 wants) and ends.
    pub fn refuse(
        request: &Request,
        code: ErrorCode,
        message: &str,
        limits: &Limits,
        now: Instant,
    ) -> Self {
        let mut s = match request.direction {
            Direction::Read => ServerSession::Read(ServerRead::new(
                request,
                TransferOptions::default(),
                limits,
                now,
            )),
            Direction::Write => ServerSession::Write(ServerWrite::new(
                request,
                TransferOptions::default(),
                limits,
                now,
            )),
        };
        crate::session::Session::abort(&mut s, code, message);
        s
    }

    /// Records the local address of the session's transfer socket in its
    /// statistics.
    pub fn set_local(&mut self, local: SocketAddr) {
        match self {
            ServerSession::Read(s) => s.0.ctx.stats.local = Some(local),
            ServerSession::Write(s) => s.0.ctx.stats.local = Some(local),
        }
    }

    /// The largest datagram the session expects from its peer: size the
    /// receive buffer with it (one byte more reveals an oversized DATA).
    pub fn max_datagram(&self) -> usize {
        match self {
            ServerSession::Read(_) => 1024,
            ServerSession::Write(w) => {
                crate::packet::DATA_HEADER_LEN
                    + usize::from(w.0.ctx.stats.options_negotiated.block_size())
                    + 1
            }
        }
    }
}

impl crate::session::Session for ServerSession {
    fn poll(&mut self, now: Instant) -> crate::session::Output<'_> {
        match self {
            ServerSession::Read(s) => s.poll(now),
            ServerSession::Write(s) => s.poll(now),
        }
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self {
            ServerSession::Read(s) => s.handle_datagram(now, from, datagram),
            ServerSession::Write(s) => s.handle_datagram(now, from, datagram),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            ServerSession::Read(s) => s.handle_timeout(now),
            ServerSession::Write(s) => s.handle_timeout(now),
        }
    }
    fn filled(&mut self, n: usize) {
        match self {
            ServerSession::Read(s) => s.filled(n),
            ServerSession::Write(s) => s.filled(n),
        }
    }
    fn delivered(&mut self) {
        match self {
            ServerSession::Read(s) => s.delivered(),
            ServerSession::Write(s) => s.delivered(),
        }
    }
    fn abort(&mut self, code: ErrorCode, message: &str) {
        match self {
            ServerSession::Read(s) => s.abort(code, message),
            ServerSession::Write(s) => s.abort(code, message),
        }
    }
    fn stats(&self) -> &Stats {
        match self {
            ServerSession::Read(s) => s.stats(),
            ServerSession::Write(s) => s.stats(),
        }
    }
    fn is_transfer_complete(&self) -> bool {
        match self {
            ServerSession::Read(s) => s.is_transfer_complete(),
            ServerSession::Write(s) => s.is_transfer_complete(),
        }
    }
}

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
    fn admission_limits_and_duplicates() {
        let mut a = Admission::new(2, 1);
        let r1 = accept(b"\x00\x01f\x00octet\x00", peer(), &Limits::default()).unwrap();
        let k1 = a.admit(&r1).unwrap();
        assert_eq!(a.admit(&r1), Err(Refusal::Duplicate));
        let mut r2 = r1.clone();
        r2.peer = "192.0.2.1:40001".parse().unwrap();
        assert_eq!(a.admit(&r2), Err(Refusal::Busy), "per-peer limit of 1");
        let mut r3 = r1.clone();
        r3.peer = "192.0.2.2:1".parse().unwrap();
        let _k3 = a.admit(&r3).unwrap();
        let mut r4 = r1.clone();
        r4.peer = "192.0.2.3:1".parse().unwrap();
        assert_eq!(a.admit(&r4), Err(Refusal::Busy), "total limit of 2");
        a.release(&k1);
        assert!(a.admit(&r2).is_ok());
        assert_eq!(a.running(), 2);
        let mut buf = [0u8; 64];
        assert!(Refusal::Busy.encode(&mut buf).is_some());
        assert_eq!(Refusal::Duplicate.encode(&mut buf), None);
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
