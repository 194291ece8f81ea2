//! Scripted exchanges with single sessions: handshakes, errors, strangers,
//! retransmission timing, dallying. Each test plays the peer by hand.

use std::net::SocketAddr;
use std::time::Duration;
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::{ErrorCode, Mode};
use tftp_proto::server::{accept, Request, ServerSession};
use tftp_proto::session::{Output, Session, Transfer};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;

const PEER: &str = "192.0.2.7:3000";
const STRANGER: &str = "192.0.2.7:3001";
const SERVER: &str = "192.0.2.1:69";
const SERVER_TID: &str = "192.0.2.1:4000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// What one drain of `poll` produced.
#[derive(Debug, Default)]
struct Drained {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    delivered: Vec<u8>,
    wait: Option<Instant>,
    done: Option<Outcome>,
}

/// Drains `s` at `now`, filling from `source` (advanced as read).
/// A client's download of `f` from [`SERVER`] asking `opts`, at time zero.
fn client_get(opts: TransferOptions) -> Transfer {
    Transfer::get(
        addr(SERVER),
        b"f",
        Mode::Octet,
        opts,
        &Limits::default(),
        ms(0),
    )
    .unwrap()
}

/// [`client_get`] once its RRQ has gone out (at 0 ms).
fn client_asked(opts: TransferOptions) -> Transfer {
    let mut c = client_get(opts);
    drain(&mut c, ms(0), &mut &[][..]);
    c
}

fn drain(s: &mut dyn Session, now: Instant, source: &mut &[u8]) -> Drained {
    let mut d = Drained::default();
    for _ in 0..10_000 {
        match s.poll(now) {
            Output::Transmit { to, bytes, .. } => d.sent.push((to, bytes.to_vec())),
            Output::Fill(buf) => {
                let n = buf.len().min(source.len());
                buf[..n].copy_from_slice(&source[..n]);
                *source = &source[n..];
                s.filled(n);
            }
            Output::Deliver(bytes) => {
                d.delivered.extend_from_slice(bytes);
                s.delivered();
            }
            Output::Finish => s.delivered(),
            Output::Verified => {}
            Output::Wait(t) => {
                d.wait = Some(t);
                return d;
            }
            Output::Done(o) => {
                d.done = Some(o);
                return d;
            }
        }
    }
    panic!("poll never settled");
}

fn request(bytes: &[u8]) -> Request {
    accept(bytes, addr(PEER), &Limits::default()).unwrap()
}

fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 3];
    v.extend_from_slice(&block.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}

fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut v = vec![0, 5];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v
}

fn only(d: &Drained) -> &[u8] {
    assert_eq!(d.sent.len(), 1, "{d:?}");
    &d.sent[0].1
}

#[test]
fn read_with_options_oack_then_data() {
    let req = request(b"\x00\x01f\x00octet\x00blksize\x0010\x00tsize\x000\x00");
    let oack = req.negotiate(&Limits::default(), Some(15)).oack;
    let mut s = Transfer::server_read(&req, oack, &Limits::default(), ms(0));
    let mut src: &[u8] = b"0123456789abcde";
    let d = drain(&mut s, ms(0), &mut src);
    assert_eq!(
        d.sent,
        [(
            addr(PEER),
            b"\x00\x06blksize\x0010\x00tsize\x0015\x00".to_vec()
        )]
    );
    s.handle_datagram(ms(5), addr(PEER), &ack(0));
    let d = drain(&mut s, ms(5), &mut src);
    assert_eq!(only(&d), data(1, b"0123456789"));
    s.handle_datagram(ms(10), addr(PEER), &ack(1));
    let d = drain(&mut s, ms(10), &mut src);
    assert_eq!(only(&d), data(2, b"abcde"));
    s.handle_datagram(ms(15), addr(PEER), &ack(2));
    let d = drain(&mut s, ms(15), &mut src);
    assert_eq!(d.done, Some(Outcome::Completed));
    assert_eq!(s.stats().blocks_sent, 2);
    assert_eq!(s.stats().bytes_sent, 15);
    assert_eq!(s.stats().duration(ms(99)), Duration::from_millis(15));
}

#[test]
fn read_without_options_sends_data_1_at_once() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[7u8; 512];
    let d = drain(&mut s, ms(0), &mut src);
    assert_eq!(only(&d), data(1, &[7u8; 512]));
    s.handle_datagram(ms(1), addr(PEER), &ack(1));
    // 512 bytes exactly: an empty final block.
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(only(&d), data(2, b""));
}

