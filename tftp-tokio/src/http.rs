//! HTTP for the stages after TFTP: the same [`Handler`] served read-only
//! over HTTP/1.1 (feature `http`).
//!
//! Network boot loads a small first stage over TFTP (iPXE, GRUB, a UEFI
//! loader) that fetches kernels and initrds over HTTP at line rate. An
//! [`HttpServer`] answers `GET` and `HEAD` of the names the TFTP side
//! would serve, through the same handler: the URL's path, percent-decoded
//! and without its leading `/`, becomes an octet-mode read request from the
//! client's address (so per-client roots, remap rules and an origin with
//! its single-flight cache behave as they do for TFTP), and the response's
//! source is streamed with backpressure: never more than one
//! [`HTTP_CHUNK`] of it in memory per connection.
//!
//! What a client gets:
//! - `Content-Length` when the source's size is known (else chunked);
//! - a single `Range` (`bytes=a-b`, `a-`, `-n`) as 206, 416 when it
//!   starts past the end; several ranges, or a malformed header, get the
//!   whole file (RFC 9110 lets a server ignore them); `If-Range`;
//! - `Last-Modified` and an `ETag` (modification time and size) when the
//!   source has a modification time
//!   ([`ReadResponse::with_modified`](tftp_io::ReadResponse::with_modified):
//!   files from [`DirHandler`](crate::DirHandler), objects from tftp-origin
//!   whose origin gives one), with `If-None-Match` and
//!   `If-Modified-Since` answered 304;
//! - the handler's refusals as statuses: not found 404, access violation
//!   403, busy 503 with `Retry-After`, a malformed name 400, other 500; a
//!   handler that does not answer within the idle time 504;
//! - any other method 405.
//!
//! Limits, each with a default and a builder method:
//! - connections at once ([`DEFAULT_HTTP_MAX_CONNECTIONS`]) and per client
//!   ([`DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER`]; a client is an IPv4
//!   address or an IPv6 /64, IPv4-mapped counting as IPv4, as for TFTP);
//!   past either the connection gets a 503 and is closed;
//! - request heads of at most [`DEFAULT_HTTP_MAX_HEADER_BYTES`] that arrive
//!   within [`DEFAULT_HTTP_HEADER_TIMEOUT`] (also how long an idle
//!   keep-alive connection is kept: hyper's head timer runs while it waits
//!   for the next request);
//! - a connection on which nothing moves either way for
//!   [`DEFAULT_HTTP_IDLE_TIMEOUT`] (a stalled reader) is closed, and a
//!   handler that has not answered by then gets a 504;
//! - an answer its client takes slower than the minimum rate on average
//!   (TFTP's [`DEFAULT_MIN_RATE`] after [`DEFAULT_MIN_RATE_GRACE`]) is cut;
//! - at shutdown, answers being sent may go on for the drain time
//!   ([`DEFAULT_DRAIN_TIMEOUT`]);
//! - a failed accept (out of descriptors) pauses accepting for
//!   [`HTTP_ACCEPT_BACKOFF`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use tftp_tokio::http::HttpServer;
//! use tftp_tokio::{DirHandler, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let handler = Arc::new(DirHandler::new("/srv/tftp")?);
//! let tftp = Server::builder(handler.clone())
//!     .listen("0.0.0.0:69".parse().unwrap())
//!     .bind()?;
//! let http = HttpServer::builder(handler)
//!     .on_request_end(|s| println!("{} {} {}", s.peer, s.path_lossy(), s.status))
//!     .build();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:80").await?;
//! let (tftp_done, http_done) = tokio::join!(
//!     tftp.serve(async { tokio::signal::ctrl_c().await.ok(); }),
//!     http.serve(vec![listener], async { tokio::signal::ctrl_c().await.ok(); }),
//! );
//! tftp_done?;
//! http_done
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tftp_io::http as rules;
use tftp_io::tftp_proto::options::{DEFAULT_MIN_RATE, DEFAULT_MIN_RATE_GRACE};
use tftp_io::tftp_proto::server::{PeerKey, DEFAULT_IPV6_PEER_PREFIX};
use tftp_io::AsyncSource;
use tftp_io::DEFAULT_DRAIN_TIMEOUT;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::handler::{Handler, Source};

