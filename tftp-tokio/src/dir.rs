//! [`DirHandler`]: serves the files under a root directory, confined by the
//! kernel through [`tftp_blocking::root::Root`] (`openat2(RESOLVE_BENEATH)`
//! via cap-std; see there). A leading `/` in a request is taken relative to
//! the root. Error messages never contain local paths.

use std::io;
use std::path::Path;

use tftp_blocking::root::Root;
use tftp_proto::packet::ErrorCode;

use crate::handler::{Handler, ReadResponse, RequestInfo, TftpError, WriteResponse};

/// Serves a directory; read-only unless writes are enabled.
#[derive(Clone, Debug)]
pub struct DirHandler(Root);

impl DirHandler {
    /// Opens `root`; read-only.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        Root::open(root).map(DirHandler)
    }

    /// Accepts uploads of new files (existing files are refused with ERROR 6
    /// unless [`DirHandler::allow_overwrite`] is also set).
    pub fn allow_write(self, allow: bool) -> Self {
        DirHandler(self.0.allow_write(allow))
    }

    /// Lets uploads replace existing files.
    pub fn allow_overwrite(self, allow: bool) -> Self {
        DirHandler(self.0.allow_overwrite(allow))
    }
}

fn internal() -> TftpError {
    TftpError::new(ErrorCode::NotDefined, "Internal error")
}

impl Handler for DirHandler {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        // Opened on the runtime thread, like the reads below: an open and a
        // stat of a cached file cost less than a hop to the blocking pool.
        let (file, size) = self.0.open_read(request.filename())?;
        Ok(ReadResponse::new(FileSource(file), Some(size)))
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        let root = self.0.clone();
        let name = request.filename.clone();
        let upload = tokio::task::spawn_blocking(move || root.open_write(&name))
            .await
            .map_err(|_| internal())??;
        let (file, guard) = upload.into_parts();
        Ok(WriteResponse::new(Upload {
            file: tokio::fs::File::from_std(file),
            guard,
        }))
    }
}

/// An upload: written through `tokio::fs::File` to a temporary file that
/// `shutdown` (called by the server only when the transfer completed) puts
/// in place; dropped otherwise, the temporary file is removed.
struct Upload {
    file: tokio::fs::File,
    guard: tftp_blocking::root::UploadGuard,
}

impl tokio::io::AsyncWrite for Upload {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match std::pin::Pin::new(&mut self.file).poll_shutdown(cx) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(self.guard.commit()),
            other => other,
        }
    }
}

/// A file read with plain `read` calls on the runtime thread, straight into
/// the DATA packet. Served files are expected on a local filesystem, where a
/// read from the page cache takes microseconds; a hop to the blocking pool
/// per block (what `tokio::fs::File` does) costs more than the read itself.
/// Handlers serving from slow or network filesystems can return a
/// `tokio::fs::File` instead.
struct FileSource(std::fs::File);

impl tokio::io::AsyncRead for FileSource {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::io::Read;
        let n = self.0.read(buf.initialize_unfilled())?;
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}
