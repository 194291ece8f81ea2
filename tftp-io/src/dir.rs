//! [`DirHandler`]: serves the files under a root directory, confined by the
//! kernel through [`Root`] (`openat2(RESOLVE_IN_ROOT)`: chroot semantics). One
//! type for every runtime: it is a [`Handler`](crate::Handler) (futures-io)
//! and a [`blocking::Handler`](crate::blocking::Handler) (std I/O), and
//! tftp-tokio gives it its tokio `Handler`.
//!
//! Files are opened, read and written with plain syscalls on the calling
//! thread (reads through the session's read-ahead buffer, see
//! [`READ_AHEAD`](crate::READ_AHEAD), or straight into the DATA packets;
//! writes straight out of them): served files are
//! expected on a local filesystem, where a page-cache read or write takes
//! microseconds and a hop to a blocking pool costs more than the work.
//! Handlers serving from slow or network filesystems should return their
//! own runtime-pooled file type instead. The exception is the end of an
//! upload on an async runtime: its `fsync`s and rename, which wait for the
//! disk, run on a helper thread while the session's task waits for them.

use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use tftp_proto::options::Requested;
use tftp_proto::server::{Request, TftpError};

use crate::blocking::{self, StdSink, StdSource};
use crate::handler::{AsyncSource, Handler, ReadResponse, Source, WriteResponse};
use crate::root::{Root, Upload};

/// Serves a directory; read-only unless writes are enabled.
#[derive(Clone, Debug)]
pub struct DirHandler {
    root: Root,
    client_root: Option<ClientKey>,
}

/// What names a client's own directory ([`DirHandler::per_client_root_by`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKey {
    /// Its IP address as text: `ROOT/192.0.2.7/`, `ROOT/2001:db8::7/`.
    Ip,
    /// Its MAC address in pxelinux's spelling, `ROOT/01-aa-bb-cc-dd-ee-ff/`
    /// (from the kernel's neighbour table: [`mac_of`](crate::mac_of));
    /// then, as for [`ClientKey::Ip`], its IP address's directory; then the
    /// root.
    Mac,
}

impl DirHandler {
    /// Opens `root`; read-only.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        Ok(DirHandler {
            root: Root::open(root)?,
            client_root: None,
        })
    }

    /// Accepts uploads of new files (existing files are refused with ERROR 6
    /// unless [`DirHandler::allow_overwrite`] is also set).
    pub fn allow_write(mut self, allow: bool) -> Self {
        self.root = self.root.allow_write(allow);
        self
    }

    /// Lets uploads replace existing files.
    pub fn allow_overwrite(mut self, allow: bool) -> Self {
        self.root = self.root.allow_overwrite(allow);
        self
    }

    /// The largest upload accepted; see [`Root::max_upload_size`].
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.root = self.root.max_upload_size(bytes);
        self
    }

    /// Uploads only under `dir`; see [`Root::upload_dir`].
    pub fn upload_dir(mut self, dir: impl AsRef<[u8]>) -> Self {
        self.root = self.root.upload_dir(dir);
        self
    }

    /// dnsmasq's `tftp-unique-root`: a client whose address names a
    /// directory of the root (`ROOT/192.0.2.7/`, `ROOT/2001:db8::7/`) is
    /// served from that directory only, reads and writes; every other client
    /// is served from the root. The client's directory is sealed: a
    /// request's `..` are taken lexically, before any symlink is followed,
    /// so no name climbs out of it, not even after a symlink
    /// (`shared/../10.0.0.9/x` names `10.0.0.9/x` in the client's own
    /// directory), and a name that would climb above it gets ERROR 2.
    /// Symlinks in it may point into the rest of the root (`pxelinux.0 ->
    /// ../pxelinux.0`, `shared -> ../shared`, for shared files: reads and
    /// writes follow them), never outside.
    pub fn per_client_root(mut self, on: bool) -> Self {
        self.client_root = on.then_some(ClientKey::Ip);
        self
    }

    /// [`per_client_root`](Self::per_client_root) with the client's
    /// directory named by `key`: its IP address, or its MAC address
    /// (dnsmasq's `tftp-unique-root=mac`), with the same sealing.
    pub fn per_client_root_by(mut self, key: ClientKey) -> Self {
        self.client_root = Some(key);
        self
    }

    /// The confined root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The client's own directory, when `per_client_root` is on and it exists.
    fn scope(&self, request: &Request) -> Option<Vec<u8>> {
        let ip = request.peer().ip();
        match self.client_root? {
            ClientKey::Ip => self.root.client_scope(ip),
            ClientKey::Mac => crate::neighbour::mac_of(ip)
                .and_then(|mac| self.root.scope_named(mac.pxelinux_name().as_bytes()))
                .or_else(|| self.root.client_scope(ip)),
        }
    }

    /// The file, its size and its modification time (one `fstat`).
    fn open_read(
        &self,
        request: &Request,
    ) -> Result<(std::fs::File, u64, Option<std::time::SystemTime>), TftpError> {
        let scope = self.scope(request);
        self.root
            .open_read_meta(scope.as_deref(), request.filename())
            .map(|(file, meta)| (file, meta.len(), meta.modified().ok()))
    }

    fn open_write(&self, request: &Request) -> Result<Upload, TftpError> {
        let scope = self.scope(request);
        let size = match request.requested().tsize {
            Requested::Value(n) => Some(n),
            _ => None,
        };
        self.root
            .open_write_in(scope.as_deref(), request.filename(), size)
    }
}

