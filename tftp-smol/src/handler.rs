//! The framework API on futures-io: a [`Handler`] decides what each request
//! gets.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use smol::io::{AsyncRead, AsyncWrite};
use tftp_blocking::root::Root;
use tftp_proto::options::Limits;
use tftp_proto::server::{Request, TftpError};

/// What a read request gets: any [`AsyncRead`] plus its size if known
/// (answered to `tsize`), and optionally a narrower policy.
pub struct ReadResponse {
    pub(crate) source: Pin<Box<dyn AsyncRead + Send>>,
    pub(crate) size: Option<u64>,
    pub(crate) limits: Option<Limits>,
}

impl ReadResponse {
    /// A source of known size (`Some`) or unknown length (`None`).
    pub fn new(source: impl AsyncRead + Send + 'static, size: Option<u64>) -> Self {
        ReadResponse {
            source: Box::pin(source),
            size,
            limits: None,
        }
    }

    /// In-memory bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let size = bytes.len() as u64;
        Self::new(smol::io::Cursor::new(bytes), Some(size))
    }

    /// A stream of unknown length.
    pub fn stream(source: impl AsyncRead + Send + 'static) -> Self {
        Self::new(source, None)
    }

    /// Narrows the negotiation for this request (only ever restricts).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }
}

impl fmt::Debug for ReadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadResponse")
            .field("size", &self.size)
            .field("limits", &self.limits)
            .finish()
    }
}

/// What a write request gets: any [`AsyncWrite`] (closed when the transfer
/// completes).
pub struct WriteResponse {
    pub(crate) sink: Pin<Box<dyn AsyncWrite + Send>>,
    pub(crate) limits: Option<Limits>,
}

impl WriteResponse {
    /// A sink for the uploaded bytes.
    pub fn new(sink: impl AsyncWrite + Send + 'static) -> Self {
        WriteResponse {
            sink: Box::pin(sink),
            limits: None,
        }
    }

    /// Narrows the negotiation for this request.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }
}

impl fmt::Debug for WriteResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteResponse")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Decides what each request gets; runs in the session's own task.
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
        async { Err(TftpError::access_violation("Writes are not allowed")) }
    }
}

/// Serves a directory, confined by the kernel (see [`Root`]).
#[derive(Clone, Debug)]
pub struct DirHandler(Root);

impl DirHandler {
    /// Serves `root`, read-only.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        Root::open(root).map(DirHandler)
    }

    /// Accepts uploads of new files.
    pub fn allow_write(self, allow: bool) -> Self {
        DirHandler(self.0.allow_write(allow))
    }

    /// Lets uploads replace existing files.
    pub fn allow_overwrite(self, allow: bool) -> Self {
        DirHandler(self.0.allow_overwrite(allow))
    }
}

impl Handler for DirHandler {
    async fn read(&self, request: &Request) -> Result<ReadResponse, TftpError> {
        // Opened on the executor thread: cheaper than a blocking-pool hop.
        let (file, size) = self.0.open_read(request.filename())?;
        Ok(ReadResponse::new(FileSource(file), Some(size)))
    }

    async fn write(&self, request: &Request) -> Result<WriteResponse, TftpError> {
        let root = self.0.clone();
        let name = request.filename.clone();
        let upload = smol::unblock(move || root.open_write(&name)).await?;
        let (file, guard) = upload.into_parts();
        Ok(WriteResponse::new(Upload {
            file: smol::Unblock::new(file),
            guard,
        }))
    }
}

/// An upload: written through `smol::Unblock` to a temporary file that
/// `close` (called by the server only when the transfer completed) puts in
/// place; dropped otherwise, the temporary file is removed.
struct Upload {
    file: smol::Unblock<std::fs::File>,
    guard: tftp_blocking::root::UploadGuard,
}

impl AsyncWrite for Upload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.file).poll_close(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(self.guard.commit()),
            other => other,
        }
    }
}

/// A file read on the executor thread straight into the DATA packet (a
/// page-cache read costs less than a hop to the blocking pool); see
/// `tftp_tokio::DirHandler` for the trade-off.
struct FileSource(std::fs::File);

impl AsyncRead for FileSource {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        use std::io::Read;
        Poll::Ready(self.0.read(buf))
    }
}
