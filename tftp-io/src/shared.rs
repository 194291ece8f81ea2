//! What a server's tasks or threads share, the same for the async server
//! and the threads server: the handler, the registry, the signals of its
//! life (stop accepting, abort sessions, something ended, finished), the
//! first failure, and the clock. Both accept loops admit datagrams through
//! [`Shared::admit`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tftp_proto::server::{Admit, Request};

use crate::config::ServerConfig;
use crate::demux::{Demux, Route, Routed};
use crate::driver::{Clock, Now};
use crate::registry::{Registry, Ticket};
use crate::session::Signal;

/// What a server's tasks or threads share.
pub(crate) struct Shared<H, T> {
    pub(crate) handler: H,
    pub(crate) registry: Arc<Registry>,
    /// Raised on shutdown or when an accept loop fails: stop accepting.
    pub(crate) stopping: Signal,
    /// Raised when the accept loops end: with `stopping`, or in single-port
    /// mode once the sessions, whose datagrams they route, have ended.
    pub(crate) closing: Signal,
    /// Raised after the drain timeout: abort running sessions.
    pub(crate) aborting: Signal,
    /// Notified whenever a session or an accept loop ends.
    pub(crate) ended: Signal,
    /// Raised when `serve` returns (or is dropped): the periodic stats end.
    pub(crate) finished: Signal,
    /// Accept loops still running.
    accepting: AtomicUsize,
    /// The first accept loop failure, returned by `serve`.
    failure: Mutex<Option<io::Error>>,
    pub(crate) clock: Clock<T>,
    /// The sessions' routes in single-port mode.
    pub(crate) demux: Option<Arc<Demux>>,
}

/// What the accept loop does with one datagram.
pub(crate) enum Accepted {
    /// Start a session for the request, in its place (`Ticket`), with its
    /// route in single-port mode.
    Start(Request, Ticket, Option<Route>),
    /// Send the first `n` bytes of the reply buffer back.
    Reply(usize),
    /// Nothing.
    Ignore,
}

impl<H, T: Now> Shared<H, T> {
    pub(crate) fn new(handler: H, config: ServerConfig, time: T) -> Self {
        let demux = config.single_port.then(Arc::default);
        Shared {
            demux,
            handler,
            registry: Registry::new(config),
            stopping: Signal::default(),
            closing: Signal::default(),
            aborting: Signal::default(),
            ended: Signal::default(),
            finished: Signal::default(),
            accepting: AtomicUsize::new(0),
            failure: Mutex::new(None),
            clock: Clock::new(time),
        }
    }
}

impl<H: Send + Sync + 'static, T: Send + Sync + 'static> Shared<H, T> {
    /// The decision for one datagram from `peer` to `local` on a listening
    /// socket; a reply goes into `reply`. A started session's ticket wakes `ended`
    /// when it ends. In single-port mode, a session's datagram goes to its
    /// route.
    pub(crate) fn admit(
        self: &Arc<Self>,
        datagram: &[u8],
        (peer, local): (SocketAddr, SocketAddr),
        reply: &mut [u8],
    ) -> Accepted {
        if let Some(demux) = &self.demux {
            if demux.deliver(datagram, peer) == Routed::Session {
                return Accepted::Ignore;
            }
        }
        // A draining server starts nothing.
        if self.stopping.is_raised() {
            return Accepted::Ignore;
        }
        // One byte more than allowed, to tell an oversized request.
        let keep = self
            .registry
            .config
            .limits
            .max_request_size
            .saturating_add(1);
        let datagram = datagram.get(..keep).unwrap_or(datagram);
        match self.registry.on_datagram(datagram, peer, local, reply) {
            Admit::Start { request, key, .. } => {
                let route = self.demux.as_ref().map(|demux| demux.open(peer, local));
                let notify = Arc::clone(self);
                let ticket = Ticket::new(Arc::clone(&self.registry), key, move || {
                    notify.ended.notify()
                });
                Accepted::Start(request, ticket, route)
            }
            Admit::Reply(len) => Accepted::Reply(len),
            Admit::Ignore => Accepted::Ignore,
        }
    }
}

impl<H, T> Shared<H, T> {
    /// A fresh transfer socket for `request`, on the address the request
    /// came to (so the client hears from the address it asked), its port
    /// from the configured range.
    pub(crate) fn bind_transfer(&self, request: &Request) -> io::Result<std::net::UdpSocket> {
        let ip = request.local.map_or(request.peer.ip(), |l| l.ip());
        let range = self.registry.config.port_range;
        crate::net::bind_transfer(ip, range, crate::net::random_seed())
    }

    /// Stops accepting; the accept loops end at once, or, in single-port
    /// mode, when [`closed`](Self::closed) (they route the running sessions'
    /// datagrams until then).
    pub(crate) fn stop(&self) {
        self.stopping.raise();
        if self.demux.is_none() {
            self.closing.raise();
        }
    }

    /// The running sessions ended or were given up: the accept loops end,
    /// and single-port sessions still running with them (nothing would
    /// reach them any more; they give the listening socket back).
    pub(crate) fn closed(&self) {
        self.closing.raise();
        if let Some(demux) = &self.demux {
            demux.close_all();
        }
    }

    /// An accept loop starts.
    pub(crate) fn accept_started(&self) {
        self.accepting.fetch_add(1, Ordering::AcqRel);
    }

    /// An accept loop ended, with `result`: a failure shuts the server down
    /// and is what `serve` returns.
    pub(crate) fn accept_ended(&self, result: io::Result<()>) {
        if let Err(e) = result {
            tracing::error!(error = %e, "listening socket failed; shutting down");
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            failure.get_or_insert(e);
            drop(failure);
            self.stop();
        }
        self.accepting.fetch_sub(1, Ordering::AcqRel);
        self.ended.notify();
    }

    /// No accept loop runs.
    pub(crate) fn not_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire) == 0
    }

    /// No session runs.
    pub(crate) fn idle(&self) -> bool {
        self.registry.counters.active() == 0
    }

    /// What `serve` returns: the first accept loop failure, if any.
    pub(crate) fn outcome(&self) -> io::Result<()> {
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        failure.map_or(Ok(()), Err)
    }
}
