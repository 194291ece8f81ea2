//! The framework API: a [`Handler`] decides what each request gets.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tftp_proto::options::{Direction, Limits, RequestedOptions};
use tftp_proto::packet::{ErrorCode, Mode, RawOptions};
use tftp_proto::server::Request;
use tokio::io::{AsyncRead, AsyncWrite};

/// A request as the handler sees it.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    request: Request,
    /// The local address the request arrived on.
    pub local: SocketAddr,
}

impl RequestInfo {
    pub(crate) fn new(request: Request, local: SocketAddr) -> Self {
        RequestInfo { request, local }
    }

    /// The file name as sent (bytes: not assumed to be UTF-8).
    pub fn filename(&self) -> &[u8] {
        &self.request.filename
    }

    /// The file name as text, with invalid UTF-8 replaced.
    pub fn filename_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.request.filename)
    }

    /// Transfer mode.
    pub fn mode(&self) -> Mode {
        self.request.mode
    }

    /// Read (RRQ) or write (WRQ).
    pub fn direction(&self) -> Direction {
        self.request.direction
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.request.peer
    }

    /// The options as sent, in order.
    pub fn options(&self) -> RawOptions<'_> {
        self.request.options()
    }

    /// The options sorted into the four TFTP options, unknown ones and
    /// duplicates.
    pub fn requested(&self) -> RequestedOptions<'_> {
        self.request.requested()
    }

    /// The underlying core request.
    pub fn request(&self) -> &Request {
        &self.request
    }
}

/// An error the handler answers a request with: sent to the client as a TFTP
/// ERROR packet with this code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TftpError {
    /// The ERROR code.
    pub code: ErrorCode,
    /// The message (keep it short; never put local paths in it).
    pub message: String,
}

impl TftpError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TftpError {
            code,
            message: message.into(),
        }
    }

    /// ERROR 1, "File not found".
    pub fn not_found() -> Self {
        Self::new(ErrorCode::FileNotFound, "File not found")
    }

    /// ERROR 2 with a message.
    pub fn access_violation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AccessViolation, message)
    }
}

impl fmt::Display for TftpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TFTP error {}: {}", self.code.as_u16(), self.message)
    }
}

impl std::error::Error for TftpError {}

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
