//! Binary-level tests: `tftpd` on an ephemeral loopback port, driven with the
//! `tftp` binary, curl, a raw UDP peer and signals.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::*;

#[test]
fn help_works() {
    for bin in [TFTPD, TFTP] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("--blksize") || text.contains("--max-blksize"),
            "{text}"
        );
    }
    let out = Command::new(TFTPD).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// curl, a third-party client, fetches from tftpd.
#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl (apt-get install curl)")]
fn curl_fetches_from_tftpd() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(300_000);
    std::fs::write(dir.path().join("boot.img"), &data).unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("curl.img");
    let out = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&local)
        .arg(format!("tftp://127.0.0.1:{}/boot.img", d.port()))
        .output()
        .expect("curl is on PATH (the build found it, or TFTP_INTEROP_REQUIRED=1)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&local).unwrap(), data);
}

#[test]
fn get_put_errors_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(300_000);
    std::fs::write(dir.path().join("boot.img"), &data).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &["--metrics", "127.0.0.1:0"]);
    let m = d.wait_for("metrics on");
    d.metrics = Some(field(&m, "addr=").parse().unwrap());
    let host = format!("127.0.0.1:{}", d.port());

    // Fetch with the tftp binary, lock-step and windowed.
    for (i, extra) in [vec![], vec!["-b", "1468", "-w", "16", "--tsize"]]
        .iter()
        .enumerate()
    {
        let local = out_dir.path().join(format!("got{i}"));
        let mut args = extra.clone();
        args.extend(["get", &host, "boot.img", local.to_str().unwrap()]);
        let out = tftp(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&local).unwrap(), data);
    }
    // A missing file: exit 1 and the server's message.
    let out = tftp(&[
        "get",
        &host,
        "missing",
        out_dir.path().join("m").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("File not found"));
    assert!(
        !out_dir.path().join("m").exists(),
        "no partial file left behind"
    );
    // Writes are off by default: ERROR 2.
    let up = out_dir.path().join("up.bin");
    std::fs::write(&up, b"upload").unwrap();
    let out = tftp(&["put", &host, up.to_str().unwrap(), "up.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server error 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("up.bin").exists());
    let sessions = 4;
    // Every session has logged its line: the counters are final.
    for _ in 0..sessions {
        d.wait_for("tftpd::session");
    }
    let metrics = scrape(d.metrics.unwrap());
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("tftpd_sessions_started_total"), sessions);
    assert_eq!(value("tftpd_sessions_completed_total"), sessions - 2);
    assert_eq!(value("tftpd_sessions_failed_total"), 2);
    assert_eq!(value("tftpd_errors_total{code=\"1\"}"), 1);
    assert_eq!(value("tftpd_errors_total{code=\"2\"}"), 1);
    assert_eq!(
        value("tftpd_bytes_sent_total"),
        (sessions - 2) * data.len() as u64
    );
    assert_eq!(
        value("tftpd_transfer_duration_seconds_count{protocol=\"tftp\"}"),
        sessions
    );
    // Every finished transfer gave its buffers back to the budget.
    assert_eq!(value("tftpd_session_memory_bytes"), 0);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

#[test]
fn writes_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--allow-write"]);
    let host = format!("127.0.0.1:{}", d.port());
    let src = tempfile::NamedTempFile::new().unwrap();
    let data = content(50_000);
    std::fs::write(src.path(), &data).unwrap();
    let out = tftp(&[
        "-b",
        "1024",
        "--tsize",
        "put",
        &host,
        src.path().to_str().unwrap(),
        "new.bin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join("new.bin")).unwrap(), data);
    // No overwrite without --allow-overwrite: ERROR 6.
    let out = tftp(&["put", &host, src.path().to_str().unwrap(), "new.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server error 6"));
}

/// A tftpd on `--origin-file FILE` (no root), with `extra` flags.
fn origin_file_daemon(file: &std::path::Path, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--origin-file")
        .arg(file)
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .args(extra);
    Daemon::spawn(cmd)
}

#[test]
fn origin_file_keeps_the_template_out_of_argv_and_logs() {
    // Served: the first line that is neither empty nor a comment, trimmed.
    let store = tempfile::tempdir().unwrap();
    let data = content(20_000);
    std::fs::write(store.path().join("boot.img"), &data).unwrap();
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("origin");
    let template = format!("file://{}/{{path}}", store.path().display());
    std::fs::write(
        &file,
        format!("# the boot store\n\n   {template}  \n# old\n"),
    )
    .unwrap();
    let d = origin_file_daemon(&file, &["--cache-size", "0"]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.child.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains("file://"), "{cmdline}");
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("got");
    let host = format!("127.0.0.1:{}", d.port());
    let out = tftp(&["get", &host, "boot.img", local.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&local).unwrap(), data);
    drop(d);

    // A token in the template's query reaches no log line: not at start,
    // not when the origin fails, not in the per-lookup line.
    std::fs::write(&file, "http://127.0.0.1:1/boot/{path}?token=s3cret\n").unwrap();
    let mut d = origin_file_daemon(
        &file,
        &["-v", "--origin-timeout", "1", "--origin-retries", "0"],
    );
    let out = tftp(&["get", &host_of(&d), "x", local.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    d.wait_for("origin lookup");
    let lines = d.seen.join("\n");
    assert!(lines.contains("serving from an origin"), "{lines}");
    assert!(lines.contains("origin unavailable"), "{lines}");
    assert!(!lines.contains("s3cret"), "{lines}");
    assert!(
        lines.contains("origin=http://127.0.0.1:1/boot/{path}?***"),
        "{lines}"
    );
    assert!(
        lines.contains("url=http://127.0.0.1:1/boot/x?***"),
        "{lines}"
    );
}

fn host_of(d: &Daemon) -> String {
    format!("127.0.0.1:{}", d.port())
}

#[test]
fn origin_file_and_origin_from_the_environment() {
    let store = tempfile::tempdir().unwrap();
    let template = format!("file://{}/{{path}}", store.path().display());
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("origin");
    std::fs::write(&file, format!("{template}\n")).unwrap();
    for (var, value) in [
        ("TFTPD_ORIGIN_FILE", file.to_str().unwrap()),
        ("TFTPD_ORIGIN", template.as_str()),
    ] {
        let mut cmd = Command::new(TFTPD);
        cmd.env(var, value)
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .args(["--cache-size", "1000"]);
        let d = Daemon::spawn(cmd);
        assert!(
            d.first_line.contains(&format!("origin=\"{template}\"")),
            "{var}: {}",
            d.first_line
        );
    }
}

#[test]
fn origin_file_usage_errors() {
    let conf = tempfile::tempdir().unwrap();
    let missing = conf.path().join("missing");
    let empty = conf.path().join("empty");
    std::fs::write(&empty, "\n  \n# only a comment\n").unwrap();
    let bad = conf.path().join("bad");
    std::fs::write(&bad, "ftp://u:s3cret@repo/{path}\n").unwrap();
    let good = conf.path().join("good");
    std::fs::write(&good, "http://repo/{path}\n").unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(TFTPD)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let flag = std::ffi::OsStr::new("--origin-file");
    for (file, why) in [
        (missing.as_path(), "No such file"),
        (empty.as_path(), "no URL template"),
        // A directory: unreadable as a file.
        (conf.path(), "--origin-file"),
        (bad.as_path(), "unsupported scheme"),
    ] {
        let (code, err) = run(&[flag, file.as_os_str()]);
        assert_eq!(code, Some(2), "{file:?}: {err}");
        assert!(err.contains("--origin-file"), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
    // Not both: one template, from one place.
    let (code, err) = run(&[
        flag,
        good.as_os_str(),
        "--origin".as_ref(),
        "http://repo/{path}".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn sigterm_lets_a_running_transfer_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(512 * 8 + 3);
    std::fs::write(dir.path().join("f.bin"), &data).unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    peer.send_to(b"\x00\x01f.bin\x00octet\x00", d.addr).unwrap();
    let mut buf = [0u8; 600];
    let (n, tid) = peer.recv_from(&mut buf).unwrap();
    let mut got = buf[4..n].to_vec();
    // Mid-transfer: SIGTERM, and wait until tftpd says it is draining.
    d.signal("TERM");
    d.wait_for("draining");
    let mut block = 1u16;
    loop {
        peer.send_to(&[0, 4, (block >> 8) as u8, block as u8], tid)
            .unwrap();
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(from, tid);
        let b = u16::from_be_bytes([buf[2], buf[3]]);
        if b == block + 1 {
            block = b;
            got.extend_from_slice(&buf[4..n]);
            if n < 516 {
                peer.send_to(&[0, 4, (b >> 8) as u8, b as u8], tid).unwrap();
                break;
            }
        }
    }
    assert_eq!(got, data);
    assert_eq!(d.wait_exit(), 0);
}

/// Whether DATA 1 of `file` from `addr` comes from `addr` itself (the
/// listening socket: single-port mode) or another port.
fn data_from_the_listening_port(addr: std::net::SocketAddr, file: &str) -> bool {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    peer.send_to(&rrq, addr).unwrap();
    let mut buf = [0u8; 600];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..4], &[0, 3, 0, 1], "{:?}", &buf[..n]);
    // The rest is short: acknowledge it so the session ends.
    peer.send_to(&[0, 4, 0, 1], from).unwrap();
    from == addr
}

/// Socket activation, and in single-port mode too: every transfer from
/// the socket systemd passed.
#[test]
fn systemd_socket_activation() {
    for single_port in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), b"hello from fd 3\n").unwrap();
        // The test binds the socket, as systemd would, and hands it over as fd 3.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("exec 3<&0 0</dev/null; LISTEN_FDS=1 LISTEN_PID=$$ exec \"$0\" --root \"$1\" --workers 1 \"$2\"")
            .arg(TFTPD)
            .arg(dir.path())
            .arg(if single_port { "--single-port" } else { "--drain-timeout=30" })
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(socket)));
        let d = Daemon::spawn(cmd);
        assert_eq!(
            d.addr, addr,
            "serves on the passed socket, binds nothing else"
        );
        let out_dir = tempfile::tempdir().unwrap();
        let local = out_dir.path().join("hello.txt");
        let out = tftp(&[
            "get",
            &addr.to_string(),
            "hello.txt",
            local.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&local).unwrap(), b"hello from fd 3\n");
        assert_eq!(data_from_the_listening_port(addr, "hello.txt"), single_port);
    }
}

/// inetd mode, and in single-port mode too.
#[test]
fn inetd_mode_serves_the_socket_on_stdin() {
    for single_port in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"inetd").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let mut cmd = Command::new(TFTPD);
        cmd.arg("--root")
            .arg(dir.path())
            .args(["--inetd", "--workers", "1"])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(socket)));
        if single_port {
            cmd.arg("--single-port");
        }
        let d = Daemon::spawn(cmd);
        assert_eq!(d.addr, addr);
        let out_dir = tempfile::tempdir().unwrap();
        let local = out_dir.path().join("x");
        let out = tftp(&["get", &addr.to_string(), "x", local.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&local).unwrap(), b"inetd");
        assert_eq!(data_from_the_listening_port(addr, "x"), single_port);
    }
}

