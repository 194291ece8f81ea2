//! One behaviour suite, every runtime: the [`Adapter`] trait gives each test a
//! server (a directory or the dynamic test handler) and a client on one
//! runtime, behind a blocking interface, and [`for_each_adapter!`] instantiates
//! a generic test for tokio, smol, async-std (through the smol adapter) and
//! std threads.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, LockResult, Mutex, MutexGuard};
use std::time::Duration;

use tftp_blocking::ClientError;
use tftp_proto::options::{EnabledOptions, Limits};
use tftp_proto::packet::{ErrorCode, Mode};
use tftp_proto::server::{Request, TftpError};
use tftp_proto::stats::{ServerStats, Stats};

/// How long the suite's clients dally after their final ACK.
pub const SUITE_DALLY: Duration = Duration::from_millis(100);

/// Server settings a test may change.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub allow_write: bool,
    pub allow_overwrite: bool,
    /// `DirHandler::per_client_root`.
    pub per_client_root: bool,
    /// `DirHandler::max_upload_size`.
    pub max_upload_size: Option<u64>,
    /// `DirHandler::upload_dir`.
    pub upload_dir: Option<&'static str>,
    /// Transfer ports (`port_range`).
    pub port_range: Option<(u16, u16)>,
    /// Serve the directory behind these remap rules.
    pub remap: Option<Arc<tftp_io::remap::RemapRules>>,
    /// Serve the directory, then this one for the names it does not have
    /// (`Fallback`; not with `remap`).
    pub fallback: Option<std::path::PathBuf>,
    pub max_sessions: usize,
    pub max_sessions_per_peer: usize,
    /// `max_unverified` (None: the default, half of `max_sessions`).
    pub max_unverified: Option<usize>,
    /// `max_memory` (None: the default).
    pub max_memory: Option<usize>,
    /// The protocol policy (None: `Limits::default()`).
    pub limits: Option<Limits>,
    pub drain: Duration,
    pub stats_interval: Option<Duration>,
    /// Listening sockets per address (`SO_REUSEPORT` when above 1).
    pub reuse_port: usize,
    /// Serve on this pre-bound socket instead of binding 127.0.0.1:0.
    pub listen_socket: Option<Arc<std::net::UdpSocket>>,
    /// `session_threads` (async servers).
    pub session_threads: usize,
    /// `single_port`: every transfer from the listening socket (default:
    /// what [`single_port`] says for this test).
    pub single_port: bool,
}

thread_local! {
    static SINGLE_PORT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this test runs its servers in single-port mode
/// ([`for_each_adapter!`]'s `*_single_port` instances).
pub fn single_port() -> bool {
    SINGLE_PORT.with(|s| s.get())
}

/// A name for this instance of a test: the adapter's, and the mode's
/// (for names that must differ between the instances running at once).
pub fn label<A: Adapter>() -> String {
    if single_port() {
        format!("{}-single-port", A::NAME)
    } else {
        A::NAME.to_string()
    }
}

/// Runs `test` with servers in single-port mode by default.
pub fn in_single_port(test: impl FnOnce()) {
    SINGLE_PORT.with(|s| s.set(true));
    test();
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            allow_write: false,
            allow_overwrite: false,
            per_client_root: false,
            remap: None,
            fallback: None,
            port_range: None,
            max_upload_size: None,
            upload_dir: None,
            max_sessions: tftp_io::DEFAULT_MAX_SESSIONS,
            // All of the suite's clients are on 127.0.0.1.
            max_sessions_per_peer: 2_000,
            max_unverified: None,
            max_memory: None,
            limits: None,
            drain: tftp_io::DEFAULT_DRAIN_TIMEOUT,
            stats_interval: None,
            reuse_port: 1,
            listen_socket: None,
            session_threads: 0,
            single_port: single_port(),
        }
    }
}

/// Client settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub timeout: Option<u8>,
    pub tsize: bool,
    pub netascii: bool,
}

