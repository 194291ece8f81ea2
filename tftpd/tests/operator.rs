//! What operators moving from tftpd-hpa or dnsmasq rely on: configuration
//! from the environment, `--version`, `--refuse`, and log lines a human and
//! a log pipeline can read.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Sends an RRQ for `file` with `options` (name, value pairs) from a fresh
/// socket; returns the socket and the first answer.
fn rrq(server: std::net::SocketAddr, file: &str, options: &[(&str, &str)]) -> (UdpSocket, Vec<u8>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = vec![0, 1];
    for part in [file, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(n, v)| [*n, *v]))
    {
        req.extend_from_slice(part.as_bytes());
        req.push(0);
    }
    sock.send_to(&req, server).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    buf.truncate(n);
    (sock, buf)
}

/// The option names of an OACK, sorted.
fn oack_names(packet: &[u8]) -> Vec<String> {
    assert_eq!(&packet[..2], &[0, 6], "an OACK: {packet:?}");
    packet[2..]
        .split(|&b| b == 0)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).to_lowercase())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn every_flag_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), content(2000)).unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.env("TFTPD_ROOT", dir.path())
        .env("TFTPD_LISTEN", "127.0.0.1:0")
        .env("TFTPD_WORKERS", "1")
        .env("TFTPD_REFUSE", "tsize,windowsize")
        .env("TFTPD_MAX_BLKSIZE", "1024")
        .env("TFTPD_ALLOW_WRITE", "true");
    let d = Daemon::spawn(cmd);
    assert!(d.first_line.contains("write=true"), "{}", d.first_line);
    // blksize capped at 1024, tsize and windowsize never acknowledged.
    let (_, answer) = rrq(
        d.addr,
        "f.bin",
        &[("blksize", "1468"), ("tsize", "0"), ("windowsize", "8")],
    );
    assert_eq!(oack_names(&answer), ["blksize"]);
    assert!(answer.windows(5).any(|w| w == b"1024\0"), "{answer:?}");
}

/// A flag given on the command line wins over the environment.
#[test]
fn command_line_overrides_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.env("TFTPD_LISTEN", "127.0.0.1:1")
        .env("TFTPD_ROOT", "/nonexistent")
        .arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    let d = Daemon::spawn(cmd);
    assert_ne!(d.addr.port(), 1);
}

#[test]
fn version_flags() {
    for (bin, name) in [(TFTPD, "tftpd"), (TFTP, "tftp")] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{bin}"
        );
    }
}

#[test]
fn refused_options_are_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), content(700)).unwrap();
    let all = [
        ("blksize", "1468"),
        ("tsize", "0"),
        ("timeout", "3"),
        ("windowsize", "4"),
    ];
    for (refuse, left) in [
        ("blksize", vec!["timeout", "tsize", "windowsize"]),
        ("tsize", vec!["blksize", "timeout", "windowsize"]),
        ("timeout", vec!["blksize", "tsize", "windowsize"]),
        ("windowsize", vec!["blksize", "timeout", "tsize"]),
    ] {
        let d = Daemon::start(dir.path(), &["--refuse", refuse]);
        let (_, answer) = rrq(d.addr, "f.bin", &all);
        assert_eq!(oack_names(&answer), left, "--refuse {refuse}");
    }
    // All four refused: no OACK at all, DATA 1 with 512 bytes (RFC 1350).
    let d = Daemon::start(
        dir.path(),
        &[
            "--refuse",
            "blksize",
            "--refuse",
            "tsize",
            "--refuse",
            "timeout",
            "--refuse",
            "windowsize",
        ],
    );
    let (_, answer) = rrq(d.addr, "f.bin", &all);
    assert_eq!(&answer[..4], &[0, 3, 0, 1]);
    assert_eq!(answer.len(), 4 + 512);
    // An unknown option name is a usage error.
    let out = Command::new(TFTPD)
        .args(["--refuse", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn one_listening_line_per_address_and_readable_session_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), content(3000)).unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--workers", "3"]);
    let mut d = Daemon::spawn(cmd);
    // The first "listening" line was consumed by spawn; it said 3 sockets.
    let out = tftp(&["get", &d.addr.to_string(), "missing", "-"]);
    assert_eq!(out.status.code(), Some(1));
    let refused = d.wait_for("session");
    assert!(refused.contains("outcome=refused"), "{refused}");
    assert!(refused.contains("error_code=1"), "{refused}");
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("f");
    let out = tftp(&["get", &d.addr.to_string(), "f.bin", local.to_str().unwrap()]);
    assert!(out.status.success());
    let done = d.wait_for("session");
    assert!(done.contains("outcome=completed"), "{done}");
    let ms = field(&done, "duration_ms=");
    assert!(ms.parse::<u64>().is_ok(), "whole milliseconds: {done}");
    // No second "listening" line for the other two worker sockets.
    d.signal("TERM");
    let mut lines = Vec::new();
    while let Ok(line) = d.lines.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    assert!(!lines.iter().any(|l| l.contains("listening")), "{lines:?}");
}

