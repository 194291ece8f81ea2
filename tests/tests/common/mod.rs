//! Shared helpers for the integration tests: a served temporary directory,
//! deterministic file contents, a server on an ephemeral loopback port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tftp_proto::stats::Stats;
use tftp_tokio::{DirHandler, Handler, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Deterministic bytes of `len` (a seeded xorshift).
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Text with LF and CR for netascii tests.
pub fn text(len: usize) -> Vec<u8> {
    let unit = b"line of text\nwith a bare \r carriage return\r\n";
    unit.iter().copied().cycle().take(len).collect()
}

/// A temporary directory with files.
pub fn root(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, bytes).expect("write");
    }
    dir
}

/// A running server and what it recorded.
pub struct Running {
    pub addr: SocketAddr,
    pub stats: tftp_tokio::StatsHandle,
    pub sessions: Arc<Mutex<Vec<Stats>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve");
        }
    }
}

impl Running {
    /// Stops without waiting for the drain: aborts the serving task (for tests
    /// that leave sessions hanging on purpose).
    pub async fn stop_abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts `builder` (on 127.0.0.1:0 unless it already listens) and records
/// each session's statistics.
pub async fn start_with<H: Handler>(builder: tftp_tokio::ServerBuilder<H>) -> Running {
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&sessions);
    let server = builder
        .on_session_end(move |s| recorded.lock().unwrap().push(s.clone()))
        .bind()
        .await
        .expect("bind");
    let addr = server.local_addrs()[0];
    let stats = server.stats_handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stats,
        sessions,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Serves `dir` read-only on an ephemeral loopback port.
pub async fn serve_dir(dir: &Path) -> Running {
    let builder =
        Server::builder(DirHandler::new(dir).expect("root")).listen("127.0.0.1:0".parse().unwrap());
    start_with(builder).await
}

/// A raw UDP peer for scripted exchanges.
pub struct Raw {
    pub socket: tokio::net::UdpSocket,
}

impl Raw {
    pub async fn new() -> Self {
        Raw {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub async fn on(ip: &str) -> Self {
        Raw {
            socket: tokio::net::UdpSocket::bind(format!("{ip}:0"))
                .await
                .unwrap(),
        }
    }

    pub async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).await.unwrap();
    }

    /// The next datagram, or panic after 5 s.
    pub async fn recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.socket.recv_from(&mut buf),
        )
        .await
        .expect("no datagram within 5 s")
        .unwrap();
        buf.truncate(n);
        (buf, from)
    }
}

/// A RRQ for `name` with option pairs.
pub fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.extend_from_slice(b"octet\0");
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

pub fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}

pub fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut v = vec![0, 5];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v
}