/// A running server behind a blocking interface.
pub struct Served {
    pub addr: SocketAddr,
    /// Every listening address.
    pub addrs: Vec<SocketAddr>,
    /// What `serve` returned, once it has.
    pub result: std::sync::mpsc::Receiver<std::io::Result<()>>,
    pub sessions: Arc<SessionLog>,
    pub periodic: Arc<(Mutex<Vec<ServerStats>>, std::sync::Condvar)>,
    pub uploads: Arc<Mutex<Vec<u8>>>,
    /// Where the dynamic handler holds `slow`.
    pub gate: Gate,
    stats: Counters,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Served {
    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        (self.stats)().0
    }

    /// Sessions running on threads of their own now (`session_threads`;
    /// always 0 for the threads server, whose sessions all are).
    pub fn session_threads(&self) -> usize {
        (self.stats)().1
    }

    /// Shuts down (releasing the gate first) and waits until `serve` has
    /// returned.
    pub fn stop(mut self) {
        self.gate.release();
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// Every session's statistics as `on_session_end` reported them, in order;
/// [`SessionLog::wait`] waits for the next ones.
#[derive(Default)]
pub struct SessionLog {
    ended: Mutex<Vec<Stats>>,
    cvar: Condvar,
}

impl SessionLog {
    /// The sessions reported so far.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, Vec<Stats>>> {
        self.ended.lock()
    }

    fn push(&self, stats: &Stats) {
        self.ended.lock().unwrap().push(stats.clone());
        self.cvar.notify_all();
    }

    /// Waits until at least `n` sessions have ended (panics after
    /// `within`): all they report, in order. A session's end is reported
    /// after its admission and memory are given back and its counters
    /// recorded, so by then the server can admit again and `stats()` counts
    /// it.
    pub fn wait(&self, n: usize, within: Duration) -> Vec<Stats> {
        let guard = self.ended.lock().unwrap();
        let (guard, _) = self
            .cvar
            .wait_timeout_while(guard, within, |v| v.len() < n)
            .unwrap();
        assert!(
            guard.len() >= n,
            "{} sessions ended within {within:?}, not {n}",
            guard.len()
        );
        guard.clone()
    }
}

/// The directory handler every runtime serves (one type for all of them),
/// configured from `cfg`.
fn dir_handler(dir: &Path, cfg: &Cfg) -> tftp_io::DirHandler {
    let h = tftp_io::DirHandler::new(dir)
        .unwrap()
        .allow_write(cfg.allow_write)
        .allow_overwrite(cfg.allow_overwrite)
        .per_client_root(cfg.per_client_root);
    let h = match cfg.max_upload_size {
        Some(n) => h.max_upload_size(n),
        None => h,
    };
    match cfg.upload_dir {
        Some(d) => h.upload_dir(d),
        None => h,
    }
}

/// The second handler of a [`Cfg::fallback`]: a plain directory.
fn fallback_handler(dir: &Path) -> tftp_io::DirHandler {
    tftp_io::DirHandler::new(dir).unwrap()
}

/// What the dynamic test handler does with a file name.
pub enum Decision {
    /// These bytes, then a read error.
    Broken(Vec<u8>),
    Bytes(Vec<u8>, Option<Limits>),
    Stream(Vec<u8>),
    /// These bytes, once the server's [`Gate`] is released.
    Held(Vec<u8>),
    Error(TftpError),
}

/// The dynamic test handler's rules, shared by every runtime's handler.
pub fn decide(req: &Request) -> Decision {
    match req.filename() {
        b"config" => Decision::Bytes(format!("client={}\n", req.peer().ip()).into_bytes(), None),
        b"stream" => Decision::Stream(super::content(30_000, 5)),
        b"narrow" => Decision::Bytes(
            super::content(5000, 6),
            Some(Limits {
                max_blksize: 1024,
                ..Limits::default()
            }),
        ),
        b"plain" => Decision::Bytes(
            super::content(5000, 7),
            Some(Limits {
                enabled: EnabledOptions::NONE,
                ..Limits::default()
            }),
        ),
        b"secret" => Decision::Error(TftpError::access_violation("Go away")),
        b"slow" => Decision::Held(b"slow".to_vec()),
        b"broken" => Decision::Broken(super::content(200_000, 8)),
        name if name.starts_with(b"busy") => busy(name),
        _ => Decision::Error(TftpError::not_found()),
    }
}

/// How often the dynamic handler has been asked for each `busy*` name.
static BUSY_CALLS: Mutex<Vec<(Vec<u8>, usize)>> = Mutex::new(Vec::new());

/// `busyN-TAG`: the first N requests of this name are answered like a
/// handler out of descriptors (ERROR 0 "busy", `tftp_io::SOCKET_ERROR`), the
/// next with the name. `busy-TAG`: always so.
fn busy(name: &[u8]) -> Decision {
    let calls = {
        let mut all = BUSY_CALLS.lock().unwrap();
        let i = match all.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                all.push((name.to_vec(), 0));
                all.len() - 1
            }
        };
        all[i].1 += 1;
        all[i].1
    };
    let text = String::from_utf8_lossy(name);
    let times = text["busy".len()..]
        .split('-')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    if calls <= times {
        Decision::Error(TftpError::busy())
    } else {
        Decision::Bytes(name.to_vec(), None)
    }
}

