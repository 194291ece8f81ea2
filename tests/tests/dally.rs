//! Every runtime's client waits out its dally inside `get`: a server whose
//! final DATA is retransmitted (its ACK was lost) hears the ACK again. With
//! a detached dally (the old tokio client) a current-thread runtime dropped
//! it when `get` returned, and the server timed out.

mod common;

use common::adapters::{Adapter, Opts};
use common::{ack, Raw};

fn client_reacknowledges_a_retransmitted_last_block<A: Adapter>() {
    let listen = Raw::new();
    let addr = listen.socket.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (request, client) = listen.recv();
        assert_eq!(request[..2], [0, 1], "a RRQ");
        let tid = Raw::new();
        let data = b"\x00\x03\x00\x01final block".to_vec();
        tid.send(client, &data);
        let (first, _) = tid.recv();
        assert_eq!(first, ack(1));
        // As if that ACK was lost: the last DATA again.
        tid.send(client, &data);
        let (again, _) = tid.recv();
        assert_eq!(again, ack(1), "the client re-acknowledges while dallying");
    });
    let (got, stats) = A::get(addr, "f", Opts::default()).expect("get");
    assert_eq!(got, b"final block");
    assert_eq!(stats.bytes_received, 11);
    server.join().expect("the scripted server saw both ACKs");
}

for_each_adapter!(client_reacknowledges_a_retransmitted_last_block);
