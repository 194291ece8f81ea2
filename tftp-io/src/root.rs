//! A directory served under kernel confinement: what [`DirHandler`](crate::DirHandler)
//! opens files through.
//!
//! Paths resolve as under tftpd-hpa's chroot, without root privileges: with
//! `openat2(RESOLVE_IN_ROOT)` (see [`crate::resolve`], which has a
//! checked walk for kernels without it), so an absolute symlink inside the
//! root (`/boot/vmlinuz -> /images/v6.1/vmlinuz`) and `..` in a symlink's
//! target resolve inside the root, and nothing resolves outside it. A
//! leading `/` in a request is taken relative to the root (many boot ROMs
//! send `/pxelinux.0`). Error messages never contain local paths.
//!
//! A request's own `..` are taken lexically, before the kernel sees the
//! name: each takes back the name before it in the request (`a/../b` is
//! `b`), never a symlink's target, and a name that climbs above the top
//! (`../x`, `a/../../x`) is refused with ERROR 2. The kernel so only follows
//! `..` in symlink targets, which the operator wrote. This is what seals a
//! client's directory ([`Root::client_scope`]): its symlinks may point into
//! the rest of the root (`shared -> ../shared`), and `shared/x.cfg` follows
//! one, but `shared/../10.0.0.9/x` names `10.0.0.9/x` in the client's own
//! directory, not beside the link's target, so no request name reaches
//! another client's directory or the root's files except through a symlink
//! of the client's directory. An upload directory ([`Root::upload_dir`]) is
//! sealed the same way, and more: it is the root of its uploads.

use std::ffi::OsStr;
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use rustix::fs::OFlags;
use tftp_proto::failure::Failure;
use tftp_proto::server::TftpError;

use crate::session::{failure, Stage};

use crate::{offload, resolve};

/// A served directory; read-only unless writes are enabled.
#[derive(Clone, Debug)]
pub struct Root {
    dir: Arc<Dir>,
    allow_write: bool,
    allow_overwrite: bool,
    max_upload_size: u64,
    /// Uploads only under this directory (normalised components).
    upload_dir: Option<Vec<Vec<u8>>>,
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
            max_upload_size: DEFAULT_MAX_UPLOAD_SIZE,
            upload_dir: None,
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