/// How often the dynamic handler was asked for `name` (a `busy*` name).
pub fn busy_calls(name: &str) -> usize {
    BUSY_CALLS
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map_or(0, |(_, c)| *c)
}

/// The dynamic handler's write rule.
pub fn accept_upload(req: &Request) -> Result<(), TftpError> {
    if req.filename() == b"upload" {
        Ok(())
    } else {
        Err(TftpError::new(ErrorCode::DiskFull, "Quota exceeded"))
    }
}

/// Holds the dynamic handler's `slow` requests: each reports on entering
/// and waits until the test calls [`Gate::release`] (or the server stops).
/// The wait is an async channel, so a held request occupies no runtime
/// thread, only its own session.
pub struct Gate {
    entered_tx: std::sync::mpsc::Sender<()>,
    entered: Mutex<std::sync::mpsc::Receiver<()>>,
    release_tx: smol::channel::Sender<()>,
    release: smol::channel::Receiver<()>,
}

/// The handler's side of a [`Gate`].
struct Hold {
    entered: std::sync::mpsc::Sender<()>,
    release: smol::channel::Receiver<()>,
}

impl Gate {
    fn new() -> Self {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release_tx, release) = smol::channel::bounded(1);
        Gate {
            entered_tx,
            entered: Mutex::new(entered),
            release_tx,
            release,
        }
    }

    fn hold(&self) -> Hold {
        Hold {
            entered: self.entered_tx.clone(),
            release: self.release.clone(),
        }
    }

    /// Waits until a handler has entered the gate; panics after `within`.
    pub fn wait_entered(&self, within: Duration) {
        self.entered
            .lock()
            .unwrap()
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no handler entered the gate within {within:?}: {e}"));
    }

    /// Lets every held handler, and every later one, go on.
    pub fn release(&self) {
        self.release_tx.close();
    }
}

impl Hold {
    /// Reports entering, then waits for the release (a closed channel).
    async fn wait(&self) {
        let _ = self.entered.send(());
        let _ = self.release.recv().await;
    }
}

/// The dynamic test handler, one type for every runtime: what it reads is
/// [`decide`]'s, `slow` waits at the server's [`Gate`], and what it takes
/// is [`accept_upload`]'s, into `uploads`.
struct Dynamic {
    uploads: Arc<Mutex<Vec<u8>>>,
    hold: Hold,
}

impl Dynamic {
    fn new(uploads: &Arc<Mutex<Vec<u8>>>, gate: &Gate) -> Self {
        Dynamic {
            uploads: Arc::clone(uploads),
            hold: gate.hold(),
        }
    }

