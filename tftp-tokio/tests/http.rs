//! The HTTP side of the framework on loopback: what a client gets (ranges,
//! validators, refusals) and the limits (connections, header size and time,
//! idle time, backpressure), with raw requests so every byte is checked.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tftp_tokio::http::{HttpOutcome, HttpServer, HttpServerBuilder, HttpStats};
use tftp_tokio::{DirHandler, Handler, ReadResponse, RequestInfo, TftpError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Bytes generated on the fly, of unknown length, counting what was read.
struct Endless(Arc<AtomicU64>);

impl AsyncRead for Endless {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining();
        buf.put_slice(&vec![b'x'; n]);
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// 8 MiB made in memory (a source that cannot seek).
fn big_generated() -> Vec<u8> {
    (0..8u32 << 20).map(|i| (i % 251) as u8).collect()
}

struct TestHandler {
    dir: DirHandler,
    endless_read: Arc<AtomicU64>,
    /// Told when a request for `never` reaches the handler.
    never_asked: Arc<tokio::sync::Notify>,
}

impl Handler for TestHandler {
    async fn read(&self, req: &RequestInfo) -> Result<ReadResponse, TftpError> {
        match req.filename() {
            b"generated.ipxe" => Ok(ReadResponse::from_bytes(format!(
                "#!ipxe\necho {}\n",
                req.peer().ip()
            ))),
            b"endless" => Ok(ReadResponse::stream(Endless(self.endless_read.clone()))),
            b"big-generated" => Ok(ReadResponse::from_bytes(big_generated())),
            b"busy" => Err(TftpError::busy()),
            b"never" => {
                self.never_asked.notify_one();
                std::future::pending().await
            }
            _ => self.dir.read(req).await,
        }
    }
}

struct Fixture {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    data: Vec<u8>,
    ended: mpsc::UnboundedReceiver<HttpStats>,
    endless_read: Arc<AtomicU64>,
    never_asked: Arc<tokio::sync::Notify>,
    server: HttpServer<TestHandler>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(
    configure: impl FnOnce(HttpServerBuilder<TestHandler>) -> HttpServerBuilder<TestHandler>,
) -> Fixture {
    start_on("127.0.0.1:0", configure).await
}

async fn start_on(
    listen: &str,
    configure: impl FnOnce(HttpServerBuilder<TestHandler>) -> HttpServerBuilder<TestHandler>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // Seeded, so a failure reproduces.
    let mut x: u32 = 0x2545_f491;
    let data: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join("kernel"), &data).unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    std::fs::create_dir(dir.path().join("sub dir")).unwrap();
    std::fs::write(dir.path().join("sub dir/a b"), b"spaced").unwrap();
    let endless_read = Arc::new(AtomicU64::new(0));
    let never_asked = Arc::new(tokio::sync::Notify::new());
    let handler = Arc::new(TestHandler {
        dir: DirHandler::new(dir.path()).unwrap(),
        endless_read: endless_read.clone(),
        never_asked: never_asked.clone(),
    });
    let (tx, ended) = mpsc::unbounded_channel();
    let server = configure(HttpServer::builder(handler))
        .on_request_end(move |s| {
            let _ = tx.send(s.clone());
        })
        .build();
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    let served = tokio::spawn(async move {
        s.serve(vec![listener], async {
            let _ = stopped.await;
        })
        .await
    });
    Fixture {
        addr,
        dir,
        data,
        ended,
        endless_read,
        never_asked,
        server,
        stop: Some(stop),
        served,
    }
}

impl Fixture {
    async fn next_end(&mut self) -> HttpStats {
        tokio::time::timeout(Duration::from_secs(10), self.ended.recv())
            .await
            .expect("a request ended")
            .unwrap()
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (a request head without its final blank line, plus
/// `Connection: close`) and reads the whole answer.
async fn ask(addr: SocketAddr, head: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("a head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_files_ranges_and_validators() {
    let mut f = start(|b| b).await;
    let a = ask(f.addr, &get("/kernel")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, f.data);
    assert_eq!(a.header("content-length"), Some("300000"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    let etag = a.header("etag").expect("an ETag").to_owned();
    let modified = a
        .header("last-modified")
        .expect("a Last-Modified")
        .to_owned();
    let s = f.next_end().await;
    assert_eq!(
        (s.status, s.outcome, s.bytes_sent),
        (200, HttpOutcome::Completed, 300_000)
    );
    assert_eq!(s.path, b"kernel");
    assert_eq!(s.size, Some(300_000));

    // HEAD: the same head, no body.
    let a = ask(f.addr, "HEAD /kernel HTTP/1.1\r\nHost: t").await;
    assert_eq!((a.status, a.body.len()), (200, 0));
    assert_eq!(a.header("content-length"), Some("300000"));
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    assert_eq!(f.next_end().await.bytes_sent, 0);

    // One range, each form.
    for (range, first, last) in [
        ("bytes=100-199", 100, 199),
        ("bytes=299990-", 299_990, 299_999),
        ("bytes=-10", 299_990, 299_999),
        ("bytes=0-999999", 0, 299_999),
    ] {
        let a = ask(f.addr, &format!("{}\r\nRange: {range}", get("/kernel"))).await;
        assert_eq!(a.status, 206, "{range}");
        assert_eq!(a.body, &f.data[first..=last], "{range}");
        assert_eq!(
            a.header("content-range"),
            Some(format!("bytes {first}-{last}/300000").as_str())
        );
        let s = f.next_end().await;
        assert_eq!(s.range, Some((first as u64, last as u64)));
        assert_eq!(s.outcome, HttpOutcome::Completed);
    }
    // Past the end: 416 with the size.
    let a = ask(
        f.addr,
        &format!("{}\r\nRange: bytes=300000-", get("/kernel")),
    )
    .await;
    assert_eq!(a.status, 416);
    assert_eq!(a.header("content-range"), Some("bytes */300000"));
    assert_eq!(f.next_end().await.outcome, HttpOutcome::Refused);
    // Several ranges, or a malformed one: the whole file.
    for range in ["bytes=0-1,5-6", "bytes=x-y", "lines=1-2"] {
        let a = ask(f.addr, &format!("{}\r\nRange: {range}", get("/kernel"))).await;
        assert_eq!((a.status, a.body.len()), (200, 300_000), "{range}");
        f.next_end().await;
    }
    // If-Range: the range only while the version is the same.
    let a = ask(
        f.addr,
        &format!("{}\r\nRange: bytes=0-9\r\nIf-Range: {etag}", get("/kernel")),
    )
    .await;
    assert_eq!((a.status, a.body.len()), (206, 10));
    let a = ask(
        f.addr,
        &format!(
            "{}\r\nRange: bytes=0-9\r\nIf-Range: \"other\"",
            get("/kernel")
        ),
    )
    .await;
    assert_eq!((a.status, a.body.len()), (200, 300_000));
    // Conditional requests.
    let a = ask(
        f.addr,
        &format!("{}\r\nIf-None-Match: {etag}", get("/kernel")),
    )
    .await;
    assert_eq!((a.status, a.body.len()), (304, 0));
    let a = ask(
        f.addr,
        &format!("{}\r\nIf-None-Match: \"other\"", get("/kernel")),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = ask(
        f.addr,
        &format!("{}\r\nIf-Modified-Since: {modified}", get("/kernel")),
    )
    .await;
    assert_eq!(a.status, 304);
    let a = ask(
        f.addr,
        &format!(
            "{}\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
            get("/kernel")
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    // Percent-encoded names; an empty file.
    let a = ask(f.addr, &get("/sub%20dir/a%20b")).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"spaced"[..]));
    let a = ask(f.addr, &get("/empty")).await;
    assert_eq!((a.status, a.header("content-length")), (200, Some("0")));
    drop(f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_and_streamed_answers() {
    let mut f = start(|b| b).await;
    // Generated per client: sized, without validators.
    let a = ask(f.addr, &get("/generated.ipxe")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b"#!ipxe\necho 127.0.0.1\n");
    assert_eq!(a.header("content-length"), Some("22"));
    assert_eq!(a.header("etag"), None);
    // A range of a source that cannot seek is read and skipped.
    let a = ask(
        f.addr,
        &format!("{}\r\nRange: bytes=7-10", get("/generated.ipxe")),
    )
    .await;
    assert_eq!((a.status, a.body.as_slice()), (206, &b"echo"[..]));
    while f.ended.try_recv().is_ok() {}
    // Unknown length: chunked, and ranges do not apply.
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let a = parse(&got);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    assert_eq!(a.header("content-length"), None);
    drop(s);
    let s = f.next_end().await;
    assert_eq!(s.outcome, HttpOutcome::Aborted);
    assert_eq!(s.size, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let mut f = start(|b| b.idle_timeout(Duration::from_millis(500))).await;
    for (head, status) in [
        (get("/missing"), 404),
        (get("/../etc/passwd"), 403),
        (get("/%2e%2e/%2e%2e/etc/passwd"), 403),
        (get("/sub%20dir/..%2F..%2Fkernel"), 403),
        (get("/a%00b"), 400),
        (get("/%zz"), 400),
        (get(&format!("/{}", "a".repeat(600))), 414),
        (get("/busy"), 503),
        (get("/never"), 504),
        (
            "POST /kernel HTTP/1.1\r\nHost: t\r\nContent-Length: 0".to_owned(),
            405,
        ),
        ("DELETE /kernel HTTP/1.1\r\nHost: t".to_owned(), 405),
    ] {
        let a = ask(f.addr, &head).await;
        assert_eq!(a.status, status, "{head}");
        let s = f.next_end().await;
        assert_eq!(
            (s.status, s.outcome),
            (status, HttpOutcome::Refused),
            "{head}"
        );
        if status == 503 {
            assert_eq!(a.header("retry-after"), Some("1"));
        }
        if status == 405 {
            assert_eq!(a.header("allow"), Some("GET, HEAD"));
        }
    }
    // A head larger than the limit: 431, and nothing reaches the handler.
    let big = format!("{}\r\nX-Pad: {}", get("/kernel"), "p".repeat(9_000));
    let a = ask(f.addr, &big).await;
    assert_eq!(a.status, 431);
    // Garbage: 400 from hyper, no panic, the server still answers.
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"\x00\x01\x02 garbage\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(ask(f.addr, &get("/kernel")).await.status, 200);
    assert_eq!(f.server.stats().refused, 11);
}

/// Connects from `ip` (another 127.0.0.x address is another client).
async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The answer a connection over a limit gets before it is closed.
async fn refused(mut s: TcpStream) -> bool {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("closed in time")
        .unwrap();
    raw.starts_with(b"HTTP/1.1 503")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits() {
    let f = start(|b| b.max_connections(4).max_connections_per_peer(2)).await;
    // Two from one client: the third is refused, others are not.
    let a1 = connect_from("127.0.0.1", f.addr).await;
    let a2 = connect_from("127.0.0.1", f.addr).await;
    // Each is counted once the server has accepted it: the refusal of the
    // third shows the first two were.
    assert!(refused(connect_from("127.0.0.1", f.addr).await).await);
    let b1 = connect_from("127.0.0.2", f.addr).await;
    let b2 = connect_from("127.0.0.2", f.addr).await;
    // All four places taken: a new client is refused too.
    let mut refused_new = false;
    for _ in 0..50 {
        if refused(connect_from("127.0.0.3", f.addr).await).await {
            refused_new = true;
            break;
        }
    }
    assert!(refused_new);
    assert_eq!(f.server.stats().connections_active, 4);
    // A place given back is taken again.
    drop(a1);
    let mut answered = false;
    for _ in 0..200 {
        let mut s = connect_from("127.0.0.3", f.addr).await;
        s.write_all(b"GET /generated.ipxe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        if raw.starts_with(b"HTTP/1.1 200") {
            answered = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(answered);
    assert!(f.server.stats().connections_refused >= 2);
    drop((a2, b1, b2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_silent_clients_are_closed_and_memory_stays_bounded() {
    let mut f = start(|b| {
        b.idle_timeout(Duration::from_millis(500))
            .header_timeout(Duration::from_millis(500))
    })
    .await;
    // Silent: connects, sends nothing; closed after the header time.
    let mut silent = TcpStream::connect(f.addr).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut raw))
        .await
        .expect("closed in time")
        .ok();
    // Stalled: asks for an endless body and never reads. The server stops
    // reading its source once the socket buffers are full, and closes the
    // connection after the idle time.
    let mut stalled = TcpStream::connect(f.addr).await.unwrap();
    stalled
        .write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let s = f.next_end().await;
    assert_eq!(s.outcome, HttpOutcome::Aborted);
    // What was read is what the kernel's buffers took, plus a chunk or
    // two: far from the whole (endless) body.
    let read = f.endless_read.load(Ordering::Relaxed);
    assert!(read < 64 << 20, "read {read} bytes for a stalled client");
    assert_eq!(s.bytes_sent, read);
    // The server closed it: what the buffers held, then the end.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(closed.is_err() || (rest.len() as u64) < read + 1024);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_answer_being_sent() {
    let mut f = start(|b| b).await;
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /kernel HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    f.stop.take().unwrap().send(()).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(&rest[end + 4..], f.data.as_slice());
    tokio::time::timeout(Duration::from_secs(10), &mut f.served)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    // Nothing accepts any more.
    assert!(TcpStream::connect(f.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_skip_of_a_source_that_cannot_seek() {
    let f = start(|b| b).await;
    let data = big_generated();
    let a = ask(
        f.addr,
        &format!("{}\r\nRange: bytes=8000000-", get("/big-generated")),
    )
    .await;
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &data[8_000_000..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_clients_count_as_ipv4() {
    // An IPv6 socket on the IPv4-mapped loopback: its clients arrive as
    // ::ffff:127.0.0.1, the same client as 127.0.0.1 on an IPv4 socket.
    let f = start_on("[::ffff:127.0.0.1]:0", |b| b.max_connections_per_peer(1)).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], f.addr.port()));
    let v4 = connect_from("127.0.0.1", addr).await;
    assert!(refused(connect_from("127.0.0.1", addr).await).await);
    drop(v4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slower_than_the_minimum_rate_is_closed() {
    let mut f = start(|b| b.min_rate(100_000_000, Duration::from_millis(300))).await;
    // It takes a little, then nothing: far below 100 MB/s once the grace
    // time has run, long before the (default, 30 s) idle time.
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 65536];
    s.read_exact(&mut buf).await.unwrap();
    let ended = f.next_end().await;
    assert_eq!(ended.outcome, HttpOutcome::Aborted);
    assert!(
        ended.duration < Duration::from_secs(10),
        "{:?}",
        ended.duration
    );
    // A client that takes what it is sent is not affected.
    let a = ask(f.addr, &get("/kernel")).await;
    assert_eq!((a.status, a.body.len()), (200, 300_000));
    assert_eq!(f.next_end().await.outcome, HttpOutcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_still_undecided_when_the_drain_ends_is_reported() {
    let mut f = start(|b| b.drain_timeout(Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), f.never_asked.notified())
        .await
        .expect("the request reached the handler");
    f.stop.take().unwrap().send(()).unwrap();
    let ended = f.next_end().await;
    assert_eq!(ended.outcome, HttpOutcome::Aborted);
    assert_eq!(ended.path, b"never");
    assert_eq!(f.server.stats().aborted, 1);
    tokio::time::timeout(Duration::from_secs(10), &mut f.served)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_slow_answer_only_the_drain_time() {
    let mut f = start(|b| {
        b.drain_timeout(Duration::from_millis(300))
            .min_rate(0, Duration::ZERO)
    })
    .await;
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    s.read_exact(&mut buf).await.unwrap();
    // The client keeps taking a little (so the idle time never runs out),
    // the answer is endless: only the drain time ends it.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    f.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut f.served)
        .await
        .expect("serve returned within the drain time")
        .unwrap()
        .unwrap();
    assert_eq!(f.next_end().await.outcome, HttpOutcome::Aborted);
    reader.await.unwrap();
}

/// Reads one answer with a Content-Length off a kept-alive connection.
async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        raw.push(byte[0]);
    }
    let mut a = parse(&raw);
    let n: usize = a.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0; n];
    s.read_exact(&mut body).await.unwrap();
    a.body = body;
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_answers_keep_their_order_on_one_connection() {
    let f = start(|b| b).await;
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    // Pipelined: three answers, in order.
    s.write_all(
        b"GET /kernel HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /kernel HTTP/1.1\r\nHost: t\r\nRange: bytes=123456-\r\n\r\n\
          GET /sub%20dir/a%20b HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let a = read_answer(&mut s).await;
    assert_eq!(a.status, 200);
    assert!(a.body == f.data);
    let a = read_answer(&mut s).await;
    assert_eq!(a.status, 206);
    assert!(a.body == f.data[123_456..]);
    let a = read_answer(&mut s).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"spaced"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_while_sent_ends_the_connection() {
    let mut f = start(|b| b).await;
    let big = f.dir.path().join("big");
    std::fs::write(&big, vec![7u8; 32 << 20]).unwrap();
    let mut s = TcpStream::connect(f.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0; 1 << 20];
    s.read_exact(&mut first).await.unwrap();
    // Cut while the answer is on its way: what is past the cut cannot be
    // sent, and the client must not wait for it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the connection ended")
        .ok();
    assert!(first.len() + rest.len() < 32 << 20);
    let ended = f.next_end().await;
    // hyper is handed a body only as fast as the client takes it: far
    // from all of it when the cut came.
    assert_eq!(ended.outcome, HttpOutcome::Aborted);
    assert!(ended.bytes_sent < 32 << 20);
}