    /// The largest upload accepted, in bytes (default
    /// [`DEFAULT_MAX_UPLOAD_SIZE`]). A WRQ announcing a larger `tsize`, or
    /// more than the free space, gets ERROR 3 at once; an upload that grows
    /// past it gets ERROR 3 and leaves nothing behind.
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.max_upload_size = bytes;
        self
    }

    /// Accepts uploads only for names under `dir` (relative to the root,
    /// or to the client's directory, e.g. `incoming`), so a client cannot
    /// plant `pxelinux.cfg/01-<mac>` and take over another machine's boot.
    /// The name's own `..` are taken lexically (see the [module](self)
    /// docs) and must stay under `dir`; the rest resolves with `dir` as its
    /// root, so symlinks inside `dir`, and `..` in their targets, cannot
    /// lead an upload out of it.
    pub fn upload_dir(mut self, dir: impl AsRef<[u8]>) -> Self {
        self.upload_dir = Some(normalised(dir.as_ref()));
        self
    }

    /// Opens a regular file for reading; returns it with its size. The open
    /// never blocks (`O_NONBLOCK`, so a FIFO cannot stall the caller) and
    /// never takes a controlling terminal (`O_NOCTTY`); anything but a
    /// regular file is refused before a byte is read.
    pub fn open_read(&self, filename: &[u8]) -> Result<(std::fs::File, u64), TftpError> {
        self.open_read_in(None, filename)
    }

    /// [`Root::open_read`] in the subdirectory `scope` of the root (see
    /// [`Root::client_scope`]): `filename` cannot climb out of it, not even
    /// with `..` after a symlink (a request's `..` are lexical, see the
    /// [module](self) docs), though symlinks in it may point anywhere inside
    /// the root.
    pub fn open_read_in(
        &self,
        scope: Option<&[u8]>,
        filename: &[u8],
    ) -> Result<(std::fs::File, u64), TftpError> {
        self.open_read_meta(scope, filename)
            .map(|(file, meta)| (file, meta.len()))
    }

    /// [`Root::open_read_in`] with the file's metadata (one `fstat`).
    pub(crate) fn open_read_meta(
        &self,
        scope: Option<&[u8]>,
        filename: &[u8],
    ) -> Result<(std::fs::File, std::fs::Metadata), TftpError> {
        let path = scoped(scope, &relative(filename)?);
        if is_upload_temp(&path) {
            return Err(TftpError::not_found());
        }
        let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = std::fs::File::from(
            resolve::open(&*self.dir, &path, flags).map_err(|e| map_error(&e))?,
        );
        let meta = file.metadata().map_err(|e| map_error(&e))?;
        if !meta.is_file() {
            return Err(TftpError::from(Failure::NotRegularFile));
        }
        Ok((file, meta))
    }

    /// Removes the temporary files uploads left behind (a crash, a kill)
    /// anywhere under the root, without following symlinks and at most
    /// [`MAX_CLEANUP_DEPTH`] directories deep; returns how many. Such files are
    /// never served anyway. Run it at startup, before serving.
    pub fn remove_stale_uploads(&self) -> io::Result<usize> {
        remove_stale(&self.dir, 0)
    }

    /// The subdirectory of the root named after `client` (its address as
    /// text: `192.0.2.7`, `2001:db8::7`), if one exists: dnsmasq's
    /// `tftp-unique-root`. IPv4-mapped IPv6 addresses count as IPv4. Names
    /// opened in it are sealed in it (see the [module](self) docs): only
    /// its symlinks lead elsewhere in the root.
    pub fn client_scope(&self, client: IpAddr) -> Option<Vec<u8>> {
        self.scope_named(client.to_canonical().to_string().as_bytes())
    }

    /// The subdirectory `name` of the root (one path component, no `/`,
    /// not `.` or `..`), if it exists: a client's own directory by another
    /// name (`01-aa-bb-cc-dd-ee-ff`, its MAC), sealed as
    /// [`client_scope`](Self::client_scope)'s.
    pub fn scope_named(&self, name: &[u8]) -> Option<Vec<u8>> {
        if name.is_empty()
            || name.contains(&b'/')
            || name.contains(&0)
            || name == b"."
            || name == b".."
        {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        resolve::open(&*self.dir, name, flags)
            .ok()
            .map(|_| name.to_vec())
    }

    /// Starts an upload: the bytes go to a temporary file beside the target
    /// and only [`Upload::commit`] puts them in place, so a failed or
    /// aborted upload never leaves a partial file nor destroys the old one.
    /// New files only, unless overwrite is allowed (then regular files only).
    pub fn open_write(&self, filename: &[u8]) -> Result<Upload, TftpError> {
        self.open_write_in(None, filename, None)
    }

    /// [`Root::open_write`] in the subdirectory `scope` of the root, sealed
    /// in it as [`Root::open_read_in`], for an upload that announced `size`
    /// bytes (its `tsize`), if it did.
    pub fn open_write_in(
        &self,
        scope: Option<&[u8]>,
        filename: &[u8],
        size: Option<u64>,
    ) -> Result<Upload, TftpError> {
        if !self.allow_write {
            return Err(TftpError::from(Failure::ReadOnly));
        }
        if size.is_some_and(|n| n > self.max_upload_size) {
            return Err(TftpError::from(Failure::TooLarge));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let relative = relative(filename)?;
        let (base, path) = match &self.upload_dir {
            None => (None, scoped(scope, &relative)),
            Some(dir) => {
                // Resolved inside the upload directory as its own root, so
                // its symlinks (and `..` in their targets) cannot lead out of
                // it; the request's own `..` are gone already.
                let rest = under(&relative, dir)
                    .ok_or_else(|| TftpError::from(Failure::UploadsElsewhere))?;
                let dir = scoped(scope, &dir.join(&b'/'));
                let base = resolve::open(&*self.dir, &dir, flags).map_err(|e| map_error(&e))?;
                (Some(base), rest)
            }
        };
        let (parent, name) = split_last(&path).ok_or_else(TftpError::not_found)?;
        let parent = match &base {
            Some(base) => resolve::open(base, parent, flags),
            None => resolve::open(&*self.dir, parent, flags),
        }
        .map_err(|e| map_error(&e))?;
        if let (Some(size), Ok(space)) = (size, rustix::fs::fstatvfs(&parent)) {
            if size > space.f_bavail.saturating_mul(space.f_frsize) {
                return Err(TftpError::from(Failure::DiskFull));
            }
        }
        let dir = Dir::from_std_file(std::fs::File::from(parent));
        let target = PathBuf::from(OsStr::from_bytes(name));
        match dir.symlink_metadata(&target) {
            Ok(_) if !self.allow_overwrite => {
                return Err(TftpError::from(Failure::FileExists));
            }
            Ok(meta) if !meta.is_file() => return Err(TftpError::from(Failure::NotRegularFile)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(map_error(&e)),
        }
        if is_upload_temp(name) {
            return Err(TftpError::from(Failure::AccessViolation));
        }
        let unique = UPLOADS.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(&target);
        temp_name.push(format!("{UPLOAD_MARK}{}-{unique}", std::process::id()));
        let temp = PathBuf::from(temp_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let file = dir
            .open_with(&temp, &options)
            .map_err(|e| map_error(&e))?
            .into_std();
        Ok(Upload {
            written: 0,
            limit: self.max_upload_size,
            parts: Some(UploadParts {
                file,
                guard: UploadGuard {
                    dir,
                    temp,
                    target,
                    overwrite: self.allow_overwrite,
                    done: false,
                },
                #[cfg(test)]
                committed_on: None,
            }),
            committing: None,
        })
    }
}

/// Default of [`Root::max_upload_size`]: 64 MiB (boot configs, logs and
/// switch configurations fit many times over; raise it for firmware images).
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 64 << 20;

/// ERROR 3 text of an upload over the size limit.
pub const TOO_LARGE: &str = Failure::TooLarge.message();

/// What names an upload's temporary file: `.NAME.tftp-upload-PID-N`.
const UPLOAD_MARK: &str = ".tftp-upload-";

/// Whether the last component of `path` is an upload's temporary file: never
/// served (a crash may leave one half-written) nor uploaded to.
fn is_upload_temp(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let mark = UPLOAD_MARK.as_bytes();
    let Some(at) = name.windows(mark.len()).rposition(|w| w == mark) else {
        return false;
    };
    // `.NAME` before the mark, `PID-N` (digits) after it.
    let suffix = name.get(at + mark.len()..).unwrap_or_default();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    name.starts_with(b".")
        && at > 1
        && matches!(suffix.iter().position(|&b| b == b'-'),
            Some(dash) if digits(suffix.get(..dash).unwrap_or_default())
                && digits(suffix.get(dash + 1..).unwrap_or_default()))
}

/// Whether the process that named the upload temporary `name` still runs
/// (another server sharing the root, not this one): its upload is in
/// progress and is left alone.
fn writer_alive(name: &[u8]) -> bool {
    let mark = UPLOAD_MARK.as_bytes();
    let pid = name
        .windows(mark.len())
        .rposition(|w| w == mark)
        .and_then(|at| name.get(at + mark.len()..))
        .and_then(|rest| rest.split(|&b| b == b'-').next())
        .and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<i32>().ok());
    match pid.and_then(rustix::process::Pid::from_raw) {
        Some(pid) if pid != rustix::process::getpid() => {
            // Signal 0 only checks existence (EPERM: it exists, not ours).
            !matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            )
        }
        _ => false,
    }
}

/// How long an upload temporary may go unwritten and still count as in
/// progress (a running upload writes at least `Limits::min_rate` bytes a
/// second): older ones are stale even if their PID now names a process (PIDs
/// are reused after a crash or reboot).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

fn recently_written(entry: &cap_std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.into_std().elapsed().ok())
        .is_some_and(|age| age < STALE_AFTER)
}

