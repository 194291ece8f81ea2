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
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
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
