//! Deterministic simulation: a client session against a server session
//! through an in-memory network with a virtual clock. The network drops,
//! duplicates, delays and reorders datagrams from a seeded RNG, and can drop
//! chosen DATA packets by hand. The clock jumps to the next event.
//!
//! [`run`] also checks, as it goes, that the sender never transmits DATA
//! beyond the window the receiver opened, and that each drain of a session
//! produces a bounded number of outputs; breaches land in
//! [`Report::violations`].

use core::net::SocketAddr;
use core::time::Duration;
use std::boxed::Box;
use std::format;
use std::string::String;
use std::vec::Vec;
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::{Mode, Packet};
use tftp_proto::server::accept;
use tftp_proto::session::{Output, Session, Transfer};
use tftp_proto::stats::{Outcome, Stats};
use tftp_proto::time::Instant;

use crate::Fnv;

/// A small seeded PRNG (xorshift64*), enough for network emulation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `ppm` / 1 000 000.
    pub fn chance(&mut self, ppm: u32) -> bool {
        self.next_u64() % 1_000_000 < u64::from(ppm)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// One direction of the emulated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Netem {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra random delay in `0..jitter` (reorders when larger than the
    /// spacing of packets).
    pub jitter: Duration,
    /// Loss probability, parts per million.
    pub loss_ppm: u32,
    /// Duplication probability, parts per million.
    pub dup_ppm: u32,
    /// Serialization time of one datagram: the link carries one at a time.
    pub per_packet: Duration,
}

impl Netem {
    /// A clean link with a one-way `delay`.
    pub fn clean(delay: Duration) -> Self {
        Netem {
            delay,
            jitter: Duration::ZERO,
            loss_ppm: 0,
            dup_ppm: 0,
            per_packet: Duration::ZERO,
        }
    }
}

/// Download or upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The client reads (RRQ): the server sends.
    Get,
    /// The client writes (WRQ): the client sends.
    Put,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Download or upload.
    pub kind: Kind,
    /// Transfer mode.
    pub mode: Mode,
    /// The file (local bytes on the sending side).
    pub data: Vec<u8>,
    /// What the client asks for (`tsize` is filled in by [`run`]).
    pub client_options: TransferOptions,
    /// The client's policy.
    pub client_limits: Limits,
    /// The server's policy.
    pub server_limits: Limits,
    /// Client → server link.
    pub to_server: Netem,
    /// Server → client link.
    pub to_client: Netem,
    /// RNG seed.
    pub seed: u64,
    /// DATA packets to drop by hand, counted from 1 in transmission order.
    pub drop_data: Vec<u64>,
    /// Datagrams the client sends to drop by hand, counted from 1 (the
    /// request) in transmission order: e.g. `[2]` loses its first ACK.
    pub drop_client: Vec<u64>,
    /// Upper bound on loop iterations (a stuck simulation ends there).
    pub max_events: usize,
    /// Print every datagram sent, dropped and delivered (debugging).
    pub trace: bool,
}

