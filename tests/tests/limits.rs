//! Server limits at their edges: concurrent sessions, sessions per peer,
//! request size, duplicate requests, and garbage on the listening port.

mod common;

use common::{ack, error, rrq, Raw};
use tftp_proto::options::Limits;
use tftp_tokio::{DirHandler, Server};

fn builder(dir: &std::path::Path) -> tftp_tokio::ServerBuilder<DirHandler> {
    Server::builder(DirHandler::new(dir).unwrap()).listen("127.0.0.1:0".parse().unwrap())
}

/// Opens a session that stays open (the client does not ACK) and returns the
/// server's transfer address.
async fn hold(raw: &Raw, server: std::net::SocketAddr) -> std::net::SocketAddr {
    raw.send(server, &rrq("f.bin", &[])).await;
    let (data, tid) = raw.recv().await;
    assert_eq!(data[..4], [0, 3, 0, 1], "DATA 1");
    tid
}

#[tokio::test]
async fn max_sessions_edge() {
    let dir = common::root(&[("f.bin", &common::content(2000, 1))]);
    let server = common::start_with(builder(dir.path()).max_sessions(2)).await;
    let a = Raw::new().await;
    let b = Raw::new().await;
    let c = Raw::new().await;
    let tid_a = hold(&a, server.addr).await;
    let _tid_b = hold(&b, server.addr).await;
    // The third is refused from the listening port.
    c.send(server.addr, &rrq("f.bin", &[])).await;
    let (reply, from) = c.recv().await;
    assert_eq!(from, server.addr);
    assert_eq!(reply[..4], [0, 5, 0, 0]);
    assert!(String::from_utf8_lossy(&reply).contains("busy"));
    assert_eq!(server.stats.snapshot().rejected_by_limits, 1);
    // One ends: a new request is admitted.
    a.send(tid_a, &error(0, "bye")).await;
    for _ in 0..100 {
        c.send(server.addr, &rrq("f.bin", &[])).await;
        let (reply, _) = c.recv().await;
        if reply[..2] == [0, 3] {
            server.stop_abort().await;
            return;
        }
        // Still refused: the ended session is being cleaned up; ask again.
        tokio::task::yield_now().await;
    }
    panic!("never admitted after a session ended");
}

#[tokio::test]
async fn max_sessions_per_peer_edge() {
    let dir = common::root(&[("f.bin", &common::content(2000, 1))]);
    let server = common::start_with(builder(dir.path()).max_sessions_per_peer(1)).await;
    let a1 = Raw::on("127.0.0.1").await;
    let a2 = Raw::on("127.0.0.1").await;
    let b = Raw::on("127.0.0.2").await;
    hold(&a1, server.addr).await;
    a2.send(server.addr, &rrq("f.bin", &[])).await;
    let (reply, _) = a2.recv().await;
    assert_eq!(reply[..4], [0, 5, 0, 0], "second session from the same IP");
    hold(&b, server.addr).await;
    server.stop_abort().await;
}

#[tokio::test]
async fn request_size_edge() {
    let dir = common::root(&[]);
    let server = common::serve_dir(dir.path()).await;
    let raw = Raw::new().await;
    // Exactly 512 bytes: accepted (the file does not exist: ERROR 1 from a TID).
    // Short path components (a long name would hit NAME_MAX first).
    let mut name = "d/".repeat(250);
    name.push_str(&"x".repeat(512 - 2 - 1 - 6 - 500));
    let req = rrq(&name, &[]);
    assert_eq!(req.len(), Limits::default().max_request_size);
    raw.send(server.addr, &req).await;
    let (reply, from) = raw.recv().await;
    assert_eq!(reply[..4], [0, 5, 0, 1]);
    assert_ne!(from, server.addr);
    // 513 bytes: ERROR 4 from the listening port.
    name.push('x');
    raw.send(server.addr, &rrq(&name, &[])).await;
    let (reply, from) = raw.recv().await;
    assert_eq!(reply[..4], [0, 5, 0, 4]);
    assert_eq!(from, server.addr);
    server.stop().await;
}

#[tokio::test]
async fn duplicate_request_gets_one_session() {
    let data = common::content(1500, 4);
    let dir = common::root(&[("f.bin", &data)]);
    let server = common::serve_dir(dir.path()).await;
    let raw = Raw::new().await;
    let req = rrq("f.bin", &[]);
    raw.send(server.addr, &req).await;
    raw.send(server.addr, &req).await;
    let mut got = Vec::new();
    let mut tid = None;
    let mut block = 1u16;
    loop {
        let (pkt, from) = raw.recv().await;
        assert_eq!(*tid.get_or_insert(from), from, "a second session answered");
        assert_eq!(pkt[..2], [0, 3]);
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        if n == block {
            got.extend_from_slice(&pkt[4..]);
            raw.send(from, &ack(n)).await;
            block += 1;
            if pkt.len() < 516 {
                break;
            }
        }
    }
    assert_eq!(got, data);
    let s = server.stats.snapshot();
    assert_eq!(s.sessions_started, 1);
    assert_eq!(s.duplicate_requests, 1);
    server.stop().await;
}

#[tokio::test]
async fn garbage_on_the_listening_port_is_ignored() {
    let dir = common::root(&[("f.bin", b"ok")]);
    let server = common::serve_dir(dir.path()).await;
    let raw = Raw::new().await;
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x03\x00\x01data",
        b"\x00\x04\x00\x01",
        b"\x00\x05\x00\x01x\x00",
        b"\x00\x06",
        b"\xff\xff\xff",
    ] {
        raw.send(server.addr, junk).await;
    }
    // Malformed requests get ERROR 4; then a valid one is still served.
    raw.send(server.addr, b"\x00\x01f.bin\x00mail\x00").await;
    let (reply, _) = raw.recv().await;
    assert_eq!(reply[..4], [0, 5, 0, 4], "{reply:?}");
    raw.send(server.addr, &rrq("f.bin", &[])).await;
    let (reply, tid) = raw.recv().await;
    assert_eq!(reply, b"\x00\x03\x00\x01ok");
    raw.send(tid, &ack(1)).await;
    assert_eq!(server.stats.snapshot().bad_requests, 8);
    server.stop().await;
}