/// Numbers temporary upload files within this process.
static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// An upload in progress (see [`Root::open_write`]): bytes go to the
/// temporary file; [`Upload::commit`] flushes it and puts it in place, and
/// dropped uncommitted it is removed.
#[derive(Debug)]
pub struct Upload {
    written: u64,
    limit: u64,
    /// `None` while its commit runs on a helper thread (or after it failed
    /// there).
    parts: Option<UploadParts>,
    /// The commit running on a helper thread ([`Upload::poll_commit`]).
    committing: Option<offload::Pending<UploadParts>>,
}

/// What a commit works on, moved to the helper thread that runs it.
#[derive(Debug)]
struct UploadParts {
    file: std::fs::File,
    guard: UploadGuard,
    /// The thread the commit ran on.
    #[cfg(test)]
    committed_on: Option<std::thread::ThreadId>,
}

impl UploadParts {
    /// See [`Upload::commit`].
    fn commit(&mut self) -> io::Result<()> {
        #[cfg(test)]
        {
            self.committed_on = Some(std::thread::current().id());
        }
        std::io::Write::flush(&mut self.file)?;
        if !self.guard.done {
            self.file.sync_all()?;
        }
        self.guard.commit()?;
        rustix::fs::fsync(&self.guard.dir)?;
        Ok(())
    }
}

/// Deliberately not `std::io::Write`: a plain writer converts into a
/// blocking sink that only flushes on completion, which would throw the
/// upload away; [`DirHandler`](crate::DirHandler) wraps it in sinks that
/// commit.
impl Upload {
    /// Writes some of `buf` to the temporary file; past the size limit it
    /// fails with [`io::ErrorKind::FileTooLarge`] (ERROR 3 to the client).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let after = self.written.saturating_add(buf.len() as u64);
        if after > self.limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, TOO_LARGE));
        }
        let n = std::io::Write::write(&mut self.parts()?.file, buf)?;
        self.written = self.written.saturating_add(n as u64);
        Ok(n)
    }

    /// Flushes the temporary file.
    pub fn flush(&mut self) -> io::Result<()> {
        std::io::Write::flush(&mut self.parts()?.file)
    }

    /// Flushes, makes the bytes durable (`fsync` of the file), puts the file
    /// in place and makes that durable too (`fsync` of its directory), so
    /// the final ACK promises only what survives a power cut. Idempotent.
    /// Runs on the calling thread (the threads server's session thread);
    /// closing it as a `futures_io::AsyncWrite` (what the async servers do)
    /// runs it on a helper thread instead.
    pub fn commit(&mut self) -> io::Result<()> {
        self.parts()?.commit()
    }

    /// [`Upload::commit`] on a helper thread (see [`crate::offload`]), never
    /// on the async runtime's worker that polls it: an `fsync` can take
    /// long on a busy disk, and would stall every session of that worker.
    /// Ready once the upload is durable and in place. Idempotent.
    pub(crate) fn poll_commit(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        if self.committing.is_none() {
            let mut parts = self.parts.take().ok_or_else(committing_failed)?;
            if parts.guard.done {
                self.parts = Some(parts);
                return Poll::Ready(Ok(()));
            }
            // Failed, the parts are dropped there: the guard removes the
            // temporary file.
            self.committing = Some(offload::spawn(move || parts.commit().map(|()| parts)));
        }
        let Some(committing) = &self.committing else {
            return Poll::Ready(Err(committing_failed()));
        };
        let result = std::task::ready!(committing.poll(cx));
        self.committing = None;
        Poll::Ready(result.map(|parts| self.parts = Some(parts)))
    }

    fn parts(&mut self) -> io::Result<&mut UploadParts> {
        self.parts.as_mut().ok_or_else(committing_failed)
    }
}

