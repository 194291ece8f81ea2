//! [`DirHandler`]: serves the files under a root directory, confined by the
//! kernel.
//!
//! Every open goes through [`cap_std::fs::Dir`], which on Linux resolves the
//! path with `openat2(RESOLVE_BENEATH)` (and an equivalent checked walk where
//! that is unavailable): `..`, absolute paths and symlinks that leave the root
//! fail in the kernel, whatever the file name looks like. No root privileges
//! are needed. A leading `/` in a request is taken relative to the root (many
//! boot ROMs send `/pxelinux.0`). Error messages never contain local paths.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use tftp_proto::packet::ErrorCode;

use crate::handler::{Handler, ReadResponse, RequestInfo, TftpError, WriteResponse};

/// Serves a directory; read-only unless writes are enabled.
#[derive(Clone, Debug)]
pub struct DirHandler {
    dir: Arc<Dir>,
    allow_write: bool,
    allow_overwrite: bool,
}

impl DirHandler {
    /// Opens `root` (the only use of ambient authority: everything else is
    /// relative to this handle). Read-only.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let dir = Dir::open_ambient_dir(root.as_ref(), ambient_authority())?;
        Ok(DirHandler {
            dir: Arc::new(dir),
            allow_write: false,
            allow_overwrite: false,
        })
    }

    /// Accepts uploads of new files (existing files are refused with ERROR 6
    /// unless [`DirHandler::allow_overwrite`] is also set).
    pub fn allow_write(mut self, allow: bool) -> Self {
        self.allow_write = allow;
        self
    }

    /// Lets uploads replace existing files.
    pub fn allow_overwrite(mut self, allow: bool) -> Self {
        self.allow_overwrite = allow;
        self
    }
}

/// The request's file name as a path relative to the root.
fn relative(filename: &[u8]) -> Result<PathBuf, TftpError> {
    let trimmed = filename.strip_prefix(b"/").unwrap_or(filename);
    let trimmed: &[u8] = {
        let mut t = trimmed;
        while let Some(rest) = t.strip_prefix(b"/") {
            t = rest;
        }
        t
    };
    if trimmed.is_empty() {
        return Err(TftpError::not_found());
    }
    Ok(PathBuf::from(OsStr::from_bytes(trimmed)))
}

fn map_error(e: &io::Error) -> TftpError {
    match e.kind() {
        io::ErrorKind::NotFound => TftpError::not_found(),
        io::ErrorKind::AlreadyExists => {
            TftpError::new(ErrorCode::FileExists, "File already exists")
        }
        io::ErrorKind::StorageFull => TftpError::new(ErrorCode::DiskFull, "Disk full"),
        // Permission denied, and paths that would leave the root.
        _ => TftpError::access_violation("Access violation"),
    }
}

impl Handler for DirHandler {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        let path = relative(request.filename())?;
        let dir = Arc::clone(&self.dir);
        let opened =
            tokio::task::spawn_blocking(move || -> io::Result<(std::fs::File, u64, bool)> {
                let file = dir.open(&path)?;
                let meta = file.metadata()?;
                Ok((file.into_std(), meta.len(), meta.is_file()))
            })
            .await
            .map_err(|_| TftpError::new(ErrorCode::NotDefined, "Internal error"))?;
        match opened {
            Ok((_, _, false)) => Err(TftpError::access_violation("Not a regular file")),
            Ok((file, len, true)) => Ok(ReadResponse::new(FileSource(file), Some(len))),
            Err(e) => Err(map_error(&e)),
        }
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        if !self.allow_write {
            return Err(TftpError::access_violation("Writes are not allowed"));
        }
        let path = relative(request.filename())?;
        let dir = Arc::clone(&self.dir);
        let overwrite = self.allow_overwrite;
        let opened = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
            let mut options = OpenOptions::new();
            options.write(true);
            if overwrite {
                options.create(true).truncate(true);
            } else {
                options.create_new(true);
            }
            if overwrite {
                if let Ok(meta) = dir.symlink_metadata(&path) {
                    if !meta.is_file() {
                        return Err(io::Error::from(io::ErrorKind::PermissionDenied));
                    }
                }
            }
            Ok(dir.open_with(&path, &options)?.into_std())
        })
        .await
        .map_err(|_| TftpError::new(ErrorCode::NotDefined, "Internal error"))?;
        match opened {
            Ok(file) => Ok(WriteResponse::new(tokio::fs::File::from_std(file))),
            Err(e) => Err(map_error(&e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slashes_are_relative() {
        assert_eq!(relative(b"/boot/x").unwrap(), PathBuf::from("boot/x"));
        assert_eq!(relative(b"//x").unwrap(), PathBuf::from("x"));
        assert_eq!(relative(b"x").unwrap(), PathBuf::from("x"));
        assert!(relative(b"/").is_err());
    }
}
