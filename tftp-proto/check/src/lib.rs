//! # tftp-proto-check: invariant checks and the network simulator
//!
//! Dev-only (never published): the invariants the `fuzz/` targets, the
//! corpus replay test and tftp-proto's property tests share, and the seeded
//! network simulator of the simulation tests. Each `check_*` function panics
//! when an invariant is broken; each `run_*` function feeds raw fuzzer bytes
//! through `arbitrary` and returns whether they decoded into an input.
//!
//! It uses only tftp-proto's public API (with its `arbitrary` feature, which
//! adds `Arbitrary` derives and nothing else), so none of this is part of the
//! library.

pub mod session;
pub mod sim;

/// FNV-1a (64-bit): a digest of everything a run sent, so a refactor can
/// prove the wire stayed byte-identical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Folds `bytes` in, then their length (so concatenations differ).
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes
            .iter()
            .copied()
            .chain((bytes.len() as u64).to_le_bytes())
        {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Folds a number in.
    pub fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    /// Folds a value's `Debug` text in.
    pub fn write_debug(&mut self, value: &impl core::fmt::Debug) {
        self.write(std::format!("{value:?}").as_bytes());
    }
}

use std::vec;
use std::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};

use tftp_proto::netascii::{Decoder, Encoder};
use tftp_proto::options::{
    negotiate, validate_oack, Direction, EnabledOptions, Limits, OptionName, Requested,
    RequestedOptions, TransferOptions, MAX_BLKSIZE, MAX_TIMEOUT, MIN_BLKSIZE, MIN_TIMEOUT,
};
use tftp_proto::packet::{
    build_options, encode_oack, EncodeError, ErrorCode, Mode, Packet, RawOptions, RequestPacket,
    MAX_OPTIONS,
};

/// Input of the `packet_parse` target.
#[derive(Arbitrary, Debug)]
pub enum PacketInput<'a> {
    /// A datagram as it might arrive.
    Raw(&'a [u8]),
    /// A packet built from parts, to encode and parse back.
    Built(BuiltPacket<'a>),
}

/// A packet described by its parts.
#[derive(Arbitrary, Debug)]
#[allow(missing_docs)]
pub enum BuiltPacket<'a> {
    Request {
        write: bool,
        filename: &'a [u8],
        mode: Mode,
        options: Vec<(&'a [u8], &'a [u8])>,
    },
    Data {
        block: u16,
        payload: &'a [u8],
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: &'a [u8],
    },
    Oack(Vec<(&'a [u8], &'a [u8])>),
}

/// Parse never panics; a parsed packet re-encodes to exactly
/// [`Packet::encoded_len`] bytes that parse back to an equal packet; a built
/// packet with valid strings encodes and parses back equal, one with invalid
/// strings is refused by the encoder.
pub fn check_packet(input: &PacketInput<'_>) {
    match input {
        PacketInput::Raw(bytes) => {
            if let Ok(packet) = Packet::parse(bytes) {
                // Only an ERROR whose message lacked its NUL grows (by that NUL).
                assert!(
                    packet.encoded_len() <= bytes.len() + 1,
                    "canonical form is never longer"
                );
                round_trip(&packet);
            }
        }
        PacketInput::Built(built) => check_built(built),
    }
}

fn round_trip(packet: &Packet<'_>) {
    let mut buf = vec![0u8; packet.encoded_len()];
    let len = packet.encode(&mut buf).expect("a parsed packet encodes");
    assert_eq!(len, packet.encoded_len());
    let again = Packet::parse(&buf).expect("an encoded packet parses");
    assert_eq!(&again, packet);
    if len > 0 {
        let mut short = vec![0u8; len - 1];
        assert!(
            packet.encode(&mut short).is_err(),
            "a short buffer is refused"
        );
    }
}

