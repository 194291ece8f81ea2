//! The framework API: handler errors reach the client as the right ERROR,
//! per-request option narrowing, generated content, streams of unknown
//! length, uploads, and the statistics callbacks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tftp_proto::options::{EnabledOptions, Limits};
use tftp_proto::packet::ErrorCode;
use tftp_proto::stats::Outcome;
use tftp_tokio::{
    Client, ClientError, Handler, ReadResponse, RequestInfo, Server, TftpError, WriteResponse,
};

struct Dynamic {
    uploads: Arc<Mutex<Vec<u8>>>,
}

impl Handler for Dynamic {
    async fn read(&self, req: &RequestInfo) -> Result<ReadResponse, TftpError> {
        match req.filename() {
            b"config" => Ok(ReadResponse::from_bytes(format!(
                "client={}\n",
                req.peer().ip()
            ))),
            b"stream" => Ok(ReadResponse::stream(std::io::Cursor::new(common::content(
                30_000, 5,
            )))),
            b"narrow" => Ok(
                ReadResponse::from_bytes(common::content(5000, 6)).with_limits(Limits {
                    max_blksize: 1024,
                    ..Limits::default()
                }),
            ),
            b"plain" => Ok(
                ReadResponse::from_bytes(common::content(5000, 7)).with_limits(Limits {
                    enabled: EnabledOptions::NONE,
                    ..Limits::default()
                }),
            ),
            b"secret" => Err(TftpError::access_violation("Go away")),
            b"slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(ReadResponse::from_bytes(b"slow".to_vec()))
            }
            _ => Err(TftpError::not_found()),
        }
    }

    async fn write(&self, req: &RequestInfo) -> Result<WriteResponse, TftpError> {
        if req.filename() != b"upload" {
            return Err(TftpError::new(ErrorCode::DiskFull, "Quota exceeded"));
        }
        Ok(WriteResponse::new(Collect(Arc::clone(&self.uploads))))
    }
}

