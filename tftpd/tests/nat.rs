//! `--single-port` through a NAT: a client namespace behind a router
//! namespace that masquerades (nftables, as a home router or a container
//! host does, without the TFTP conntrack helper), a server namespace on the
//! far side. The router forwards only replies from the address and port
//! the client sent to: in the default mode the first DATA comes from a new
//! port and never reaches the client, in single-port mode the transfer
//! completes, in both directions, with options and windows.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); ignored with that
//! reason where one is missing, required in CI.

mod common;

use std::process::Command;

use common::{content, ip, Daemon, Namespaces, TFTP, TFTPD};

/// Three namespaces and two veth pairs, removed on drop:
/// client 10.201.1.2 -- 10.201.1.1 router 10.201.2.1 -- 10.201.2.2 server.
struct Nat {
    _ns: Namespaces,
    client: String,
    router: String,
    server: String,
}

const SERVER: &str = "10.201.2.2";

fn in_ns(ns: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    ip(&all);
}

impl Nat {
    fn new() -> Nat {
        let ns = Namespaces::new("nat", &["c", "r", "s"]);
        let nat = Nat {
            client: ns.name(0).to_owned(),
            router: ns.name(1).to_owned(),
            server: ns.name(2).to_owned(),
            _ns: ns,
        };
        // Interface names are per namespace once moved; made in the client
        // and server namespaces so that nothing appears in the test's own.
        for (ns, dev, peer) in [(&nat.client, "c0", "r1"), (&nat.server, "s0", "r2")] {
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                &nat.router,
            ]);
        }
        for (ns, dev, addr) in [
            (&nat.client, "c0", "10.201.1.2/24"),
            (&nat.router, "r1", "10.201.1.1/24"),
            (&nat.router, "r2", "10.201.2.1/24"),
            (&nat.server, "s0", "10.201.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&[
            "-n",
            &nat.client,
            "route",
            "add",
            "default",
            "via",
            "10.201.1.1",
        ]);
        ip(&[
            "-n",
            &nat.server,
            "route",
            "add",
            "default",
            "via",
            "10.201.2.1",
        ]);
        in_ns(
            &nat.router,
            "sysctl",
            &["-q", "-w", "net.ipv4.ip_forward=1"],
        );
        // Masquerade towards the server; forward only what conntrack
        // knows (replies to what the client sent) back.
        in_ns(
            &nat.router,
            "nft",
            &[
                "add table ip nat; \
                 add chain ip nat masq { type nat hook postrouting priority 100; }; \
                 add rule ip nat masq oifname r2 masquerade; \
                 add table ip filter; \
                 add chain ip filter forwarding { type filter hook forward priority 0; policy drop; }; \
                 add rule ip filter forwarding iifname r1 accept; \
                 add rule ip filter forwarding ct state established,related accept",
            ],
        );
        nat
    }

    /// Runs our `tftp` client in the client namespace.
    fn tftp(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client, TFTP])
            .args(args)
            .output()
            .expect("run tftp")
    }

    /// tftpd in the server namespace on SERVER:69, serving `root`.
    fn tftpd(&self, root: &std::path::Path, extra: &[&str]) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server, TFTPD])
            .arg("--root")
            .arg(root)
            .args(["--listen", &format!("{SERVER}:69"), "--workers", "1"])
            .args(extra);
        Daemon::spawn(cmd)
    }
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_nft)),
    ignore = "needs root, ip (iproute2) and nft (nftables) for its network namespaces"
)]
fn single_port_crosses_a_nat_where_the_default_mode_cannot() {
    let nat = Nat::new();
    let dir = tempfile::tempdir().unwrap();
    let data = content(300_000);
    std::fs::write(dir.path().join("boot.img"), &data).unwrap();
    let out = dir.path().join("got");
    let out = out.to_str().unwrap();

    // Default mode: the request reaches the server, whose DATA from a new
    // port the router drops; the client gives up.
    let mut server = nat.tftpd(dir.path(), &["--retries", "1", "--timeout", "200"]);
    let failed = nat.tftp(&[
        "--retries",
        "1",
        "--timeout",
        "1",
        "get",
        SERVER,
        "boot.img",
        out,
    ]);
    assert!(
        !failed.status.success(),
        "the default mode crossed the NAT: {}",
        String::from_utf8_lossy(&failed.stdout)
    );
    // The request got through; no answer came back.
    let line = server.wait_for("boot.img");
    assert!(line.contains("peer=10.201.2.1:"), "{line}");
    assert!(
        line.contains("timed_out") && line.contains("verified=false"),
        "{line}"
    );
    drop(server);

    // Single-port: the same transfer completes, lock-step and windowed,
    // and an upload too.
    let mut server = nat.tftpd(dir.path(), &["--single-port", "--allow-write"]);
    for extra in [
        &[][..],
        &["--blksize", "1400", "--windowsize", "8", "--tsize"],
    ] {
        let mut args = extra.to_vec();
        args.extend(["get", SERVER, "boot.img", out]);
        let got = nat.tftp(&args);
        assert!(
            got.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(std::fs::read(out).unwrap() == data, "{extra:?}: the bytes");
    }
    let put = nat.tftp(&["--windowsize", "4", "put", SERVER, out, "up.img"]);
    assert!(
        put.status.success(),
        "put: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let line = server.wait_for("up.img");
    assert!(line.contains("completed"), "{line}");
    assert!(std::fs::read(dir.path().join("up.img")).unwrap() == data);
    // The server saw the router's address, not the client's.
    assert!(line.contains("10.201.2.1"), "{line}");
}