impl Handler for DirHandler {
    async fn read(&self, request: &Request) -> Result<ReadResponse, TftpError> {
        let (file, size, modified) = self.open_read(request)?;
        let source = FileSource::new(file, size);
        let response = ReadResponse::new(AsyncSource(Source::File(source)), Some(size));
        Ok(match modified {
            Some(time) => response.with_modified(time),
            None => response,
        })
    }

    async fn write(&self, request: &Request) -> Result<WriteResponse, TftpError> {
        Ok(WriteResponse::new(self.open_write(request)?))
    }
}

impl blocking::Handler for DirHandler {
    fn read(&self, request: &Request) -> Result<ReadResponse<StdSource>, TftpError> {
        let (file, size, _) = self.open_read(request)?;
        Ok(ReadResponse::new(FileSource::new(file, size), Some(size)))
    }

    fn write(&self, request: &Request) -> Result<WriteResponse<StdSink>, TftpError> {
        let upload = self.open_write(request)?;
        Ok(WriteResponse::from_sink(UploadSink(upload)))
    }
}

/// A file read on the calling thread (see the module docs), up to the size
/// it had when opened (the `tsize` the client was told): then it is closed
/// at once, so a session that has read all of a small file (its read-ahead
/// holds it) no longer holds a descriptor for it.
pub(crate) struct FileSource {
    file: Option<std::fs::File>,
    left: u64,
}

impl FileSource {
    fn new(file: std::fs::File, size: u64) -> Self {
        FileSource {
            file: Some(file),
            left: size,
        }
    }
}

impl FileSource {
    /// Up to `max` next bytes in a buffer of their own, read straight into
    /// it (no zeroing, no copy): empty at the end.
    pub(crate) fn read_owned(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let want = max.min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let Some(file) = self.file.as_ref() else {
            return Ok(Vec::new());
        };
        let mut buf = Vec::with_capacity(want);
        let n = loop {
            match rustix::io::read(file, rustix::buffer::spare_capacity(&mut buf)) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        if n == 0 {
            self.file = None;
        } else {
            self.left = self.left.saturating_sub(n as u64);
            if self.left == 0 {
                self.file = None;
            }
        }
        Ok(buf)
    }

    /// Moves `n` bytes on (at most to the end it was opened with).
    pub(crate) fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = n.min(self.left);
        if let Some(file) = self.file.as_mut() {
            let step = i64::try_from(n)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "skip too far"))?;
            file.seek(io::SeekFrom::Current(step))?;
        }
        self.left -= n;
        Ok(())
    }
}

impl Read for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let result = file.read(buf.get_mut(..want).unwrap_or_default());
        match &result {
            Ok(0) => self.file = None,
            Ok(n) => {
                self.left = self.left.saturating_sub(*n as u64);
                if self.left == 0 {
                    self.file = None;
                }
            }
            Err(_) => {}
        }
        result
    }
}

impl AsyncRead for FileSource {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().read(buf))
    }
}

/// An upload written on the calling thread; closing it (done by the server
/// only when the transfer completed) puts it in place, durably, on a helper
/// thread (see the module docs): the task waits, the worker does not.
impl AsyncWrite for Upload {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().flush())
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_commit(cx)
    }
}

/// An upload as a blocking sink: completing it puts it in place.
struct UploadSink(Upload);

impl Write for UploadSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl blocking::Sink for UploadSink {
    fn complete(&mut self) -> io::Result<()> {
        self.0.commit()
    }
}