/// An AsyncWrite that appends into shared memory.
struct Collect(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn start() -> (common::Running, Arc<Mutex<Vec<u8>>>) {
    let uploads = Arc::new(Mutex::new(Vec::new()));
    let handler = Dynamic {
        uploads: Arc::clone(&uploads),
    };
    let server =
        common::start_with(Server::builder(handler).listen("127.0.0.1:0".parse().unwrap())).await;
    (server, uploads)
}

#[tokio::test]
async fn generated_content_and_streams() {
    let (server, _) = start().await;
    let mut got = Vec::new();
    Client::new(server.addr)
        .get("config", &mut got)
        .await
        .unwrap();
    assert_eq!(got, b"client=127.0.0.1\n");
    // A stream of unknown length: tsize is not answered, the data is intact.
    let mut got = Vec::new();
    let stats = Client::new(server.addr)
        .tsize(true)
        .blksize(1468)
        .windowsize(8)
        .get("stream", &mut got)
        .await
        .unwrap();
    assert_eq!(got, common::content(30_000, 5));
    assert_eq!(stats.options_negotiated.tsize, None);
    assert_eq!(stats.options_negotiated.blksize, Some(1468));
    server.stop().await;
}

#[tokio::test]
async fn handler_errors_reach_the_client() {
    let (server, _) = start().await;
    for (file, code, message) in [
        ("missing", ErrorCode::FileNotFound, "File not found"),
        ("secret", ErrorCode::AccessViolation, "Go away"),
    ] {
        let mut got = Vec::new();
        match Client::new(server.addr)
            .blksize(1024)
            .get(file, &mut got)
            .await
        {
            Err(ClientError::Server {
                code: c,
                message: m,
                ..
            }) => {
                assert_eq!(c, code);
                assert_eq!(m, message);
            }
            other => panic!("{file}: {other:?}"),
        }
        assert!(got.is_empty());
    }
    let mut src: &[u8] = b"data";
    match Client::new(server.addr)
        .put("elsewhere", &mut src, Some(4))
        .await
    {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::DiskFull),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn per_request_narrowing() {
    let (server, _) = start().await;
    let mut got = Vec::new();
    let stats = Client::new(server.addr)
        .blksize(1468)
        .get("narrow", &mut got)
        .await
        .unwrap();
    assert_eq!(stats.options_negotiated.blksize, Some(1024));
    assert_eq!(got, common::content(5000, 6));
    // Options turned off for this file: no OACK at all, RFC 1350 defaults.
    let mut got = Vec::new();
    let stats = Client::new(server.addr)
        .blksize(1468)
        .tsize(true)
        .windowsize(4)
        .get("plain", &mut got)
        .await
        .unwrap();
    assert!(stats.options_negotiated.is_empty());
    assert_eq!(got, common::content(5000, 7));
    server.stop().await;
}

#[tokio::test]
async fn uploads_reach_the_sink() {
    let (server, uploads) = start().await;
    let data = common::content(100_000, 9);
    let mut src: &[u8] = &data;
    let stats = Client::new(server.addr)
        .blksize(1468)
        .windowsize(16)
        .tsize(true)
        .put("upload", &mut src, Some(data.len() as u64))
        .await
        .unwrap();
    assert_eq!(stats.outcome, Some(Outcome::Completed));
    assert_eq!(stats.options_negotiated.tsize, Some(100_000));
    assert!(*uploads.lock().unwrap() == data);
    server.stop().await;
}

#[tokio::test]
async fn slow_handler_does_not_block_other_clients() {
    let (server, _) = start().await;
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        let mut got = Vec::new();
        Client::new(addr).get("slow", &mut got).await.unwrap();
        (got, tokio::time::Instant::now())
    });
    // Give the slow request a head start: it is in its handler now.
    tokio::task::yield_now().await;
    let mut got = Vec::new();
    Client::new(addr).get("config", &mut got).await.unwrap();
    let fast_done = tokio::time::Instant::now();
    let (slow_got, slow_done) = slow.await.unwrap();
    assert_eq!(slow_got, b"slow");
    assert!(
        fast_done < slow_done,
        "the fast request waited for the slow handler"
    );
    server.stop().await;
}

#[tokio::test]
async fn session_and_server_stats_callbacks() {
    let (tx, mut periodic) = tokio::sync::mpsc::unbounded_channel();
    let handler = Dynamic {
        uploads: Arc::new(Mutex::new(Vec::new())),
    };
    let builder = Server::builder(handler)
        .listen("127.0.0.1:0".parse().unwrap())
        .on_server_stats(Duration::from_millis(20), move |s| {
            let _ = tx.send(s.clone());
        });
    let server = common::start_with(builder).await;
    let mut got = Vec::new();
    Client::new(server.addr)
        .get("config", &mut got)
        .await
        .unwrap();
    let _ = Client::new(server.addr)
        .get("missing", &mut Vec::new())
        .await;
    // The periodic reports until one shows both sessions ended (bounded).
    let mut last = None;
    for _ in 0..500 {
        let s = tokio::time::timeout(Duration::from_secs(5), periodic.recv())
            .await
            .expect("periodic stats")
            .unwrap();
        if s.sessions_completed + s.sessions_failed == 2 {
            last = Some(s);
            break;
        }
    }
    let last = last.expect("a report with both sessions");
    assert_eq!(last.sessions_started, 2);
    assert_eq!(last.sessions_completed, 1);
    assert_eq!(last.sessions_failed, 1);
    assert_eq!(last.errors_by_code[1], 1);
    assert_eq!(last.sessions_active, 0);
    let sessions = server.sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    let ok = sessions.iter().find(|s| s.filename == b"config").unwrap();
    assert_eq!(ok.outcome, Some(Outcome::Completed));
    assert_eq!(ok.bytes_sent, 17);
    assert!(ok.local.is_some());
    server.stop().await;
}
