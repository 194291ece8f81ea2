//! The framework API (fbtftp's `get_handler` + `get_response_data`): a
//! handler answers each request with a response, a source or sink plus an
//! optional size and a narrower policy. [`ReadResponse`] and
//! [`WriteResponse`] are generic over the source or sink type, so every
//! runtime shares them; this module's [`Handler`] is the `futures_io` one
//! (tftp-smol uses it as it is).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use futures_io::{AsyncRead, AsyncWrite};
use tftp_proto::failure::Failure;
use tftp_proto::options::Limits;

pub use tftp_proto::server::{Request, TftpError};

/// What a read request gets: a source `S` plus its size if known (answered
/// to `tsize`), and optionally a narrower policy for this request.
pub struct ReadResponse<S = AsyncSource> {
    pub(crate) source: S,
    pub(crate) size: Option<u64>,
    pub(crate) limits: Option<Limits>,
    pub(crate) modified: Option<SystemTime>,
}

impl<S> ReadResponse<S> {
    /// A source of known size (`Some`) or unknown length (`None`: a stream;
    /// `tsize` is then not acknowledged).
    pub fn new(source: impl Into<S>, size: Option<u64>) -> Self {
        ReadResponse {
            source: source.into(),
            size,
            limits: None,
            modified: None,
        }
    }

    /// In-memory bytes (a generated boot config, say).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self
    where
        S: FromBytes,
    {
        let bytes = bytes.into();
        let size = bytes.len() as u64;
        ReadResponse {
            source: S::from_bytes(bytes),
            size: Some(size),
            limits: None,
            modified: None,
        }
    }

    /// A stream of unknown length.
    pub fn stream(source: impl Into<S>) -> Self {
        Self::new(source, None)
    }

    /// Narrows the negotiation for this request (per-client config: cap
    /// `blksize` for a ROM known to break, turn options off for clients that
    /// never acknowledge an OACK). It can only restrict the server's limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// When the content last changed, if the source knows (a file's
    /// modification time). TFTP has no use for it; the HTTP side of the
    /// framework sends it as `Last-Modified`, derives an `ETag` from it and
    /// the size, and answers conditional requests with it.
    pub fn with_modified(mut self, modified: SystemTime) -> Self {
        self.modified = Some(modified);
        self
    }

    /// When the content last changed, if known: see
    /// [`with_modified`](Self::with_modified).
    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    /// The source, for an adapter that serves it another way (the HTTP
    /// side).
    pub fn into_source(self) -> S {
        self.source
    }

    /// The announced size.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The same response with its source converted (an adapter's bridge).
    pub fn map_source<T>(self, f: impl FnOnce(S) -> T) -> ReadResponse<T> {
        ReadResponse {
            source: f(self.source),
            size: self.size,
            limits: self.limits,
            modified: self.modified,
        }
    }
}

impl<S> fmt::Debug for ReadResponse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadResponse")
            .field("size", &self.size)
            .field("limits", &self.limits)
            .field("modified", &self.modified)
            .finish_non_exhaustive()
    }
}

/// What a write request gets: a sink `W` for the uploaded bytes (closed, or
/// told it completed, only when the whole upload arrived), and optionally a
/// narrower policy.
pub struct WriteResponse<W = AsyncSink> {
    pub(crate) sink: W,
    pub(crate) limits: Option<Limits>,
}

impl<W> WriteResponse<W> {
    /// A sink for the uploaded bytes.
    pub fn new(sink: impl Into<W>) -> Self {
        WriteResponse {
            sink: sink.into(),
            limits: None,
        }
    }

    /// Narrows the negotiation for this request; see [`ReadResponse::with_limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The same response with its sink converted (an adapter's bridge).
    pub fn map_sink<T>(self, f: impl FnOnce(W) -> T) -> WriteResponse<T> {
        WriteResponse {
            sink: f(self.sink),
            limits: self.limits,
        }
    }
}

impl<W> fmt::Debug for WriteResponse<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteResponse")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Any `futures_io::AsyncRead`, boxed: the source of an async
/// [`ReadResponse`].
pub struct AsyncSource(pub(crate) Source);

/// What an [`AsyncSource`] reads from.
pub(crate) enum Source {
    /// Any reader.
    Stream(Pin<Box<dyn AsyncRead + Send>>),
    /// A [`DirHandler`](crate::DirHandler) file: read on the calling
    /// thread, so a lock-step session may also run on a thread of its own
    /// (see [`ServerBuilder::session_threads`](crate::ServerBuilder::session_threads)).
    File(crate::dir::FileSource),
}

