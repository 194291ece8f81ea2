//! Single-port mode ([`ServerBuilder::single_port`](crate::ServerBuilder::single_port)):
//! every transfer is served from the listening socket, as dnsmasq's
//! `tftp-single-port` does, for NAT, port-mapped containers and Kubernetes
//! Services, which pass only the server's one port.
//!
//! The accept loop reads every datagram. A request (RRQ, WRQ) goes to the
//! core's admission as in the default mode: a retransmitted one is a
//! duplicate, a new one from the same address and port starts a new
//! session, which takes the route of the old one; the old one ends without
//! another datagram ([`Session::abandon`](tftp_proto::session::Session::abandon):
//! its client moved on, and anything it sent now would reach the new
//! transfer), dropping what waited in its inbox. Anything else is routed by its sender
//! and the address it came to into that session's [`Inbox`], or dropped
//! when no session has that pair (a stranger's ACK, a late packet of an
//! ended transfer). Sessions send from the listening socket, from the
//! address their request came to.
//!
//! The inboxes are bounded: [`SINGLE_PORT_QUEUE`] datagrams each and
//! [`SINGLE_PORT_QUEUE_BYTES`] for all of them; past either, a datagram is
//! dropped, as a full socket buffer would, and the session recovers as
//! from a loss.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

use crate::udp::Got;

/// Most datagrams waiting for one single-port session (a window of an
/// upload arrives at once: this is twice the default largest window).
pub const SINGLE_PORT_QUEUE: usize = 128;
/// Most bytes waiting for all single-port sessions together (like the
/// listening socket's own receive buffer, [`LISTEN_RCVBUF`](crate::LISTEN_RCVBUF)).
pub const SINGLE_PORT_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Who a session talks to: its peer and the local address its request
/// came to.
type Pair = (SocketAddr, SocketAddr);

/// The single-port routes of one server.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    routes: Mutex<HashMap<Pair, Arc<Inbox>>>,
    /// Bytes queued in all inboxes.
    queued: Arc<AtomicUsize>,
}

/// What a datagram on the listening socket is, in single-port mode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// A request: for the admission.
    Request,
    /// A session's: queued, or dropped because its inbox is full.
    Session,
    /// Nobody's: for the admission, which ignores it.
    Unknown,
}

impl Demux {
    fn routes(&self) -> MutexGuard<'_, HashMap<Pair, Arc<Inbox>>> {
        // NOTE(unwrap): every update of the map is one call.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `datagram` from `peer` to `local`, on a listening socket
    /// bound to `bound`, for its session, if it is not a request. A session
    /// whose request came to a broadcast address is on `bound` (the kernel
    /// chose the address it answers from): it gets its peer's datagrams to
    /// any of the socket's addresses.
    pub(crate) fn deliver(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
        bound: SocketAddr,
    ) -> Routed {
        if matches!(datagram, [0, 1, ..] | [0, 2, ..]) {
            return Routed::Request;
        }
        let routes = self.routes();
        let route = routes
            .get(&(peer, local))
            .or_else(|| routes.get(&(peer, bound)));
        let inbox = match route {
            Some(inbox) => Arc::clone(inbox),
            None => return Routed::Unknown,
        };
        drop(routes);
        inbox.push(datagram, &self.queued);
        Routed::Session
    }

    /// Routes `peer`'s datagrams to `local` to a new session's inbox. The
    /// session that had the route, if any, is told
    /// ([`Route::is_replaced`]): its peer moved on to the new one.
    pub(crate) fn open(self: &Arc<Self>, peer: SocketAddr, local: SocketAddr) -> Route {
        let inbox = Arc::new(Inbox {
            pair: (peer, local),
            queue: Mutex::default(),
            event: Event::new(),
            replaced: AtomicBool::new(false),
        });
        let old = self.routes().insert((peer, local), Arc::clone(&inbox));
        if let Some(old) = old {
            old.clear(&self.queued);
            old.replaced.store(true, Ordering::Release);
            old.event.notify(usize::MAX);
        }
        Route {
            demux: Arc::clone(self),
            inbox,
        }
    }

    /// Sessions with a route.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.routes().len()
    }
}

/// A single-port session's route: its inbox, removed from the routes when
/// the session ends.
#[derive(Debug)]
pub(crate) struct Route {
    demux: Arc<Demux>,
    inbox: Arc<Inbox>,
}

impl Route {
    /// The local address the session answers from.
    pub(crate) fn local(&self) -> SocketAddr {
        self.inbox.pair.1
    }

