//! Streaming netascii (RFC 764 as used by RFC 1350) encoder and decoder.
//!
//! On the wire a line ends with CR LF and a bare CR is sent as CR NUL. The local
//! side uses LF line ends: the [`Encoder`] turns LF into CR LF and CR into
//! CR NUL; the [`Decoder`] does the reverse. Both keep state across calls, so a
//! CR that ends one DATA block and the LF or NUL that starts the next are
//! handled correctly, and both work with any output buffer size (each step
//! needs at most one free output byte).
//!
//! **Malformed input policy** (decoder): a CR followed by anything other than
//! LF or NUL is kept as a bare CR followed by that byte, and a CR at the very
//! end of the stream is kept ([`Decoder::finish`]). Nothing is dropped: a
//! sloppy sender loses no data, and decoding what the [`Encoder`] produced
//! always gives back the original bytes.

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

/// Local bytes → netascii.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoder {
    /// Second byte of an expansion that did not fit in the last output buffer.
    pending: Option<u8>,
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes as much of `input` as fits into `out`; returns `(consumed,
    /// written)`. Call again with the unconsumed rest (or an empty input to
    /// flush a pending byte) until everything is consumed and
    /// [`Encoder::has_pending`] is false.
    pub fn encode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        // The counts never exceed the slice lengths (`saturating_add` is a
        // plain increment here).
        let mut consumed = 0usize;
        let mut written = 0usize;
        for slot in out.iter_mut() {
            if let Some(byte) = self.pending.take() {
                *slot = byte;
            } else if let Some(&byte) = input.get(consumed) {
                consumed = consumed.saturating_add(1);
                *slot = match byte {
                    LF => {
                        self.pending = Some(LF);
                        CR
                    }
                    CR => {
                        self.pending = Some(NUL);
                        CR
                    }
                    other => other,
                };
            } else {
                break;
            }
            written = written.saturating_add(1);
        }
        (consumed, written)
    }

    /// True when a byte of the last expansion is still to be written.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Netascii → local bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decoder {
    /// The last input byte was a CR whose meaning depends on the next byte.
    after_cr: bool,
}

impl Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes as much of `input` as fits into `out`; returns `(consumed,
    /// written)`. An output of `input.len() + 1` bytes always takes all input.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        // The counts never exceed the slice lengths (`saturating_add` is a
        // plain increment here).
        let mut consumed = 0usize;
        let mut written = 0usize;
        while let Some(&byte) = input.get(consumed) {
            let Some(slot) = out.get_mut(written) else {
                if !self.after_cr && byte == CR {
                    // Needs no output: take it now.
                    self.after_cr = true;
                    consumed = consumed.saturating_add(1);
                    continue;
                }
                break;
            };
            if self.after_cr {
                self.after_cr = false;
                match byte {
                    LF => {
                        *slot = LF;
                        consumed = consumed.saturating_add(1);
                    }
                    NUL => {
                        *slot = CR;
                        consumed = consumed.saturating_add(1);
                    }
                    // Malformed: keep the CR, then look at `byte` afresh.
                    _ => *slot = CR,
                }
                written = written.saturating_add(1);
            } else if byte == CR {
                self.after_cr = true;
                consumed = consumed.saturating_add(1);
            } else {
                *slot = byte;
                consumed = consumed.saturating_add(1);
                written = written.saturating_add(1);
            }
        }
        (consumed, written)
    }

    /// Ends the stream: a CR left over at the end is written to `out` (which
    /// must then have one free byte). Returns the number of bytes written.
    pub fn finish(&mut self, out: &mut [u8]) -> usize {
        if self.after_cr {
            if let Some(slot) = out.first_mut() {
                *slot = CR;
                self.after_cr = false;
                return 1;
            }
        }
        0
    }

    /// True when a CR is held back waiting for the next byte.
    pub fn has_pending(&self) -> bool {
        self.after_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn encode_all(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        let mut buf = alloc::vec![0u8; chunk];
        let mut rest = input;
        loop {
            let (c, w) = enc.encode(rest, &mut buf);
            out.extend_from_slice(&buf[..w]);
            rest = &rest[c..];
            if rest.is_empty() && !enc.has_pending() {
                return out;
            }
            assert!(c > 0 || w > 0, "no progress");
        }
    }

    fn decode_all(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let mut buf = alloc::vec![0u8; chunk];
        let mut rest = input;
        while !rest.is_empty() {
            let (c, w) = dec.decode(rest, &mut buf);
            out.extend_from_slice(&buf[..w]);
            rest = &rest[c..];
            assert!(c > 0 || w > 0, "no progress");
        }
        let w = dec.finish(&mut buf);
        out.extend_from_slice(&buf[..w]);
        out
    }

    #[test]
    fn encode_examples() {
        assert_eq!(encode_all(b"a\nb\rc", 64), b"a\r\nb\r\0c");
        assert_eq!(encode_all(b"\n\n", 1), b"\r\n\r\n");
        assert_eq!(encode_all(b"", 1), b"");
    }

    #[test]
    fn decode_examples() {
        assert_eq!(decode_all(b"a\r\nb\r\0c", 64), b"a\nb\rc");
        assert_eq!(decode_all(b"a\r\nb\r\0c", 1), b"a\nb\rc");
    }

    #[test]
    fn cr_split_across_blocks() {
        let mut dec = Decoder::new();
        let mut out = [0u8; 8];
        assert_eq!(dec.decode(b"ab\r", &mut out), (3, 2));
        assert!(dec.has_pending());
        assert_eq!(dec.decode(b"\nc", &mut out), (2, 2));
        assert_eq!(&out[..2], b"\nc");
        let mut enc = Encoder::new();
        assert_eq!(enc.encode(b"a\n", &mut out[..2]), (2, 2));
        assert!(enc.has_pending());
        assert_eq!(enc.encode(b"", &mut out), (0, 1));
        assert_eq!(out[0], LF);
    }

    #[test]
    fn malformed_cr_is_kept() {
        assert_eq!(decode_all(b"a\rb", 64), b"a\rb");
        assert_eq!(decode_all(b"a\r\rb", 64), b"a\r\rb");
        assert_eq!(decode_all(b"a\r\r\n", 2), b"a\r\n");
        assert_eq!(decode_all(b"end\r", 64), b"end\r");
    }

    #[test]
    fn decoder_output_bound() {
        // input.len() + 1 bytes of output always takes all the input.
        let mut dec = Decoder::new();
        let mut out = [0u8; 4];
        assert_eq!(dec.decode(b"\r\r\r", &mut out), (3, 2));
        assert_eq!(dec.finish(&mut out), 1);
    }
}
