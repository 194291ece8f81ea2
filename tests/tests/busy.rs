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
    if common::adapters::single_port() {
        // No transfer socket is needed: served from the listening socket.
        let client = Raw::new();
        client.send(server.addr, &common::rrq("f", &[]));
        let (reply, from) = client.recv();
        assert_eq!(from, server.addr, "{}: from the listening socket", A::NAME);
        assert_eq!(&reply[..], b"\0\x03\0\x01hello", "{}", A::NAME);
        client.send(from, &common::ack(1));
        server.stop();
        return;
    }
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

/// A handler's "busy" answer (DirHandler's when its file cannot open for
/// want of descriptors) is asked again, evenly within `DESCRIPTOR_WAIT`:
/// a handler busy for a while serves the request after all; one busy for
/// longer is heard by the client, but not before the wait is over.
fn a_busy_handler_is_asked_again_within_descriptor_wait<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    let name = format!("busy3-{}", common::adapters::label::<A>());
    let got = Raw::new().get_small(server.addr, &name);
    assert_eq!(got, Ok(name.clone().into_bytes()), "{}", A::NAME);
    assert_eq!(common::adapters::busy_calls(&name), 4, "{}", A::NAME);

    let name = format!("busy-{}", common::adapters::label::<A>());
    let started = std::time::Instant::now();
    let client = Raw::new();
    client.send(server.addr, &common::rrq(&name, &[]));
    let (reply, _) = client.recv();
    let waited = started.elapsed();
    assert_eq!(&reply[..4], &[0, 5, 0, 0], "{}: ERROR 0", A::NAME);
    assert_eq!(&reply[4..reply.len() - 1], tftp_io::SOCKET_ERROR.as_bytes());
    assert!(
        waited >= tftp_io::DESCRIPTOR_WAIT,
        "{}: answered after {waited:?}, before the wait was over",
        A::NAME
    );
    // The first try and DESCRIPTOR_TRIES more, DESCRIPTOR_WAIT /
    // DESCRIPTOR_TRIES apart: a try at the edge, none past it.
    let tries = 1 + tftp_io::DESCRIPTOR_TRIES as usize;
    assert_eq!(common::adapters::busy_calls(&name), tries, "{}", A::NAME);
    server.stop();
}

for_each_adapter!(a_busy_handler_is_asked_again_within_descriptor_wait);

/// tftp-blocking: a session whose thread cannot start (here: a stack no
/// system can map) is refused with ERROR 0 "busy" from the listening
/// socket, and the accept loop goes on answering.
#[test]
fn blocking_thread_spawn_failure_means_busy_and_the_server_goes_on() {
    let root = common::root(&[("f", b"hello")]);
    let server =
        tftp_blocking::Server::builder(tftp_blocking::DirHandler::new(root.path()).unwrap())
            .listen("127.0.0.1:0".parse().unwrap())
            .session_stack_size(1 << 50)
            .bind()
            .unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.serve());
    for _ in 0..3 {
        let client = Raw::new();
        client.send(addr, &common::rrq("f", &[]));
        let (reply, from) = client.recv();
        assert_eq!(from, addr, "from the listening socket");
        assert_eq!(&reply[..4], &[0, 5, 0, 0], "ERROR 0: {reply:?}");
        assert!(String::from_utf8_lossy(&reply[4..]).contains("busy"));
    }
    let stats = handle.stats();
    assert_eq!(stats.sessions_started, 3);
    assert_eq!(stats.sessions_failed, 3, "counted as lost");
    assert_eq!(stats.sessions_active, 0);
    handle.shutdown();
    serving.join().unwrap().unwrap();
}