/// The error of an upload whose commit is running or has failed.
fn committing_failed() -> io::Error {
    io::Error::other("upload committing or failed")
}

/// Puts an upload's temporary file in place ([`UploadGuard::commit`]) or,
/// when dropped uncommitted, removes it.
#[derive(Debug)]
struct UploadGuard {
    /// The target's directory.
    dir: Dir,
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
            // Once linked the file is in place, whatever happens to the
            // temporary name.
            self.dir
                .hard_link(&self.temp, &self.dir, &self.target)
                .map(|()| {
                    self.done = true;
                    if let Err(e) = self.dir.remove_file(&self.temp) {
                        tracing::warn!(error = %e, "cannot remove an upload's temporary name");
                    }
                })
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

/// How deep [`Root::remove_stale_uploads`] looks.
pub const MAX_CLEANUP_DEPTH: usize = 16;

fn remove_stale(dir: &Dir, depth: usize) -> io::Result<usize> {
    let mut removed = 0;
    for entry in dir.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        let kind = entry.file_type()?;
        if kind.is_dir() && depth < MAX_CLEANUP_DEPTH {
            // An unreadable subdirectory is skipped, not fatal.
            match entry
                .open_dir()
                .and_then(|sub| remove_stale(&sub, depth + 1))
            {
                Ok(n) => removed += n,
                Err(e) => tracing::warn!(error = %e, "upload cleanup skipped a directory"),
            }
        } else if kind.is_file()
            && is_upload_temp(name.as_bytes())
            && !(writer_alive(name.as_bytes()) && recently_written(&entry))
        {
            dir.remove_file(&name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The request's file name, cleaned, relative to the root (or to the
/// client's directory): leading `/`s stripped (the root stands for `/`), no
/// empty or `.` components, and each `..` taking back the name before it in
/// the request itself, lexically, before any symlink is followed (as a URL's
/// `..`). So the kernel never resolves a `..` of the request, only those in
/// symlink targets (the operator's): `shared/../10.0.0.9/x`, with `shared ->
/// ../shared`, names `10.0.0.9/x` beside `shared`, not beside its target. A
/// name that climbs above the top (`../x`, `a/../../x`) is refused here. A
/// name that ends as a directory (`x/`, `x/.`, `x/..`) keeps a trailing `/`,
/// so it can only name a directory (refused later: not a regular file).
fn relative(filename: &[u8]) -> Result<Vec<u8>, TftpError> {
    let mut name = filename;
    while let Some(rest) = name.strip_prefix(b"/") {
        name = rest;
    }
    if name.is_empty() {
        return Err(TftpError::not_found());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut last: &[u8] = b"";
    for part in name.split(|&b| b == b'/') {
        last = part;
        match part {
            b"" | b"." => {}
            b".." => {
                parts
                    .pop()
                    .ok_or_else(|| TftpError::from(Failure::AccessViolation))?;
            }
            _ => parts.push(part),
        }
    }
    let mut path = parts.join(&b'/');
    if matches!(last, b"" | b"." | b"..") {
        if path.is_empty() {
            path.push(b'.');
        }
        path.push(b'/');
    }
    Ok(path)
}

/// The invariants of a request name's clean-up, for the `request_name`
/// fuzz target and its corpus replay (feature `fuzzing`): a name is refused
/// (ERROR 1 or 2) or becomes a relative path without `..`, `.` or empty
/// components (but for a trailing `/` that marks a directory), that a
/// second clean-up leaves unchanged, whose components are the name's own in
/// order, and that inside a client's directory stays under it. Panics on a
/// broken invariant; true otherwise (every input is a name).
#[cfg(feature = "fuzzing")]
pub fn check_request_name(name: &[u8]) -> bool {
    let path = match relative(name) {
        Ok(path) => path,
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    tftp_proto::packet::ErrorCode::FileNotFound
                        | tftp_proto::packet::ErrorCode::AccessViolation
                ),
                "{e:?}"
            );
            return true;
        }
    };
    assert!(!path.starts_with(b"/"), "{path:?}");
    let body = path.strip_suffix(b"/").unwrap_or(&path);
    if body != b"." {
        for part in body.split(|&b| b == b'/') {
            assert!(!matches!(part, b"" | b"." | b".."), "{path:?}");
        }
        // Every component is one of the name's, in order.
        let mut own = name.split(|&b| b == b'/');
        for part in body.split(|&b| b == b'/') {
            assert!(own.any(|p| p == part), "{part:?} of {path:?}");
        }
    }
    assert_eq!(relative(&path).ok().as_deref(), Some(&path[..]));
    let scope: &[u8] = b"10.0.0.7";
    let inside = scoped(Some(scope), &path);
    let parts = normalised(&inside);
    assert_eq!(parts.first().map(Vec::as_slice), Some(scope), "{inside:?}");
    true
}

/// The components of `path` after a lexical clean-up (no empty ones, no
/// `.`, `..` taking one back).
fn normalised(path: &[u8]) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(part.to_vec()),
        }
    }
    parts
}

