//! `--per-client-root mac`: two client namespaces on veth links with known
//! MAC addresses, the server in a third. A client whose MAC names a
//! directory (`ROOT/01-aa-bb-cc-dd-ee-ff/`, pxelinux's spelling) is served
//! from it, sealed in it; one without falls back to its IP address's
//! directory; one with no neighbour entry (loopback) gets ROOT.
//!
//! Needs root and `ip` (iproute2); ignored with that reason where one is
//! missing, required in CI.

mod common;

use std::process::Command;

use common::{ip, Daemon, Namespaces, TFTP, TFTPD};

/// server s0 10.202.1.1 -- a0 10.202.1.2 (MAC_A) in A;
/// server s1 10.202.2.1 -- b0 10.202.2.2 (MAC_B) in B.
struct Link {
    ns: Namespaces,
    server: String,
    a: String,
    b: String,
}

fn link() -> Link {
    let ns = Namespaces::new("mac", &["s", "a", "b"]);
    let (server, a, b) = (
        ns.name(0).to_owned(),
        ns.name(1).to_owned(),
        ns.name(2).to_owned(),
    );
    for (client, dev, peer, mac, net) in [
        (&a, "a0", "s0", MAC_A, "10.202.1"),
        (&b, "b0", "s1", MAC_B, "10.202.2"),
    ] {
        ip(&[
            "-n", client, "link", "add", dev, "address", mac, "type", "veth", "peer", "name", peer,
            "netns", &server,
        ]);
        ip(&[
            "-n",
            client,
            "addr",
            "add",
            &format!("{net}.2/24"),
            "dev",
            dev,
        ]);
        ip(&["-n", client, "link", "set", dev, "up"]);
        ip(&[
            "-n",
            &server,
            "addr",
            "add",
            &format!("{net}.1/24"),
            "dev",
            peer,
        ]);
        ip(&["-n", &server, "link", "set", peer, "up"]);
    }
    Link { ns, server, a, b }
}

const MAC_A: &str = "02:00:00:00:01:02";
const MAC_B: &str = "02:00:00:00:02:02";

/// `tftp get SERVER FILE -` in namespace `ns`: the bytes, or the failure.
fn get(ns: &str, server: &str, file: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, TFTP, "get", server, file, "-"])
        .output()
        .expect("run tftp");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
#[cfg_attr(
    not(all(root, has_ip)),
    ignore = "needs root and ip (iproute2) for its network namespaces and veth links"
)]
fn per_client_root_by_mac_then_ip_then_root() {
    let l = link();
    assert_eq!(l.ns.0.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("f"), b"shared").unwrap();
    std::fs::create_dir(root.join("01-02-00-00-00-01-02")).unwrap();
    std::fs::write(root.join("01-02-00-00-00-01-02/f"), b"by mac").unwrap();
    std::fs::create_dir(root.join("10.202.2.2")).unwrap();
    std::fs::write(root.join("10.202.2.2/f"), b"by ip").unwrap();
    // A's IP directory exists too: the MAC's comes first.
    std::fs::create_dir(root.join("10.202.1.2")).unwrap();
    std::fs::write(root.join("10.202.1.2/f"), b"A by ip").unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &l.server, TFTPD])
        .arg("--root")
        .arg(root)
        .args(["--listen", "0.0.0.0:69", "--workers", "1"])
        .args(["--per-client-root", "mac"]);
    let _server = Daemon::spawn(cmd);

    assert_eq!(get(&l.a, "10.202.1.1", "f").unwrap(), b"by mac");
    assert_eq!(get(&l.b, "10.202.2.1", "f").unwrap(), b"by ip");
    // No neighbour entry on loopback: the root.
    assert_eq!(get(&l.server, "127.0.0.1", "f").unwrap(), b"shared");
    // Sealed: nothing above the client's own directory.
    let climbed = get(&l.a, "10.202.1.1", "../f").unwrap_err();
    assert!(climbed.contains("server error 2"), "{climbed}");
    // The MAC changes (a new NIC): its directory no longer matches, the IP's
    // does (once the kernel has learnt the new address).
    ip(&[
        "-n",
        &l.a,
        "link",
        "set",
        "a0",
        "address",
        "02:00:00:00:01:99",
    ]);
    ip(&["-n", &l.server, "neigh", "flush", "dev", "s0"]);
    assert_eq!(get(&l.a, "10.202.1.1", "f").unwrap(), b"A by ip");
}
