//! The cache directory (`--cache-dir`): private to the user serving from
//! it, and shared safely by several instances.
//!
//! - **Private.** The directory is created mode 0700 (whatever the umask),
//!   for the user the cache runs as ([`prepare_cache_dir`] creates it for
//!   another one before a server drops its privileges). An existing
//!   directory is refused if it is owned by anyone else or is group- or
//!   world-writable: whoever can write there can replace what is served.
//!   Cached objects are files of mode 0600.
//! - **One space per instance.** Each cache (each process, or each
//!   [`Origin`](crate::Origin) built in one) keeps its objects in a
//!   subdirectory `instance-PID-N` of its own, mode 0700, and holds an
//!   exclusive `flock` on it for as long as it lives. A second instance on
//!   the same directory gets its own subdirectory and never touches the
//!   first's files; each counts only its own bytes against its size.
//! - **Leftovers of dead instances are removed at start.** An instance
//!   subdirectory nobody holds locked belongs to an instance that is gone
//!   (the kernel drops a lock with its holder, however it ended): the
//!   next instance to start removes it. Starting (the sweep and the
//!   creation of the new subdirectory) is serialised by a lock on
//!   `DIR/.lock`, so no starting instance takes another's new,
//!   not-yet-locked subdirectory for a dead one. Cache files of the
//!   layout before instances (`PID-N.tftp-cache` directly in the
//!   directory) are leftovers too.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

/// The lock serialising instances' start-up.
const LOCK_FILE: &str = ".lock";

/// Name prefix of the instances' subdirectories.
const INSTANCE_PREFIX: &str = "instance-";

/// Suffix of cache files directly in the directory (the layout before
/// instance subdirectories), removed at start.
const LEGACY_SUFFIX: &str = ".tftp-cache";

/// Longest wait for another instance to finish starting.
const START_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Private directories and files: the owner's only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Distinguishes the instances of one process.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// `e` with the directory and what was being done.
fn at(dir: &Path, what: &str, e: impl Into<io::Error>) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(
        e.kind(),
        format!("cache directory {}: {what}: {e}", dir.display()),
    )
}

/// A refusal of the directory as it is.
fn refused(dir: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("cache directory {}: {why}", dir.display()),
    )
}

/// Creates the cache directory `dir` (and its missing parents) for
/// `owner` (uid, gid; the effective user and group when `None`): mode
/// 0700, owned by `owner`. An existing `dir` is left as it is, but refused
/// unless it is a directory owned by `owner` and not group- or
/// world-writable.
///
/// A server started as root that switches to another user calls this
/// before the switch, with the user it switches to, so that the cache
/// directory it was given is that user's. [`OriginBuilder::build`] runs
/// the same checks (for the effective user) by itself.
///
/// [`OriginBuilder::build`]: crate::OriginBuilder::build
pub fn prepare_cache_dir(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    open_private(dir, owner).map(drop)
}

/// [`prepare_cache_dir`], returning the directory opened.
fn open_private(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let (uid, gid) = owner.unwrap_or(me);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| at(dir, "cannot create its parent", e))?;
    }
    let created = match rustix::fs::mkdir(dir, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(at(dir, "cannot create it", e)),
    };
    // A directory just made is opened without following a symlink: one
    // put in its place meanwhile (a writable parent) cannot make tftpd
    // change another directory's mode or owner. An existing one may be an
    // operator's symlink.
    let nofollow = if created {
        OFlags::NOFOLLOW
    } else {
        OFlags::empty()
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | nofollow,
        Mode::empty(),
    )
    .map_err(|e| at(dir, "cannot open it", e))?;
    if created {
        // The umask may have taken bits the owner needs.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))
            .map_err(|e| at(dir, "cannot set its mode", e))?;
        if (uid, gid) != me {
            rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| at(dir, &format!("cannot give it to uid {uid}"), e))?;
        }
    }
    check(dir, &fd, uid)?;
    Ok(fd)
}

/// Refuses `fd` (the directory `dir`) unless it is owned by `uid` and
/// neither group- nor world-writable.
fn check(dir: &Path, fd: impl AsFd, uid: u32) -> io::Result<()> {
    let stat = rustix::fs::fstat(fd).map_err(|e| at(dir, "cannot stat it", e))?;
    if stat.st_uid != uid {
        return Err(refused(
            dir,
            format!(
                "owned by uid {}, not by uid {uid} that the cache runs as: \
                 chown it to that user, or remove it to have it created",
                stat.st_uid
            ),
        ));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(
            dir,
            format!(
                "group- or world-writable (mode {mode:03o}), so others could \
                 replace what is served: chmod 700 it"
            ),
        ));
    }
    Ok(())
}

