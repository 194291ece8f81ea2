//! The same server and client on std sockets and threads: one accept thread
//! per listening socket, one thread per transfer (bounded by the session
//! limit), socket read timeouts from the core's deadlines. `tftp-blocking`
//! re-exports this module.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tftp_proto::failure::Failure;
use tftp_proto::options::Direction;
use tftp_proto::server::{Admit, Request};
use tftp_proto::session::{Batch, Output, Session};
use tftp_proto::stats::{Outcome, ServerStats, Stats};
use tftp_proto::time::Instant;

use crate::config::{ServerBuilder, ABORT_GRACE};
use crate::error::ClientError;
use crate::handler::{ReadResponse, TftpError, WriteResponse};
use crate::listen::{Listener, LISTEN_BUFFER};
use crate::net::{bind_transfer, random_seed};
use crate::readahead::ReadAhead;
use crate::registry::{Registry, Ticket};
use crate::session::{
    busy_packet, is_transient, no_socket, note_verified, open, out_of_descriptors,
    report_delivered, report_filled, Data, Granted, DESCRIPTOR_TRIES, DESCRIPTOR_WAIT,
};
use crate::Client;

/// The "runtime" of the blocking server and client: std threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Threads {
    /// Stack size of each session thread (`None`: std's default).
    stack_size: Option<usize>,
}

/// How often a blocked thread looks at the stop flags.
const POLL_STOPS: Duration = Duration::from_millis(100);

/// Any [`Read`], boxed: the source of a blocking [`ReadResponse`].
pub struct StdSource(Box<dyn Read + Send>);

impl<R: Read + Send + 'static> From<R> for StdSource {
    fn from(source: R) -> Self {
        StdSource(Box::new(source))
    }
}

impl crate::handler::FromBytes for StdSource {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        StdSource::from(io::Cursor::new(bytes))
    }
}

/// Where an upload's bytes go: a [`Write`] (flushed per block) that is told
/// when the transfer completed.
pub trait Sink: Write + Send {
    /// The transfer completed (called once, only on success).
    fn complete(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// A boxed [`Sink`]: the sink of a blocking [`WriteResponse`]. Any [`Write`]
/// converts into one (completing it only flushes).
pub struct StdSink(Box<dyn Sink>);

struct Plain<W>(W);

impl<W: Write + Send> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Sink for Plain<W> {}

impl<W: Write + Send + 'static> From<W> for StdSink {
    fn from(sink: W) -> Self {
        StdSink(Box::new(Plain(sink)))
    }
}

impl WriteResponse<StdSink> {
    /// A [`Sink`] that is told when the upload completed.
    pub fn from_sink(sink: impl Sink + 'static) -> Self {
        WriteResponse {
            sink: StdSink(Box::new(sink)),
            limits: None,
        }
    }
}

/// Decides what each request gets. It runs on the session's own thread, never
/// on the accept thread, so a slow backend delays only its own client.
///
/// A request may be asked again: an answer of exactly ERROR 0
/// [`SOCKET_ERROR`](crate::SOCKET_ERROR) ("busy", DirHandler's answer when
/// the process is out of descriptors) is retried every 20 ms for up to
/// [`DESCRIPTOR_WAIT`] before the client hears it.
pub trait Handler: Send + Sync + 'static {
    /// A read request (RRQ).
    fn read(&self, request: &Request) -> Result<ReadResponse<StdSource>, TftpError>;

    /// A write request (WRQ). Refused with ERROR 2 unless implemented.
    fn write(&self, request: &Request) -> Result<WriteResponse<StdSink>, TftpError> {
        let _ = request;
        Err(crate::handler::writes_refused())
    }
}

