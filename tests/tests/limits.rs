//! Server limits at their edges on every runtime: concurrent sessions,
//! sessions per peer, request size, duplicate requests, and garbage on the
//! listening port.

mod common;

use std::time::Duration;

use common::adapters::{Adapter, Cfg};
use common::{ack, error, rrq, Raw};
use tftp_proto::options::Limits;
use tftp_proto::packet::ErrorCode;
use tftp_proto::stats::Outcome;

/// Opens a session that stays open: the client ACKs DATA 1 (so the server
/// counts it as verified, never to be evicted) and then stops; returns the
/// server's transfer address.
fn hold(raw: &Raw, server: std::net::SocketAddr) -> std::net::SocketAddr {
    raw.send(server, &rrq("f.bin", &[]));
    let (data, tid) = raw.recv();
    assert_eq!(data[..4], [0, 3, 0, 1], "DATA 1");
    raw.send(tid, &ack(1));
    let (data, _) = raw.recv();
    assert_eq!(data[..4], [0, 3, 0, 2], "DATA 2");
    tid
}

/// Completes a held lock-step transfer of a file shorter than 512 × 8 bytes.
fn finish(raw: &Raw, tid: std::net::SocketAddr) {
    let mut block = 2u16;
    raw.send(tid, &ack(block));
    loop {
        let (pkt, _) = raw.recv();
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        if n == block + 1 {
            block = n;
            raw.send(tid, &ack(n));
            if pkt.len() < 516 {
                return;
            }
        }
    }
}

fn max_sessions_edge<A: Adapter>() {
    let dir = common::root(&[("f.bin", &common::content(2000, 1))]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            max_sessions: 2,
            ..Cfg::default()
        },
    );
    let (a, b, c) = (Raw::new(), Raw::new(), Raw::new());
    let tid_a = hold(&a, server.addr);
    let tid_b = hold(&b, server.addr);
    c.send(server.addr, &rrq("f.bin", &[]));
    let (reply, from) = c.recv();
    assert_eq!(from, server.addr);
    assert_eq!(reply[..4], [0, 5, 0, 0]);
    assert!(String::from_utf8_lossy(&reply).contains("busy"));
    assert_eq!(server.stats().rejected_by_limits, 1);
    // One ends: once its end is reported, its place is free.
    a.send(tid_a, &error(0, "bye"));
    server.wait_sessions(1, Duration::from_secs(10));
    c.send(server.addr, &rrq("f.bin", &[]));
    let (reply, tid) = c.recv();
    assert_eq!(
        reply[..4],
        [0, 3, 0, 1],
        "{}: not admitted after a session ended",
        A::NAME
    );
    c.send(tid, &ack(1));
    c.recv();
    finish(&c, tid);
    finish(&b, tid_b);
    server.stop();
}

fn max_sessions_per_peer_edge<A: Adapter>() {
    let dir = common::root(&[("f.bin", &common::content(2000, 1))]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            max_sessions_per_peer: 1,
            ..Cfg::default()
        },
    );
    let (a1, a2, b) = (
        Raw::on("127.0.0.1"),
        Raw::on("127.0.0.1"),
        Raw::on("127.0.0.2"),
    );
    let tid_a = hold(&a1, server.addr);
    a2.send(server.addr, &rrq("f.bin", &[]));
    let (reply, _) = a2.recv();
    assert_eq!(reply[..4], [0, 5, 0, 0], "second session from the same IP");
    let tid_b = hold(&b, server.addr);
    finish(&a1, tid_a);
    finish(&b, tid_b);
    server.stop();
}

