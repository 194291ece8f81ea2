//! # tftp-tokio: a TFTP server framework and client on tokio
//!
//! What fbtftp gives Python users, in Rust: a [`Server`] whose [`Handler`]
//! decides per request what the client gets (a file, bytes generated on the
//! fly, a stream from another store), per-session statistics when each
//! transfer ends, periodic server counters, limits and graceful shutdown; a
//! [`Client`]; and [`DirHandler`], a directory server confined by the kernel.
//!
//! This crate is only the runtime glue: [`Tokio`] implements
//! [`tftp_io::Runtime`], and [`Handler`], [`ReadResponse`] and
//! [`WriteResponse`] speak tokio's `AsyncRead` / `AsyncWrite`. The server,
//! client and driving loop are [`tftp_io`]'s, shared with every runtime, and
//! every protocol decision is made in [`tftp_proto`]. Each transfer runs in
//! its own task with its own UDP socket (the server's transfer ID), bound to
//! the local address the request arrived on; the handler runs inside that
//! task, never in the accept loop.
//!
//! ```no_run
//! use tftp_tokio::{DirHandler, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder(DirHandler::new("/srv/tftp")?)
//!     .listen("127.0.0.1:6969".parse().unwrap())
//!     .on_session_end(|stats| println!("{} {}: {:?}", stats.peer, stats.filename_lossy(), stats.outcome))
//!     .bind()?;
//! server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! Fetching with the client:
//!
//! ```no_run
//! # async fn run() -> Result<(), tftp_tokio::ClientError> {
//! let client = tftp_tokio::Client::new("127.0.0.1:6969".parse().unwrap()).blksize(1468).windowsize(16).tsize(true);
//! let mut file = tokio::fs::File::create("pxelinux.0").await?;
//! let stats = client.get("pxelinux.0", &mut file).await?;
//! println!("{} bytes", stats.bytes_received);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod handler;
#[cfg(feature = "http")]
pub mod http;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use std::sync::Mutex;
use tftp_io::{AsyncUdpSocket, Runtime, Serves, Wrap};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub use handler::{Bridge, Handler, ReadResponse, RequestInfo, WriteResponse};
pub use handler::{TokioSink, TokioSource};
pub use tftp_io::net::bind_listen_sockets;
pub use tftp_io::remap::{self, Remap, RemapRules};
pub use tftp_io::tftp_proto;
pub use tftp_io::{
    escape_controls, ClientError, DirHandler, Fallback, ServerStats, StatsHandle, TftpError,
    SOCKET_ERROR,
};
pub use tftp_io::{mac_of, ClientKey, Mac};
pub use tftp_io::{ServerStatsCallback, SessionCallback};
pub use tftp_io::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_STATS_INTERVAL};
pub use tftp_io::{
    DEFAULT_MAX_MEMORY, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
    DEFAULT_MAX_UPLOAD_SIZE,
};

/// A TFTP server on tokio: see [`tftp_io::Server`].
pub type Server<H> = tftp_io::Server<H, Tokio>;
/// Configures a [`Server`].
pub type ServerBuilder<H> = tftp_io::ServerBuilder<H, Tokio>;
/// A TFTP client on tokio; `get` and `put` take tokio writers and readers
/// (`&mut tokio::fs::File`, `&mut Vec<u8>`, ...).
pub type Client = tftp_io::Client<Tokio>;

/// Handlers in tokio's I/O traits are bridged to `futures_io`.
impl<H: Handler> Serves<H> for Tokio {
    type Handler = Bridge<H>;
    fn handler(handler: H) -> Bridge<H> {
        Bridge(handler)
    }
}

/// Readers and writers in tokio's I/O traits are seen through [`Compat`].
impl<T: Send + Unpin> Wrap<T> for Tokio {
    type Io = Compat<T>;
    fn wrap(io: T) -> Compat<T> {
        Compat(io)
    }
}

