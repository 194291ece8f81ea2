//! The threads server: one accept thread per listening socket, one thread
//! per session, the server's life told by the same [`Shared`] signals as
//! the async server's (waited on with blocking waits).

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tftp_proto::options::Direction;
use tftp_proto::server::{Request, TftpError};
use tftp_proto::stats::{ServerStats, Stats};

use super::{executor, Handler, Threads};
use crate::config::{ServerBuilder, ABORT_GRACE};
use crate::demux::Route;
use crate::driver::threads::{run, Io, Link, POLL_STOPS};
use crate::driver::SessionDriver;
use crate::listen::{Listener, LISTEN_BUFFER};
use crate::registry::Ticket;
use crate::session::{
    busy_packet, is_transient, no_socket, open, out_of_descriptors, Answer, Data, DescriptorWait,
    Granted,
};
use crate::shared::{Accepted, Shared};

/// A TFTP server on std sockets and threads (see [`Server::builder`]).
pub struct Server<H> {
    shared: Arc<Shared<H, Threads>>,
    sockets: Vec<UdpSocket>,
    listeners: Vec<Listener>,
}

impl<H: Handler> Server<H> {
    /// Starts configuring a server with `handler`.
    pub fn builder(handler: H) -> ServerBuilder<H, Threads> {
        ServerBuilder::new(handler, Threads::default())
    }
}

impl<H: Handler> ServerBuilder<H, Threads> {
    /// Stack size of each session's thread (default: std's, 2 MiB of
    /// address space, mostly never touched). A session that cannot get its
    /// thread (out of memory or threads) is refused with ERROR 0 "Server
    /// busy", and the server goes on.
    pub fn session_stack_size(mut self, bytes: usize) -> Self {
        self.runtime.stack_size = Some(bytes);
        self
    }

    /// Binds the listening sockets.
    pub fn bind(mut self) -> io::Result<Server<H>> {
        let sockets = self.bind_sockets()?;
        let mut listeners = Vec::with_capacity(sockets.len());
        for s in &sockets {
            listeners.push(Listener::new(s)?);
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(POLL_STOPS))?;
        }
        Ok(Server {
            shared: Arc::new(Shared::new(self.handler, self.config, self.runtime)),
            sockets,
            listeners,
        })
    }
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

/// Stops a [`Server::serve`] from any thread, and reads the counters.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<dyn Control>);

trait Control: Send + Sync {
    fn stop(&self);
    fn snapshot(&self) -> ServerStats;
}

impl<H: Send + Sync> Control for Shared<H, Threads> {
    fn stop(&self) {
        self.stopping.raise();
    }
    fn snapshot(&self) -> ServerStats {
        self.registry.counters.snapshot()
    }
}

impl ShutdownHandle {
    /// Stops accepting; running transfers drain (see [`Server::serve`]).
    pub fn shutdown(&self) {
        self.0.stop();
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        self.0.snapshot()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShutdownHandle")
    }
}

impl<H> Server<H> {
    /// The bound listening addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        crate::net::local_addrs(&self.sockets)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.registry.counters.snapshot()
    }
}

impl<H: Handler> Server<H> {
    /// A handle that stops [`Server::serve`] and reads the counters.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Serves until [`ShutdownHandle::shutdown`]; then stops accepting, lets
    /// transfers finish for up to the drain timeout, aborts the rest (they get
    /// ERROR 0 "Server shutting down") and returns. If a listening socket
    /// fails, the server shuts down the same way and returns that error.
    pub fn serve(self) -> io::Result<()> {
        let Server {
            shared,
            sockets,
            listeners,
        } = self;
        let mut accepting = Vec::new();
        for (socket, listener) in sockets.into_iter().zip(listeners) {
            let shared = Arc::clone(&shared);
            let listening = Arc::new((socket, listener));
            shared.accept_started();
            accepting.push(std::thread::spawn(move || {
                let result = accept_loop(&shared, &listening);
                shared.accept_ended(result);
            }));
        }
        let stats = shared
            .registry
            .config
            .on_server_stats
            .clone()
            .map(|(interval, report)| {
                let shared = Arc::clone(&shared);
                let interval = interval.max(crate::server::MIN_STATS_INTERVAL);
                std::thread::spawn(move || {
                    let finished = || shared.finished.is_raised();
                    let mut next = std::time::Instant::now() + interval;
                    while !shared.finished.wait_blocking(finished, Some(next)) {
                        report(&shared.registry.counters.snapshot());
                        next += interval;
                    }
                })
            });
        shared
            .stopping
            .wait_blocking(|| shared.stopping.is_raised(), None);
        // No accept thread starts a session once the drain has begun (each
        // sees the signal within its receive timeout). In single-port mode
        // they carry the running sessions' datagrams until the drain ends.
        shared.stop();
        if shared.demux.is_none() {
            for t in accepting.drain(..) {
                let _ = t.join();
            }
        }
        let idle = || shared.idle();
        let drain = shared.registry.config.drain_timeout;
        if !shared.ended.wait_blocking(idle, deadline(drain)) {
            shared.aborting.raise();
            shared.ended.wait_blocking(idle, deadline(ABORT_GRACE));
        }
        shared.closed();
        for t in accepting {
            let _ = t.join();
        }
        shared.finished.raise();
        if let Some(t) = stats {
            let _ = t.join();
        }
        shared.outcome()
    }
}

