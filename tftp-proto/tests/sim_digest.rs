//! The wire does not move: seeded simulations (clean, lossy, chaotic), the
//! fuzz harness's session runs (corpus files and seeded random inputs) and
//! a seeded admission run, every datagram sent and every outcome folded
//! into one FNV-1a digest, compared with the value the code printed before a
//! refactor. A change that alters one byte, one send time or one outcome
//! changes the digest: if that change is intended, say so in its commit and
//! update [`EXPECTED`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tftp_proto::options::{EnabledOptions, TransferOptions};
use tftp_proto::packet::Mode;
use tftp_proto::server::{accept, Admission, SessionKey};
use tftp_proto_check::session::session_digest_of;
use tftp_proto_check::sim::{run, Kind, Netem, Scenario};
use tftp_proto_check::Fnv;

/// The digest of the code before the 2026-12 core refactor (commit
/// "tests: wire digest of seeded simulations").
const EXPECTED: u64 = 0x5387_aa83_7f68_af44;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn opts(blksize: u16, windowsize: u16) -> TransferOptions {
    TransferOptions {
        blksize: Some(blksize),
        windowsize: Some(windowsize),
        tsize: Some(0),
        timeout: None,
    }
}

fn sizes(b: usize, w: usize) -> Vec<usize> {
    vec![
        0,
        1,
        b - 1,
        b,
        b + 1,
        3 * b,
        w * b,
        w * b + 1,
        5 * w * b + 7,
    ]
}

fn lossy(loss_ppm: u32, dup_ppm: u32, jitter_ms: u64) -> Netem {
    Netem {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(jitter_ms),
        loss_ppm,
        dup_ppm,
        per_packet: Duration::from_micros(50),
    }
}

fn fold(h: &mut Fnv, sc: &Scenario) {
    let r = run(sc);
    h.write_u64(r.wire.0);
}

fn clean(h: &mut Fnv) {
    for kind in [Kind::Get, Kind::Put] {
        for mode in [Mode::Octet, Mode::Netascii] {
            for (b, w) in [(512u16, 1u16), (8, 1), (1468, 16), (8, 64), (65464, 1)] {
                for size in sizes(usize::from(b), usize::from(w)) {
                    let mut sc = Scenario::get(data(size, 7), opts(b, w));
                    sc.kind = kind;
                    sc.mode = mode;
                    fold(h, &sc);
                }
            }
        }
    }
    // No options on the server; a client asking for none; the peer gone;
    // hand-dropped packets; a timeout option.
    let mut sc = Scenario::get(data(2000, 1), opts(1468, 16));
    sc.server_limits.enabled = EnabledOptions::NONE;
    fold(h, &sc);
    for kind in [Kind::Get, Kind::Put] {
        let mut sc = Scenario::get(data(3000, 2), TransferOptions::default());
        sc.kind = kind;
        fold(h, &sc);
        let mut sc = Scenario::get(data(100_000, 1), opts(512, 4));
        sc.kind = kind;
        sc.to_server.loss_ppm = 1_000_000;
        fold(h, &sc);
        let mut sc = Scenario::get(data(100_000, 1), opts(512, 4));
        sc.kind = kind;
        sc.to_client.loss_ppm = 1_000_000;
        fold(h, &sc);
        let mut timeout = opts(1024, 4);
        timeout.timeout = Some(2);
        let mut sc = Scenario::get(data(50_000, 4), timeout);
        sc.kind = kind;
        sc.to_client.loss_ppm = 100_000;
        sc.seed = 99;
        fold(h, &sc);
        for options in [TransferOptions::default(), opts(1468, 8)] {
            for lost in [
                vec![1],
                vec![2],
                vec![2, 3],
                vec![2, 3, 4],
                vec![1, 2, 3, 4, 5],
            ] {
                let mut sc = Scenario::get(data(20_000, 3), options);
                sc.kind = kind;
                sc.drop_client = lost;
                fold(h, &sc);
            }
        }
        for w in [1u16, 16] {
            for lost in [1u64, 30, 33, 40] {
                let mut sc = Scenario::get(data(1468 * 64, 9), opts(1468, w));
                sc.kind = kind;
                sc.to_client.per_packet = Duration::from_micros(120);
                sc.drop_data = vec![lost];
                fold(h, &sc);
            }
        }
    }
}

