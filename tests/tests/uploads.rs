//! Uploads on every runtime: the loser of a new-only race gets ERROR 6 and
//! changes nothing; upload temporary files are never served nor written to.

mod common;

use common::adapters::{Adapter, Cfg};
use common::{ack, Raw};

fn wrq(name: &str) -> Vec<u8> {
    let mut v = vec![0, 2];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b"\0octet\0");
    v
}

fn new_only_race_loser_gets_error_6<A: Adapter>() {
    let root = common::root(&[]);
    let cfg = Cfg {
        allow_write: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let client = Raw::new();
    client.send(server.addr, &wrq("race.bin"));
    let (answer, tid) = client.recv();
    assert_eq!(answer, ack(0), "{}", A::NAME);
    // Someone else creates the name while the upload runs.
    std::fs::write(root.path().join("race.bin"), b"the winner").unwrap();
    client.send(tid, b"\x00\x03\x00\x01the loser");
    let (answer, _) = client.recv();
    assert_eq!(
        &answer[..4],
        &[0, 5, 0, 6],
        "{}: ERROR 6, {answer:?}",
        A::NAME
    );
    assert_eq!(
        std::fs::read(root.path().join("race.bin")).unwrap(),
        b"the winner"
    );
    server.stop();
    let names: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["race.bin"], "{}: no temporary file left", A::NAME);
}

fn upload_temporaries_are_never_served<A: Adapter>() {
    let root = common::root(&[(".boot.img.tftp-upload-4242-0", b"half written")]);
    let cfg = Cfg {
        allow_write: true,
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let client = Raw::new();
    assert_eq!(
        client.get_small(server.addr, ".boot.img.tftp-upload-4242-0"),
        Err(1),
        "{}",
        A::NAME
    );
    client.send(server.addr, &wrq(".x.tftp-upload-1-1"));
    let (answer, _) = client.recv();
    assert_eq!(&answer[..4], &[0, 5, 0, 2], "{}: {answer:?}", A::NAME);
    server.stop();
}

fn wrq_with_tsize(name: &str, tsize: u64) -> Vec<u8> {
    let mut v = wrq(name);
    v.extend_from_slice(format!("tsize\0{tsize}\0").as_bytes());
    v
}

fn upload_size_limit<A: Adapter>() {
    let root = common::root(&[]);
    let cfg = Cfg {
        allow_write: true,
        max_upload_size: Some(1000),
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    // Announced too large: ERROR 3 at once.
    let client = Raw::new();
    client.send(server.addr, &wrq_with_tsize("big.bin", 1001));
    let (answer, _) = client.recv();
    assert_eq!(&answer[..4], &[0, 5, 0, 3], "{}: {answer:?}", A::NAME);
    // At the limit: accepted.
    let o = common::adapters::Opts::default();
    A::put(server.addr, "edge.bin", &common::content(1000, 1), o).unwrap();
    assert_eq!(
        std::fs::read(root.path().join("edge.bin")).unwrap().len(),
        1000
    );
    // Growing past it without a tsize: ERROR 3, nothing left behind.
    let r = A::put(server.addr, "grow.bin", &common::content(3000, 2), o);
    match r {
        Err(tftp_blocking::ClientError::Server { code, .. }) => {
            assert_eq!(code, tftp_proto::packet::ErrorCode::DiskFull, "{}", A::NAME)
        }
        other => panic!("{}: {other:?}", A::NAME),
    }
    server.stop();
    let names: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["edge.bin"], "{}", A::NAME);
}

fn uploads_only_under_the_upload_dir<A: Adapter>() {
    let root = common::root(&[("pxelinux.cfg/default", b"boot menu")]);
    std::fs::create_dir_all(root.path().join("incoming")).unwrap();
    std::os::unix::fs::symlink("/pxelinux.cfg", root.path().join("incoming/cfg")).unwrap();
    let cfg = Cfg {
        allow_write: true,
        allow_overwrite: true,
        upload_dir: Some("incoming"),
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    let o = common::adapters::Opts::default();
    A::put(server.addr, "incoming/log.txt", b"log", o).unwrap();
    assert_eq!(
        std::fs::read(root.path().join("incoming/log.txt")).unwrap(),
        b"log"
    );
    for name in [
        "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff",
        "pxelinux.cfg/default",
        "incoming/../pxelinux.cfg/default",
        "incoming/cfg/default",
        "incoming/cfg/01-aa-bb-cc-dd-ee-ff",
        "incoming",
    ] {
        assert!(
            A::put(server.addr, name, b"hijack", o).is_err(),
            "{} {name}",
            A::NAME
        );
    }
    server.stop();
    assert_eq!(
        std::fs::read(root.path().join("pxelinux.cfg/default")).unwrap(),
        b"boot menu"
    );
    assert_eq!(
        std::fs::read_dir(root.path().join("pxelinux.cfg"))
            .unwrap()
            .count(),
        1
    );
}

for_each_adapter!(
    upload_size_limit,
    uploads_only_under_the_upload_dir,
    new_only_race_loser_gets_error_6,
    upload_temporaries_are_never_served
);
