//! Real boot firmware in QEMU (TCG) against tftpd on port 69, as a boot LAN
//! has it: a tap link in a network namespace of the test's own (nothing
//! leaves the machine), since QEMU's user network answers port 69 of its
//! host address itself.
//!
//! - U-Boot (Debian's u-boot-qemu, x86_64): `tftpboot` windowed (blksize
//!   1468, windowsize 8) and lock-step (blksize 512); U-Boot's own CRC32 of
//!   the loaded bytes is checked against the file's.
//! - UEFI PXE (Debian's OVMF: EDK2's PXE and MTFTP on virtio-net, dnsmasq
//!   as the DHCPv4 and DHCPv6 server), over IPv4 and then IPv6: each time
//!   its `tsize` probe, which it ends with ERROR 8, then the boot file
//!   fetched whole.
//!
//! - PXELINUX on a BIOS PXE ROM (SeaBIOS and QEMU's iPXE ROM; Debian's
//!   pxelinux and syslinux-common): pxelinux.0, ldlinux.c32, the config
//!   lookups a boot LAN answers "File not found" to (the MAC's, the
//!   client's address in hex, shortened a digit at a time), `default`, and
//!   the kernel it names (`ipxe.lkrn`), which then runs.
//!
//! iPXE's own fetches are `tests/ipxe.rs`. Needs root, `ip` and `qemu-system-x86_64`
//! (ignored without them, see build.rs); without the firmware files or
//! dnsmasq a test skips with the reason, unless `TFTP_INTEROP_REQUIRED=1`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{content, field, ip, Daemon, Killed, Namespaces, TFTPD};

const UBOOT: &str = "/usr/lib/u-boot/qemu-x86_64/u-boot.rom";
/// OVMF's code and variable images: the 4 MiB pair (the only one in later
/// Debian releases), else the 2 MiB one.
const OVMF: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const PXELINUX: &str = "/usr/lib/PXELINUX/pxelinux.0";
const LDLINUX: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
const KERNEL: &str = "/usr/lib/ipxe/ipxe.lkrn";

/// One emulated machine at a time: three TCG guests at once on a small CI
/// machine would each run slower than its bounds allow for.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// TCG is slow and CI machines slower: bounds, not a pace.
const BOOT: Duration = Duration::from_secs(180);
const COMMAND: Duration = Duration::from_secs(120);

/// Whether `paths` exist; if one does not, says so and skips the test
/// (fails it under `TFTP_INTEROP_REQUIRED=1`).
fn present(paths: &[&str], package: &str) -> bool {
    for path in paths {
        if !Path::new(path).exists() {
            assert!(
                std::env::var("TFTP_INTEROP_REQUIRED").as_deref() != Ok("1"),
                "{path} is missing (apt-get install {package})"
            );
            eprintln!("skipped: {path} is missing (apt-get install {package})");
            return false;
        }
    }
    true
}

/// A namespace with a tap device `tap0` at 10.203.0.1/24 and
/// fd00:203::1/64, for QEMU to attach to.
fn tap_namespace(tag: &str) -> Namespaces {
    let ns = Namespaces::new(tag, &["s"]);
    let name = ns.name(0).to_owned();
    ip(&["-n", &name, "tuntap", "add", "tap0", "mode", "tap"]);
    ip(&["-n", &name, "addr", "add", "10.203.0.1/24", "dev", "tap0"]);
    ip(&[
        "-n",
        &name,
        "addr",
        "add",
        "fd00:203::1/64",
        "dev",
        "tap0",
        "nodad",
    ]);
    ip(&["-n", &name, "link", "set", "tap0", "up"]);
    ns
}

/// tftpd on port 69 of 10.203.0.1 and fd00:203::1 in namespace `ns`,
/// serving `root`.
fn tftpd(ns: &str, root: &Path) -> Daemon {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, TFTPD])
        .arg("--root")
        .arg(root)
        .args(["--listen", "10.203.0.1:69", "--listen", "[fd00:203::1]:69"])
        .args(["--workers", "1"]);
    Daemon::spawn(cmd)
}

/// The next tftpd session line for `file` (panics at `deadline`).
fn session_line(d: &mut Daemon, file: &str, deadline: Instant) -> String {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no session for {file}; seen: {:?}", d.seen));
        d.seen.push(line.clone());
        if line.contains("tftpd::session") && line.contains(&format!("file={file} ")) {
            return line;
        }
    }
}

/// QEMU with its serial console on stdin and stdout; killed when dropped.
struct Qemu {
    _child: Killed,
    stdin: ChildStdin,
    output: Receiver<Vec<u8>>,
    /// Console output so far.
    seen: Vec<u8>,
}

