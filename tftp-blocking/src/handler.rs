//! The framework API on std I/O: a [`Handler`] decides what each request gets.

use std::fmt;
use std::io::{Read, Write};

use tftp_proto::options::Limits;
use tftp_proto::server::{Request, TftpError};

use crate::root::Root;

/// What a read request gets: any [`Read`] plus its size if known (answered
/// to `tsize`), and optionally a narrower policy for this request.
pub struct ReadResponse {
    pub(crate) source: Box<dyn Read + Send>,
    pub(crate) size: Option<u64>,
    pub(crate) limits: Option<Limits>,
}

impl ReadResponse {
    /// A source of known size (`Some`) or unknown length (`None`: a stream;
    /// `tsize` is then not acknowledged).
    pub fn new(source: impl Read + Send + 'static, size: Option<u64>) -> Self {
        ReadResponse {
            source: Box::new(source),
            size,
            limits: None,
        }
    }

    /// In-memory bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let size = bytes.len() as u64;
        Self::new(std::io::Cursor::new(bytes), Some(size))
    }

    /// A stream of unknown length.
    pub fn stream(source: impl Read + Send + 'static) -> Self {
        Self::new(source, None)
    }

    /// Narrows the negotiation for this request; it can only restrict the
    /// server's limits.
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

/// Where an upload's bytes go: a [`Write`] (flushed per block) that is told
/// when the transfer completed.
pub trait Sink: Write + Send {
    /// The transfer completed (called once, only on success).
    fn complete(&mut self) -> std::io::Result<()> {
        self.flush()
    }
}

impl Sink for crate::root::Upload {
    fn complete(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.guard_mut().1.commit()
    }
}

/// A plain [`Write`] as a [`Sink`].
struct Plain<W>(W);

impl<W: Write + Send> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Sink for Plain<W> {}

/// What a write request gets: a sink for the bytes.
pub struct WriteResponse {
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) limits: Option<Limits>,
}

impl WriteResponse {
    /// Any [`Write`] for the uploaded bytes.
    pub fn new(sink: impl Write + Send + 'static) -> Self {
        WriteResponse {
            sink: Box::new(Plain(sink)),
            limits: None,
        }
    }

    /// A [`Sink`] that is told when the upload completed.
    pub fn from_sink(sink: impl Sink + 'static) -> Self {
        WriteResponse {
            sink: Box::new(sink),
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

/// Decides what each request gets. It runs on the session's own thread, never
/// on the accept thread, so a slow backend delays only its own client.
pub trait Handler: Send + Sync + 'static {
    /// A read request (RRQ).
    fn read(&self, request: &Request) -> Result<ReadResponse, TftpError>;

    /// A write request (WRQ). Refused with ERROR 2 unless implemented.
    fn write(&self, request: &Request) -> Result<WriteResponse, TftpError> {
        let _ = request;
        Err(TftpError::access_violation("Writes are not allowed"))
    }
}

/// Serves a directory, confined by the kernel (see [`Root`]); read-only
/// unless writes are enabled.
#[derive(Clone, Debug)]
pub struct DirHandler(Root);

impl DirHandler {
    /// Serves `root`, read-only.
    pub fn new(root: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
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
    fn read(&self, request: &Request) -> Result<ReadResponse, TftpError> {
        let (file, size) = self.0.open_read(request.filename())?;
        Ok(ReadResponse::new(file, Some(size)))
    }

    fn write(&self, request: &Request) -> Result<WriteResponse, TftpError> {
        Ok(WriteResponse::from_sink(
            self.0.open_write(request.filename())?,
        ))
    }
}
