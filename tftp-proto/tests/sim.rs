//! Deterministic simulation of whole transfers: a client session against a
//! server session through a lossy, duplicating, reordering in-memory network.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tftp_proto::options::{Limits, Rollover, TransferOptions};
use tftp_proto::packet::Mode;
use tftp_proto::stats::Outcome;
use tftp_proto_check::sim::{run, Kind, Netem, Report, Scenario};

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

fn assert_complete(r: &Report, sent: &[u8]) {
    assert!(r.violations.is_empty(), "violations: {:?}", r.violations);
    assert_eq!(
        r.client_outcome,
        Some(Outcome::Completed),
        "client {:?}",
        r.client
    );
    assert_eq!(
        r.server_outcome,
        Some(Outcome::Completed),
        "server {:?}",
        r.server
    );
    assert_eq!(r.received.len(), sent.len());
    assert!(r.received == sent, "received bytes differ");
}

/// Sizes around the block size edges for blksize `b` and window `w`.
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

#[test]
fn clean_transfers_never_retransmit() {
    for kind in [Kind::Get, Kind::Put] {
        for mode in [Mode::Octet, Mode::Netascii] {
            for (b, w) in [(512u16, 1u16), (8, 1), (1468, 16), (8, 64), (65464, 1)] {
                for size in sizes(usize::from(b), usize::from(w)) {
                    let sent = data(size, 7);
                    let mut sc = Scenario::get(sent.clone(), opts(b, w));
                    sc.kind = kind;
                    sc.mode = mode;
                    let r = run(&sc);
                    assert_complete(&r, &sent);
                    let server = r.server.as_ref().unwrap();
                    for st in [&r.client, server] {
                        assert_eq!(
                            st.retransmits, 0,
                            "{kind:?} {mode:?} b={b} w={w} size={size}"
                        );
                        assert_eq!(st.control_retransmits, 0);
                        assert_eq!(st.timeouts, 0);
                    }
                    if mode == Mode::Octet {
                        // Minimum DATA count: one per full block plus the final short one.
                        assert_eq!(r.data_packets, (size / usize::from(b) + 1) as u64);
                    }
                }
            }
        }
    }
}

#[test]
fn rollover_beyond_16_bit_block_numbers() {
    // blksize 8: 65 536 blocks is 512 KiB; go past it.
    let sent = data(8 * 65_536 + 100, 3);
    for w in [1u16, 16] {
        let r = run(&Scenario::get(sent.clone(), opts(8, w)));
        assert_complete(&r, &sent);
        assert_eq!(r.server.unwrap().blocks_sent, 65_536 + 13);
    }
}

/// Both sides rolling over to 1 (the quirk of some firmware) move a file
/// past block 65535 either way; a rule that refuses to roll over ends such
/// a transfer with ERROR 3 after block 65535, and serves a smaller file.
#[test]
fn rollover_rules() {
    let one = Limits {
        rollover: Rollover::One,
        ..Limits::default()
    };
    let refuse = Limits {
        rollover: Rollover::Refuse,
        ..Limits::default()
    };
    let big = data(8 * 65_536 + 100, 4);
    for kind in [Kind::Get, Kind::Put] {
        for w in [1u16, 16] {
            let mut sc = Scenario::get(big.clone(), opts(8, w));
            sc.kind = kind;
            sc.client_limits = one.clone();
            sc.server_limits = one.clone();
            let r = run(&sc);
            assert_complete(&r, &big);
            // Refused by the sending side, or by the receiving one, whether
            // the other side goes on at 0 or at 1.
            for other in [Limits::default(), one.clone()] {
                for refusing_client in [true, false] {
                    let mut sc = Scenario::get(big.clone(), opts(8, w));
                    sc.kind = kind;
                    let (client, server) = if refusing_client {
                        (&refuse, &other)
                    } else {
                        (&other, &refuse)
                    };
                    sc.client_limits = client.clone();
                    sc.server_limits = server.clone();
                    let r = run(&sc);
                    let case = format!(
                        "{kind:?} w={w} client refuses: {refusing_client}, other {:?}",
                        other.rollover
                    );
                    assert_ne!(r.client_outcome, Some(Outcome::Completed), "{case}");
                    assert!(r.received.len() <= 8 * 65_535, "{case}");
                    let refused_by = if refusing_client {
                        &r.client
                    } else {
                        r.server.as_ref().unwrap()
                    };
                    let error = refused_by.error.clone().expect("an ERROR was sent");
                    assert!(!error.from_peer, "{case}: sent, not received");
                    assert_eq!(error.code.as_u16(), 3, "{case}");
                    assert_eq!(error.message, b"File too large for the block numbers");
                }
            }
        }
    }
    // A file of 65534 blocks and a bit (its last is block 65535) is served.
    let fits = data(8 * 65_534 + 3, 5);
    let mut sc = Scenario::get(fits.clone(), opts(8, 1));
    sc.server_limits = refuse.clone();
    assert_complete(&run(&sc), &fits);
}

