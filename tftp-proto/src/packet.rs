//! TFTP packets (RFC 1350, RFC 2347 OACK): zero-copy parsing and encoding into
//! caller-provided buffers.
//!
//! [`Packet::parse`] borrows from the datagram and checks its syntax once; what
//! the contents *mean* (which options are accepted, what an error code asks for)
//! is decided elsewhere ([`crate::options`], the sessions). Encoders write into a
//! buffer the caller owns and never allocate.
//!
//! Leniency, chosen for interoperability with old boot ROMs (and as tftpd-hpa
//! reads requests):
//! - an empty option name ends the options of a request or OACK: NUL
//!   padding after the last option, or anything after an empty string;
//! - a last option name with no value after it is ignored (in an OACK too:
//!   the client then goes on without that option);
//! - an ERROR message without its terminating NUL runs to the end of the datagram;
//! - bytes after the block number of an ACK are ignored.
//!
//! Everything else that is malformed is a named [`ParseError`].

use core::fmt;

use crate::codec::{Reader, Writer};

/// Opcode of a read request.
pub const OPCODE_RRQ: u16 = 1;
/// Opcode of a write request.
pub const OPCODE_WRQ: u16 = 2;
/// Opcode of a DATA packet.
pub const OPCODE_DATA: u16 = 3;
/// Opcode of an ACK packet.
pub const OPCODE_ACK: u16 = 4;
/// Opcode of an ERROR packet.
pub const OPCODE_ERROR: u16 = 5;
/// Opcode of an option acknowledgment (RFC 2347).
pub const OPCODE_OACK: u16 = 6;

/// Length of the DATA header (opcode + block number) in front of the payload.
pub const DATA_HEADER_LEN: usize = 4;
/// Length of an ACK packet.
pub const ACK_LEN: usize = 4;
/// Most options a request or OACK may carry; more is [`ParseError::TooManyOptions`].
pub const MAX_OPTIONS: usize = 32;

/// A parsed TFTP packet borrowing from the datagram it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request.
    Rrq(RequestPacket<'a>),
    /// Write request.
    Wrq(RequestPacket<'a>),
    /// A block of file data.
    Data {
        /// Block number (16 bits on the wire; it wraps).
        block: u16,
        /// The payload after the 4-byte header.
        payload: &'a [u8],
    },
    /// Acknowledgment of a block.
    Ack {
        /// Block number acknowledged.
        block: u16,
    },
    /// An error; it ends the transfer.
    Error {
        /// The error code.
        code: ErrorCode,
        /// The human-readable message, without its NUL (bytes, not assumed UTF-8).
        message: &'a [u8],
    },
    /// Option acknowledgment (RFC 2347).
    Oack(RawOptions<'a>),
}

/// The body of a RRQ or WRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPacket<'a> {
    /// The file name as sent: bytes, not assumed to be UTF-8, never empty.
    pub filename: &'a [u8],
    /// Transfer mode.
    pub mode: Mode,
    /// Options (RFC 2347) in the order the client sent them.
    pub options: RawOptions<'a>,
}

/// Transfer mode of a request. Names are matched case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Mode {
    /// Text with CR LF line ends on the wire (see [`crate::netascii`]).
    Netascii,
    /// Raw bytes.
    Octet,
}

impl Mode {
    /// Parses a mode name; `mail` is obsolete (RFC 1350 says it should not be
    /// implemented) and gets its own error.
    pub fn from_bytes(name: &[u8]) -> Result<Self, ParseError> {
        if name.eq_ignore_ascii_case(b"octet") {
            Ok(Mode::Octet)
        } else if name.eq_ignore_ascii_case(b"netascii") {
            Ok(Mode::Netascii)
        } else if name.eq_ignore_ascii_case(b"mail") {
            Err(ParseError::MailMode)
        } else {
            Err(ParseError::UnknownMode)
        }
    }