/// Every thread of process `pid`: (real, effective, saved uid; effective
/// capabilities).
fn threads_of(pid: u32) -> Vec<([u32; 3], u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let uid = field("Uid:");
        let uids = [0, 1, 2].map(|i| uid[i].parse().unwrap());
        let caps = u64::from_str_radix(&field("CapEff:")[0], 16).unwrap();
        out.push((uids, caps));
    }
    out
}

/// A root directory nobody can read, with one public file.
fn public_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("pub.txt"), b"readable by nobody").unwrap();
    std::fs::set_permissions(
        dir.path().join("pub.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    dir
}

fn assert_serves_pub(d: &Daemon) {
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("pub.txt");
    let out = tftp(&[
        "get",
        &d.addr.to_string(),
        "pub.txt",
        local.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&local).unwrap(), b"readable by nobody");
}

#[test]
#[cfg_attr(
    not(root),
    ignore = "needs root: tftpd drops privileges only when started as root"
)]
fn drops_privileges_in_every_thread_before_any_starts() {
    assert!(is_root(), "built as root, run as another user: rebuild");
    let dir = public_root();
    // With the metrics endpoint and the runtime's threads: every thread,
    // not only the main one, is unprivileged.
    let mut d = Daemon::start(
        dir.path(),
        &["--user", "65534:65534", "--metrics", "127.0.0.1:0"],
    );
    let m = d.wait_for("metrics on");
    let metrics: SocketAddr = field(&m, "addr=").parse().unwrap();
    assert!(scrape(metrics).contains("tftpd_sessions_started_total"));
    assert_serves_pub(&d);
    let threads = threads_of(d.child.id());
    assert!(threads.len() >= 2, "{threads:?}");
    for (uids, caps) in &threads {
        assert_eq!(uids, &[65534; 3], "a thread kept root: {threads:?}");
        assert_eq!(*caps, 0, "a thread kept capabilities: {threads:?}");
    }
}