    /// A newer session of the same peer took the route: this one ends
    /// without a word ([`Session::abandon`](tftp_proto::session::Session::abandon)).
    pub(crate) fn is_replaced(&self) -> bool {
        self.inbox.replaced.load(Ordering::Acquire)
    }

    /// Takes up to two queued datagrams into `first` and `second` (when it
    /// is not empty); `got` says what came. False when none waited.
    pub(crate) fn take(&self, first: &mut [u8], second: &mut [u8], got: &mut Got) -> bool {
        let mut queue = self.inbox.queue();
        *got = [None, None];
        let peer = self.inbox.pair.0;
        let mut slots = [first, second];
        let mut taken = false;
        for (slot, got) in slots.iter_mut().zip(got.iter_mut()) {
            if slot.is_empty() {
                break;
            }
            let Some(datagram) = queue.pop_front() else {
                break;
            };
            self.demux
                .queued
                .fetch_sub(datagram.len(), Ordering::AcqRel);
            // Cut as a socket cuts a datagram longer than the buffer.
            let n = datagram.len().min(slot.len());
            slot[..n].copy_from_slice(&datagram[..n]);
            *got = Some((n, peer));
            taken = true;
        }
        taken
    }

    /// A listener for the next datagram: take again after making it and
    /// before waiting on it.
    pub(crate) fn listen(&self) -> EventListener {
        self.inbox.event.listen()
    }

    /// Takes datagrams like [`take`](Self::take) (ready with none once
    /// the route is replaced), or registers `cx` to be woken by the next one
    /// (`listener` keeps the registration).
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        listener: &mut Option<EventListener>,
        first: &mut [u8],
        second: &mut [u8],
        got: &mut Got,
    ) -> Poll<()> {
        loop {
            if self.take(first, second, got) || self.is_replaced() {
                *listener = None;
                return Poll::Ready(());
            }
            match listener {
                None => *listener = Some(self.listen()),
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => *listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        let mut routes = self.demux.routes();
        // Unless a newer session of the same pair took it.
        if routes
            .get(&self.inbox.pair)
            .is_some_and(|inbox| Arc::ptr_eq(inbox, &self.inbox))
        {
            routes.remove(&self.inbox.pair);
        }
        drop(routes);
        self.inbox.clear(&self.demux.queued);
    }
}

/// The datagrams waiting for one session.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// Its session's peer and local address.
    pair: Pair,
    queue: Mutex<VecDeque<Box<[u8]>>>,
    /// Notified when a datagram is queued, or the route replaced.
    event: Event,
    replaced: AtomicBool,
}

