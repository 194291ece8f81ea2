//! Boot-storm simulator: N machines fetch one file from M TFTP server nodes
//! at once, in virtual time, through a network model, with the real
//! sans-IO sessions of `tftp-proto` on both ends (the server's with GSO
//! batching, as tftpd runs them).
//!
//! The model, per node: one link each way of `--link-gbps`, a FIFO queue of
//! `--queue-kib` in front of each (drop-tail), `--rtt-us` round trip plus up
//! to `--jitter-us` per packet, `--loss` per packet (seeded), and
//! `--cores` server cores that spend `--cpu-ns` per datagram received or
//! sent. Machine `i` boots from node `i % M` and powers on at a time drawn
//! uniformly from `0..--ramp-s`; its own CPU is taken as infinitely fast.
//! `--sample K` simulates every K-th machine of each node with links and
//! cores K times smaller: a fluid approximation, close to the full run
//! where the links are the bottleneck (a storm: the test below holds it to
//! 10 %), pessimistic where each session's window is (a sampled session
//! has a K-th of the link to share with fewer others, so it runs slower).
//!
//! It prints completion-time percentiles, retransmissions and the peak of
//! concurrent sessions per node, and writes an SVG of machines booted over
//! time, one line per node.
//!
//! ```text
//! cargo run --release -p tftp-proto-check --example bootstorm -- \
//!     --clients 2000 --nodes 2 --size-mib 16 --svg /tmp/storm.svg
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use clap::Parser;
use plotters::prelude::*;
use tftp_proto::client::ClientGet;
use tftp_proto::options::{Limits, TransferOptions};
use tftp_proto::packet::{encode_data_header, Mode, Packet};
use tftp_proto::server::{accept, ServerRead};
use tftp_proto::session::{Batch, Output, Session, Transfer};
use tftp_proto::stats::Outcome;
use tftp_proto::time::Instant;
use tftp_proto_check::sim::Rng;

#[derive(Parser, Debug, Clone)]
#[command(about = "Simulates N machines booting from M TFTP nodes at once")]
struct Args {
    /// Machines booting.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Server nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Size of the file each machine fetches, MiB.
    #[arg(long, default_value_t = 16.0)]
    size_mib: f64,
    /// Block size the machines ask for.
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    /// Windowsize the machines ask for (1: lock-step).
    #[arg(long, default_value_t = 16)]
    windowsize: u16,
    /// Each node's link speed, each way, Gbit/s.
    #[arg(long, default_value_t = 10.0)]
    link_gbps: f64,
    /// Queue in front of each link, KiB (drop-tail).
    #[arg(long, default_value_t = 4096)]
    queue_kib: u64,
    /// Round-trip time between a machine and its node, microseconds.
    #[arg(long, default_value_t = 200)]
    rtt_us: u64,
    /// Extra random delay per packet, up to this, microseconds.
    #[arg(long, default_value_t = 50)]
    jitter_us: u64,
    /// Probability that a packet is lost, each way.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Server cores per node.
    #[arg(long, default_value_t = 4)]
    cores: usize,
    /// Server CPU per datagram received or sent, nanoseconds.
    #[arg(long, default_value_t = 1500)]
    cpu_ns: u64,
    /// Machines power on uniformly within this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp_s: f64,
    /// Simulate every K-th machine with K times smaller links and cores.
    #[arg(long, default_value_t = 1)]
    sample: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulation threads (nodes are independent).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where to write the plot.
    #[arg(long, default_value = "bootstorm.svg")]
    svg: String,
}

/// Virtual nanoseconds.
type Ns = u64;

fn to_instant(t: Ns) -> Instant {
    Instant::from_micros(t / 1000)
}

fn from_instant(t: Instant) -> Ns {
    t.since_epoch().as_nanos() as Ns
}

/// A datagram in flight: DATA is carried as its header only (its payload
/// is never looked at), anything else whole.
#[derive(Clone, Debug)]
enum Wire {
    Data { block: u16, len: usize },
    Other(Vec<u8>),
}

impl Wire {
    fn len(&self) -> usize {
        match self {
            Wire::Data { len, .. } => *len,
            Wire::Other(bytes) => bytes.len(),
        }
    }
}