/// The tokio runtime: `tokio::spawn`, tokio's timers and clock (so paused-time
/// tests work) and sockets. Servers and clients must run inside a tokio
/// runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Socket = TokioSocket;
    type Timer = TokioTimer;

    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<TokioSocket> {
        socket.set_nonblocking(true)?;
        // Deprecated because an arbitrary `T` may close or swap its
        // descriptor while registered; an owned `std::net::UdpSocket` does
        // neither, which is the condition of `register_with_interest` (the
        // `unsafe` form this crate forbids).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(socket, Interest::READABLE)?;
        Ok(TokioSocket(Inner::Transfer {
            fd,
            retry: Mutex::new(None),
        }))
    }

    fn wrap_listening(&self, socket: std::net::UdpSocket) -> io::Result<TokioSocket> {
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket).map(|s| TokioSocket(Inner::Listening(s)))
    }

    fn timer(&self, at: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    /// On tokio's blocking pool, whose threads are kept for the next one.
    fn spawn_blocking(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        drop(tokio::task::spawn_blocking(f));
        Ok(())
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A UDP socket in tokio's reactor.
///
/// A transfer socket (one task) is registered for readability only: a send
/// completing on loopback or a fast NIC would otherwise wake the reactor
/// for writability after every datagram. Its sends go straight to the
/// socket; one that would block (the send buffer full) is tried again after
/// [`SEND_RETRY`]. A listening socket, which several tasks send on, is a
/// plain tokio `UdpSocket` that waits for writability.
#[derive(Debug)]
pub struct TokioSocket(Inner);

#[derive(Debug)]
enum Inner {
    Transfer {
        fd: AsyncFd<std::net::UdpSocket>,
        retry: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
    },
    Listening(tokio::net::UdpSocket),
}

/// How long a transfer socket's send that would block waits before it is
/// tried again.
pub const SEND_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

impl TokioSocket {
    fn std(&self) -> BorrowedFd<'_> {
        match &self.0 {
            Inner::Transfer { fd, .. } => fd.get_ref().as_fd(),
            Inner::Listening(s) => s.as_fd(),
        }
    }
}

impl AsyncUdpSocket for TokioSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            Inner::Transfer { fd, .. } => fd.get_ref().local_addr(),
            Inner::Listening(s) => s.local_addr(),
        }
    }

    fn poll_recv_with(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        self.poll_recv_drain(cx, &mut |fd| recv(fd).map(|()| false))
    }

    fn poll_recv_drain(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<bool>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut drained = false;
            // Data with the queue empty behind it is reported to tokio as
            // `WouldBlock`, so that it clears the readiness (only if no
            // event came in the meantime: nothing is missed).
            let mut io = || match recv(self.std()) {
                Ok(true) => {
                    drained = true;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            let result = match &self.0 {
                Inner::Transfer { fd, .. } => {
                    let mut guard = std::task::ready!(fd.poll_read_ready(cx))?;
                    guard
                        .try_io(|_| io())
                        .unwrap_or_else(|_| Err(io::ErrorKind::WouldBlock.into()))
                }
                Inner::Listening(s) => {
                    std::task::ready!(s.poll_recv_ready(cx))?;
                    s.try_io(Interest::READABLE, io)
                }
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained => {
                    return Poll::Ready(Ok(()))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    /// Straight to the socket: no readiness check, whose waker slot
    /// several tasks would share.
    fn try_send_with(
        &self,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        send(self.std())
    }

    fn poll_send_with(
        &self,
        cx: &mut Context<'_>,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        match &self.0 {
            Inner::Listening(s) => loop {
                std::task::ready!(s.poll_send_ready(cx))?;
                match s.try_io(Interest::WRITABLE, || send(s.as_fd())) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return Poll::Ready(result),
                }
            },
            // One task polls a transfer socket: one sleep is enough.
            Inner::Transfer { fd, retry } => {
                let mut retry = retry.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(sleep) = retry.as_mut() {
                        std::task::ready!(sleep.as_mut().poll(cx));
                        *retry = None;
                    }
                    match send(fd.get_ref().as_fd()) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            *retry = Some(Box::pin(tokio::time::sleep(SEND_RETRY)));
                        }
                        result => return Poll::Ready(result),
                    }
                }
            }
        }
    }
}

/// A tokio timer, kept across waits and reset in place.
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl tftp_io::Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// A tokio reader or writer as a `futures_io` one.
#[derive(Debug)]
pub struct Compat<T>(pub T);

impl<T: tokio::io::AsyncRead + Unpin> futures_io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        std::task::ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The README's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
