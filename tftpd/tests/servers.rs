//! Our `tftp` client against the servers it meets on boot LANs: tftpd-hpa,
//! atftpd and dnsmasq, each on port 69 of the loopback of a network
//! namespace of its own. Downloads in lock-step, with options (a window the
//! server may not grant), the largest block, netascii, a missing file;
//! uploads where the server takes them; and block numbers rolling over
//! past 65535 in both directions against tftpd-hpa.
//!
//! Needs root and `ip` (iproute2), and the servers: `atftpd` (apt-get
//! install atftpd), `dnsmasq` (dnsmasq-base) and `in.tftpd-hpa`, tftpd-hpa's
//! `in.tftpd` under a name of its own on PATH (its package and atftpd's
//! both install `/usr/sbin/in.tftpd`; `.ci/run` extracts tftpd-hpa's and
//! links it). Ignored with that reason where one is missing, required in
//! CI.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{content, ip, Killed, Namespaces, TFTP};

/// A server on 127.0.0.1:69 in a namespace of its own, serving (and, where
/// it takes uploads, receiving into) a temporary directory.
struct Peer {
    _server: Killed,
    ns: Namespaces,
    dir: tempfile::TempDir,
}

/// A file the start-up probe fetches, so the test waits for the server to
/// answer rather than for a time.
const PROBE: &str = "probe.txt";

/// Text with every kind of line end: LF, CR LF, a bare CR.
const TEXT: &[u8] = b"one\ntwo\r\nthree\rfour\n\nlast";