fn chaos(h: &mut Fnv) {
    let acc = RefCell::new(Fnv::default());
    let config = Config {
        cases: 1000,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(7440),
        ..Config::default()
    };
    let strategy = (
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just((512u16, 1u16)),
            Just((8, 1)),
            Just((1468, 16)),
            Just((8, 64)),
            Just((100, 4))
        ],
        0usize..9,
        prop_oneof![Just(0u32), 0u32..=200_000],
        0u32..=100_000,
        0u64..=20,
        any::<bool>(),
    );
    TestRunner::new(config)
        .run(
            &strategy,
            |(seed, put, netascii, (b, w), size_pick, loss, dup, jitter, few_retries)| {
                let size = sizes(usize::from(b), usize::from(w))[size_pick];
                let mut sc = Scenario::get(data(size, seed as u8), opts(b, w));
                sc.kind = if put { Kind::Put } else { Kind::Get };
                sc.mode = if netascii {
                    Mode::Netascii
                } else {
                    Mode::Octet
                };
                sc.seed = seed;
                sc.to_server = lossy(loss, dup, jitter);
                sc.to_client = lossy(loss, dup, jitter);
                // Few retries reach the give-up paths too.
                let retries = if few_retries { 2 } else { 30 };
                sc.client_limits.retries = retries;
                sc.server_limits.retries = retries;
                fold(&mut acc.borrow_mut(), &sc);
                Ok(())
            },
        )
        .expect("the runs are not checked here");
    h.write_u64(acc.into_inner().0);
}

fn sessions(h: &mut Fnv) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/session");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("session corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut inputs: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect();
    // Seeded random inputs besides the corpus.
    let mut rng = tftp_proto_check::sim::Rng::new(2347);
    for _ in 0..3000 {
        let len = rng.below(1500) as usize;
        inputs.push((0..len).map(|_| rng.next_u64() as u8).collect());
    }
    for bytes in &inputs {
        h.write_u64(session_digest_of(bytes).unwrap_or(1));
    }
}

fn admission(h: &mut Fnv) {
    let acc = RefCell::new(Fnv::default());
    let config = Config {
        cases: 3000,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(1350),
        ..Config::default()
    };
    let op = prop_oneof![
        5 => (0u8..7, 0u8..4).prop_map(|(peer, port)| (0u8, usize::from(peer) * 4 + usize::from(port))),
        2 => any::<usize>().prop_map(|n| (1u8, n)),
        2 => any::<usize>().prop_map(|n| (2u8, n)),
    ];
    let strategy = (
        0usize..8,
        0usize..4,
        0usize..5,
        prop::collection::vec(op, 0..80),
    );
    TestRunner::new(config)
        .run(&strategy, |(max, per_peer, max_unverified, ops)| {
            let mut h = acc.borrow_mut();
            let mut a = Admission::new(max, per_peer).with_max_unverified(max_unverified);
            let mut keys: Vec<SessionKey> = Vec::new();
            let mut running: BTreeMap<SessionKey, ()> = BTreeMap::new();
            let limits = tftp_proto::options::Limits::default();
            for (kind, n) in ops {
                match kind {
                    0 => {
                        let (p, port) = ((n / 4) as u8, 1000 + (n % 4) as u16);
                        let from: SocketAddr = match p {
                            0..=2 => SocketAddr::from(([192, 0, 2, p + 1], port)),
                            3..=5 => format!("[2001:db8:0:1::{p}]:{port}").parse().unwrap(),
                            _ => format!("[2001:db8:0:2::1]:{port}").parse().unwrap(),
                        };
                        let request = accept(b"\x00\x01f\x00octet\x00", from, &limits).unwrap();
                        match a.admit(&request) {
                            Ok(admitted) => {
                                h.write_debug(&admitted);
                                if let Some(e) = admitted.evicted {
                                    running.remove(&e);
                                }
                                running.insert(admitted.key, ());
                                keys.push(admitted.key);
                            }
                            Err(refusal) => {
                                h.write_debug(&refusal);
                                let mut buf = [0u8; 128];
                                let n = refusal.encode(&mut buf).unwrap_or(0);
                                h.write(&buf[..n]);
                            }
                        }
                    }
                    1 if !running.is_empty() => {
                        let key = *running.keys().nth(n % running.len()).unwrap();
                        a.verify(&key);
                    }
                    2 if !keys.is_empty() => {
                        let key = keys[n % keys.len()];
                        a.release(&key);
                        running.remove(&key);
                    }
                    _ => {}
                }
                h.write_u64(a.running() as u64);
                h.write_u64(a.unverified() as u64);
            }
            Ok(())
        })
        .expect("the runs are not checked here");
    h.write_u64(acc.into_inner().0);
}

#[test]
fn the_wire_is_unchanged() {
    let mut parts = Vec::new();
    for (name, part) in [
        ("clean", clean as fn(&mut Fnv)),
        ("chaos", chaos),
        ("sessions", sessions),
        ("admission", admission),
    ] {
        let mut h = Fnv::default();
        part(&mut h);
        println!("{name}: {:#018x}", h.0);
        parts.push(h.0);
    }
    let mut all = Fnv::default();
    for p in parts {
        all.write_u64(p);
    }
    println!("digest: {:#018x}", all.0);
    assert_eq!(all.0, EXPECTED, "the wire changed: digest {:#018x}", all.0);
}