    /// The answer to `decision` in any runtime's source type (a held one
    /// once it has been released).
    fn answer<S>(decision: Decision) -> Result<tftp_io::ReadResponse<S>, TftpError>
    where
        S: tftp_io::FromBytes + From<Chunks>,
    {
        use tftp_io::ReadResponse as R;
        match decision {
            Decision::Bytes(b, None) | Decision::Held(b) => Ok(R::from_bytes(b)),
            Decision::Bytes(b, Some(l)) => Ok(R::from_bytes(b).with_limits(l)),
            Decision::Stream(b) => Ok(R::stream(Chunks::new(b, false))),
            Decision::Broken(b) => Ok(R::stream(Chunks::new(b, true))),
            Decision::Error(e) => Err(e),
        }
    }

    async fn read_async<S>(&self, req: &Request) -> Result<tftp_io::ReadResponse<S>, TftpError>
    where
        S: tftp_io::FromBytes + From<Chunks>,
    {
        let decision = decide(req);
        if matches!(decision, Decision::Held(_)) {
            self.hold.wait().await;
        }
        Self::answer(decision)
    }

    fn upload<W: From<SharedSink>>(
        &self,
        req: &Request,
    ) -> Result<tftp_io::WriteResponse<W>, TftpError> {
        accept_upload(req)?;
        Ok(tftp_io::WriteResponse::new(SharedSink(Arc::clone(
            &self.uploads,
        ))))
    }
}

impl tftp_tokio::Handler for Dynamic {
    async fn read(&self, req: &Request) -> Result<tftp_tokio::ReadResponse, TftpError> {
        self.read_async(req).await
    }

    async fn write(&self, req: &Request) -> Result<tftp_tokio::WriteResponse, TftpError> {
        self.upload(req)
    }
}

impl tftp_smol::Handler for Dynamic {
    async fn read(&self, req: &Request) -> Result<tftp_smol::ReadResponse, TftpError> {
        self.read_async(req).await
    }

    async fn write(&self, req: &Request) -> Result<tftp_smol::WriteResponse, TftpError> {
        self.upload(req)
    }
}

impl tftp_blocking::Handler for Dynamic {
    fn read(&self, req: &Request) -> Result<tftp_blocking::ReadResponse, TftpError> {
        let decision = decide(req);
        if matches!(decision, Decision::Held(_)) {
            smol::block_on(self.hold.wait());
        }
        Self::answer(decision)
    }

    fn write(&self, req: &Request) -> Result<tftp_blocking::WriteResponse, TftpError> {
        self.upload(req)
    }
}

/// A runtime under test.
pub trait Adapter {
    const NAME: &'static str;
    fn serve_dir(dir: &Path, cfg: &Cfg) -> Served;
    fn serve_dynamic(cfg: &Cfg) -> Served;
    fn get(addr: SocketAddr, remote: &str, o: Opts) -> Result<(Vec<u8>, Stats), ClientError>;
    fn put(addr: SocketAddr, remote: &str, data: &[u8], o: Opts) -> Result<Stats, ClientError>;
}

/// Reads a running server's counters and its sessions on threads.
type Counters = Box<dyn Fn() -> (ServerStats, usize) + Send>;
type Periodic = Arc<(Mutex<Vec<ServerStats>>, std::sync::Condvar)>;
type Recorders = (Arc<SessionLog>, Periodic, Arc<Mutex<Vec<u8>>>);
/// A started server: its address, a counters reader and a stop function.
type Started = (
    Vec<SocketAddr>,
    Counters,
    Box<dyn FnOnce() + Send>,
    std::sync::mpsc::Receiver<std::io::Result<()>>,
);

fn recorders() -> Recorders {
    (
        Arc::new(SessionLog::default()),
        Arc::new((Mutex::new(Vec::new()), std::sync::Condvar::new())),
        Arc::new(Mutex::new(Vec::new())),
    )
}

impl Served {
    /// Waits (up to `within`) until at least `n` sessions have ended; see
    /// [`SessionLog::wait`].
    pub fn wait_sessions(&self, n: usize, within: Duration) -> Vec<Stats> {
        self.sessions.wait(n, within)
    }