#[test]
fn oack_refused_with_error_8_is_a_clean_probe() {
    let req = request(b"\x00\x01f\x00octet\x00tsize\x000\x00");
    let oack = req.negotiate(&Limits::default(), Some(1000)).oack;
    let mut s = Transfer::server_read(&req, oack, &Limits::default(), ms(0));
    let mut src: &[u8] = &[];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &error(8, "tsize probe"));
    let d = drain(&mut s, ms(1), &mut src);
    assert!(d.sent.is_empty(), "an ERROR is never answered");
    assert_eq!(d.done, Some(Outcome::OptionsRefused));
    assert!(Outcome::OptionsRefused.is_success());
    assert_eq!(s.stats().error.as_ref().unwrap().message, b"tsize probe");
}

#[test]
fn oack_is_retransmitted_then_times_out() {
    let limits = Limits {
        retries: 2,
        initial_rto: Duration::from_millis(100),
        ..Limits::default()
    };
    let req = request(b"\x00\x01f\x00octet\x00blksize\x001024\x00");
    let oack = req.negotiate(&limits, None).oack;
    let mut s = Transfer::server_read(&req, oack, &limits, ms(0));
    let mut src: &[u8] = &[];
    let d = drain(&mut s, ms(0), &mut src);
    assert_eq!(d.wait, Some(ms(100)));
    // A spurious wake-up before the deadline does nothing.
    s.handle_timeout(ms(99));
    assert!(drain(&mut s, ms(99), &mut src).sent.is_empty());
    s.handle_timeout(ms(100));
    let d = drain(&mut s, ms(100), &mut src);
    assert_eq!(only(&d), b"\x00\x06blksize\x001024\x00");
    assert_eq!(d.wait, Some(ms(300)), "backoff doubles the timer");
    s.handle_timeout(ms(300));
    let d = drain(&mut s, ms(300), &mut src);
    assert_eq!(d.sent.len(), 1);
    s.handle_timeout(d.wait.unwrap());
    let d = drain(&mut s, d.wait.unwrap(), &mut src);
    assert_eq!(d.done, Some(Outcome::TimedOut));
    assert_eq!(s.stats().timeouts, 3);
    assert_eq!(s.stats().control_retransmits, 2);
}

#[test]
fn negotiated_timeout_option_sets_the_timer_once_the_peer_answers() {
    let req = request(b"\x00\x01f\x00octet\x00timeout\x003\x00");
    let oack = req.negotiate(&Limits::default(), None).oack;
    let mut s = Transfer::server_read(&req, oack, &Limits::default(), ms(0));
    let mut src: &[u8] = &[7u8; 1000];
    let d = drain(&mut s, ms(0), &mut src);
    // Unverified: the adaptive timer from its 1 s start, not the option.
    assert_eq!(d.wait, Some(ms(1000)));
    assert!(!s.stats().verified);
    s.handle_datagram(ms(10), addr(PEER), &ack(0));
    let d = drain(&mut s, ms(10), &mut src);
    assert!(s.stats().verified);
    assert_eq!(d.wait, Some(ms(3010)), "the negotiated 3 s from DATA 1");
}

/// Plays a silent (spoofed) source: returns the datagrams sent to it and
/// when the session ended.
fn unanswered(s: &mut dyn Session) -> (Vec<Vec<u8>>, Instant) {
    let mut src: &[u8] = &[7u8; 100_000];
    let mut now = ms(0);
    let mut sent = Vec::new();
    for _ in 0..100 {
        let d = drain(s, now, &mut src);
        sent.extend(d.sent.into_iter().map(|(to, b)| {
            assert_eq!(to, addr(PEER));
            b
        }));
        if d.done.is_some() {
            assert_eq!(d.done, Some(Outcome::TimedOut));
            return (sent, now);
        }
        now = d.wait.unwrap();
        s.handle_timeout(now);
    }
    panic!("never ended");
}

#[test]
fn an_unanswered_request_costs_four_datagrams_and_15_s_whatever_it_asked() {
    // The RFC maximum timeout allowed, a large window: none of it counts
    // before the peer answers.
    let limits = Limits {
        max_timeout: 255,
        ..Limits::default()
    };
    let asks: [&[u8]; 4] = [
        b"\x00\x01f\x00octet\x00",
        b"\x00\x01f\x00octet\x00timeout\x00255\x00windowsize\x0064\x00blksize\x001468\x00",
        b"\x00\x02f\x00octet\x00",
        b"\x00\x02f\x00octet\x00timeout\x00255\x00blksize\x0065464\x00",
    ];
    for ask in asks {
        let req = request(ask);
        let mut s = ServerSession::start(&req, &limits, None, Some(100_000), ms(0));
        let (sent, end) = unanswered(&mut s);
        assert_eq!(sent.len(), 4, "{ask:?}");
        assert!(end <= ms(15_000), "{ask:?} ended at {end:?}");
        assert!(
            sent.iter().all(|p| p.len() <= 516),
            "one small datagram each"
        );
        assert!(!s.stats().verified);
    }
}