#[derive(Debug)]
enum Event {
    /// A machine powers on.
    Start(usize),
    /// Datagrams reach machine `client` from the node's port `port`.
    ToClient {
        client: usize,
        port: u16,
        wires: Vec<Wire>,
    },
    /// A datagram reaches the node from `client`, for `port` (69: a request).
    ToNode {
        client: usize,
        port: u16,
        wire: Wire,
    },
    /// A machine's timer.
    ClientTimer(usize),
    /// A server session's timer.
    ServerTimer(u16),
}

/// A map from small integer keys (a machine's index, a port): a vector of
/// slots, with no hashing per packet.
struct Slots<T> {
    slots: Vec<Option<T>>,
    len: usize,
}

impl<T> Slots<T> {
    fn new(keys: usize) -> Self {
        Slots {
            slots: std::iter::repeat_with(|| None).take(keys).collect(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slots.get_mut(key)?.as_mut()
    }

    fn contains_key(&self, key: usize) -> bool {
        self.slots.get(key).is_some_and(Option::is_some)
    }

    fn insert(&mut self, key: usize, value: T) {
        if self.slots[key].replace(value).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.slots.get_mut(key)?.take();
        self.len -= usize::from(value.is_some());
        value
    }
}

/// One FIFO link with a drop-tail queue.
struct Link {
    free_at: Ns,
    ns_per_byte: f64,
    queue_ns: Ns,
}

impl Link {
    /// When a packet of `len` bytes offered at `t` has left, or `None` if
    /// the queue is full.
    fn send(&mut self, t: Ns, len: usize) -> Option<Ns> {
        let start = self.free_at.max(t);
        if start - t > self.queue_ns {
            return None;
        }
        // 28 bytes of IPv4 and UDP headers, 38 of Ethernet framing.
        self.free_at = start + ((len + 66) as f64 * self.ns_per_byte) as Ns;
        Some(self.free_at)
    }
}

struct Client {
    session: Option<ClientGet>,
    started: Ns,
    deadline: Option<Ns>,
}

struct ServerSide {
    session: ServerRead,
    client: usize,
    left: u64,
    deadline: Option<Ns>,
}

/// What one node's simulation found.
#[derive(Default)]
struct NodeResult {
    /// (completion time, seconds since power-on) of each machine that booted.
    booted: Vec<(f64, f64)>,
    failed: usize,
    retransmits: u64,
    client_retransmits: u64,
    dropped: u64,
    peak_sessions: usize,
    events: u64,
}

struct Node<'a> {
    args: &'a Args,
    index: usize,
    clients: Vec<usize>,
    /// By the machine's index in `clients`.
    machines: Slots<Client>,
    /// By session port.
    sessions: Slots<ServerSide>,
    /// The session port of each machine being served (a repeated request
    /// is not a new session).
    by_client: Slots<u16>,
    next_port: u16,
    down: Link,
    up: Link,
    cores: Vec<Ns>,
    cpu_ns: Ns,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Ns, u64, usize)>>,
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    seq: u64,
    limits: Limits,
    size: u64,
    scratch: Vec<u8>,
    result: NodeResult,
}

const LISTEN_PORT: u16 = 69;

impl<'a> Node<'a> {
    fn new(args: &'a Args, index: usize, clients: Vec<usize>) -> Self {
        let scale = args.sample.max(1) as f64;
        let ns_per_byte = 8.0 / args.link_gbps * scale;
        let queue_ns = (args.queue_kib as f64 * 1024.0 * ns_per_byte / scale) as Ns;
        let link = || Link {
            free_at: 0,
            ns_per_byte,
            queue_ns,
        };
        let machines = clients.len();
        Node {
            args,
            index,
            clients,
            machines: Slots::new(machines),
            sessions: Slots::new(usize::from(u16::MAX) + 1),
            by_client: Slots::new(machines),
            next_port: 1024,
            down: link(),
            up: link(),
            cores: vec![0; args.cores.max(1)],
            cpu_ns: args.cpu_ns.saturating_mul(args.sample.max(1) as u64),
            rng: Rng::new(args.seed ^ (index as u64).wrapping_mul(0x9e37)),
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
            limits: Limits::default(),
            size: (args.size_mib * 1024.0 * 1024.0) as u64,
            scratch: vec![0; 65_536],
            result: NodeResult::default(),
        }
    }

