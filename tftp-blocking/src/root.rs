//! A directory served under kernel confinement, shared by the three
//! adapters' `DirHandler`s.
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

    /// Opens a file for an upload (new only, unless overwrite is allowed).
    pub fn open_write(&self, filename: &[u8]) -> Result<std::fs::File, TftpError> {
        if !self.allow_write {
            return Err(TftpError::access_violation("Writes are not allowed"));
        }
        let path = relative(filename)?;
        let mut options = OpenOptions::new();
        options.write(true);
        if self.allow_overwrite {
            if let Ok(meta) = self.dir.symlink_metadata(&path) {
                if !meta.is_file() {
                    return Err(TftpError::access_violation("Not a regular file"));
                }
            }
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        self.dir
            .open_with(&path, &options)
            .map(|f| f.into_std())
            .map_err(|e| map_error(&e))
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
