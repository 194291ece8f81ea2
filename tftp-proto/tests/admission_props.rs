//! Property test of the admission table under any mix of requests from a
//! few peers, verifications and session ends: the limits always hold, only
//! unverified sessions are ever evicted, an evicted place is free at once
//! (its late release changes nothing), and a request is a duplicate exactly
//! while the latest session of the same request runs unanswered.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tftp_proto::options::Limits;
use tftp_proto::server::{accept, Admission, PeerKey, Refusal, SessionKey};

#[derive(Clone, Debug)]
enum Op {
    /// A request from peer `peer` (0..6: three IPv4 hosts, three addresses
    /// in one IPv6 /64 and one in another), port `port`.
    Admit { peer: u8, port: u8 },
    /// The n-th running session's peer answers.
    Verify(usize),
    /// The n-th running (or evicted) session ends.
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..7, 0u8..4).prop_map(|(peer, port)| Op::Admit { peer, port }),
        2 => any::<usize>().prop_map(Op::Verify),
        2 => any::<usize>().prop_map(Op::Release),
    ]
}

fn peer(n: u8, port: u8) -> SocketAddr {
    let port = 1000 + u16::from(port);
    match n {
        0..=2 => SocketAddr::from(([192, 0, 2, n + 1], port)),
        3..=5 => format!("[2001:db8:0:1::{}]:{port}", n).parse().unwrap(),
        _ => format!("[2001:db8:0:2::1]:{port}").parse().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, rng_seed: RngSeed::Fixed(1350), ..ProptestConfig::default() })]

    #[test]
    fn limits_hold_and_only_unverified_sessions_give_way(
        max_sessions in 0usize..8,
        per_peer in 0usize..4,
        max_unverified in 0usize..5,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut a = Admission::new(max_sessions, per_peer).with_max_unverified(max_unverified);
        // The model: running sessions (key → peer, verified).
        let mut running: BTreeMap<SessionKey, (SocketAddr, bool)> = BTreeMap::new();
        let mut all: Vec<SessionKey> = Vec::new();
        // The latest session admitted for each peer address and port.
        let mut latest: BTreeMap<SocketAddr, SessionKey> = BTreeMap::new();
        let limits = Limits::default();
        for op in ops {
            match op {
                Op::Admit { peer: p, port } => {
                    let from = peer(p, port);
                    let request = accept(b"\x00\x01f\x00octet\x00", from, &limits).unwrap();
                    let duplicate = latest
                        .get(&from)
                        .and_then(|k| running.get(k))
                        .is_some_and(|(_, verified)| !verified);
                    match a.admit(&request) {
                        Ok(admitted) => {
                            prop_assert!(!duplicate, "a duplicate was admitted");
                            if let Some(e) = admitted.evicted {
                                let (_, verified) = running.remove(&e).expect("evicted a running session");
                                prop_assert!(!verified, "a verified session was evicted");
                            }
                            running.insert(admitted.key, (from, false));
                            latest.insert(from, admitted.key);
                            all.push(admitted.key);
                        }
                        Err(Refusal::Duplicate) => prop_assert!(duplicate),
                        Err(Refusal::Busy) => {
                            prop_assert!(!duplicate);
                            // Busy only when a limit is really reached and no
                            // unverified session could make room.
                            let key = PeerKey::of(from.ip());
                            let mine: Vec<bool> = running.values().filter(|(addr, _)| PeerKey::of(addr.ip()) == key).map(|v| v.1).collect();
                            let unverified = running.values().filter(|v| !v.1).count();
                            let zero = max_sessions == 0 || per_peer == 0 || max_unverified == 0;
                            let peer_full = mine.len() >= per_peer && mine.iter().all(|v| *v);
                            let table_full = (running.len() >= max_sessions || unverified >= max_unverified) && unverified == 0;
                            prop_assert!(zero || peer_full || table_full, "busy without cause");
                        }
                    }
                }
                Op::Verify(n) => {
                    if !running.is_empty() {
                        let key = *running.keys().nth(n % running.len()).unwrap();
                        a.verify(&key);
                        running.get_mut(&key).unwrap().1 = true;
                    }
                }
                Op::Release(n) => {
                    if !all.is_empty() {
                        let key = all[n % all.len()];
                        a.release(&key);
                        running.remove(&key);
                    }
                }
            }
            let unverified = running.values().filter(|v| !v.1).count();
            prop_assert_eq!(a.running(), running.len());
            prop_assert_eq!(a.unverified(), unverified);
            prop_assert!(running.len() <= max_sessions);
            prop_assert!(unverified <= max_unverified);
            let mut per: BTreeMap<PeerKey, usize> = BTreeMap::new();
            for (addr, _) in running.values() {
                *per.entry(PeerKey::of(addr.ip())).or_default() += 1;
            }
            prop_assert!(per.values().all(|n| *n <= per_peer));
        }
    }
}
