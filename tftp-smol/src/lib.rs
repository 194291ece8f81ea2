//! # tftp-smol: the TFTP framework on smol / async-io
//!
//! The same concepts and names as `tftp-tokio` — [`Server`] with a
//! per-request [`Handler`], response sources (`futures_io::AsyncRead`) with
//! an optional size, per-session and periodic statistics, limits, graceful
//! shutdown, a kernel-confined [`DirHandler`] and a [`Client`] — on
//! `async-io` with no tokio in the dependency tree. Session tasks run on
//! smol's global executor, so the crate also works from async-std (built on
//! the same reactor).
//!
//! This crate is only the runtime glue: [`Smol`] implements
//! [`tftp_io::Runtime`]; the server, client and driving loop are
//! [`tftp_io`]'s, shared with every other runtime.
//!
//! ```no_run
//! use tftp_smol::{DirHandler, Server};
//!
//! smol::block_on(async {
//!     let server = Server::builder(DirHandler::new("/srv/tftp")?)
//!         .listen("127.0.0.1:6969".parse().unwrap())
//!         .bind()?;
//!     server.serve(std::future::pending()).await
//! })
//! # ; Ok::<(), std::io::Error>(())
//! ```
//!
//! ```no_run
//! smol::block_on(async {
//!     let client = tftp_smol::Client::new("127.0.0.1:6969".parse().unwrap()).blksize(1468).windowsize(16);
//!     let mut image = Vec::new();
//!     client.get("pxelinux.0", &mut image).await
//! })?;
//! # Ok::<(), tftp_smol::ClientError>(())
//! ```
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use smol::Async;
use tftp_io::{AsyncUdpSocket, Runtime, Serves, Wrap};

pub use tftp_io::remap::{self, Remap, RemapRules};
pub use tftp_io::tftp_proto;
pub use tftp_io::{mac_of, ClientKey, Mac};
pub use tftp_io::{
    ClientError, DirHandler, Fallback, Request, ServerStats, StatsHandle, TftpError,
};
pub use tftp_io::{Handler, ReadResponse, WriteResponse};
pub use tftp_io::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_STATS_INTERVAL};
pub use tftp_io::{
    DEFAULT_MAX_MEMORY, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_PEER,
    DEFAULT_MAX_UPLOAD_SIZE,
};

/// The smol / async-io runtime: tasks on smol's global executor, async-io's
/// timers and sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Socket = SmolSocket;
    type Timer = SmolTimer;

    fn wrap_udp(&self, socket: UdpSocket) -> io::Result<SmolSocket> {
        Async::new(socket).map(|s| SmolSocket(s, AtomicBool::new(false)))
    }

    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer(smol::Timer::at(at))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(task).detach();
    }
}

/// A TFTP server on smol: see [`tftp_io::Server`].
pub type Server<H> = tftp_io::Server<H, Smol>;
/// Configures a [`Server`].
pub type ServerBuilder<H> = tftp_io::ServerBuilder<H, Smol>;
/// A TFTP client on smol; `get` and `put` take `futures_io` writers and
/// readers (`&mut Vec<u8>`, `&mut smol::fs::File`, ...).
pub type Client = tftp_io::Client<Smol>;

/// Handlers in `futures_io` terms are served as they are.
impl<H: Handler> Serves<H> for Smol {
    type Handler = H;
    fn handler(handler: H) -> H {
        handler
    }
}

/// Readers and writers in `futures_io` terms are used as they are.
impl<T: Send + Unpin> Wrap<T> for Smol {
    type Io = T;
    fn wrap(io: T) -> T {
        io
    }
}

/// A UDP socket registered with async-io: the syscall first, then readiness
/// (readiness first after a receive that emptied the queue, the flag).
#[derive(Debug)]
pub struct SmolSocket(Async<UdpSocket>, AtomicBool);

impl AsyncUdpSocket for SmolSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn poll_recv_with(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        self.poll_io(cx, recv, |s, cx| s.poll_readable(cx))
    }

    fn poll_recv_drain(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<bool>,
    ) -> Poll<io::Result<()>> {
        if self.1.load(Ordering::Relaxed) {
            ready!(self.0.poll_readable(cx))?;
            self.1.store(false, Ordering::Relaxed);
        }
        loop {
            match recv(self.0.get_ref().as_fd()) {
                Ok(drained) => {
                    self.1.store(drained, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_readable(cx))?
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Straight to the socket: no readiness check, whose waker slot
    /// several tasks would share.
    fn try_send_with(
        &self,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        send(self.0.get_ref().as_fd())
    }

    fn poll_send_with(
        &self,
        cx: &mut Context<'_>,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        self.poll_io(cx, send, |s, cx| s.poll_writable(cx))
    }
}

impl SmolSocket {
    /// `io` until it does not block, waiting with `wait` in between.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        io: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
        wait: impl Fn(&Async<UdpSocket>, &mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        loop {
            match io(self.0.get_ref().as_fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(wait(&self.0, cx))?,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// An async-io timer.
#[derive(Debug)]
pub struct SmolTimer(smol::Timer);

impl tftp_io::Timer for SmolTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// The README's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
