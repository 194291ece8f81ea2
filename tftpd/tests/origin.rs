//! `tftpd --origin`: serving from a real HTTP server (nginx from Debian)
//! and a real S3-compatible store (moto_server from PyPI), both started on
//! loopback by these tests. Each test skips with a printed reason when its
//! server is not installed, and fails instead under
//! `TFTP_INTEROP_REQUIRED=1` (CI installs both).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{content, field, is_root, Daemon, TFTPD};
use tftp_tokio::tftp_proto::packet::ErrorCode;
use tftp_tokio::{Client, ClientError};

/// Whether `program` is on PATH; otherwise skip (or fail when required).
fn have(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert_ne!(
            std::env::var("TFTP_INTEROP_REQUIRED").as_deref(),
            Ok("1"),
            "{program} ({package}) is not installed and TFTP_INTEROP_REQUIRED=1"
        );
        eprintln!("skipped: {program} ({package}) is not installed");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) until something accepts TCP connections on `port`.
fn wait_listening(port: u16, child: &mut Child, what: &str) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited: {status}");
        }
        // Bounded poll of a third-party server's start-up.
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} is not listening on {port}");
}

/// nginx serving `www` on a loopback port, logging each request as
/// `METHOD URI STATUS BYTES inm=IF-NONE-MATCH args=ARGS`.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Option<Nginx> {
        if !have("nginx", "Debian package nginx-light") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www/boot")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("www/secret.txt"), "outside the prefix").unwrap();
        let port = free_port();
        let d = dir.path().display();
        // As root, nginx's workers would become nobody, who cannot read a
        // private temporary directory.
        let user = if is_root() { "user root;" } else { "" };
        let conf = format!(
            r#"{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  log_format t '$request_method $uri $status $body_bytes_sent inm=$http_if_none_match args=$args';
  access_log {d}/access.log t;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    location /boot/forbidden/ {{ return 403; }}
    location /boot/broken/ {{ return 502; }}
    location = /api/tftp {{
      default_type text/plain;
      return 200 "ip=$arg_ip file=$arg_file\n";
    }}
  }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        wait_listening(port, &mut child, "nginx");
        Some(Nginx { child, port, dir })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("www/boot").join(name)
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        let path = self.file(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Written aside and renamed over: a reader never sees half a file.
        // (nginx's ETag is mtime and size: the tests change the size.)
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    fn template(&self) -> String {
        format!("http://127.0.0.1:{}/boot/{{path}}", self.port)
    }

    /// The access log, one request per line.
    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Requests for `uri` with `status`.
    fn count(&self, uri: &str, status: u16) -> usize {
        let prefix = format!("GET {uri} {status} ");
        self.log().iter().filter(|l| l.starts_with(&prefix)).count()
    }

    /// Signals the master and its workers.
    fn signal(&self, sig: &str) {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .args(children.split_whitespace())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Kills the master and its workers (which outlive a killed master).
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("KILL");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("CONT");
        }
        self.stop();
    }
}

/// tftpd serving `template` (and no root), with `extra` flags.
fn tftpd(template: &str, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(TFTPD);
    cmd.args(["--origin", template])
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .args(extra);
    Daemon::spawn(cmd)
}

fn client(d: &Daemon) -> Client {
    Client::new(d.addr).blksize(1468).windowsize(8).tsize(true)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Downloads `name`: its bytes and the announced tsize.
fn get(d: &Daemon, name: &str) -> Result<(Vec<u8>, Option<u64>), ClientError> {
    runtime().block_on(async {
        let mut out = Vec::new();
        let stats = client(d).get(name, &mut out).await?;
        Ok((out, stats.transfer_size))
    })
}

fn error_code(r: Result<(Vec<u8>, Option<u64>), ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Server { code, message, .. }) => (code, message),
        other => panic!(
            "expected an ERROR, got {:?}",
            other.map(|(b, t)| (b.len(), t))
        ),
    }
}

/// A metric's value from a scrape.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in {body}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

fn with_metrics(d: &mut Daemon) -> SocketAddr {
    let line = d.wait_for("metrics on");
    field(&line, "addr=").parse().unwrap()
}