/// Default most HTTP connections served at once.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;
/// Default most HTTP connections at once from one client address.
pub const DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER: usize = 16;
/// Default largest request head (request line and headers); hyper's
/// smallest read buffer, so also the least a limit can be.
pub const DEFAULT_HTTP_MAX_HEADER_BYTES: usize = 8192;
/// Default time a client has to send a request head.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may go without a byte moving either way (and
/// a handler may take to answer) before it is closed.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest piece of a response body read from its source at a time: the
/// most of a body a connection holds.
pub const HTTP_CHUNK: usize = 64 * 1024;
/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS) before the next.
pub const HTTP_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Chunks read and dropped (the start of a range of a source that cannot
/// seek) in one poll at most.
const SKIP_PER_POLL: usize = 16;

/// Sent to a connection over a limit before it is closed.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";

/// How an HTTP request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpOutcome {
    /// The whole answer was handed to the connection (a body, a 304, a
    /// `HEAD`).
    Completed,
    /// Answered with an error status (4xx, 5xx) and no content.
    Refused,
    /// The body stopped short: the client went away or stalled, or the
    /// source failed.
    Aborted,
}

/// One HTTP request, reported when it ends (the HTTP counterpart of
/// [`tftp_proto::stats::Stats`](crate::tftp_proto::stats::Stats)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpStats {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The local address the connection came to.
    pub local: Option<SocketAddr>,
    /// `GET`, `HEAD`, or the method refused.
    pub method: Method,
    /// The name asked for: the URL's path, percent-decoded, without its
    /// leading `/` (bytes: not assumed UTF-8).
    pub path: Vec<u8>,
    /// The status answered.
    pub status: u16,
    /// The byte range served (first and last byte), for a 206.
    pub range: Option<(u64, u64)>,
    /// The source's size, when known.
    pub size: Option<u64>,
    /// Body bytes handed to the connection.
    pub bytes_sent: u64,
    /// How it ended.
    pub outcome: HttpOutcome,
    /// Why it was refused or aborted, when it was.
    pub error: Option<String>,
    /// From the request head to the end.
    pub duration: Duration,
}

impl HttpStats {
    /// The name as text (invalid UTF-8 replaced).
    pub fn path_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }
}

/// Counters of an [`HttpServer`] since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpServerStats {
    /// Connections accepted and served.
    pub connections: u64,
    /// Connections closed at once for being over a connection limit.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Failed accepts (out of descriptors, ...).
    pub accept_errors: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests whose answer was handed over whole.
    pub completed: u64,
    /// Requests answered with an error status.
    pub refused: u64,
    /// Bodies that stopped short.
    pub aborted: u64,
    /// Body bytes sent.
    pub bytes_sent: u64,
}

type Callback = Arc<dyn Fn(&HttpStats) + Send + Sync>;

/// Configures an [`HttpServer`].
pub struct HttpServerBuilder<H> {
    handler: Arc<H>,
    limits: HttpLimits,
    on_end: Option<Callback>,
}

#[derive(Clone, Copy, Debug)]
struct HttpLimits {
    max_connections: usize,
    max_connections_per_peer: usize,
    max_header_bytes: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    min_rate: u32,
    min_rate_grace: Duration,
    drain_timeout: Duration,
    ipv6_peer_prefix: u8,
}

