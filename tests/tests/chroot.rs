//! Paths resolve as under tftpd-hpa's chroot, on every runtime: absolute
//! symlinks and `..` in link targets stay inside the root (trees migrated
//! from tftpd-hpa keep working), a request naming a path above the root is
//! refused, special files are refused without blocking, and
//! `per_client_root` serves `ROOT/<client-ip>/` to that client only.

mod common;

use std::os::unix::fs::symlink;

use common::adapters::{Adapter, Cfg, Opts};
use common::Raw;
use tftp_blocking::ClientError;
use tftp_proto::packet::ErrorCode;

fn server_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn symlinks_resolve_inside_the_root<A: Adapter>() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret"), b"SECRET").unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("images/v6.1")).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join("images/v6.1/vmlinuz"), b"kernel 6.1").unwrap();
    symlink("/images/v6.1/vmlinuz", root.join("boot/vmlinuz")).unwrap();
    symlink("../images/v6.1/vmlinuz", root.join("boot/relative")).unwrap();
    symlink("/images", root.join("current")).unwrap();
    symlink("/secret", root.join("boot/out-absolute")).unwrap();
    symlink("../../secret", root.join("boot/out-relative")).unwrap();
    symlink(outer.path().join("secret"), root.join("boot/out-full")).unwrap();
    let server = A::serve_dir(&root, &Cfg::default());
    let o = Opts::default();
    for name in [
        "boot/vmlinuz",
        "/boot/vmlinuz",
        "boot/relative",
        "current/v6.1/vmlinuz",
    ] {
        let (got, _) = A::get(server.addr, name, o).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, b"kernel 6.1", "{} {name}", A::NAME);
    }
    // Links that point out land inside the root, where nothing is.
    for name in ["boot/out-absolute", "boot/out-relative", "boot/out-full"] {
        assert_eq!(
            server_code(A::get(server.addr, name, o)),
            ErrorCode::FileNotFound,
            "{} {name}",
            A::NAME
        );
    }
    // The request's own path may not climb above the root.
    for name in ["../secret", "boot/../../secret", "/../root/boot/vmlinuz"] {
        assert_eq!(
            server_code(A::get(server.addr, name, o)),
            ErrorCode::AccessViolation,
            "{} {name}",
            A::NAME
        );
    }
    server.stop();
}

fn uploads_follow_directory_links_inside_the_root<A: Adapter>() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("incoming")).unwrap();
    std::fs::create_dir_all(outer.path().join("elsewhere")).unwrap();
    symlink("/incoming", root.join("up")).unwrap();
    symlink(outer.path().join("elsewhere"), root.join("away")).unwrap();
    let cfg = Cfg {
        allow_write: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(&root, &cfg);
    let o = Opts::default();
    A::put(server.addr, "up/log.txt", b"uploaded", o).unwrap();
    assert_eq!(
        std::fs::read(root.join("incoming/log.txt")).unwrap(),
        b"uploaded"
    );
    assert!(A::put(server.addr, "away/x", b"no", o).is_err());
    assert!(A::put(server.addr, "../x", b"no", o).is_err());
    assert_eq!(
        std::fs::read_dir(outer.path().join("elsewhere"))
            .unwrap()
            .count(),
        0
    );
    assert!(!outer.path().join("x").exists());
    server.stop();
}

fn special_files_are_refused_without_blocking<A: Adapter>() {
    let root = common::root(&[("ok.txt", b"fine")]);
    let fifo = root.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let server = A::serve_dir(root.path(), &Cfg::default());
    let o = Opts::default();
    for name in ["fifo", "fifo", "/dev/null"] {
        let c = server_code(A::get(server.addr, name, o));
        assert!(
            matches!(c, ErrorCode::AccessViolation | ErrorCode::FileNotFound),
            "{} {name}: {c:?}",
            A::NAME
        );
    }
    // The server still answers (no thread is stuck in open()).
    let (got, _) = A::get(server.addr, "ok.txt", o).unwrap();
    assert_eq!(got, b"fine");
    server.stop();
}

fn per_client_root_serves_the_clients_own_directory<A: Adapter>() {
    let root = common::root(&[
        ("pxelinux.0", b"shared loader"),
        ("pxelinux.cfg/default", b"shared config"),
        ("127.0.0.2/pxelinux.cfg/default", b"config of .2"),
        ("secret", b"root only"),
    ]);
    symlink("../pxelinux.0", root.path().join("127.0.0.2/pxelinux.0")).unwrap();
    let cfg = Cfg {
        per_client_root: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let two = Raw::on("127.0.0.2");
    let three = Raw::on("127.0.0.3");
    let addr = server.addr;
    assert_eq!(
        two.get_small(addr, "pxelinux.cfg/default").unwrap(),
        b"config of .2"
    );
    assert_eq!(
        two.get_small(addr, "/pxelinux.cfg/default").unwrap(),
        b"config of .2"
    );
    // A shared file through a symlink from the client's directory.
    assert_eq!(two.get_small(addr, "pxelinux.0").unwrap(), b"shared loader");
    // Files of the root are not the client's, and it cannot climb to them.
    assert_eq!(two.get_small(addr, "secret"), Err(1));
    assert_eq!(two.get_small(addr, "../secret"), Err(2));
    // A client without a directory gets the root.
    assert_eq!(
        three.get_small(addr, "pxelinux.cfg/default").unwrap(),
        b"shared config"
    );
    assert_eq!(three.get_small(addr, "secret").unwrap(), b"root only");
    server.stop();
}

for_each_adapter!(
    symlinks_resolve_inside_the_root,
    uploads_follow_directory_links_inside_the_root,
    special_files_are_refused_without_blocking,
    per_client_root_serves_the_clients_own_directory,
);
