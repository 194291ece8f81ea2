//! Which accepted requests get a session: [`Admission`], and the whole
//! listening-socket decision [`Admission::admit_datagram`].

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::accept::{accept, Request};
use crate::failure::Failure;
use crate::options::{Direction, Limits};
use crate::packet::encode_error;

/// Default for [`Admission`]'s session limit.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default for [`Admission`]'s per-address limit.
pub const DEFAULT_MAX_SESSIONS_PER_PEER: usize = 256;
/// Default for [`Admission`]'s limit of unverified sessions: half the
/// session limit (at least one). Spoofed requests hold at most half the
/// table, and a real boot storm as large as half the table is admitted
/// without evicting clients that have not had time to answer.
pub const fn default_max_unverified(max_sessions: usize) -> usize {
    let half = max_sessions / 2;
    if half == 0 {
        1
    } else {
        half
    }
}

/// Which requests get a session, like a TCP SYN backlog:
/// - at most `max_sessions` at once, and at most `max_sessions_per_peer`
///   from one peer: one IPv4 address, or one IPv6 /64 (a host can have any
///   number of addresses in its own /64);
/// - at most `max_unverified` whose peer has not answered yet
///   ([`Admission::verify`]); when a limit is reached, the oldest
///   unverified session (of the same peer, for the per-peer limit) gives its
///   place to the new request, so spoofed requests cannot keep a real
///   client, which answers within a round trip, out;
/// - a retransmitted request does not start a second session: a request
///   with the same peer address and port, direction, file name and options
///   as a running session whose peer has not answered yet is a duplicate.
///   Once the peer has answered, the same request is a new one (the client
///   finished or gave up, and a new socket of its got the same port: the
///   old session ends on its own), and so is one with other options (UEFI
///   asks again without `tsize` after its size probe).
///
/// Adapters keep one behind a lock, call [`Admission::admit`] in the accept
/// loop, [`Admission::verify`] when the session's peer is verified, cancel
/// the session of an [`Admitted::evicted`] key, and [`Admission::release`]
/// when a session ends.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    max_sessions: usize,
    max_sessions_per_peer: usize,
    max_unverified: usize,
    ipv6_prefix: u8,
    next_id: u64,
    per_peer: BTreeMap<PeerKey, usize>,
    /// The latest session for each request, with the request's options,
    /// for duplicates.
    running: BTreeMap<RequestKey, (u64, Vec<u8>)>,
    /// Running sessions by id (oldest first).
    sessions: BTreeMap<u64, RequestKey>,
    /// Unverified sessions: all, and per peer (ids, oldest first).
    unverified: BTreeSet<u64>,
    unverified_by_peer: BTreeSet<(PeerKey, u64)>,
}

/// Default for [`Admission::with_ipv6_prefix`]: one /64 is one peer.
pub const DEFAULT_IPV6_PEER_PREFIX: u8 = 64;

/// What one peer is, for the per-peer limit: an IPv4 address, or an IPv6
/// prefix (a /64 by default: a host can use any address of its own /64;
/// IPv4-mapped IPv6 counts as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// An IPv4 host.
    V4(core::net::Ipv4Addr),
    /// An IPv6 prefix: the address with the bits past the prefix cleared.
    V6(u128),
}

impl PeerKey {
    /// The key of `ip` with IPv6 counted by /64.
    pub fn of(ip: IpAddr) -> Self {
        Self::with_prefix(ip, DEFAULT_IPV6_PEER_PREFIX)
    }

    /// The key of `ip` with IPv6 counted by `/prefix` (clamped to 0..=128).
    pub fn with_prefix(ip: IpAddr, prefix: u8) -> Self {
        match ip {
            IpAddr::V4(v4) => PeerKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4),
                None => {
                    let clear = 128u32.saturating_sub(u32::from(prefix.min(128)));
                    let mask = u128::MAX.checked_shl(clear).unwrap_or(0);
                    PeerKey::V6(v6.to_bits() & mask)
                }
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RequestKey {
    peer: SocketAddr,
    write: bool,
    filename: Vec<u8>,
}

/// Identifies an admitted session (for [`Admission::verify`] and
/// [`Admission::release`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    id: u64,
}

/// A request that got a place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Its place: verify and release it under this key.
    pub key: SessionKey,
    /// An unverified session that gave up its place to this one: the
    /// adapter cancels it ([`crate::session::Session::cancel`]); its place
    /// is already free, and its own release is a no-op.
    pub evicted: Option<SessionKey>,
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
                let busy = Failure::Busy;
                encode_error(buf, busy.code(), busy.message().as_bytes()).ok()
            }
        }
    }
}

