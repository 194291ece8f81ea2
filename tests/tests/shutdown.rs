//! Graceful shutdown on every runtime: a running transfer finishes; past the
//! drain deadline it is aborted with an ERROR; nothing new is accepted.

mod common;

use std::time::Duration;

use common::adapters::{Adapter, Cfg};
use common::{ack, rrq, Raw};

fn running_transfer_finishes_after_shutdown<A: Adapter>() {
    let data = common::content(512 * 5 + 10, 8);
    let dir = common::root(&[("f.bin", &data)]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    let addr = server.addr;
    let raw = Raw::new();
    raw.send(addr, &rrq("f.bin", &[]));
    let (first, tid) = raw.recv();
    let mut got = first[4..].to_vec();
    // Shut down in the middle of the transfer (stop() returns when serve does).
    let stopping = std::thread::spawn(move || server.stop());
    let mut block = 1u16;
    raw.send(tid, &ack(block));
    loop {
        let (pkt, from) = raw.recv();
        assert_eq!(from, tid);
        assert_eq!(pkt[..2], [0, 3], "{}: {pkt:?}", A::NAME);
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        if n == block + 1 {
            block = n;
            got.extend_from_slice(&pkt[4..]);
            raw.send(tid, &ack(n));
            if pkt.len() < 516 {
                break;
            }
        }
    }
    assert_eq!(got, data);
    stopping.join().unwrap();
    // Not listening any more: a request gets no answer.
    let late = Raw::new();
    late.socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    late.send(addr, &rrq("f.bin", &[]));
    let mut buf = [0u8; 600];
    assert!(
        late.socket.recv_from(&mut buf).is_err(),
        "{}: answered after shutdown",
        A::NAME
    );
}

fn transfer_past_the_drain_deadline_is_aborted<A: Adapter>() {
    let dir = common::root(&[("f.bin", &common::content(5000, 1))]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            drain: Duration::from_millis(200),
            ..Cfg::default()
        },
    );
    let raw = Raw::new();
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (_, tid) = raw.recv();
    let stopping = std::thread::spawn(move || server.stop());
    // The client stalls; after the drain deadline it gets ERROR 0.
    loop {
        let (pkt, from) = raw.recv();
        assert_eq!(from, tid);
        if pkt[..2] == [0, 5] {
            assert!(
                String::from_utf8_lossy(&pkt).contains("shutting down"),
                "{}",
                A::NAME
            );
            break;
        }
    }
    stopping.join().unwrap();
}

for_each_adapter!(
    running_transfer_finishes_after_shutdown,
    transfer_past_the_drain_deadline_is_aborted
);