#[test]
#[cfg_attr(
    not(root),
    ignore = "needs root: tftpd drops privileges only when started as root"
)]
fn started_as_root_without_user_becomes_nobody() {
    assert!(is_root(), "built as root, run as another user: rebuild");
    let dir = public_root();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    let d = Daemon::spawn_as_is(cmd);
    let nobody = threads_of(d.child.id());
    assert!(
        nobody.iter().all(|(u, c)| u[1] != 0 && *c == 0),
        "{nobody:?}"
    );
    assert_serves_pub(&d);
    // --user root keeps root, explicitly.
    let kept = Daemon::start(dir.path(), &["--user", "root"]);
    assert!(threads_of(kept.child.id()).iter().all(|(u, _)| u[1] == 0));
}

#[test]
fn serves_ipv4_and_ipv6_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), content(3000)).unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root").arg(dir.path()).args([
        "--listen",
        "[::1]:0",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]);
    let mut d = Daemon::spawn(cmd);
    let second: SocketAddr = field(&d.wait_for("listening"), "addr=").parse().unwrap();
    let addrs = [d.addr, second];
    assert!(
        addrs.iter().any(|a| a.is_ipv6()) && addrs.iter().any(|a| a.is_ipv4()),
        "{addrs:?}"
    );
    let out_dir = tempfile::tempdir().unwrap();
    for (i, addr) in addrs.iter().enumerate() {
        let local = out_dir.path().join(format!("f{i}"));
        let out = tftp(&[
            "-b",
            "1468",
            "get",
            &addr.to_string(),
            "f.bin",
            local.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&local).unwrap(), content(3000));
    }
}