/// Refuses `dir` unless it is a directory owned by the effective user and
/// neither group- nor world-writable (what an [`Instance`]'s is).
pub(crate) fn check_private(dir: &Path) -> io::Result<()> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(dir, "cannot open it", e))?;
    check(dir, &fd, rustix::process::geteuid().as_raw())
}

/// Creates the cache file `path` (which must not exist), mode 0600, open
/// for reading and writing.
pub(crate) fn create_file(path: &Path) -> io::Result<std::fs::File> {
    // `create_new` (O_EXCL) follows no symlink.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// One cache's space in the cache directory: its own subdirectory, locked
/// for as long as this lives, and removed (with what is left in it) when
/// it is dropped.
#[derive(Debug)]
pub(crate) struct Instance {
    path: PathBuf,
    name: String,
    /// The cache directory.
    parent: OwnedFd,
    /// The subdirectory, `flock`ed.
    dir: OwnedFd,
}

impl Instance {
    /// Sets up `dir` for the effective user (see [`prepare_cache_dir`]),
    /// removes what dead instances left in it, and makes this instance's
    /// subdirectory.
    pub fn open(dir: &Path) -> io::Result<Instance> {
        let parent = open_private(dir, None)?;
        let lock = rustix::fs::openat(
            &parent,
            LOCK_FILE,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| at(dir, "cannot open its lock file", e))?;
        lock_within(&lock, START_LOCK_WAIT)
            .map_err(|e| at(dir, "another instance is starting on it", e))?;
        let removed = remove_dead(dir, &parent)?;
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "removed what earlier instances left in the cache directory");
        }
        let (name, fd) = make_own(dir, &parent)?;
        // Ours is locked now: the start lock can go.
        drop(lock);
        Ok(Instance {
            path: dir.join(&name),
            name,
            parent,
            dir: fd,
        })
    }

    /// Where this instance's cache files go.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Best effort: a file a cache task still makes now stays until
        // the next start removes it.
        let _ = empty(&self.dir);
        let _ = rustix::fs::unlinkat(&self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
    }
}

/// Takes `lock` exclusively, waiting at most `wait`.
fn lock_within(lock: impl AsFd, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                // Another instance's start takes milliseconds.
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("its start lock is still held after {wait:?}"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes the subdirectories of instances that are gone (nobody holds
/// their lock) and old-layout cache files; returns how many files went.
/// What cannot be removed is logged and left.
fn remove_dead(dir: &Path, parent: &OwnedFd) -> io::Result<usize> {
    let mut removed = 0;
    let entries = rustix::fs::Dir::read_from(parent).map_err(|e| at(dir, "cannot list it", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| at(dir, "cannot list it", e))?;
        let name = entry.file_name().to_bytes();
        let shown = Path::new(OsStr::from_bytes(name)).display();
        if name.starts_with(INSTANCE_PREFIX.as_bytes()) {
            let Ok(sub) = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            match rustix::fs::flock(&sub, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                // A live instance's.
                Err(Errno::WOULDBLOCK) => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), name = %shown, error = %e, "cannot lock a cache instance directory");
                    continue;
                }
            }
            removed += empty(&sub).unwrap_or_else(|e| {
                tracing::warn!(dir = %dir.display(), name = %shown, error = %e, "cannot empty a dead instance's cache directory");
                0
            });
            if let Err(e) = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
                tracing::warn!(dir = %dir.display(), name = %shown, error = %e, "cannot remove a dead instance's cache directory");
            }
        } else if name.ends_with(LEGACY_SUFFIX.as_bytes()) {
            let is_file = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::RegularFile);
            if is_file {
                match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), name = %shown, error = %e, "cannot remove an old cache file")
                    }
                }
            }
        }
    }
    Ok(removed)
}

