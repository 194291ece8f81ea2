//! Lock-step sessions on threads of their own (`session_threads`), on every
//! runtime: only lock-step transfers of files of at least
//! `SESSION_THREAD_MIN_SIZE` move, at most `session_threads` at once, and a
//! session there keeps every protection of one on the runtime: its data,
//! abort at shutdown, eviction while unverified, the place given back.
//! (The threads server runs every session on a thread, and a single-port
//! server none: their counters stay 0 and the rest holds the same.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::adapters::{Adapter, Cfg};
use common::{ack, error, rrq, Raw};
use tftp_proto::stats::Outcome;

const BIG: usize = tftp_io::SESSION_THREAD_MIN_SIZE as usize + 100;

/// Whether `A`'s server counts its sessions on threads (not the threads
/// server: all of its sessions are; and none in single-port mode, whose
/// sessions stay with the listening socket's runtime).
fn counts<A: Adapter>() -> bool {
    A::NAME != "blocking" && !common::adapters::single_port()
}

/// Receives the rest of a lock-step transfer whose DATA 1 (`first`) came
/// from `tid`, acknowledging each block: all its bytes.
fn finish_lock_step(raw: &Raw, tid: SocketAddr, first: &[u8], blksize: usize) -> Vec<u8> {
    assert_eq!(first[..4], [0, 3, 0, 1], "DATA 1: {:?}", &first[..4]);
    let mut got = first[4..].to_vec();
    let mut block = 1u16;
    let mut last = first.len() < 4 + blksize;
    raw.send(tid, &ack(block));
    while !last {
        let (pkt, from) = raw.recv();
        assert_eq!(from, tid);
        assert_eq!(pkt[..2], [0, 3], "{pkt:?}");
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        if n == block.wrapping_add(1) {
            block = n;
            got.extend_from_slice(&pkt[4..]);
            last = pkt.len() < 4 + blksize;
        }
        raw.send(tid, &ack(n));
    }
    got
}

/// Only lock-step transfers of large files move, up to the cap; the place
/// is given back when the session ends.
fn large_lock_step_transfers_take_threads_up_to_the_cap<A: Adapter>() {
    let big = common::content(BIG, 3);
    let small = common::content(100 * 1024, 4);
    let dir = common::root(&[("big.bin", &big), ("small.bin", &small)]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            session_threads: 1,
            ..Cfg::default()
        },
    );
    let threads = |n: usize| if counts::<A>() { n } else { 0 };
    assert_eq!(server.session_threads(), 0);
    // A: lock-step, large: on a thread (its first DATA comes from there).
    let a = Raw::new();
    a.send(server.addr, &rrq("big.bin", &[]));
    let (a_first, a_tid) = a.recv();
    assert_eq!(server.session_threads(), threads(1), "{}", A::NAME);
    // B: the same, past the cap: on the runtime.
    let b = Raw::new();
    b.send(server.addr, &rrq("big.bin", &[]));
    let (b_first, b_tid) = b.recv();
    assert_eq!(server.session_threads(), threads(1), "{}: capped", A::NAME);
    // C: windowed; D: a small file: neither moves (and A still holds it).
    let c = Raw::new();
    c.send(server.addr, &rrq("big.bin", &[("windowsize", "4")]));
    let (oack, c_tid) = c.recv();
    assert_eq!(oack[..2], [0, 6], "OACK");
    let d = Raw::new();
    d.send(server.addr, &rrq("small.bin", &[]));
    let (d_first, d_tid) = d.recv();
    assert_eq!(server.session_threads(), threads(1), "{}", A::NAME);
    c.send(c_tid, &error(0, "enough"));
    assert!(finish_lock_step(&d, d_tid, &d_first, 512) == small);
    assert!(
        finish_lock_step(&a, a_tid, &a_first, 512) == big,
        "{}",
        A::NAME
    );
    assert!(
        finish_lock_step(&b, b_tid, &b_first, 512) == big,
        "{}",
        A::NAME
    );
    let ended = server.wait_sessions(4, Duration::from_secs(20));
    let completed = ended
        .iter()
        .filter(|s| s.outcome == Some(Outcome::Completed))
        .count();
    assert_eq!(completed, 3, "{}: {ended:?}", A::NAME);
    assert_eq!(server.session_threads(), 0, "{}: given back", A::NAME);
    // The place is free again.
    let e = Raw::new();
    e.send(server.addr, &rrq("big.bin", &[]));
    let (e_first, e_tid) = e.recv();
    assert_eq!(server.session_threads(), threads(1), "{}", A::NAME);
    assert!(finish_lock_step(&e, e_tid, &e_first, 512) == big);
    server.wait_sessions(5, Duration::from_secs(20));
    assert_eq!(server.session_threads(), 0);
    server.stop();
}

