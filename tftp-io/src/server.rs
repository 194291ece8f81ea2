//! The one async server: listening sockets with one accept loop each, one
//! task and one fresh UDP socket per transfer (or, in single-port mode, the
//! listening socket, the accept loop routing each transfer's datagrams to
//! its task), limits, statistics and graceful shutdown, on any [`Runtime`].

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tftp_proto::options::Direction;
use tftp_proto::server::{Request, ServerSession, TftpError};
use tftp_proto::session::Session;
use tftp_proto::stats::ServerStats;

use crate::blocking::{executor, Threads};
use crate::config::{ServerBuilder, ABORT_GRACE, SESSION_THREAD_MIN_SIZE};
use crate::demux::Route;
use crate::driver::future::{bounded, run, wait_until, Io, Link, Watch, ASYNC};
use crate::driver::{deadline_for, threads, Clock, SessionDriver};
use crate::handler::{AsyncSink, AsyncSource, Handler, Source};
use crate::listen::{Listener, RecvBatch, LISTEN_BATCH};
use crate::registry::{Registry, Ticket};
use crate::runtime::{AsyncUdpSocket, Runtime, Serves, Timer};
use crate::session::{
    busy_packet, is_transient, no_socket, open, out_of_descriptors, Answer, Data, DescriptorWait,
    Granted,
};
use crate::shared::{Accepted, Shared};

/// A TFTP server on runtime `R` (see [`Server::builder`]).
pub struct Server<H, R: Serves<H>> {
    shared: Arc<Shared<R::Handler, R>>,
    sockets: Vec<std::net::UdpSocket>,
}

impl<H, R: Runtime + Serves<H>> Server<H, R> {
    /// Starts configuring a server with `handler` (a handler in the
    /// runtime's own I/O traits; see the adapter crate).
    pub fn builder(handler: H) -> ServerBuilder<H, R> {
        ServerBuilder::new(handler, R::default())
    }
}

impl<H, R: Runtime + Serves<H>> ServerBuilder<H, R> {
    /// Binds the listening sockets (registered with the runtime when
    /// [`Server::serve`] starts, so this works outside the runtime too).
    pub fn bind(mut self) -> io::Result<Server<H, R>> {
        let sockets = self.bind_sockets()?;
        Ok(Server {
            shared: Arc::new(Shared::new(
                R::handler(self.handler),
                self.config,
                self.runtime,
            )),
            sockets,
        })
    }
}

impl<H, R: Serves<H>> fmt::Debug for Server<H, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

/// Reads a running server's counters (e.g. for a metrics endpoint).
#[derive(Clone)]
pub struct StatsHandle(pub(crate) Arc<Registry>);

impl StatsHandle {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ServerStats {
        self.0.counters.snapshot()
    }

    /// Bytes of the server-wide memory budget the running sessions hold
    /// (see `ServerBuilder::max_memory`).
    pub fn memory_in_use(&self) -> usize {
        self.0.memory_in_use()
    }

    /// Sessions running on threads of their own now (see
    /// `ServerBuilder::session_threads`).
    pub fn session_threads(&self) -> usize {
        self.0.session_threads()
    }
}

impl fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StatsHandle")
            .field(&self.snapshot())
            .finish()
    }
}

impl<H, R: Serves<H>> Server<H, R> {
    /// The bound listening addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        crate::net::local_addrs(&self.sockets)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.registry.counters.snapshot()
    }

    /// A handle that reads the counters while the server runs.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared.registry))
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets running
    /// transfers finish for up to the drain timeout, aborts the rest (they get
    /// ERROR 0 "Server shutting down") and returns. If a listening socket
    /// fails (anything but a transient error), the server shuts down the same
    /// way and returns that error.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { shared, sockets } = self;
        // Dropping `serve` (a timeout, a select) stops the accept loops and the
        // periodic stats too; running sessions finish on their own.
        let _stop_on_drop = StopOnDrop(&shared);
        let runtime = shared.clock.runtime().clone();
        let mut wrapped = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let listener = Listener::new(&socket)?;
            wrapped.push(Arc::new(Listening {
                socket: runtime.wrap_listening(socket)?,
                listener,
            }));
        }
        for listening in wrapped {
            let shared = Arc::clone(&shared);
            shared.accept_started();
            runtime.spawn(async move {
                let result = accept_loop(&shared, &listening).await;
                drop(listening);
                shared.accept_ended(result);
            });
        }
        if let Some((interval, report)) = shared.registry.config.on_server_stats.clone() {
            let shared = Arc::clone(&shared);
            let rt = runtime.clone();
            let interval = interval.max(MIN_STATS_INTERVAL);
            runtime.spawn(async move {
                let runtime = rt;
                let mut next = runtime.now() + interval;
                let mut timer = runtime.timer(next);
                let finished = || shared.finished.is_raised();
                while !wait_until(&shared.finished, finished, Some(&mut timer)).await {
                    report(&shared.registry.counters.snapshot());
                    next += interval;
                    timer.reset(next);
                }
            });
        }
        {
            let stopped =
                wait_until::<R::Timer>(&shared.stopping, || shared.stopping.is_raised(), None);
            let (mut shutdown, mut stopped) = (pin!(shutdown), pin!(stopped));
            poll_fn(|cx| {
                if shutdown.as_mut().poll(cx).is_ready() || stopped.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
        // No accept loop starts a session once the drain has begun; their
        // sockets are closed when `serve` returns. In single-port mode they
        // carry the running sessions' datagrams until the drain ends.
        shared.stop();
        let not_accepting = || shared.not_accepting();
        if shared.demux.is_none() {
            wait_until::<R::Timer>(&shared.ended, not_accepting, None).await;
        }
        drain(&shared, &runtime).await;
        shared.closed();
        wait_until::<R::Timer>(&shared.ended, not_accepting, None).await;
        shared.outcome()
    }
}

/// Shortest interval of the periodic server statistics.
pub const MIN_STATS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Raises `stopping` and `finished` when `serve` returns or is dropped.
struct StopOnDrop<'a, H, R>(&'a Shared<H, R>);

