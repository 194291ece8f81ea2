//! The framework API on every runtime: handler errors reach the client as the
//! right ERROR, per-request option narrowing, generated content, streams of
//! unknown length, uploads, a slow handler that delays only its own client,
//! and the statistics callbacks.

mod common;

use std::time::Duration;

use common::adapters::{Adapter, Cfg, Opts};
use tftp_proto::packet::ErrorCode;
use tftp_proto::stats::Outcome;

fn generated_content_and_streams<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    let (got, _) = A::get(server.addr, "config", Opts::default()).unwrap();
    assert_eq!(got, b"client=127.0.0.1\n");
    let o = Opts {
        blksize: Some(1468),
        windowsize: Some(8),
        tsize: true,
        ..Opts::default()
    };
    let (got, stats) = A::get(server.addr, "stream", o).unwrap();
    assert_eq!(got, common::content(30_000, 5));
    assert_eq!(
        stats.options_negotiated.tsize, None,
        "unknown length: no tsize"
    );
    assert_eq!(stats.options_negotiated.blksize, Some(1468));
    server.stop();
}

fn handler_errors_reach_the_client<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    for (file, code, message) in [
        ("missing", ErrorCode::FileNotFound, "File not found"),
        ("secret", ErrorCode::AccessViolation, "Go away"),
    ] {
        match A::get(
            server.addr,
            file,
            Opts {
                blksize: Some(1024),
                ..Opts::default()
            },
        ) {
            Err(tftp_blocking::ClientError::Server {
                code: c,
                message: m,
                ..
            }) => {
                assert_eq!(c, code, "{}", A::NAME);
                assert_eq!(m, message);
            }
            other => panic!("{} {file}: {other:?}", A::NAME),
        }
    }
    let err = A::put(server.addr, "elsewhere", b"data", Opts::default()).unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::DiskFull));
    server.stop();
}

fn per_request_narrowing<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    let (got, stats) = A::get(
        server.addr,
        "narrow",
        Opts {
            blksize: Some(1468),
            ..Opts::default()
        },
    )
    .unwrap();
    assert_eq!(stats.options_negotiated.blksize, Some(1024));
    assert_eq!(got, common::content(5000, 6));
    let o = Opts {
        blksize: Some(1468),
        windowsize: Some(4),
        tsize: true,
        ..Opts::default()
    };
    let (got, stats) = A::get(server.addr, "plain", o).unwrap();
    assert!(
        stats.options_negotiated.is_empty(),
        "options off: RFC 1350 answer"
    );
    assert_eq!(got, common::content(5000, 7));
    server.stop();
}

fn uploads_reach_the_sink<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    let data = common::content(100_000, 9);
    let o = Opts {
        blksize: Some(1468),
        windowsize: Some(16),
        tsize: true,
        ..Opts::default()
    };
    let stats = A::put(server.addr, "upload", &data, o).unwrap();
    assert_eq!(stats.outcome, Some(Outcome::Completed));
    assert_eq!(stats.options_negotiated.tsize, Some(100_000));
    assert!(*server.uploads.lock().unwrap() == data);
    server.stop();
}

/// A handler that has not answered yet (`slow`, held at the gate) holds
/// only its own client: a request that arrives while it is held is served
/// meanwhile. Were handlers run one at a time, the second request would
/// wait for the release, which comes only after it was served.
fn slow_handler_delays_only_its_client<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    let addr = server.addr;
    let slow = std::thread::spawn(move || A::get(addr, "slow", Opts::default()));
    server.gate.wait_entered(Duration::from_secs(10));
    let (fast_tx, fast_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = fast_tx.send(A::get(addr, "config", Opts::default()));
    });
    let fast = fast_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{}: the fast request waited for the slow handler", A::NAME));
    let (got, _) = fast.unwrap();
    assert_eq!(got, b"client=127.0.0.1\n");
    assert!(
        !slow.is_finished(),
        "{}: the slow one was not held",
        A::NAME
    );
    server.gate.release();
    let (slow_got, _) = slow.join().unwrap().unwrap();
    assert_eq!(slow_got, b"slow");
    server.stop();
}

