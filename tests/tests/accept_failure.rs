//! One accept-loop failure policy on every runtime: when a listening socket
//! fails for good, the server stops accepting, drains, and `serve` returns
//! the error, instead of "serving" with no listener.
//!
//! The blocking server sees a real failure: a socket shut down under it
//! (a blocking receive then returns EOF without an address). A non-blocking
//! socket never reports that, so the async runtimes (which share one accept
//! loop in tftp-io) are run through [`Failing`], a runtime wrapper whose
//! listening socket starts failing on demand.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::adapters::{Adapter, Blocking, Cfg, Opts};
use tftp_io::{AsyncUdpSocket, Runtime, Serves};

/// Listening addresses whose sockets fail from now on.
static FAILED: Mutex<Option<HashSet<SocketAddr>>> = Mutex::new(None);

fn fail(addr: SocketAddr) {
    FAILED
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(addr);
}

fn failed(addr: Option<SocketAddr>) -> bool {
    let set = FAILED.lock().unwrap();
    addr.is_some_and(|a| set.as_ref().is_some_and(|s| s.contains(&a)))
}

/// Runtime `R`, with sockets that fail once their address is in `FAILED`.
#[derive(Clone, Debug, Default)]
struct Failing<R>(R);

struct FailingSocket<S>(S);

impl<S: AsyncUdpSocket> AsyncUdpSocket for FailingSocket<S> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    // The accept loop receives through this one (for the destination address).
    fn poll_recv_with(
        &self,
        cx: &mut Context<'_>,
        recv: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        if failed(self.0.local_addr().ok()) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket gone",
            )));
        }
        self.0.poll_recv_with(cx, recv)
    }
    fn poll_send_with(
        &self,
        cx: &mut Context<'_>,
        send: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_send_with(cx, send)
    }
}

impl<R: Runtime> Runtime for Failing<R> {
    type Socket = FailingSocket<R::Socket>;
    type Timer = R::Timer;
    fn wrap_udp(&self, socket: std::net::UdpSocket) -> io::Result<Self::Socket> {
        self.0.wrap_udp(socket).map(FailingSocket)
    }
    fn wrap_listening(&self, socket: std::net::UdpSocket) -> io::Result<Self::Socket> {
        self.0.wrap_listening(socket).map(FailingSocket)
    }
    fn timer(&self, at: Instant) -> R::Timer {
        self.0.timer(at)
    }
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn(task)
    }
    fn now(&self) -> Instant {
        self.0.now()
    }
}

impl<H, R: Serves<H>> Serves<H> for Failing<R> {
    type Handler = R::Handler;
    fn handler(handler: H) -> R::Handler {
        R::handler(handler)
    }
}

/// A server's `serve` future.
type Serving = std::pin::Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Serves `dir` on runtime `R` (run by `block_on`), fetches once, makes the
/// listening socket fail, and returns what `serve` returned.
fn async_server_stops<R>(
    dir: &std::path::Path,
    block_on: fn(Serving) -> io::Result<()>,
) -> io::Result<()>
where
    R: Runtime + Serves<tftp_io::DirHandler>,
{
    let server = tftp_io::Server::<tftp_io::DirHandler, Failing<R>>::builder(
        tftp_io::DirHandler::new(dir).unwrap(),
    )
    .listen("127.0.0.1:0".parse().unwrap())
    .bind()
    .unwrap();
    let addr = server.local_addrs()[0];
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(block_on(Box::pin(server.serve(std::future::pending()))));
    });
    let mut got = Vec::new();
    tftp_blocking::Client::new(addr)
        .get("f.bin", &mut got)
        .expect("serves before");
    fail(addr);
    // Wake the accept loop with a datagram; it then sees the failure.
    let poke = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    poke.send_to(b"wake up", addr).unwrap();
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve kept running without a listener");
    thread.join().unwrap();
    result
}

#[test]
fn tokio_accept_failure_ends_serve() {
    let dir = common::root(&[("f.bin", b"hello")]);
    let result = async_server_stops::<tftp_tokio::Tokio>(dir.path(), |f| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    });
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn smol_accept_failure_ends_serve() {
    let dir = common::root(&[("f.bin", b"hello")]);
    let result = async_server_stops::<tftp_smol::Smol>(dir.path(), smol::block_on);
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn async_std_accept_failure_ends_serve() {
    let dir = common::root(&[("f.bin", b"hello")]);
    let result = async_server_stops::<tftp_smol::Smol>(dir.path(), async_std::task::block_on);
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn blocking_accept_failure_ends_serve() {
    let data = common::content(3000, 21);
    let dir = common::root(&[("f.bin", &data)]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ours = socket.try_clone().unwrap();
    let cfg = Cfg {
        listen_socket: Some(Arc::new(socket)),
        ..Cfg::default()
    };
    let server = Blocking::serve_dir(dir.path(), &cfg);
    let (got, _) = Blocking::get(server.addr, "f.bin", Opts::default()).expect("serves before");
    assert_eq!(got, data);
    // A blocking receive on a shut-down socket returns EOF without an
    // address: not a transient error.
    let _ = socket2::SockRef::from(&ours).shutdown(std::net::Shutdown::Both);
    let result = server
        .result
        .recv_timeout(Duration::from_secs(20))
        .expect("serve kept running without a listener");
    assert!(result.is_err(), "serve returned {result:?}");
    server.stop();
}