impl Inbox {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Box<[u8]>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a copy of `datagram` unless this inbox or all of them are
    /// full (counted in `queued`).
    fn push(&self, datagram: &[u8], queued: &AtomicUsize) {
        let mut queue = self.queue();
        if queue.len() >= SINGLE_PORT_QUEUE {
            return;
        }
        let room = queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            q.checked_add(datagram.len())
                .filter(|&total| total <= SINGLE_PORT_QUEUE_BYTES)
        });
        if room.is_err() {
            return;
        }
        queue.push_back(datagram.into());
        drop(queue);
        self.event.notify(1);
    }

    /// Drops what waits (the session ended or lost its route).
    fn clear(&self, queued: &AtomicUsize) {
        let mut queue = self.queue();
        let bytes: usize = queue.iter().map(|d| d.len()).sum();
        queue.clear();
        queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "127.0.0.1:1000";
    const LOCAL: &str = "127.0.0.1:69";
    const WILD: &str = "0.0.0.0:69";

    #[test]
    fn routes_by_pair_and_leaves_requests_to_admission() {
        let demux = Arc::new(Demux::default());
        let route = demux.open(addr(PEER), addr(LOCAL));
        assert_eq!(route.local(), addr(LOCAL));
        assert_eq!(
            demux.deliver(&[0, 1, b'x', 0], addr(PEER), addr(LOCAL), addr(LOCAL)),
            Routed::Request
        );
        assert_eq!(
            demux.deliver(&[0, 2, b'x', 0], addr(PEER), addr(LOCAL), addr(LOCAL)),
            Routed::Request
        );
        // Another port of the same host, another local address: nobody's.
        assert_eq!(
            demux.deliver(
                &[0, 4, 0, 1],
                addr("127.0.0.1:1001"),
                addr(LOCAL),
                addr(LOCAL)
            ),
            Routed::Unknown
        );
        assert_eq!(
            demux.deliver(&[0, 4, 0, 1], addr(PEER), addr("127.0.0.2:69"), addr(WILD)),
            Routed::Unknown
        );
        assert_eq!(
            demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(LOCAL)),
            Routed::Session
        );
        assert_eq!(
            demux.deliver(&[0, 4, 0, 2, 9, 9], addr(PEER), addr(LOCAL), addr(LOCAL)),
            Routed::Session
        );
        // Two slots, then one; a short slot cuts the datagram.
        let (mut a, mut b) = ([0u8; 8], [0u8; 3]);
        let mut got = [None, None];
        assert!(route.take(&mut a, &mut b, &mut got));
        assert_eq!(got, [Some((4, addr(PEER))), Some((3, addr(PEER)))]);
        assert_eq!((&a[..4], &b[..]), (&[0, 4, 0, 1][..], &[0, 4, 0][..]));
        assert!(!route.take(&mut a, &mut b, &mut got));
        assert_eq!(got, [None, None]);
        assert_eq!(demux.queued.load(Ordering::Acquire), 0);
        drop(route);
        assert_eq!(demux.len(), 0);
        assert_eq!(
            demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(LOCAL)),
            Routed::Unknown
        );
    }

    /// A request to a broadcast address is on the bound (wildcard)
    /// address; its peer answers the address the kernel sent from.
    #[test]
    fn a_session_on_the_bound_address_hears_any_local_address() {
        let demux = Arc::new(Demux::default());
        let route = demux.open(addr(PEER), addr(WILD));
        assert_eq!(
            demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(WILD)),
            Routed::Session
        );
        assert!(route.take(&mut [0; 4], &mut [], &mut [None, None]));
    }

    #[test]
    fn a_new_session_of_the_pair_takes_the_route() {
        let demux = Arc::new(Demux::default());
        let old = demux.open(addr(PEER), addr(LOCAL));
        demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(LOCAL));
        assert!(!old.is_replaced());
        let new = demux.open(addr(PEER), addr(LOCAL));
        assert!(old.is_replaced() && !new.is_replaced());
        // What waited for the old session is dropped with its route.
        assert_eq!(demux.queued.load(Ordering::Acquire), 0);
        demux.deliver(&[0, 4, 0, 2], addr(PEER), addr(LOCAL), addr(LOCAL));
        let mut got = [None, None];
        let mut buf = [0u8; 8];
        assert!(!old.take(&mut buf, &mut [], &mut got));
        // The old session's end leaves the new route alone.
        drop(old);
        assert_eq!(demux.len(), 1);
        assert!(new.take(&mut buf, &mut [], &mut got));
        assert_eq!(&buf[..4], &[0, 4, 0, 2]);
    }

    #[test]
    fn inboxes_are_bounded_by_count_and_bytes() {
        let demux = Arc::new(Demux::default());
        let route = demux.open(addr(PEER), addr(LOCAL));
        for _ in 0..SINGLE_PORT_QUEUE + 5 {
            demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(LOCAL));
        }
        assert_eq!(route.inbox.queue().len(), SINGLE_PORT_QUEUE);
        assert_eq!(demux.queued.load(Ordering::Acquire), 4 * SINGLE_PORT_QUEUE);
        drop(route);
        assert_eq!(demux.queued.load(Ordering::Acquire), 0);
        // The byte bound, across sessions: big datagrams fill it exactly.
        let a = demux.open(addr(PEER), addr(LOCAL));
        let b = demux.open(addr("127.0.0.1:1001"), addr(LOCAL));
        let big = vec![0u8; SINGLE_PORT_QUEUE_BYTES / 4];
        for _ in 0..2 {
            demux.deliver(&big, addr(PEER), addr(LOCAL), addr(LOCAL));
            demux.deliver(&big, addr("127.0.0.1:1001"), addr(LOCAL), addr(LOCAL));
        }
        assert_eq!(
            demux.queued.load(Ordering::Acquire),
            SINGLE_PORT_QUEUE_BYTES
        );
        demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(LOCAL));
        assert_eq!(a.inbox.queue().len(), 2, "one byte more is dropped");
        let mut buf = vec![0u8; big.len()];
        assert!(b.take(&mut buf, &mut [], &mut [None, None]));
        demux.deliver(&[0, 4, 0, 1], addr(PEER), addr(LOCAL), addr(LOCAL));
        assert_eq!(a.inbox.queue().len(), 3, "room again");
    }
}