fn statistics_callbacks<A: Adapter>() {
    let cfg = Cfg {
        stats_interval: Some(Duration::from_millis(20)),
        ..Cfg::default()
    };
    let server = A::serve_dynamic(&cfg);
    A::get(server.addr, "config", Opts::default()).unwrap();
    let _ = A::get(server.addr, "missing", Opts::default());
    let report = server.wait_periodic(|s| s.sessions_completed + s.sessions_failed == 2);
    assert_eq!(report.sessions_started, 2);
    assert_eq!(report.sessions_completed, 1);
    assert_eq!(report.sessions_failed, 1);
    assert_eq!(report.errors_by_code[1], 1);
    assert_eq!(report.sessions_active, 0);
    let sessions = std::sync::Arc::clone(&server.sessions);
    let counters = server.stats();
    server.stop();
    let sessions = sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{}", A::NAME);
    let ok = sessions.iter().find(|s| s.filename == b"config").unwrap();
    assert_eq!(ok.outcome, Some(Outcome::Completed));
    assert_eq!(ok.bytes_sent, 17);
    assert!(ok.local.is_some());
    let failed = sessions.iter().find(|s| s.filename == b"missing").unwrap();
    assert_eq!(failed.error.as_ref().unwrap().code, ErrorCode::FileNotFound);
    assert_eq!(counters, report);
}

/// `Fallback`: a read the first handler answers ERROR 1 goes to the
/// second; what the first has, or refuses otherwise, stays with it; writes
/// go to the first alone.
fn fallback_asks_the_second_for_what_the_first_lacks<A: Adapter>() {
    let first = common::root(&[("both", b"first"), ("only-first", b"1")]);
    let then = common::root(&[("both", b"then"), ("only-then", b"2")]);
    let cfg = Cfg {
        fallback: Some(then.path().to_path_buf()),
        allow_write: true, // the first only
        ..Cfg::default()
    };
    let server = A::serve_dir(first.path(), &cfg);
    let raw = common::Raw::new();
    assert_eq!(raw.get_small(server.addr, "both"), Ok(b"first".to_vec()));
    assert_eq!(raw.get_small(server.addr, "only-first"), Ok(b"1".to_vec()));
    assert_eq!(raw.get_small(server.addr, "only-then"), Ok(b"2".to_vec()));
    assert_eq!(raw.get_small(server.addr, "neither"), Err(1), "{}", A::NAME);
    // The first takes uploads, the second refuses them: an upload lands
    // in the first; the name the second has is new to the first.
    A::put(server.addr, "only-then", b"up", Opts::default()).unwrap();
    server.stop();
    assert_eq!(
        std::fs::read(first.path().join("only-then")).unwrap(),
        b"up"
    );
    assert_eq!(std::fs::read(then.path().join("only-then")).unwrap(), b"2");
}

/// A source that fails mid-transfer (here after 200 000 bytes, read 1000
/// at a time, ahead of the peer's ACKs or not) ends the transfer with
/// ERROR 0 "Read error" at any block size, lock-step or windowed, and the
/// client keeps nothing past what the source gave.
fn a_failing_source_ends_with_read_error<A: Adapter>() {
    let server = A::serve_dynamic(&Cfg::default());
    for (blksize, windowsize) in [(None, None), (Some(1468), Some(16)), (Some(65464), None)] {
        let o = Opts {
            blksize,
            windowsize,
            ..Opts::default()
        };
        match A::get(server.addr, "broken", o) {
            Err(tftp_blocking::ClientError::Server { code, message, .. }) => {
                assert_eq!(code, ErrorCode::NotDefined, "{} {o:?}", A::NAME);
                assert_eq!(message, tftp_io::READ_ERROR, "{} {o:?}", A::NAME);
            }
            other => panic!("{} {o:?}: {:?}", A::NAME, other.map(|(d, _)| d.len())),
        }
    }
    // Stopped, the server has reported every session.
    let sessions = std::sync::Arc::clone(&server.sessions);
    server.stop();
    let sessions = sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 3, "{}", A::NAME);
    for s in &sessions {
        assert_eq!(
            s.outcome,
            Some(Outcome::LocalError(ErrorCode::NotDefined)),
            "{}",
            A::NAME
        );
        // Every whole block before the failure was sent (a window less at
        // most), nothing after it.
        let o = &s.options_negotiated;
        let blksize = usize::from(o.blksize.unwrap_or(512));
        let window = usize::from(o.windowsize.unwrap_or(1));
        let sent = usize::try_from(s.bytes_sent).unwrap();
        assert!(
            (200_000 - blksize * window..=200_000).contains(&sent),
            "{}: {sent} bytes at blksize {blksize}",
            A::NAME
        );
    }
}

for_each_adapter!(
    a_failing_source_ends_with_read_error,
    fallback_asks_the_second_for_what_the_first_lacks,
    generated_content_and_streams,
    handler_errors_reach_the_client,
    per_request_narrowing,
    uploads_reach_the_sink,
    slow_handler_delays_only_its_client,
    statistics_callbacks,
);