#[test]
fn the_unverified_lifetime_caps_a_slow_retry_schedule() {
    let limits = Limits {
        initial_rto: Duration::from_secs(5),
        unverified_retries: 10,
        ..Limits::default()
    };
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = ServerSession::start(&req, &limits, None, None, ms(0));
    let (sent, end) = unanswered(&mut s);
    assert_eq!(end, ms(15_000));
    assert_eq!(
        sent.len(),
        2,
        "at 0 and 5 s; the next, at 15 s, is too late"
    );
}

#[test]
fn a_verified_peer_gets_the_full_retry_budget() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let limits = Limits::default();
    let mut s = ServerSession::start(&req, &limits, None, None, ms(0));
    let mut src: &[u8] = &[7u8; 2000];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(5), addr(PEER), &ack(1));
    let mut now = ms(5);
    let mut datagrams = 0;
    loop {
        let d = drain(&mut s, now, &mut src);
        datagrams += d.sent.len();
        if d.done.is_some() {
            break;
        }
        now = d.wait.unwrap();
        s.handle_timeout(now);
    }
    assert_eq!(datagrams, 1 + limits.retries as usize);
}

#[test]
fn a_trickling_peer_is_ended_as_too_slow() {
    // The peer ACKs each 8-byte block 900 ms after it arrives: always inside
    // the (adaptive) timer, so no retry limit ever ends it.
    let limits = Limits::default();
    let req = request(b"\x00\x01f\x00octet\x00blksize\x008\x00");
    let oack = req.negotiate(&limits, None).oack;
    let mut s = Transfer::server_read(&req, oack, &limits, ms(0));
    let mut src: &[u8] = &[7u8; 1_000_000];
    let mut d = drain(&mut s, ms(0), &mut src);
    let mut now = ms(0);
    let mut block = 0u16;
    while d.done.is_none() {
        assert!(now < ms(120_000), "still running at {now:?}");
        let wait = d.wait.expect("waiting");
        let answer = now + Duration::from_millis(900);
        if wait <= answer {
            now = wait;
            s.handle_timeout(now);
        } else {
            now = answer;
            s.handle_datagram(now, addr(PEER), &ack(block));
            block = block.wrapping_add(1);
        }
        d = drain(&mut s, now, &mut src);
    }
    assert_eq!(d.done, Some(Outcome::TimedOut));
    assert_eq!(s.stats().timeouts, 0, "it never missed the timer");
    let error = s.stats().error.clone().unwrap();
    assert_eq!(error.message, b"Transfer too slow");
    // 30 s of grace plus 1/512 s for each byte it moved.
    assert!(now >= ms(30_000) && now < ms(31_000), "ended at {now:?}");
}

#[test]
fn cancel_ends_at_once_without_a_word() {
    let req = request(b"\x00\x01f\x00octet\x00blksize\x001024\x00");
    let mut s = ServerSession::start(&req, &Limits::default(), None, None, ms(0));
    let mut src: &[u8] = &[];
    drain(&mut s, ms(0), &mut src);
    s.cancel();
    let d = drain(&mut s, ms(1), &mut src);
    assert!(d.sent.is_empty());
    assert_eq!(d.done, Some(Outcome::Evicted));
}

#[test]
fn abandon_ends_a_verified_session_without_a_word() {
    // Verified, in the middle of its data.
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = ServerSession::start(&req, &Limits::default(), None, None, ms(0));
    let mut src: &[u8] = &[1u8; 2000];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &ack(1));
    drain(&mut s, ms(1), &mut src);
    assert!(s.stats().verified);
    s.cancel();
    assert!(
        drain(&mut s, ms(2), &mut src).done.is_none(),
        "cancel leaves it"
    );
    s.abandon();
    let d = drain(&mut s, ms(3), &mut src);
    assert!(d.sent.is_empty());
    assert_eq!(d.done, Some(Outcome::Evicted));
    // Closing with an ERROR not yet sent: the ERROR is dropped, the outcome
    // kept.
    let mut s = ServerSession::start(&req, &Limits::default(), None, None, ms(0));
    drain(&mut s, ms(0), &mut src);
    s.abort(ErrorCode::NotDefined, "bye");
    s.abandon();
    let d = drain(&mut s, ms(1), &mut src);
    assert!(d.sent.is_empty(), "{:?}", d.sent);
    assert_eq!(d.done, Some(Outcome::LocalError(ErrorCode::NotDefined)));
    // Done: left alone.
    s.abandon();
    assert_eq!(
        s.stats().outcome,
        Some(Outcome::LocalError(ErrorCode::NotDefined))
    );
}