/// Unlinks every entry of the directory `fd` but subdirectories (a cache
/// instance makes none); returns how many.
fn empty(fd: &OwnedFd) -> io::Result<usize> {
    let mut removed = 0;
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        match rustix::fs::unlinkat(fd, name, AtFlags::empty()) {
            Ok(()) => removed += 1,
            // Gone meanwhile.
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// Makes this instance's subdirectory and locks it.
fn make_own(dir: &Path, parent: &OwnedFd) -> io::Result<(String, OwnedFd)> {
    let pid = std::process::id();
    let mut tries = 0;
    let name = loop {
        let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{INSTANCE_PREFIX}{pid}-{n}");
        match rustix::fs::mkdirat(parent, name.as_str(), Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => break name,
            // A dead instance's that could not be removed.
            Err(Errno::EXIST) if tries < 100 => tries += 1,
            Err(e) => return Err(at(dir, "cannot make an instance directory", e)),
        }
    };
    let fd = rustix::fs::openat(
        parent,
        name.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(dir, "cannot open its instance directory", e))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))
        .map_err(|e| at(dir, "cannot set its instance directory's mode", e))?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| at(dir, "cannot lock its instance directory", e))?;
    Ok((name, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// The instance subdirectories in `dir`.
    fn instances(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(INSTANCE_PREFIX)
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn created_private_with_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/cache");
        prepare_cache_dir(&dir, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        // Prepared again: accepted as it is.
        prepare_cache_dir(&dir, None).unwrap();
        let instance = Instance::open(&dir).unwrap();
        assert_eq!(mode(instance.path()), 0o700);
        let file = instance.path().join("1.tftp-cache");
        create_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(create_file(&file).is_err(), "an existing file is reused");
        check_private(instance.path()).unwrap();
    }

    #[test]
    fn group_or_world_writable_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [0o777, 0o770, 0o702, 0o1777] {
            let dir = tmp.path().join(format!("m{bad:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bad)).unwrap();
            let e = Instance::open(&dir).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            let message = e.to_string();
            assert!(message.contains("world-writable"), "{message}");
            assert!(message.contains(&dir.display().to_string()), "{message}");
            // Nothing was made in it.
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{bad:o}");
        }
        // Readable by others is fine (the files in it are not).
        let dir = tmp.path().join("m755");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Instance::open(&dir).unwrap();
    }

    #[test]
    fn owned_by_another_user_is_refused() {
        if !is_root() {
            println!("SKIP: not running as root, cannot give a directory to another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let e = Instance::open(&dir).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        // Prepared for that user (a server about to become it), it is fine.
        prepare_cache_dir(&dir, Some((65534, 65534))).unwrap();
        // A missing one is created for the user a server will run as.
        let new = tmp.path().join("new");
        prepare_cache_dir(&new, Some((65534, 65533))).unwrap();
        let meta = std::fs::metadata(&new).unwrap();
        assert_eq!((meta.uid(), meta.gid(), mode(&new)), (65534, 65533, 0o700));
        assert!(
            Instance::open(&new).is_err(),
            "root's cache in nobody's dir"
        );
    }

    #[test]
    fn a_second_instance_leaves_the_first_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let first = Instance::open(&dir).unwrap();
        let file = first.path().join("1.tftp-cache");
        std::fs::write(&file, b"first's object").unwrap();
        let second = Instance::open(&dir).unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(std::fs::read(&file).unwrap(), b"first's object");
        assert_eq!(instances(&dir).len(), 2);
        // The second goes: its space with it, the first's stays.
        std::fs::write(second.path().join("1.tftp-cache"), b"second's").unwrap();
        drop(second);
        assert_eq!(instances(&dir), vec![first.path().to_owned()]);
        assert_eq!(std::fs::read(&file).unwrap(), b"first's object");
        // A third one, later: still the first's.
        let third = Instance::open(&dir).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"first's object");
        drop(first);
        assert_eq!(instances(&dir), vec![third.path().to_owned()]);
    }

    #[test]
    fn dead_instances_leftovers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        prepare_cache_dir(&dir, None).unwrap();
        // An instance killed mid-way: its subdirectory, unlocked.
        let dead = dir.join("instance-4000000-1");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("7.tftp-cache"), b"stale").unwrap();
        std::fs::write(dead.join("8.tftp-cache"), b"stale").unwrap();
        // One of the layout before instances.
        std::fs::write(dir.join("123-4.tftp-cache"), b"old").unwrap();
        // Someone else's file, which is not ours to remove.
        std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
        // A live instance's (the lock held elsewhere in this process).
        let live = Instance::open(&dir).unwrap();
        std::fs::write(live.path().join("1.tftp-cache"), b"live").unwrap();
        let _new = Instance::open(&dir).unwrap();
        assert!(!dead.exists());
        assert!(!dir.join("123-4.tftp-cache").exists());
        assert!(dir.join("notes.txt").exists());
        assert_eq!(
            std::fs::read(live.path().join("1.tftp-cache")).unwrap(),
            b"live"
        );
    }
}