#[test]
fn server_without_options_falls_back_to_defaults() {
    let sent = data(2000, 1);
    let mut sc = Scenario::get(sent.clone(), opts(1468, 16));
    sc.server_limits.enabled = tftp_proto::options::EnabledOptions::NONE;
    let r = run(&sc);
    assert_complete(&r, &sent);
    assert!(r.client.options_negotiated.is_empty());
    assert_eq!(r.data_packets, 4); // 512-byte blocks
}

/// Virtual round trips one lost DATA adds to a transfer over a 10 ms RTT
/// link that carries a 1468-byte block in 120 µs (~100 Mbit/s).
fn recovery_cost(w: u16, lost: u64) -> f64 {
    let sent = data(1468 * 64, 9);
    let scenario = || {
        let mut sc = Scenario::get(sent.clone(), opts(1468, w));
        sc.to_client.per_packet = Duration::from_micros(120);
        sc
    };
    let clean = run(&scenario());
    let mut sc = scenario();
    sc.drop_data = vec![lost];
    let lossy = run(&sc);
    assert_complete(&lossy, &sent);
    assert_eq!(lossy.dropped, 1);
    let extra = lossy.data_done_at.unwrap() - clean.data_done_at.unwrap();
    extra.as_secs_f64() / 0.010
}

#[test]
fn one_lost_data_costs_a_few_round_trips() {
    // Lock-step: only the timer can tell; it has learned the 10 ms RTT, and
    // the 20 ms floor applies.
    let lock_step = recovery_cost(1, 30);
    // Windowed: the receiver reports the gap at once (block 30 is mid-window).
    let windowed = recovery_cost(16, 30);
    // First block of a window: two duplicate ACKs restart the window.
    let window_head = recovery_cost(16, 33);
    println!("recovery cost in RTTs: lock-step {lock_step:.2}, windowed {windowed:.2}, window head {window_head:.2}");
    assert!(lock_step <= 3.0, "lock-step {lock_step}");
    assert!(windowed <= 2.0, "windowed {windowed}");
    assert!(window_head <= 2.0, "window head {window_head}");
}

#[test]
fn peer_vanishes_then_session_times_out() {
    let sent = data(100_000, 1);
    let mut sc = Scenario::get(sent, opts(512, 4));
    sc.to_server.loss_ppm = 1_000_000; // nothing reaches the server
    let r = run(&sc);
    assert_eq!(r.client_outcome, Some(Outcome::TimedOut));
    assert!(r.server.is_none());
    assert_eq!(r.client.timeouts, u64::from(Limits::default().retries) + 1);
    // Bounded: retries × the RTO ceiling.
    assert!(r.end.since_epoch() <= Duration::from_secs(70));
}