impl Peer {
    /// Starts `program args...`, where `{root}` in an argument is the
    /// served directory.
    fn start(tag: &str, program: &str, args: &[&str]) -> Peer {
        let ns = Namespaces::new(tag, &["s"]);
        // An address besides loopback's: tftpd-hpa resolves its `-a` with
        // AI_ADDRCONFIG, which fails where only loopback has one.
        let name = ns.name(0);
        ip(&[
            "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        ip(&["-n", name, "addr", "add", "10.204.0.1/24", "dev", "v0"]);
        ip(&["-n", name, "link", "set", "v0", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        std::fs::write(dir.path().join(PROBE), b"ready").unwrap();
        // Uploads create files as root, in a directory others may write
        // to (tftpd-hpa and atftpd check that).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let args: Vec<String> = args.iter().map(|a| a.replace("{root}", &root)).collect();
        let server = Command::new("ip")
            .args(["netns", "exec", ns.name(0), program])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let peer = Peer {
            _server: Killed(server),
            ns,
            dir,
        };
        // Each attempt waits one second for an answer (the default first
        // timeout); a server that binds its port within 20 of them answers
        // one.
        let ready = (0..20).any(|_| {
            peer.tftp(&["--retries", "0", "get", "127.0.0.1:69", PROBE, "-"])
                .status
                .success()
        });
        assert!(ready, "{program} did not answer on port 69");
        peer
    }

    /// Runs our `tftp ARGS` in the namespace.
    fn tftp(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name(0), TFTP])
            .args(args)
            .output()
            .expect("run tftp")
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Downloads `name` with `options` and checks the bytes against the
    /// served file.
    fn get_same(&self, options: &[&str], name: &str) {
        let out = tempfile::tempdir().unwrap();
        let local = out.path().join(name);
        let mut args = options.to_vec();
        args.extend(["get", "127.0.0.1:69", name, local.to_str().unwrap()]);
        let result = self.tftp(&args);
        assert!(result.status.success(), "tftp {args:?}: {result:?}");
        assert!(
            std::fs::read(&local).unwrap() == std::fs::read(self.path(name)).unwrap(),
            "tftp {args:?}: the bytes differ"
        );
    }

    /// Uploads `local` as `remote` with `options` and checks the bytes the
    /// server wrote.
    fn put_same(&self, options: &[&str], local: &Path, remote: &str) {
        let mut args = options.to_vec();
        args.extend(["put", "127.0.0.1:69", local.to_str().unwrap(), remote]);
        let result = self.tftp(&args);
        assert!(result.status.success(), "tftp {args:?}: {result:?}");
        assert!(
            std::fs::read(self.path(remote)).unwrap() == std::fs::read(local).unwrap(),
            "tftp {args:?}: the bytes differ"
        );
    }

    /// What every server is checked for: downloads in lock-step, with
    /// options, with the largest block and in netascii, and a missing file.
    fn downloads(&self) {
        std::fs::write(self.path("f.bin"), content(300_001)).unwrap();
        std::fs::write(self.path("even.bin"), content(512 * 40)).unwrap();
        std::fs::write(self.path("text.txt"), TEXT).unwrap();
        self.get_same(&[], "f.bin");
        // The last block empty: a file of whole blocks.
        self.get_same(&[], "even.bin");
        // A window the server may not grant (tftpd-hpa and dnsmasq leave
        // windowsize out of their OACK): the client falls back to lock-step.
        self.get_same(&["-b", "1468", "-w", "8", "--tsize"], "f.bin");
        self.get_same(&["-b", "65464"], "f.bin");
        self.get_same(&["--mode", "netascii"], "text.txt");
        let missing = self.tftp(&["get", "127.0.0.1:69", "missing.bin", "-"]);
        assert!(!missing.status.success());
        let stderr = String::from_utf8_lossy(&missing.stderr);
        assert!(stderr.contains("error 1"), "{stderr}");
    }

    /// Uploads, for a server that takes them.
    fn uploads(&self) {
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("up.bin");
        std::fs::write(&file, content(200_003)).unwrap();
        self.put_same(&[], &file, "up-plain.bin");
        self.put_same(&["-b", "1468", "--tsize"], &file, "up-options.bin");
        let text = src.path().join("up.txt");
        std::fs::write(&text, TEXT).unwrap();
        self.put_same(&["--mode", "netascii"], &text, "up.txt");
    }
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_tftpd_hpa)),
    ignore = "needs root, ip (iproute2) and in.tftpd-hpa (tftpd-hpa's in.tftpd: see .ci/run)"
)]
fn tftpd_hpa() {
    let peer = Peer::start(
        "hpa",
        "in.tftpd-hpa",
        &[
            "-L",
            "-a",
            "127.0.0.1:69",
            "-c",
            "-s",
            "-u",
            "root",
            "{root}",
        ],
    );
    peer.downloads();
    peer.uploads();
    // 65 536 blocks of 512 bytes and more: the block number wraps to 0
    // (tftpd-hpa's rollover) going down and coming up.
    std::fs::write(peer.path("rollover.bin"), content(512 * 65_536 + 1_000)).unwrap();
    peer.get_same(&[], "rollover.bin");
    peer.put_same(&[], &peer.path("rollover.bin"), "rollover-up.bin");
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_atftpd)),
    ignore = "needs root, ip (iproute2) and atftpd (apt-get install atftpd)"
)]
fn atftpd() {
    let peer = Peer::start(
        "atftpd",
        "atftpd",
        &[
            "--daemon",
            "--no-fork",
            "--port",
            "69",
            "--bind-address",
            "127.0.0.1",
            "--user",
            "root",
            "--group",
            "root",
            "--logfile",
            "/dev/null",
            "{root}",
        ],
    );
    peer.downloads();
    peer.uploads();
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_dnsmasq)),
    ignore = "needs root, ip (iproute2) and dnsmasq (apt-get install dnsmasq-base)"
)]
fn dnsmasq() {
    let peer = Peer::start(
        "dnsmasq",
        "dnsmasq",
        &[
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--enable-tftp",
            "--tftp-root={root}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
        ],
    );
    peer.downloads();
    // dnsmasq serves, never receives: an upload fails, and says so.
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("up.bin");
    std::fs::write(&file, content(1_000)).unwrap();
    let refused = peer.tftp(&["put", "127.0.0.1:69", file.to_str().unwrap(), "up.bin"]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(!peer.path("up.bin").exists());
}