#[test]
fn content_tsize_and_error_codes() {
    let Some(nginx) = Nginx::start() else { return };
    let sizes = [0, 1, 511, 512, 1468, 1468 * 4 + 3, 1_500_000];
    for size in sizes {
        nginx.put(&format!("f{size}"), &content(size));
    }
    nginx.put("dir/sub/grub.cfg", b"set timeout=1\n");
    let d = tftpd(&nginx.template(), &[]);
    for size in sizes {
        let (bytes, tsize) = get(&d, &format!("f{size}")).unwrap();
        assert!(bytes == content(size), "f{size}: {} bytes", bytes.len());
        // An empty file's tsize is not acknowledged (curl rejects 0).
        assert_eq!(tsize, (size > 0).then_some(size as u64), "tsize of f{size}");
    }
    // Windows-style and absolute names resolve below the prefix.
    assert_eq!(
        get(&d, "\\dir\\sub\\grub.cfg").unwrap().0,
        b"set timeout=1\n"
    );
    assert_eq!(
        get(&d, "/dir//./sub/grub.cfg").unwrap().0,
        b"set timeout=1\n"
    );

    assert_eq!(error_code(get(&d, "missing")).0, ErrorCode::FileNotFound);
    assert_eq!(
        error_code(get(&d, "forbidden/x")).0,
        ErrorCode::AccessViolation
    );
    let (code, message) = error_code(get(&d, "broken/x"));
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::NotDefined, "Origin unavailable")
    );
}

#[test]
fn names_never_leave_the_template_prefix() {
    let Some(nginx) = Nginx::start() else { return };
    nginx.put("ok", b"ok");
    // Names with URL syntax in them are names, nothing more.
    nginx.put("q?x=1#y", b"query-like");
    let d = tftpd(&nginx.template(), &[]);
    for name in [
        "../secret.txt",
        "a/../../secret.txt",
        "..\\secret.txt",
        "/../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E%2Fsecret.txt",
        ".%2e/secret.txt",
        "..%2fsecret.txt",
    ] {
        let (code, _) = error_code(get(&d, name));
        assert!(
            matches!(code, ErrorCode::FileNotFound | ErrorCode::AccessViolation),
            "{name}: {code:?}"
        );
    }
    assert_eq!(get(&d, "ok").unwrap().0, b"ok");
    assert_eq!(get(&d, "q?x=1#y").unwrap().0, b"query-like");
    let log = nginx.log();
    assert!(!log.is_empty());
    for line in &log {
        let uri = line.split(' ').nth(1).unwrap();
        assert!(uri.starts_with("/boot/"), "left the prefix: {line}");
        assert!(
            !line.contains(" 200 ") || uri == "/boot/ok" || uri == "/boot/q?x=1#y",
            "{line}"
        );
        assert!(
            line.ends_with("args=-"),
            "no query reached the origin: {line}"
        );
    }
}

#[test]
fn origin_refused_or_stalled_is_a_prompt_error() {
    let Some(nginx) = Nginx::start() else { return };
    nginx.put("f", b"x");
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}/boot/{{path}}", free_port());
    let d = tftpd(&dead, &["--origin-timeout", "1", "--origin-retries", "1"]);
    let started = Instant::now();
    let (code, message) = error_code(get(&d, "f"));
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::NotDefined, "Origin unavailable")
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A stopped nginx: the kernel accepts the connection, nobody answers.
    let d = tftpd(
        &nginx.template(),
        &["--origin-timeout", "1", "--origin-retries", "0"],
    );
    nginx.signal("STOP");
    let started = Instant::now();
    let (code, _) = error_code(get(&d, "f"));
    assert_eq!(code, ErrorCode::NotDefined);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    nginx.signal("CONT");
}

#[test]
fn storm_of_200_clients_makes_one_origin_get() {
    let Some(nginx) = Nginx::start() else { return };
    let data = content(2_000_000);
    nginx.put("initrd", &data);
    let mut d = tftpd(
        &nginx.template(),
        &[
            "--metrics",
            "127.0.0.1:0",
            "--max-sessions",
            "1000",
            "--max-sessions-per-peer",
            "1000",
            "--max-unverified",
            "1000",
        ],
    );
    let metrics = with_metrics(&mut d);
    let storm = |d: &Daemon| {
        runtime().block_on(async {
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let c = client(d).retries(10);
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        c.get("initrd", &mut out)
                            .await
                            .map(|s| (out, s.transfer_size))
                    })
                })
                .collect();
            for t in tasks {
                let (bytes, tsize) = t.await.unwrap().expect("download");
                assert!(bytes == data, "{} bytes", bytes.len());
                assert_eq!(tsize, Some(data.len() as u64));
            }
        })
    };
    storm(&d);
    assert_eq!(nginx.count("/boot/initrd", 200), 1, "{:#?}", nginx.log());
    assert_eq!(metric(metrics, "tftpd_origin_requests_total"), 1);
    // Those that came while the headers were awaited missed; the rest
    // found the body arriving.
    let misses = metric(metrics, "tftpd_cache_misses_total");
    assert!(misses >= 1);
    assert_eq!(misses + metric(metrics, "tftpd_cache_hits_total"), 200);
    // Within the TTL, a second round asks the origin nothing.
    storm(&d);
    assert_eq!(nginx.log().len(), 1, "{:#?}", nginx.log());
    assert_eq!(metric(metrics, "tftpd_cache_hits_total"), 400 - misses);
    assert_eq!(
        metric(metrics, "tftpd_origin_bytes_total"),
        data.len() as u64
    );
    // The body, and its entry's overhead.
    let stored = metric(metrics, "tftpd_cache_bytes") - data.len() as u64;
    assert!((512..1024).contains(&stored), "{stored}");
}