/// Where file bytes come from or go to.
enum Io<'a> {
    /// A source, and whether its size is known: only then is it read
    /// ahead while the session waits (a stream's read may block, and the
    /// session must go on answering meanwhile).
    Source(&'a mut (dyn Read + Send), bool),
    /// A caller's writer: flushed at the end.
    Download(&'a mut (dyn Write + Send)),
    /// A server's upload: completed (committed) at the end.
    Upload(&'a mut dyn Sink),
    None,
}

/// The clock of a blocking session: `std::time::Instant` from an epoch.
#[derive(Clone, Copy, Debug)]
struct Clock(std::time::Instant);

impl Clock {
    fn new() -> Self {
        Clock(std::time::Instant::now())
    }

    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// The driving loop on a blocking socket; `abort`, when raised, ends the
/// session with ERROR 0 "Server shutting down". A server session's `ticket`
/// hears when its peer is verified, and its cancel signal ends the session
/// silently.
fn drive<S: Session + ?Sized>(
    session: &mut S,
    socket: &UdpSocket,
    io: &mut Io<'_>,
    clock: Clock,
    buf: &mut [u8],
    mut abort: Option<&Stops>,
    mut ticket: Option<&mut Ticket>,
) -> io::Result<Outcome> {
    socket.set_nonblocking(false)?;
    session.set_batch(crate::udp::batch_for(session.stats().peer));
    // The receive timeout last set: changed only when it would wait past the
    // deadline or is far shorter than the wait (not once per block).
    let mut timeout_set: Option<Duration> = None;
    let mut read_ahead: Option<ReadAhead> = None;
    loop {
        match session.poll(clock.now()) {
            Output::Transmit {
                to,
                bytes,
                segment_size,
            } => match crate::udp::send(socket.as_fd(), to, bytes, segment_size) {
                Ok(true) => {}
                Ok(false) => session.set_batch(Batch::ONE),
                Err(e) => tracing::debug!(%to, error = %e, "send failed"),
            },
            Output::Fill(out) => {
                if read_ahead.is_none() {
                    read_ahead = ReadAhead::for_session(ticket.as_deref_mut(), out.len());
                }
                let result = match (&mut *io, &mut read_ahead) {
                    (Io::Source(source, _), Some(ra)) => ra.fill_from(&mut **source, out),
                    (Io::Source(source, _), None) => read_full(&mut **source, out),
                    _ => Err(io::Error::other("no source")),
                };
                report_filled(session, result);
            }
            Output::Deliver(bytes) => {
                let result = match io {
                    Io::Download(sink) => sink.write_all(bytes).and_then(|()| sink.flush()),
                    Io::Upload(sink) => sink.write_all(bytes).and_then(|()| sink.flush()),
                    _ => Err(io::Error::other("no sink")),
                };
                report_delivered(session, result);
            }
            Output::Finish => {
                let result = match io {
                    Io::Download(sink) => sink.flush(),
                    Io::Upload(sink) => sink.complete(),
                    _ => Ok(()),
                };
                report_delivered(session, result);
            }
            Output::Verified => {
                if let Some(t) = ticket.as_deref_mut() {
                    note_verified(session, t);
                }
            }
            Output::Wait(deadline) => {
                if abort.is_some_and(|s| s.is_aborting()) {
                    abort = None;
                    session.fail(Failure::ShuttingDown);
                    continue;
                }
                if ticket
                    .as_deref()
                    .is_some_and(|t| t.cancel_signal().is_raised())
                {
                    ticket = None;
                    session.cancel();
                    continue;
                }
                // Read what the next blocks need now, not after the peer's
                // answer (which waits in the socket meanwhile): one read of
                // a source of known size.
                if let (Io::Source(source, true), Some(ra)) = (&mut *io, &mut read_ahead) {
                    ra.top_up_from(&mut **source);
                }
                let now = clock.now();
                if deadline <= now {
                    session.handle_timeout(now);
                    continue;
                }
                let mut wait = deadline - now;
                if abort.is_some() || ticket.is_some() {
                    wait = wait.min(POLL_STOPS);
                }
                let wait = wait.max(Duration::from_micros(1));
                if timeout_set.is_none_or(|t| t > wait || t < wait / 2) {
                    socket.set_read_timeout(Some(wait))?;
                    timeout_set = Some(wait);
                }
                match socket.recv_from(buf) {
                    Ok((n, from)) => {
                        let datagram = buf.get(..n).unwrap_or_default();
                        session.handle_datagram(clock.now(), from, datagram);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        let now = clock.now();
                        if now >= deadline {
                            session.handle_timeout(now);
                        }
                    }
                    // ICMP errors and interruptions: wait again.
                    Err(e) => tracing::trace!(error = %e, "recv failed"),
                }
            }
            Output::Done(outcome) => return Ok(outcome),
        }
    }
}

/// Reads until `buf` is full or the source ends.
pub(crate) fn read_full(source: &mut (dyn Read + Send), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match source.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

// ------------------------------------------------------------------ server

/// The blocking server's flags, behind one lock with a condition variable.
#[derive(Debug, Default)]
struct Flags {
    stopping: bool,
    aborting: bool,
    /// `serve` is returning: the periodic stats end.
    finished: bool,
    failure: Option<io::Error>,
}

/// Stop flags and the wake-up for waiters (shutdown, session ends).
#[derive(Debug, Default)]
struct Stops {
    flags: Mutex<Flags>,
    changed: Condvar,
    /// `flags.aborting`, readable without the lock on every wait.
    aborting: AtomicBool,
}

impl Stops {
    fn update(&self, f: impl FnOnce(&mut Flags)) {
        f(&mut self.flags.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    fn read<T>(&self, f: impl FnOnce(&Flags) -> T) -> T {
        f(&self.flags.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn is_stopping(&self) -> bool {
        self.read(|f| f.stopping)
    }

    fn is_aborting(&self) -> bool {
        self.aborting.load(Ordering::Acquire)
    }

    fn abort(&self) {
        self.aborting.store(true, Ordering::Release);
        self.update(|f| f.aborting = true);
    }

    /// Waits until `done()` or `timeout`; true if done.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&Flags) -> bool) -> bool {
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut flags = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&flags) {
            let wait = match deadline {
                None => POLL_STOPS,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
            };
            flags = self
                .changed
                .wait_timeout(flags, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

struct Shared<H> {
    handler: H,
    registry: Arc<Registry>,
    stops: Stops,
    clock: Clock,
    stack_size: Option<usize>,
}

/// A TFTP server on std sockets and threads (see [`Server::builder`]).
pub struct Server<H> {
    shared: Arc<Shared<H>>,
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
            shared: Arc::new(Shared {
                handler: self.handler,
                registry: Registry::new(self.config),
                stops: Stops::default(),
                clock: Clock::new(),
                stack_size: self.runtime.stack_size,
            }),
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

impl<H: Send + Sync> Control for Shared<H> {
    fn stop(&self) {
        self.stops.update(|f| f.stopping = true);
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
            accepting.push(std::thread::spawn(move || {
                if let Err(e) = accept_loop(&shared, &listening) {
                    tracing::error!(error = %e, "listening socket failed; shutting down");
                    shared.stops.update(|f| {
                        f.stopping = true;
                        f.failure.get_or_insert(e);
                    });
                }
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
                    while !shared.stops.wait_until(interval, |f| f.finished) {
                        report(&shared.registry.counters.snapshot());
                    }
                })
            });
        shared.stops.wait_until(Duration::MAX, |f| f.stopping);
        // No accept thread may start a session once the drain has begun
        // (each sees the flag within its receive timeout).
        for t in accepting {
            let _ = t.join();
        }
        let counters = &shared.registry.counters;
        let drain = shared.registry.config.drain_timeout;
        if !shared.stops.wait_until(drain, |_| counters.active() == 0) {
            shared.stops.abort();
            shared
                .stops
                .wait_until(ABORT_GRACE, |_| counters.active() == 0);
        }
        shared.stops.update(|f| f.finished = true);
        if let Some(t) = stats {
            let _ = t.join();
        }
        let failure = shared
            .stops
            .flags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure
            .take();
        failure.map_or(Ok(()), Err)
    }
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

fn accept_loop<H: Handler>(shared: &Arc<Shared<H>>, listening: &Arc<Listening>) -> io::Result<()> {
    let (socket, listener) = (&listening.0, &listening.1);
    let mut buf = vec![0u8; LISTEN_BUFFER];
    // One byte more than allowed, to tell an oversized request.
    let keep = shared.registry.config.limits.max_request_size + 1;
    let mut reply = [0u8; 128];
    while !shared.stops.is_stopping() {
        let received = match listener.recv(socket.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let (peer, local) = (received.peer(), listener.local_for(&received));
        for datagram in received.datagrams(&buf) {
            let datagram = datagram.get(..keep).unwrap_or(datagram);
            let (request, key) = match shared
                .registry
                .on_datagram(datagram, peer, local, &mut reply)
            {
                Admit::Start { request, key, .. } => (request, key),
                Admit::Reply(len) => {
                    let answer = reply.get(..len).unwrap_or_default();
                    let _ = listener.send(socket.as_fd(), peer, local, answer);
                    continue;
                }
                Admit::Ignore => continue,
            };
            let notify = Arc::clone(shared);
            let mut ticket = Ticket::new(Arc::clone(&shared.registry), key, move || {
                notify.stops.update(|_| {})
            });
            let session_shared = Arc::clone(shared);
            let session_listening = Arc::clone(listening);
            // Kept to answer "busy" if the thread cannot start.
            let asked = Request::clone(&request);
            let mut thread = std::thread::Builder::new();
            if let Some(bytes) = shared.stack_size {
                thread = thread.stack_size(bytes);
            }
            let spawned = thread.spawn(move || {
                let stats = run_session(&session_shared, &request, session_listening, &mut ticket);
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

/// Runs `attempt` until `starving` says its result is not for want of
/// descriptors, at most [`DESCRIPTOR_TRIES`] more times within
/// [`DESCRIPTOR_WAIT`] (the async server's wait, on this thread).
fn while_out_of_descriptors<T>(mut attempt: impl FnMut() -> T, starving: impl Fn(&T) -> bool) -> T {
    let mut result = attempt();
    for _ in 0..DESCRIPTOR_TRIES {
        if !starving(&result) {
            break;
        }
        std::thread::sleep(DESCRIPTOR_WAIT / DESCRIPTOR_TRIES);
        result = attempt();
    }
    result
}

fn run_session<H: Handler>(
    shared: &Shared<H>,
    request: &Request,
    listening: Arc<Listening>,
    ticket: &mut Ticket,
) -> Stats {
    let clock = shared.clock;
    let config = &shared.registry.config;
    let local_ip = request.local.map_or(request.peer.ip(), |l| l.ip());
    let bound = while_out_of_descriptors(
        || bind_transfer(local_ip, config.port_range, random_seed()),
        |b| b.as_ref().is_err_and(out_of_descriptors),
    );
    let socket = match bound {
        // The listening socket closes when its accept thread ends, not when
        // the last session does.
        Ok(s) => {
            drop(listening);
            s
        }
        Err(e) => {
            reply_busy(&listening, request);
            return no_socket(request, &e, clock.now());
        }
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
    let local = socket.local_addr().ok();
    let (mut session, mut data) = open(request, config, answer, local, clock.now(), ticket);
    let mut io = match &mut data {
        Data::Source(s, sized) => Io::Source(&mut *s.0, *sized),
        Data::Sink(w) => Io::Upload(&mut *w.0),
        Data::None => Io::None,
    };
    let mut buf = vec![0u8; session.max_datagram()];
    if let Err(e) = drive(
        &mut session,
        &socket,
        &mut io,
        clock,
        &mut buf,
        Some(&shared.stops),
        Some(ticket),
    ) {
        tracing::warn!(error = %e, "transfer socket failed");
    }
    session.stats().clone()
}

// ------------------------------------------------------------------ client

impl Client<Threads> {
    /// Downloads `remote` into `sink`; returns after the dally.
    pub fn get(
        &self,
        remote: impl AsRef<[u8]>,
        sink: &mut (dyn Write + Send),
    ) -> Result<Stats, ClientError> {
        let socket = self.std_socket()?;
        let clock = Clock::new();
        let mut session = self.get_session(remote.as_ref(), clock.now())?;
        let mut buf = vec![0u8; session.max_datagram()];
        let outcome = drive(
            &mut session,
            &socket,
            &mut Io::Download(sink),
            clock,
            &mut buf,
            None,
            None,
        )?;
        ClientError::check(outcome, session.stats().clone())
    }

    /// Uploads `source` as `remote`; `size` is announced with `tsize` when
    /// asked for and known.
    pub fn put(
        &self,
        remote: impl AsRef<[u8]>,
        source: &mut (dyn Read + Send),
        size: Option<u64>,
    ) -> Result<Stats, ClientError> {
        let socket = self.std_socket()?;
        let clock = Clock::new();
        let mut session = self.put_session(remote.as_ref(), size, clock.now())?;
        let mut buf = vec![0u8; session.max_datagram()];
        let outcome = drive(
            &mut session,
            &socket,
            &mut Io::Source(source, size.is_some()),
            clock,
            &mut buf,
            None,
            None,
        )?;
        ClientError::check(outcome, session.stats().clone())
    }
}

/// Downloads `remote` from `server` into `sink` with `blksize` 1468,
/// `windowsize` 16 and `tsize`, falling back to what the server supports.
pub fn fetch(
    server: SocketAddr,
    remote: impl AsRef<[u8]>,
    sink: &mut (dyn Write + Send),
) -> Result<Stats, ClientError> {
    Client::<Threads>::new(server)
        .blksize(1468)
        .windowsize(16)
        .tsize(true)
        .get(remote, sink)
}
