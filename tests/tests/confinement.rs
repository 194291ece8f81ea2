//! DirHandler confinement on every runtime: traversal variants, absolute
//! paths, symlinks that leave the root, directories and unreadable files;
//! uploads stay inside and respect overwrite. Nothing outside the root is
//! ever served or written.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};

use common::adapters::{Adapter, Cfg, Opts};
use tftp_blocking::ClientError;
use tftp_proto::packet::ErrorCode;

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, message, .. }) => {
            assert!(!message.contains('/'), "message reveals a path: {message}");
            code
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn nothing_outside_the_root_is_served<A: Adapter>() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), b"TOP SECRET").unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("ok.txt"), b"fine").unwrap();
    std::fs::write(root.join("sub/inner.txt"), b"inner").unwrap();
    symlink(outer.path().join("secret.txt"), root.join("abs-link")).unwrap();
    symlink("../secret.txt", root.join("rel-link")).unwrap();
    symlink("sub/inner.txt", root.join("good-link")).unwrap();
    symlink("/etc", root.join("etc-link")).unwrap();
    let server = A::serve_dir(&root, &Cfg::default());
    let o = Opts::default();

    for (name, want) in [
        ("ok.txt", &b"fine"[..]),
        ("/ok.txt", b"fine"),
        ("sub/inner.txt", b"inner"),
        ("good-link", b"inner"),
        ("sub/../ok.txt", b"fine"),
    ] {
        let (got, _) =
            A::get(server.addr, name, o).unwrap_or_else(|e| panic!("{} {name}: {e}", A::NAME));
        assert_eq!(got, want, "{name}");
    }
    for name in [
        "../secret.txt",
        "/../secret.txt",
        "sub/../../secret.txt",
        "./../secret.txt",
        "abs-link",
        "rel-link",
        "etc-link/passwd",
        "/etc/passwd",
        "//etc/passwd",
        "..",
        "../",
        "../root/ok.txt",
    ] {
        let c = code(A::get(server.addr, name, o));
        assert!(
            matches!(c, ErrorCode::FileNotFound | ErrorCode::AccessViolation),
            "{} {name}: {c:?}",
            A::NAME
        );
    }
    assert_eq!(
        code(A::get(server.addr, "sub", o)),
        ErrorCode::AccessViolation,
        "a directory"
    );
    assert_eq!(code(A::get(server.addr, "/", o)), ErrorCode::FileNotFound);
    assert_eq!(
        code(A::get(server.addr, "nope", o)),
        ErrorCode::FileNotFound
    );
    // Writes are off by default.
    assert_eq!(
        code(A::put(server.addr, "new.txt", b"x", o)),
        ErrorCode::AccessViolation
    );
    assert!(!root.join("new.txt").exists());
    server.stop();
}

/// Set in the child that [`an_unreadable_file_is_refused`] runs as nobody.
const AS_NOBODY: &str = "TFTP_TESTS_AS_NOBODY";

/// A file the server may not read (mode 0) is refused with ERROR 2. Where
/// file modes do not bind this process (root), the test runs again in a
/// child process of this test binary as nobody (uid and gid 65534), so it
/// checks the same thing as root and as anyone else.
fn an_unreadable_file_is_refused<A: Adapter>() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked.txt");
    std::fs::write(&locked, b"locked").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_ok() {
        assert!(
            std::env::var_os(AS_NOBODY).is_none(),
            "file modes do not bind even as nobody"
        );
        again_as_nobody();
        return;
    }
    let server = A::serve_dir(dir.path(), &Cfg::default());
    assert_eq!(
        code(A::get(server.addr, "locked.txt", Opts::default())),
        ErrorCode::AccessViolation,
        "{}",
        A::NAME
    );
    server.stop();
}

