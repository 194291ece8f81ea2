//! The rules of the HTTP side (`tftp_tokio::http`), I/O-free and
//! runtime-neutral: what request a URL path is, which status a handler's
//! refusal is, and the RFC 9110 validators and ranges. The adapter only
//! moves bytes and headers.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tftp_proto::options::Limits;
use tftp_proto::packet::ErrorCode;
use tftp_proto::server::{accept, Request, TftpError};

/// The HTTP status of a handler's refusal: not found 404, access violation
/// 403, illegal operation 400, busy 503, anything else 500.
pub fn status_of(e: &TftpError) -> u16 {
    if e.is_busy() {
        return 503;
    }
    match e.code {
        ErrorCode::FileNotFound => 404,
        ErrorCode::AccessViolation => 403,
        ErrorCode::IllegalOperation => 400,
        _ => 500,
    }
}

/// The read request the handler gets for `name`: the one a TFTP client
/// asking for it in octet mode from `peer` would make, parsed by the core.
/// Refused with a status: 400 for a name with NUL, 414 for one too long
/// for a TFTP request, 404 for one the core refuses (empty).
pub fn read_request(
    name: &[u8],
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Request, u16> {
    if name.contains(&0) {
        return Err(400);
    }
    let mut datagram = Vec::with_capacity(name.len() + 9);
    datagram.extend_from_slice(&[0, 1]);
    datagram.extend_from_slice(name);
    datagram.extend_from_slice(b"\0octet\0");
    let limits = Limits::default();
    if datagram.len() > limits.max_request_size {
        return Err(414);
    }
    match accept(&datagram, peer, &limits) {
        Ok(mut request) => {
            request.local = local;
            Ok(request)
        }
        Err(_) => Err(404),
    }
}

/// `%XX` decoded; `None` for a `%` not followed by two hex digits.
pub fn percent_decode(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = (*bytes.next()? as char).to_digit(16)?;
            let lo = (*bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// A strong validator from the size and the modification time (the same
/// on every node serving the same version).
pub fn entity_tag(size: u64, modified: SystemTime) -> String {
    let t = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("\"{:x}.{:x}-{size:x}\"", t.as_secs(), t.subsec_nanos())
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Whether the answer is 304: `If-None-Match` (weak comparison; `*`
/// matches, the resource exists), else `If-Modified-Since`.
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: Option<&str>,
    modified: Option<SystemTime>,
) -> bool {
    if let Some(v) = if_none_match {
        return v.split(',').map(str::trim).any(|tag| {
            tag == "*" || etag.is_some_and(|etag| tag.strip_prefix("W/").unwrap_or(tag) == etag)
        });
    }
    match (if_modified_since, modified) {
        (Some(v), Some(modified)) => {
            httpdate::parse_http_date(v).is_ok_and(|since| seconds(modified) <= seconds(since))
        }
        _ => false,
    }
}

/// Whether a `Range` may be honoured: no `If-Range`, or one naming this
/// version (strong comparison, or the exact modification date).
///
/// A date is a validator only when the file is at least a second older
/// than `now` (RFC 9110 13.1.5): one changed within the same second could
/// otherwise be spliced.
pub fn if_range_holds(
    if_range: Option<&str>,
    etag: Option<&str>,
    modified: Option<SystemTime>,
    now: SystemTime,
) -> bool {
    let Some(v) = if_range else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return etag == Some(v);
    }
    match (httpdate::parse_http_date(v), modified) {
        (Ok(date), Some(modified)) => {
            seconds(date) == seconds(modified) && seconds(modified) < seconds(now)
        }
        _ => false,
    }
}

/// A range that starts past the end (416).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// One `bytes=` range of a body of `size` bytes as its first and last byte;
/// `None` (serve it all) when the header is malformed or asks for several.
pub fn parse_range(value: &[u8], size: u64) -> Option<Result<(u64, u64), Unsatisfiable>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (unit, spec) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if first.trim().is_empty() {
        let n = number(last)?;
        if n == 0 {
            return Some(Err(Unsatisfiable));
        }
        if size == 0 {
            // Satisfiable by nothing: the (empty) whole is the answer.
            return None;
        }
        return Some(Ok((size - n.min(size), size - 1)));
    }
    let first = number(first)?;
    let last = match last.trim() {
        "" => u64::MAX,
        l => number(l)?,
    };
    if last < first {
        return None;
    }
    if first >= size {
        return Some(Err(Unsatisfiable));
    }
    Some(Ok((first, last.min(size - 1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ranges() {
        let r = |s: &str, size| parse_range(s.as_bytes(), size);
        assert_eq!(r("bytes=0-99", 1000), Some(Ok((0, 99))));
        assert_eq!(r("bytes=900-", 1000), Some(Ok((900, 999))));
        assert_eq!(r("bytes=900-5000", 1000), Some(Ok((900, 999))));
        assert_eq!(r("bytes=-100", 1000), Some(Ok((900, 999))));
        assert_eq!(r("bytes=-5000", 1000), Some(Ok((0, 999))));
        assert_eq!(r("bytes=999-999", 1000), Some(Ok((999, 999))));
        assert_eq!(r("bytes=1000-", 1000), Some(Err(Unsatisfiable)));
        assert_eq!(r("bytes=-0", 1000), Some(Err(Unsatisfiable)));
        assert_eq!(r("bytes=0-", 0), Some(Err(Unsatisfiable)));
        assert_eq!(r("bytes=-5", 0), None);
        assert_eq!(r("Bytes=0-1", 1000), Some(Ok((0, 1))));
        // Ignored: the whole body is served.
        assert_eq!(r("bytes=5-4", 1000), None);
        assert_eq!(r("bytes=0-1,5-6", 1000), None);
        assert_eq!(r("items=0-1", 1000), None);
        assert_eq!(r("bytes=a-b", 1000), None);
        assert_eq!(r("bytes=+1-2", 1000), None);
        assert_eq!(r("bytes=99999999999999999999999-", 1000), None);
    }

    #[test]
    fn paths() {
        assert_eq!(percent_decode(b"/a%20b%2F..").unwrap(), b"/a b/..");
        assert_eq!(percent_decode(b"/%ff").unwrap(), [b'/', 0xff]);
        assert_eq!(percent_decode(b"/%4"), None);
        assert_eq!(percent_decode(b"/%zz"), None);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(read_request(b"a\0b", peer, None), Err(400));
        assert_eq!(read_request(&[b'a'; 600], peer, None), Err(414));
        let request = read_request(b"pxelinux.cfg/default", peer, None).unwrap();
        assert_eq!(request.filename(), b"pxelinux.cfg/default");
    }

    #[test]
    fn validators() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let later = t + Duration::from_secs(1);
        let now = SystemTime::now();
        let tag = entity_tag(10, t);
        let weak = format!("\"x\", W/{tag}");
        assert!(!not_modified(None, None, Some(&tag), Some(t)));
        assert!(not_modified(Some(&weak), None, Some(&tag), Some(t)));
        assert!(!not_modified(Some("\"x\""), None, Some(&tag), Some(t)));
        assert!(not_modified(Some("*"), None, None, None));
        // Not text: matches nothing.
        assert!(!not_modified(Some(""), None, Some(&tag), Some(t)));
        let date = httpdate::fmt_http_date(t);
        assert!(not_modified(None, Some(&date), Some(&tag), Some(t)));
        assert!(!not_modified(None, Some(&date), Some(&tag), Some(later)));
        assert!(if_range_holds(None, Some(&tag), Some(t), now));
        assert!(if_range_holds(Some(&tag), Some(&tag), Some(t), now));
        assert!(!if_range_holds(
            Some(&format!("W/{tag}")),
            Some(&tag),
            Some(t),
            now
        ));
        assert!(if_range_holds(Some(&date), Some(&tag), Some(t), now));
        assert!(!if_range_holds(Some(&date), Some(&tag), Some(later), now));
        assert!(!if_range_holds(Some(""), Some(&tag), Some(t), now));
        // A date of this very second is no validator.
        let this_second = httpdate::fmt_http_date(now);
        assert!(!if_range_holds(Some(&this_second), None, Some(now), now));
    }

    #[test]
    fn refusals() {
        assert_eq!(status_of(&TftpError::not_found()), 404);
        assert_eq!(status_of(&TftpError::busy()), 503);
        assert_eq!(status_of(&TftpError::access_violation("no")), 403);
        assert_eq!(status_of(&TftpError::new(ErrorCode::DiskFull, "full")), 500);
    }
}
