//! The framework API: a [`Handler`] decides what each request gets.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use tftp_proto::options::Limits;
use tokio::io::{AsyncRead, AsyncWrite};

/// A request as the handler sees it: file name, mode, options, peer and
/// local address (the core's [`Request`](tftp_proto::server::Request)).
pub type RequestInfo = tftp_proto::server::Request;

pub use tftp_proto::server::TftpError;

/// What a read request gets: any [`AsyncRead`] plus its size if known
/// (answered to `tsize`), and optionally a narrower policy for this request.
pub struct ReadResponse {
    pub(crate) source: Pin<Box<dyn AsyncRead + Send>>,
    pub(crate) size: Option<u64>,
    pub(crate) limits: Option<Limits>,
}

impl ReadResponse {
    /// A source of known size (`Some`) or unknown length (`None`: a stream;
    /// `tsize` is then not acknowledged).
    pub fn new(source: impl AsyncRead + Send + 'static, size: Option<u64>) -> Self {
        ReadResponse {
            source: Box::pin(source),
            size,
            limits: None,
        }
    }

    /// In-memory bytes (a generated boot config, say).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let size = bytes.len() as u64;
        Self::new(std::io::Cursor::new(bytes), Some(size))
    }

    /// An open file; its size comes from its metadata.
    pub async fn from_file(file: tokio::fs::File) -> std::io::Result<Self> {
        let size = file.metadata().await?.len();
        Ok(Self::new(file, Some(size)))
    }

    /// A stream of unknown length.
    pub fn stream(source: impl AsyncRead + Send + 'static) -> Self {
        Self::new(source, None)
    }

    /// Narrows the negotiation for this request (per-client config: cap
    /// `blksize` for a ROM known to break, turn options off for clients that
    /// never acknowledge an OACK). It can only restrict the server's limits.
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

/// What a write request gets: any [`AsyncWrite`] (shut down when the
/// transfer completes), and optionally a narrower policy.
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

    /// Narrows the negotiation for this request; see [`ReadResponse::with_limits`].
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

/// Decides what each request gets (fbtftp's `get_handler` +
/// `get_response_data`). It runs inside the session's own task, never in the
/// accept loop, so a slow backend delays only its own client.
///
/// ```
/// use tftp_tokio::{Handler, ReadResponse, RequestInfo, TftpError};
///
/// struct Hello;
///
/// impl Handler for Hello {
///     async fn read(&self, req: &RequestInfo) -> Result<ReadResponse, TftpError> {
///         match req.filename() {
///             b"hello.txt" => Ok(ReadResponse::from_bytes(format!("hello {}\n", req.peer().ip()))),
///             _ => Err(TftpError::not_found()),
///         }
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// A read request (RRQ).
    fn read(
        &self,
        request: &RequestInfo,
    ) -> impl Future<Output = Result<ReadResponse, TftpError>> + Send;

    /// A write request (WRQ). Refused with ERROR 2 unless implemented.
    fn write(
        &self,
        request: &RequestInfo,
    ) -> impl Future<Output = Result<WriteResponse, TftpError>> + Send {
        let _ = request;
        async { Err(TftpError::access_violation("Writes are not allowed")) }
    }
}
