//! A request that cannot get a transfer socket (ports or descriptors used
//! up) is answered ERROR 0 "Server busy" from the listening socket, on every
//! runtime, instead of silence; the server goes on serving.

mod common;

use common::adapters::{Adapter, Cfg};
use common::Raw;

fn no_transfer_socket_means_busy_from_the_listener<A: Adapter>() {
    let root = common::root(&[("f", b"hello")]);
    // The only transfer port allowed is taken.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = Cfg {
        port_range: Some((port, port)),
        ..Cfg::default()
    };
    let server = A::serve_dir(root.path(), &cfg);
    // A fresh client port each time: a retry from the same port can arrive
    // while the refused session is still registered, and is then dropped
    // as a duplicate request.
    for _ in 0..3 {
        let client = Raw::new();
        client.send(server.addr, &common::rrq("f", &[]));
        let (reply, from) = client.recv();
        assert_eq!(from, server.addr, "{}: from the listening socket", A::NAME);
        assert_eq!(&reply[..4], &[0, 5, 0, 0], "{}: ERROR 0", A::NAME);
        assert!(
            String::from_utf8_lossy(&reply[4..]).contains("busy"),
            "{}: {reply:?}",
            A::NAME
        );
    }
    // Once the port is free, the same server serves.
    drop(taken);
    assert_eq!(Raw::new().get_small(server.addr, "f").unwrap(), b"hello");
    server.stop();
}

for_each_adapter!(no_transfer_socket_means_busy_from_the_listener);