impl<H, R> Drop for StopOnDrop<'_, H, R> {
    fn drop(&mut self) {
        self.0.stop();
        self.0.closed();
        self.0.finished.raise();
    }
}

/// Waits for running sessions for the drain timeout, then aborts the rest and
/// gives them a moment to send their ERROR.
async fn drain<H, R: Runtime>(shared: &Shared<H, R>, runtime: &R) {
    let idle = || shared.idle();
    let mut timer = runtime.timer(runtime.now() + shared.registry.config.drain_timeout);
    if !wait_until(&shared.ended, idle, Some(&mut timer)).await {
        shared.aborting.raise();
        timer.reset(runtime.now() + ABORT_GRACE);
        wait_until(&shared.ended, idle, Some(&mut timer)).await;
    }
}

/// A listening socket and its quinn-udp state, shared by its accept loop
/// and the sessions it starts: single-port sessions send on it, the others
/// answer "busy" from it when they cannot get a socket of their own.
struct Listening<S> {
    socket: S,
    listener: Listener,
}

impl<S: AsyncUdpSocket> Listening<S> {
    /// Sends `bytes` to `to` from `from`, the request's destination, without
    /// waiting: several tasks send on a listening socket (single-port
    /// sessions, "busy" answers), so none waits for its writability (see
    /// [`AsyncUdpSocket::try_send_with`]); an answer that would block is
    /// lost, as on a congested link.
    fn reply(&self, bytes: &[u8], to: SocketAddr, from: SocketAddr) {
        let mut send = |fd: BorrowedFd<'_>| self.listener.send(fd, to, from, bytes);
        if let Err(e) = self.socket.try_send_with(&mut send) {
            tracing::debug!(error = %e, %to, "answer from the listening socket not sent");
        }
    }
}

async fn accept_loop<H: Handler, R: Runtime>(
    shared: &Arc<Shared<H, R>>,
    listening: &Arc<Listening<R::Socket>>,
) -> io::Result<()> {
    let (socket, listener) = (&listening.socket, &listening.listener);
    // One byte more than allowed, to tell an oversized request.
    let keep = shared.registry.config.limits.max_request_size + 1;
    let mut batch = RecvBatch::new(LISTEN_BATCH, keep);
    let mut reply = [0u8; 128];
    let mut stop = Watch::default();
    loop {
        let received = poll_fn(|cx| {
            if stop.poll(&shared.closing, cx) {
                return Poll::Ready(None);
            }
            let mut recv = |fd: BorrowedFd<'_>| listener.recv_batch(fd, &mut batch);
            socket.poll_recv_with(cx, &mut recv).map(Some)
        })
        .await;
        match received {
            None => return Ok(()),
            Some(Ok(())) => {}
            Some(Err(e)) if is_transient(&e) => continue,
            Some(Err(e)) => return Err(e),
        }
        for (received, buf) in batch.received() {
            let (peer, local) = (received.peer(), listener.local_for(&received));
            for datagram in received.datagrams(buf) {
                match shared.admit(datagram, (peer, local), &mut reply) {
                    Accepted::Start(request, ticket, route) => {
                        let shared = Arc::clone(shared);
                        let listening = Arc::clone(listening);
                        shared.clock.runtime().clone().spawn(async move {
                            run_session(&shared, request, listening, ticket, route).await;
                        });
                    }
                    Accepted::Reply(len) => {
                        let answer = reply.get(..len).unwrap_or_default();
                        listening.reply(answer, peer, local);
                    }
                    Accepted::Ignore => {}
                }
            }
        }
    }
}