fn check_built(built: &BuiltPacket<'_>) {
    let mut opt_buf = vec![0u8; 70_000];
    let options_of = |pairs: &[(&[u8], &[u8])], buf: &mut Vec<u8>| -> Option<usize> {
        let valid = pairs.len() <= MAX_OPTIONS
            && pairs
                .iter()
                .all(|(n, v)| !n.is_empty() && !n.contains(&0) && !v.contains(&0));
        let built = build_options(buf, pairs);
        match (valid, built) {
            (true, Ok(raw)) => Some(raw.as_bytes().len()),
            (false, Err(EncodeError::InvalidString)) => None,
            (valid, result) => panic!("build_options({pairs:?}) valid={valid} gave {result:?}"),
        }
    };
    match built {
        BuiltPacket::Request {
            write,
            filename,
            mode,
            options,
        } => {
            let Some(len) = options_of(options, &mut opt_buf) else {
                return;
            };
            let raw = RawOptions::parse(&opt_buf[..len]).expect("built options parse");
            assert_eq!(raw.len(), options.len());
            let req = RequestPacket {
                filename,
                mode: *mode,
                options: raw,
            };
            let packet = if *write {
                Packet::Wrq(req)
            } else {
                Packet::Rrq(req)
            };
            if filename.is_empty() || filename.contains(&0) {
                let mut buf = vec![0u8; packet.encoded_len()];
                assert_eq!(packet.encode(&mut buf), Err(EncodeError::InvalidString));
            } else {
                round_trip(&packet);
            }
        }
        BuiltPacket::Data { block, payload } => round_trip(&Packet::Data {
            block: *block,
            payload,
        }),
        BuiltPacket::Ack { block } => round_trip(&Packet::Ack { block: *block }),
        BuiltPacket::Error { code, message } => {
            let packet = Packet::Error {
                code: ErrorCode::from_u16(*code),
                message,
            };
            if message.contains(&0) {
                let mut buf = vec![0u8; packet.encoded_len()];
                assert_eq!(packet.encode(&mut buf), Err(EncodeError::InvalidString));
            } else {
                round_trip(&packet);
            }
        }
        BuiltPacket::Oack(options) => {
            let Some(len) = options_of(options, &mut opt_buf) else {
                return;
            };
            let raw = RawOptions::parse(&opt_buf[..len]).expect("built options parse");
            round_trip(&Packet::Oack(raw));
        }
    }
}

/// Input of the `options_negotiate` target.
#[derive(Arbitrary, Debug)]
pub struct NegotiateInput<'a> {
    /// The request's options.
    pub options: Vec<(OptName<'a>, OptValue<'a>)>,
    /// The server's policy.
    pub limits: ArbLimits,
    /// RRQ or WRQ.
    pub direction: Direction,
    /// The file size the server knows, if any.
    pub file_size: Option<u64>,
}

/// An option name: a known one in some letter case, or anything else.
#[derive(Arbitrary, Debug)]
pub enum OptName<'a> {
    /// One of the four, with a mask choosing upper-case letters.
    Known(KnownName, u16),
    /// Any bytes.
    Other(&'a [u8]),
}

/// The four option names (for `arbitrary`).
#[derive(Arbitrary, Debug, Clone, Copy)]
#[allow(missing_docs)]
pub enum KnownName {
    Blksize,
    Timeout,
    Tsize,
    Windowsize,
}

/// An option value: a number, or anything.
#[derive(Arbitrary, Debug)]
pub enum OptValue<'a> {
    /// A decimal number.
    Number(u64),
    /// Any bytes.
    Other(&'a [u8]),
}

/// The negotiation-relevant part of [`Limits`].
#[derive(Arbitrary, Debug)]
#[allow(missing_docs)]
pub struct ArbLimits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    pub max_window_bytes: u32,
    pub min_timeout: u8,
    pub max_timeout: u8,
    pub enabled: u8,
}

impl ArbLimits {
    /// The [`Limits`] it describes.
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            max_window_bytes: self.max_window_bytes as usize,
            min_timeout: self.min_timeout,
            max_timeout: self.max_timeout,
            enabled: EnabledOptions {
                blksize: self.enabled & 1 != 0,
                timeout: self.enabled & 2 != 0,
                tsize: self.enabled & 4 != 0,
                windowsize: self.enabled & 8 != 0,
            },
            ..Limits::default()
        }
    }
}