#[test]
fn listening_line_counts_worker_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--workers", "3"]);
    let d = Daemon::spawn(cmd);
    assert!(d.first_line.contains("sockets=3"), "{}", d.first_line);
}

/// Fetches a file of under 512 bytes from `from` (a 127.0.0.x address):
/// its bytes, or the ERROR code.
fn get_small_from(from: &str, server: std::net::SocketAddr, name: &str) -> Result<Vec<u8>, u16> {
    let sock = UdpSocket::bind(format!("{from}:0")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = vec![0, 1];
    req.extend_from_slice(name.as_bytes());
    req.extend_from_slice(b"\0octet\0");
    sock.send_to(&req, server).unwrap();
    let mut buf = [0u8; 600];
    let (n, tid) = sock.recv_from(&mut buf).expect("an answer");
    match buf[..2] {
        [0, 3] => {
            sock.send_to(&[0, 4, 0, 1], tid).unwrap();
            Ok(buf[4..n].to_vec())
        }
        [0, 5] => Err(u16::from_be_bytes([buf[2], buf[3]])),
        _ => panic!("unexpected {:?}", &buf[..n]),
    }
}

#[test]
fn per_client_root_by_ip() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("127.0.0.2")).unwrap();
    std::fs::write(dir.path().join("127.0.0.2/boot.cfg"), b"mine").unwrap();
    std::fs::write(dir.path().join("boot.cfg"), b"default").unwrap();
    let d = Daemon::start(dir.path(), &["--per-client-root", "ip"]);
    assert_eq!(
        get_small_from("127.0.0.2", d.addr, "boot.cfg").unwrap(),
        b"mine"
    );
    assert_eq!(
        get_small_from("127.0.0.3", d.addr, "boot.cfg").unwrap(),
        b"default"
    );
    let out = Command::new(TFTPD)
        .args(["--per-client-root", "hostname"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "only ip and mac are keys");
}

/// A tree migrated from tftpd-hpa: an absolute symlink inside the root.
#[test]
fn absolute_symlinks_resolve_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    std::fs::write(dir.path().join("images/vmlinuz"), b"kernel").unwrap();
    std::os::unix::fs::symlink("/images/vmlinuz", dir.path().join("boot/vmlinuz")).unwrap();
    let d = Daemon::start(dir.path(), &[]);
    assert_eq!(
        get_small_from("127.0.0.1", d.addr, "boot/vmlinuz").unwrap(),
        b"kernel"
    );
}

#[test]
fn map_file_rewrites_and_bad_rules_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    std::fs::write(dir.path().join("boot/wdsnbp.com"), b"wds").unwrap();
    let rules = dir.path().join("rules");
    std::fs::write(&rules, "# WDS\nrg \\\\ /\n").unwrap();
    let d = Daemon::start(dir.path(), &["--map-file", rules.to_str().unwrap()]);
    assert_eq!(
        get_small_from("127.0.0.1", d.addr, r"boot\wdsnbp.com").unwrap(),
        b"wds"
    );
    drop(d);
    // tftpd-hpa's short flag works too, and a bad regex names its line.
    std::fs::write(&rules, "rg \\\\ /\n\nr (unclosed x\n").unwrap();
    let out = Command::new(TFTPD)
        .arg("--root")
        .arg(dir.path())
        .arg("-m")
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    // A missing file too.
    let out = Command::new(TFTPD)
        .args(["-m", "/nonexistent/rules"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// SIGHUP re-reads `--map-file`: the requests from then on see the new
/// rules; a bad or missing file keeps the rules in use, names its line,
/// and tftpd serves on.
#[test]
fn sighup_reloads_the_map_file_and_a_bad_one_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"A").unwrap();
    std::fs::write(dir.path().join("b.txt"), b"B").unwrap();
    let rules = dir.path().join("rules");
    std::fs::write(&rules, "r ^file$ a.txt\n").unwrap();
    let mut d = Daemon::start(dir.path(), &["--map-file", rules.to_str().unwrap()]);
    let get = |d: &Daemon| get_small_from("127.0.0.1", d.addr, "file").unwrap();
    assert_eq!(get(&d), b"A");
    std::fs::write(&rules, "# now b\nr ^file$ b.txt\n").unwrap();
    d.signal("HUP");
    let line = d.wait_for("remap rules reloaded");
    assert!(line.contains("rules=1"), "{line}");
    assert_eq!(get(&d), b"B");
    std::fs::write(&rules, "r ^file$ a.txt\nr (unclosed x\n").unwrap();
    d.signal("HUP");
    let line = d.wait_for("remap rules not reloaded");
    assert!(line.contains("line 2"), "{line}");
    assert_eq!(get(&d), b"B", "the rules in use stay");
    std::fs::remove_file(&rules).unwrap();
    d.signal("HUP");
    d.wait_for("remap rules not reloaded");
    assert_eq!(get(&d), b"B");
}

/// Without files to reload, a SIGHUP is logged and does not end tftpd.
#[test]
fn sighup_without_files_does_not_end_tftpd() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    d.signal("HUP");
    d.wait_for("nothing to reload");
    assert_eq!(get_small_from("127.0.0.1", d.addr, "f").unwrap(), b"x");
}

