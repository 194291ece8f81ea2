//! The session driver against a real client session of the core, with a
//! virtual clock and a scripted executor: every step is performed here, so
//! each I/O result the driver turns into a core input can be chosen.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;

use tftp_proto::client::ClientGet;
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::{ErrorCode, Mode, Packet};
use tftp_proto::server::{Admit, Request, ServerSession};
use tftp_proto::session::{Output, Session};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;

use super::*;
use crate::config::ServerConfig;
use crate::registry::Registry;
use crate::{READ_ERROR, SHUTTING_DOWN};

const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:69";
const TRANSFER: &str = "127.0.0.1:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A source of `data` in reads of at most `chunk` bytes, every other one
/// interrupted; then `Ok(0)`, or an error when `fails`.
struct Chunks {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    interrupt: bool,
    fails: bool,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let left = &self.data[self.at..];
        if left.is_empty() && self.fails {
            return Err(io::Error::other("gone"));
        }
        let n = left.len().min(buf.len()).min(self.chunk);
        buf[..n].copy_from_slice(&left[..n]);
        self.at += n;
        Ok(n)
    }
}

/// A server session admitted by a registry (so it has a ticket: memory
/// lease, verification, cancel), for an RRQ with `options`.
fn admitted(registry: &Arc<Registry>, rrq: &[u8]) -> (Request, Ticket) {
    let mut reply = [0u8; 128];
    match registry.on_datagram(rrq, addr(CLIENT), addr(SERVER), &mut reply) {
        Admit::Start { request, key, .. } => {
            let ticket = Ticket::new(Arc::clone(registry), key, || {});
            (request, ticket)
        }
        _ => panic!("not admitted"),
    }
}

/// A client's download session, its RRQ sent.
fn client(blksize: u16, windowsize: u16, now: Instant) -> (ClientGet, Vec<u8>) {
    // No options at all for a blksize of 0: the first DATA goes out before
    // the peer has answered anything.
    let options = TransferOptions {
        blksize: (blksize > 0).then_some(blksize),
        windowsize: (windowsize > 0).then_some(windowsize),
        ..TransferOptions::default()
    };
    let mut client = ClientGet::get(
        addr(SERVER),
        b"f",
        Mode::Octet,
        options,
        &Limits::default(),
        now,
    )
    .unwrap();
    let Output::Transmit { bytes, .. } = client.poll(now) else {
        panic!("no RRQ")
    };
    let rrq = bytes.to_vec();
    (client, rrq)
}

/// What the scripted executor does at a [`Step::Read`] or a top-up.
enum Source {
    Reads(Chunks),
    /// Every read waits past its deadline.
    Stalled,
}

/// The outcome of a run, and what the client saw.
struct Run {
    server: Outcome,
    client: Option<Outcome>,
    received: Vec<u8>,
    /// ERROR packets the client got: (code, text).
    errors: Vec<(u16, String)>,
    /// Read steps and their deadlines.
    read_deadlines: Vec<Option<Instant>>,
    top_ups: usize,
    /// Reads and top-ups that returned bytes.
    data_reads: usize,
    /// The most of the memory budget in use at a wait.
    peak_memory: usize,
}

/// Runs `driver` against `client` through a lossless network with a
/// virtual clock that jumps to the next deadline; `stop_at` stops the
/// server session at a given wait.
fn run_pair(
    driver: &mut SessionDriver<'_, ServerSession>,
    client: &mut ClientGet,
    source: Source,
    now: Instant,
    stop_at: Option<(usize, Stop)>,
) -> Run {
    run_pair_with(driver, client, source, now, stop_at, None)
}

/// [`run_pair`], sampling `registry`'s memory in use at each wait.
fn run_pair_sampled(
    driver: &mut SessionDriver<'_, ServerSession>,
    client: &mut ClientGet,
    source: Source,
    registry: Option<&Registry>,
) -> Run {
    run_pair_with(driver, client, source, Instant::ZERO, None, registry)
}

