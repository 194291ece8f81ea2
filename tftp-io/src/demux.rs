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
//! transfer), dropping what waited in its inbox. Anything else is routed by
//! its sender's address and port into that session's inbox, or dropped when
//! no session has it (a stranger's ACK, a late packet of an ended
//! transfer). Sessions send from the listening socket, from the address
//! their request came to; a route's send and its replacement exclude each
//! other, so a replaced session cannot send once the new one exists.
//!
//! The inboxes are bounded: [`SINGLE_PORT_QUEUE`] datagrams and
//! [`SINGLE_PORT_SESSION_BYTES`] each, [`SINGLE_PORT_QUEUE_BYTES`] for all,
//! and a datagram is kept only up to the largest its session takes (one
//! byte more, to tell an oversized one); past a bound, a datagram is
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
/// Most bytes waiting for one single-port session: twice the default
/// largest window's (`Limits::max_window_bytes`), so a client that floods
/// its own stalled session fills only its own inbox.
pub const SINGLE_PORT_SESSION_BYTES: usize = 1024 * 1024;
/// Most bytes waiting for all single-port sessions together.
pub const SINGLE_PORT_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// The single-port routes of one server, by peer address and port.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    routes: Mutex<HashMap<SocketAddr, Arc<Inbox>>>,
    /// Bytes queued in all inboxes.
    queued: AtomicUsize,
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
    fn routes(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Inbox>>> {
        // NOTE(unwrap): every update of the map is one call.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `datagram` from `peer` for its session, if it is not a
    /// request. (Whatever local address it came to: a session whose request
    /// was broadcast answers from an address the kernel chose.)
    pub(crate) fn deliver(&self, datagram: &[u8], peer: SocketAddr) -> Routed {
        if matches!(datagram, [0, 1, ..] | [0, 2, ..]) {
            return Routed::Request;
        }
        // Queued under the routes' lock: a route removed (its session
        // ended) takes nothing more, so nothing is left counted.
        let routes = self.routes();
        match routes.get(&peer) {
            Some(inbox) => {
                inbox.push(datagram, &self.queued);
                Routed::Session
            }
            None => Routed::Unknown,
        }
    }

    /// Routes `peer`'s datagrams to a new session's inbox; it answers from
    /// `local`. The session that had the route, if any, is retired
    /// ([`Route::is_gone`]): its peer moved on to the new one.
    pub(crate) fn open(self: &Arc<Self>, peer: SocketAddr, local: SocketAddr) -> Route {
        let inbox = Arc::new(Inbox {
            peer,
            local,
            queue: Mutex::default(),
            event: Event::new(),
            gone: AtomicBool::new(false),
            cut: AtomicUsize::new(usize::MAX),
        });
        let old = self.routes().insert(peer, Arc::clone(&inbox));
        if let Some(old) = old {
            old.retire(&self.queued);
        }
        Route {
            demux: Arc::clone(self),
            inbox,
        }
    }

    /// The accept loops end: every session with a route ends too (nothing
    /// would reach it any more).
    pub(crate) fn close_all(&self) {
        for inbox in self.routes().values() {
            inbox.retire(&self.queued);
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
        self.inbox.local
    }

    /// A newer session of the same peer took the route, or the server's
    /// accept loops ended: this one ends without a word
    /// ([`Session::abandon`](tftp_proto::session::Session::abandon)).
    pub(crate) fn is_gone(&self) -> bool {
        self.inbox.gone.load(Ordering::Acquire)
    }

    /// Runs `send` unless the route is gone, excluding its retirement
    /// meanwhile (so no datagram leaves once a newer session has the
    /// peer). `None` when it is gone.
    pub(crate) fn send_if_live<T>(&self, send: impl FnOnce() -> T) -> Option<T> {
        let queue = self.inbox.queue();
        if queue.gone {
            return None;
        }
        let sent = send();
        drop(queue);
        Some(sent)
    }

    /// Keeps datagrams only up to `bytes` (the session's receive buffer:
    /// its largest datagram and one byte more).
    pub(crate) fn cut_to(&self, bytes: usize) {
        self.inbox.cut.store(bytes.max(1), Ordering::Release);
    }

    /// Takes up to two queued datagrams into `first` and `second` (when it
    /// is not empty); `got` says what came. False when none waited.
    pub(crate) fn take(&self, first: &mut [u8], second: &mut [u8], got: &mut Got) -> bool {
        let mut queue = self.inbox.queue();
        *got = [None, None];
        let peer = self.inbox.peer;
        let mut slots = [first, second];
        let mut taken = false;
        for (slot, got) in slots.iter_mut().zip(got.iter_mut()) {
            if slot.is_empty() {
                break;
            }
            let Some(datagram) = queue.datagrams.pop_front() else {
                break;
            };
            queue.bytes = queue.bytes.saturating_sub(datagram.len());
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
    /// the route is gone), or registers `cx` to be woken by the next one
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
            if self.take(first, second, got) || self.is_gone() {
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
        // Unless a newer session of the same peer took it.
        if routes
            .get(&self.inbox.peer)
            .is_some_and(|inbox| Arc::ptr_eq(inbox, &self.inbox))
        {
            routes.remove(&self.inbox.peer);
        }
        drop(routes);
        self.inbox.retire(&self.demux.queued);
    }
}

/// The datagrams waiting for one session.
#[derive(Debug)]
struct Inbox {
    /// Its session's peer, and the local address it answers from.
    peer: SocketAddr,
    local: SocketAddr,
    queue: Mutex<Queue>,
    /// Notified when a datagram is queued, or the route is gone.
    event: Event,
    /// The route is gone (also in `Queue::gone`, which sends look at).
    gone: AtomicBool,
    /// Bytes kept of each datagram.
    cut: AtomicUsize,
}

#[derive(Debug, Default)]
struct Queue {
    datagrams: VecDeque<Box<[u8]>>,
    /// Their bytes.
    bytes: usize,
    gone: bool,
}

impl Inbox {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a copy of `datagram` (up to the cut) unless the route is
    /// gone, or this inbox or all of them are full (counted in `queued`).
    fn push(&self, datagram: &[u8], queued: &AtomicUsize) {
        let datagram = datagram
            .get(..self.cut.load(Ordering::Acquire))
            .unwrap_or(datagram);
        let mut queue = self.queue();
        if queue.gone
            || queue.datagrams.len() >= SINGLE_PORT_QUEUE
            || queue.bytes.saturating_add(datagram.len()) > SINGLE_PORT_SESSION_BYTES
        {
            return;
        }
        let room = queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            q.checked_add(datagram.len())
                .filter(|&total| total <= SINGLE_PORT_QUEUE_BYTES)
        });
        if room.is_err() {
            return;
        }
        queue.datagrams.push_back(datagram.into());
        queue.bytes += datagram.len();
        drop(queue);
        self.event.notify(1);
    }

    /// The route is gone: drops what waits, takes nothing more, and wakes
    /// the session.
    fn retire(&self, queued: &AtomicUsize) {
        let mut queue = self.queue();
        queued.fetch_sub(queue.bytes, Ordering::AcqRel);
        queue.datagrams.clear();
        queue.bytes = 0;
        queue.gone = true;
        self.gone.store(true, Ordering::Release);
        drop(queue);
        self.event.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "127.0.0.1:1000";
    const OTHER: &str = "127.0.0.1:1001";
    const LOCAL: &str = "127.0.0.1:69";

    fn queued(demux: &Demux) -> usize {
        demux.queued.load(Ordering::Acquire)
    }

    #[test]
    fn routes_by_peer_and_leaves_requests_to_admission() {
        let demux = Arc::new(Demux::default());
        let route = demux.open(addr(PEER), addr(LOCAL));
        assert_eq!(route.local(), addr(LOCAL));
        assert_eq!(demux.deliver(&[0, 1, b'x', 0], addr(PEER)), Routed::Request);
        assert_eq!(demux.deliver(&[0, 2, b'x', 0], addr(PEER)), Routed::Request);
        // Another port of the same host: nobody's.
        assert_eq!(demux.deliver(&[0, 4, 0, 1], addr(OTHER)), Routed::Unknown);
        assert_eq!(demux.deliver(&[0, 4, 0, 1], addr(PEER)), Routed::Session);
        assert_eq!(
            demux.deliver(&[0, 4, 0, 2, 9, 9], addr(PEER)),
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
        assert_eq!(queued(&demux), 0);
        drop(route);
        assert_eq!(demux.len(), 0);
        assert_eq!(demux.deliver(&[0, 4, 0, 1], addr(PEER)), Routed::Unknown);
    }

    #[test]
    fn a_new_session_of_the_peer_takes_the_route() {
        let demux = Arc::new(Demux::default());
        let old = demux.open(addr(PEER), addr(LOCAL));
        demux.deliver(&[0, 4, 0, 1], addr(PEER));
        assert!(!old.is_gone());
        assert_eq!(old.send_if_live(|| 7), Some(7));
        // Even to another local address (a broadcast request, then a
        // unicast one).
        let new = demux.open(addr(PEER), addr("127.0.0.2:69"));
        assert!(old.is_gone() && !new.is_gone());
        assert_eq!(
            old.send_if_live(|| 7),
            None,
            "the replaced one sends nothing"
        );
        // What waited for the old session is dropped with its route.
        assert_eq!(queued(&demux), 0);
        demux.deliver(&[0, 4, 0, 2], addr(PEER));
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
    fn close_all_retires_every_route() {
        let demux = Arc::new(Demux::default());
        let a = demux.open(addr(PEER), addr(LOCAL));
        let b = demux.open(addr(OTHER), addr(LOCAL));
        demux.deliver(&[0, 4, 0, 1], addr(PEER));
        demux.close_all();
        assert!(a.is_gone() && b.is_gone());
        assert_eq!(queued(&demux), 0);
        // Still routed (until the sessions end), but nothing is kept.
        assert_eq!(demux.deliver(&[0, 4, 0, 1], addr(PEER)), Routed::Session);
        assert_eq!(queued(&demux), 0);
        assert!(!a.take(&mut [0; 4], &mut [], &mut [None, None]));
    }

    #[test]
    fn inboxes_are_bounded_by_count_bytes_and_cut() {
        let demux = Arc::new(Demux::default());
        let route = demux.open(addr(PEER), addr(LOCAL));
        for _ in 0..SINGLE_PORT_QUEUE + 5 {
            demux.deliver(&[0, 4, 0, 1], addr(PEER));
        }
        assert_eq!(route.inbox.queue().datagrams.len(), SINGLE_PORT_QUEUE);
        assert_eq!(queued(&demux), 4 * SINGLE_PORT_QUEUE);
        drop(route);
        assert_eq!(queued(&demux), 0);
        // One session's bytes: big datagrams up to its share, no more.
        let route = demux.open(addr(PEER), addr(LOCAL));
        let big = vec![0u8; SINGLE_PORT_SESSION_BYTES / 4];
        for _ in 0..5 {
            demux.deliver(&big, addr(PEER));
        }
        assert_eq!(queued(&demux), SINGLE_PORT_SESSION_BYTES);
        // A session that takes small datagrams keeps only what it can read.
        route.cut_to(517);
        let mut buf = vec![0u8; big.len()];
        while route.take(&mut buf, &mut [], &mut [None, None]) {}
        demux.deliver(&big, addr(PEER));
        assert_eq!(queued(&demux), 517);
        drop(route);
        // All sessions' bytes.
        let routes: Vec<Route> = (0..SINGLE_PORT_QUEUE_BYTES / SINGLE_PORT_SESSION_BYTES + 1)
            .map(|i| {
                demux.open(
                    SocketAddr::new(addr(PEER).ip(), 2000 + i as u16),
                    addr(LOCAL),
                )
            })
            .collect();
        for i in 0..routes.len() {
            let peer = SocketAddr::new(addr(PEER).ip(), 2000 + i as u16);
            for _ in 0..4 {
                demux.deliver(&big, peer);
            }
        }
        assert_eq!(queued(&demux), SINGLE_PORT_QUEUE_BYTES);
        let last = routes.last().unwrap();
        assert!(
            !last.take(&mut buf, &mut [], &mut [None, None]),
            "the last found no room"
        );
        drop(routes);
        assert_eq!(queued(&demux), 0);
    }

    /// A datagram for a route that ends meanwhile is not left counted.
    #[test]
    fn nothing_stays_counted_after_the_routes_end() {
        let demux = Arc::new(Demux::default());
        let deliverer = {
            let demux = Arc::clone(&demux);
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    demux.deliver(&[0, 4, 0, 1, 0, 0, 0, 0], addr(PEER));
                }
            })
        };
        for _ in 0..2_000 {
            let route = demux.open(addr(PEER), addr(LOCAL));
            drop(route);
        }
        deliverer.join().unwrap();
        assert_eq!(demux.len(), 0);
        assert_eq!(queued(&demux), 0);
    }
}