#[test]
fn abandon_after_the_final_ack_of_an_upload_is_completed() {
    let req = request(b"\x00\x02f\x00octet\x00");
    let mut s = ServerSession::start(&req, &Limits::default(), None, None, ms(0));
    let mut src: &[u8] = &[];
    drain(&mut s, ms(0), &mut src);
    let mut data = vec![0, 3, 0, 1];
    data.extend_from_slice(b"short");
    s.handle_datagram(ms(1), addr(PEER), &data);
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(
        d.sent.last().map(|(_, p)| p.clone()),
        Some(ack(1)),
        "final ACK"
    );
    assert!(d.done.is_none(), "dallying");
    s.abandon();
    let d = drain(&mut s, ms(2), &mut src);
    assert!(d.sent.is_empty());
    assert_eq!(d.done, Some(Outcome::Completed));
}

/// An abort (a shutdown's drain running out) of an upload that is only
/// dallying after its final ACK ends it completed, without an ERROR.
#[test]
fn abort_after_the_final_ack_of_an_upload_is_completed() {
    let req = request(b"\x00\x02f\x00octet\x00");
    let mut s = ServerSession::start(&req, &Limits::default(), None, None, ms(0));
    let mut src: &[u8] = &[];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &data(1, b"short"));
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(d.sent.last().map(|(_, p)| p.clone()), Some(ack(1)));
    assert!(d.done.is_none(), "dallying");
    s.abort(ErrorCode::NotDefined, "shutting down");
    let d = drain(&mut s, ms(2), &mut src);
    assert!(d.sent.is_empty(), "{:?}", d.sent);
    assert_eq!(d.done, Some(Outcome::Completed));
}

#[test]
fn memory_counts_the_window_and_the_netascii_stage() {
    let limits = Limits::default();
    let windowed = request(b"\x00\x01f\x00octet\x00blksize\x001468\x00windowsize\x0016\x00");
    let mut s = ServerSession::start(&windowed, &limits, None, Some(1 << 20), ms(0));
    // Unverified, waiting for ACK 0: no window yet, so a spoofed request
    // holds almost nothing.
    let mut src: &[u8] = &[1u8; 1 << 20];
    drain(&mut s, ms(0), &mut src);
    assert!(s.memory() < 4096, "{}", s.memory());
    s.handle_datagram(ms(1), addr(PEER), &ack(0));
    drain(&mut s, ms(1), &mut src);
    let m = s.memory();
    assert!((16 * 1472..16 * 1472 + 16 * 32 + 2048).contains(&m), "{m}");
    let text = request(b"\x00\x01f\x00netascii\x00blksize\x0065464\x00");
    let mut s = ServerSession::start(&text, &limits, None, None, ms(0));
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &ack(0));
    drain(&mut s, ms(1), &mut src);
    let m = s.memory();
    assert!(
        (65468..=65468 + 4096 + 2048).contains(&m),
        "netascii stage is small: {m}"
    );
    let upload = request(b"\x00\x02f\x00octet\x00blksize\x0065464\x00");
    let s = ServerSession::start(&upload, &limits, None, None, ms(0));
    let m = s.memory();
    assert!(
        (2 * 65464..2 * 65464 + 1024).contains(&m),
        "block + receive buffer: {m}"
    );
}

#[test]
fn stranger_gets_error_5_and_session_is_untouched() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[1u8; 600];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(STRANGER), &ack(1));
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(
        d.sent,
        [(
            addr(STRANGER),
            b"\x00\x05\x00\x05Unknown transfer ID\x00".to_vec()
        )]
    );
    // An ERROR from a stranger is not answered and does not end the session.
    s.handle_datagram(ms(2), addr(STRANGER), &error(0, "x"));
    assert!(drain(&mut s, ms(2), &mut src).sent.is_empty());
    assert_eq!(s.stats().foreign_packets, 2);
    s.handle_datagram(ms(3), addr(PEER), &ack(1));
    let d = drain(&mut s, ms(3), &mut src);
    assert_eq!(only(&d)[..4], [0, 3, 0, 2]);
}

#[test]
fn peer_error_ends_the_session_silently() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[1u8; 600];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &error(3, "Disk full"));
    let d = drain(&mut s, ms(1), &mut src);
    assert!(d.sent.is_empty());
    assert_eq!(d.done, Some(Outcome::PeerError(ErrorCode::DiskFull)));
    // Done is sticky and inputs are ignored.
    s.handle_datagram(ms(2), addr(PEER), &ack(1));
    assert_eq!(
        drain(&mut s, ms(2), &mut src).done,
        Some(Outcome::PeerError(ErrorCode::DiskFull))
    );
}

