//! Server side: [`accept`] turns the first datagram on the listening socket
//! into a [`Request`] (or a [`Reject`]); a [`Transfer`] started with
//! [`Transfer::start`] (or [`Transfer::server_read`] /
//! [`Transfer::server_write`]) runs the transfer on a fresh socket (the server's transfer ID).
//!
//! Typical flow in an adapter:
//!
//! 1. `accept(datagram, peer, &limits)` → `Request`;
//! 2. the application decides (file or generated data, optional per-request
//!    narrower [`Limits`], known size);
//! 3. `request.negotiate(&limits, size)` → the OACK contents;
//! 4. [`Transfer::server_read`]`(&request, negotiation.oack, &limits, now)`
//!    (or [`Transfer::start`], which negotiates too) and drive it (see
//!    [`crate::session`]).

use core::net::SocketAddr;

use crate::failure::Failure;
use crate::options::{Direction, Limits, TransferOptions};
use crate::packet::ErrorCode;
use crate::stats::Outcome;
use crate::time::Instant;
use crate::transfer::State;
pub use crate::transfer::Transfer;

mod accept;
mod admission;

pub use accept::{accept, Reject, Request, TftpError};
pub use admission::{
    default_max_unverified, Admission, Admit, Admitted, PeerKey, Refusal, SessionKey,
    DEFAULT_IPV6_PEER_PREFIX, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
};

/// A server session of either direction, started from a request and the
/// application's answer ([`Transfer::start`] or [`Transfer::refuse`]): what
/// every adapter runs after calling its handler.
pub type ServerSession = Transfer;
/// A session serving a read request ([`Transfer::server_read`]): OACK (if
/// options were negotiated) and ACK 0, then DATA from the source.
pub type ServerRead = Transfer;
/// A session serving a write request ([`Transfer::server_write`]): OACK (if
/// options were negotiated) or ACK 0, then DATA into the sink.
pub type ServerWrite = Transfer;

impl Transfer {
    /// Serves a read request. `options` is the final negotiation result
    /// (usually [`Request::negotiate`]`(..).oack`, possibly narrowed by the
    /// application); an empty set means no OACK and DATA 1 at once.
    pub fn server_read(
        request: &Request,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Self {
        debug_assert_eq!(request.direction, Direction::Read);
        Transfer::server(request, options, limits, now)
    }

    /// Serves a write request; see [`Transfer::server_read`] for `options`.
    pub fn server_write(
        request: &Request,
        options: TransferOptions,
        limits: &Limits,
        now: Instant,
    ) -> Self {
        debug_assert_eq!(request.direction, Direction::Write);
        Transfer::server(request, options, limits, now)
    }

    /// Starts serving `request` (either direction) under the server's
    /// `limits`, narrowed by the application's `narrow` (it can only
    /// restrict them); `size` is the size of a read's source when known
    /// (answered to `tsize`).
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
        let size = match request.direction {
            Direction::Read => size,
            Direction::Write => None,
        };
        let oack = request.negotiate(&limits, size).oack;
        Transfer::server(request, oack, &limits, now)
    }

    /// A session that answers `request` with ERROR `code` and `message` (from
    /// the transfer socket, as RFC 1350 wants) and ends with
    /// [`Outcome::Refused`].
    pub fn refuse(
        request: &Request,
        code: ErrorCode,
        message: &str,
        limits: &Limits,
        now: Instant,
    ) -> Self {
        let mut s = Transfer::server(request, TransferOptions::default(), limits, now);
        s.abort(code, message);
        if let State::Closing(outcome) = &mut s.state {
            *outcome = Outcome::Refused { code };
        }
        s
    }

    /// [`Transfer::refuse`] with a local [`Failure`]'s ERROR.
    pub fn refuse_with(request: &Request, failure: Failure, limits: &Limits, now: Instant) -> Self {
        Transfer::refuse(request, failure.code(), failure.message(), limits, now)
    }

    /// Records the local address of the session's transfer socket in its
    /// statistics.
    pub fn set_local(&mut self, local: SocketAddr) {
        self.ctx.stats.local = Some(local);
    }
}

#[cfg(test)]
mod tests {
    use core::net::SocketAddr;

    use super::{accept, default_max_unverified, Admission, PeerKey, Refusal, Reject, Request};
    use crate::options::{Direction, Limits};
    use crate::packet::{ErrorCode, Mode};

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