#[test]
fn revalidation_change_and_stale_if_error() {
    let Some(mut nginx) = Nginx::start() else {
        return;
    };
    nginx.put("vmlinuz", &content(100_000));
    // TTL 0: every request revalidates.
    let mut d = tftpd(
        &nginx.template(),
        &["--cache-ttl", "0", "--origin-timeout", "1"],
    );
    assert!(get(&d, "vmlinuz").unwrap().0 == content(100_000));
    assert!(get(&d, "vmlinuz").unwrap().0 == content(100_000));
    assert_eq!(nginx.count("/boot/vmlinuz", 200), 1, "{:#?}", nginx.log());
    let revalidated = nginx.log();
    assert!(
        revalidated
            .iter()
            .any(|l| l.starts_with("GET /boot/vmlinuz 304 ") && !l.contains("inm=-")),
        "{revalidated:#?}"
    );
    // A new kernel on the origin is served once the TTL has passed.
    let new = content(120_000)
        .iter()
        .map(|b| b ^ 0x5a)
        .collect::<Vec<_>>();
    nginx.put("vmlinuz", &new);
    assert!(get(&d, "vmlinuz").unwrap().0 == new);
    assert_eq!(nginx.count("/boot/vmlinuz", 200), 2, "{:#?}", nginx.log());
    // The origin goes away: the cached copy is still served.
    nginx.stop();
    let (bytes, tsize) = get(&d, "vmlinuz").unwrap();
    assert!(bytes == new);
    assert_eq!(tsize, Some(new.len() as u64));
    d.wait_for("serving the cached copy");
    // What was never cached cannot be.
    assert_eq!(error_code(get(&d, "other")).0, ErrorCode::NotDefined);
}

#[test]
fn client_ip_reaches_the_origin() {
    let Some(nginx) = Nginx::start() else { return };
    let template = format!(
        "http://127.0.0.1:{}/api/tftp?file={{path}}&ip={{client_ip}}",
        nginx.port
    );
    let d = tftpd(&template, &[]);
    let (bytes, tsize) = get(&d, "grub/grub.cfg").unwrap();
    let expected = "ip=127.0.0.1 file=grub/grub.cfg\n";
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    assert_eq!(tsize, Some(expected.len() as u64));
    assert!(
        nginx
            .log()
            .iter()
            .any(|l| l.ends_with("args=file=grub/grub.cfg&ip=127.0.0.1")),
        "{:#?}",
        nginx.log()
    );
}

/// The regular files under `dir`, at any depth (a cache keeps its files in
/// a subdirectory per instance).
fn files_under(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            files.extend(files_under(&entry.path()));
        } else if meta.is_file() {
            files.push((entry.path(), meta));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn dir_bytes(dir: &Path) -> u64 {
    files_under(dir).iter().map(|(_, m)| m.len()).sum()
}

/// The cache's object files under `dir`.
fn cache_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.to_string_lossy().ends_with(".tftp-cache"))
        .collect()
}