/// `tftp get` waits out its dally: a server that retransmits the final DATA
/// (as if the first ACK was lost) hears the ACK again before tftp exits.
#[test]
fn tftp_get_reacknowledges_a_retransmitted_last_block() {
    let listen = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    listen
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = listen.local_addr().unwrap().port().to_string();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 600];
        let (_, client) = listen.recv_from(&mut buf).expect("RRQ");
        let tid = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tid.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let data = b"\x00\x03\x00\x01final block";
        let mut acks = 0;
        for _ in 0..2 {
            tid.send_to(data, client).unwrap();
            let (n, _) = tid.recv_from(&mut buf).expect("ACK");
            assert_eq!(&buf[..n], b"\x00\x04\x00\x01");
            acks += 1;
        }
        acks
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got");
    let result = tftp(&[
        "get",
        &format!("127.0.0.1:{port}"),
        "f",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{result:?}");
    assert_eq!(std::fs::read(&out).unwrap(), b"final block");
    assert_eq!(
        server.join().unwrap(),
        2,
        "both copies of the last DATA acknowledged"
    );
}

/// A failed download leaves an existing local file as it was (and no
/// temporary file); a successful one replaces it.
#[test]
fn tftp_get_never_harms_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("new.img"), content(2000)).unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let host = format!("127.0.0.1:{}", d.port());
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("boot.img");
    std::fs::write(&local, b"the old image").unwrap();
    let out = tftp(&["get", &host, "missing", local.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&local).unwrap(), b"the old image");
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    let out = tftp(&["get", &host, "new.img", local.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&local).unwrap(), content(2000));
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 1);
}

/// A server's ERROR text reaches the terminal with its control characters
/// escaped.
#[test]
fn tftp_escapes_the_servers_error_text() {
    let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
    listen
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = listen.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 600];
        let (_, client) = listen.recv_from(&mut buf).expect("RRQ");
        listen
            .send_to(b"\x00\x05\x00\x01\x1b[2Jgone\nforged line\x00", client)
            .unwrap();
    });
    let out_dir = tempfile::tempdir().unwrap();
    let out = tftp(&[
        "get",
        &format!("127.0.0.1:{port}"),
        "f",
        out_dir.path().join("f").to_str().unwrap(),
    ]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.contains(r"\u{1b}[2Jgone\nforged line"), "{err:?}");
}

/// Reads an HTTP answer from `s` until the server closes the connection
/// (panics if its read timeout passes first).
fn read_answer(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut body = Vec::new();
    if let Err(e) = s.read_to_end(&mut body) {
        assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "never closed");
        assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "never closed");
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn metrics_endpoint_bounds_headers_connections_and_time() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &["--metrics", "127.0.0.1:0"]);
    let m = d.wait_for("metrics on");
    let addr: SocketAddr = field(&m, "addr=").parse().unwrap();
    // A header line that never ends: refused and closed once past the 8 KiB
    // limit, not buffered without bound.
    let mut long = std::net::TcpStream::connect(addr).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    long.write_all(b"GET /metrics HTTP/1.1\r\nX-Long: ")
        .unwrap();
    let chunk = [b'a'; 4096];
    for _ in 0..64 {
        if long.write_all(&chunk).is_err() {
            break;
        }
    }
    let answer = read_answer(&mut long);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // Many idle connections (more than the 16 served at once) do not delay
    // a scrape: the oldest idle ones are closed to admit it.
    let idle: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut s);
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(answer.contains("tftpd_sessions_started_total 0"));
    assert!(answer.contains("tftpd_sessions_evicted_total 0"));
    assert!(answer.contains("tftpd_session_memory_bytes 0"), "{answer}");
    assert!(answer.contains("# EOF"), "OpenMetrics text");
    println!("scrape behind 40 idle connections: {:?}", started.elapsed());
    drop(idle);
    // Anything else is 404.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(read_answer(&mut s).contains(" 404 "));
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