#[test]
fn write_acks_dallies_and_reacks_the_last_block() {
    let limits = Limits {
        dally: Duration::from_millis(500),
        ..Limits::default()
    };
    let req = request(b"\x00\x02up\x00octet\x00blksize\x008\x00");
    let oack = req.negotiate(&limits, None).oack;
    let mut s = Transfer::server_write(&req, oack, &limits, ms(0));
    let mut src: &[u8] = &[];
    assert_eq!(
        only(&drain(&mut s, ms(0), &mut src)),
        b"\x00\x06blksize\x008\x00"
    );
    s.handle_datagram(ms(1), addr(PEER), &data(1, b"abcdefgh"));
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(d.delivered, b"abcdefgh");
    assert_eq!(only(&d), ack(1));
    // A duplicate of block 1 (our ACK was lost) is re-acknowledged.
    s.handle_datagram(ms(2), addr(PEER), &data(1, b"abcdefgh"));
    let d = drain(&mut s, ms(2), &mut src);
    assert!(d.delivered.is_empty());
    assert_eq!(only(&d), ack(1));
    s.handle_datagram(ms(3), addr(PEER), &data(2, b"ef"));
    let d = drain(&mut s, ms(3), &mut src);
    assert_eq!(d.delivered, b"ef");
    assert_eq!(only(&d), ack(2));
    assert_eq!(d.wait, Some(ms(503)));
    assert!(s.is_transfer_complete());
    s.handle_datagram(ms(100), addr(PEER), &data(2, b"ef"));
    assert_eq!(only(&drain(&mut s, ms(100), &mut src)), ack(2));
    s.handle_timeout(ms(503));
    assert_eq!(
        drain(&mut s, ms(503), &mut src).done,
        Some(Outcome::Completed)
    );
    assert_eq!(s.stats().duplicate_data, 2);
}

/// A client that negotiated a `timeout` above the RTO ceiling re-sends its
/// last DATA only after that long: the server, dallying after its final
/// ACK, is still there to answer it.
#[test]
fn the_final_ack_outlasts_a_negotiated_timeout() {
    let limits = Limits {
        max_timeout: 60,
        ..Limits::default()
    };
    assert!(limits.max_rto < Duration::from_secs(30));
    let req = request(b"\x00\x02up\x00octet\x00timeout\x0030\x00");
    let oack = req.negotiate(&limits, None).oack;
    let mut s = Transfer::server_write(&req, oack, &limits, ms(0));
    let mut src: &[u8] = &[];
    assert_eq!(
        only(&drain(&mut s, ms(0), &mut src)),
        b"\x00\x06timeout\x0030\x00"
    );
    s.handle_datagram(ms(1), addr(PEER), &data(1, b"last"));
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(only(&d), ack(1));
    assert_eq!(d.wait, Some(ms(1 + 60_000)), "twice the timeout");
    // The final ACK was lost: the client's timer fires 30 s on.
    s.handle_datagram(ms(30_002), addr(PEER), &data(1, b"last"));
    let d = drain(&mut s, ms(30_002), &mut src);
    assert_eq!(only(&d), ack(1));
    assert!(d.done.is_none());
}

#[test]
fn write_without_options_acks_0() {
    let req = request(b"\x00\x02up\x00octet\x00");
    let mut s = Transfer::server_write(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[];
    assert_eq!(only(&drain(&mut s, ms(0), &mut src)), ack(0));
}

#[test]
fn write_limits_oversized_block_and_transfer() {
    let req = request(b"\x00\x02up\x00octet\x00");
    let mut s = Transfer::server_write(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[];
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &data(1, &[0u8; 513]));
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(only(&d)[..4], [0, 5, 0, 4]);
    assert_eq!(
        d.done,
        Some(Outcome::LocalError(ErrorCode::IllegalOperation))
    );

    let limits = Limits {
        max_transfer_blocks: 1,
        ..Limits::default()
    };
    let mut s = Transfer::server_write(&req, TransferOptions::default(), &limits, ms(0));
    drain(&mut s, ms(0), &mut src);
    s.handle_datagram(ms(1), addr(PEER), &data(1, &[0u8; 512]));
    drain(&mut s, ms(1), &mut src);
    s.handle_datagram(ms(2), addr(PEER), &data(2, b"x"));
    let d = drain(&mut s, ms(2), &mut src);
    assert_eq!(only(&d)[..4], [0, 5, 0, 3]);
    assert_eq!(d.done, Some(Outcome::LocalError(ErrorCode::DiskFull)));
}

#[test]
fn abort_sends_an_error_and_ends() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[1u8; 600];
    drain(&mut s, ms(0), &mut src);
    s.abort(ErrorCode::NotDefined, "read error");
    let d = drain(&mut s, ms(1), &mut src);
    assert_eq!(only(&d), error(0, "read error"));
    assert_eq!(d.done, Some(Outcome::LocalError(ErrorCode::NotDefined)));
}