#[test]
fn disk_cache_stays_under_its_size() {
    let Some(nginx) = Nginx::start() else { return };
    let cache = tempfile::tempdir().unwrap();
    // Three 1 MB objects and their entries' overhead fit, not four.
    let limit = 3_100_000u64;
    for i in 0..5u8 {
        nginx.put(&format!("img{i}"), &vec![i; 1_000_000]);
    }
    nginx.put("huge", &content(4_000_000));
    let cache_dir = cache.path().to_str().unwrap();
    let mut d = tftpd(
        &nginx.template(),
        &[
            "--cache-dir",
            cache_dir,
            "--cache-size",
            &limit.to_string(),
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = with_metrics(&mut d);
    let fetch = |i: u8| {
        assert!(get(&d, &format!("img{i}")).unwrap().0 == vec![i; 1_000_000]);
        assert!(
            dir_bytes(cache.path()) <= limit,
            "{}",
            dir_bytes(cache.path())
        );
    };
    fetch(0);
    fetch(1);
    fetch(2);
    // img0 used again: img1 is now the least recently used, and goes.
    fetch(0);
    fetch(3);
    assert_eq!(metric(metrics, "tftpd_cache_evictions_total"), 1);
    fetch(0);
    fetch(2);
    assert_eq!(nginx.count("/boot/img0", 200), 1, "{:#?}", nginx.log());
    assert_eq!(nginx.count("/boot/img2", 200), 1, "{:#?}", nginx.log());
    fetch(1);
    assert_eq!(nginx.count("/boot/img1", 200), 2, "{:#?}", nginx.log());
    fetch(4);
    // Larger than the whole cache: streamed through, still whole.
    assert!(get(&d, "huge").unwrap().0 == content(4_000_000));
    assert!(dir_bytes(cache.path()) <= limit);
    assert!(metric(metrics, "tftpd_cache_bytes") <= limit);
    assert_eq!(metric(metrics, "tftpd_cache_objects"), 3);
    assert_eq!(metric(metrics, "tftpd_cache_bypassed_total"), 1);
}

#[test]
fn root_first_then_origin() {
    let Some(nginx) = Nginx::start() else { return };
    nginx.put("both", b"from the origin");
    nginx.put("remote", b"only on the origin");
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("both"), "from the root").unwrap();
    let root_dir = root.path().to_str().unwrap();
    let d = tftpd(&nginx.template(), &["--root", root_dir]);
    assert_eq!(get(&d, "both").unwrap().0, b"from the root");
    assert_eq!(get(&d, "remote").unwrap().0, b"only on the origin");
    assert_eq!(error_code(get(&d, "neither")).0, ErrorCode::FileNotFound);
    assert_eq!(nginx.count("/boot/both", 200), 0);
}

/// `file:///DIR/{path}` for a directory.
fn file_template(dir: &Path) -> String {
    format!("file://{}/{{path}}", dir.display())
}

#[test]
fn file_origin_is_confined_like_the_root() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"outside the origin").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/f.bin"), content(100_003)).unwrap();
    symlink(&secret, dir.path().join("abs")).unwrap();
    symlink(outside.path(), dir.path().join("dirlink")).unwrap();
    let climb = Path::new("..")
        .join(outside.path().file_name().unwrap())
        .join("secret");
    symlink(&climb, dir.path().join("rel")).unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let d = tftpd(&file_template(dir.path()), &[]);
    let (bytes, tsize) = get(&d, "sub/f.bin").unwrap();
    assert!(bytes == content(100_003), "{} bytes", bytes.len());
    assert_eq!(tsize, Some(100_003));
    for name in ["abs", "dirlink/secret", "rel", "../secret"] {
        let (code, _) = error_code(get(&d, name));
        assert!(
            matches!(code, ErrorCode::FileNotFound | ErrorCode::AccessViolation),
            "{name}: {code:?}"
        );
    }
    // A FIFO is refused at once, not waited on (nor its open left stuck).
    let started = Instant::now();
    let (code, _) = error_code(get(&d, "fifo"));
    assert_eq!(code, ErrorCode::AccessViolation);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // And the server still answers.
    assert!(get(&d, "sub/f.bin").unwrap().0 == content(100_003));
}

/// A directory everyone may enter, with a `www` of public files.
fn public_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(www.join("f.bin"), content(70_000)).unwrap();
    std::fs::set_permissions(www.join("f.bin"), std::fs::Permissions::from_mode(0o644)).unwrap();
    tmp
}

#[test]
fn cache_dir_is_made_for_the_user_tftpd_becomes() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        println!("SKIP: not running as root, the drop to nobody cannot be tested");
        return;
    }
    let tmp = public_dir();
    let cache = tmp.path().join("var/cache/tftpd");
    // Started as root without --user: tftpd becomes nobody, and the cache
    // directory it was given, made before the switch, is nobody's.
    let mut cmd = Command::new(TFTPD);
    cmd.args(["--origin", &file_template(&tmp.path().join("www"))])
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .arg("--cache-dir")
        .arg(&cache);
    let d = Daemon::spawn_as_is(cmd);
    assert!(get(&d, "f.bin").unwrap().0 == content(70_000));
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o700));
    let objects = cache_files(&cache);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let object = std::fs::metadata(&objects[0]).unwrap();
    assert_eq!((object.uid(), object.mode() & 0o7777), (65534, 0o600));
    let own = std::fs::metadata(objects[0].parent().unwrap()).unwrap();
    assert_eq!((own.uid(), own.mode() & 0o7777), (65534, 0o700));
    assert_eq!(object.len(), 70_000);
    // Served from the cache.
    assert!(get(&d, "f.bin").unwrap().0 == content(70_000));
}

