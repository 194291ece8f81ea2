//! Path resolution with chroot semantics under a directory handle, without
//! privileges: `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, where the
//! kernel treats the handle as `/` for absolute symlinks and clamps `..` at
//! it. Where `openat2` is missing (Linux before 5.6, or filtered by a
//! seccomp policy), the same semantics come from a walk one component at a
//! time: each step opens a single name with `O_NOFOLLOW` relative to the
//! directory reached so far, symlinks are read and expanded by this code
//! (absolute ones from the root), `..` never goes above the root, and at
//! most [`MAX_SYMLINKS`] links are followed. Either way no path leaves the
//! root, whatever the name or the symlinks in the tree.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Most symlinks followed in one resolution (Linux's own limit).
pub const MAX_SYMLINKS: usize = 40;

/// How often `openat2` is retried when the kernel reports a concurrent
/// rename (`EAGAIN`) before the walk is used instead.
const OPENAT2_RETRIES: usize = 4;

/// Set once `openat2` turned out to be unavailable.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    /// Tests: resolve by the walk on this thread, as where `openat2` is
    /// missing, to run a table through both resolutions.
    pub(crate) static WALK_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this resolution must use the walk (tests only).
fn walk_only() -> bool {
    #[cfg(test)]
    return WALK_ONLY.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

/// Whether `openat2` is in use (not found missing or filtered).
#[cfg(test)]
pub(crate) fn openat2_in_use() -> bool {
    !NO_OPENAT2.load(Ordering::Relaxed)
}

/// Opens `path` (relative; a leading `/` means the root) under `root` as if
/// `root` were `/`, with `flags` (`O_CLOEXEC` is always added).
pub fn open(root: impl AsFd, path: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let root = root.as_fd();
    let path = if path.is_empty() { &b"."[..] } else { path };
    let flags = flags | OFlags::CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) && !walk_only() {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..OPENAT2_RETRIES {
            match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
                Ok(fd) => return Ok(fd),
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                // A seccomp filter that forbids openat2 answers EPERM; so can
                // a policy on this one file. Only the former turns it off.
                Err(rustix::io::Errno::PERM) => {
                    if openat2_filtered(root) {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    return Err(rustix::io::Errno::PERM.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    open_walking(root, path, flags)
}

/// Whether `openat2` fails even for the root itself (a seccomp filter).
fn openat2_filtered(root: BorrowedFd<'_>) -> bool {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    matches!(
        rustix::fs::openat2(root, ".", flags, Mode::empty(), resolve),
        Err(rustix::io::Errno::PERM | rustix::io::Errno::NOSYS)
    )
}

/// The walk [`open`] falls back to (public to the crate for tests).
pub(crate) fn open_walking(root: impl AsFd, path: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut stack: Vec<OwnedFd> = vec![rustix::fs::openat(root, ".", dir_flags, Mode::empty())?];
    let mut queue: VecDeque<Vec<u8>> = components(path).collect();
    // `name/` must be a directory, as in the kernel's own resolution.
    let flags = if path.ends_with(b"/") {
        flags | OFlags::DIRECTORY
    } else {
        flags
    };
    let mut links = 0usize;
    while let Some(name) = queue.pop_front() {
        let here = stack.last().ok_or_else(not_found)?;
        if name == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let stat = rustix::fs::statat(here, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(rustix::io::Errno::LOOP.into());
                }
                let target = rustix::fs::readlinkat(here, name.as_slice(), Vec::new())?;
                let target = target.as_bytes();
                if target.is_empty() {
                    return Err(not_found());
                }
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                for part in components(target).rev() {
                    queue.push_front(part);
                }
            }
            _ if queue.is_empty() => {
                return Ok(rustix::fs::openat(
                    here,
                    name.as_slice(),
                    flags | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?);
            }
            FileType::Directory => {
                let next = rustix::fs::openat(
                    here,
                    name.as_slice(),
                    dir_flags | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?;
                stack.push(next);
            }
            _ => return Err(rustix::io::Errno::NOTDIR.into()),
        }
    }
    // The path ended on a directory (`.`, `a/..`, a link to a directory).
    let here = stack.last().ok_or_else(not_found)?;
    Ok(rustix::fs::openat(here, ".", flags, Mode::empty())?)
}

/// The components of `path` that matter: no empty ones, no `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// A root inside a directory that also holds a secret outside the root.
    fn tree() -> (tempfile::TempDir, std::fs::File) {
        let top = tempfile::tempdir().unwrap();
        std::fs::write(top.path().join("secret"), b"SECRET").unwrap();
        let root = top.path().join("root");
        std::fs::create_dir_all(root.join("images/v6.1")).unwrap();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("images/v6.1/vmlinuz"), b"kernel").unwrap();
        symlink("/images/v6.1/vmlinuz", root.join("boot/abs")).unwrap();
        symlink("../images/v6.1/vmlinuz", root.join("boot/rel")).unwrap();
        symlink("/secret", root.join("boot/out_abs")).unwrap();
        symlink("../../../../../../secret", root.join("boot/out_rel")).unwrap();
        symlink("../secret", root.join("out_dir_rel")).unwrap();
        symlink("/images", root.join("boot/images")).unwrap();
        symlink("..", root.join("boot/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let handle = std::fs::File::open(&root).unwrap();
        (top, handle)
    }

    fn read(result: io::Result<OwnedFd>) -> Result<Vec<u8>, io::ErrorKind> {
        let fd = result.map_err(|e| e.kind())?;
        let mut out = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut out).unwrap();
        Ok(out)
    }

    #[test]
    fn chroot_semantics_with_openat2_and_with_the_walk() {
        let (_top, root) = tree();
        let kernel = Ok(b"kernel".to_vec());
        let cases: &[(&str, Result<Vec<u8>, io::ErrorKind>)] = &[
            ("images/v6.1/vmlinuz", kernel.clone()),
            ("/images/v6.1/vmlinuz", kernel.clone()),
            ("boot/abs", kernel.clone()),
            ("boot/rel", kernel.clone()),
            ("boot/images/v6.1/vmlinuz", kernel.clone()),
            ("boot/up/boot/up/images/v6.1/vmlinuz", kernel.clone()),
            ("boot/../images/v6.1/vmlinuz", kernel.clone()),
            // `..` at the root stays at the root, as under chroot.
            ("../../images/v6.1/vmlinuz", kernel.clone()),
            // Links pointing out resolve inside the root, where nothing is.
            ("boot/out_abs", Err(io::ErrorKind::NotFound)),
            ("boot/out_rel", Err(io::ErrorKind::NotFound)),
            ("out_dir_rel", Err(io::ErrorKind::NotFound)),
            ("../secret", Err(io::ErrorKind::NotFound)),
            ("missing", Err(io::ErrorKind::NotFound)),
            // A trailing slash wants a directory.
            ("images/v6.1/vmlinuz/", Err(io::ErrorKind::NotADirectory)),
        ];
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        for (path, want) in cases {
            let path = path.as_bytes();
            assert_eq!(&read(open(&root, path, flags)), want, "openat2 {path:?}");
            assert_eq!(
                &read(open_walking(&root, path, flags)),
                want,
                "walk {path:?}"
            );
        }
        // A symlink loop fails in both.
        for path in [&b"loop"[..], b"boot/../loop"] {
            assert!(open(&root, path, flags).is_err());
            assert!(open_walking(&root, path, flags).is_err());
        }
        // Directories resolve too (an upload's parent).
        let dir = OFlags::RDONLY | OFlags::DIRECTORY;
        for path in [&b"boot/images"[..], b"boot/up", b".", b"boot/.."] {
            assert!(open(&root, path, dir).is_ok(), "{path:?}");
            assert!(open_walking(&root, path, dir).is_ok(), "{path:?}");
        }
    }
}
