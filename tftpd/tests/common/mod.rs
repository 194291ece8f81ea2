//! Helpers of the binary-level tests: a `tftpd` child whose stderr lines
//! arrive on a channel, and small UDP and process utilities.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

pub const TFTPD: &str = env!("CARGO_BIN_EXE_tftpd");

/// Whether the tests run as root (effective uid 0, from /proc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|u| u == "0")
        })
        .unwrap_or(false)
}
pub const TFTP: &str = env!("CARGO_BIN_EXE_tftp");

/// A running tftpd whose stderr lines arrive on a channel.
pub struct Daemon {
    pub child: Child,
    pub lines: Receiver<String>,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The first "listening" line.
    pub first_line: String,
    /// Every stderr line [`Daemon::wait_for`] has read so far.
    pub seen: Vec<String>,
}

impl Daemon {
    pub fn start(root: &Path, extra: &[&str]) -> Daemon {
        let mut cmd = Command::new(TFTPD);
        cmd.arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .args(extra);
        Self::spawn(cmd)
    }

    /// Spawns `cmd`. Run as root (as CI does), a tftpd without `--user`
    /// gets `--user root`: it would become nobody, who cannot read the
    /// tests' private temporary directories (the tests of the drop itself
    /// pass their own `--user`, or none through [`Daemon::spawn_as_is`]).
    pub fn spawn(mut cmd: Command) -> Daemon {
        if is_root() && !cmd.get_args().any(|a| a == "--user") {
            cmd.args(["--user", "root"]);
        }
        Self::spawn_as_is(cmd)
    }

    /// Spawns `cmd` unchanged.
    pub fn spawn_as_is(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tftpd");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics: None,
            first_line: String::new(),
            seen: Vec::new(),
        };
        let line = d.wait_for("listening");
        d.addr = field(&line, "addr=").parse().expect("listening address");
        d.first_line = line;
        d
    }

    /// The next stderr line containing `needle` (panics after 10 s).
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no '{needle}' from tftpd"));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn wait_exit(&mut self) -> i32 {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            // Bounded poll of the child's exit (not a synchronisation point).
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tftpd did not exit");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    line[start..].split_whitespace().next().unwrap()
}

pub fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

pub fn tftp(args: &[&str]) -> std::process::Output {
    Command::new(TFTP).args(args).output().expect("run tftp")
}

/// A third-party program the test started (QEMU, dnsmasq, an emulator),
/// killed and reaped when dropped, however the test ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ip ARGS` (iproute2), panicking with its error when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces a test made (loopback up in each), deleted on drop.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// One namespace per name, each called `tftp-TAG-NAME-PID`.
    pub fn new(tag: &str, names: &[&str]) -> Namespaces {
        let id = std::process::id();
        let mut made = Namespaces(Vec::new());
        for name in names {
            let ns = format!("tftp-{tag}-{name}-{id}");
            ip(&["netns", "add", &ns]);
            made.0.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        made
    }

    /// The `i`th namespace's name.
    pub fn name(&self, i: usize) -> &str {
        &self.0[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The metrics endpoint's page: a minimal HTTP GET without a client
/// library, checked to be a 200.
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );
    body
}
