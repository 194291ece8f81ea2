//! A directory served under kernel confinement: what [`DirHandler`](crate::DirHandler)
//! opens files through.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use tftp_proto::packet::ErrorCode;
use tftp_proto::server::TftpError;

/// A served directory; read-only unless writes are enabled.
#[derive(Clone, Debug)]
pub struct Root {
    dir: Arc<Dir>,
    allow_write: bool,
    allow_overwrite: bool,
}

impl Root {
    /// Opens `path` (the only use of ambient authority: everything else is
    /// relative to this handle). Read-only.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let dir = Dir::open_ambient_dir(path.as_ref(), ambient_authority())?;
        Ok(Root {
            dir: Arc::new(dir),
            allow_write: false,
            allow_overwrite: false,
        })
    }

    /// Accepts uploads of new files (existing ones get ERROR 6 unless
    /// [`Root::allow_overwrite`] is also set).
    pub fn allow_write(mut self, allow: bool) -> Self {
        self.allow_write = allow;
        self
    }

    /// Lets uploads replace existing regular files.
    pub fn allow_overwrite(mut self, allow: bool) -> Self {
        self.allow_overwrite = allow;
        self
    }

    /// Opens a regular file for reading; returns it with its size.
    pub fn open_read(&self, filename: &[u8]) -> Result<(std::fs::File, u64), TftpError> {
        let path = relative(filename)?;
        let file = self.dir.open(&path).map_err(|e| map_error(&e))?;
        let meta = file.metadata().map_err(|e| map_error(&e))?;
        if !meta.is_file() {
            return Err(TftpError::access_violation("Not a regular file"));
        }
        Ok((file.into_std(), meta.len()))
    }

    /// Starts an upload: the bytes go to a temporary file beside the target
    /// and only [`Upload::commit`] puts them in place, so a failed or
    /// aborted upload never leaves a partial file nor destroys the old one.
    /// New files only, unless overwrite is allowed (then regular files only).
    pub fn open_write(&self, filename: &[u8]) -> Result<Upload, TftpError> {
        if !self.allow_write {
            return Err(TftpError::access_violation("Writes are not allowed"));
        }
        let target = relative(filename)?;
        match self.dir.symlink_metadata(&target) {
            Ok(meta) if !self.allow_overwrite => {
                let _ = meta;
                return Err(TftpError::new(ErrorCode::FileExists, "File already exists"));
            }
            Ok(meta) if !meta.is_file() => {
                return Err(TftpError::access_violation("Not a regular file"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(map_error(&e)),
        }
        let name = target.file_name().ok_or_else(TftpError::not_found)?;
        let unique = UPLOADS.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tftp-upload-{}-{unique}", std::process::id()));
        let temp = target.with_file_name(temp_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let file = self
            .dir
            .open_with(&temp, &options)
            .map_err(|e| map_error(&e))?
            .into_std();
        Ok(Upload {
            file,
            guard: UploadGuard {
                dir: Arc::clone(&self.dir),
                temp,
                target,
                overwrite: self.allow_overwrite,
                done: false,
            },
        })
    }
}

/// Numbers temporary upload files within this process.
static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// An upload in progress (see [`Root::open_write`]): bytes go to the
/// temporary file; [`Upload::commit`] flushes it and puts it in place, and
/// dropped uncommitted it is removed.
#[derive(Debug)]
pub struct Upload {
    file: std::fs::File,
    guard: UploadGuard,
}

/// Deliberately not `std::io::Write`: a plain writer converts into a
/// blocking sink that only flushes on completion, which would throw the
/// upload away; [`DirHandler`](crate::DirHandler) wraps it in sinks that
/// commit.
impl Upload {
    /// Writes some of `buf` to the temporary file.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        std::io::Write::write(&mut self.file, buf)
    }

    /// Flushes the temporary file.
    pub fn flush(&mut self) -> io::Result<()> {
        std::io::Write::flush(&mut self.file)
    }

    /// Flushes and puts the file in place (idempotent).
    pub fn commit(&mut self) -> io::Result<()> {
        self.flush()?;
        self.guard.commit()
    }
}

/// Puts an upload's temporary file in place ([`UploadGuard::commit`]) or,
/// when dropped uncommitted, removes it.
#[derive(Debug)]
struct UploadGuard {
    dir: Arc<Dir>,
    temp: PathBuf,
    target: PathBuf,
    overwrite: bool,
    done: bool,
}

impl UploadGuard {
    /// Renames the temporary file to the target: atomically replacing it when
    /// overwrite is allowed, otherwise linking it only if the name is still
    /// free (a file created meanwhile is not clobbered).
    fn commit(&mut self) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        let result = if self.overwrite {
            self.dir.rename(&self.temp, &self.dir, &self.target)
        } else {
            self.dir
                .hard_link(&self.temp, &self.dir, &self.target)
                .and_then(|()| self.dir.remove_file(&self.temp))
        };
        if result.is_ok() {
            self.done = true;
        }
        result
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.dir.remove_file(&self.temp);
        }
    }
}

/// The request's file name as a path relative to the root.
fn relative(filename: &[u8]) -> Result<PathBuf, TftpError> {
    let mut name = filename;
    while let Some(rest) = name.strip_prefix(b"/") {
        name = rest;
    }
    if name.is_empty() {
        return Err(TftpError::not_found());
    }
    Ok(PathBuf::from(OsStr::from_bytes(name)))
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