    /// The canonical (lower-case) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
        }
    }

    /// The size a file of `size` bytes has on the wire in this mode, as far
    /// as it is known in advance: the size itself in octet mode; unknown in
    /// netascii (line ends expand). What `tsize` may announce, by a server
    /// answering a read and by a client uploading.
    pub fn wire_size(self, size: Option<u64>) -> Option<u64> {
        match self {
            Mode::Octet => size,
            Mode::Netascii => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TFTP error codes (RFC 1350, 8 from RFC 2347). Unknown codes are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTid,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation refused (RFC 2347).
    OptionNegotiation,
    /// Any other code, kept as received.
    Other(u16),
}

impl ErrorCode {
    /// The code for a wire value.
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            other => ErrorCode::Other(other),
        }
    }

    /// The wire value.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(code) => code,
        }
    }

    /// A short default message for the code.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::NotDefined | ErrorCode::Other(_) => "Error",
            ErrorCode::FileNotFound => "File not found",
            ErrorCode::AccessViolation => "Access violation",
            ErrorCode::DiskFull => "Disk full or allocation exceeded",
            ErrorCode::IllegalOperation => "Illegal TFTP operation",
            ErrorCode::UnknownTid => "Unknown transfer ID",
            ErrorCode::FileExists => "File already exists",
            ErrorCode::NoSuchUser => "No such user",
            ErrorCode::OptionNegotiation => "Option negotiation failed",
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        ErrorCode::from_u16(code)
    }
}

/// Why a datagram is not a TFTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the fixed header of its packet type.
    #[error("datagram too short")]
    TooShort,
    /// The opcode is not 1 to 6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field runs to the end of the datagram without a NUL.
    #[error("{0} is not NUL-terminated")]
    MissingNul(&'static str),
    /// A request with an empty file name.
    #[error("empty file name")]
    EmptyFilename,
    /// A mode other than netascii, octet or mail.
    #[error("unknown transfer mode")]
    UnknownMode,
    /// The obsolete `mail` mode (RFC 1350 says not to implement it).
    #[error("mail mode is obsolete and not supported")]
    MailMode,
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

/// The caller's buffer is too small for the packet being encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small for the packet")]
pub struct BufferTooSmall;

/// Why a packet could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is too small.
    #[error(transparent)]
    BufferTooSmall(#[from] BufferTooSmall),
    /// A file name, message, option name or value contains a NUL byte, or a
    /// required string is empty: the packet would not parse back the same.
    #[error("string field contains a NUL byte or is empty")]
    InvalidString,
}

impl<'a> Packet<'a> {
    /// Parses one datagram. Never panics; borrows from `datagram`.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(datagram);
        let opcode = r.u16().ok_or(ParseError::TooShort)?;
        match opcode {
            OPCODE_RRQ => Ok(Packet::Rrq(RequestPacket::parse(r)?)),
            OPCODE_WRQ => Ok(Packet::Wrq(RequestPacket::parse(r)?)),
            OPCODE_DATA => {
                let block = r.u16().ok_or(ParseError::TooShort)?;
                Ok(Packet::Data {
                    block,
                    payload: r.rest(),
                })
            }
            OPCODE_ACK => {
                let block = r.u16().ok_or(ParseError::TooShort)?;
                Ok(Packet::Ack { block })
            }
            OPCODE_ERROR => {
                let code = ErrorCode::from_u16(r.u16().ok_or(ParseError::TooShort)?);
                let message = match r.cstr() {
                    Some(m) => m,
                    None => r.rest(),
                };
                Ok(Packet::Error { code, message })
            }
            OPCODE_OACK => Ok(Packet::Oack(RawOptions::parse(r.rest())?)),
            other => Err(ParseError::UnknownOpcode(other)),
        }
    }

    /// The opcode of this packet.
    pub fn opcode(&self) -> u16 {
        match self {
            Packet::Rrq(_) => OPCODE_RRQ,
            Packet::Wrq(_) => OPCODE_WRQ,
            Packet::Data { .. } => OPCODE_DATA,
            Packet::Ack { .. } => OPCODE_ACK,
            Packet::Error { .. } => OPCODE_ERROR,
            Packet::Oack(_) => OPCODE_OACK,
        }
    }

    /// Bytes [`Packet::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        // Lengths of slices in memory: the sums never saturate in practice.
        let body = match self {
            Packet::Rrq(req) | Packet::Wrq(req) => req
                .filename
                .len()
                .saturating_add(1)
                .saturating_add(req.mode.as_str().len())
                .saturating_add(1)
                .saturating_add(req.options.bytes.len()),
            Packet::Data { payload, .. } => payload.len().saturating_add(2),
            Packet::Ack { .. } => 2,
            Packet::Error { message, .. } => message.len().saturating_add(3),
            Packet::Oack(options) => options.bytes.len(),
        };
        body.saturating_add(2)
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.u16(self.opcode())?;
        match self {
            Packet::Rrq(req) | Packet::Wrq(req) => {
                check_cstr(req.filename, false)?;
                w.cstr(req.filename)?;
                w.cstr(req.mode.as_str().as_bytes())?;
                w.bytes(req.options.bytes)?;
            }
            Packet::Data { block, payload } => {
                w.u16(*block)?;
                w.bytes(payload)?;
            }
            Packet::Ack { block } => w.u16(*block)?,
            Packet::Error { code, message } => {
                check_cstr(message, true)?;
                w.u16(code.as_u16())?;
                w.cstr(message)?;
            }
            Packet::Oack(options) => w.bytes(options.bytes)?,
        }
        Ok(w.position())
    }
}