impl<H: Handler> HttpServerBuilder<H> {
    /// Most connections at once (default
    /// [`DEFAULT_HTTP_MAX_CONNECTIONS`], at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n.max(1);
        self
    }

    /// Most connections at once from one client address (default
    /// [`DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER`], at least 1).
    pub fn max_connections_per_peer(mut self, n: usize) -> Self {
        self.limits.max_connections_per_peer = n.max(1);
        self
    }

    /// Largest request head (default and least
    /// [`DEFAULT_HTTP_MAX_HEADER_BYTES`]); a larger one gets 431.
    pub fn max_header_bytes(mut self, n: usize) -> Self {
        self.limits.max_header_bytes = n.max(DEFAULT_HTTP_MAX_HEADER_BYTES);
        self
    }

    /// Time to send a request head (default [`DEFAULT_HTTP_HEADER_TIMEOUT`]).
    pub fn header_timeout(mut self, t: Duration) -> Self {
        self.limits.header_timeout = t;
        self
    }

    /// Time a connection may go with nothing moving, and a handler may take
    /// to answer (default [`DEFAULT_HTTP_IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.limits.idle_timeout = t;
        self
    }

    /// Slowest answer kept, in bytes per second on average since it
    /// started, once it has run `grace` (default [`DEFAULT_MIN_RATE`] after
    /// [`DEFAULT_MIN_RATE_GRACE`], as for TFTP transfers; 0: no minimum).
    /// Checked while the client is not taking what is sent.
    pub fn min_rate(mut self, bytes_per_second: u32, grace: Duration) -> Self {
        self.limits.min_rate = bytes_per_second;
        self.limits.min_rate_grace = grace;
        self
    }

    /// How long the answers being sent may go on after shutdown starts
    /// (default [`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn drain_timeout(mut self, t: Duration) -> Self {
        self.limits.drain_timeout = t;
        self
    }

    /// IPv6 clients are counted by this prefix for the per-client limit
    /// (default [`DEFAULT_IPV6_PEER_PREFIX`], a /64, as for TFTP: a host
    /// may use any address of its own /64); IPv4-mapped addresses count as
    /// IPv4.
    pub fn ipv6_peer_prefix(mut self, bits: u8) -> Self {
        self.limits.ipv6_peer_prefix = bits.min(128);
        self
    }

    /// Called with each request's [`HttpStats`] when it ends.
    pub fn on_request_end(mut self, f: impl Fn(&HttpStats) + Send + Sync + 'static) -> Self {
        self.on_end = Some(Arc::new(f));
        self
    }

    /// The server, ready to [`serve`](HttpServer::serve).
    pub fn build(self) -> HttpServer<H> {
        HttpServer {
            inner: Arc::new(Inner {
                handler: self.handler,
                limits: self.limits,
                on_end: self.on_end,
                peers: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }
}

/// Serves a [`Handler`] over HTTP: see the [module](self) docs.
pub struct HttpServer<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for HttpServer<H> {
    fn clone(&self) -> Self {
        HttpServer {
            inner: self.inner.clone(),
        }
    }
}

impl<H> fmt::Debug for HttpServer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

struct Inner<H> {
    handler: Arc<H>,
    limits: HttpLimits,
    on_end: Option<Callback>,
    peers: Mutex<HashMap<PeerKey, usize>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    connections_refused: AtomicU64,
    connections_active: AtomicUsize,
    accept_errors: AtomicU64,
    requests: AtomicU64,
    completed: AtomicU64,
    refused: AtomicU64,
    aborted: AtomicU64,
    bytes_sent: AtomicU64,
}

impl<H: Handler> HttpServer<H> {
    /// A server for `handler` (shared with the TFTP server: `Arc<H>` is a
    /// handler too).
    pub fn builder(handler: Arc<H>) -> HttpServerBuilder<H> {
        HttpServerBuilder {
            handler,
            limits: HttpLimits {
                max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
                max_connections_per_peer: DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER,
                max_header_bytes: DEFAULT_HTTP_MAX_HEADER_BYTES,
                header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
                idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
                min_rate: DEFAULT_MIN_RATE,
                min_rate_grace: DEFAULT_MIN_RATE_GRACE,
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
                ipv6_peer_prefix: DEFAULT_IPV6_PEER_PREFIX,
            },
            on_end: None,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> HttpServerStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpServerStats {
            connections: get(&c.connections),
            connections_refused: get(&c.connections_refused),
            connections_active: c.connections_active.load(Ordering::Relaxed) as u64,
            accept_errors: get(&c.accept_errors),
            requests: get(&c.requests),
            completed: get(&c.completed),
            refused: get(&c.refused),
            aborted: get(&c.aborted),
            bytes_sent: get(&c.bytes_sent),
        }
    }

    /// Serves every listener until `shutdown` completes; then stops
    /// accepting, lets each connection finish the answer it is sending
    /// (bounded by the idle time) and returns.
    pub async fn serve(
        &self,
        listeners: Vec<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut loops = JoinSet::new();
        for listener in listeners {
            loops.spawn(accept_loop(self.inner.clone(), listener, stopped.clone()));
        }
        shutdown.await;
        let _ = stop.send(true);
        while loops.join_next().await.is_some() {}
        Ok(())
    }
}

async fn accept_loop<H: Handler>(
    inner: Arc<Inner<H>>,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut stopped) => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                inner.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(HTTP_ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&inner, peer.ip()) else {
            inner
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            // Best effort and never waits: the socket is new, its send
            // buffer empty.
            let _ = stream.try_write(OVER_LIMIT);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(slot, stream, peer, stopped.clone()));
    }
    while connections.join_next().await.is_some() {}
}

/// Returns once the server is told to stop.
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stopped as well.
    let _ = stopped.wait_for(|s| *s).await;
}