#[test]
fn client_get_checks_oack_and_acks_0() {
    let opts = TransferOptions {
        blksize: Some(1024),
        tsize: Some(0),
        ..Default::default()
    };
    let mut c = client_get(opts);
    let mut src: &[u8] = &[];
    let d = drain(&mut c, ms(0), &mut src);
    assert_eq!(
        d.sent,
        [(
            addr(SERVER),
            b"\x00\x01f\x00octet\x00blksize\x001024\x00tsize\x000\x00".to_vec()
        )]
    );
    c.handle_datagram(
        ms(2),
        addr(SERVER_TID),
        b"\x00\x06blksize\x00512\x00tsize\x00700\x00",
    );
    let d = drain(&mut c, ms(2), &mut src);
    assert_eq!(d.sent, [(addr(SERVER_TID), ack(0))]);
    assert_eq!(c.transfer_size(), Some(700));
    assert_eq!(c.stats().peer, addr(SERVER_TID));
    // The port is now fixed: the listening port is a stranger.
    c.handle_datagram(ms(3), addr(SERVER), &data(1, b"x"));
    assert_eq!(drain(&mut c, ms(3), &mut src).sent[0].0, addr(SERVER));
}

/// An OACK whose last option has no value: that option is ignored, the
/// ones before it count, and the client goes on (ACK 0).
#[test]
fn client_takes_an_oack_whose_last_option_has_no_value() {
    let opts = TransferOptions {
        blksize: Some(1024),
        tsize: Some(0),
        ..Default::default()
    };
    let mut c = client_asked(opts);
    let mut src: &[u8] = &[];
    c.handle_datagram(
        ms(2),
        addr(SERVER_TID),
        b"\x00\x06tsize\x00600\x00blksize\x00",
    );
    let d = drain(&mut c, ms(2), &mut src);
    assert_eq!(d.sent, [(addr(SERVER_TID), ack(0))]);
    assert_eq!(c.transfer_size(), Some(600));
    // blksize was not acknowledged: blocks of 512, the second one short.
    c.handle_datagram(ms(3), addr(SERVER_TID), &data(1, &[7u8; 512]));
    let d = drain(&mut c, ms(3), &mut src);
    assert_eq!(d.sent, [(addr(SERVER_TID), ack(1))]);
    c.handle_datagram(ms(4), addr(SERVER_TID), &data(2, &[8u8; 88]));
    let d = drain(&mut c, ms(4), &mut src);
    assert_eq!(d.delivered, [8u8; 88]);
    assert_eq!(d.sent, [(addr(SERVER_TID), ack(2))], "the final ACK");
}

#[test]
fn client_refuses_a_raised_blksize_with_error_8() {
    let opts = TransferOptions {
        blksize: Some(512),
        ..Default::default()
    };
    let mut c = client_asked(opts);
    let mut src: &[u8] = &[];
    c.handle_datagram(ms(1), addr(SERVER_TID), b"\x00\x06blksize\x001024\x00");
    let d = drain(&mut c, ms(1), &mut src);
    assert_eq!(d.sent[0].0, addr(SERVER_TID));
    assert_eq!(d.sent[0].1[..4], [0, 5, 0, 8]);
    assert_eq!(
        d.done,
        Some(Outcome::LocalError(ErrorCode::OptionNegotiation))
    );
}

#[test]
fn client_falls_back_when_server_ignores_options() {
    let opts = TransferOptions {
        blksize: Some(1468),
        windowsize: Some(8),
        ..Default::default()
    };
    let mut c = client_asked(opts);
    let mut src: &[u8] = &[];
    c.handle_datagram(ms(1), addr(SERVER_TID), &data(1, b"short"));
    let d = drain(&mut c, ms(1), &mut src);
    assert_eq!(d.delivered, b"short");
    assert_eq!(d.sent, [(addr(SERVER_TID), ack(1))]);
    assert!(c.is_transfer_complete());
    assert!(c.stats().options_negotiated.is_empty());
}