fn run_pair_with(
    driver: &mut SessionDriver<'_, ServerSession>,
    client: &mut ClientGet,
    mut source: Source,
    mut now: Instant,
    stop_at: Option<(usize, Stop)>,
    registry: Option<&Registry>,
) -> Run {
    let mut to_client: VecDeque<Vec<u8>> = VecDeque::new();
    let mut to_server: VecDeque<Vec<u8>> = VecDeque::new();
    let mut run = Run {
        server: Outcome::Completed,
        client: None,
        received: Vec::new(),
        errors: Vec::new(),
        read_deadlines: Vec::new(),
        top_ups: 0,
        data_reads: 0,
        peak_memory: 0,
    };
    let mut waits = 0;
    let mut client_deadline = Instant::ZERO;
    for _ in 0..1_000_000 {
        // The client, drained.
        if run.client.is_none() {
            while let Some(d) = to_client.pop_front() {
                if let Ok(Packet::Error { code, message }) = Packet::parse(&d) {
                    run.errors
                        .push((code.as_u16(), String::from_utf8_lossy(message).into_owned()));
                }
                client.handle_datagram(now, addr(TRANSFER), &d);
            }
            loop {
                match client.poll(now) {
                    Output::Transmit { bytes, .. } => to_server.push_back(bytes.to_vec()),
                    Output::Deliver(bytes) => {
                        run.received.extend_from_slice(bytes);
                        client.delivered();
                    }
                    Output::Finish => client.delivered(),
                    Output::Fill(_) => unreachable!("a download does not fill"),
                    Output::Verified => {}
                    Output::Wait(w) => {
                        client_deadline = w;
                        break;
                    }
                    Output::Done(o) => {
                        run.client = Some(o);
                        break;
                    }
                }
            }
        }
        match driver.next(now) {
            Step::Send(Datagrams {
                bytes,
                segment_size,
                ..
            }) => {
                for d in bytes.chunks(segment_size) {
                    to_client.push_back(d.to_vec());
                }
                driver.sent(Ok(true));
            }
            Step::Read { buf, deadline } => {
                run.read_deadlines.push(deadline);
                match &mut source {
                    Source::Reads(chunks) => {
                        let read = chunks.read(buf);
                        run.data_reads += usize::from(matches!(read, Ok(n) if n > 0));
                        driver.read(now, Waited::Done(read));
                    }
                    Source::Stalled => {
                        now = deadline.expect("a server read has a deadline");
                        driver.read(now, Waited::Expired);
                    }
                }
            }
            Step::Write(_) | Step::Flush | Step::Close => unreachable!("a read has no sink"),
            Step::Wait {
                deadline,
                recv,
                top_up,
            } => {
                waits += 1;
                if let Some(r) = registry {
                    run.peak_memory = run.peak_memory.max(r.memory_in_use());
                }
                if let Some((at, why)) = stop_at.filter(|(at, _)| *at == waits) {
                    let _ = at;
                    driver.stop(why);
                    continue;
                }
                if let (Some(buf), Source::Reads(chunks)) = (top_up, &mut source) {
                    run.top_ups += 1;
                    let read = chunks.read(buf);
                    run.data_reads += usize::from(matches!(read, Ok(n) if n > 0));
                    driver.topped_up(read);
                    continue;
                }
                if let Some(d) = to_server.pop_front() {
                    recv.first[..d.len()].copy_from_slice(&d);
                    *recv.got = [Some((d.len(), addr(CLIENT))), None];
                    driver.received(now);
                } else if run.client.is_none() && client_deadline < deadline {
                    now = now.max(client_deadline);
                    client.handle_timeout(now);
                } else {
                    now = deadline;
                    driver.timeout(now);
                }
            }
            Step::Again => {}
            Step::Done(outcome) => {
                run.server = outcome;
                // The client lingers (dallies) or times out on its own.
                for _ in 0..100 {
                    if run.client.is_some() {
                        break;
                    }
                    for d in to_client.drain(..) {
                        client.handle_datagram(now, addr(TRANSFER), &d);
                    }
                    match client.poll(now) {
                        Output::Wait(w) => {
                            now = now.max(w);
                            client.handle_timeout(now);
                        }
                        Output::Done(o) => run.client = Some(o),
                        Output::Deliver(bytes) => {
                            run.received.extend_from_slice(bytes);
                            client.delivered();
                        }
                        Output::Finish => client.delivered(),
                        _ => {}
                    }
                }
                return run;
            }
        }
    }
    panic!("the pair never finished");
}