/// Server negotiation only acknowledges requested, enabled, known options with
/// values inside the RFC ranges and the limits; a well-formed client accepts
/// exactly what the server negotiated and rejects a raised value.
pub fn check_negotiation(input: &NegotiateInput<'_>) {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut values: Vec<Vec<u8>> = Vec::new();
    for (name, value) in input.options.iter().take(MAX_OPTIONS) {
        names.push(match name {
            OptName::Known(k, mask) => {
                let canon = known(*k).as_str().as_bytes();
                canon
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        if mask >> (i % 16) & 1 == 1 {
                            b.to_ascii_uppercase()
                        } else {
                            *b
                        }
                    })
                    .collect()
            }
            OptName::Other(bytes) => bytes.iter().copied().filter(|&b| b != 0).collect(),
        });
        values.push(match value {
            OptValue::Number(n) => std::format!("{n}").into_bytes(),
            OptValue::Other(bytes) => bytes.iter().copied().filter(|&b| b != 0).collect(),
        });
    }
    let pairs: Vec<(&[u8], &[u8])> = names
        .iter()
        .zip(&values)
        .filter(|(n, _)| !n.is_empty())
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let mut buf = vec![
        0u8;
        pairs
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum::<usize>()
    ];
    let raw = build_options(&mut buf, &pairs).expect("valid pairs");
    let requested = RequestedOptions::from_raw(raw);
    let limits = input.limits.to_limits();
    let n = negotiate(&requested, &limits, input.direction, input.file_size);
    let oack = n.oack;

    let asked = |name| match requested.get(name) {
        Requested::Value(v) => Some(v),
        _ => None,
    };
    if let Some(b) = oack.blksize {
        let a = asked(OptionName::Blksize).expect("blksize acknowledged but not requested");
        assert!(limits.enabled.blksize);
        assert!((MIN_BLKSIZE..=MAX_BLKSIZE).contains(&b));
        assert!(b <= limits.effective_max_blksize());
        assert!(u64::from(b) <= a);
    }
    if let Some(t) = oack.timeout {
        let a = asked(OptionName::Timeout).expect("timeout acknowledged but not requested");
        assert!(limits.enabled.timeout);
        assert_eq!(u64::from(t), a);
        assert!((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&t));
        assert!((limits.min_timeout..=limits.max_timeout).contains(&t));
    }
    if let Some(s) = oack.tsize {
        let a = asked(OptionName::Tsize).expect("tsize acknowledged but not requested");
        assert!(limits.enabled.tsize);
        match input.direction {
            Direction::Read => assert_eq!(Some(s), input.file_size),
            Direction::Write => assert_eq!(s, a),
        }
    }
    if let Some(w) = oack.windowsize {
        let a = asked(OptionName::Windowsize).expect("windowsize acknowledged but not requested");
        assert!(limits.enabled.windowsize);
        assert!(w >= 1 && u64::from(w) <= a);
        assert!(w <= limits.max_windowsize.max(1));
        assert!(
            w == 1 || usize::from(w) * usize::from(oack.block_size()) <= limits.max_window_bytes
        );
    }

    // The client side, for a client whose request fits the typed options.
    let typed = |name, max: u64| asked(name).filter(|&v| v <= max);
    let client_asked = TransferOptions {
        blksize: typed(OptionName::Blksize, u64::from(u16::MAX)).map(|v| v as u16),
        timeout: typed(OptionName::Timeout, u64::from(u8::MAX)).map(|v| v as u8),
        tsize: asked(OptionName::Tsize),
        windowsize: typed(OptionName::Windowsize, u64::from(u16::MAX)).map(|v| v as u16),
    };
    let fits = [
        OptionName::Blksize,
        OptionName::Timeout,
        OptionName::Tsize,
        OptionName::Windowsize,
    ]
    .into_iter()
    .all(|name| requested.get(name) != Requested::NotNumeric)
        && client_asked.blksize.is_some() == asked(OptionName::Blksize).is_some()
        && client_asked.timeout.is_some() == asked(OptionName::Timeout).is_some()
        && client_asked.windowsize.is_some() == asked(OptionName::Windowsize).is_some();
    if fits {
        let mut obuf = vec![0u8; 2 + oack.encoded_len()];
        let len = encode_oack(&mut obuf, &oack).expect("sized buffer");
        let Ok(Packet::Oack(raw)) = Packet::parse(&obuf[..len]) else {
            panic!("OACK parses")
        };
        assert_eq!(validate_oack(&client_asked, raw, input.direction), Ok(oack));
        // A raised blksize or windowsize must be refused.
        if let (Some(_), Some(max)) = (oack.blksize, client_asked.blksize) {
            if max < u16::MAX {
                let raised = TransferOptions {
                    blksize: Some(max + 1),
                    ..oack
                };
                let mut rbuf = vec![0u8; 2 + raised.encoded_len()];
                let len = encode_oack(&mut rbuf, &raised).expect("sized buffer");
                let Ok(Packet::Oack(raw)) = Packet::parse(&rbuf[..len]) else {
                    panic!()
                };
                assert!(validate_oack(&client_asked, raw, input.direction).is_err());
            }
        }
    }
}