impl Qemu {
    fn start(ns: &str, args: &[&str]) -> Qemu {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "qemu-system-x86_64"])
            .args(["-nographic", "-no-reboot", "-m", "512"])
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Qemu {
            _child: Killed(child),
            stdin,
            output,
            seen: Vec::new(),
        }
    }

    /// Waits for `needle` in the output after byte `from`; the offset just
    /// past it.
    fn wait_for(&mut self, needle: &str, from: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.seen[from.min(self.seen.len())..]
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                return from + at + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "no {needle:?} from the firmware; its console:\n{}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Types `command` at U-Boot's prompt and waits for the next prompt;
    /// what the command printed.
    fn run(&mut self, command: &str) -> String {
        let from = self.seen.len();
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        // The echo, then the output, then the next prompt (at a line's
        // start: `crc32` prints `==> `).
        let echoed = self.wait_for(command, from, COMMAND);
        let end = self.wait_for("\n=> ", echoed, COMMAND);
        String::from_utf8_lossy(&self.seen[echoed..end]).into_owned()
    }
}

/// CRC-32 (IEEE), as U-Boot's `crc32` prints it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_qemu)),
    ignore = "needs root, ip (iproute2) and qemu-system-x86_64 (apt-get install qemu-system-x86)"
)]
fn u_boot_loads_a_kernel_windowed_and_lock_step() {
    if !present(&[UBOOT], "u-boot-qemu") {
        return;
    }
    let _one = one_at_a_time();
    let ns = tap_namespace("uboot");
    let dir = tempfile::tempdir().unwrap();
    let kernel = content(2_000_123);
    std::fs::write(dir.path().join("kernel.bin"), &kernel).unwrap();
    let mut d = tftpd(ns.name(0), dir.path());
    let mut qemu = Qemu::start(ns.name(0), &["-bios", UBOOT, "-device", "e1000,netdev=n0"]);
    let at = qemu.wait_for("Hit any key to stop autoboot", 0, BOOT);
    writeln!(qemu.stdin).unwrap();
    qemu.stdin.flush().unwrap();
    qemu.wait_for("=> ", at, BOOT);
    for command in [
        "setenv ipaddr 10.203.0.2",
        "setenv netmask 255.255.255.0",
        "setenv serverip 10.203.0.1",
    ] {
        qemu.run(command);
    }
    let want = format!("==> {:08x}", crc32(&kernel));
    let deadline = Instant::now() + BOOT;
    for (blksize, windowsize, address) in [(1468, 8, "0x2000000"), (512, 1, "0x3000000")] {
        qemu.run(&format!("setenv tftpblocksize {blksize}"));
        qemu.run(&format!("setenv tftpwindowsize {windowsize}"));
        let loaded = qemu.run(&format!("tftpboot {address} kernel.bin"));
        assert!(
            loaded.contains(&format!("Bytes transferred = {}", kernel.len())),
            "{loaded}"
        );
        let crc = qemu.run(&format!("crc32 {address} ${{filesize}}"));
        assert!(crc.contains(&want), "U-Boot's CRC {crc}, the file's {want}");
        let line = session_line(&mut d, "kernel.bin", deadline);
        assert!(line.contains("outcome=completed"), "{line}");
        assert!(
            line.contains(&format!("bytes_sent={} ", kernel.len())),
            "{line}"
        );
        let negotiated = field(&line, "options_negotiated=");
        assert!(negotiated.contains(&format!("blksize={blksize}")), "{line}");
        assert_eq!(
            negotiated.contains("windowsize=8"),
            windowsize == 8,
            "{line}"
        );
        // U-Boot asks the size and a timeout too.
        assert!(
            negotiated.contains(&format!("tsize={}", kernel.len())),
            "{line}"
        );
        assert!(negotiated.contains("timeout="), "{line}");
    }
}