    /// Waits (up to 10 s) for a periodic report satisfying `pred`.
    pub fn wait_periodic(&self, pred: impl Fn(&ServerStats) -> bool) -> ServerStats {
        let (lock, cvar) = &*self.periodic;
        let guard = lock.lock().unwrap();
        let (guard, _) = cvar
            .wait_timeout_while(guard, Duration::from_secs(10), |v| {
                !v.last().is_some_and(&pred)
            })
            .unwrap();
        guard
            .last()
            .cloned()
            .filter(|s| pred(s))
            .expect("no such periodic report within 10 s")
    }
}

macro_rules! configure {
    ($builder:expr, $cfg:expr, $sessions:expr, $periodic:expr) => {{
        let sessions = Arc::clone(&$sessions);
        let b = match &$cfg.listen_socket {
            Some(socket) => $builder.listen_socket(socket.try_clone().unwrap()),
            None => $builder.listen("127.0.0.1:0".parse().unwrap()),
        };
        let mut b = b
            .reuse_port($cfg.reuse_port)
            .max_sessions($cfg.max_sessions)
            .max_sessions_per_peer($cfg.max_sessions_per_peer)
            .drain_timeout($cfg.drain)
            .session_threads($cfg.session_threads)
            .single_port($cfg.single_port)
            .on_session_end(move |s| sessions.push(s));
        if let Some((low, high)) = $cfg.port_range {
            b = b.port_range(low, high);
        }
        if let Some(n) = $cfg.max_unverified {
            b = b.max_unverified(n);
        }
        if let Some(n) = $cfg.max_memory {
            b = b.max_memory(n);
        }
        if let Some(limits) = &$cfg.limits {
            b = b.limits(limits.clone());
        }
        if let Some(every) = $cfg.stats_interval {
            let periodic = Arc::clone(&$periodic);
            b = b.on_server_stats(every, move |s| {
                periodic.0.lock().unwrap().push(s.clone());
                periodic.1.notify_all();
            });
        }
        b
    }};
}

macro_rules! client_for {
    ($client:ty, $addr:expr, $o:expr) => {{
        // The suite's servers are ours, with adaptive timers that retransmit
        // a lost final DATA within a few RTTs: a short dally keeps it fast
        // (the default, DEFAULT_CLIENT_DALLY, is for 1 s fixed-timer servers).
        let limits = Limits {
            dally: SUITE_DALLY,
            ..Limits::default()
        };
        let mut c = <$client>::new($addr).limits(limits).tsize($o.tsize);
        if let Some(b) = $o.blksize {
            c = c.blksize(b);
        }
        if let Some(w) = $o.windowsize {
            c = c.windowsize(w);
        }
        if let Some(t) = $o.timeout {
            c = c.timeout(t);
        }
        if $o.netascii {
            c = c.mode(Mode::Netascii);
        }
        c
    }};
}

// ---------------------------------------------------------------- tokio

pub struct Tokio;