impl Scenario {
    /// A clean 10 ms round trip download of `data` with default limits.
    pub fn get(data: Vec<u8>, client_options: TransferOptions) -> Self {
        Scenario {
            kind: Kind::Get,
            mode: Mode::Octet,
            data,
            client_options,
            client_limits: Limits::default(),
            server_limits: Limits::default(),
            to_server: Netem::clean(Duration::from_millis(5)),
            to_client: Netem::clean(Duration::from_millis(5)),
            seed: 1,
            drop_data: Vec::new(),
            drop_client: Vec::new(),
            max_events: 5_000_000,
            trace: false,
        }
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub struct Report {
    /// The bytes the receiving side delivered.
    pub received: Vec<u8>,
    /// The client's outcome (`None`: still running when the loop ended).
    pub client_outcome: Option<Outcome>,
    /// The server's outcome (`None`: no session, or still running).
    pub server_outcome: Option<Outcome>,
    /// The client's statistics.
    pub client: Stats,
    /// The server's statistics, if a session started.
    pub server: Option<Stats>,
    /// When the sender saw the final ACK (`None` if never).
    pub data_done_at: Option<Instant>,
    /// When both sides were done.
    pub end: Instant,
    /// DATA packets the sender transmitted.
    pub data_packets: u64,
    /// Datagrams the network dropped (random and by hand).
    pub dropped: u64,
    /// Datagrams the network duplicated.
    pub duplicated: u64,
    /// Broken invariants.
    pub violations: Vec<String>,
    /// Digest of every datagram sent (time, addresses, bytes, before the
    /// network drops any) and of both outcomes.
    pub wire: Fnv,
}

const CLIENT: &str = "10.0.0.1:1069";
const LISTEN: &str = "10.0.0.2:69";
const SERVER: &str = "10.0.0.2:2069";
/// Most outputs one drain may produce before waiting.
const MAX_OUTPUTS_PER_DRAIN: usize = 4 * 65_536 + 16;

struct Flight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

struct Side {
    session: Option<Box<dyn Session>>,
    addr: SocketAddr,
    deadline: Option<Instant>,
    outcome: Option<Outcome>,
    source: Vec<u8>,
    read: usize,
    sink: Vec<u8>,
    is_sender: bool,
}

struct World<'s> {
    scenario: &'s Scenario,
    client_addr: SocketAddr,
    rng: Rng,
    now: Instant,
    queue: Vec<Flight>,
    seq: u64,
    /// When each link (to server, to client) is free again.
    link_free: [Instant; 2],
    acked: u64,
    data_packets: u64,
    client_packets: u64,
    dropped: u64,
    duplicated: u64,
    data_done_at: Option<Instant>,
    violations: Vec<String>,
    wire: Fnv,
}

/// Runs a scenario to its end.
pub fn run(scenario: &Scenario) -> Report {
    let client_addr: SocketAddr = CLIENT.parse().expect("address");
    let listen: SocketAddr = LISTEN.parse().expect("address");
    let server_addr: SocketAddr = SERVER.parse().expect("address");
    let now = Instant::ZERO;
    let mut options = scenario.client_options;
    let client: Box<dyn Session> = match scenario.kind {
        Kind::Get => Box::new(
            Transfer::get(
                listen,
                b"file",
                scenario.mode,
                options,
                &scenario.client_limits,
                now,
            )
            .expect("request"),
        ),
        Kind::Put => {
            if options.tsize.is_some() && scenario.mode == Mode::Octet {
                options.tsize = Some(scenario.data.len() as u64);
            }
            Box::new(
                Transfer::put(
                    listen,
                    b"file",
                    scenario.mode,
                    options,
                    &scenario.client_limits,
                    now,
                )
                .expect("request"),
            )
        }
    };
    let mut c = Side {
        session: Some(client),
        addr: client_addr,
        deadline: None,
        outcome: None,
        source: if scenario.kind == Kind::Put {
            scenario.data.clone()
        } else {
            Vec::new()
        },
        read: 0,
        sink: Vec::new(),
        is_sender: scenario.kind == Kind::Put,
    };
    let mut s = Side {
        session: None,
        addr: server_addr,
        deadline: None,
        outcome: None,
        source: if scenario.kind == Kind::Get {
            scenario.data.clone()
        } else {
            Vec::new()
        },
        read: 0,
        sink: Vec::new(),
        is_sender: scenario.kind == Kind::Get,
    };
    let mut w = World {
        scenario,
        client_addr,
        rng: Rng::new(scenario.seed),
        now,
        queue: Vec::new(),
        seq: 0,
        link_free: [Instant::ZERO; 2],
        acked: 0,
        data_packets: 0,
        client_packets: 0,
        dropped: 0,
        duplicated: 0,
        data_done_at: None,
        violations: Vec::new(),
        wire: Fnv::default(),
    };

    for _ in 0..scenario.max_events {
        w.drain(&mut c, &mut s);
        w.drain(&mut s, &mut c);
        let server_finished = s.outcome.is_some();
        if c.outcome.is_some() && (server_finished || s.session.is_none()) {
            break;
        }
        let next_packet = w.queue.iter().map(|f| f.at).min();
        let next = [next_packet, c.deadline, s.deadline]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            w.violations.push(String::from("stuck: nothing scheduled"));
            break;
        };
        w.now = w.now.max(next);
        // Deliver every datagram due, in order.
        while let Some(i) = w
            .queue
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= w.now)
            .min_by_key(|(_, f)| (f.at, f.seq))
            .map(|(i, _)| i)
        {
            let f = w.queue.swap_remove(i);
            w.deliver(f, &mut c, &mut s, listen);
            w.drain(&mut c, &mut s);
            w.drain(&mut s, &mut c);
        }
        for side in [&mut c, &mut s] {
            if side.deadline.is_some_and(|d| d <= w.now) {
                side.deadline = None;
                if let Some(session) = side.session.as_mut() {
                    session.handle_timeout(w.now);
                }
            }
        }
    }

    let client_stats = c
        .session
        .as_ref()
        .map(|x| x.stats().clone())
        .expect("client exists");
    let received = if scenario.kind == Kind::Get {
        c.sink
    } else {
        s.sink
    };
    w.wire.write_debug(&c.outcome);
    w.wire.write_debug(&s.outcome);
    w.wire.write_u64(w.now.since_epoch().as_micros() as u64);
    Report {
        received,
        client_outcome: c.outcome,
        server_outcome: s.outcome,
        client: client_stats,
        server: s.session.as_ref().map(|x| x.stats().clone()),
        data_done_at: w.data_done_at,
        end: w.now,
        data_packets: w.data_packets,
        dropped: w.dropped,
        duplicated: w.duplicated,
        violations: w.violations,
        wire: w.wire,
    }
}

