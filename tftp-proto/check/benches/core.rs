//! Packets per second of the sans-IO core on one core, with no I/O: a
//! server read session (the sender) fed the ACKs a client would send, and a
//! client download (the receiver) fed the DATA a server would send, each
//! lock-step and with windowsize 16, each moving 1 MiB per iteration.
//!
//! `cargo bench -p tftp-proto-check --bench core`; divan prints the time
//! per iteration and, as "items", DATA packets per second.

use core::net::SocketAddr;

use divan::counter::ItemsCount;
use divan::Bencher;
use tftp_proto::client::ClientGet;
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::{encode_data_header, encode_oack, Mode, Packet};
use tftp_proto::server::accept;
use tftp_proto::session::{Batch, Output, Session, Transfer};
use tftp_proto::time::Instant;

fn main() {
    divan::main();
}

const FILE: usize = 1 << 20;
const CASES: [(u16, u16); 4] = [(512, 1), (1468, 1), (1468, 16), (8192, 16)];

fn options(blksize: u16, window: u16) -> TransferOptions {
    TransferOptions {
        blksize: (blksize != 512).then_some(blksize),
        windowsize: (window != 1).then_some(window),
        ..TransferOptions::default()
    }
}

fn blocks(blksize: u16) -> u64 {
    (FILE / usize::from(blksize) + 1) as u64
}

/// One server read of `FILE` bytes, acknowledged window by window.
fn serve(blksize: u16, window: u16, batch: Batch, file: &[u8]) -> u64 {
    let limits = Limits::default();
    let peer: SocketAddr = "10.0.0.1:1069".parse().expect("address");
    let mut req = [0u8; 600];
    let n = tftp_proto::packet::encode_request(
        &mut req,
        false,
        b"f",
        Mode::Octet,
        &options(blksize, window),
    )
    .expect("request");
    let request = accept(&req[..n], peer, &limits).expect("accepted");
    let oack = request.negotiate(&limits, Some(file.len() as u64)).oack;
    let mut session = Transfer::server_read(&request, oack, &limits, Instant::ZERO);
    session.set_batch(batch);
    let mut read = 0;
    let mut last = 0u16;
    let mut packets = 0;
    let mut ack = [0u8, 4, 0, 0];
    loop {
        match session.poll(Instant::ZERO) {
            Output::Transmit {
                bytes,
                segment_size,
                ..
            } => {
                for packet in bytes.chunks(segment_size.max(1)) {
                    if let Ok(Packet::Data { block, .. }) = Packet::parse(packet) {
                        last = block;
                        packets += 1;
                    }
                }
            }
            Output::Fill(buf) => {
                let rest = &file[read..];
                let n = buf.len().min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                read += n;
                session.filled(n);
            }
            Output::Wait(_) => {
                ack[2..].copy_from_slice(&last.to_be_bytes());
                session.handle_datagram(Instant::ZERO, peer, &ack);
            }
            Output::Done(_) => return packets,
            Output::Deliver(_) | Output::Finish => session.delivered(),
            Output::Verified => {}
        }
    }
}

/// One client download of `packets` DATA packets, prepared beforehand.
fn receive(blksize: u16, window: u16, packets: &[Vec<u8>]) -> u64 {
    let limits = Limits::default();
    let listen: SocketAddr = "10.0.0.2:69".parse().expect("address");
    let server: SocketAddr = "10.0.0.2:2069".parse().expect("address");
    let asked = options(blksize, window);
    let mut session =
        Transfer::get(listen, b"f", Mode::Octet, asked, &limits, Instant::ZERO).expect("request");
    let mut delivered = 0u64;
    let mut drain = |session: &mut ClientGet| loop {
        match session.poll(Instant::ZERO) {
            Output::Deliver(bytes) => {
                delivered += bytes.len() as u64;
                session.delivered();
            }
            Output::Finish => session.delivered(),
            Output::Verified => {}
            Output::Transmit { .. } | Output::Fill(_) => {}
            Output::Wait(_) | Output::Done(_) => return,
        }
    };
    drain(&mut session);
    if asked != TransferOptions::default() {
        let mut oack = [0u8; 128];
        let n = encode_oack(&mut oack, &asked).expect("oack");
        session.handle_datagram(Instant::ZERO, server, &oack[..n]);
        drain(&mut session);
    }
    for packet in packets {
        session.handle_datagram(Instant::ZERO, server, packet);
        drain(&mut session);
    }
    assert_eq!(delivered, FILE as u64);
    packets.len() as u64
}

#[divan::bench(args = CASES)]
fn sender(bencher: Bencher<'_, '_>, (blksize, window): (u16, u16)) {
    let file = vec![0x5a; FILE];
    bencher
        .counter(ItemsCount::new(blocks(blksize)))
        .bench(|| serve(blksize, window, Batch::ONE, &file));
}

/// The sender with batching on, as a GSO-capable adapter runs it.
#[divan::bench(args = CASES)]
fn sender_batched(bencher: Bencher<'_, '_>, (blksize, window): (u16, u16)) {
    let file = vec![0x5a; FILE];
    let batch = Batch {
        segments: 64,
        bytes: 65_000,
        max_segment: 65_000,
    };
    bencher
        .counter(ItemsCount::new(blocks(blksize)))
        .bench(|| serve(blksize, window, batch, &file));
}

#[divan::bench(args = CASES)]
fn receiver(bencher: Bencher<'_, '_>, (blksize, window): (u16, u16)) {
    let size = usize::from(blksize);
    let packets: Vec<Vec<u8>> = (0..blocks(blksize))
        .map(|i| {
            let len = if i + 1 == blocks(blksize) {
                FILE % size
            } else {
                size
            };
            let mut p = vec![0x5a; 4 + len];
            encode_data_header(&mut p, (i + 1) as u16).expect("header");
            p
        })
        .collect();
    bencher
        .counter(ItemsCount::new(blocks(blksize)))
        .bench(|| receive(blksize, window, &packets));
}