impl<R: AsyncRead + Send + 'static> From<R> for AsyncSource {
    fn from(source: R) -> Self {
        AsyncSource(Source::Stream(Box::pin(source)))
    }
}

impl AsyncSource {
    /// The source as a reader (as the server reads it; a file on the
    /// calling thread, see [`DirHandler`](crate::DirHandler)).
    pub fn reader(&mut self) -> Pin<&mut (dyn AsyncRead + Send)> {
        match &mut self.0 {
            Source::Stream(s) => s.as_mut(),
            Source::File(f) => {
                let f: Pin<&mut crate::dir::FileSource> = Pin::new(f);
                f
            }
        }
    }

    /// For a file source ([`DirHandler`](crate::DirHandler)'s), up to `max`
    /// next bytes in a buffer of their own, read straight into it on the
    /// calling thread (empty at the end); `None` for any other source, to
    /// be read through [`reader`](Self::reader). The HTTP side sends such
    /// buffers without copying them again.
    pub fn read_owned(&mut self, max: usize) -> Option<io::Result<Vec<u8>>> {
        match &mut self.0 {
            Source::Stream(_) => None,
            Source::File(f) => Some(f.read_owned(max)),
        }
    }

    /// Skips the next `n` bytes without reading them when the source is a
    /// file ([`DirHandler`](crate::DirHandler)'s): returns whether it did.
    /// Any other source returns `false` and is left as it was, to be read
    /// and discarded by the caller (the HTTP side's `Range` requests).
    pub fn skip_file(&mut self, n: u64) -> io::Result<bool> {
        match &mut self.0 {
            Source::Stream(_) => Ok(false),
            Source::File(f) => f.skip(n).map(|()| true),
        }
    }
}

/// A source type that can serve bytes from memory
/// ([`ReadResponse::from_bytes`]).
pub trait FromBytes {
    /// A source that yields `bytes`.
    fn from_bytes(bytes: Vec<u8>) -> Self;
}

impl FromBytes for AsyncSource {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        AsyncSource::from(Memory(io::Cursor::new(bytes)))
    }
}

/// Bytes in memory as a `futures_io` source.
struct Memory(io::Cursor<Vec<u8>>);

impl AsyncRead for Memory {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(io::Read::read(&mut self.0, buf))
    }
}

/// Any `futures_io::AsyncWrite`, boxed: the sink of an async
/// [`WriteResponse`]. `poll_close` is called only when the upload completed.
pub struct AsyncSink(pub(crate) Pin<Box<dyn AsyncWrite + Send>>);

impl<W: AsyncWrite + Send + 'static> From<W> for AsyncSink {
    fn from(sink: W) -> Self {
        AsyncSink(Box::pin(sink))
    }
}

/// Decides what each request gets. It runs inside the session's own task,
/// never in the accept loop, so a slow backend delays only its own client.
///
/// ```
/// use tftp_io::{Handler, ReadResponse, Request, TftpError};
///
/// struct Hello;
///
/// impl Handler for Hello {
///     async fn read(&self, req: &Request) -> Result<ReadResponse, TftpError> {
///         match req.filename() {
///             b"hello.txt" => Ok(ReadResponse::from_bytes(format!("hello {}\n", req.peer().ip()))),
///             _ => Err(TftpError::not_found()),
///         }
///     }
/// }
/// ```
///
/// A request may be asked again: an answer of exactly ERROR 0
/// [`SOCKET_ERROR`](crate::SOCKET_ERROR) ("busy", DirHandler's answer when
/// the process is out of descriptors) is retried every 20 ms for up to
/// [`DESCRIPTOR_WAIT`](crate::DESCRIPTOR_WAIT) before the client hears it.
pub trait Handler: Send + Sync + 'static {
    /// A read request (RRQ).
    fn read(
        &self,
        request: &Request,
    ) -> impl Future<Output = Result<ReadResponse, TftpError>> + Send;

    /// A write request (WRQ). Refused with ERROR 2 unless implemented.
    fn write(
        &self,
        request: &Request,
    ) -> impl Future<Output = Result<WriteResponse, TftpError>> + Send {
        let _ = request;
        async { Err(writes_refused()) }
    }
}

/// The answer to a write request of a handler that takes none.
pub fn writes_refused() -> TftpError {
    TftpError::from(Failure::ReadOnly)
}
