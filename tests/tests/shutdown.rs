//! Graceful shutdown: running transfers finish; past the drain deadline they
//! are aborted with an ERROR; new requests are no longer accepted.

mod common;

use std::time::Duration;

use common::{ack, rrq, Raw};
use tftp_tokio::{DirHandler, Server};

#[tokio::test]
async fn running_transfer_finishes_after_shutdown() {
    let data = common::content(512 * 5 + 10, 8);
    let dir = common::root(&[("f.bin", &data)]);
    let server = common::serve_dir(dir.path()).await;
    let addr = server.addr;
    let raw = Raw::new().await;
    raw.send(addr, &rrq("f.bin", &[])).await;
    let (first, tid) = raw.recv().await;
    let mut got = first[4..].to_vec();
    // Shut down in the middle of the transfer.
    let stopping = tokio::spawn(server.stop());
    // New requests are not served any more (bounded wait: once the listener
    // is closed, an ICMP error or silence; never DATA).
    let mut block = 1u16;
    raw.send(tid, &ack(block)).await;
    loop {
        let (pkt, from) = raw.recv().await;
        assert_eq!(from, tid);
        assert_eq!(pkt[..2], [0, 3]);
        let n = u16::from_be_bytes([pkt[2], pkt[3]]);
        if n == block + 1 {
            block = n;
            got.extend_from_slice(&pkt[4..]);
            raw.send(tid, &ack(n)).await;
            if pkt.len() < 516 {
                break;
            }
        }
    }
    assert_eq!(got, data);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("serve returns")
        .unwrap();
    let late = Raw::new().await;
    late.send(addr, &rrq("f.bin", &[])).await;
    let mut buf = [0u8; 600];
    let answer =
        tokio::time::timeout(Duration::from_millis(300), late.socket.recv_from(&mut buf)).await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "a request after shutdown was answered"
    );
}

#[tokio::test]
async fn transfer_past_the_drain_deadline_is_aborted() {
    let dir = common::root(&[("f.bin", &common::content(5000, 1))]);
    let builder = Server::builder(DirHandler::new(dir.path()).unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .drain_timeout(Duration::from_millis(200));
    let server = common::start_with(builder).await;
    let raw = Raw::new().await;
    raw.send(server.addr, &rrq("f.bin", &[])).await;
    let (_, tid) = raw.recv().await;
    let stopping = tokio::spawn(server.stop());
    // The client stalls; after the drain deadline it gets ERROR 0.
    loop {
        let (pkt, from) = raw.recv().await;
        assert_eq!(from, tid);
        if pkt[..2] == [0, 5] {
            assert!(String::from_utf8_lossy(&pkt).contains("shutting down"));
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("serve returns")
        .unwrap();
}