fn request_size_edge<A: Adapter>() {
    let dir = common::root(&[]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    let raw = Raw::new();
    let mut name = "d/".repeat(250);
    name.push_str(&"x".repeat(512 - 2 - 1 - 6 - 500));
    let req = rrq(&name, &[]);
    assert_eq!(req.len(), Limits::default().max_request_size);
    raw.send(server.addr, &req);
    let (reply, from) = raw.recv();
    assert_eq!(
        reply[..4],
        [0, 5, 0, 1],
        "exactly 512 bytes: served (file not found)"
    );
    assert_eq!(
        from == server.addr,
        common::adapters::single_port(),
        "from a transfer socket, but in single-port mode"
    );
    name.push('x');
    raw.send(server.addr, &rrq(&name, &[]));
    let (reply, from) = raw.recv();
    assert_eq!(reply[..4], [0, 5, 0, 4], "513 bytes: ERROR 4");
    assert_eq!(from, server.addr);
    server.stop();
}

fn duplicate_request_gets_one_session<A: Adapter>() {
    let data = common::content(1500, 4);
    let dir = common::root(&[("f.bin", &data)]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    let raw = Raw::new();
    let req = rrq("f.bin", &[]);
    raw.send(server.addr, &req);
    raw.send(server.addr, &req);
    let mut got = Vec::new();
    let mut tid = None;
    let mut block = 1u16;
    loop {
        let (pkt, from) = raw.recv();
        assert_eq!(
            *tid.get_or_insert(from),
            from,
            "{}: a second session answered",
            A::NAME
        );
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        if n == block {
            got.extend_from_slice(&pkt[4..]);
            raw.send(from, &ack(n));
            block += 1;
            if pkt.len() < 516 {
                break;
            }
        }
    }
    assert_eq!(got, data);
    let s = server.stats();
    assert_eq!(s.sessions_started, 1);
    assert_eq!(s.duplicate_requests, 1);
    server.stop();
}

/// A request from the same port for the same file is a new one once the
/// client has answered the running session (its new socket got the port
/// back while the old session waits for its last ACK), or when its options
/// differ (UEFI's download right after its tsize probe): both are served at
/// once, not after the client's retransmission timeout.
///
/// In single-port mode the new session takes the place of the old one,
/// which ends silently (cancelled): its peer's datagrams now go to the new
/// one.
fn same_port_new_request_is_served<A: Adapter>() {
    let data = common::content(700, 5);
    let dir = common::root(&[("f.bin", &data)]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    if common::adapters::single_port() {
        return same_port_new_request_replaces_the_session::<A>(server, &data);
    }
    let raw = Raw::new();
    // Answered: DATA 1 acknowledged, the last block not yet.
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (pkt, old) = raw.recv();
    assert_eq!(pkt[..4], [0, 3, 0, 1]);
    raw.send(old, &ack(1));
    let (pkt, _) = raw.recv();
    assert_eq!(pkt[..4], [0, 3, 0, 2], "{}: the last block", A::NAME);
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (pkt, new) = raw.recv();
    assert_eq!(pkt[..4], [0, 3, 0, 1], "{}: a new session", A::NAME);
    assert_ne!(new, old, "{}: from a new transfer port", A::NAME);
    raw.send(old, &ack(2));
    raw.send(new, &error(0, "done"));
    // Unanswered, other options: the size probe, then the download.
    raw.send(server.addr, &rrq("f.bin", &[("tsize", "0")]));
    let (pkt, probe) = raw.recv();
    assert_eq!(pkt[..2], [0, 6], "{}: OACK", A::NAME);
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (pkt, download) = raw.recv();
    assert_eq!(
        pkt[..4],
        [0, 3, 0, 1],
        "{}: DATA 1 of the download",
        A::NAME
    );
    assert_ne!(download, probe);
    raw.send(probe, &error(8, "probe done"));
    raw.send(download, &ack(1));
    let (pkt, _) = raw.recv();
    assert_eq!(pkt[4..], data[512..]);
    raw.send(download, &ack(2));
    let s = server.stats();
    assert_eq!(
        (s.sessions_started, s.duplicate_requests),
        (4, 0),
        "{}",
        A::NAME
    );
    server.stop();
}

/// [`same_port_new_request_is_served`] in single-port mode.
fn same_port_new_request_replaces_the_session<A: Adapter>(
    server: common::adapters::Served,
    data: &[u8],
) {
    let raw = Raw::new();
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (pkt, from) = raw.recv();
    assert_eq!((&pkt[..4], from), (&[0, 3, 0, 1][..], server.addr));
    raw.send(server.addr, &ack(1));
    let (pkt, _) = raw.recv();
    assert_eq!(pkt[..4], [0, 3, 0, 2], "{}: the last block", A::NAME);
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (pkt, from) = raw.recv();
    assert_eq!(pkt[..4], [0, 3, 0, 1], "{}: a new session", A::NAME);
    assert_eq!(from, server.addr, "{}", A::NAME);
    raw.send(server.addr, &error(0, "done"));
    // (A request from the port before the ERROR is taken would replace
    // that session too, dropping the ERROR.)
    // Both ended, in either order: the replaced one, and the one the ERROR
    // ended.
    let ended = server.sessions.wait(2, std::time::Duration::from_secs(10));
    let outcomes: Vec<_> = ended.iter().map(|s| s.outcome).collect();
    assert!(
        outcomes.contains(&Some(Outcome::PeerError(ErrorCode::NotDefined)))
            && outcomes.contains(&Some(Outcome::Evicted)),
        "{}: {outcomes:?}",
        A::NAME
    );
    // Unanswered, other options: the size probe, then the download, which
    // ends the probe.
    raw.send(server.addr, &rrq("f.bin", &[("tsize", "0")]));
    let (pkt, _) = raw.recv();
    assert_eq!(pkt[..2], [0, 6], "{}: OACK", A::NAME);
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (pkt, _) = raw.recv();
    assert_eq!(
        pkt[..4],
        [0, 3, 0, 1],
        "{}: DATA 1 of the download",
        A::NAME
    );
    raw.send(server.addr, &ack(1));
    let (pkt, _) = raw.recv();
    assert_eq!(pkt[4..], data[512..]);
    raw.send(server.addr, &ack(2));
    let ended = server.sessions.wait(4, std::time::Duration::from_secs(10));
    let cancelled = ended
        .iter()
        .filter(|s| s.outcome == Some(Outcome::Evicted))
        .count();
    assert_eq!(
        cancelled,
        2,
        "{}: the replaced sessions: {ended:?}",
        A::NAME
    );
    let s = server.stats();
    assert_eq!((s.sessions_started, s.duplicate_requests), (4, 0));
    server.stop();
}

fn garbage_on_the_listening_port_is_ignored<A: Adapter>() {
    let dir = common::root(&[("f.bin", b"ok")]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    let raw = Raw::new();
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x03\x00\x01data",
        b"\x00\x04\x00\x01",
        b"\x00\x05\x00\x01x\x00",
        b"\x00\x06",
        b"\xff\xff\xff",
    ] {
        raw.send(server.addr, junk);
    }
    raw.send(server.addr, b"\x00\x01f.bin\x00mail\x00");
    let (reply, _) = raw.recv();
    assert_eq!(reply[..4], [0, 5, 0, 4], "{reply:?}");
    raw.send(server.addr, &rrq("f.bin", &[]));
    let (reply, tid) = raw.recv();
    assert_eq!(reply, b"\x00\x03\x00\x01ok");
    raw.send(tid, &ack(1));
    assert_eq!(server.stats().bad_requests, 8);
    server.stop();
}

/// Requests whose option area ends early are served as tftpd-hpa serves
/// them: a last name with no value is ignored, and an empty string ends the
/// options (what follows it is not read); the options before count.
fn incomplete_option_areas_are_served<A: Adapter>() {
    let dir = common::root(&[("f.bin", b"ok")]);
    let server = A::serve_dir(dir.path(), &Cfg::default());
    for (request, oack) in [
        (&b"\x00\x01f.bin\x00octet\x00blksize\x00"[..], None),
        (b"\x00\x01f.bin\x00octet\x00\x00garbage", None),
        (
            b"\x00\x01f.bin\x00octet\x00tsize\x000\x00blksize\x00",
            Some(&b"\x00\x06tsize\x002\x00"[..]),
        ),
        (
            b"\x00\x01f.bin\x00octet\x00tsize\x000\x00\x00blksize\x008\x00",
            Some(b"\x00\x06tsize\x002\x00"),
        ),
    ] {
        // A port of its own: the last one's session may not have heard
        // its final ACK yet.
        let raw = Raw::new();
        raw.send(server.addr, request);
        let (reply, tid) = raw.recv();
        match oack {
            None => assert_eq!(reply, b"\x00\x03\x00\x01ok", "{request:?}"),
            Some(oack) => {
                assert_eq!(reply, oack, "{request:?}");
                raw.send(tid, &ack(0));
                let (data, _) = raw.recv();
                assert_eq!(data, b"\x00\x03\x00\x01ok", "{request:?}");
            }
        }
        raw.send(tid, &ack(1));
    }
    assert_eq!(server.stats().bad_requests, 0);
    server.stop();
}

for_each_adapter!(
    incomplete_option_areas_are_served,
    max_sessions_edge,
    max_sessions_per_peer_edge,
    request_size_edge,
    duplicate_request_gets_one_session,
    same_port_new_request_is_served,
    garbage_on_the_listening_port_is_ignored,
);
