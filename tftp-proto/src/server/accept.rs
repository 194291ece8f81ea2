//! The listening socket's first step: [`accept`] turns a datagram into a
//! [`Request`] or a [`Reject`].

use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::failure::Failure;
use crate::options::{negotiate, Direction, Limits, Negotiation, RequestedOptions};
use crate::packet::{encode_error, ErrorCode, Mode, Packet, ParseError, RawOptions, RequestPacket};

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
    pub(super) options: Vec<u8>,
}

impl Request {
    fn new(direction: Direction, req: &RequestPacket<'_>, peer: SocketAddr) -> Self {
        Request {
            direction,
            filename: req.filename.to_vec(),
            mode: req.mode,
            peer,
            local: None,
            options: req.options.as_bytes().to_vec(),
        }
    }

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

    /// The option pairs as sent, encoded ("name NUL value NUL" each).
    pub(crate) fn raw_options(&self) -> &[u8] {
        &self.options
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
        negotiate(
            &self.requested(),
            limits,
            self.direction,
            self.mode.wire_size(size),
        )
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
    /// The local failure it was made from, if any ([`TftpError::from`]).
    failure: Option<Failure>,
}

impl TftpError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<alloc::string::String>) -> Self {
        TftpError {
            code,
            message: message.into(),
            failure: None,
        }
    }

    /// The busy answer ([`Failure::Busy`]): no resources for the request
    /// now. An adapter asks its handler again for a while before sending
    /// it (a burst that ran out of descriptors frees them as sessions end).
    pub fn busy() -> Self {
        Self::from(Failure::Busy)
    }

    /// Whether this is the busy answer of [`TftpError::busy`] (by its type,
    /// not its text: a handler's own ERROR 0 with the same words is not).
    pub fn is_busy(&self) -> bool {
        self.failure == Some(Failure::Busy)
    }

    /// The local failure this error was made from, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// ERROR 1, "File not found" ([`Failure::NotFound`]).
    pub fn not_found() -> Self {
        Self::from(Failure::NotFound)
    }

    /// ERROR 2 with a message.
    pub fn access_violation(message: impl Into<alloc::string::String>) -> Self {
        Self::new(ErrorCode::AccessViolation, message)
    }
}

impl From<Failure> for TftpError {
    /// The failure's ERROR code and text, from the core's one table.
    fn from(failure: Failure) -> Self {
        TftpError {
            code: failure.code(),
            message: failure.message().into(),
            failure: Some(failure),
        }
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
        Ok(Packet::Rrq(req)) => Ok(Request::new(Direction::Read, &req, peer)),
        Ok(Packet::Wrq(req)) => Ok(Request::new(Direction::Write, &req, peer)),
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