/// Runs `attempt` again while it fails for want of descriptors (see
/// [`DescriptorWait`]).
async fn while_out_of_descriptors<R: Runtime, T, F: Future<Output = T>>(
    clock: &Clock<R>,
    mut attempt: impl FnMut() -> F,
    starving: impl Fn(&T) -> bool,
) -> T {
    let mut wait = DescriptorWait::new();
    loop {
        let result = attempt().await;
        let Some(pause) = wait.again(starving(&result)) else {
            return result;
        };
        let mut timer = clock.runtime().timer(clock.runtime().now() + pause);
        poll_fn(|cx| timer.poll_expired(cx)).await;
    }
}

/// Runs one transfer to its end (on this task, or on a thread of its own:
/// see [`on_thread`]); its ticket ends with its statistics. A single-port
/// session (with a `route`) runs on the listening socket.
async fn run_session<H: Handler, R: Runtime>(
    shared: &Arc<Shared<H, R>>,
    request: Request,
    listening: Arc<Listening<R::Socket>>,
    ticket: Ticket,
    route: Option<Route>,
) {
    if let Some(route) = route {
        return run_single_port(shared, request, &listening, ticket, &route).await;
    }
    let clock = &shared.clock;
    let bind = || std::future::ready(shared.bind_transfer(&request));
    let bound =
        while_out_of_descriptors(clock, bind, |b| b.as_ref().is_err_and(out_of_descriptors)).await;
    let socket = match bound {
        Ok(s) => s,
        Err(e) => return no_socket_reply(Some(&listening), &request, &e, ticket, clock).await,
    };
    // The listening socket is needed no longer (but to say "busy" should
    // the runtime refuse the socket): it closes when its accept loop ends,
    // not when the last session does.
    let listening = Arc::downgrade(&listening);
    let local = socket.local_addr().ok();
    let (session, data, ticket) = Box::pin(start_session(shared, &request, local, ticket)).await;
    let (session, mut data, socket, ticket) = match on_thread(shared, session, data, socket, ticket)
    {
        Ok(()) => return,
        Err(kept) => *kept,
    };
    let socket = match clock.runtime().wrap_udp(socket) {
        Ok(s) => s,
        Err(e) => {
            let listening = listening.upgrade();
            return no_socket_reply(listening.as_deref(), &request, &e, ticket, clock).await;
        }
    };
    drive(shared, session, &mut data, &mut Link::Own(&socket), ticket).await;
}

/// Runs a single-port session to its end on the listening socket.
async fn run_single_port<H: Handler, R: Runtime>(
    shared: &Arc<Shared<H, R>>,
    request: Request,
    listening: &Listening<R::Socket>,
    ticket: Ticket,
    route: &Route,
) {
    let local = Some(route.local());
    let (session, mut data, ticket) =
        Box::pin(start_session(shared, &request, local, ticket)).await;
    let mut link = Link::shared(&listening.socket, listening.listener.bound(), route);
    drive(shared, session, &mut data, &mut link, ticket).await;
}

/// Runs `session` to its end on `link`; `ticket` ends with its statistics.
async fn drive<R: Runtime>(
    shared: &Shared<impl Handler, R>,
    session: ServerSession,
    data: &mut Data<AsyncSource, AsyncSink>,
    link: &mut Link<'_, R::Socket>,
    mut ticket: Ticket,
) {
    let kind = data.kind();
    let mut io = match data {
        Data::Source(s, _) => Io::Source(s.reader()),
        Data::Sink(w) => Io::Upload(w.0.as_mut()),
        Data::None => Io::None,
    };
    let mut driver = SessionDriver::new(session, kind, Some(&mut ticket), ASYNC);
    run(
        &mut driver,
        link,
        &mut io,
        &shared.clock,
        Some(&shared.aborting),
    )
    .await;
    let stats = driver.stats().clone();
    drop(driver);
    // The source or sink goes before the end is reported: an upload that
    // did not complete has removed its temporary file by then.
    *data = Data::None;
    ticket.finish(&stats);
}

