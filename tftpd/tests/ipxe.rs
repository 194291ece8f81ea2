//! A real boot ROM: iPXE (Debian's `ipxe.lkrn`) in QEMU (TCG, user
//! networking, where the host's loopback is 10.0.2.2) fetches a script
//! from tftpd over TFTP, and the script has it fetch and boot a kernel
//! from the same tftpd over HTTP (`--http`). The kernel is `ipxe.lkrn`
//! itself, a valid bzImage. Needs `qemu-system-x86_64` (ignored without
//! it, see build.rs) and `/usr/lib/ipxe/ipxe.lkrn` (skipped with the
//! reason without it, unless `TFTP_INTEROP_REQUIRED=1`).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{field, Daemon, Killed};

const IPXE: &str = "/usr/lib/ipxe/ipxe.lkrn";

#[test]
#[cfg_attr(
    not(has_qemu),
    ignore = "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"
)]
fn ipxe_chains_from_tftp_to_a_kernel_over_http() {
    if !std::path::Path::new(IPXE).exists() {
        assert!(
            std::env::var("TFTP_INTEROP_REQUIRED").as_deref() != Ok("1"),
            "{IPXE} is missing (apt-get install ipxe)"
        );
        eprintln!("skipped: {IPXE} is missing (apt-get install ipxe)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = std::fs::read(IPXE).unwrap();
    std::fs::write(dir.path().join("vmlinuz"), &kernel).unwrap();
    let mut d = Daemon::start(dir.path(), &["--http", "127.0.0.1:0"]);
    let http: SocketAddr = field(&d.wait_for("HTTP on"), "addr=").parse().unwrap();
    std::fs::write(
        dir.path().join("boot.ipxe"),
        format!(
            "#!ipxe\nkernel http://10.0.2.2:{}/vmlinuz\nboot\n",
            http.port()
        ),
    )
    .unwrap();
    // ipxe.lkrn runs its initrd as a script.
    let start = dir.path().join("start.ipxe");
    std::fs::write(
        &start,
        format!(
            "#!ipxe\ndhcp\nchain tftp://10.0.2.2:{}/boot.ipxe\n",
            d.port()
        ),
    )
    .unwrap();
    let _qemu = Killed(
        Command::new("qemu-system-x86_64")
            .args([
                "-display",
                "none",
                "-serial",
                "none",
                "-m",
                "256",
                "-no-reboot",
            ])
            .args(["-kernel", IPXE, "-initrd"])
            .arg(&start)
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu"),
    );
    // TCG is slow and CI machines slower: a bound, not a pace.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut tftp = None;
    let mut http = None;
    while http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("iPXE did not fetch both; tftp: {tftp:?}"));
        if line.contains("protocol=\"tftp\"") {
            tftp = Some(line);
        } else if line.contains("protocol=\"http\"") {
            http = Some(line);
        }
    }
    let tftp = tftp.expect("the script came over TFTP first");
    assert!(tftp.contains("file=boot.ipxe"), "{tftp}");
    assert!(tftp.contains("outcome=completed"), "{tftp}");
    let http = http.unwrap();
    assert!(http.contains("file=vmlinuz"), "{http}");
    assert!(http.contains("status=200"), "{http}");
    assert!(http.contains("outcome=completed"), "{http}");
    assert!(
        http.contains(&format!("bytes_sent={}", kernel.len())),
        "{http}"
    );
}