/// A connection's place under the limits, given back when dropped.
struct Slot<H> {
    inner: Arc<Inner<H>>,
    key: PeerKey,
}

impl<H> Slot<H> {
    fn take(inner: &Arc<Inner<H>>, ip: IpAddr) -> Option<Self> {
        let mut peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        let active = &inner.counters.connections_active;
        if active.load(Ordering::Relaxed) >= inner.limits.max_connections {
            return None;
        }
        let key = PeerKey::with_prefix(ip, inner.limits.ipv6_peer_prefix);
        let n = peers.entry(key).or_insert(0);
        if *n >= inner.limits.max_connections_per_peer {
            return None;
        }
        *n += 1;
        active.fetch_add(1, Ordering::Relaxed);
        inner.counters.connections.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            inner: inner.clone(),
            key,
        })
    }
}

impl<H> Drop for Slot<H> {
    fn drop(&mut self) {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = peers.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.key);
            }
        }
        self.inner
            .counters
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection<H: Handler>(
    slot: Slot<H>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) {
    let inner = slot.inner.clone();
    let local = stream.local_addr().ok();
    let limits = inner.limits;
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched::new(stream, limits, activity.clone()));
    let service = hyper::service::service_fn(move |request| {
        let inner = inner.clone();
        let activity = activity.clone();
        async move {
            activity.answering.store(true, Ordering::Relaxed);
            let response = respond(&inner, request, peer, local).await;
            activity.answering.store(false, Ordering::Relaxed);
            activity.responded.store(true, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopping(&mut stopped) => {
            // The answer being sent may finish, for the drain time at most.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.drain_timeout, conn).await;
        }
    }
    drop(slot);
}

/// What the service tells the stream about the request in progress.
#[derive(Default)]
struct Activity {
    /// Set while the handler is deciding: that wait has its own bound.
    answering: AtomicBool,
    /// Set when an answer has been decided: its sending starts the rate
    /// measure.
    responded: AtomicBool,
}

/// The stream with the idle limit and the minimum rate: a read or write
/// that has waited while nothing moved either way for the idle time fails
/// with `TimedOut`; so does a write that waits when the answer being sent
/// has averaged less than the minimum rate since its start, once it has run
/// the grace time.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
    idle: Duration,
    min_rate: u32,
    grace: Duration,
    last: Instant,
    /// Bytes written on the connection.
    written: u64,
    /// When the answer being sent started, and `written` then.
    answer: Option<(Instant, u64)>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Watched {
    fn new(io: TcpStream, limits: HttpLimits, activity: Arc<Activity>) -> Self {
        let last = Instant::now();
        Watched {
            io,
            activity,
            idle: limits.idle_timeout,
            min_rate: limits.min_rate,
            grace: limits.min_rate_grace,
            last,
            written: 0,
            answer: None,
            timer: Box::pin(tokio::time::sleep_until(last + limits.idle_timeout)),
        }
    }

    /// When the answer being sent falls below the minimum rate, if ever.
    fn rate_deadline(&self) -> Option<Instant> {
        let (start, at) = self.answer?;
        if self.min_rate == 0 {
            return None;
        }
        let sent = self.written - at;
        let earned = Duration::from_secs_f64(sent as f64 / f64::from(self.min_rate));
        Some(start + earned.max(self.grace))
    }

    /// After a wait: whether a limit is up (else the timer is armed for
    /// when one would be). `writing`: the wait is a write's.
    fn expired(&mut self, cx: &mut Context<'_>, writing: bool) -> bool {
        loop {
            if self.activity.answering.load(Ordering::Relaxed) {
                self.last = Instant::now();
            }
            let mut deadline = self.last + self.idle;
            if writing {
                if let Some(rate) = self.rate_deadline() {
                    deadline = deadline.min(rate);
                }
            }
            if Instant::now() >= deadline {
                return true;
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    fn waited<T>(&mut self, cx: &mut Context<'_>, writing: bool) -> Poll<io::Result<T>> {
        if self.expired(cx, writing) {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took too long (idle time or minimum rate)",
            )))
        } else {
            Poll::Pending
        }
    }

    /// Before a write: a newly decided answer starts the rate measure.
    fn before_write(&mut self) {
        if self.activity.responded.swap(false, Ordering::Relaxed) {
            self.answer = Some((Instant::now(), self.written));
        }
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        self.last = Instant::now();
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.waited(cx, false),
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.waited(cx, true),
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.waited(cx, true),
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What is reported when a request ends.
struct Report<H> {
    inner: Arc<Inner<H>>,
    stats: HttpStats,
    started: Instant,
    done: bool,
}

impl<H> Report<H> {
    fn end(mut self, outcome: HttpOutcome, error: Option<String>) {
        self.finish(outcome, error);
    }

    fn finish(&mut self, outcome: HttpOutcome, error: Option<String>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.stats.outcome = outcome;
        self.stats.error = error;
        self.stats.duration = self.started.elapsed();
        let c = &self.inner.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.bytes_sent
            .fetch_add(self.stats.bytes_sent, Ordering::Relaxed);
        match outcome {
            HttpOutcome::Completed => &c.completed,
            HttpOutcome::Refused => &c.refused,
            HttpOutcome::Aborted => &c.aborted,
        }
        .fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &self.inner.on_end {
            f(&self.stats);
        }
    }
}

/// A request dropped before its answer was decided (its connection ended
/// while the handler or origin was deciding: shutdown's drain time ran out,
/// or the connection failed) is reported too.
impl<H> Drop for Report<H> {
    fn drop(&mut self) {
        self.finish(
            HttpOutcome::Aborted,
            Some("the connection ended before the answer".to_owned()),
        );
    }
}

async fn respond<H: Handler>(
    inner: &Arc<Inner<H>>,
    request: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<HttpBody> {
    let mut report = Report {
        inner: inner.clone(),
        stats: HttpStats {
            peer,
            local,
            method: request.method().clone(),
            path: Vec::new(),
            status: 0,
            range: None,
            size: None,
            bytes_sent: 0,
            outcome: HttpOutcome::Refused,
            error: None,
            duration: Duration::ZERO,
        },
        started: Instant::now(),
        done: false,
    };
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut response = refusal(report, StatusCode::METHOD_NOT_ALLOWED, "GET and HEAD only");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let Some(path) = rules::percent_decode(request.uri().path().as_bytes()) else {
        return refusal(report, StatusCode::BAD_REQUEST, "Malformed path");
    };
    let name = path.strip_prefix(b"/").unwrap_or(&path).to_vec();
    report.stats.path.clone_from(&name);
    let info = match rules::read_request(&name, peer, local) {
        Ok(info) => info,
        Err(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return refusal(report, status, "Malformed file name");
        }
    };
    let answer = tokio::time::timeout(inner.limits.idle_timeout, inner.handler.read(&info)).await;
    let answer = match answer {
        Err(_) => {
            return refusal(report, StatusCode::GATEWAY_TIMEOUT, "No answer in time");
        }
        Ok(Err(e)) => {
            let status = StatusCode::from_u16(rules::status_of(&e))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = refusal(report, status, &e.message);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return response;
        }
        Ok(Ok(answer)) => answer,
    };
    let size = answer.size();
    let modified = answer.modified();
    report.stats.size = size;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let etag = size.zip(modified).map(|(s, m)| rules::entity_tag(s, m));
    if let Some(m) = modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
    if let Some(tag) = &etag {
        if let Ok(v) = HeaderValue::from_str(tag) {
            headers.insert(header::ETAG, v);
        }
    }
    if size.is_some() {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let headers_in = request.headers();
    if rules::not_modified(
        value(headers_in, header::IF_NONE_MATCH),
        value(headers_in, header::IF_MODIFIED_SINCE),
        etag.as_deref(),
        modified,
    ) {
        report.stats.status = 304;
        report.end(HttpOutcome::Completed, None);
        return with_headers(StatusCode::NOT_MODIFIED, headers, HttpBody::empty());
    }
    let range = match size {
        Some(size)
            if rules::if_range_holds(
                value(headers_in, header::IF_RANGE),
                etag.as_deref(),
                modified,
                SystemTime::now(),
            ) =>
        {
            request
                .headers()
                .get(header::RANGE)
                .and_then(|v| rules::parse_range(v.as_bytes(), size))
        }
        _ => None,
    };
    let (status, skip, length) = match (range, size) {
        (Some(Ok((first, last))), Some(size)) => {
            let v = format!("bytes {first}-{last}/{size}");
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            report.stats.range = Some((first, last));
            (StatusCode::PARTIAL_CONTENT, first, Some(last - first + 1))
        }
        (Some(Err(rules::Unsatisfiable)), Some(size)) => {
            let mut response = refusal(
                report,
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Range not satisfiable",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
        _ => (StatusCode::OK, 0, size),
    };
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    report.stats.status = status.as_u16();
    if head || length == Some(0) {
        report.end(HttpOutcome::Completed, None);
        return with_headers(status, headers, HttpBody::empty());
    }
    let mut reader = match answer.into_source().0 {
        Source::Tokio(r) => Reader::Tokio(r),
        Source::Native(s) => Reader::Native(s),
    };
    let mut skip = skip;
    if let Reader::Native(source) = &mut reader {
        match source.skip_file(skip) {
            Ok(true) => skip = 0,
            Ok(false) => {}
            Err(e) => {
                return refusal(report, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            }
        }
    }
    let body = HttpBody {
        kind: Kind::Stream(Box::new(Stream {
            reader,
            skip,
            remaining: length,
            buf: Vec::new(),
            report: Some(Box::new(report)),
        })),
    };
    with_headers(status, headers, body)
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: HttpBody) -> Response<HttpBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// An answer with an error status, its text as the body; reported at once.
fn refusal<H>(mut report: Report<H>, status: StatusCode, text: &str) -> Response<HttpBody> {
    let body = format!("{text}\n");
    report.stats.status = status.as_u16();
    report.end(HttpOutcome::Refused, Some(text.to_owned()));
    let mut response = Response::new(HttpBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A request header's value as text; a value that is not text is kept as
/// `""`, which matches no validator.
fn value(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// A response body: nothing, a short text, or a source streamed a chunk at
/// a time as the connection takes it.
pub struct HttpBody {
    kind: Kind,
}

impl fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBody").finish_non_exhaustive()
    }
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Box<Stream>),
}

/// The erased report of a streamed body (the handler type is gone by then).
trait End: Send {
    fn stats(&mut self) -> &mut HttpStats;
    fn end(self: Box<Self>, outcome: HttpOutcome, error: Option<String>);
}

impl<H: Send + Sync + 'static> End for Report<H> {
    fn stats(&mut self) -> &mut HttpStats {
        &mut self.stats
    }
    fn end(self: Box<Self>, outcome: HttpOutcome, error: Option<String>) {
        Report::end(*self, outcome, error);
    }
}

struct Stream {
    reader: Reader,
    /// Bytes still to read and drop before the range starts.
    skip: u64,
    /// Bytes still to send, when known.
    remaining: Option<u64>,
    buf: Vec<u8>,
    report: Option<Box<dyn End>>,
}

/// A piece of a body: a buffer of its own, or the first bytes of the
/// stream's reused one.
enum Chunk {
    Owned(Vec<u8>),
    InBuf(usize),
}

enum Reader {
    Tokio(Pin<Box<dyn AsyncRead + Send>>),
    Native(AsyncSource),
}

impl Reader {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Reader::Tokio(r) => {
                let mut read = ReadBuf::new(buf);
                match r.as_mut().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
            Reader::Native(s) => s.reader().poll_read(cx, buf),
        }
    }
}

impl HttpBody {
    fn empty() -> Self {
        HttpBody {
            kind: Kind::Full(None),
        }
    }

    fn full(text: String) -> Self {
        HttpBody {
            kind: Kind::Full(Some(Bytes::from(text))),
        }
    }
}

impl Stream {
    fn finish(&mut self, outcome: HttpOutcome, error: Option<String>) {
        if let Some(report) = self.report.take() {
            report.end(outcome, error);
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let mut skipped = 0;
        loop {
            if skipped == SKIP_PER_POLL {
                // A long skip of an always-ready source gives the worker
                // back now and then.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let want = match self.remaining {
                Some(0) => return Poll::Ready(None),
                Some(n) if self.skip == 0 => n.min(HTTP_CHUNK as u64) as usize,
                _ => HTTP_CHUNK,
            };
            let want = if self.skip > 0 {
                want.min(usize::try_from(self.skip).unwrap_or(usize::MAX))
            } else {
                want
            };
            let owned = match &mut self.reader {
                Reader::Native(source) if self.skip == 0 => source.read_owned(want),
                _ => None,
            };
            let chunk = match owned {
                Some(Ok(buf)) => Chunk::Owned(buf),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.buf.resize(want, 0);
                    match self.reader.poll_read(cx, &mut self.buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                        Poll::Ready(Ok(n)) => Chunk::InBuf(n),
                    }
                }
            };
            let n = match &chunk {
                Chunk::Owned(buf) => buf.len(),
                Chunk::InBuf(n) => *n,
            };
            if n == 0 {
                return Poll::Ready(self.remaining.map(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the source ended before its size",
                    ))
                }));
            }
            if self.skip > 0 {
                self.skip -= n as u64;
                skipped += 1;
                continue;
            }
            if let Some(report) = &mut self.report {
                report.stats().bytes_sent += n as u64;
            }
            if let Some(r) = &mut self.remaining {
                *r -= n as u64;
                if *r == 0 {
                    // hyper asks for nothing more once the length is sent.
                    self.finish(HttpOutcome::Completed, None);
                }
            }
            return Poll::Ready(Some(Ok(match chunk {
                Chunk::Owned(buf) => Bytes::from(buf),
                Chunk::InBuf(n) => Bytes::copy_from_slice(&self.buf[..n]),
            })));
        }
    }
}

impl Body for HttpBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(stream) => match stream.poll_chunk(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Poll::Ready(Some(Err(e))) => {
                    stream.finish(HttpOutcome::Aborted, Some(e.to_string()));
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    stream.finish(HttpOutcome::Completed, None);
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(stream) => stream.remaining == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(stream) => match stream.remaining {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish(
            HttpOutcome::Aborted,
            Some("the connection ended first".to_owned()),
        );
    }
}
