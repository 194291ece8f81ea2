//! Spoofed requests on every runtime: a session whose client never answers
//! costs a few datagrams and gives its place to a newer request, so a flood
//! of unanswered RRQs from many addresses cannot keep a real client out; the
//! server-wide memory budget narrows windows, then refuses.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::adapters::{Adapter, Cfg, Opts};
use common::{ack, rrq, Raw};
use tftp_proto::options::{Limits, DEFAULT_UNVERIFIED_RETRIES};

/// Every datagram `raw` receives until `quiet` passes without one (bounded
/// by `limit` datagrams).
fn collect(raw: &Raw, quiet: Duration, limit: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    raw.socket.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while got.len() < limit {
        match raw.socket.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(_) => break,
        }
    }
    got
}

/// The request's first answer and `DEFAULT_UNVERIFIED_RETRIES`
/// retransmissions of it (four datagrams with today's default).
fn unanswered_request_costs_four_datagrams<A: Adapter>() {
    let datagrams = 1 + DEFAULT_UNVERIFIED_RETRIES as usize;
    let dir = common::root(&[("f.bin", &common::content(100_000, 3))]);
    // A fast first timer so the whole schedule (1 + 3 retransmissions by
    // default, doubling) fits in well under a second; the RFC's largest timeout is
    // allowed, and asked for, to show it does not apply before verification.
    let limits = Limits {
        initial_rto: Duration::from_millis(40),
        max_timeout: 255,
        ..Limits::default()
    };
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            limits: Some(limits),
            ..Cfg::default()
        },
    );
    for options in [
        &[][..],
        &[
            ("timeout", "255"),
            ("windowsize", "64"),
            ("blksize", "1468"),
        ][..],
    ] {
        let spoofed = Raw::new();
        spoofed.send(server.addr, &rrq("f.bin", options));
        let got = collect(&spoofed, Duration::from_millis(1500), 100);
        assert_eq!(
            got.len(),
            datagrams,
            "{}: {options:?}: {} datagrams",
            A::NAME,
            got.len()
        );
        assert!(
            got.iter().all(|(p, _)| p.len() <= 516),
            "small datagrams only"
        );
        assert!(
            got.windows(2).all(|w| w[0].0 == w[1].0),
            "the same one, resent"
        );
    }
    // A graceful stop waits for both sessions, which end on their own.
    let sessions = std::sync::Arc::clone(&server.sessions);
    server.stop();
    let sessions = sessions.lock().unwrap();
    assert_eq!(sessions.len(), 2, "{}", A::NAME);
    for s in sessions.iter() {
        assert!(!s.verified);
        assert_eq!(s.outcome, Some(tftp_proto::stats::Outcome::TimedOut));
        assert_eq!(s.packets_sent, datagrams as u64);
    }
}

fn evicted_session_goes_silent<A: Adapter>() {
    let dir = common::root(&[("f.bin", &common::content(2000, 3))]);
    // Two places, one of them for an unverified session.
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            max_sessions: 2,
            max_unverified: Some(1),
            ..Cfg::default()
        },
    );
    let first = Raw::on("127.0.0.11");
    first.send(server.addr, &rrq("f.bin", &[]));
    let (data, _) = first.recv();
    assert_eq!(data[..4], [0, 3, 0, 1]);
    // A second unanswered request takes the first one's place at once...
    let second = Raw::on("127.0.0.12");
    second.send(server.addr, &rrq("f.bin", &[]));
    let (data, _) = second.recv();
    assert_eq!(data[..4], [0, 3, 0, 1]);
    // ...so the first never hears again (its retransmission was due at 1 s).
    let more = collect(&first, Duration::from_millis(2500), 10);
    assert!(
        more.is_empty(),
        "{}: evicted session sent {more:?}",
        A::NAME
    );
    assert_eq!(server.stats().sessions_evicted, 1, "{}", A::NAME);
    // A real client still gets the whole file.
    let (got, _) = A::get(server.addr, "f.bin", Opts::default()).unwrap();
    assert_eq!(got, common::content(2000, 3));
    server.stop();
}