fn lossy(seed: u64, loss_ppm: u32, dup_ppm: u32, jitter_ms: u64) -> Netem {
    let _ = seed;
    Netem {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(jitter_ms),
        loss_ppm,
        dup_ppm,
        per_packet: Duration::from_micros(50),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, rng_seed: RngSeed::Fixed(7440), ..ProptestConfig::default() })]

    /// Any seed, loss up to 20 %, duplication, reordering: the bytes arrive
    /// intact, both sides finish in bounded virtual time, and no DATA beyond
    /// the open window is ever sent.
    #[test]
    fn chaos_transfers_complete(
        seed: u64,
        put: bool,
        netascii: bool,
        shape in prop_oneof![Just((512u16, 1u16)), Just((8, 1)), Just((1468, 16)), Just((8, 64)), Just((100, 4))],
        size_pick in 0usize..9,
        loss_ppm in prop_oneof![Just(0u32), 0u32..=200_000],
        dup_ppm in 0u32..=100_000,
        jitter_ms in 0u64..=20,
    ) {
        let (b, w) = shape;
        let size = sizes(usize::from(b), usize::from(w))[size_pick];
        let sent = data(size, seed as u8);
        let mut sc = Scenario::get(sent.clone(), opts(b, w));
        sc.kind = if put { Kind::Put } else { Kind::Get };
        sc.mode = if netascii { Mode::Netascii } else { Mode::Octet };
        sc.seed = seed;
        sc.to_server = lossy(seed, loss_ppm, dup_ppm, jitter_ms);
        sc.to_client = lossy(seed, loss_ppm, dup_ppm, jitter_ms);
        // Enough retries that 20 % loss cannot exhaust them in practice.
        sc.client_limits.retries = 30;
        sc.server_limits.retries = 30;
        let r = run(&sc);
        prop_assert!(r.violations.is_empty(), "{:?}", r.violations);
        prop_assert!(r.received == sent, "received bytes differ");
        // The receiver always completes. The sender completes too, except in
        // TFTP's final-ACK ambiguity: the receiver's last ACK and all its
        // re-ACKs while dallying were lost, so the sender cannot know.
        let (sender, receiver) = if put { (r.client_outcome, r.server_outcome) } else { (r.server_outcome, r.client_outcome) };
        prop_assert_eq!(receiver, Some(Outcome::Completed));
        prop_assert!(sender == Some(Outcome::Completed) || (sender == Some(Outcome::TimedOut) && loss_ppm > 0), "sender {:?}", sender);
        // Bounded virtual time: even 20 % loss finishes within minutes.
        prop_assert!(r.end.since_epoch() < Duration::from_secs(600), "took {}", r.end);
    }

    /// Loss only: every retransmitted DATA is explained by a loss or a
    /// timeout, each costing at most one window: DATA sent ≤ minimum +
    /// W × (datagrams lost + timeouts).
    #[test]
    fn data_sent_stays_near_minimum(seed: u64, loss_ppm in 0u32..=100_000, w in prop_oneof![Just(1u16), Just(8), Just(16)]) {
        let sent = data(1468 * 40 + 5, seed as u8);
        let mut sc = Scenario::get(sent.clone(), opts(1468, w));
        sc.seed = seed;
        sc.to_server.loss_ppm = loss_ppm;
        sc.to_client.loss_ppm = loss_ppm;
        sc.client_limits.retries = 30;
        sc.server_limits.retries = 30;
        let r = run(&sc);
        prop_assert_eq!(r.client_outcome, Some(Outcome::Completed));
        prop_assert!(r.received == sent);
        let minimum = 41u64;
        let server = r.server.unwrap();
        let bound = minimum + u64::from(w) * (r.dropped + server.timeouts);
        prop_assert!(r.data_packets <= bound, "{} DATA > bound {} (dropped {}, timeouts {})", r.data_packets, bound, r.dropped, server.timeouts);
        if loss_ppm == 0 {
            prop_assert_eq!(r.data_packets, minimum);
        }
    }
}

#[test]
fn a_real_client_whose_first_answers_are_lost_still_gets_verified() {
    // The server's budget before verification is 4 datagrams: a client that
    // answers each of them gets in even when its first three answers (ACK 1,
    // ACK 0 to an OACK, or DATA 1 of an upload) are lost.
    for kind in [Kind::Get, Kind::Put] {
        for options in [TransferOptions::default(), opts(1468, 8)] {
            for lost in [vec![2], vec![2, 3], vec![2, 3, 4]] {
                let sent = data(20_000, 3);
                let mut sc = Scenario::get(sent.clone(), options);
                sc.kind = kind;
                sc.drop_client = lost.clone();
                let r = run(&sc);
                assert_complete(&r, &sent);
                let server = r.server.as_ref().unwrap();
                assert!(server.verified, "{kind:?} {options:?} lost {lost:?}");
                assert_eq!(r.dropped, lost.len() as u64);
            }
        }
    }
}