/// Past the drain timeout, a session on a thread is aborted like one on
/// the runtime: its client hears ERROR 0 "Server shutting down".
fn a_thread_session_is_aborted_at_shutdown<A: Adapter>() {
    let dir = common::root(&[("big.bin", &common::content(BIG, 5))]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            session_threads: 1,
            drain: Duration::from_millis(200),
            ..Cfg::default()
        },
    );
    let raw = Raw::new();
    raw.send(server.addr, &rrq("big.bin", &[]));
    let (_, tid) = raw.recv();
    assert_eq!(
        server.session_threads(),
        usize::from(counts::<A>()),
        "{}",
        A::NAME
    );
    let sessions = std::sync::Arc::clone(&server.sessions);
    let stopping = std::thread::spawn(move || server.stop());
    // The client stalls: retransmissions, then the ERROR.
    for _ in 0..100 {
        let (pkt, from) = raw.recv();
        assert_eq!(from, tid);
        if pkt[..2] == [0, 5] {
            assert!(
                String::from_utf8_lossy(&pkt).contains("shutting down"),
                "{}: {pkt:?}",
                A::NAME
            );
            stopping.join().unwrap();
            let ended = sessions.wait(1, Duration::from_secs(5));
            assert!(
                matches!(ended[0].outcome, Some(Outcome::LocalError(_))),
                "{}: {:?}",
                A::NAME,
                ended[0].outcome
            );
            return;
        }
    }
    panic!("{}: no ERROR after the drain timeout", A::NAME);
}

/// An unverified session on a thread gives its place to a newer request
/// past `max_unverified`, as one on the runtime does: it ends silently,
/// and its thread place is given back.
fn an_unverified_thread_session_is_evicted<A: Adapter>() {
    let big = common::content(BIG, 6);
    let dir = common::root(&[("big.bin", &big)]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            session_threads: 2,
            max_unverified: Some(1),
            ..Cfg::default()
        },
    );
    let first = Raw::new();
    first.send(server.addr, &rrq("big.bin", &[]));
    let (_, first_tid) = first.recv();
    let second = Raw::new();
    second.send(server.addr, &rrq("big.bin", &[]));
    let (second_first, second_tid) = second.recv();
    // The first ended, evicted, without a word to its client.
    let ended = server.wait_sessions(1, Duration::from_secs(5));
    assert_eq!(ended[0].outcome, Some(Outcome::Evicted), "{}", A::NAME);
    assert_eq!(
        server.session_threads(),
        usize::from(counts::<A>()),
        "{}: the evicted session's place is back",
        A::NAME
    );
    first.send(first_tid, &ack(1));
    assert!(finish_lock_step(&second, second_tid, &second_first, 512) == big);
    first
        .socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 600];
    while let Ok((_, from)) = first.socket.recv_from(&mut buf) {
        // Retransmissions sent before the eviction may still be queued;
        // nothing answers the late ACK.
        assert_eq!(from, first_tid);
    }
    server.wait_sessions(2, Duration::from_secs(5));
    assert_eq!(server.session_threads(), 0);
    server.stop();
}

/// A spoofed, unanswered request on a thread keeps the unverified budget:
/// its source hears the first answer and `DEFAULT_UNVERIFIED_RETRIES`
/// retransmissions (at most the unverified lifetime), then the session ends
/// timed out and gives its place back.
fn an_unanswered_request_on_a_thread_keeps_the_unverified_budget<A: Adapter>() {
    let dir = common::root(&[("big.bin", &common::content(BIG, 7))]);
    let limits = tftp_proto::options::Limits {
        initial_rto: Duration::from_millis(40),
        ..Default::default()
    };
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            session_threads: 1,
            limits: Some(limits),
            ..Cfg::default()
        },
    );
    let spoofed = Raw::new();
    spoofed.send(server.addr, &rrq("big.bin", &[]));
    let (first, _) = spoofed.recv();
    assert_eq!(
        server.session_threads(),
        usize::from(counts::<A>()),
        "{}",
        A::NAME
    );
    spoofed
        .socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut resent = 0;
    let mut buf = [0u8; 600];
    while let Ok((n, _)) = spoofed.socket.recv_from(&mut buf) {
        assert_eq!(buf[..n], first[..], "{}: the same DATA 1, resent", A::NAME);
        resent += 1;
        assert!(resent <= 10, "{}: unbounded", A::NAME);
    }
    let retries = tftp_proto::options::DEFAULT_UNVERIFIED_RETRIES as usize;
    assert_eq!(resent, retries, "{}", A::NAME);
    let ended = server.wait_sessions(1, Duration::from_secs(20));
    assert_eq!(ended[0].outcome, Some(Outcome::TimedOut), "{}", A::NAME);
    assert!(!ended[0].verified);
    assert_eq!(
        server.session_threads(),
        0,
        "{}: the place is back",
        A::NAME
    );
    server.stop();
}

for_each_adapter!(
    an_unanswered_request_on_a_thread_keeps_the_unverified_budget,
    large_lock_step_transfers_take_threads_up_to_the_cap,
    a_thread_session_is_aborted_at_shutdown,
    an_unverified_thread_session_is_evicted,
);
