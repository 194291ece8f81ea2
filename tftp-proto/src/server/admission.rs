//! Which accepted requests get a session: [`Admission`], and the whole
//! listening-socket decision [`Admission::admit_datagram`].

use super::*;

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
        // Below `max_sessions_per_peer` (checked above): never saturates.
        let n = self.per_ip.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        self.running.insert(key.clone());
        Ok(key)
    }

    /// The session admitted under `key` ended.
    pub fn release(&mut self, key: &SessionKey) {
        if self.running.remove(key) {
            let ip = key.peer.ip();
            if let Some(n) = self.per_ip.get_mut(&ip) {
                // Entries are removed at 0, so `n >= 1` here.
                *n = n.saturating_sub(1);
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
