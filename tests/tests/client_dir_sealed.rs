//! `per_client_root` seals a client's directory, on every runtime: `..` in a
//! request takes back the request's own names, never a symlink's target, so
//! even after one of the client's symlinks into the rest of the root
//! (`shared -> ../shared`) no name reaches another client's directory or the
//! root's files: nothing read, nothing planted (`pxelinux.cfg/01-<mac>`).
//! The symlinks themselves keep serving the shared files. An upload
//! directory is sealed the same way.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::adapters::{Adapter, Cfg};
use common::{ack, Raw};

/// The root's boot files; client 127.0.0.2 sharing some through symlinks,
/// with its own `pxelinux.cfg`; client 127.0.0.3 with a secret.
fn clients_root() -> tempfile::TempDir {
    let root = common::root(&[
        ("pxelinux.0", b"shared loader"),
        ("pxelinux.cfg/default", b"root default"),
        ("shared/x.cfg", b"shared x"),
        ("root.cfg", b"root only"),
        ("127.0.0.2/own.cfg", b"own of .2"),
        ("127.0.0.2/pxelinux.cfg/default", b"default of .2"),
        ("127.0.0.3/secret.cfg", b"secret of .3"),
    ]);
    symlink("../pxelinux.0", root.path().join("127.0.0.2/pxelinux.0")).unwrap();
    symlink("../shared", root.path().join("127.0.0.2/shared")).unwrap();
    root
}

/// Uploads a small file lock-step from `raw`: Ok, or the server's ERROR code.
fn put_small(raw: &Raw, server: SocketAddr, name: &str, bytes: &[u8]) -> Result<(), u16> {
    let mut wrq = vec![0, 2];
    wrq.extend_from_slice(name.as_bytes());
    wrq.extend_from_slice(b"\0octet\0");
    raw.send(server, &wrq);
    let (answer, tid) = raw.recv();
    if answer.get(..2) == Some(&[0, 5]) {
        return Err(u16::from_be_bytes([answer[2], answer[3]]));
    }
    assert_eq!(answer, ack(0), "{name}");
    let mut data = vec![0, 3, 0, 1];
    data.extend_from_slice(bytes);
    raw.send(tid, &data);
    let (answer, _) = raw.recv();
    assert_eq!(answer, ack(1), "{name}");
    Ok(())
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut all: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    all.sort();
    all
}

fn another_clients_files_cannot_be_read<A: Adapter>() {
    let root = clients_root();
    let cfg = Cfg {
        per_client_root: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let addr = server.addr;
    let two = Raw::on("127.0.0.2");
    let three = Raw::on("127.0.0.3");
    // `..` after a symlink stays in the client's directory, where these are not.
    for name in [
        "shared/../127.0.0.3/secret.cfg",
        "shared/./../127.0.0.3/secret.cfg",
        "shared/../root.cfg",
        "pxelinux.cfg/../shared/../127.0.0.3/secret.cfg",
    ] {
        assert_eq!(two.get_small(addr, name), Err(1), "{} {name}", A::NAME);
    }
    // Climbing above it is refused.
    for name in [
        "shared/../../127.0.0.3/secret.cfg",
        "shared/../../root.cfg",
        "../127.0.0.3/secret.cfg",
    ] {
        assert_eq!(two.get_small(addr, name), Err(2), "{} {name}", A::NAME);
    }
    // The shared files, through the client's symlinks.
    for (name, want) in [
        ("pxelinux.0", &b"shared loader"[..]),
        ("shared/x.cfg", b"shared x"),
        ("/shared/x.cfg", b"shared x"),
        ("own.cfg", b"own of .2"),
        ("shared/../own.cfg", b"own of .2"),
        ("shared/../pxelinux.cfg/default", b"default of .2"),
    ] {
        assert_eq!(
            two.get_small(addr, name).as_deref(),
            Ok(want),
            "{} {name}",
            A::NAME
        );
    }
    // The other client still gets its own file.
    assert_eq!(
        three.get_small(addr, "secret.cfg").unwrap(),
        b"secret of .3"
    );
    server.stop();
}

fn writes_cannot_plant_files_outside_the_clients_directory<A: Adapter>() {
    let root = clients_root();
    let cfg = Cfg {
        per_client_root: true,
        allow_write: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let addr = server.addr;
    let two = Raw::on("127.0.0.2");
    let r = root.path();
    // Another client's directory, the root's boot configs: out of reach.
    for (name, code) in [
        ("shared/../127.0.0.3/planted.cfg", 1),
        ("shared/../../127.0.0.3/planted.cfg", 2),
        ("shared/../../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", 2),
        ("../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", 2),
    ] {
        assert_eq!(
            put_small(&two, addr, name, b"planted"),
            Err(code),
            "{} {name}",
            A::NAME
        );
    }
    // `..` after the symlink names the client's own pxelinux.cfg.
    put_small(
        &two,
        addr,
        "shared/./../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff",
        b"mine",
    )
    .unwrap();
    assert_eq!(
        std::fs::read(r.join("127.0.0.2/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff")).unwrap(),
        b"mine"
    );
    // Through the symlink itself: the shared directory it points to.
    put_small(&two, addr, "shared/log.txt", b"log").unwrap();
    assert_eq!(std::fs::read(r.join("shared/log.txt")).unwrap(), b"log");
    server.stop();
    assert_eq!(names(&r.join("127.0.0.3")), ["secret.cfg"], "{}", A::NAME);
    assert_eq!(names(&r.join("pxelinux.cfg")), ["default"], "{}", A::NAME);
    assert_eq!(
        names(r),
        [
            "127.0.0.2",
            "127.0.0.3",
            "pxelinux.0",
            "pxelinux.cfg",
            "root.cfg",
            "shared"
        ],
        "{}",
        A::NAME
    );
}

fn uploads_cannot_leave_the_upload_directory<A: Adapter>() {
    let root = clients_root();
    std::fs::create_dir_all(root.path().join("127.0.0.2/incoming")).unwrap();
    symlink("../..", root.path().join("127.0.0.2/incoming/up")).unwrap();
    let cfg = Cfg {
        per_client_root: true,
        allow_write: true,
        upload_dir: Some("incoming"),
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let addr = server.addr;
    let two = Raw::on("127.0.0.2");
    let r = root.path();
    for (name, code) in [
        ("incoming/up/../../127.0.0.3/planted.cfg", 2),
        ("incoming/up/../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", 1),
        ("incoming/up/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", 1),
        ("incoming/up/127.0.0.3/planted.cfg", 1),
        ("shared/../pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", 2),
    ] {
        assert_eq!(
            put_small(&two, addr, name, b"planted"),
            Err(code),
            "{} {name}",
            A::NAME
        );
    }
    // The link, clamped at the upload directory, names the directory itself.
    put_small(&two, addr, "incoming/up/log.txt", b"log").unwrap();
    assert_eq!(
        std::fs::read(r.join("127.0.0.2/incoming/log.txt")).unwrap(),
        b"log"
    );
    server.stop();
    assert_eq!(names(&r.join("127.0.0.3")), ["secret.cfg"], "{}", A::NAME);
    assert_eq!(names(&r.join("pxelinux.cfg")), ["default"], "{}", A::NAME);
    assert_eq!(
        names(&r.join("127.0.0.2/pxelinux.cfg")),
        ["default"],
        "{}",
        A::NAME
    );
}

for_each_adapter!(
    another_clients_files_cannot_be_read,
    writes_cannot_plant_files_outside_the_clients_directory,
    uploads_cannot_leave_the_upload_directory,
);
