//! The small interface an async runtime implements to run the one server,
//! client and driving loop of this crate (the shape of quinn's
//! `runtime.rs`): a timer, a spawner, a clock and a UDP socket that can be
//! polled. An adapter crate implements it in about a hundred lines.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::handler::Handler;

/// An async runtime: spawns tasks, makes timers and wraps std UDP sockets.
/// Implemented on a zero-sized marker type by each adapter crate.
pub trait Runtime: Clone + Default + Send + Sync + 'static {
    /// The runtime's UDP socket.
    type Socket: AsyncUdpSocket;
    /// The runtime's timer.
    type Timer: Timer;

    /// Registers a bound, non-blocking std socket with the runtime: a
    /// transfer socket, polled by one task only.
    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<Self::Socket>;

    /// Registers a listening socket, which several tasks may send on at
    /// once (the accept loop, sessions answering "busy"). The default is
    /// [`wrap_udp`](Self::wrap_udp).
    fn wrap_listening(&self, socket: std::net::UdpSocket) -> io::Result<Self::Socket> {
        self.wrap_udp(socket)
    }

    /// A timer that fires at `at`.
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Runs `task` to completion in the background.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// Runs `f` on a thread where it may block: a lock-step session on a
    /// thread of its own ([`ServerBuilder::session_threads`](crate::ServerBuilder::session_threads)).
    /// Default: a new std thread; a runtime with a blocking pool reuses
    /// its threads.
    fn spawn_blocking(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        std::thread::Builder::new()
            .name("tftp-session".into())
            .spawn(f)
            .map(drop)
    }

    /// The runtime's clock (tokio's paused test clock, say).
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A UDP socket the driving loop polls: it runs the shared crate's
/// non-blocking receives and sends (quinn-udp's, on the socket's descriptor)
/// and registers for readiness only when they would block.
pub trait AsyncUdpSocket: Send + Sync + 'static {
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Runs `recv`, a non-blocking receive on the socket's descriptor (the
    /// listening socket's `recvmsg` with control messages), until it does
    /// not fail with `WouldBlock`, waiting for readability in between.
    fn poll_recv_with(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>>;

    /// Runs `recv`, a non-blocking receive, like
    /// [`poll_recv_with`](Self::poll_recv_with); `recv` returns `Ok(true)`
    /// when it got data and saw the socket's queue empty behind it. The
    /// adapter then forgets the socket's readiness, so the next wait goes to
    /// the reactor without a failing receive first. The default ignores
    /// that hint.
    fn poll_recv_drain(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<bool>,
    ) -> Poll<io::Result<()>> {
        self.poll_recv_with(cx, &mut |fd| recv(fd).map(|_| ()))
    }

    /// Runs `send`, a non-blocking send on the socket's descriptor, once,
    /// without waiting for writability: for a socket several tasks send on
    /// (the listening socket), where a runtime that keeps one waker per
    /// direction would wake only the last task to wait. `WouldBlock` is
    /// the caller's to handle. The default polls
    /// [`poll_send_with`](Self::poll_send_with) once with a waker that does
    /// nothing (`WouldBlock` if it would wait); an adapter whose readiness
    /// checks keep wakers should run `send` directly instead.
    fn try_send_with(
        &self,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_send_with(&mut cx, send) {
            Poll::Ready(sent) => sent,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// The same for a non-blocking send, waiting for writability.
    fn poll_send_with(
        &self,
        cx: &mut Context<'_>,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>>;
}

/// A resettable one-shot timer.
pub trait Timer: Send + Unpin + 'static {
    /// Moves the deadline to `at`.
    fn reset(&mut self, at: Instant);
    /// Ready once the deadline has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// How runtime `Self` serves handlers of type `H`: the adapter's own
/// `Handler` trait (in that runtime's I/O traits) becomes this crate's
/// [`Handler`] here. `Server::builder(h)` picks the impl by `h`'s type.
pub trait Serves<H>: Runtime {
    /// The handler the server runs.
    type Handler: Handler;
    /// Converts the application's handler.
    fn handler(handler: H) -> Self::Handler;
}

/// How runtime `Self` turns a caller's reader or writer `T` (in that
/// runtime's I/O traits) into a `futures_io` one for the [`Client`](crate::Client).
pub trait Wrap<T>: Runtime {
    /// The `futures_io::AsyncRead` or `AsyncWrite` view of `T`.
    type Io: Send + Unpin;
    /// Wraps `io`.
    fn wrap(io: T) -> Self::Io;
}
