//! Dropping a `serve` future (a timeout, a select) stops the server: its
//! accept loops end, so a request afterwards gets no answer, on every async
//! runtime.

mod common;

use std::time::Duration;

use common::{rrq, Raw};

/// Sends a RRQ and says whether anything answered within `wait`.
fn answered(addr: std::net::SocketAddr, wait: Duration) -> bool {
    let raw = Raw::new();
    raw.socket.set_read_timeout(Some(wait)).unwrap();
    raw.send(addr, &rrq("f.bin", &[]));
    let mut buf = [0u8; 1024];
    raw.socket.recv_from(&mut buf).is_ok()
}

#[test]
fn tokio_dropped_serve_stops_accepting() {
    let dir = common::root(&[("f.bin", b"hello")]);
    let server = tftp_tokio::Server::builder(tftp_tokio::DirHandler::new(dir.path()).unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap();
    let addr = server.local_addrs()[0];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.spawn(async move {
        let _ = server.serve(std::future::pending()).await;
    });
    // Serving: answered.
    assert!(answered(addr, Duration::from_secs(5)));
    handle.abort();
    let _ = rt.block_on(handle);
    assert!(
        !answered(addr, Duration::from_millis(500)),
        "still accepting after serve was dropped"
    );
}

#[test]
fn smol_dropped_serve_stops_accepting() {
    let dir = common::root(&[("f.bin", b"hello")]);
    let server = tftp_smol::Server::builder(tftp_smol::DirHandler::new(dir.path()).unwrap())
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap();
    let addr = server.local_addrs()[0];
    // smol's global executor runs the task on its own threads.
    let task = smol::spawn(server.serve(std::future::pending()));
    assert!(
        answered(addr, Duration::from_secs(5)),
        "answered while serving"
    );
    smol::block_on(task.cancel());
    assert!(
        !answered(addr, Duration::from_millis(500)),
        "still accepting after serve was dropped"
    );
}