impl Admission {
    /// A policy with these limits, and [`default_max_unverified`] unverified
    /// sessions.
    pub fn new(max_sessions: usize, max_sessions_per_peer: usize) -> Self {
        Admission {
            max_sessions,
            max_sessions_per_peer,
            max_unverified: default_max_unverified(max_sessions),
            ipv6_prefix: DEFAULT_IPV6_PEER_PREFIX,
            ..Admission::default()
        }
    }

    /// The same policy counting IPv6 peers by `/prefix` (default 64; 128
    /// counts every address apart, for a LAN whose hosts all share a /64).
    pub fn with_ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix.min(128);
        self
    }

    fn peer_key(&self, ip: IpAddr) -> PeerKey {
        PeerKey::with_prefix(ip, self.ipv6_prefix)
    }

    /// The same policy with at most `max_unverified` unverified sessions.
    pub fn with_max_unverified(mut self, max_unverified: usize) -> Self {
        self.max_unverified = max_unverified;
        self
    }

    /// Admits `request` (and counts it) or says why not.
    pub fn admit(&mut self, request: &Request) -> Result<Admitted, Refusal> {
        let key = RequestKey {
            peer: request.peer,
            write: request.direction == Direction::Write,
            filename: request.filename.clone(),
        };
        if let Some((id, options)) = self.running.get(&key) {
            if self.unverified.contains(id) && *options == request.options {
                return Err(Refusal::Duplicate);
            }
        }
        // A zero limit admits nothing.
        if self.max_sessions == 0 || self.max_sessions_per_peer == 0 || self.max_unverified == 0 {
            return Err(Refusal::Busy);
        }
        let peer = self.peer_key(request.peer.ip());
        let from_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        let evict = if from_peer >= self.max_sessions_per_peer {
            // Only this peer's own unverified sessions may make room.
            let oldest = self
                .unverified_by_peer
                .range((peer, 0)..=(peer, u64::MAX))
                .next()
                .map(|&(_, id)| id);
            Some(oldest.ok_or(Refusal::Busy)?)
        } else if self.sessions.len() >= self.max_sessions
            || self.unverified.len() >= self.max_unverified
        {
            Some(self.unverified.first().copied().ok_or(Refusal::Busy)?)
        } else {
            None
        };
        let evicted = evict.map(|id| {
            self.remove(id);
            SessionKey { id }
        });
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        // Below `max_sessions_per_peer` now: never saturates.
        let n = self.per_peer.entry(peer).or_insert(0);
        *n = n.saturating_add(1);
        self.running
            .insert(key.clone(), (id, request.options.clone()));
        self.sessions.insert(id, key);
        self.unverified.insert(id);
        self.unverified_by_peer.insert((peer, id));
        Ok(Admitted {
            key: SessionKey { id },
            evicted,
        })
    }

    /// The peer of the session admitted under `key` answered: it no longer
    /// counts as unverified, and can no longer be evicted.
    pub fn verify(&mut self, key: &SessionKey) {
        if self.unverified.remove(&key.id) {
            if let Some(request) = self.sessions.get(&key.id) {
                let peer = self.peer_key(request.peer.ip());
                self.unverified_by_peer.remove(&(peer, key.id));
            }
        }
    }

    /// The session admitted under `key` ended (a no-op if it was evicted).
    pub fn release(&mut self, key: &SessionKey) {
        self.remove(key.id);
    }

    fn remove(&mut self, id: u64) {
        let Some(request) = self.sessions.remove(&id) else {
            return;
        };
        let peer = self.peer_key(request.peer.ip());
        self.unverified.remove(&id);
        self.unverified_by_peer.remove(&(peer, id));
        // Unless a newer session of the same request took its entry.
        if self
            .running
            .get(&request)
            .is_some_and(|(latest, _)| *latest == id)
        {
            self.running.remove(&request);
        }
        if let Some(n) = self.per_peer.get_mut(&peer) {
            // Entries are removed at 0, so `n >= 1` here.
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// Sessions running.
    pub fn running(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions running whose peer is not verified yet.
    pub fn unverified(&self) -> usize {
        self.unverified.len()
    }
}

/// What the listening socket does with one datagram.
#[derive(Debug)]
pub enum Admit {
    /// Start a session for this request (release `key` when it ends).
    Start {
        /// The request, with `local` set.
        request: Request,
        /// Its admission, for [`Admission::verify`] and
        /// [`Admission::release`].
        key: SessionKey,
        /// A session to cancel: it gave its place to this one.
        evicted: Option<SessionKey>,
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
            Ok(Admitted { key, evicted }) => {
                counters.session_started();
                request.local = Some(local);
                Admit::Start {
                    request,
                    key,
                    evicted,
                }
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