fn run_tokio<H: tftp_tokio::Handler>(builder: tftp_tokio::ServerBuilder<H>) -> Started {
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = builder.bind().expect("bind");
    let (addrs, handle) = (server.local_addrs(), server.stats_handle());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(server.serve(async move {
            let _ = stop_rx.await;
        }));
        let _ = result_tx.send(result);
    });
    (
        addrs,
        Box::new(move || (handle.snapshot(), handle.session_threads())),
        Box::new(move || {
            let _ = stop_tx.send(());
            thread.join().unwrap();
        }),
        result_rx,
    )
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";

    fn serve_dir(dir: &Path, cfg: &Cfg) -> Served {
        let (sessions, periodic, uploads) = recorders();
        let gate = Gate::new();
        let h = dir_handler(dir, cfg);
        let (addrs, stats, stop, result) = match (&cfg.remap, &cfg.fallback) {
            (Some(rules), _) => run_tokio(configure!(
                tftp_tokio::Server::builder(tftp_tokio::Remap::new(Arc::clone(rules), h)),
                cfg,
                sessions,
                periodic
            )),
            (None, Some(then)) => run_tokio(configure!(
                tftp_tokio::Server::builder(tftp_tokio::Fallback::new(h, fallback_handler(then))),
                cfg,
                sessions,
                periodic
            )),
            (None, None) => run_tokio(configure!(
                tftp_tokio::Server::builder(h),
                cfg,
                sessions,
                periodic
            )),
        };
        Served {
            addr: addrs[0],
            addrs,
            result,
            sessions,
            periodic,
            uploads,
            gate,
            stats,
            stop: Some(stop),
        }
    }

    fn serve_dynamic(cfg: &Cfg) -> Served {
        let (sessions, periodic, uploads) = recorders();
        let gate = Gate::new();
        let h = Dynamic::new(&uploads, &gate);
        let (addrs, stats, stop, result) = run_tokio(configure!(
            tftp_tokio::Server::builder(h),
            cfg,
            sessions,
            periodic
        ));
        Served {
            addr: addrs[0],
            addrs,
            result,
            sessions,
            periodic,
            uploads,
            gate,
            stats,
            stop: Some(stop),
        }
    }

    fn get(addr: SocketAddr, remote: &str, o: Opts) -> Result<(Vec<u8>, Stats), ClientError> {
        tokio_rt().block_on(async {
            let mut out = Vec::new();
            let stats = client_for!(tftp_tokio::Client, addr, o)
                .get(remote, &mut out)
                .await?;
            Ok((out, stats))
        })
    }

    fn put(addr: SocketAddr, remote: &str, data: &[u8], o: Opts) -> Result<Stats, ClientError> {
        tokio_rt().block_on(async {
            let mut src = data;
            client_for!(tftp_tokio::Client, addr, o)
                .put(remote, &mut src, Some(data.len() as u64))
                .await
        })
    }
}

/// A source (tokio, futures-io and std) of these bytes in reads of at
/// most 1000 bytes, then the end, or an error when `fails`.
struct Chunks {
    bytes: Vec<u8>,
    at: usize,
    fails: bool,
}