fn check_cstr(s: &[u8], may_be_empty: bool) -> Result<(), EncodeError> {
    if s.contains(&0) || (!may_be_empty && s.is_empty()) {
        Err(EncodeError::InvalidString)
    } else {
        Ok(())
    }
}

impl<'a> RequestPacket<'a> {
    fn parse(mut r: Reader<'a>) -> Result<Self, ParseError> {
        let filename = r.cstr().ok_or(ParseError::MissingNul("file name"))?;
        if filename.is_empty() {
            return Err(ParseError::EmptyFilename);
        }
        let mode = r.cstr().ok_or(ParseError::MissingNul("mode"))?;
        let mode = Mode::from_bytes(mode)?;
        let options = RawOptions::parse(r.rest())?;
        Ok(RequestPacket {
            filename,
            mode,
            options,
        })
    }
}

/// Writes a RRQ or WRQ from typed parts (a client's request). `options` are
/// `(name, value)` pairs written in order.
pub fn encode_request(
    buf: &mut [u8],
    write: bool,
    filename: &[u8],
    mode: Mode,
    options: &crate::options::TransferOptions,
) -> Result<usize, EncodeError> {
    check_cstr(filename, false)?;
    let mut w = Writer::new(buf);
    w.u16(if write { OPCODE_WRQ } else { OPCODE_RRQ })?;
    w.cstr(filename)?;
    w.cstr(mode.as_str().as_bytes())?;
    options.write_pairs(&mut w)?;
    Ok(w.position())
}

/// Writes an OACK carrying `options`; an empty set still encodes (callers that
/// follow the "never an empty OACK" rule check [`TransferOptions::is_empty`]
/// first).
///
/// [`TransferOptions::is_empty`]: crate::options::TransferOptions::is_empty
pub fn encode_oack(
    buf: &mut [u8],
    options: &crate::options::TransferOptions,
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(buf);
    w.u16(OPCODE_OACK)?;
    options.write_pairs(&mut w)?;
    Ok(w.position())
}

/// Writes the 4-byte DATA header for `block` into `buf`.
pub fn encode_data_header(buf: &mut [u8], block: u16) -> Result<(), BufferTooSmall> {
    let mut w = Writer::new(buf);
    w.u16(OPCODE_DATA)?;
    w.u16(block)
}

/// Writes an ACK for `block`, returning its length ([`ACK_LEN`]).
pub fn encode_ack(buf: &mut [u8], block: u16) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(buf);
    w.u16(OPCODE_ACK)?;
    w.u16(block)?;
    Ok(w.position())
}

