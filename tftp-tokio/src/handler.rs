//! The framework API in tokio's I/O traits: a [`Handler`] decides what each
//! request gets; [`Bridge`] serves it through `tftp_io`.

use std::future::Future;
use std::pin::Pin;

use tftp_io::{AsyncSink, AsyncSource, DirHandler, TftpError};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Compat;

/// A request as the handler sees it: file name, mode, options, peer and
/// local address.
pub type RequestInfo = tftp_io::Request;

/// What a read request gets: any tokio [`AsyncRead`] plus its size if known
/// (answered to `tsize`), and optionally a narrower policy for this request.
pub type ReadResponse = tftp_io::ReadResponse<TokioSource>;

/// What a write request gets: any tokio [`AsyncWrite`] (shut down only when
/// the transfer completed), and optionally a narrower policy.
pub type WriteResponse = tftp_io::WriteResponse<TokioSink>;

/// The source of a [`ReadResponse`]: any tokio [`AsyncRead`].
pub struct TokioSource(pub(crate) Source);

pub(crate) enum Source {
    Tokio(Pin<Box<dyn AsyncRead + Send>>),
    Native(AsyncSource),
}

impl<R: AsyncRead + Send + 'static> From<R> for TokioSource {
    fn from(source: R) -> Self {
        TokioSource(Source::Tokio(Box::pin(source)))
    }
}

impl tftp_io::FromBytes for TokioSource {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        TokioSource::from(std::io::Cursor::new(bytes))
    }
}

/// The sink of a [`WriteResponse`]: any tokio [`AsyncWrite`].
pub struct TokioSink(Sink);

enum Sink {
    Tokio(Pin<Box<dyn AsyncWrite + Send>>),
    Native(AsyncSink),
}

impl<W: AsyncWrite + Send + 'static> From<W> for TokioSink {
    fn from(sink: W) -> Self {
        TokioSink(Sink::Tokio(Box::pin(sink)))
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
        async { Err(tftp_io::writes_refused()) }
    }
}

/// The shared directory handler, in tokio terms (its files are read and
/// written on the runtime thread, an upload's closing `fsync`s run on a
/// helper thread; see [`DirHandler`]).
/// One handler shared by several servers (TFTP and HTTP, say).
impl<H: Handler> Handler for std::sync::Arc<H> {
    fn read(
        &self,
        request: &RequestInfo,
    ) -> impl Future<Output = Result<ReadResponse, TftpError>> + Send {
        (**self).read(request)
    }

    fn write(
        &self,
        request: &RequestInfo,
    ) -> impl Future<Output = Result<WriteResponse, TftpError>> + Send {
        (**self).write(request)
    }
}

impl Handler for DirHandler {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        let response = tftp_io::Handler::read(self, request).await?;
        Ok(response.map_source(|s| TokioSource(Source::Native(s))))
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        let response = tftp_io::Handler::write(self, request).await?;
        Ok(response.map_sink(|s| TokioSink(Sink::Native(s))))
    }
}

/// Remap rules in front of a tokio handler (see [`tftp_io::remap`]).
impl<H: Handler> Handler for tftp_io::remap::Remap<H> {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        self.inner().read(&self.remapped(request)?).await
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        self.inner().write(&self.remapped(request)?).await
    }
}

/// A tokio [`Handler`] served as a `futures_io` one (what [`Server`](crate::Server) runs).
#[derive(Debug)]
pub struct Bridge<H>(pub H);

impl<H: Handler> tftp_io::Handler for Bridge<H> {
    async fn read(&self, request: &RequestInfo) -> Result<tftp_io::ReadResponse, TftpError> {
        let response = self.0.read(request).await?;
        Ok(response.map_source(|s| match s.0 {
            Source::Tokio(s) => AsyncSource::from(Compat(s)),
            Source::Native(s) => s,
        }))
    }

    async fn write(&self, request: &RequestInfo) -> Result<tftp_io::WriteResponse, TftpError> {
        let response = self.0.write(request).await?;
        Ok(response.map_sink(|s| match s.0 {
            Sink::Tokio(s) => AsyncSink::from(Compat(s)),
            Sink::Native(s) => s,
        }))
    }
}

/// [`tftp_io::Fallback`] of two tokio handlers: the second for the reads
/// the first answers ERROR 1 (file not found).
impl<A: Handler, B: Handler> Handler for tftp_io::Fallback<A, B> {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        match self.first().read(request).await {
            Err(e) if Self::falls_through(&e) => self.then().read(request).await,
            other => other,
        }
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        self.first().write(request).await
    }
}