#[test]
fn client_ignores_answers_from_another_host() {
    let mut c = Transfer::get(
        addr(SERVER),
        b"f",
        Mode::Octet,
        TransferOptions::default(),
        &Limits::default(),
        ms(0),
    )
    .unwrap();
    let mut src: &[u8] = &[];
    drain(&mut c, ms(0), &mut src);
    c.handle_datagram(ms(1), addr("198.51.100.1:4000"), &data(1, b"evil"));
    let d = drain(&mut c, ms(1), &mut src);
    assert!(d.sent.is_empty() && d.delivered.is_empty());
    assert_eq!(c.stats().foreign_packets, 1);
}

#[test]
fn client_put_sends_data_after_ack_0() {
    let mut c = Transfer::put(
        addr(SERVER),
        b"up",
        Mode::Octet,
        TransferOptions::default(),
        &Limits::default(),
        ms(0),
    )
    .unwrap();
    let mut src: &[u8] = b"hello";
    let d = drain(&mut c, ms(0), &mut src);
    assert_eq!(only(&d), b"\x00\x02up\x00octet\x00");
    c.handle_datagram(ms(1), addr(SERVER_TID), &ack(0));
    let d = drain(&mut c, ms(1), &mut src);
    assert_eq!(d.sent, [(addr(SERVER_TID), data(1, b"hello"))]);
    c.handle_datagram(ms(2), addr(SERVER_TID), &ack(1));
    assert_eq!(
        drain(&mut c, ms(2), &mut src).done,
        Some(Outcome::Completed)
    );
}

#[test]
fn client_request_is_retransmitted_to_the_listening_port() {
    let limits = Limits {
        initial_rto: Duration::from_millis(200),
        ..Limits::default()
    };
    let mut c = Transfer::get(
        addr(SERVER),
        b"f",
        Mode::Octet,
        TransferOptions::default(),
        &limits,
        ms(0),
    )
    .unwrap();
    let mut src: &[u8] = &[];
    let d = drain(&mut c, ms(0), &mut src);
    assert_eq!(d.wait, Some(ms(200)));
    c.handle_timeout(ms(200));
    let d = drain(&mut c, ms(200), &mut src);
    assert_eq!(d.sent, [(addr(SERVER), b"\x00\x01f\x00octet\x00".to_vec())]);
}

#[test]
fn garbage_from_the_peer_is_ignored() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut src: &[u8] = &[1u8; 600];
    drain(&mut s, ms(0), &mut src);
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09xx",
        b"\x00\x03\x00\x01data",
        b"\x00\x01f\x00octet\x00",
    ] {
        s.handle_datagram(ms(1), addr(PEER), junk);
        assert!(drain(&mut s, ms(1), &mut src).sent.is_empty());
    }
    assert_eq!(s.stats().ignored_packets, 5);
}

/// Fuzz finding: a client whose first "answer" was a bogus DATA lost its
/// timer and never timed out. Only DATA 1 starts a download without OACK,
/// and a waiting session always has a deadline.
#[test]
fn client_ignores_a_bogus_first_data_and_still_times_out() {
    let limits = Limits {
        retries: 2,
        initial_rto: Duration::from_millis(100),
        ..Limits::default()
    };
    let mut c = Transfer::get(
        addr(SERVER),
        b"f",
        Mode::Octet,
        TransferOptions::default(),
        &limits,
        ms(0),
    )
    .unwrap();
    let mut src: &[u8] = &[];
    drain(&mut c, ms(0), &mut src);
    c.handle_datagram(ms(1), addr(SERVER_TID), &data(34, b""));
    let d = drain(&mut c, ms(1), &mut src);
    assert!(d.sent.is_empty());
    assert_eq!(
        c.stats().peer,
        addr(SERVER),
        "a bogus answer does not fix the server's port"
    );
    let mut now = d.wait.expect("a deadline");
    for _ in 0..10 {
        c.handle_timeout(now);
        let d = drain(&mut c, now, &mut src);
        if d.done.is_some() {
            assert_eq!(d.done, Some(Outcome::TimedOut));
            return;
        }
        now = d.wait.expect("every wait has a deadline");
    }
    panic!("never timed out");
}

/// Fuzz finding (out of memory): a client asking for windowsize 65535 at
/// blksize 65464 would have kept a 4 GiB window. What a session asks for and
/// runs with is clamped to its own `Limits::max_window_bytes`.
#[test]
fn window_memory_is_bounded_by_the_local_limits() {
    let ask = TransferOptions {
        blksize: Some(65464),
        windowsize: Some(65535),
        ..Default::default()
    };
    let limits = Limits::default();
    let c = Transfer::put(addr(SERVER), b"f", Mode::Octet, ask, &limits, ms(0)).unwrap();
    let asked = c.stats().requested_options();
    let windowsize = asked
        .iter()
        .find(|o| o.name == b"windowsize")
        .unwrap()
        .value;
    let w: usize = std::str::from_utf8(windowsize).unwrap().parse().unwrap();
    assert!(
        w * 65464 <= limits.max_window_bytes.max(65464),
        "asked for {w} blocks"
    );
    // A server session given too much by an application is clamped too.
    let req = request(b"\x00\x01f\x00octet\x00");
    let s = Transfer::server_read(&req, ask, &limits, ms(0));
    let o = s.stats().options_negotiated;
    assert!(
        usize::from(o.window_size()) * usize::from(o.block_size())
            <= limits.max_window_bytes.max(65464)
    );
}