/// Asks the handler for `request` within the session's budget and opens
/// the session on `local`.
///
/// Boxed where it is awaited: the handler's future (an origin's, say) is
/// then held only while it runs, not for the whole session in the
/// session's own future.
async fn start_session<H: Handler, R: Runtime>(
    shared: &Shared<H, R>,
    request: &Request,
    local: Option<SocketAddr>,
    mut ticket: Ticket,
) -> (ServerSession, Data<AsyncSource, AsyncSink>, Ticket) {
    let (clock, config) = (&shared.clock, &shared.registry.config);
    let started = clock.now();
    // The file may not open for the same reason (DirHandler answers
    // ERROR 0 "busy" then): the same wait.
    let asking = while_out_of_descriptors(
        clock,
        || async {
            match request.direction {
                Direction::Read => shared.handler.read(request).await.map(Granted::Read),
                Direction::Write => shared.handler.write(request).await.map(Granted::Write),
            }
        },
        |a| a.as_ref().is_err_and(TftpError::is_busy),
    );
    // The handler's wait (an origin's headers, a queue for an origin
    // request) is the session's: its peer has not answered yet, so it
    // ends with the unverified lifetime, on eviction and on abort.
    let deadline = deadline_for(&config.limits, false, started, started);
    let waited = bounded(
        asking,
        clock,
        deadline,
        &shared.aborting,
        ticket.cancel_signal(),
    )
    .await;
    let answer = Answer::from_wait(waited, request);
    // The session starts when its request was taken: its unverified
    // lifetime counts the handler's wait too.
    let (session, data) = open(request, config, answer, local, started, &mut ticket);
    (session, data, ticket)
}

/// A request without a socket of its own (out of descriptors or ports):
/// its client hears "busy" from the listening socket instead of silence
/// (if that is still open).
async fn no_socket_reply<S: AsyncUdpSocket, R: Runtime>(
    listening: Option<&Listening<S>>,
    request: &Request,
    e: &io::Error,
    ticket: Ticket,
    clock: &Clock<R>,
) {
    if let Some(listening) = listening {
        let from = request.local.unwrap_or_else(|| listening.listener.bound());
        listening.reply(busy_packet(&mut [0u8; 64]), request.peer, from);
    }
    ticket.finish(&no_socket(request, e, clock.now()));
}

/// What a session starts with.
type Start = (
    ServerSession,
    Data<AsyncSource, AsyncSink>,
    std::net::UdpSocket,
    Ticket,
);

/// Moves a lock-step session of a [`DirHandler`](crate::DirHandler) file
/// of at least [`SESSION_THREAD_MIN_SIZE`] bytes to a thread of its own,
/// while fewer than [`ServerConfig::session_threads`] are (see
/// [`ServerBuilder::session_threads`](crate::ServerBuilder::session_threads)),
/// and runs it there with the threads executor: `Ok` when it went.
/// Anything else, or a thread that cannot start, comes back.
fn on_thread<H: Handler, R: Runtime>(
    shared: &Arc<Shared<H, R>>,
    session: ServerSession,
    data: Data<AsyncSource, AsyncSink>,
    socket: std::net::UdpSocket,
    ticket: Ticket,
) -> Result<(), Box<Start>> {
    let lock_step = session.stats().options_negotiated.windowsize.unwrap_or(1) == 1;
    let (file, size, slot) = match data {
        Data::Source(AsyncSource(Source::File(file)), Some(size))
            if lock_step && size >= SESSION_THREAD_MIN_SIZE =>
        {
            match shared.registry.session_thread() {
                Some(slot) => (file, size, slot),
                None => {
                    let data = Data::Source(AsyncSource(Source::File(file)), Some(size));
                    return Err(Box::new((session, data, socket, ticket)));
                }
            }
        }
        data => return Err(Box::new((session, data, socket, ticket))),
    };
    // The job stays reachable from here, so that a thread that cannot
    // start gives it back.
    let job = Arc::new(Mutex::new(Some((session, file, socket, ticket))));
    let (taken, thread_shared) = (Arc::clone(&job), Arc::clone(shared));
    let spawned = shared.clock.runtime().spawn_blocking(move || {
        let Some((session, mut file, socket, mut ticket)) = lock(&taken).take() else {
            return;
        };
        let clock = thread_shared.clock.with_time(Threads::default());
        let kind = crate::driver::Data::Source(Some(size));
        let mut driver = SessionDriver::new(session, kind, Some(&mut ticket), executor(true));
        let mut io = threads::Io::Source(&mut file);
        let aborting = Some(&thread_shared.aborting);
        let ran = threads::Link::own(&socket)
            .and_then(|mut link| threads::run(&mut driver, &mut link, &mut io, &clock, aborting));
        if let Err(e) = ran {
            tracing::warn!(error = %e, "transfer socket failed");
        }
        let stats = driver.stats().clone();
        drop(driver);
        // The place is back before the session's end is reported.
        drop(slot);
        ticket.finish(&stats);
    });
    match spawned {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a session thread; the session stays on the runtime");
            let kept = lock(&job).take();
            kept.map_or(Ok(()), |(session, file, socket, ticket)| {
                let data = Data::Source(AsyncSource(Source::File(file)), Some(size));
                Err(Box::new((session, data, socket, ticket)))
            })
        }
    }
}

/// The job of [`on_thread`], however its lock was left.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