/// Writes an ERROR packet; a message longer than `buf` allows is truncated
/// (it is only informative), and NUL bytes in it end it early.
pub fn encode_error(
    buf: &mut [u8],
    code: ErrorCode,
    message: &[u8],
) -> Result<usize, BufferTooSmall> {
    let message = match message.iter().position(|&b| b == 0) {
        Some(nul) => message.split_at(nul).0,
        None => message,
    };
    let room = buf.len().checked_sub(5).ok_or(BufferTooSmall)?;
    let message = message.get(..room).unwrap_or(message);
    let mut w = Writer::new(buf);
    w.u16(OPCODE_ERROR)?;
    w.u16(code.as_u16())?;
    w.cstr(message)?;
    Ok(w.position())
}

/// The option area of a request or OACK: `name NUL value NUL` pairs, already
/// checked to be well formed, iterated in the order they were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RawOptions<'a> {
    /// The complete pairs, without what the parse ignored (padding, what
    /// follows an empty name, a last name without a value).
    bytes: &'a [u8],
    count: usize,
}

/// One option as sent: name and value, both without NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionPair<'a> {
    /// Option name as sent (compare case-insensitively).
    pub name: &'a [u8],
    /// Option value as sent.
    pub value: &'a [u8],
}

impl<'a> RawOptions<'a> {
    /// Checks an option area, leniently, as tftpd-hpa reads one: an empty
    /// option name ends it (trailing NUL padding, or anything after it),
    /// and a last name with no value after it is ignored. A name or value
    /// without its NUL is an error. An empty value is kept as a pair and the
    /// options after it still count (tftpd-hpa stops reading there); the
    /// negotiation ignores an option with an empty value.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let mut count = 0usize;
        let mut end = 0;
        while r.remaining().first().is_some_and(|&b| b != 0) {
            r.cstr().ok_or(ParseError::MissingNul("option name"))?;
            if r.remaining().is_empty() {
                break;
            }
            r.cstr().ok_or(ParseError::MissingNul("option value"))?;
            count = count.saturating_add(1);
            if count > MAX_OPTIONS {
                return Err(ParseError::TooManyOptions);
            }
            // `remaining` is a suffix of `bytes`.
            end = bytes.len().saturating_sub(r.remaining().len());
        }
        Ok(RawOptions {
            bytes: bytes.get(..end).unwrap_or_default(),
            count,
        })
    }

    /// The encoded complete pairs, without what the parse ignored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there is no option.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs in order.
    pub fn iter(&self) -> OptionIter<'a> {
        OptionIter {
            reader: Reader::new(self.bytes),
        }
    }
}

impl<'a> IntoIterator for RawOptions<'a> {
    type Item = OptionPair<'a>;
    type IntoIter = OptionIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`RawOptions`].
#[derive(Clone, Debug)]
pub struct OptionIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = OptionPair<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        // The area was checked by `RawOptions::parse`: pairs are complete.
        let name = self.reader.cstr()?;
        let value = self.reader.cstr()?;
        Some(OptionPair { name, value })
    }
}