/// What is left of `path` under the directory `dir` (both normalised), if
/// `path` is under it; a trailing `/` (a directory) is kept.
fn under(path: &[u8], dir: &[Vec<u8>]) -> Option<Vec<u8>> {
    let parts = normalised(path);
    let rest = parts.strip_prefix(dir)?;
    (!rest.is_empty()).then(|| {
        let mut rest = rest.join(&b'/');
        if path.ends_with(b"/") {
            rest.push(b'/');
        }
        rest
    })
}

/// `name` inside the subdirectory `scope`.
fn scoped(scope: Option<&[u8]>, name: &[u8]) -> Vec<u8> {
    match scope {
        Some(scope) => [scope, b"/", name].concat(),
        None => name.to_vec(),
    }
}

/// The parent path (`.` when there is none) and the last component, which
/// must be a file name (not `.`, `..`, nor empty: `x/` names a directory).
fn split_last(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (path.get(..i)?, path.get(i + 1..)?),
        None => (&b"."[..], path),
    };
    match name {
        b"" | b"." | b".." => None,
        _ => Some((if parent.is_empty() { b"." } else { parent }, name)),
    }
}

fn map_error(e: &io::Error) -> TftpError {
    TftpError::from(failure(Stage::Open, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slashes_are_relative() {
        assert_eq!(relative(b"/boot/x").unwrap(), b"boot/x");
        assert_eq!(relative(b"//x").unwrap(), b"x");
        assert_eq!(relative(b"x").unwrap(), b"x");
        assert!(relative(b"/").is_err());
    }

    #[test]
    fn names_that_climb_above_the_root_are_refused() {
        for name in [&b".."[..], b"../x", b"/../x", b"a/../../x", b"a/./../.."] {
            assert!(relative(name).is_err(), "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn dotdot_is_taken_lexically() {
        for (name, clean) in [
            (&b"a/../b"[..], &b"b"[..]),
            (b"shared/../10.0.0.9/x", b"10.0.0.9/x"),
            (b"shared/./../pxelinux.cfg/01-aa", b"pxelinux.cfg/01-aa"),
            (b"a//b/./c", b"a/b/c"),
            (b"a/b/../../c", b"c"),
            // What ends as a directory keeps saying so.
            (b"a/", b"a/"),
            (b"a/b/.", b"a/b/"),
            (b"a/b/..", b"a/"),
            (b"a/..", b"./"),
            (b".", b"./"),
        ] {
            let name_text = String::from_utf8_lossy(name);
            assert_eq!(relative(name).unwrap(), clean, "{name_text}");
        }
    }

    /// An async close commits on a helper thread, not on the thread that
    /// polls it (a runtime's worker), and only then is Ready: the file is in
    /// place and nothing temporary is left.
    #[test]
    fn async_commit_runs_off_the_polling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap().allow_write(true);
        let mut upload = root.open_write(b"up.bin").unwrap();
        assert_eq!(upload.write(b"durable").unwrap(), 7);
        let poller = std::thread::current().id();
        crate::offload::wait(&mut |cx| upload.poll_commit(cx)).unwrap();
        let ran_on = upload.parts.as_ref().and_then(|p| p.committed_on);
        assert!(ran_on.is_some_and(|t| t != poller), "{ran_on:?}");
        assert_eq!(
            std::fs::read(dir.path().join("up.bin")).unwrap(),
            b"durable"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["up.bin"]);
        // Idempotent, and the blocking commit still runs where it is called.
        crate::offload::wait(&mut |cx| upload.poll_commit(cx)).unwrap();
        let mut blocking = root.open_write(b"b.bin").unwrap();
        blocking.write(b"x").unwrap();
        blocking.commit().unwrap();
        let ran_on = blocking.parts.as_ref().and_then(|p| p.committed_on);
        assert_eq!(ran_on, Some(poller));
    }

    /// A commit that fails on the helper thread is reported, and leaves no
    /// temporary file behind.
    #[test]
    fn async_commit_failure_is_reported_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap().allow_write(true);
        let mut upload = root.open_write(b"taken").unwrap();
        upload.write(b"late").unwrap();
        // Created meanwhile: the new-only link must not clobber it.
        std::fs::write(dir.path().join("taken"), b"first").unwrap();
        let e = crate::offload::wait(&mut |cx| upload.poll_commit(cx)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"]);
        assert!(upload.write(b"more").is_err());
    }

    #[test]
    fn stale_uploads_are_found_and_removed() {
        // A process that has exited: its temporaries are stale.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let stale = format!(".a.tftp-upload-{dead}-0");
        let nested = format!("pxelinux.cfg/.01-aa.tftp-upload-{dead}-3");
        let ours = format!(".b.tftp-upload-{}-1", std::process::id());
        std::fs::create_dir_all(p.join("pxelinux.cfg")).unwrap();
        for name in [&stale, &nested, &ours] {
            std::fs::write(p.join(name), b"stale").unwrap();
        }
        // PID 1 runs: another server's upload in progress is left alone.
        std::fs::write(p.join(".c.tftp-upload-1-0"), b"in progress").unwrap();
        // ... unless it has not been written for long: the PID was reused.
        std::fs::write(p.join(".d.tftp-upload-1-1"), b"old").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(p.join(".d.tftp-upload-1-1"))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        std::fs::write(p.join("pxelinux.cfg/default"), b"keep").unwrap();
        std::fs::write(p.join(".hidden"), b"keep").unwrap();
        std::os::unix::fs::symlink("/", p.join("up")).unwrap();
        let root = Root::open(p).unwrap();
        assert_eq!(root.remove_stale_uploads().unwrap(), 4);
        assert!(!p.join(".d.tftp-upload-1-1").exists());
        for name in [&stale, &nested, &ours] {
            assert!(!p.join(name).exists(), "{name}");
        }
        assert!(p.join(".c.tftp-upload-1-0").exists());
        assert!(p.join("pxelinux.cfg/default").exists());
        assert!(p.join(".hidden").exists());
        assert_eq!(root.remove_stale_uploads().unwrap(), 0);
    }

    #[test]
    fn upload_temporaries_are_recognised() {
        assert!(is_upload_temp(b".a.tftp-upload-1-0"));
        assert!(is_upload_temp(b"dir/.a.tftp-upload-1-0"));
        assert!(!is_upload_temp(b"a.tftp-upload-1-0"));
        assert!(!is_upload_temp(b".tftp-upload/x"));
        assert!(!is_upload_temp(b".hidden"));
        assert!(!is_upload_temp(b".x.tftp-upload-notes"));
        assert!(!is_upload_temp(b".x.tftp-upload-1-"));
        assert!(!is_upload_temp(b"..tftp-upload-1-2x"));
    }

    #[test]
    fn upload_dir_prefixes() {
        let dir = normalised(b"/incoming/");
        assert_eq!(under(b"incoming/a", &dir).unwrap(), b"a");
        assert_eq!(under(b"./incoming//x/y", &dir).unwrap(), b"x/y");
        assert_eq!(under(b"incoming/../incoming/z", &dir).unwrap(), b"z");
        assert!(under(b"incoming", &dir).is_none());
        assert!(under(b"incoming/../pxelinux.cfg/01-aa", &dir).is_none());
        assert!(under(b"incomingx/a", &dir).is_none());
        assert!(under(b"pxelinux.cfg/default", &dir).is_none());
        assert_eq!(under(b"incoming/x/", &dir).unwrap(), b"x/");
    }

    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::symlink;

    use tftp_proto::packet::ErrorCode::{self, AccessViolation as DENIED, FileNotFound as MISSING};

    /// The tree of the sealing tables, under `root/` of the returned
    /// directory (which also holds a file outside the root): the root's own
    /// boot files, client `10.0.0.7` sharing some of them through the
    /// documented symlinks, client `10.0.0.9` with a secret, and an upload
    /// directory with symlinks in it (one in the client's too).
    fn clients_tree() -> tempfile::TempDir {
        let top = tempfile::tempdir().unwrap();
        std::fs::write(top.path().join("secret"), b"outside").unwrap();
        let r = top.path().join("root");
        for dir in [
            "pxelinux.cfg",
            "shared",
            "incoming/sub",
            "10.0.0.7/pxelinux.cfg",
            "10.0.0.7/incoming",
            "10.0.0.9/pxelinux.cfg",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for (name, bytes) in [
            ("pxelinux.0", &b"loader"[..]),
            ("pxelinux.cfg/default", b"root default"),
            ("shared/x.cfg", b"shared x"),
            ("root.cfg", b"root only"),
            ("10.0.0.7/own.cfg", b"own"),
            ("10.0.0.9/secret.cfg", b"secret of .9"),
        ] {
            std::fs::write(r.join(name), bytes).unwrap();
        }
        for (target, link) in [
            ("../pxelinux.0", "10.0.0.7/pxelinux.0"),
            ("../shared", "10.0.0.7/shared"),
            ("sub", "incoming/link"),
            ("..", "incoming/up"),
            ("/pxelinux.cfg", "incoming/abs"),
            ("../..", "10.0.0.7/incoming/up"),
        ] {
            symlink(target, r.join(link)).unwrap();
        }
        top
    }

    /// Every path under `dir` with its contents (a symlink: its target),
    /// symlinks not followed.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let content = if meta.is_symlink() {
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_vec()
                } else if meta.is_dir() {
                    todo.push(path.clone());
                    b"<dir>".to_vec()
                } else {
                    std::fs::read(&path).unwrap()
                };
                all.insert(path, content);
            }
        }
        all
    }

    /// Runs `pass` with `openat2`, then with the walk.
    fn both_resolutions(mut pass: impl FnMut(&str)) {
        for (how, walk) in [("openat2", false), ("walk", true)] {
            resolve::WALK_ONLY.with(|w| w.set(walk));
            pass(how);
            resolve::WALK_ONLY.with(|w| w.set(false));
            if !walk && !resolve::openat2_in_use() {
                println!("openat2 is unavailable here: both passes used the walk");
            }
        }
    }

    /// A request's `..` is taken lexically, before any symlink is followed:
    /// under `per_client_root` no name leaves the client's directory, not
    /// even after one of its symlinks into the rest of the root; those
    /// symlinks still serve the shared files.
    #[test]
    fn reads_are_sealed_in_the_client_directory_with_openat2_and_with_the_walk() {
        let top = clients_tree();
        let root = Root::open(top.path().join("root")).unwrap();
        let seven = root.client_scope("10.0.0.7".parse().unwrap());
        assert_eq!(seven.as_deref(), Some(&b"10.0.0.7"[..]));
        let seven = seven.as_deref();
        type Case<'a> = (Option<&'a [u8]>, &'a str, Result<&'a [u8], ErrorCode>);
        let cases: &[Case<'_>] = &[
            // The client's own files, and the shared ones through its links.
            (seven, "own.cfg", Ok(b"own")),
            (seven, "/own.cfg", Ok(b"own")),
            (seven, "pxelinux.0", Ok(b"loader")),
            (seven, "shared/x.cfg", Ok(b"shared x")),
            (seven, "/shared//./x.cfg", Ok(b"shared x")),
            (seven, "shared/../shared/x.cfg", Ok(b"shared x")),
            // `..` after a link takes back the link's name, not its target.
            (seven, "shared/../10.0.0.9/secret.cfg", Err(MISSING)),
            (seven, "shared/./../root.cfg", Err(MISSING)),
            (seven, "shared/../pxelinux.cfg/default", Err(MISSING)),
            (
                seven,
                "pxelinux.cfg/../shared/../10.0.0.9/secret.cfg",
                Err(MISSING),
            ),
            (seven, "shared/../own.cfg", Ok(b"own")),
            // Climbing above the client's directory is refused.
            (seven, "shared/../../x", Err(DENIED)),
            (seven, "shared/../../10.0.0.9/secret.cfg", Err(DENIED)),
            (seven, "../10.0.0.9/secret.cfg", Err(DENIED)),
            (seven, "/../root.cfg", Err(DENIED)),
            (seven, "root.cfg", Err(MISSING)),
            // Directories are not files.
            (seven, "shared", Err(DENIED)),
            (seven, "shared/..", Err(DENIED)),
            (seven, "shared/x.cfg/", Err(DENIED)),
            // Without a client directory: the whole root, the same rule.
            (None, "10.0.0.9/secret.cfg", Ok(b"secret of .9")),
            (None, "10.0.0.7/shared/x.cfg", Ok(b"shared x")),
            (None, "10.0.0.7/pxelinux.0", Ok(b"loader")),
            (None, "10.0.0.7/shared/../own.cfg", Ok(b"own")),
            (None, "10.0.0.7/shared/../10.0.0.9/secret.cfg", Err(MISSING)),
            (None, "incoming/up/root.cfg", Ok(b"root only")),
            (None, "incoming/up/../root.cfg", Err(MISSING)),
            (None, "shared/../../secret", Err(DENIED)),
            (None, "../secret", Err(DENIED)),
        ];
        both_resolutions(|how| {
            for (scope, name, want) in cases {
                let got = root
                    .open_read_in(*scope, name.as_bytes())
                    .map(|(mut file, _)| {
                        let mut bytes = Vec::new();
                        file.read_to_end(&mut bytes).unwrap();
                        bytes
                    })
                    .map_err(|e| e.code);
                let want = want.map(<[u8]>::to_vec);
                let scope = scope.map(String::from_utf8_lossy);
                assert_eq!(got, want, "{how} {scope:?} {name}");
            }
        });
    }

    /// The same sealing for uploads, with and without a client directory and
    /// an upload directory: every upload lands where its name says, lexically,
    /// and nothing else in the tree changes.
    #[test]
    fn writes_are_sealed_in_the_client_and_upload_directories_with_openat2_and_with_the_walk() {
        let top = clients_tree();
        let path = top.path().join("root");
        let before = snapshot(top.path());
        let anywhere = Root::open(&path).unwrap().allow_write(true);
        let incoming = anywhere.clone().upload_dir("incoming");
        let seven = anywhere.client_scope("10.0.0.7".parse().unwrap());
        let seven = seven.as_deref();
        type Case<'a> = (
            &'a Root,
            Option<&'a [u8]>,
            &'a str,
            Result<&'a str, ErrorCode>,
        );
        let cases: &[Case<'_>] = &[
            (&anywhere, seven, "new.cfg", Ok("10.0.0.7/new.cfg")),
            (
                &anywhere,
                seven,
                "/pxelinux.cfg/01-aa-bb",
                Ok("10.0.0.7/pxelinux.cfg/01-aa-bb"),
            ),
            // Through the client's own link into the shared directory.
            (&anywhere, seven, "shared/new.cfg", Ok("shared/new.cfg")),
            // `..` after the link stays in the client's directory.
            (
                &anywhere,
                seven,
                "shared/./../pxelinux.cfg/01-aa-bb",
                Ok("10.0.0.7/pxelinux.cfg/01-aa-bb"),
            ),
            (
                &anywhere,
                seven,
                "shared/../new.cfg",
                Ok("10.0.0.7/new.cfg"),
            ),
            (&anywhere, seven, "shared/../10.0.0.9/new.cfg", Err(MISSING)),
            (
                &anywhere,
                seven,
                "shared/../10.0.0.9/pxelinux.cfg/01-aa-bb",
                Err(MISSING),
            ),
            (
                &anywhere,
                seven,
                "shared/../../pxelinux.cfg/01-aa-bb",
                Err(DENIED),
            ),
            (&anywhere, seven, "shared/../../x", Err(DENIED)),
            (&anywhere, seven, "../10.0.0.9/new.cfg", Err(DENIED)),
            (&anywhere, seven, "shared/..", Err(MISSING)),
            (&anywhere, seven, "new.cfg/", Err(MISSING)),
            (&anywhere, seven, "pxelinux.0", Err(ErrorCode::FileExists)),
            // Without a client directory.
            (
                &anywhere,
                None,
                "10.0.0.7/shared/../10.0.0.9/new.cfg",
                Err(MISSING),
            ),
            (
                &anywhere,
                None,
                "10.0.0.7/shared/../new.cfg",
                Ok("10.0.0.7/new.cfg"),
            ),
            (&anywhere, None, "shared/../new.cfg", Ok("new.cfg")),
            (
                &anywhere,
                None,
                "incoming/up/../new.cfg",
                Ok("incoming/new.cfg"),
            ),
            (&anywhere, None, "../x", Err(DENIED)),
            // An upload directory: its links cannot lead out of it.
            (&incoming, None, "incoming/a", Ok("incoming/a")),
            (&incoming, None, "/incoming/link/b", Ok("incoming/sub/b")),
            (&incoming, None, "incoming/link/../b", Ok("incoming/b")),
            (&incoming, None, "incoming/up/b", Ok("incoming/b")),
            (
                &incoming,
                None,
                "incoming/up/pxelinux.cfg/01-aa-bb",
                Err(MISSING),
            ),
            (&incoming, None, "incoming/abs/01-aa-bb", Err(MISSING)),
            (
                &incoming,
                None,
                "incoming/up/../pxelinux.cfg/01-aa-bb",
                Err(MISSING),
            ),
            (
                &incoming,
                None,
                "incoming/link/../../pxelinux.cfg/01-aa-bb",
                Err(DENIED),
            ),
            (&incoming, None, "incoming/up/../../10.0.0.9/x", Err(DENIED)),
            (&incoming, None, "pxelinux.cfg/01-aa-bb", Err(DENIED)),
            // ... nor the client's, in its own upload directory.
            (&incoming, seven, "incoming/c", Ok("10.0.0.7/incoming/c")),
            (&incoming, seven, "incoming/up/c", Ok("10.0.0.7/incoming/c")),
            (
                &incoming,
                seven,
                "incoming/up/pxelinux.cfg/01-aa-bb",
                Err(MISSING),
            ),
            (&incoming, seven, "incoming/up/10.0.0.9/x", Err(MISSING)),
            (
                &incoming,
                seven,
                "incoming/up/../../10.0.0.9/x",
                Err(DENIED),
            ),
            (&incoming, seven, "incoming/../shared/x", Err(DENIED)),
            (
                &incoming,
                seven,
                "shared/../incoming/d",
                Ok("10.0.0.7/incoming/d"),
            ),
        ];
        both_resolutions(|how| {
            for (root, scope, name, want) in cases {
                let scope_text = scope.map(String::from_utf8_lossy);
                let got = root
                    .open_write_in(*scope, name.as_bytes(), None)
                    .map(|mut upload| {
                        assert_eq!(upload.write(name.as_bytes()).unwrap(), name.len());
                        upload.commit().unwrap();
                    })
                    .map_err(|e| e.code);
                let at = match (got, want) {
                    (Ok(()), Ok(at)) => path.join(at),
                    (got, want) => {
                        assert_eq!(got, want.map(|_| ()), "{how} {scope_text:?} {name}");
                        continue;
                    }
                };
                assert_eq!(
                    std::fs::read(&at).ok().map(String::from_utf8),
                    Some(Ok(name.to_string())),
                    "{how} {scope_text:?} {name}: not at {at:?}"
                );
                std::fs::remove_file(&at).unwrap();
                assert_eq!(
                    snapshot(top.path()),
                    before,
                    "{how} {scope_text:?} {name}: more changed"
                );
            }
        });
        assert_eq!(snapshot(top.path()), before);
    }

    #[test]
    fn split_last_names_a_file() {
        assert_eq!(split_last(b"a/b/c"), Some((&b"a/b"[..], &b"c"[..])));
        assert_eq!(split_last(b"c"), Some((&b"."[..], &b"c"[..])));
        assert_eq!(split_last(b"/c"), Some((&b"."[..], &b"c"[..])));
        assert_eq!(split_last(b"a/.."), None);
        assert_eq!(split_last(b"a/."), None);
        assert_eq!(split_last(b"a/"), None);
    }
}
