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

use common::{content, Daemon, TFTP, TFTPD};

/// Three namespaces and two veth pairs, removed on drop:
/// client 10.201.1.2 -- 10.201.1.1 router 10.201.2.1 -- 10.201.2.2 server.
struct Nat {
    client: String,
    router: String,
    server: String,
}

const SERVER: &str = "10.201.2.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    ip(&all);
}

impl Nat {
    fn new(tag: &str) -> Nat {
        let id = format!("{}{tag}", std::process::id());
        let nat = Nat {
            client: format!("tftpnat-c{id}"),
            router: format!("tftpnat-r{id}"),
            server: format!("tftpnat-s{id}"),
        };
        for ns in [&nat.client, &nat.router, &nat.server] {
            ip(&["netns", "add", ns]);
            in_ns(ns, "ip", &["link", "set", "lo", "up"]);
        }
        // Interface names are per namespace once moved; made in the client
        // and server namespaces so that nothing appears in the test's own.
        in_ns(
            &nat.client,
            "ip",
            &[
                "link",
                "add",
                "c0",
                "type",
                "veth",
                "peer",
                "name",
                "r1",
                "netns",
                &nat.router,
            ],
        );
        in_ns(
            &nat.server,
            "ip",
            &[
                "link",
                "add",
                "s0",
                "type",
                "veth",
                "peer",
                "name",
                "r2",
                "netns",
                &nat.router,
            ],
        );
        for (ns, dev, addr) in [
            (&nat.client, "c0", "10.201.1.2/24"),
            (&nat.router, "r1", "10.201.1.1/24"),
            (&nat.router, "r2", "10.201.2.1/24"),
            (&nat.server, "s0", "10.201.2.2/24"),
        ] {
            in_ns(ns, "ip", &["addr", "add", addr, "dev", dev]);
            in_ns(ns, "ip", &["link", "set", dev, "up"]);
        }
        in_ns(
            &nat.client,
            "ip",
            &["route", "add", "default", "via", "10.201.1.1"],
        );
        in_ns(
            &nat.server,
            "ip",
            &["route", "add", "default", "via", "10.201.2.1"],
        );
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

impl Drop for Nat {
    fn drop(&mut self) {
        for ns in [&self.client, &self.router, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
#[cfg_attr(
    not(all(root, has_ip, has_nft)),
    ignore = "needs root, ip (iproute2) and nft (nftables) for its network namespaces"
)]
fn single_port_crosses_a_nat_where_the_default_mode_cannot() {
    let nat = Nat::new("a");
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