fn flood_of_unanswered_requests_does_not_keep_a_real_client_out<A: Adapter>() {
    let file = common::content(300_000, 9);
    let dir = common::root(&[("boot.img", &file)]);
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            max_sessions: 200,
            max_sessions_per_peer: 10,
            ..Cfg::default()
        },
    );
    // 400 requests nobody will answer, from 40 addresses, 10 ports each.
    let spoofers: Vec<Raw> = (0..40)
        .flat_map(|a| (0..10).map(move |_| Raw::on(&format!("127.0.1.{}", a + 10))))
        .collect();
    let request = rrq("boot.img", &[("blksize", "1468"), ("windowsize", "16")]);
    for s in &spoofers {
        s.send(server.addr, &request);
    }
    // Meanwhile a real client downloads, in the middle of the flood.
    let (got, stats) = A::get(
        server.addr,
        "boot.img",
        Opts {
            blksize: Some(1468),
            windowsize: Some(16),
            ..Opts::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: the real client was kept out: {e}", A::NAME));
    assert!(got == file, "{}: content differs", A::NAME);
    assert!(stats.bytes_received as usize == file.len());
    let s = server.stats();
    assert!(s.sessions_evicted > 0, "{}: {s:?}", A::NAME);
    assert_eq!(s.rejected_by_limits, 0, "{}: nobody was refused", A::NAME);
    drop(spoofers);
    server.stop();
}

/// The (blksize, windowsize) an OACK grants.
fn granted(oack: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(&oack[2..]).into_owned();
    let fields: Vec<&str> = text.split('\0').collect();
    let get = |name: &str| -> usize {
        fields
            .iter()
            .position(|f| *f == name)
            .map_or(1, |i| fields[i + 1].parse().unwrap())
    };
    (get("blksize"), get("windowsize"))
}

fn memory_budget_narrows_windows_then_refuses<A: Adapter>() {
    let dir = common::root(&[("f.bin", &common::content(200_000, 5))]);
    let budget = 2 * 1024 * 1024;
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            max_memory: Some(budget),
            ..Cfg::default()
        },
    );
    let asks = [("blksize", "1468"), ("windowsize", "64")];
    // Verified transfers that then stall, until the budget is used up.
    let mut held = Vec::new();
    let mut grants = Vec::new();
    let refused = loop {
        assert!(held.len() < 500, "{}: the budget never ran out", A::NAME);
        let client = Raw::new();
        client.send(server.addr, &rrq("f.bin", &asks));
        let (reply, tid) = client.recv();
        if reply[..2] != [0, 6] {
            break reply;
        }
        client.send(tid, &ack(0));
        grants.push(granted(&reply));
        held.push((client, tid));
    };
    assert_eq!(refused[..4], [0, 5, 0, 0], "{}: {refused:?}", A::NAME);
    assert!(String::from_utf8_lossy(&refused).contains("busy"));
    // The first got all it asked; later ones less (smaller windows, then
    // smaller blocks), and together they stay within the budget.
    assert_eq!(grants[0], (1468, 64), "{}", A::NAME);
    let last = *grants.last().unwrap();
    assert!(last.0 * last.1 < 1468 * 64, "{}: {grants:?}", A::NAME);
    let in_flight: usize = grants.iter().map(|(b, w)| (b + 4) * w).sum();
    assert!(in_flight <= budget, "{}: {in_flight} bytes", A::NAME);
    assert!(grants.len() > 8, "{}: only {} fit", A::NAME, grants.len());
    // The sessions end; their memory comes back.
    for (client, tid) in &held {
        client.send(*tid, &common::error(0, "enough"));
    }
    server.wait_sessions(held.len(), Duration::from_secs(10));
    let again = Raw::new();
    again.send(server.addr, &rrq("f.bin", &asks));
    let (reply, tid) = again.recv();
    assert_eq!(reply[..2], [0, 6], "{}: {reply:?}", A::NAME);
    assert_eq!(
        granted(&reply),
        (1468, 64),
        "{}: memory never came back",
        A::NAME
    );
    again.send(tid, &common::error(0, "enough"));
    server.stop();
}

fn spoofed_requests_hold_no_window_memory<A: Adapter>() {
    let dir = common::root(&[("f.bin", &common::content(200_000, 5))]);
    // Room for about four full 64 KiB windows.
    let server = A::serve_dir(
        dir.path(),
        &Cfg {
            max_memory: Some(2 * 1024 * 1024),
            ..Cfg::default()
        },
    );
    // 200 unanswered requests for the largest windows...
    let greedy = rrq("f.bin", &[("blksize", "65464"), ("windowsize", "64")]);
    let spoofers: Vec<Raw> = (0..200).map(|_| Raw::on("127.0.0.9")).collect();
    for s in &spoofers {
        s.send(server.addr, &greedy);
    }
    for s in &spoofers {
        let (reply, _) = s.recv();
        assert_eq!(reply[..2], [0, 6], "{}: {reply:?}", A::NAME);
    }
    // ...hold no budget: a real client still gets all it asks for.
    let real = Raw::new();
    real.send(
        server.addr,
        &rrq("f.bin", &[("blksize", "1468"), ("windowsize", "64")]),
    );
    let (reply, tid) = real.recv();
    assert_eq!(granted(&reply), (1468, 64), "{}", A::NAME);
    real.send(tid, &ack(0));
    let (data, _) = real.recv();
    assert_eq!(data[..4], [0, 3, 0, 1]);
    real.send(tid, &common::error(0, "enough"));
    drop(spoofers);
    server.stop();
}

for_each_adapter!(
    spoofed_requests_hold_no_window_memory,
    unanswered_request_costs_four_datagrams,
    evicted_session_goes_silent,
    flood_of_unanswered_requests_does_not_keep_a_real_client_out,
    memory_budget_narrows_windows_then_refuses,
);
