//! A server on the wildcard address answers from the address each request
//! was sent to (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), on every runtime: DATA
//! from the transfer socket and ERRORs from the listening socket alike. A
//! client on a multi-homed host drops anything from another address.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use common::adapters::{Adapter, Cfg};
use common::{ack, Raw};

fn serve_on<A: Adapter>(wildcard: &str, root: &std::path::Path) -> (common::adapters::Served, u16) {
    let socket = UdpSocket::bind(wildcard).unwrap();
    let port = socket.local_addr().unwrap().port();
    let cfg = Cfg {
        listen_socket: Some(Arc::new(socket)),
        ..Cfg::default()
    };
    (A::serve_dir(root, &cfg), port)
}

fn data_comes_from_the_address_asked<A: Adapter>() {
    let root = common::root(&[("f", b"hello")]);
    let (server, port) = serve_on::<A>("0.0.0.0:0", root.path());
    for (from, to) in [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.2"),
        ("127.0.0.2", "127.0.0.2"),
        ("127.0.0.3", "127.0.0.4"),
    ] {
        let client = Raw::on(from);
        let to: IpAddr = to.parse().unwrap();
        client.send(SocketAddr::new(to, port), &common::rrq("f", &[]));
        let (data, tid) = client.recv();
        assert_eq!(&data[..4], &[0, 3, 0, 1], "{} {from} -> {to}", A::NAME);
        assert_eq!(tid.ip(), to, "{} DATA for {from} sent to {to}", A::NAME);
        assert_eq!(
            tid.port() == port,
            common::adapters::single_port(),
            "from a transfer socket, but in single-port mode"
        );
        client.send(tid, &ack(1));
    }
    // The listener's own ERROR (a malformed request) too.
    for to in ["127.0.0.2", "127.0.0.5"] {
        let client = Raw::on("127.0.0.1");
        let to: IpAddr = to.parse().unwrap();
        client.send(SocketAddr::new(to, port), b"\x00\x01f\x00bogus-mode\x00");
        let (error, from) = client.recv();
        assert_eq!(&error[..2], &[0, 5], "{} an ERROR", A::NAME);
        assert_eq!(
            from,
            SocketAddr::new(to, port),
            "{} ERROR sent to {to}",
            A::NAME
        );
    }
    server.stop();
}

fn ipv6_wildcard_answers_from_the_address_asked<A: Adapter>() {
    let root = common::root(&[("f", b"hello")]);
    let (server, port) = serve_on::<A>("[::]:0", root.path());
    let client = Raw::on("[::1]");
    client.send(
        SocketAddr::new("::1".parse().unwrap(), port),
        &common::rrq("f", &[]),
    );
    let (data, tid) = client.recv();
    assert_eq!(&data[..4], &[0, 3, 0, 1]);
    assert_eq!(tid.ip(), "::1".parse::<IpAddr>().unwrap(), "{}", A::NAME);
    client.send(tid, &ack(1));
    server.stop();
}

/// A request sent to a broadcast address is answered from the wildcard
/// address (the kernel picks the interface's own), so the client's ACKs
/// reach the transfer socket and the transfer completes.
fn broadcast_requests_complete<A: Adapter>() {
    let data = common::content(600, 3);
    let root = common::root(&[("f", &data)]);
    let (server, port) = serve_on::<A>("0.0.0.0:0", root.path());
    let client = Raw::on("127.0.0.1");
    client.socket.set_broadcast(true).unwrap();
    let broadcast: IpAddr = "127.255.255.255".parse().unwrap();
    client.send(SocketAddr::new(broadcast, port), &common::rrq("f", &[]));
    let (first, tid) = client.recv();
    assert_eq!(&first[..4], &[0, 3, 0, 1], "{}", A::NAME);
    assert_eq!(tid.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    client.send(tid, &ack(1));
    let (second, from) = client.recv();
    assert_eq!(from, tid);
    assert_eq!(
        &second[..4],
        &[0, 3, 0, 2],
        "{}: ACK 1 reached the server",
        A::NAME
    );
    assert_eq!([&first[4..], &second[4..]].concat(), data);
    client.send(tid, &ack(2));
    server.stop();
}

/// An empty datagram looks like a shut-down socket to the receive path;
/// a flood of them must not stop the listener.
fn empty_datagrams_do_not_stop_the_listener<A: Adapter>() {
    let root = common::root(&[("f", b"hello")]);
    let (server, port) = serve_on::<A>("127.0.0.1:0", root.path());
    let addr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    let client = Raw::new();
    for _ in 0..100 {
        client.send(addr, b"");
    }
    assert_eq!(
        client.get_small(addr, "f").unwrap(),
        b"hello",
        "{}",
        A::NAME
    );
    server.stop();
}

for_each_adapter!(
    broadcast_requests_complete,
    empty_datagrams_do_not_stop_the_listener,
    data_comes_from_the_address_asked,
    ipv6_wildcard_answers_from_the_address_asked,
);