    fn push(&mut self, at: Ns, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    fn delay(&mut self) -> Ns {
        self.args.rtt_us * 500 + self.rng.below(self.args.jitter_us * 1000 + 1)
    }

    /// A packet of `len` bytes offered at `t` to the link from the node
    /// (`down`) or to it: when it has left, or `None` if it was lost or
    /// found the queue full (both counted as drops).
    fn offer(&mut self, down: bool, t: Ns, len: usize) -> Option<Ns> {
        let left = if self.rng.chance((self.args.loss * 1e6) as u32) {
            None
        } else if down {
            self.down.send(t, len)
        } else {
            self.up.send(t, len)
        };
        if left.is_none() {
            self.result.dropped += 1;
        }
        left
    }

    fn client_addr(&self, client: usize) -> SocketAddr {
        let ip = Ipv4Addr::from(0x0a00_0000 + self.clients[client] as u32);
        SocketAddr::V4(SocketAddrV4::new(ip, 1069))
    }

    fn node_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(192, 168, 0, self.index as u8),
            port,
        ))
    }

    fn run(mut self) -> NodeResult {
        let ramp = (self.args.ramp_s * 1e9) as u64;
        for client in 0..self.clients.len() {
            let at = self.rng.below(ramp + 1);
            self.push(at, Event::Start(client));
        }
        while let Some(Reverse((now, _, slot))) = self.queue.pop() {
            let Some(event) = self.events[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.result.events += 1;
            match event {
                Event::Start(client) => self.start(now, client),
                Event::ToClient {
                    client,
                    port,
                    wires,
                } => self.at_client(now, client, port, wires),
                Event::ToNode { client, port, wire } => self.at_node(now, client, port, wire),
                Event::ClientTimer(client) => self.client_timer(now, client),
                Event::ServerTimer(port) => self.server_timer(now, port),
            }
        }
        self.result.failed += self.machines.len();
        self.result
    }

    fn start(&mut self, now: Ns, client: usize) {
        let options = TransferOptions {
            blksize: (self.args.blksize != 512).then_some(self.args.blksize),
            windowsize: (self.args.windowsize > 1).then_some(self.args.windowsize),
            tsize: Some(0),
            ..TransferOptions::default()
        };
        let listen = self.node_addr(LISTEN_PORT);
        let session = Transfer::get(
            listen,
            b"boot.img",
            Mode::Octet,
            options,
            &self.limits,
            to_instant(now),
        )
        .expect("a request fits");
        self.machines.insert(
            client,
            Client {
                session: Some(session),
                started: now,
                deadline: None,
            },
        );
        self.drain_client(now, client);
    }

    /// Runs a machine's session until it waits, sending what it sends.
    fn drain_client(&mut self, now: Ns, client: usize) {
        let mut out: Vec<(u16, Wire)> = Vec::new();
        let Some(machine) = self.machines.get_mut(client) else {
            return;
        };
        let Some(session) = machine.session.as_mut() else {
            return;
        };
        let done = loop {
            match session.poll(to_instant(now)) {
                Output::Transmit { to, bytes, .. } => {
                    out.push((to.port(), Wire::Other(bytes.to_vec())))
                }
                Output::Deliver(_) | Output::Finish => session.delivered(),
                Output::Verified => {}
                Output::Fill(_) => session.filled(0),
                Output::Wait(deadline) => {
                    let deadline = from_instant(deadline);
                    // Booted once the final ACK is out (the machine's dally
                    // after it is not waited for).
                    if session.is_transfer_complete() {
                        break Some((Outcome::Completed, session.stats().retransmits));
                    }
                    let d = deadline.max(now + 1);
                    if machine.deadline != Some(d) {
                        machine.deadline = Some(d);
                        self.push(d, Event::ClientTimer(client));
                    }
                    break None;
                }
                Output::Done(outcome) => break Some((outcome, session.stats().retransmits)),
            }
        };

        for (port, wire) in out {
            if let Some(left) = self.offer(false, now, wire.len()) {
                let at = left + self.delay();
                self.push(at, Event::ToNode { client, port, wire });
            }
        }
        if let Some((outcome, retransmits)) = done {
            let started = self.machines.remove(client).map_or(now, |m| m.started);
            self.result.client_retransmits += retransmits;
            if outcome == Outcome::Completed {
                self.result
                    .booted
                    .push((now as f64 / 1e9, (now - started) as f64 / 1e9));
            } else {
                self.result.failed += 1;
            }
        }
    }

    fn at_client(&mut self, now: Ns, client: usize, port: u16, wires: Vec<Wire>) {
        let from = self.node_addr(port);
        for wire in &wires {
            let Some(session) = self
                .machines
                .get_mut(client)
                .and_then(|m| m.session.as_mut())
            else {
                return;
            };
            match wire {
                Wire::Data { block, len } => {
                    let packet = &mut self.scratch[..*len];
                    encode_data_header(packet, *block).expect("header fits");
                    session.handle_datagram(to_instant(now), from, packet);
                }
                Wire::Other(bytes) => session.handle_datagram(to_instant(now), from, bytes),
            }
            self.drain_client(now, client);
        }
    }

    /// The earliest free core, busy for `packets` datagrams from `now`:
    /// returns when it is done.
    fn cpu(&mut self, now: Ns, packets: u64) -> Ns {
        let core = (0..self.cores.len())
            .min_by_key(|&i| self.cores[i])
            .unwrap_or(0);
        let start = self.cores[core].max(now);
        self.cores[core] = start + self.cpu_ns * packets;
        self.cores[core]
    }

    fn at_node(&mut self, now: Ns, client: usize, port: u16, wire: Wire) {
        let bytes = match wire {
            Wire::Other(b) => b,
            Wire::Data { .. } => return,
        };
        let peer = self.client_addr(client);
        if port == LISTEN_PORT {
            if self.by_client.contains_key(client) {
                return;
            }
            let Ok(request) = accept(&bytes, peer, &self.limits) else {
                return;
            };
            let oack = request.negotiate(&self.limits, Some(self.size)).oack;
            let mut session = Transfer::server_read(&request, oack, &self.limits, to_instant(now));
            session.set_batch(Batch {
                segments: 64,
                bytes: 65_000,
                max_segment: 1472,
            });
            let port = self.next_port;
            self.next_port = if self.next_port == u16::MAX {
                1024
            } else {
                self.next_port + 1
            };
            self.sessions.insert(
                usize::from(port),
                ServerSide {
                    session,
                    client,
                    left: self.size,
                    deadline: None,
                },
            );
            self.by_client.insert(client, port);
            self.result.peak_sessions = self.result.peak_sessions.max(self.sessions.len());
            self.drain_server(now, port, 1);
            return;
        }
        let Some(side) = self.sessions.get_mut(usize::from(port)) else {
            return;
        };
        side.session.handle_datagram(to_instant(now), peer, &bytes);
        self.drain_server(now, port, 1);
    }

    fn drain_server(&mut self, now: Ns, port: u16, received: u64) {
        let Some(side) = self.sessions.get_mut(usize::from(port)) else {
            return;
        };
        let client = side.client;
        let mut out: Vec<Wire> = Vec::new();
        let mut done = false;
        loop {
            match side.session.poll(to_instant(now)) {
                Output::Transmit {
                    bytes,
                    segment_size,
                    ..
                } => {
                    for packet in bytes.chunks(segment_size.max(1)) {
                        match Packet::parse(packet) {
                            Ok(Packet::Data { block, payload }) => out.push(Wire::Data {
                                block,
                                len: 4 + payload.len(),
                            }),
                            _ => out.push(Wire::Other(packet.to_vec())),
                        }
                    }
                }
                // The payload is never looked at: only its length counts.
                Output::Fill(buf) => {
                    let n = (buf.len() as u64).min(side.left);
                    side.left -= n;
                    side.session.filled(n as usize);
                }
                Output::Deliver(_) | Output::Finish => side.session.delivered(),
                Output::Verified => {}
                Output::Wait(deadline) => {
                    let d = from_instant(deadline).max(now + 1);
                    if side.deadline != Some(d) {
                        side.deadline = Some(d);
                        self.push(d, Event::ServerTimer(port));
                    }
                    break;
                }
                Output::Done(_) => {
                    done = true;
                    break;
                }
            }
        }
        if done {
            if let Some(side) = self.sessions.remove(usize::from(port)) {
                self.result.retransmits += side.session.stats().retransmits;
                self.by_client.remove(side.client);
            }
        }
        let ready = self.cpu(now, received + out.len() as u64);
        // Datagrams of one burst arrive together, when the last has.
        let mut wires = Vec::with_capacity(out.len());
        let mut arrive = 0;
        for wire in out {
            if let Some(left) = self.offer(true, ready, wire.len()) {
                arrive = left;
                wires.push(wire);
            }
        }
        if !wires.is_empty() {
            let at = arrive + self.delay();
            self.push(
                at,
                Event::ToClient {
                    client,
                    port,
                    wires,
                },
            );
        }
    }

    fn client_timer(&mut self, now: Ns, client: usize) {
        let Some(machine) = self.machines.get_mut(client) else {
            return;
        };
        if machine.deadline.is_none_or(|d| d > now) {
            return;
        }
        machine.deadline = None;
        if let Some(session) = machine.session.as_mut() {
            session.handle_timeout(to_instant(now));
        }
        self.drain_client(now, client);
    }

    fn server_timer(&mut self, now: Ns, port: u16) {
        let Some(side) = self.sessions.get_mut(usize::from(port)) else {
            return;
        };
        if side.deadline.is_none_or(|d| d > now) {
            return;
        }
        side.deadline = None;
        side.session.handle_timeout(to_instant(now));
        self.drain_server(now, port, 0);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn plot(
    path: &str,
    per_node: &[Vec<(f64, f64)>],
    sample: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let end = per_node
        .iter()
        .flatten()
        .map(|&(t, _)| t)
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let most = per_node.iter().map(Vec::len).max().unwrap_or(0) * sample;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Machines booted over time, per node", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end * 1.02, 0usize..(most.max(1) + most / 20 + 1))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first power-on")
        .y_desc("machines booted")
        .draw()?;
    for (i, booted) in per_node.iter().enumerate() {
        let mut times: Vec<f64> = booted.iter().map(|&(t, _)| t).collect();
        times.sort_by(f64::total_cmp);
        let color = Palette99::pick(i).to_rgba();
        let points = std::iter::once((0.0, 0)).chain(
            times
                .iter()
                .enumerate()
                .map(|(n, &t)| (t, (n + 1) * sample)),
        );
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("node {i}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The machines each node serves: machine `i` boots from node `i % M`, and
/// a sample keeps every K-th machine of each node (not every K-th machine,
/// which would leave whole nodes empty when K and M share a factor).
fn assign(clients: usize, nodes: usize, sample: usize) -> Vec<Vec<usize>> {
    let (nodes, sample) = (nodes.max(1), sample.max(1));
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for client in 0..clients {
        if (client / nodes) % sample == 0 {
            assigned[client % nodes].push(client);
        }
    }
    assigned
}

/// Runs every node's simulation (nodes are independent), on `--threads`
/// threads; the results in node order.
fn simulate(args: &Args) -> Vec<(usize, NodeResult)> {
    let nodes = args.nodes.max(1);
    let assigned = assign(args.clients, nodes, args.sample);
    let threads = args.threads.clamp(1, nodes);
    let mut results: Vec<(usize, NodeResult)> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let assigned = &assigned;
                scope.spawn(move || {
                    (t..nodes)
                        .step_by(threads)
                        .map(|n| (n, Node::new(args, n, assigned[n].clone()).run()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            results.extend(h.join().expect("a node's simulation panicked"));
        }
    });
    results.sort_by_key(|(n, _)| *n);
    results
}

/// Completion times (seconds since power-on) of every machine that booted,
/// sorted.
fn completion_times(results: &[(usize, NodeResult)]) -> Vec<f64> {
    let mut times: Vec<f64> = results
        .iter()
        .flat_map(|(_, r)| r.booted.iter().map(|&(_, d)| d))
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    let args = Args::parse();
    let wall = std::time::Instant::now();
    let sample = args.sample.max(1);
    let nodes = args.nodes.max(1);
    let results = simulate(&args);
    let times = completion_times(&results);
    let all_done = results
        .iter()
        .flat_map(|(_, r)| r.booted.iter().map(|&(t, _)| t))
        .fold(0.0f64, f64::max);
    let sum =
        |f: fn(&NodeResult) -> u64| results.iter().map(|(_, r)| f(r)).sum::<u64>() * sample as u64;
    println!(
        "{} machines x {} MiB from {} nodes ({} Gbit/s, {} cores x {} ns/packet), blksize {} windowsize {}, rtt {} us, loss {}{}",
        args.clients,
        args.size_mib,
        nodes,
        args.link_gbps,
        args.cores,
        args.cpu_ns,
        args.blksize,
        args.windowsize,
        args.rtt_us,
        args.loss,
        if sample > 1 { format!(", every {sample}th machine simulated") } else { String::new() }
    );
    println!(
        "booted {} failed {} | completion p50 {:.2} s  p99 {:.2} s  max {:.2} s | all booted after {:.2} s",
        times.len() * sample,
        results.iter().map(|(_, r)| r.failed).sum::<usize>() * sample,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0),
        all_done
    );
    println!(
        "retransmissions: server DATA {}  client ACK/RRQ {} | packets dropped {}",
        sum(|r| r.retransmits),
        sum(|r| r.client_retransmits),
        sum(|r| r.dropped)
    );
    for (n, r) in &results {
        println!(
            "node {n}: booted {}  peak sessions {}  events {}",
            r.booted.len() * sample,
            r.peak_sessions * sample,
            r.events
        );
    }
    let per_node: Vec<Vec<(f64, f64)>> = results.into_iter().map(|(_, r)| r.booted).collect();
    match plot(&args.svg, &per_node, sample) {
        Ok(()) => println!("plot: {}", args.svg),
        Err(e) => eprintln!("plot failed: {e}"),
    }
    println!("simulated in {:.1} s", wall.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let base = ["bootstorm", "--svg", "/dev/null"];
        Args::parse_from(base.iter().chain(extra))
    }

    #[test]
    fn a_sample_keeps_every_node_busy() {
        for (clients, nodes, sample) in [(2000, 2, 10), (1000, 10, 10), (7, 3, 2), (5, 1, 1)] {
            let assigned = assign(clients, nodes, sample);
            let sizes: Vec<usize> = assigned.iter().map(Vec::len).collect();
            let least = sizes.iter().min().copied().unwrap_or(0);
            let most = sizes.iter().max().copied().unwrap_or(0);
            assert!(least > 0, "{clients}/{nodes}/{sample}: {sizes:?}");
            assert!(most - least <= 1, "{sizes:?}");
            let kept: usize = sizes.iter().sum();
            assert!(kept >= clients / sample && kept <= clients.div_ceil(sample) + nodes);
            for (node, machines) in assigned.iter().enumerate() {
                assert!(machines.iter().all(|&m| m % nodes == node));
            }
        }
    }

    /// Where the links are the bottleneck (a storm), simulating every 10th
    /// machine on links and cores 10 times smaller tells the same story as
    /// simulating them all.
    #[test]
    fn a_sampled_storm_matches_the_full_one() {
        let storm = [
            "--clients",
            "400",
            "--nodes",
            "2",
            "--size-mib",
            "1",
            "--link-gbps",
            "1",
            "--queue-kib",
            "1024",
        ];
        let full = simulate(&args(&storm));
        let sampled = simulate(&args(&[&storm[..], &["--sample", "10"]].concat()));
        let (f, s) = (completion_times(&full), completion_times(&sampled));
        assert_eq!(f.len(), 400);
        assert_eq!(s.len(), 40);
        for p in [0.5, 0.99] {
            let (a, b) = (percentile(&f, p), percentile(&s, p));
            println!("p{}: full {a:.3} s, sampled {b:.3} s", p * 100.0);
            assert!(
                (b / a - 1.0).abs() < 0.15,
                "p{p}: full {a} s, sampled {b} s"
            );
        }
        let drops =
            |r: &[(usize, NodeResult)], k: u64| r.iter().map(|(_, n)| n.dropped).sum::<u64>() * k;
        println!(
            "drops: full {}, sampled {}",
            drops(&full, 1),
            drops(&sampled, 10)
        );
    }
}
