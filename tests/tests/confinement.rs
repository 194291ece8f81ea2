//! DirHandler confinement: traversal variants, absolute paths, symlinks that
//! leave the root, directories and unreadable files. Nothing outside the root
//! is ever served or written.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};

use tftp_proto::packet::ErrorCode;
use tftp_tokio::{Client, ClientError, DirHandler, Server};

const SECRET: &[u8] = b"TOP SECRET outside the root";

fn error_code(r: Result<tftp_proto::stats::Stats, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, message, .. }) => {
            assert!(!message.contains('/'), "message reveals a path: {message}");
            code
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn nothing_outside_the_root_is_served() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), SECRET).unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("ok.txt"), b"fine").unwrap();
    std::fs::write(root.join("sub/inner.txt"), b"inner").unwrap();
    symlink(outer.path().join("secret.txt"), root.join("abs-link")).unwrap();
    symlink("../secret.txt", root.join("rel-link")).unwrap();
    symlink("sub/inner.txt", root.join("good-link")).unwrap();
    symlink("/etc", root.join("etc-link")).unwrap();

    let server = common::serve_dir(&root).await;
    let client = Client::new(server.addr);

    // Allowed: plain, leading slash, nested, a symlink that stays inside.
    for (name, want) in [
        ("ok.txt", &b"fine"[..]),
        ("/ok.txt", b"fine"),
        ("sub/inner.txt", b"inner"),
        ("good-link", b"inner"),
        ("sub/../ok.txt", b"fine"),
    ] {
        let mut got = Vec::new();
        client
            .get(name, &mut got)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }

    let escapes = [
        "../secret.txt",
        "/../secret.txt",
        "sub/../../secret.txt",
        "./../secret.txt",
        "sub/../../root/../secret.txt",
        "abs-link",
        "rel-link",
        "etc-link/passwd",
        "/etc/passwd",
        "//etc/passwd",
        "..",
        "../",
        "../root/ok.txt",
    ];
    for name in escapes {
        let mut got = Vec::new();
        let code = error_code(client.get(name, &mut got).await);
        assert!(
            matches!(code, ErrorCode::FileNotFound | ErrorCode::AccessViolation),
            "{name}: {code:?}"
        );
        assert!(got.is_empty(), "{name}: served bytes");
    }

    // A directory, a missing file.
    assert_eq!(
        error_code(client.get("sub", &mut Vec::new()).await),
        ErrorCode::AccessViolation
    );
    assert_eq!(
        error_code(client.get("/", &mut Vec::new()).await),
        ErrorCode::FileNotFound
    );
    assert_eq!(
        error_code(client.get("nope", &mut Vec::new()).await),
        ErrorCode::FileNotFound
    );

    // An unreadable file (unless we run with privileges that ignore modes).
    let locked = root.join("locked.txt");
    std::fs::write(&locked, b"locked").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_ok() {
        println!("running with privileges that ignore file modes: unreadable-file check skipped");
    } else {
        assert_eq!(
            error_code(client.get("locked.txt", &mut Vec::new()).await),
            ErrorCode::AccessViolation
        );
    }

    // Writes are off by default.
    let mut src: &[u8] = b"x";
    assert_eq!(
        error_code(client.put("new.txt", &mut src, None).await),
        ErrorCode::AccessViolation
    );
    assert!(!root.join("new.txt").exists());
    server.stop().await;
}

#[tokio::test]
async fn writes_stay_inside_and_respect_overwrite() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("exists.txt"), b"old").unwrap();
    symlink(outer.path().join("target.txt"), root.join("out-link")).unwrap();

    let handler = DirHandler::new(&root).unwrap().allow_write(true);
    let server =
        common::start_with(Server::builder(handler).listen("127.0.0.1:0".parse().unwrap())).await;
    let client = Client::new(server.addr).blksize(1024);
    let data = common::content(10_000, 3);
    let mut src: &[u8] = &data;
    client.put("/new.bin", &mut src, None).await.unwrap();
    assert_eq!(std::fs::read(root.join("new.bin")).unwrap(), data);
    let mut src: &[u8] = b"new";
    assert_eq!(
        error_code(client.put("exists.txt", &mut src, None).await),
        ErrorCode::FileExists
    );
    assert_eq!(std::fs::read(root.join("exists.txt")).unwrap(), b"old");
    for name in ["../evil.txt", "out-link", "/../evil.txt"] {
        let mut src: &[u8] = b"evil";
        let code = error_code(client.put(name, &mut src, None).await);
        assert!(
            matches!(
                code,
                ErrorCode::AccessViolation | ErrorCode::FileExists | ErrorCode::FileNotFound
            ),
            "{name}: {code:?}"
        );
    }
    assert!(!outer.path().join("evil.txt").exists());
    assert!(!outer.path().join("target.txt").exists());
    server.stop().await;

    let handler = DirHandler::new(&root)
        .unwrap()
        .allow_write(true)
        .allow_overwrite(true);
    let server =
        common::start_with(Server::builder(handler).listen("127.0.0.1:0".parse().unwrap())).await;
    let mut src: &[u8] = b"replaced";
    Client::new(server.addr)
        .put("exists.txt", &mut src, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("exists.txt")).unwrap(), b"replaced");
    let mut src: &[u8] = b"evil";
    error_code(
        Client::new(server.addr)
            .put("out-link", &mut src, None)
            .await,
    );
    assert!(!outer.path().join("target.txt").exists());
    server.stop().await;
}
