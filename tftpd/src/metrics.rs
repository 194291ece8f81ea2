//! `--metrics ADDR`: the server counters and a histogram of transfer
//! durations in Prometheus text format, served by `tiny_http` on a thread of
//! its own (it never touches the transfer path).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tftp_proto::stats::Stats;
use tftp_tokio::StatsHandle;

/// Upper bounds (seconds) of the duration histogram buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Durations of finished sessions (lock-free).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records a finished session.
    pub fn observe(&self, s: &Stats) {
        let Some(finished) = s.finished else { return };
        let d = finished - s.started;
        let secs = d.as_secs_f64();
        for (bucket, le) in self.buckets.iter().zip(BUCKETS) {
            if secs <= le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A bound metrics endpoint.
pub struct Listener(tiny_http::Server);

impl Listener {
    /// The bound address.
    pub fn addr(&self) -> String {
        self.0.server_addr().to_string()
    }
}

/// Binds the endpoint (before privileges are dropped).
pub fn bind(addr: SocketAddr) -> Result<Listener, Box<dyn std::error::Error + Send + Sync>> {
    tiny_http::Server::http(addr)
        .map(Listener)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}").into())
}

/// Serves `GET /metrics` until the process exits.
pub fn spawn(listener: Listener, stats: StatsHandle, histogram: Arc<Histogram>) {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in listener.0.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let header =
                        tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                            .expect("static header");
                    tiny_http::Response::from_string(render(&stats, &histogram)).with_header(header)
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                let _ = request.respond(response);
            }
        })
        .expect("metrics thread");
}

/// The Prometheus text exposition.
pub fn render(stats: &StatsHandle, h: &Histogram) -> String {
    let s = stats.snapshot();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP tftpd_{name} {help}\n# TYPE tftpd_{name} {kind}\ntftpd_{name} {value}"
        );
    };
    metric(
        "sessions_started_total",
        "counter",
        "Transfers started.",
        s.sessions_started,
    );
    metric(
        "sessions_completed_total",
        "counter",
        "Transfers completed.",
        s.sessions_completed,
    );
    metric(
        "sessions_probed_total",
        "counter",
        "OACKs answered with ERROR 8 (size probes).",
        s.sessions_probed,
    );
    metric(
        "sessions_failed_total",
        "counter",
        "Transfers failed.",
        s.sessions_failed,
    );
    metric(
        "sessions_active",
        "gauge",
        "Transfers running.",
        s.sessions_active,
    );
    metric(
        "bytes_sent_total",
        "counter",
        "Payload bytes sent.",
        s.bytes_sent,
    );
    metric(
        "bytes_received_total",
        "counter",
        "Payload bytes received.",
        s.bytes_received,
    );
    metric(
        "packets_sent_total",
        "counter",
        "Datagrams sent by transfers.",
        s.packets_sent,
    );
    metric(
        "packets_received_total",
        "counter",
        "Datagrams received by transfers.",
        s.packets_received,
    );
    metric(
        "retransmits_total",
        "counter",
        "DATA retransmissions.",
        s.retransmits,
    );
    metric(
        "timeouts_total",
        "counter",
        "Retransmission timer expiries.",
        s.timeouts,
    );
    metric(
        "rejected_by_limits_total",
        "counter",
        "Requests refused by a session limit.",
        s.rejected_by_limits,
    );
    metric(
        "duplicate_requests_total",
        "counter",
        "Retransmitted requests ignored.",
        s.duplicate_requests,
    );
    metric(
        "bad_requests_total",
        "counter",
        "Malformed requests and ignored datagrams.",
        s.bad_requests,
    );
    let _ = writeln!(out, "# HELP tftpd_errors_total Transfers that ended with an ERROR, by code.\n# TYPE tftpd_errors_total counter");
    for (code, n) in s.errors_by_code.iter().enumerate() {
        let label = if code == 9 {
            "other".to_string()
        } else {
            code.to_string()
        };
        let _ = writeln!(out, "tftpd_errors_total{{code=\"{label}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP tftpd_transfer_duration_seconds Duration of finished transfers.\n# TYPE tftpd_transfer_duration_seconds histogram"
    );
    for (bucket, le) in h.buckets.iter().zip(BUCKETS) {
        let _ = writeln!(
            out,
            "tftpd_transfer_duration_seconds_bucket{{le=\"{le}\"}} {}",
            bucket.load(Ordering::Relaxed)
        );
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "tftpd_transfer_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "tftpd_transfer_duration_seconds_sum {}",
        h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "tftpd_transfer_duration_seconds_count {count}");
    out
}