    fn request_from(peer: &str) -> Request {
        let mut r = accept(
            b"\x00\x01f\x00octet\x00",
            "192.0.2.1:1".parse().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        r.peer = peer.parse().unwrap();
        r
    }

    #[test]
    fn a_request_is_a_duplicate_only_while_unanswered_and_with_its_options() {
        let mut a = Admission::new(8, 8);
        let plain = request_from("192.0.2.1:40000");
        let mut probe = accept(
            b"\x00\x01f\x00octet\x00tsize\x000\x00",
            "192.0.2.1:40000".parse().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        probe.peer = plain.peer;
        // A retransmission while the peer has not answered: silence.
        let k1 = a.admit(&probe).unwrap().key;
        assert_eq!(a.admit(&probe), Err(Refusal::Duplicate));
        // The same name from the same port with other options is a new
        // request (UEFI's download after its tsize probe).
        let k2 = a.admit(&plain).unwrap().key;
        assert_eq!(a.admit(&plain), Err(Refusal::Duplicate));
        assert_eq!(a.admit(&probe).map(|_| ()), Ok(()), "k2 took the entry");
        // Once the peer has answered, the same request is a new one (a new
        // client socket on a port just freed, the old session finishing).
        a.verify(&k2);
        let k3 = a.admit(&plain).unwrap().key;
        assert_eq!(a.admit(&plain), Err(Refusal::Duplicate), "k3 unanswered");
        // Older sessions ending leave the newest's entry alone.
        a.release(&k1);
        a.release(&k2);
        assert_eq!(a.admit(&plain), Err(Refusal::Duplicate));
        a.release(&k3);
        assert!(a.admit(&plain).is_ok());
    }

    #[test]
    fn admission_limits_and_duplicates() {
        let mut a = Admission::new(2, 1);
        let r1 = request_from("192.0.2.1:40000");
        let k1 = a.admit(&r1).unwrap().key;
        assert_eq!(a.admit(&r1), Err(Refusal::Duplicate));
        a.verify(&k1);
        let r2 = request_from("192.0.2.1:40001");
        assert_eq!(a.admit(&r2), Err(Refusal::Busy), "per-peer limit of 1");
        let k3 = a.admit(&request_from("192.0.2.2:1")).unwrap();
        assert_eq!(k3.evicted, None);
        a.verify(&k3.key);
        let r4 = request_from("192.0.2.3:1");
        assert_eq!(a.admit(&r4), Err(Refusal::Busy), "total limit of 2");
        a.release(&k1);
        assert!(a.admit(&r2).is_ok());
        assert_eq!(a.running(), 2);
        let mut buf = [0u8; 64];
        assert!(Refusal::Busy.encode(&mut buf).is_some());
        assert_eq!(Refusal::Duplicate.encode(&mut buf), None);
        assert_eq!(Admission::new(0, 1).admit(&r4), Err(Refusal::Busy));
        assert_eq!(Admission::new(1, 0).admit(&r4), Err(Refusal::Busy));
    }

    #[test]
    fn unverified_sessions_give_way_oldest_first() {
        // 8 places, at most 2 unverified (the default would be half: 4).
        let mut a = Admission::new(8, 8).with_max_unverified(2);
        assert_eq!(default_max_unverified(8), 4);
        let k1 = a.admit(&request_from("192.0.2.1:1")).unwrap();
        let k2 = a.admit(&request_from("192.0.2.2:1")).unwrap();
        assert_eq!((k1.evicted, k2.evicted), (None, None));
        // A third unverified request displaces the oldest.
        let k3 = a.admit(&request_from("192.0.2.3:1")).unwrap();
        assert_eq!(k3.evicted, Some(k1.key));
        assert_eq!((a.running(), a.unverified()), (2, 2));
        // The evicted session's own release later changes nothing.
        a.release(&k1.key);
        assert_eq!(a.running(), 2);
        // Its request may come again (a retransmission is no duplicate now).
        let again = a.admit(&request_from("192.0.2.1:1")).unwrap();
        assert_eq!(again.evicted, Some(k2.key));
        // Verified sessions are never displaced: fill the table with them.
        a.verify(&k3.key);
        a.verify(&again.key);
        let mut verified = 2;
        for i in 10..40 {
            let k = a
                .admit(&request_from(&alloc::format!("192.0.2.{i}:1")))
                .unwrap();
            if verified < 8 {
                a.verify(&k.key);
                verified += 1;
            }
            if verified == 8 {
                break;
            }
        }
        assert_eq!((a.running(), a.unverified()), (8, 0));
        assert_eq!(a.admit(&request_from("192.0.2.99:1")), Err(Refusal::Busy));
    }

    #[test]
    fn per_peer_limit_counts_ipv6_by_64_and_evicts_only_that_peer() {
        let mut a = Admission::new(100, 2).with_max_unverified(100);
        let other = a.admit(&request_from("192.0.2.7:1")).unwrap();
        let x = a.admit(&request_from("[2001:db8:1:2::1]:1")).unwrap();
        a.verify(&x.key);
        let y = a.admit(&request_from("[2001:db8:1:2:ffff::9]:1")).unwrap();
        // The /64 is full: a third address in it displaces its own
        // unverified session, never another peer's.
        let z = a.admit(&request_from("[2001:db8:1:2::3]:1")).unwrap();
        assert_eq!(z.evicted, Some(y.key));
        a.verify(&z.key);
        assert_eq!(
            a.admit(&request_from("[2001:db8:1:2::4]:1")),
            Err(Refusal::Busy)
        );
        // Another /64 is another peer.
        assert!(a.admit(&request_from("[2001:db8:1:3::1]:1")).is_ok());
        assert_eq!(a.running(), 4);
        let _ = other;
        assert_eq!(
            PeerKey::of("::ffff:192.0.2.7".parse().unwrap()),
            PeerKey::of("192.0.2.7".parse().unwrap())
        );
        // Counted by full address: the same /64 is many peers.
        let mut each = Admission::new(100, 1).with_ipv6_prefix(128);
        assert!(each.admit(&request_from("[2001:db8:1:2::1]:1")).is_ok());
        assert!(each.admit(&request_from("[2001:db8:1:2::2]:1")).is_ok());
        assert_eq!(
            PeerKey::with_prefix("2001:db8:1:2:3::1".parse().unwrap(), 48),
            PeerKey::with_prefix("2001:db8:1:ffff::1".parse().unwrap(), 48)
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