fn new_registry(limits: Limits) -> Arc<Registry> {
    Registry::new(ServerConfig {
        limits,
        ..ServerConfig::default()
    })
}

fn start(registry: &Arc<Registry>, blksize: u16, windowsize: u16) -> (ClientGet, Request, Ticket) {
    let (client, rrq) = client(blksize, windowsize, Instant::ZERO);
    let (request, ticket) = admitted(registry, &rrq);
    (client, request, ticket)
}

const ASYNC: Executor = super::future::ASYNC;

/// Every block arrives whole and in order through short and interrupted
/// reads, lock-step and windowed, small and large blocks (read-ahead,
/// straight reads), and the read-ahead is topped up while waiting.
#[test]
fn a_file_arrives_whole_through_short_and_interrupted_reads() {
    for (blksize, windowsize) in [(512, 1), (1468, 8), (8192, 4), (65464, 1)] {
        for chunk in [usize::MAX, 1000, 7] {
            let registry = new_registry(Limits::default());
            let (mut client, request, mut ticket) = start(&registry, blksize, windowsize);
            let limits = &registry.config.limits;
            let session = ServerSession::start(&request, limits, None, None, Instant::ZERO);
            let mut driver =
                SessionDriver::new(session, Data::Source(None), Some(&mut ticket), ASYNC);
            let sent = data(200_000);
            let source = Source::Reads(Chunks {
                data: sent.clone(),
                at: 0,
                chunk,
                interrupt: false,
                fails: false,
            });
            let run = run_pair(&mut driver, &mut client, source, Instant::ZERO, None);
            let what = format!("blksize {blksize} window {windowsize} chunk {chunk}");
            assert_eq!(run.server, Outcome::Completed, "{what}");
            assert_eq!(run.client, Some(Outcome::Completed), "{what}");
            assert!(run.received == sent, "{what}");
            if usize::from(blksize) <= crate::READ_AHEAD && chunk == usize::MAX {
                assert!(run.top_ups > 0, "{what}: topped up while waiting");
            }
        }
    }
}

/// A source that fails after some data: the client gets every whole block
/// read before the failure, then ERROR 0 "Read error".
#[test]
fn a_failing_source_ends_with_read_error_after_its_data() {
    for (blksize, windowsize) in [(512, 1), (1468, 16), (65464, 1)] {
        let registry = new_registry(Limits::default());
        let (mut client, request, mut ticket) = start(&registry, blksize, windowsize);
        let session =
            ServerSession::start(&request, &registry.config.limits, None, None, Instant::ZERO);
        let mut driver = SessionDriver::new(session, Data::Source(None), Some(&mut ticket), ASYNC);
        let sent = data(150_000);
        let source = Source::Reads(Chunks {
            data: sent.clone(),
            at: 0,
            chunk: 1000,
            interrupt: false,
            fails: true,
        });
        let run = run_pair(&mut driver, &mut client, source, Instant::ZERO, None);
        assert_eq!(run.server, Outcome::LocalError(ErrorCode::NotDefined));
        assert_eq!(
            run.errors,
            [(0, READ_ERROR.to_string())],
            "blksize {blksize}"
        );
        let whole = sent.len() / usize::from(blksize) * usize::from(blksize);
        assert!(run.received.len() <= whole, "no block beyond the data");
        assert!(run.received == sent[..run.received.len()]);
    }
}