/// The final ACK goes out only after the adapter made the data durable
/// (`Output::Finish` answered with `delivered`); a failure there becomes an
/// ERROR instead of a false "done".
#[test]
fn final_ack_waits_for_finish() {
    let req = request(b"\x00\x02up\x00octet\x00");
    let mut s = Transfer::server_write(&req, TransferOptions::default(), &Limits::default(), ms(0));
    assert_eq!(only(&drain(&mut s, ms(0), &mut &[][..])), ack(0));
    s.handle_datagram(ms(1), addr(PEER), &data(1, b"last"));
    // DATA 1 from the request's address and port verifies the peer: said once.
    assert!(matches!(s.poll(ms(1)), Output::Verified));
    assert!(matches!(s.poll(ms(1)), Output::Deliver(b"last")));
    s.delivered();
    assert!(
        matches!(s.poll(ms(1)), Output::Finish),
        "no ACK before the sink is durable"
    );
    assert!(!s.is_transfer_complete());
    s.abort(ErrorCode::DiskFull, "Write error");
    let d = drain(&mut s, ms(1), &mut &[][..]);
    assert_eq!(only(&d)[..4], [0, 5, 0, 3]);
    assert_eq!(d.done, Some(Outcome::LocalError(ErrorCode::DiskFull)));
}

/// A peer whose round trip grows from 5 ms to 300 ms (a storm) costs the
/// first slow block its early retransmissions, not every block: the peer
/// acknowledges the second copy too, which shows that its first ACK
/// answered the first copy, whose round trip is then learned. (With Karn's
/// rule alone nothing was measured after an early timeout, progress reset
/// the backoff, and every block timed out early: 93 timeouts here.)
#[test]
fn a_grown_round_trip_is_learned_after_a_retransmission() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let file = vec![1u8; 512 * 40 + 1];
    let mut src: &[u8] = &file;
    // (when, ACK block) the peer will send; it answers every copy of a
    // DATA, 5 ms after it for the first ten blocks, 300 ms after later on.
    let mut acks: Vec<(Instant, u16)> = Vec::new();
    let mut now = ms(0);
    for _ in 0..1_000 {
        let d = drain(&mut s, now, &mut src);
        for (_, packet) in &d.sent {
            let block = u16::from_be_bytes([packet[2], packet[3]]);
            let delay = if block <= 10 { 5 } else { 300 };
            acks.push((now + Duration::from_millis(delay), block));
        }
        if d.done.is_some() {
            break;
        }
        let wait = d.wait.expect("a waiting session");
        acks.sort();
        match acks.first() {
            Some(&(at, block)) if at <= wait => {
                acks.remove(0);
                now = at;
                s.handle_datagram(now, addr(PEER), &ack(block));
            }
            _ => {
                now = wait;
                s.handle_timeout(now);
            }
        }
    }
    assert_eq!(s.stats().outcome, Some(Outcome::Completed));
    let timeouts = s.stats().timeouts;
    println!("{timeouts} timeouts");
    assert!((1..=3).contains(&timeouts), "{timeouts} timeouts");
}

/// The core says when a server's peer proves itself: `Output::Verified`,
/// once, after the first ACK from the request's address and port.
#[test]
fn verified_is_an_output_returned_once() {
    let req = request(b"\x00\x01f\x00octet\x00");
    let mut s = Transfer::server_read(&req, TransferOptions::default(), &Limits::default(), ms(0));
    let mut verified = 0;
    let mut source: &[u8] = &[7u8; 600];
    for step in 0..4u16 {
        loop {
            match s.poll(ms(u64::from(step))) {
                Output::Verified => verified += 1,
                Output::Fill(buf) => {
                    let n = buf.len().min(source.len());
                    buf[..n].copy_from_slice(&source[..n]);
                    source = &source[n..];
                    s.filled(n);
                }
                Output::Wait(_) | Output::Done(_) => break,
                _ => {}
            }
        }
        assert_eq!(verified, usize::from(step > 0), "step {step}");
        s.handle_datagram(ms(1), addr(PEER), &[0, 4, 0, step as u8 + 1]);
    }
    assert!(s.stats().verified);
}