/// dnsmasq as the DHCP server only (no DNS), in `ns`, on tap0, its files
/// in `dir`; killed when dropped.
fn dhcp(ns: &str, dir: &Path, options: &[&str]) -> Killed {
    Killed(
        Command::new("ip")
            .args(["netns", "exec", ns, DNSMASQ])
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--interface=tap0",
                "--bind-interfaces",
                "--dhcp-range=10.203.0.50,10.203.0.99,1h",
            ])
            .args(options)
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    )
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_qemu)),
    ignore = "needs root, ip (iproute2) and qemu-system-x86_64 (apt-get install qemu-system-x86)"
)]
fn uefi_pxe_probes_the_size_then_loads_the_boot_file_over_ipv4_and_ipv6() {
    let ovmf = OVMF
        .into_iter()
        .find(|(code, vars)| Path::new(code).exists() && Path::new(vars).exists());
    let Some((ovmf_code, ovmf_vars)) = ovmf.or_else(|| {
        present(&[OVMF[0].0, OVMF[0].1], "ovmf");
        None
    }) else {
        return;
    };
    if !present(&[DNSMASQ], "dnsmasq-base") {
        return;
    }
    let _one = one_at_a_time();
    let ns = tap_namespace("uefi");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // Not valid EFI images: the firmware loads one, refuses to run it and
    // goes on to its next boot option, PXE over IPv6.
    let nbp = content(300_001);
    std::fs::write(root.join("boot.efi"), &nbp).unwrap();
    let nbp6 = content(200_003);
    std::fs::write(root.join("boot6.efi"), &nbp6).unwrap();
    let vars = dir.path().join("vars.fd");
    std::fs::copy(ovmf_vars, &vars).unwrap();
    let _dhcp = dhcp(
        ns.name(0),
        dir.path(),
        &[
            "--dhcp-boot=boot.efi,,10.203.0.1",
            "--enable-ra",
            "--dhcp-range=fd00:203::50,fd00:203::99,64,1h",
            "--dhcp-option=option6:bootfile-url,tftp://[fd00:203::1]/boot6.efi",
        ],
    );
    let mut d = tftpd(ns.name(0), &root);
    let code = format!("if=pflash,format=raw,readonly=on,file={ovmf_code}");
    let vars = format!("if=pflash,format=raw,file={}", vars.display());
    let mut qemu = Qemu::start(
        ns.name(0),
        &[
            "-machine",
            "q35",
            "-drive",
            &code,
            "-drive",
            &vars,
            // No option ROM: EDK2's own virtio-net driver and PXE stack,
            // not iPXE's.
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ],
    );
    let deadline = Instant::now() + BOOT;
    for (file, size, client) in [
        ("boot.efi", nbp.len(), "peer=10.203.0."),
        ("boot6.efi", nbp6.len(), "peer=[fd00:203::"),
    ] {
        let probe = session_line(&mut d, file, deadline);
        assert!(probe.contains(client), "{probe}");
        assert!(probe.contains("outcome=options_refused"), "{probe}");
        assert!(
            field(&probe, "options_negotiated=").contains(&format!("tsize={size}")),
            "{probe}"
        );
        let load = session_line(&mut d, file, deadline);
        assert!(load.contains(client), "{load}");
        assert!(load.contains("outcome=completed"), "{load}");
        assert!(load.contains(&format!("bytes_sent={size} ")), "{load}");
    }
    let v4 = qemu.wait_for("NBP file downloaded successfully", 0, BOOT);
    qemu.wait_for("NBP file downloaded successfully", v4, BOOT);
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_qemu)),
    ignore = "needs root, ip (iproute2) and qemu-system-x86_64 (apt-get install qemu-system-x86)"
)]
fn pxelinux_finds_its_config_and_boots_its_kernel() {
    if !present(&[PXELINUX], "pxelinux")
        || !present(&[LDLINUX], "syslinux-common")
        || !present(&[KERNEL], "ipxe")
        || !present(&[DNSMASQ], "dnsmasq-base")
    {
        return;
    }
    let _one = one_at_a_time();
    let ns = tap_namespace("pxelinux");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
    for (from, to) in [
        (PXELINUX, "pxelinux.0"),
        (LDLINUX, "ldlinux.c32"),
        (KERNEL, "vmlinuz"),
    ] {
        std::fs::copy(from, root.join(to)).unwrap();
    }
    let config = "DEFAULT k\nLABEL k\n  KERNEL vmlinuz\n";
    std::fs::write(root.join("pxelinux.cfg/default"), config).unwrap();
    let kernel = std::fs::metadata(KERNEL).unwrap().len();
    let _dhcp = dhcp(
        ns.name(0),
        dir.path(),
        &["--dhcp-boot=pxelinux.0,,10.203.0.1"],
    );
    let d = tftpd(ns.name(0), &root);
    let mut qemu = Qemu::start(
        ns.name(0),
        &["-device", "e1000,netdev=n0,mac=52:54:00:12:34:56"],
    );
    let deadline = Instant::now() + BOOT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no kernel fetched; sessions: {lines:#?}"));
        if line.contains("tftpd::session") {
            lines.push(line);
            if lines.last().unwrap().contains("file=vmlinuz ") {
                break;
            }
        }
    }
    let files: Vec<&str> = lines.iter().map(|l| field(l, "file=")).collect();
    // The client's address in hex, as PXELINUX spells it.
    let peer: std::net::SocketAddr = field(&lines[0], "peer=").parse().unwrap();
    let std::net::IpAddr::V4(ip) = peer.ip() else {
        panic!("{peer}")
    };
    let hex: String = ip.octets().iter().map(|b| format!("{b:02X}")).collect();
    let mut want = vec![
        "pxelinux.0".to_owned(),
        "ldlinux.c32".to_owned(),
        "pxelinux.cfg/01-52-54-00-12-34-56".to_owned(),
    ];
    want.extend((1..=8).rev().map(|n| format!("pxelinux.cfg/{}", &hex[..n])));
    want.extend(["pxelinux.cfg/default".to_owned(), "vmlinuz".to_owned()]);
    assert_eq!(files, want, "{lines:#?}");
    for line in &lines {
        if line.contains("file=pxelinux.cfg/0") {
            assert!(line.contains("outcome=refused"), "{line}");
            assert!(line.contains("error_code=1 "), "{line}");
        } else {
            assert!(line.contains("outcome=completed"), "{line}");
        }
    }
    let last = lines.last().unwrap();
    assert!(last.contains(&format!("bytes_sent={kernel} ")), "{last}");
    assert!(
        lines[lines.len() - 2].contains(&format!("bytes_sent={} ", config.len())),
        "{lines:#?}"
    );
    // The kernel runs: PXELINUX says so, then its banner.
    let loaded = qemu.wait_for("Loading vmlinuz... ok", 0, BOOT);
    qemu.wait_for("iPXE", loaded, BOOT);
}