impl World<'_> {
    /// How the sending side numbers its blocks past 65535.
    fn sender_rollover(&self) -> tftp_proto::options::Rollover {
        match self.scenario.kind {
            Kind::Get => self.scenario.server_limits.rollover,
            Kind::Put => self.scenario.client_limits.rollover,
        }
    }

    fn drain(&mut self, side: &mut Side, _other: &mut Side) {
        let Some(session) = side.session.as_mut() else {
            return;
        };
        if side.outcome.is_some() {
            return;
        }
        let window = u64::from(session.stats().options_negotiated.window_size());
        let mut outputs = 0;
        loop {
            outputs += 1;
            if outputs > MAX_OUTPUTS_PER_DRAIN {
                self.violations
                    .push(format!("unbounded outputs at {}", self.now));
                return;
            }
            match session.poll(self.now) {
                Output::Transmit {
                    to,
                    bytes,
                    segment_size,
                } => {
                    'datagrams: for bytes in bytes.chunks(segment_size.max(1)) {
                        if let Ok(Packet::Data { block, .. }) = Packet::parse(bytes) {
                            if side.is_sender && to != side.addr {
                                self.data_packets += 1;
                                let rule = self.sender_rollover();
                                let ahead = rule.forward(self.acked, block).unwrap_or(0);
                                if ahead == 0 || ahead > window {
                                    self.violations.push(format!(
                                        "DATA {block} sent with {} acknowledged and window {window}",
                                        self.acked
                                    ));
                                }
                                if self.scenario.drop_data.contains(&self.data_packets) {
                                    self.dropped += 1;
                                    continue 'datagrams;
                                }
                            }
                        }
                        if side.addr == self.client_addr {
                            self.client_packets += 1;
                            if self.scenario.drop_client.contains(&self.client_packets) {
                                self.dropped += 1;
                                continue 'datagrams;
                            }
                        }
                        let bytes = bytes.to_vec();
                        self.send(side.addr, to, bytes);
                    }
                }
                Output::Fill(buf) => {
                    let rest = side.source.get(side.read..).unwrap_or_default();
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    side.read += n;
                    session.filled(n);
                }
                Output::Deliver(bytes) => {
                    side.sink.extend_from_slice(bytes);
                    session.delivered();
                }
                Output::Finish => session.delivered(),
                Output::Verified => {}
                Output::Wait(deadline) => {
                    side.deadline = Some(deadline);
                    return;
                }
                Output::Done(outcome) => {
                    side.outcome = Some(outcome);
                    side.deadline = None;
                    if side.is_sender && outcome == Outcome::Completed {
                        self.data_done_at.get_or_insert(self.now);
                    }
                    return;
                }
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let link = usize::from(from.port() != 1069);
        let net = if link == 0 {
            self.scenario.to_server
        } else {
            self.scenario.to_client
        };
        self.wire
            .write_u64(self.now.since_epoch().as_micros() as u64);
        self.wire.write_debug(&(from, to));
        self.wire.write(&bytes);
        let departs = self.link_free[link].max(self.now) + net.per_packet;
        self.link_free[link] = departs;
        if self.scenario.trace {
            std::println!(
                "{} send {from} -> {to}: {:?}",
                self.now,
                &bytes[..4.min(bytes.len())]
            );
        }
        if self.rng.chance(net.loss_ppm) {
            if self.scenario.trace {
                std::println!("   dropped");
            }
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(net.dup_ppm) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.rng.below(net.jitter.as_micros() as u64);
            let at = departs + net.delay + Duration::from_micros(jitter);
            self.seq += 1;
            self.queue.push(Flight {
                at,
                seq: self.seq,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    fn deliver(&mut self, f: Flight, c: &mut Side, s: &mut Side, listen: SocketAddr) {
        if f.to == listen {
            if s.session.is_some() {
                return; // a retransmitted request: the session already runs
            }
            let Ok(request) = accept(&f.bytes, f.from, &self.scenario.server_limits) else {
                return;
            };
            let size = Some(self.scenario.data.len() as u64);
            let oack = request.negotiate(&self.scenario.server_limits, size).oack;
            let limits = &self.scenario.server_limits;
            s.session = Some(match self.scenario.kind {
                Kind::Get => Box::new(Transfer::server_read(&request, oack, limits, self.now)),
                Kind::Put => Box::new(Transfer::server_write(&request, oack, limits, self.now)),
            });
            return;
        }
        let side = if f.to == c.addr {
            c
        } else if f.to == s.addr {
            s
        } else {
            return;
        };
        if side.is_sender {
            if let Ok(Packet::Ack { block }) = Packet::parse(&f.bytes) {
                let ahead = self.sender_rollover().forward(self.acked, block);
                if let Some(ahead @ 1..=0x7fff) = ahead {
                    self.acked += ahead;
                }
            }
        }
        if side.outcome.is_some() {
            return;
        }
        if let Some(session) = side.session.as_mut() {
            session.handle_datagram(self.now, f.from, &f.bytes);
        }
    }
}
