//! The same server and client on std sockets and threads: one accept thread
//! per listening socket, one thread per transfer (bounded by the session
//! limit), each session driven by the crate's one session driver through
//! its threads executor. `tftp-blocking` re-exports this module.
//!
//! - this module: the framework API in `std::io` terms ([`Handler`],
//!   [`StdSource`], [`StdSink`], [`Sink`]);
//! - `server`: [`Server`], [`ShutdownHandle`];
//! - `client`: [`Client<Threads>`](crate::Client)'s `get` and `put`, [`fetch`].

mod client;
mod server;

pub use client::fetch;
pub use server::{Server, ShutdownHandle};

use std::io::{self, Read, Write};

use tftp_proto::server::Request;

use crate::driver::{Executor, Now};
use crate::handler::{ReadResponse, TftpError, WriteResponse};

/// The "runtime" of the blocking server and client: std threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Threads {
    /// Stack size of each session thread (`None`: std's default).
    stack_size: Option<usize>,
}

impl Now for Threads {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// What the threads executor can do: read a source while it waits only if
/// the read cannot block (a source of known size: a file, bytes), and
/// receive one datagram at a time. Each session has a thread of its own,
/// so its read-ahead is at least
/// [`MIN_READ_AHEAD_ON_THREAD`](crate::MIN_READ_AHEAD_ON_THREAD).
pub(crate) fn executor(sized: bool) -> Executor {
    Executor {
        top_up: sized,
        two_slots: false,
        min_read_ahead: crate::MIN_READ_AHEAD_ON_THREAD,
    }
}

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
/// [`DESCRIPTOR_WAIT`](crate::DESCRIPTOR_WAIT) before the client hears it.
pub trait Handler: Send + Sync + 'static {
    /// A read request (RRQ).
    fn read(&self, request: &Request) -> Result<ReadResponse<StdSource>, TftpError>;

    /// A write request (WRQ). Refused with ERROR 2 unless implemented.
    fn write(&self, request: &Request) -> Result<WriteResponse<StdSink>, TftpError> {
        let _ = request;
        Err(crate::handler::writes_refused())
    }
}
