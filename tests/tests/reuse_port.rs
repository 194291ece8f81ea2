//! `reuse_port(n)` on every runtime: n listening sockets share one port
//! (`SO_REUSEPORT`), and requests spread over them are all served.

mod common;

use common::adapters::{Adapter, Cfg, Opts};

fn reuse_port_binds_and_serves<A: Adapter>() {
    let data = common::content(5000, 22);
    let dir = common::root(&[("f.bin", &data)]);
    let cfg = Cfg {
        reuse_port: 3,
        ..Cfg::default()
    };
    let server = A::serve_dir(dir.path(), &cfg);
    assert_eq!(server.addrs.len(), 3, "{}: {:?}", A::NAME, server.addrs);
    assert!(
        server.addrs.iter().all(|a| *a == server.addr),
        "{}: one address and port for all: {:?}",
        A::NAME,
        server.addrs
    );
    for _ in 0..12 {
        let (got, _) = A::get(server.addr, "f.bin", Opts::default()).expect("get");
        assert_eq!(got, data);
    }
    // Each session is counted when the server side ends (after the
    // client's last ACK).
    server.wait_sessions(12, std::time::Duration::from_secs(5));
    assert_eq!(server.stats().sessions_completed, 12, "{}", A::NAME);
    server.stop();
}

for_each_adapter!(reuse_port_binds_and_serves);