/// Runs the calling test (its thread bears its name) in a copy of this
/// binary as nobody; panics unless it ran and passed.
fn again_as_nobody() {
    use std::os::unix::process::CommandExt;
    let test = std::thread::current()
        .name()
        .expect("libtest names each test's thread")
        .to_owned();
    // One at a time: a copy being written while another test forks would
    // be open for writing in that child too, and its exec fail (ETXTBSY).
    // Only this function starts processes in this binary.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A copy nobody can run: the build directory may be closed to it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("confinement");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&exe)
        .args(["--exact", &test, "--test-threads=1"])
        .env(AS_NOBODY, "1")
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap_or_else(|e| panic!("{test} as nobody: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} as nobody: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn writes_stay_inside_and_respect_overwrite<A: Adapter>() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("exists.txt"), b"old").unwrap();
    symlink(outer.path().join("target.txt"), root.join("out-link")).unwrap();
    let o = Opts {
        blksize: Some(1024),
        ..Opts::default()
    };

    let server = A::serve_dir(
        &root,
        &Cfg {
            allow_write: true,
            ..Cfg::default()
        },
    );
    let data = common::content(10_000, 3);
    A::put(server.addr, "/new.bin", &data, o).unwrap();
    assert_eq!(std::fs::read(root.join("new.bin")).unwrap(), data);
    assert_eq!(
        code(A::put(server.addr, "exists.txt", b"new", o)),
        ErrorCode::FileExists
    );
    assert_eq!(std::fs::read(root.join("exists.txt")).unwrap(), b"old");
    for name in ["../evil.txt", "out-link", "/../evil.txt"] {
        let c = code(A::put(server.addr, name, b"evil", o));
        assert!(
            matches!(
                c,
                ErrorCode::AccessViolation | ErrorCode::FileExists | ErrorCode::FileNotFound
            ),
            "{name}: {c:?}"
        );
    }
    assert!(!outer.path().join("evil.txt").exists());
    assert!(!outer.path().join("target.txt").exists());
    server.stop();

    let server = A::serve_dir(
        &root,
        &Cfg {
            allow_write: true,
            allow_overwrite: true,
            ..Cfg::default()
        },
    );
    A::put(server.addr, "exists.txt", b"replaced", o).unwrap();
    assert_eq!(std::fs::read(root.join("exists.txt")).unwrap(), b"replaced");
    code(A::put(server.addr, "out-link", b"evil", o));
    assert!(!outer.path().join("target.txt").exists());
    server.stop();
}

for_each_adapter!(
    nothing_outside_the_root_is_served,
    an_unreadable_file_is_refused,
    writes_stay_inside_and_respect_overwrite
);

/// A failed upload leaves neither a partial file nor a damaged old one: the
/// bytes go to a temporary file that only a completed transfer puts in place.
fn failed_upload_changes_nothing<A: Adapter>() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("config.txt"), b"old config").unwrap();
    let server = A::serve_dir(
        root.path(),
        &Cfg {
            allow_write: true,
            allow_overwrite: true,
            ..Cfg::default()
        },
    );
    for name in ["config.txt", "fresh.txt"] {
        let raw = common::Raw::new();
        let mut wrq = vec![0, 2];
        wrq.extend_from_slice(name.as_bytes());
        wrq.extend_from_slice(b"\x00octet\x00");
        raw.send(server.addr, &wrq);
        let (ack0, tid) = raw.recv();
        assert_eq!(ack0, [0, 4, 0, 0]);
        let mut data = vec![0, 3, 0, 1];
        data.extend_from_slice(&[b'x'; 512]);
        raw.send(tid, &data);
        let (ack1, _) = raw.recv();
        assert_eq!(ack1, [0, 4, 0, 1]);
        // The client gives up half way.
        raw.send(tid, &common::error(0, "cancelled"));
    }
    // stop() returns once both sessions have ended and released their files.
    server.stop();
    assert_eq!(
        std::fs::read(root.path().join("config.txt")).unwrap(),
        b"old config"
    );
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["config.txt"],
        "{}: partial or temporary files left",
        A::NAME
    );
}

for_each_adapter!(failed_upload_changes_nothing);
