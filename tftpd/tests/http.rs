//! `tftpd --http`: the same names over HTTP, fetched by curl (a real
//! client), through the same handler stack as TFTP: root confinement,
//! `--map-file`, `--per-client-root`; the log line and the metrics with
//! their protocol. The origin's shared cache is tested in origin.rs.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{content, field, scrape, Daemon, TFTP};

/// tftpd on `root` with `--http 127.0.0.1:0` and `extra`; its HTTP address.
fn daemon(root: &std::path::Path, extra: &[&str]) -> (Daemon, SocketAddr) {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut d = Daemon::start(root, &args);
    let line = d.wait_for("HTTP on");
    let addr = field(&line, "addr=").parse().unwrap();
    (d, addr)
}

/// `curl -s ARGS URL`: the status and the body.
fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap();
    let status = std::str::from_utf8(&body[split + 1..])
        .unwrap()
        .parse()
        .unwrap();
    body.truncate(split);
    (status, body)
}

fn tftp_get(d: &Daemon, name: &str) -> Vec<u8> {
    let out = Command::new(TFTP)
        .args(["get", &d.addr.to_string(), name, "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl (apt-get install curl)")]
fn curl_gets_what_tftp_gets_through_the_same_stack() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = content(3_000_000);
    std::fs::write(dir.path().join("shared.cfg"), b"everyone").unwrap();
    // This client's own directory (--per-client-root ip): what it gets.
    let mine = dir.path().join("127.0.0.1");
    std::fs::create_dir_all(mine.join("boot")).unwrap();
    std::fs::write(mine.join("boot/vmlinuz"), &kernel).unwrap();
    std::fs::write(mine.join("shared.cfg"), b"mine").unwrap();
    let rules = dir.path().join("rules");
    std::fs::write(&rules, "r ^kernel$ boot/vmlinuz\n").unwrap();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(secret.path().join("secret"), mine.join("link")).unwrap();
    let (mut d, http) = daemon(
        dir.path(),
        &[
            "--map-file",
            rules.to_str().unwrap(),
            "--per-client-root",
            "ip",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    // Logged before the HTTP line.
    let line = d.seen.iter().find(|l| l.contains("metrics on")).unwrap();
    let metrics: SocketAddr = field(line, "addr=").parse().unwrap();
    let url = |path: &str| format!("http://{http}/{path}");

    // The same bytes by both protocols, through the remap rule.
    let (status, body) = curl(&[], &url("kernel"));
    assert_eq!(status, 200);
    assert!(body == kernel, "{} bytes", body.len());
    assert!(tftp_get(&d, "kernel") == kernel);
    // The client's own root, for both.
    assert_eq!(curl(&[], &url("shared.cfg")), (200, b"mine".to_vec()));
    assert_eq!(tftp_get(&d, "shared.cfg"), b"mine");
    // A range, as iPXE and UEFI ask for them.
    let (status, body) = curl(&["-r", "1000-1999"], &url("boot/vmlinuz"));
    assert_eq!(status, 206);
    assert_eq!(body, &kernel[1000..2000]);
    // HEAD: the size.
    let out = Command::new("curl")
        .args(["-sI", &url("boot/vmlinuz")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("content-length: 3000000"), "{head}");
    // Conditional: unchanged since the file's time.
    let (status, body) = curl(
        &["-z", mine.join("boot/vmlinuz").to_str().unwrap()],
        &url("boot/vmlinuz"),
    );
    assert_eq!((status, body.len()), (304, 0));
    // Nothing outside the root, however it is spelled.
    for path in [
        "../etc/passwd",
        "%2e%2e/%2e%2e/etc/passwd",
        "boot/..%2f..%2fetc/passwd",
        "link",
        "/etc/passwd",
    ] {
        let (status, body) = curl(&[], &url(path));
        assert!(matches!(status, 403 | 404), "{path}: {status}");
        assert!(
            !body.starts_with(b"outside") && !body.starts_with(b"root:"),
            "{path}"
        );
    }
    assert_eq!(curl(&[], &url("missing")).0, 404);
    assert_eq!(curl(&["-X", "PUT", "-d", "x"], &url("up")).0, 405);

    // One log line per request, with the protocol.
    let line = d.wait_for("protocol=\"http\"");
    assert!(
        line.contains("file=kernel") || line.contains("file=boot/vmlinuz"),
        "{line}"
    );
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("outcome=completed"), "{line}");
    assert!(line.contains("bytes_sent=3000000"), "{line}");
    let line = d.wait_for("protocol=\"tftp\"");
    assert!(line.contains("outcome=completed"), "{line}");
    // The metrics count each protocol.
    let mut ended = 1;
    while ended < 12 {
        d.wait_for("protocol=\"http\"");
        ended += 1;
    }
    let scrape = scrape(metrics);
    let value = |name: &str| -> u64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in {scrape}"))
            .parse::<f64>()
            .unwrap() as u64
    };
    assert_eq!(value("tftpd_http_requests_total"), 12);
    assert_eq!(
        value("tftpd_transfer_duration_seconds_count{protocol=\"http\"}"),
        12
    );
    assert_eq!(
        value("tftpd_transfer_duration_seconds_count{protocol=\"tftp\"}"),
        2
    );
    // Content only: the kernel, the config and the range.
    assert_eq!(value("tftpd_http_bytes_sent_total"), 3_000_000 + 4 + 1000);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
}

#[test]
fn http_is_off_by_default_and_a_bad_address_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    d.signal("TERM");
    assert_eq!(d.wait_exit(), 0);
    assert!(
        !d.seen.iter().any(|l| l.contains("HTTP on")),
        "{:?}",
        d.seen
    );
    let out = Command::new(common::TFTPD)
        .args(["--http", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(common::TFTPD)
        .args(["--http-max-connections", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