/// A switch set to false in the environment is off, and does not demand
/// the switches it would need when on.
#[test]
fn false_switches_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(TFTPD);
    cmd.env("TFTPD_ALLOW_OVERWRITE", "false")
        .arg("--root")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--workers", "1"]);
    let d = Daemon::spawn(cmd);
    assert!(d.first_line.contains("write=false"), "{}", d.first_line);
    let out = Command::new(TFTPD)
        .env("TFTPD_ALLOW_OVERWRITE", "true")
        .args(["--root", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "overwrite needs --allow-write");
}

/// The soft descriptor limit is raised to the hard one at start.
#[test]
fn descriptor_limit_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"ulimit -S -n 256 && exec "$0" --root "$1" --listen 127.0.0.1:0 --workers 1"#)
        .arg(TFTPD)
        .arg(dir.path());
    let d = Daemon::spawn(cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files"
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "256", "{line}");
}

/// Control characters in a requested name are escaped in the text log, so
/// a name cannot forge a log line or reach a terminal as an escape.
#[test]
fn peer_text_is_escaped_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    assert_eq!(
        get_small_from("127.0.0.1", d.addr, "evil\n2026-01-01 INFO forged\x1b[2J"),
        Err(1)
    );
    let line = d.wait_for("tftpd::session");
    assert!(
        line.contains(r"file=evil\n2026-01-01 INFO forged\u{1b}[2J"),
        "{line}"
    );
    assert!(!line.contains('\x1b'), "{line}");
}

/// Half-written uploads a crash left behind are removed at startup when
/// writes are enabled.
#[test]
fn stale_upload_temporaries_are_removed_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    // The writer's pid is in the name: one that has exited (a fixed number
    // may be a live process or thread on the machine running the test).
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let temp = format!("sub/.f.tftp-upload-{dead}-0");
    std::fs::write(dir.path().join(&temp), b"half").unwrap();
    std::fs::write(dir.path().join("sub/f"), b"whole").unwrap();
    let d = Daemon::start(dir.path(), &["--allow-write"]);
    drop(d);
    assert!(!dir.path().join(&temp).exists());
    assert!(dir.path().join("sub/f").exists());
}

/// --umask applies to uploads, --upload-dir confines them, and
/// --max-upload-size bounds them.
#[test]
fn upload_flags() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("incoming")).unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            "--allow-write",
            "--umask",
            "077",
            "--upload-dir",
            "incoming",
            "--max-upload-size",
            "600",
        ],
    );
    let up = dir.path().join("local.bin");
    std::fs::write(&up, content(500)).unwrap();
    let host = d.addr.to_string();
    let out = tftp(&["put", &host, up.to_str().unwrap(), "incoming/a.bin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(dir.path().join("incoming/a.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let out = tftp(&["put", &host, up.to_str().unwrap(), "b.bin"]);
    assert_eq!(out.status.code(), Some(1), "outside the upload dir");
    std::fs::write(&up, content(700)).unwrap();
    let out = tftp(&[
        "--tsize",
        "put",
        &host,
        up.to_str().unwrap(),
        "incoming/c.bin",
    ]);
    assert_eq!(out.status.code(), Some(1), "over the size limit");
    assert!(String::from_utf8_lossy(&out.stderr).contains("server error 3"));
    assert!(!dir.path().join("incoming/c.bin").exists());
    let out = Command::new(TFTPD)
        .args(["--umask", "999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The blksize an OACK grants.
fn oack_blksize(packet: &[u8]) -> u16 {
    assert_eq!(&packet[..2], &[0, 6], "an OACK: {packet:?}");
    let fields: Vec<&[u8]> = packet[2..].split(|&b| b == 0).collect();
    let i = fields
        .iter()
        .position(|f| f.eq_ignore_ascii_case(b"blksize"))
        .expect("blksize in the OACK");
    String::from_utf8_lossy(fields[i + 1]).parse().unwrap()
}

/// `--max-blksize ADDR=N` caps the blksize of requests sent to ADDR only,
/// on a listener of its own and on a wildcard listener alike; the global
/// `--max-blksize` applies elsewhere.
#[test]
fn max_blksize_per_local_address() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), content(3000)).unwrap();
    // A port both addresses can use: the wildcard listener's.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(TFTPD);
    cmd.arg("--root")
        .arg(dir.path())
        .args(["--listen", &format!("0.0.0.0:{port}"), "--workers", "1"])
        .args(["--max-blksize", "8192,127.0.0.3=1024"])
        .args(["--max-blksize", "127.0.0.4=600"]);
    let d = Daemon::spawn(cmd);
    assert_eq!(d.addr.port(), port);
    for (to, granted) in [("127.0.0.3", 1024), ("127.0.0.4", 600), ("127.0.0.5", 8192)] {
        let server = format!("{to}:{port}").parse().unwrap();
        let (sock, oack) = rrq(server, "f.bin", &[("blksize", "65464")]);
        assert_eq!(oack_blksize(&oack), granted, "sent to {to}");
        sock.send_to(&[0, 5, 0, 0, b'x', 0], server).unwrap();
    }
}