/// `after` from now (none if that is too far to tell).
fn deadline(after: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(after)
}

/// A listening socket and its quinn-udp state, shared by its accept thread
/// and the sessions it starts (which answer "busy" from it when they
/// cannot get a socket of their own).
type Listening = (UdpSocket, Listener);

/// Sends the ERROR 0 "busy" answer to `request` from the listening socket.
fn reply_busy((socket, listener): &Listening, request: &Request) {
    let from = request.local.unwrap_or_else(|| listener.bound());
    let busy = busy_packet(&mut [0u8; 64]).to_vec();
    let _ = listener.send(socket.as_fd(), request.peer, from, &busy);
}

fn accept_loop<H: Handler>(
    shared: &Arc<Shared<H, Threads>>,
    listening: &Arc<Listening>,
) -> io::Result<()> {
    let (socket, listener) = (&listening.0, &listening.1);
    let mut buf = vec![0u8; LISTEN_BUFFER];
    let mut reply = [0u8; 128];
    while !shared.closing.is_raised() {
        let received = match listener.recv(socket.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let (peer, local) = (received.peer(), listener.local_for(&received));
        for datagram in received.datagrams(&buf) {
            let (request, mut ticket, route) =
                match shared.admit(datagram, (peer, local), &mut reply) {
                    Accepted::Start(request, ticket, route) => (request, ticket, route),
                    Accepted::Reply(len) => {
                        let answer = reply.get(..len).unwrap_or_default();
                        let _ = listener.send(socket.as_fd(), peer, local, answer);
                        continue;
                    }
                    Accepted::Ignore => continue,
                };
            let session_shared = Arc::clone(shared);
            let session_listening = Arc::clone(listening);
            // Kept to answer "busy" if the thread cannot start.
            let asked = Request::clone(&request);
            let mut thread = std::thread::Builder::new();
            if let Some(bytes) = shared.clock.runtime().stack_size {
                thread = thread.stack_size(bytes);
            }
            let spawned = thread.spawn(move || {
                let stats = run_session(
                    &session_shared,
                    &request,
                    session_listening,
                    &mut ticket,
                    route.as_ref(),
                );
                ticket.finish(&stats);
            });
            if let Err(e) = spawned {
                // The ticket went down with the closure: the session counts
                // as lost. The client is told, and the server goes on.
                tracing::warn!(error = %e, "cannot start a session thread");
                reply_busy(listening, &asked);
            }
        }
    }
    Ok(())
}

/// Runs `attempt` again while it fails for want of descriptors (see
/// [`DescriptorWait`]), on this thread.
fn while_out_of_descriptors<T>(mut attempt: impl FnMut() -> T, starving: impl Fn(&T) -> bool) -> T {
    let mut wait = DescriptorWait::new();
    loop {
        let result = attempt();
        let Some(pause) = wait.again(starving(&result)) else {
            return result;
        };
        std::thread::sleep(pause);
    }
}

/// Runs one transfer to its end on its own socket, or, with a `route`
/// (single-port mode), on the listening socket.
fn run_session<H: Handler>(
    shared: &Shared<H, Threads>,
    request: &Request,
    listening: Arc<Listening>,
    ticket: &mut Ticket,
    route: Option<&Route>,
) -> Stats {
    let (clock, config) = (&shared.clock, &shared.registry.config);
    let started = clock.now();
    let (socket, local) = match route {
        Some(route) => (None, Some(route.local())),
        None => {
            let bound = while_out_of_descriptors(
                || shared.bind_transfer(request),
                |b| b.as_ref().is_err_and(out_of_descriptors),
            );
            match bound {
                Ok(s) => {
                    let local = s.local_addr().ok();
                    (Some(s), local)
                }
                Err(e) => {
                    reply_busy(&listening, request);
                    return no_socket(request, &e, clock.now());
                }
            }
        }
    };
    // A session with a socket of its own needs the listening socket no
    // longer: it closes when its accept thread ends, not when the last
    // session does.
    let listening = route.and(Some(listening));
    let link = match (&socket, route, &listening) {
        (Some(socket), _, _) => Link::own(socket),
        (None, Some(route), Some(l)) => Ok(Link::shared(&l.0, l.1.bound(), route)),
        _ => Err(io::Error::other("no socket")),
    };
    // The file may not open for the same reason (DirHandler answers
    // ERROR 0 "busy" then): the same wait.
    let answer = while_out_of_descriptors(
        || match request.direction {
            Direction::Read => shared.handler.read(request).map(Granted::Read),
            Direction::Write => shared.handler.write(request).map(Granted::Write),
        },
        |a| a.as_ref().is_err_and(TftpError::is_busy),
    );
    let answer = Answer::Decided(answer);
    let (session, mut data) = open(request, config, answer, local, started, ticket);
    let kind = data.kind();
    let (mut io, sized) = match &mut data {
        Data::Source(s, size) => (Io::Source(&mut *s.0), size.is_some()),
        Data::Sink(w) => (Io::Upload(&mut *w.0), false),
        Data::None => (Io::None, false),
    };
    let mut driver = SessionDriver::new(session, kind, Some(ticket), executor(sized));
    let aborting = Some(&shared.aborting);
    let ran = link.and_then(|mut link| run(&mut driver, &mut link, &mut io, clock, aborting));
    if let Err(e) = ran {
        tracing::warn!(error = %e, "transfer socket failed");
    }
    driver.stats().clone()
}
