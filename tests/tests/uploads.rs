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

for_each_adapter!(
    new_only_race_loser_gets_error_6,
    upload_temporaries_are_never_served
);