impl Chunks {
    fn new(bytes: Vec<u8>, fails: bool) -> Self {
        Chunks {
            bytes,
            at: 0,
            fails,
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() && self.fails {
            return Err(std::io::Error::other("the disk went away"));
        }
        let n = rest.len().min(buf.len()).min(1000);
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl tokio::io::AsyncRead for Chunks {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.read_some(buf.initialize_unfilled())?;
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl smol::io::AsyncRead for Chunks {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.read_some(buf))
    }
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_some(buf)
    }
}

/// An AsyncWrite (tokio and futures-io) and Write into shared memory.
struct SharedSink(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for SharedSink {
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

impl smol::io::AsyncWrite for SharedSink {
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
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl std::io::Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- smol (and async-std)

pub struct Smol;
pub struct AsyncStd;

/// Runs a smol server on its own thread with `block_on` (smol's, or
/// async-std's when `async_std` is set).
fn run_smol<H: tftp_smol::Handler>(
    builder: tftp_smol::ServerBuilder<H>,
    async_std: bool,
) -> Started {
    let server = builder.bind().expect("bind");
    let addrs = server.local_addrs();
    let stats = server.stats_handle();
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let serve = server.serve(async move {
            let _ = stop_rx.recv().await;
        });
        let result = if async_std {
            async_std::task::block_on(serve)
        } else {
            smol::block_on(serve)
        };
        let _ = result_tx.send(result);
    });
    (
        addrs,
        Box::new(move || (stats.snapshot(), stats.session_threads())),
        Box::new(move || {
            let _ = stop_tx.try_send(());
            thread.join().unwrap();
        }),
        result_rx,
    )
}

fn smol_served(dir: Option<&Path>, cfg: &Cfg, async_std: bool) -> Served {
    let (sessions, periodic, uploads) = recorders();
    let gate = Gate::new();
    let (addrs, stats, stop, result) = match dir {
        Some(dir) => {
            let h = dir_handler(dir, cfg);
            match (&cfg.remap, &cfg.fallback) {
                (Some(rules), _) => run_smol(
                    configure!(
                        tftp_smol::Server::builder(tftp_smol::Remap::new(Arc::clone(rules), h)),
                        cfg,
                        sessions,
                        periodic
                    ),
                    async_std,
                ),
                (None, Some(then)) => run_smol(
                    configure!(
                        tftp_smol::Server::builder(tftp_smol::Fallback::new(
                            h,
                            fallback_handler(then)
                        )),
                        cfg,
                        sessions,
                        periodic
                    ),
                    async_std,
                ),
                (None, None) => run_smol(
                    configure!(tftp_smol::Server::builder(h), cfg, sessions, periodic),
                    async_std,
                ),
            }
        }
        None => {
            let h = Dynamic::new(&uploads, &gate);
            run_smol(
                configure!(tftp_smol::Server::builder(h), cfg, sessions, periodic),
                async_std,
            )
        }
    };
    Served {
        addr: addrs[0],
        addrs,
        result,
        sessions,
        periodic,
        uploads,
        gate,
        stats,
        stop: Some(stop),
    }
}

async fn smol_get(
    addr: SocketAddr,
    remote: &str,
    o: Opts,
) -> Result<(Vec<u8>, Stats), ClientError> {
    let mut out = Vec::new();
    let stats = client_for!(tftp_smol::Client, addr, o)
        .get(remote, &mut out)
        .await?;
    Ok((out, stats))
}

async fn smol_put(
    addr: SocketAddr,
    remote: &str,
    data: &[u8],
    o: Opts,
) -> Result<Stats, ClientError> {
    let mut src = data;
    client_for!(tftp_smol::Client, addr, o)
        .put(remote, &mut src, Some(data.len() as u64))
        .await
}

impl Adapter for Smol {
    const NAME: &'static str = "smol";
    fn serve_dir(dir: &Path, cfg: &Cfg) -> Served {
        smol_served(Some(dir), cfg, false)
    }
    fn serve_dynamic(cfg: &Cfg) -> Served {
        smol_served(None, cfg, false)
    }
    fn get(addr: SocketAddr, remote: &str, o: Opts) -> Result<(Vec<u8>, Stats), ClientError> {
        smol::block_on(smol_get(addr, remote, o))
    }
    fn put(addr: SocketAddr, remote: &str, data: &[u8], o: Opts) -> Result<Stats, ClientError> {
        smol::block_on(smol_put(addr, remote, data, o))
    }
}

impl Adapter for AsyncStd {
    const NAME: &'static str = "async-std";
    fn serve_dir(dir: &Path, cfg: &Cfg) -> Served {
        smol_served(Some(dir), cfg, true)
    }
    fn serve_dynamic(cfg: &Cfg) -> Served {
        smol_served(None, cfg, true)
    }
    fn get(addr: SocketAddr, remote: &str, o: Opts) -> Result<(Vec<u8>, Stats), ClientError> {
        async_std::task::block_on(smol_get(addr, remote, o))
    }
    fn put(addr: SocketAddr, remote: &str, data: &[u8], o: Opts) -> Result<Stats, ClientError> {
        async_std::task::block_on(smol_put(addr, remote, data, o))
    }
}

// ---------------------------------------------------------------- std threads

pub struct Blocking;

fn run_blocking<H: tftp_blocking::Handler>(builder: tftp_blocking::ServerBuilder<H>) -> Started {
    let server = builder.bind().expect("bind");
    let addrs = server.local_addrs();
    let handle = server.shutdown_handle();
    let stats = handle.clone();
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = result_tx.send(server.serve());
    });
    (
        addrs,
        Box::new(move || (stats.stats(), 0)),
        Box::new(move || {
            handle.shutdown();
            thread.join().unwrap();
        }),
        result_rx,
    )
}

impl Adapter for Blocking {
    const NAME: &'static str = "blocking";