/// Encodes `name NUL value NUL` pairs into `buf` and parses them back as
/// [`RawOptions`] borrowing `buf` (for building OACKs or tests by hand).
pub fn build_options<'b>(
    buf: &'b mut [u8],
    pairs: &[(&[u8], &[u8])],
) -> Result<RawOptions<'b>, EncodeError> {
    let mut w = Writer::new(buf);
    for (name, value) in pairs {
        check_cstr(name, false)?;
        check_cstr(value, true)?;
        w.cstr(name)?;
        w.cstr(value)?;
    }
    let len = w.position();
    if pairs.len() > MAX_OPTIONS {
        return Err(EncodeError::InvalidString);
    }
    let bytes: &'b [u8] = buf;
    RawOptions::parse(bytes.get(..len).unwrap_or_default()).map_err(|_| EncodeError::InvalidString)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1350_rrq() {
        let p = Packet::parse(b"\x00\x01boot/pxelinux.0\x00octet\x00").unwrap();
        let Packet::Rrq(req) = p else { panic!("{p:?}") };
        assert_eq!(req.filename, b"boot/pxelinux.0");
        assert_eq!(req.mode, Mode::Octet);
        assert!(req.options.is_empty());
    }

    #[test]
    fn rfc2347_request_with_options_in_order() {
        let p =
            Packet::parse(b"\x00\x02foo\x00NetASCII\x00blksize\x001432\x00TSIZE\x000\x00").unwrap();
        let Packet::Wrq(req) = p else { panic!("{p:?}") };
        assert_eq!(req.mode, Mode::Netascii);
        let opts: alloc::vec::Vec<_> = req.options.iter().collect();
        assert_eq!(opts.len(), 2);
        assert_eq!(opts[0].name, b"blksize");
        assert_eq!(opts[0].value, b"1432");
        assert_eq!(opts[1].name, b"TSIZE");
        assert_eq!(opts[1].value, b"0");
    }

    #[test]
    fn filename_is_bytes() {
        let p = Packet::parse(b"\x00\x01\xff\xfe\x80\x00octet\x00").unwrap();
        let Packet::Rrq(req) = p else { panic!() };
        assert_eq!(req.filename, b"\xff\xfe\x80");
    }

    #[test]
    fn request_errors() {
        assert_eq!(Packet::parse(b""), Err(ParseError::TooShort));
        assert_eq!(Packet::parse(b"\x00"), Err(ParseError::TooShort));
        assert_eq!(
            Packet::parse(b"\x00\x07"),
            Err(ParseError::UnknownOpcode(7))
        );
        assert_eq!(
            Packet::parse(b"\x00\x00"),
            Err(ParseError::UnknownOpcode(0))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01foo"),
            Err(ParseError::MissingNul("file name"))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01\x00octet\x00"),
            Err(ParseError::EmptyFilename)
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00octet"),
            Err(ParseError::MissingNul("mode"))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00binary\x00"),
            Err(ParseError::UnknownMode)
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00MAIL\x00"),
            Err(ParseError::MailMode)
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00octet\x00blksize"),
            Err(ParseError::MissingNul("option name"))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00octet\x00blksize\x00512"),
            Err(ParseError::MissingNul("option value"))
        );
    }

    /// What tftpd-hpa serves, served: a last option name with no value is
    /// ignored, and an empty string ends the options, whatever follows.
    #[test]
    fn incomplete_option_areas_are_read_as_tftpd_hpa_reads_them() {
        for (request, options) in [
            (&b"\x00\x01f\x00octet\x00blksize\x00"[..], &b""[..]),
            (
                b"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x00",
                b"tsize\x000\x00",
            ),
            (b"\x00\x01f\x00octet\x00\x00512\x00", b""),
            (
                b"\x00\x01f\x00octet\x00tsize\x000\x00\x00blksize\x001468\x00",
                b"tsize\x000\x00",
            ),
            (b"\x00\x01f\x00octet\x00\x00garbage", b""),
        ] {
            let Ok(Packet::Rrq(req)) = Packet::parse(request) else {
                panic!("{request:?} refused");
            };
            assert_eq!(req.options.as_bytes(), options, "{request:?}");
            assert_eq!(req.options.iter().count(), req.options.len());
        }
    }

    #[test]
    fn too_many_options() {
        let mut buf = alloc::vec::Vec::from(&b"\x00\x01f\x00octet\x00"[..]);
        for _ in 0..MAX_OPTIONS {
            buf.extend_from_slice(b"x\x001\x00");
        }
        assert!(Packet::parse(&buf).is_ok());
        buf.extend_from_slice(b"x\x001\x00");
        assert_eq!(Packet::parse(&buf), Err(ParseError::TooManyOptions));
    }

    #[test]
    fn padding_after_options_is_ignored() {
        let p = Packet::parse(b"\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00").unwrap();
        let Packet::Rrq(req) = p else { panic!() };
        assert_eq!(req.options.len(), 1);
        assert_eq!(req.options.as_bytes(), b"tsize\x000\x00");
    }

    #[test]
    fn data_ack_error_oack() {
        assert_eq!(
            Packet::parse(b"\x00\x03\x00\x01hello"),
            Ok(Packet::Data {
                block: 1,
                payload: b"hello"
            })
        );
        assert_eq!(
            Packet::parse(b"\x00\x03\xff\xff"),
            Ok(Packet::Data {
                block: 65535,
                payload: b""
            })
        );
        assert_eq!(Packet::parse(b"\x00\x03\x00"), Err(ParseError::TooShort));
        assert_eq!(
            Packet::parse(b"\x00\x04\x00\x02"),
            Ok(Packet::Ack { block: 2 })
        );
        assert_eq!(
            Packet::parse(b"\x00\x04\x00\x02pad"),
            Ok(Packet::Ack { block: 2 })
        );
        assert_eq!(Packet::parse(b"\x00\x04\x00"), Err(ParseError::TooShort));
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x01File not found\x00"),
            Ok(Packet::Error {
                code: ErrorCode::FileNotFound,
                message: b"File not found"
            })
        );
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x63no nul"),
            Ok(Packet::Error {
                code: ErrorCode::Other(99),
                message: b"no nul"
            })
        );
        assert_eq!(Packet::parse(b"\x00\x05\x00"), Err(ParseError::TooShort));
        let p = Packet::parse(b"\x00\x06blksize\x001024\x00").unwrap();
        let Packet::Oack(o) = p else { panic!() };
        assert_eq!(o.len(), 1);
        assert_eq!(
            Packet::parse(b"\x00\x06"),
            Ok(Packet::Oack(RawOptions::default()))
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for code in 0..=20u16 {
            assert_eq!(ErrorCode::from_u16(code).as_u16(), code);
        }
        assert_eq!(ErrorCode::from(8), ErrorCode::OptionNegotiation);
    }

    #[test]
    fn encoders() {
        let mut buf = [0u8; 64];
        let n = encode_ack(&mut buf, 7).unwrap();
        assert_eq!(&buf[..n], b"\x00\x04\x00\x07");
        encode_data_header(&mut buf, 0x0102).unwrap();
        assert_eq!(&buf[..4], b"\x00\x03\x01\x02");
        let n = encode_error(&mut buf, ErrorCode::UnknownTid, b"Unknown transfer ID").unwrap();
        assert_eq!(&buf[..n], b"\x00\x05\x00\x05Unknown transfer ID\x00");
        let mut small = [0u8; 8];
        let n = encode_error(&mut small, ErrorCode::NotDefined, b"long message").unwrap();
        assert_eq!(&small[..n], b"\x00\x05\x00\x00lon\x00");
        let n = encode_error(&mut buf, ErrorCode::NotDefined, b"a\0b").unwrap();
        assert_eq!(&buf[..n], b"\x00\x05\x00\x00a\x00");
        assert_eq!(encode_ack(&mut [0u8; 3], 1), Err(BufferTooSmall));
        assert_eq!(
            encode_error(&mut [0u8; 4], ErrorCode::NotDefined, b""),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn encode_rejects_what_would_not_parse_back() {
        let mut buf = [0u8; 64];
        let req = RequestPacket {
            filename: b"a\0b",
            mode: Mode::Octet,
            options: RawOptions::default(),
        };
        assert_eq!(
            Packet::Rrq(req).encode(&mut buf),
            Err(EncodeError::InvalidString)
        );
        let req = RequestPacket {
            filename: b"",
            mode: Mode::Octet,
            options: RawOptions::default(),
        };
        assert_eq!(
            Packet::Rrq(req).encode(&mut buf),
            Err(EncodeError::InvalidString)
        );
        let req = RequestPacket {
            filename: b"abc",
            mode: Mode::Octet,
            options: RawOptions::default(),
        };
        assert_eq!(
            Packet::Rrq(req).encode(&mut [0u8; 5]),
            Err(EncodeError::BufferTooSmall(BufferTooSmall))
        );
    }

    #[test]
    fn build_options_round_trip() {
        let mut buf = [0u8; 64];
        let o = build_options(&mut buf, &[(b"blksize", b"512"), (b"x", b"")]).unwrap();
        let v: alloc::vec::Vec<_> = o.iter().collect();
        assert_eq!(
            v,
            [
                OptionPair {
                    name: b"blksize",
                    value: b"512"
                },
                OptionPair {
                    name: b"x",
                    value: b""
                }
            ]
        );
    }
}