/// Runs tftpd with `args`, which must make it exit at once; its stderr.
fn tftpd_refuses(args: &[&str]) -> String {
    let mut cmd = Command::new(TFTPD);
    cmd.args(args)
        .args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    if is_root() {
        cmd.args(["--user", "root"]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tftpd {args:?} started");
        }
        // Bounded poll of the child's exit.
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn cache_dir_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = public_dir();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = cache.join("1-1.tftp-cache");
    std::fs::write(&planted, b"planted").unwrap();
    let template = file_template(&tmp.path().join("www"));
    let stderr = tftpd_refuses(&[
        "--origin",
        &template,
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert!(stderr.contains("world-writable"), "{stderr}");
    assert!(stderr.contains(cache.to_str().unwrap()), "{stderr}");
    // Refused before anything in it was touched.
    assert!(planted.exists());
}

#[test]
fn two_tftpd_share_a_cache_dir_without_touching_each_others_files() {
    let tmp = public_dir();
    let cache = tmp.path().join("cache");
    let template = file_template(&tmp.path().join("www"));
    let cache_dir = cache.to_str().unwrap();
    let first = tftpd(&template, &["--cache-dir", cache_dir]);
    assert!(get(&first, "f.bin").unwrap().0 == content(70_000));
    let firsts = cache_files(&cache);
    assert_eq!(firsts.len(), 1, "{firsts:?}");
    // A second tftpd on the same directory: the first's object stays.
    let second = tftpd(&template, &["--cache-dir", cache_dir]);
    assert_eq!(cache_files(&cache), firsts);
    assert!(get(&second, "f.bin").unwrap().0 == content(70_000));
    let both = cache_files(&cache);
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&firsts[0]));
    // The first dies without a word: the next start removes its leftovers,
    // never the second's.
    drop(first);
    let seconds: Vec<_> = both.into_iter().filter(|p| *p != firsts[0]).collect();
    let third = tftpd(&template, &["--cache-dir", cache_dir]);
    assert_eq!(cache_files(&cache), seconds);
    assert!(get(&third, "f.bin").unwrap().0 == content(70_000));
    assert!(get(&second, "f.bin").unwrap().0 == content(70_000));
}

/// moto_server (PyPI `moto[server]`) on a loopback port, its request log in
/// a file.
struct Moto {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Moto {
    fn start() -> Option<Moto> {
        if !have("moto_server", "PyPI moto[server]") {
            return None;
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("spawn moto_server");
        wait_listening(port, &mut child, "moto_server");
        Some(Moto { child, port, log })
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
    }

    fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .build()
            .unwrap()
    }

    /// Creates a bucket (moto takes an unsigned PUT).
    fn bucket(&self, name: &str) {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    fn gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path} HTTP/1.1\" 200");
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3_content_errors_and_single_flight() {
    use object_store::ObjectStoreExt;
    let Some(moto) = Moto::start() else { return };
    moto.bucket("fleet");
    let store = moto.store("fleet");
    let sizes = [0usize, 700, 1_000_000];
    runtime().block_on(async {
        for size in sizes {
            let path = object_store::path::Path::from(format!("boot/s{size}"));
            store.put(&path, content(size).into()).await.unwrap();
        }
    });
    let mut cmd = Command::new(TFTPD);
    cmd.args(["--origin", "s3://fleet/boot/{path}"]).args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    moto.env(&mut cmd);
    let d = Daemon::spawn(cmd);
    for size in sizes {
        let (bytes, tsize) = get(&d, &format!("s{size}")).unwrap();
        assert!(bytes == content(size), "s{size}: {} bytes", bytes.len());
        assert_eq!(tsize, (size > 0).then_some(size as u64));
    }
    assert_eq!(error_code(get(&d, "missing")).0, ErrorCode::FileNotFound);
    assert_eq!(
        error_code(get(&d, "../boot/s700")).0,
        ErrorCode::AccessViolation
    );
    // 50 clients at once, one GET.
    runtime().block_on(async {
        let path = object_store::path::Path::from("boot/storm");
        store.put(&path, content(500_000).into()).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = client(&d).retries(10);
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    c.get("storm", &mut out).await.map(|_| out)
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap() == content(500_000));
        }
    });
    assert_eq!(moto.gets("/fleet/boot/storm"), 1);
    assert_eq!(moto.gets("/fleet/boot/s700"), 1);
}