    fn serve_dir(dir: &Path, cfg: &Cfg) -> Served {
        let (sessions, periodic, uploads) = recorders();
        let gate = Gate::new();
        let h = dir_handler(dir, cfg);
        let (addrs, stats, stop, result) = match (&cfg.remap, &cfg.fallback) {
            (Some(rules), _) => run_blocking(configure!(
                tftp_blocking::Server::builder(tftp_blocking::Remap::new(Arc::clone(rules), h)),
                cfg,
                sessions,
                periodic
            )),
            (None, Some(then)) => run_blocking(configure!(
                tftp_blocking::Server::builder(tftp_blocking::Fallback::new(
                    h,
                    fallback_handler(then)
                )),
                cfg,
                sessions,
                periodic
            )),
            (None, None) => run_blocking(configure!(
                tftp_blocking::Server::builder(h),
                cfg,
                sessions,
                periodic
            )),
        };
        Served {
            addr: addrs[0],
            addrs,
            result,
            sessions,
            periodic,
            uploads,
            gate,
            stats,
            stop: Some(stop),
        }
    }

    fn serve_dynamic(cfg: &Cfg) -> Served {
        let (sessions, periodic, uploads) = recorders();
        let gate = Gate::new();
        let h = Dynamic::new(&uploads, &gate);
        let (addrs, stats, stop, result) = run_blocking(configure!(
            tftp_blocking::Server::builder(h),
            cfg,
            sessions,
            periodic
        ));
        Served {
            addr: addrs[0],
            addrs,
            result,
            sessions,
            periodic,
            uploads,
            gate,
            stats,
            stop: Some(stop),
        }
    }

    fn get(addr: SocketAddr, remote: &str, o: Opts) -> Result<(Vec<u8>, Stats), ClientError> {
        let mut out = Vec::new();
        let stats = client_for!(tftp_blocking::Client, addr, o).get(remote, &mut out)?;
        Ok((out, stats))
    }

    fn put(addr: SocketAddr, remote: &str, data: &[u8], o: Opts) -> Result<Stats, ClientError> {
        let mut src: &[u8] = data;
        client_for!(tftp_blocking::Client, addr, o).put(remote, &mut src, Some(data.len() as u64))
    }
}

/// Instantiates the generic test `$test::<A>()` for every adapter, each
/// with the attributes written before the test's name (an `ignore`, say),
/// and again with the servers in single-port mode (`*_single_port`; a test
/// reads [`single_port`] where the modes differ on the wire).
#[macro_export]
macro_rules! for_each_adapter {
    ($($(#[$attr:meta])* $test:ident),* $(,)?) => {
        $(
            mod $test {
                #[test]
                $(#[$attr])*
                fn tokio() {
                    super::$test::<super::common::adapters::Tokio>();
                }
                #[test]
                $(#[$attr])*
                fn smol() {
                    super::$test::<super::common::adapters::Smol>();
                }
                #[test]
                $(#[$attr])*
                fn async_std() {
                    super::$test::<super::common::adapters::AsyncStd>();
                }
                #[test]
                $(#[$attr])*
                fn blocking() {
                    super::$test::<super::common::adapters::Blocking>();
                }
                #[test]
                $(#[$attr])*
                fn tokio_single_port() {
                    super::common::adapters::in_single_port(
                        super::$test::<super::common::adapters::Tokio>,
                    );
                }
                #[test]
                $(#[$attr])*
                fn smol_single_port() {
                    super::common::adapters::in_single_port(
                        super::$test::<super::common::adapters::Smol>,
                    );
                }
                #[test]
                $(#[$attr])*
                fn async_std_single_port() {
                    super::common::adapters::in_single_port(
                        super::$test::<super::common::adapters::AsyncStd>,
                    );
                }
                #[test]
                $(#[$attr])*
                fn blocking_single_port() {
                    super::common::adapters::in_single_port(
                        super::$test::<super::common::adapters::Blocking>,
                    );
                }
            }
        )*
    };
}