/// A source that stalls: before the peer is verified the session waits no
/// longer than its unverified lifetime and ends without a word; after, it
/// waits `retries` of the longest timeout and sends ERROR 0 "Read error".
#[test]
fn a_stalled_source_waits_within_the_session_budget() {
    let limits = Limits::default();
    // Unverified: without options the first block is read before any
    // answer.
    let registry = new_registry(limits.clone());
    let (mut client, request, mut ticket) = start(&registry, 0, 0);
    let session = ServerSession::start(&request, &limits, None, None, Instant::ZERO);
    let mut driver = SessionDriver::new(session, Data::Source(None), Some(&mut ticket), ASYNC);
    let run = run_pair(
        &mut driver,
        &mut client,
        Source::Stalled,
        Instant::ZERO,
        None,
    );
    assert_eq!(
        run.read_deadlines,
        [Some(Instant::ZERO + limits.unverified_lifetime)]
    );
    assert!(run.errors.is_empty(), "silent: {:?}", run.errors);
    assert!(!run.server.is_success());

    // Verified: a file whose size is announced asks for an OACK answer
    // first; the stall comes at the first block.
    let registry = new_registry(limits.clone());
    let (mut client, request, mut ticket) = start(&registry, 1468, 4);
    let session = ServerSession::start(&request, &limits, None, Some(10_000), Instant::ZERO);
    let mut driver = SessionDriver::new(session, Data::Source(None), Some(&mut ticket), ASYNC);
    let run = run_pair(
        &mut driver,
        &mut client,
        Source::Stalled,
        Instant::ZERO,
        None,
    );
    let patience = limits.max_rto * limits.retries;
    match run.read_deadlines.as_slice() {
        [Some(d)] => assert!(*d >= Instant::ZERO + patience, "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(run.errors, [(0, READ_ERROR.to_string())]);
}

/// Told to stop: an abort sends ERROR 0 "Server shutting down"; a cancel
/// (eviction) of an unverified session sends nothing.
#[test]
fn stops_end_the_session() {
    for (why, error) in [(Stop::Abort, Some(SHUTTING_DOWN)), (Stop::Cancel, None)] {
        let registry = new_registry(Limits::default());
        let (mut client, request, mut ticket) = start(&registry, 512, 1);
        let session = ServerSession::start(
            &request,
            &registry.config.limits,
            None,
            Some(100),
            Instant::ZERO,
        );
        let mut driver = SessionDriver::new(session, Data::Source(None), Some(&mut ticket), ASYNC);
        let source = Source::Reads(Chunks {
            data: data(100),
            at: 0,
            chunk: usize::MAX,
            interrupt: false,
            fails: false,
        });
        // The first wait is for the OACK's answer: the peer is unverified.
        let run = run_pair(
            &mut driver,
            &mut client,
            source,
            Instant::ZERO,
            Some((1, why)),
        );
        let errors: Vec<_> = error.map(|e| (0, e.to_string())).into_iter().collect();
        assert_eq!(run.errors, errors, "{why:?}");
        assert!(!run.server.is_success(), "{why:?}");
    }
}

/// The threads executor tops up only a source of known size; with no
/// ticket (a client's upload) the read-ahead is there from the start.
#[test]
fn top_ups_only_where_the_executor_allows_them() {
    for top_up in [false, true] {
        let registry = new_registry(Limits::default());
        let (mut client, request, mut ticket) = start(&registry, 512, 1);
        let session =
            ServerSession::start(&request, &registry.config.limits, None, None, Instant::ZERO);
        let executor = Executor {
            top_up,
            two_slots: false,
            min_read_ahead: crate::MIN_READ_AHEAD_ON_THREAD,
        };
        let mut driver =
            SessionDriver::new(session, Data::Source(None), Some(&mut ticket), executor);
        let sent = data(100_000);
        let source = Source::Reads(Chunks {
            data: sent.clone(),
            at: 0,
            chunk: usize::MAX,
            interrupt: false,
            fails: false,
        });
        let run = run_pair(&mut driver, &mut client, source, Instant::ZERO, None);
        assert!(run.received == sent);
        assert_eq!(run.top_ups > 0, top_up);
    }
}

/// The memory lease holds the session's buffers and its read-ahead while
/// it runs (two windows: less than the largest buffer for a lock-step
/// session of small blocks), and the ticket hears that the peer is
/// verified.
#[test]
fn the_lease_holds_the_read_ahead_sized_to_the_window() {
    let registry = new_registry(Limits::default());
    let (mut client, request, mut ticket) = start(&registry, 512, 1);
    let session =
        ServerSession::start(&request, &registry.config.limits, None, None, Instant::ZERO);
    let mut driver = SessionDriver::new(session, Data::Source(None), Some(&mut ticket), ASYNC);
    let sent = data(100_000);
    let source = Source::Reads(Chunks {
        data: sent.clone(),
        at: 0,
        chunk: usize::MAX,
        interrupt: false,
        fails: false,
    });
    let run = run_pair_sampled(&mut driver, &mut client, source, Some(&registry));
    assert!(run.received == sent);
    assert!(ticket.is_verified());
    let peak = run.peak_memory;
    assert!(peak >= crate::readahead::MIN_READ_AHEAD, "peak {peak}");
    assert!(
        peak < crate::READ_AHEAD,
        "peak {peak}: a lock-step session of 512-byte blocks holds less than the largest read-ahead"
    );
    assert_eq!(
        registry.memory_in_use(),
        peak,
        "held until the session ends"
    );
}

/// A source of known size up to [`READ_AHEAD`](crate::READ_AHEAD) is read
/// whole once the peer is verified (here at the OACK's answer, before the
/// first block): in one read (a file source closes its descriptor then),
/// with a lease of its size; a larger one gets two windows, at least the
/// executor's floor: a page where sessions share threads, more on a thread
/// of its own.
#[test]
fn a_small_source_of_known_size_is_read_whole() {
    let on_thread = Executor {
        min_read_ahead: crate::MIN_READ_AHEAD_ON_THREAD,
        ..ASYNC
    };
    for (size, executor, reads, lease) in [
        (40_000, ASYNC, 1, 40_000),
        (crate::READ_AHEAD, ASYNC, 1, crate::READ_AHEAD),
        (crate::READ_AHEAD + 1, ASYNC, 23, crate::MIN_READ_AHEAD),
        (crate::READ_AHEAD, on_thread, 1, crate::READ_AHEAD),
        (
            crate::READ_AHEAD + 1,
            on_thread,
            7,
            crate::MIN_READ_AHEAD_ON_THREAD,
        ),
    ] {
        let registry = new_registry(Limits::default());
        let (mut client, request, mut ticket) = start(&registry, 1468, 1);
        let session = ServerSession::start(
            &request,
            &registry.config.limits,
            None,
            Some(size as u64),
            Instant::ZERO,
        );
        let data_kind = Data::Source(Some(size as u64));
        let mut driver = SessionDriver::new(session, data_kind, Some(&mut ticket), executor);
        let sent = data(size);
        let source = Source::Reads(Chunks {
            data: sent.clone(),
            at: 0,
            chunk: usize::MAX,
            interrupt: false,
            fails: false,
        });
        let run = run_pair_sampled(&mut driver, &mut client, source, Some(&registry));
        assert!(run.received == sent, "size {size}");
        // Reads that returned bytes (a larger source: at least one per
        // half buffer, when it is topped up).
        assert_eq!(run.data_reads, reads, "size {size}");
        assert!(
            run.peak_memory >= lease,
            "size {size}: peak {}",
            run.peak_memory
        );
        assert!(
            run.peak_memory < lease + 8 * 1024,
            "size {size}: peak {} for a read-ahead of {lease}",
            run.peak_memory
        );
    }
}

/// What the scripted sink does with a write.
#[derive(Clone, Copy, Debug)]
enum SinkMode {
    /// Takes at most this many bytes per write.
    Partial(usize),
    /// Fails every write with this error.
    Fails(io::ErrorKind),
    /// Takes nothing (`Ok(0)`).
    Zero,
}

/// An upload (WRQ) of `sent` from a core client to the driver, whose sink
/// behaves as `mode`: what the sink kept, whether it was closed, the ERRORs
/// the client got and the server's outcome.
fn upload(sent: &[u8], mode: SinkMode) -> (Vec<u8>, bool, Vec<(u16, String)>, Outcome) {
    let registry = new_registry(Limits::default());
    let options = TransferOptions {
        blksize: Some(1000),
        ..TransferOptions::default()
    };
    let now = Instant::ZERO;
    let limits = Limits::default();
    let mut client =
        tftp_proto::client::ClientPut::put(addr(SERVER), b"up", Mode::Octet, options, &limits, now)
            .unwrap();
    let Output::Transmit { bytes, .. } = client.poll(now) else {
        panic!("no WRQ")
    };
    let wrq = bytes.to_vec();
    let (request, mut ticket) = admitted(&registry, &wrq);
    let session = ServerSession::start(&request, &registry.config.limits, None, None, now);
    let mut driver = SessionDriver::new(session, Data::Upload, Some(&mut ticket), ASYNC);
    let (mut kept, mut closed, mut errors) = (Vec::new(), false, Vec::new());
    let mut to_server: VecDeque<Vec<u8>> = VecDeque::new();
    let mut source = sent;
    let mut now = now;
    for _ in 0..100_000 {
        // The client, drained.
        loop {
            match client.poll(now) {
                Output::Transmit { bytes, .. } => to_server.push_back(bytes.to_vec()),
                Output::Fill(buf) => {
                    let n = buf.len().min(source.len());
                    buf[..n].copy_from_slice(&source[..n]);
                    source = &source[n..];
                    client.filled(n);
                }
                Output::Wait(_) | Output::Done(_) => break,
                _ => {}
            }
        }
        match driver.next(now) {
            Step::Send(d) => {
                if let Ok(Packet::Error { code, message }) = Packet::parse(d.bytes) {
                    let text = String::from_utf8_lossy(message).into_owned();
                    errors.push((code.as_u16(), text));
                }
                let copy = d.bytes.to_vec();
                driver.sent(Ok(true));
                client.handle_datagram(now, addr(TRANSFER), &copy);
            }
            Step::Write(bytes) => {
                let written = match mode {
                    SinkMode::Partial(most) => {
                        let n = bytes.len().min(most);
                        kept.extend_from_slice(&bytes[..n]);
                        Ok(n)
                    }
                    SinkMode::Fails(kind) => Err(kind.into()),
                    SinkMode::Zero => Ok(0),
                };
                driver.written(written);
            }
            Step::Flush => driver.flushed(Ok(())),
            Step::Close => {
                closed = true;
                driver.flushed(Ok(()));
            }
            Step::Wait { deadline, recv, .. } => match to_server.pop_front() {
                Some(d) => {
                    recv.first[..d.len()].copy_from_slice(&d);
                    *recv.got = [Some((d.len(), addr(CLIENT))), None];
                    driver.received(now);
                }
                None => {
                    now = deadline;
                    driver.timeout(now);
                    client.handle_timeout(now);
                }
            },
            Step::Read { .. } => panic!("an upload has no source"),
            Step::Again => {}
            Step::Done(outcome) => return (kept, closed, errors, outcome),
        }
    }
    panic!("the upload never finished");
}

/// Partial writes keep every byte in order and the upload is closed
/// (committed) before the final ACK; a full disk is ERROR 3 "Disk full", a
/// sink that takes nothing ERROR 0 "Write error", and neither is closed.
#[test]
fn uploads_write_everything_or_fail_with_the_sinks_error() {
    let sent = data(10_500);
    let (kept, closed, errors, outcome) = upload(&sent, SinkMode::Partial(7));
    assert!(kept == sent);
    assert!(closed, "committed");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(outcome, Outcome::Completed);

    let (kept, closed, errors, _) = upload(&sent, SinkMode::Fails(io::ErrorKind::StorageFull));
    assert!(kept.is_empty() && !closed);
    assert_eq!(errors, [(3, crate::DISK_FULL.to_string())]);

    let (_, closed, errors, _) = upload(&sent, SinkMode::Zero);
    assert!(!closed);
    assert_eq!(errors, [(0, crate::WRITE_ERROR.to_string())]);
}