/// 200 connections that never send a byte (far more than the 16 served at
/// once) cannot keep a scrape from being answered promptly: the oldest idle
/// connection is closed to admit each new one, and a scrape sends its
/// request at once. Before, the scrape waited in the backlog behind 5 s
/// header timeouts, 16 connections at a time.
#[test]
fn metrics_answer_with_200_idle_connections_open() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &["--metrics", "127.0.0.1:0"]);
    let m = d.wait_for("metrics on");
    let addr: SocketAddr = field(&m, "addr=").parse().unwrap();
    let started = std::time::Instant::now();
    let idle: Vec<_> = (0..200)
        .map(|i| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {i} not accepted: {e}"))
        })
        .collect();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("scrape connection");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut s);
    let elapsed = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("# EOF"), "{answer}");
    // Well within the 5 s header timeout that used to free the slots.
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    println!("scrape behind 200 idle connections: {elapsed:?}");
    drop(idle);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

#[test]
#[cfg_attr(
    not(has_prlimit),
    ignore = "needs prlimit (apt-get install util-linux)"
)]
fn metrics_survive_running_out_of_descriptors() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), content(100_000)).unwrap();
    // 32 descriptors, hard and soft: tftpd cannot raise them.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=32:32", "--", TFTPD, "--root"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--metrics", "127.0.0.1:0", "--timeout", "100"]);
    let mut d = Daemon::spawn(cmd);
    let m = d.wait_for("metrics on");
    let addr: SocketAddr = field(&m, "addr=").parse().unwrap();
    // Verified transfers that then stall hold two descriptors each (socket
    // and file) for about 12 s of retries, until no more can be opened.
    let mut stalled = Vec::new();
    let mut exhausted = false;
    for _ in 0..40 {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        peer.send_to(b"\x00\x01f.bin\x00octet\x00", d.addr).unwrap();
        let mut buf = [0u8; 600];
        let (_, tid) = peer.recv_from(&mut buf).unwrap();
        if buf[..2] != [0, 3] {
            exhausted = true;
            break;
        }
        peer.send_to(&[0, 4, 0, 1], tid).unwrap();
        stalled.push(peer);
    }
    assert!(exhausted, "descriptors never ran out");
    // Now a scrape: the accept fails (EMFILE) and is retried, not fatal.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    d.wait_for("metrics accept failed");
    let answer = read_answer(&mut s);
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(!answer.contains("tftpd_metrics_accept_errors_total 0\n"));
    drop(stalled);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

/// `--rollover refuse`: a file that needs a block past 65535 ends with
/// ERROR 3 and its message, in the client's error and tftpd's session log
/// line; a file whose last block is 65535 is served.
#[test]
fn rollover_refuse_ends_with_error_3() {
    let dir = tempfile::tempdir().unwrap();
    // At blksize 8: 65 536 blocks (the last empty), and 65 535.
    std::fs::write(dir.path().join("over.bin"), content(8 * 65_535)).unwrap();
    let fits = content(8 * 65_534 + 3);
    std::fs::write(dir.path().join("fits.bin"), &fits).unwrap();
    let mut d = Daemon::start(dir.path(), &["--rollover", "refuse"]);
    let host = format!("127.0.0.1:{}", d.port());
    let out_dir = tempfile::tempdir().unwrap();
    let get = |name: &str| {
        let local = out_dir.path().join(name);
        let args = [
            "get",
            &host,
            name,
            local.to_str().unwrap(),
            "-b",
            "8",
            "-w",
            "64",
        ];
        (tftp(&args), local)
    };
    let (out, _) = get("over.bin");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server error 3"), "{err}");
    assert!(
        err.contains("File too large for the block numbers"),
        "{err}"
    );
    let line = d.wait_for("over.bin");
    assert!(
        line.contains("File too large for the block numbers"),
        "{line}"
    );
    let (out, local) = get("fits.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&local).unwrap() == fits);
}