fn known(k: KnownName) -> OptionName {
    match k {
        KnownName::Blksize => OptionName::Blksize,
        KnownName::Timeout => OptionName::Timeout,
        KnownName::Tsize => OptionName::Tsize,
        KnownName::Windowsize => OptionName::Windowsize,
    }
}

/// Input of the `netascii_roundtrip` target.
#[derive(Arbitrary, Debug)]
pub struct NetasciiInput<'a> {
    /// The local bytes.
    pub data: &'a [u8],
    /// Sizes of the input pieces fed to the encoder and decoder.
    pub input_splits: Vec<u8>,
    /// Sizes of the output buffers offered.
    pub output_splits: Vec<u8>,
}

/// `decode(encode(x)) == x` under any splitting; the encoded length is
/// `len + #LF + #CR`; decoding arbitrary bytes never panics or loses progress.
pub fn check_netascii(input: &NetasciiInput<'_>) {
    let mut sizes = Splitter::new(&input.input_splits);
    let mut outs = Splitter::new(&input.output_splits);

    let mut encoded = Vec::new();
    let mut enc = Encoder::new();
    let mut rest = input.data;
    let mut out = [0u8; 256];
    loop {
        let take = sizes.next().max(1).min(rest.len());
        let room = outs.next().max(1);
        let (c, w) = enc.encode(&rest[..take], &mut out[..room]);
        assert!(c <= take && w <= room);
        assert!(
            c > 0 || w > 0 || take == 0 && !enc.has_pending(),
            "encoder stalled"
        );
        encoded.extend_from_slice(&out[..w]);
        rest = &rest[c..];
        if rest.is_empty() && !enc.has_pending() {
            break;
        }
    }
    let specials = input
        .data
        .iter()
        .filter(|&&b| b == b'\n' || b == b'\r')
        .count();
    assert_eq!(encoded.len(), input.data.len() + specials);

    let decoded = decode_all(&encoded, &mut sizes, &mut outs);
    assert_eq!(decoded, input.data);
    // Arbitrary (possibly malformed) netascii: no panic, bounded output.
    let decoded = decode_all(input.data, &mut sizes, &mut outs);
    assert!(decoded.len() <= input.data.len());
}

fn decode_all(data: &[u8], sizes: &mut Splitter<'_>, outs: &mut Splitter<'_>) -> Vec<u8> {
    let mut dec = Decoder::new();
    let mut decoded = Vec::new();
    let mut rest = data;
    let mut out = [0u8; 256];
    while !rest.is_empty() {
        let take = sizes.next().clamp(1, rest.len());
        let room = outs.next().max(1);
        let (c, w) = dec.decode(&rest[..take], &mut out[..room]);
        assert!(c > 0 || w > 0, "decoder stalled");
        decoded.extend_from_slice(&out[..w]);
        rest = &rest[c..];
    }
    let w = dec.finish(&mut out);
    decoded.extend_from_slice(&out[..w]);
    decoded
}

struct Splitter<'a> {
    sizes: &'a [u8],
    at: usize,
}

impl<'a> Splitter<'a> {
    fn new(sizes: &'a [u8]) -> Self {
        Self { sizes, at: 0 }
    }

    fn next(&mut self) -> usize {
        if self.sizes.is_empty() {
            return 64;
        }
        let v = self.sizes[self.at % self.sizes.len()];
        self.at += 1;
        usize::from(v)
    }
}

/// Runs [`check_packet`] on fuzzer bytes.
pub fn run_packet_parse(data: &[u8]) -> bool {
    // The raw bytes themselves are a datagram too.
    check_packet(&PacketInput::Raw(data));
    match PacketInput::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => {
            check_packet(&input);
            true
        }
        Err(_) => false,
    }
}

/// Runs [`check_negotiation`] on fuzzer bytes.
pub fn run_options_negotiate(data: &[u8]) -> bool {
    match NegotiateInput::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => {
            check_negotiation(&input);
            true
        }
        Err(_) => false,
    }
}

/// Runs [`check_netascii`] on fuzzer bytes.
pub fn run_netascii_roundtrip(data: &[u8]) -> bool {
    match NetasciiInput::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => {
            check_netascii(&input);
            true
        }
        Err(_) => false,
    }
}
