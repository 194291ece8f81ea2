//! `--metrics ADDR`: the server counters and a histogram of transfer
//! durations in the Prometheus/OpenMetrics text format (`prometheus-client`),
//! served by hyper as tasks of the server's own tokio runtime, so no thread
//! exists before privileges are dropped and none keeps them.
//!
//! The endpoint is bounded like the TFTP side: at most [`MAX_CONNECTIONS`]
//! at once, request headers of at most [`MAX_HEADER_BYTES`] that must
//! arrive within [`HEADER_TIMEOUT`], each connection closed after
//! [`CONNECTION_TIMEOUT`], and an accept error (out of descriptors) only
//! pauses accepting for [`ACCEPT_BACKOFF`]. Idle connections cannot starve
//! scrapes: a new connection is always accepted, and when all
//! [`MAX_CONNECTIONS`] are taken, the oldest one that has not sent a whole
//! request head yet is closed to make room for it (as the unverified TFTP
//! sessions give their place to newer requests). A connection that has sent
//! its request is answered at once and never closed early.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tftp_proto::stats::Stats;
use tftp_tokio::http::{HttpServer, HttpStats};
use tftp_tokio::StatsHandle;

use crate::stack::Stack;

/// Most metrics connections served at once; past it, the oldest one that
/// has not sent its request head is closed to admit a new one.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request head (request line and headers) read.
pub const MAX_HEADER_BYTES: usize = 8192;
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS) before the next.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Upper bounds (seconds) of the duration histogram buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Durations of finished transfers, by protocol (`tftp`, `http`).
#[derive(Clone, Debug)]
pub struct Durations(Family<[(&'static str, &'static str); 1], Histogram>);

impl Default for Durations {
    fn default() -> Self {
        Durations(Family::new_with_constructor(|| Histogram::new(BUCKETS)))
    }
}

impl Durations {
    /// Records a finished TFTP session.
    pub fn observe(&self, s: &Stats) {
        if let Some(finished) = s.finished {
            self.0
                .get_or_create(&[("protocol", "tftp")])
                .observe((finished - s.started).as_secs_f64());
        }
    }

    /// Records a finished HTTP request.
    pub fn observe_http(&self, s: &HttpStats) {
        self.0
            .get_or_create(&[("protocol", "http")])
            .observe(s.duration.as_secs_f64());
    }
}

/// The server's counters, read on each scrape.
#[derive(Debug)]
struct Counters(StatsHandle, Arc<AtomicU64>);

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let counters: [(&str, &str, u64); 16] = [
            ("sessions_started", "Transfers started.", s.sessions_started),
            (
                "sessions_completed",
                "Transfers completed.",
                s.sessions_completed,
            ),
            (
                "sessions_probed",
                "OACKs answered with ERROR 8 (size probes).",
                s.sessions_probed,
            ),
            ("sessions_failed", "Transfers failed.", s.sessions_failed),
            (
                "sessions_evicted",
                "Unverified transfers that gave their place to a newer request, and single-port transfers replaced by their client's new request.",
                s.sessions_evicted,
            ),
            (
                "sessions_unverified",
                "Transfers that timed out or were evicted before the client answered (spoofed or vanished sources).",
                s.sessions_unverified,
            ),
            ("bytes_sent", "Payload bytes sent.", s.bytes_sent),
            ("bytes_received", "Payload bytes received.", s.bytes_received),
            (
                "packets_sent",
                "Datagrams sent by transfers.",
                s.packets_sent,
            ),
            (
                "packets_received",
                "Datagrams received by transfers.",
                s.packets_received,
            ),
            ("retransmits", "DATA retransmissions.", s.retransmits),
            ("timeouts", "Retransmission timer expiries.", s.timeouts),
            (
                "rejected_by_limits",
                "Requests refused by a session limit.",
                s.rejected_by_limits,
            ),
            (
                "duplicate_requests",
                "Retransmitted requests ignored.",
                s.duplicate_requests,
            ),
            (
                "bad_requests",
                "Malformed requests and ignored datagrams.",
                s.bad_requests,
            ),
            (
                "metrics_accept_errors",
                "Failed accepts on the metrics endpoint (e.g. out of descriptors).",
                self.1.load(Ordering::Relaxed),
            ),
        ];
        let gauges: [(&str, &str, i64); 2] = [
            (
                "sessions_active",
                "Transfers running.",
                s.sessions_active as i64,
            ),
            (
                "session_memory_bytes",
                "Bytes of the --max-memory budget the running transfers hold.",
                self.0.memory_in_use() as i64,
            ),
        ];
        encode_consts(&mut encoder, &counters, &gauges)?;
        let mut errors = encoder.encode_descriptor(
            "errors",
            "Transfers that ended with an ERROR, by code.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (code, n) in s.errors_by_code.iter().enumerate() {
            let label = if code == 9 {
                "other".to_string()
            } else {
                code.to_string()
            };
            ConstCounter::new(*n).encode(errors.encode_family(&[("code", label)])?)?;
        }
        Ok(())
    }
}

/// Encodes constant counters (name, help, value) and gauges.
fn encode_consts(
    encoder: &mut DescriptorEncoder<'_>,
    counters: &[(&str, &str, u64)],
    gauges: &[(&str, &str, i64)],
) -> Result<(), std::fmt::Error> {
    for &(name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    for &(name, help, value) in gauges {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

/// The origin handler's counters (`--origin`), read on each scrape.
#[derive(Debug)]
struct OriginCounters(tftp_origin::Origin);

impl Collector for OriginCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let counters: [(&str, &str, u64); 14] = [
            (
                "origin_lookups",
                "Read requests the origin handler answered.",
                s.requests,
            ),
            ("cache_hits", "Served from a fresh cached copy.", s.hits),
            (
                "cache_misses",
                "Fetched because nothing was cached.",
                s.misses,
            ),
            (
                "cache_revalidations",
                "Conditional requests sent for stale copies.",
                s.revalidations,
            ),
            (
                "cache_revalidated_unchanged",
                "Revalidations answered unchanged (304).",
                s.revalidated_unchanged,
            ),
            (
                "cache_refreshed",
                "Stale copies replaced by a new version.",
                s.refreshed,
            ),
            (
                "cache_stale_served",
                "Served from a stale copy because the origin failed.",
                s.stale_served,
            ),
            (
                "cache_bypassed",
                "Streamed from the origin without caching.",
                s.bypassed,
            ),
            (
                "cache_evictions",
                "Objects evicted to make room.",
                s.evictions,
            ),
            (
                "origin_requests",
                "Requests sent to the origin.",
                s.origin_requests,
            ),
            (
                "origin_bytes",
                "Body bytes received from the origin.",
                s.origin_bytes,
            ),
            (
                "origin_errors",
                "Origin requests or bodies that failed.",
                s.origin_errors,
            ),
            (
                "origin_aborted",
                "Origin requests abandoned: every transfer waiting on them ended first.",
                s.origin_aborted,
            ),
            (
                "cache_stale_expired",
                "Stale copies dropped: the origin still failed past --stale-if-error.",
                s.stale_expired,
            ),
        ];
        let gauges: [(&str, &str, i64); 4] = [
            (
                "cache_bytes",
                "Bytes stored in the origin cache.",
                s.cache_bytes as i64,
            ),
            (
                "cache_objects",
                "Objects stored in the origin cache.",
                s.cache_objects as i64,
            ),
            (
                "origin_active",
                "Origin requests running now (at most --origin-max-requests).",
                s.origin_active as i64,
            ),
            (
                "origin_queued",
                "Requests waiting for an origin request slot now.",
                s.origin_queued as i64,
            ),
        ];
        encode_consts(&mut encoder, &counters, &gauges)?;
        Ok(())
    }
}

/// The HTTP side's counters (`--http`).
#[derive(Debug)]
struct HttpCounters(HttpServer<Stack>);

impl Collector for HttpCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let counters: [(&str, &str, u64); 8] = [
            (
                "http_connections",
                "HTTP connections accepted.",
                s.connections,
            ),
            (
                "http_connections_refused",
                "HTTP connections closed at once for being over a connection limit.",
                s.connections_refused,
            ),
            (
                "http_accept_errors",
                "Failed accepts on the HTTP listeners (e.g. out of descriptors).",
                s.accept_errors,
            ),
            ("http_requests", "HTTP requests answered.", s.requests),
            (
                "http_completed",
                "HTTP requests whose answer was sent whole.",
                s.completed,
            ),
            (
                "http_refused",
                "HTTP requests answered with an error status.",
                s.refused,
            ),
            (
                "http_aborted",
                "HTTP response bodies that stopped short (client gone or stalled, source failed).",
                s.aborted,
            ),
            ("http_bytes_sent", "HTTP body bytes sent.", s.bytes_sent),
        ];
        let gauges: [(&str, &str, i64); 1] = [(
            "http_connections_active",
            "HTTP connections open.",
            s.connections_active as i64,
        )];
        encode_consts(&mut encoder, &counters, &gauges)
    }
}

/// What a scrape renders.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The server's counters (through `stats`) and `durations`.
    pub fn new(
        stats: StatsHandle,
        durations: &Durations,
        accept_errors: Arc<AtomicU64>,
        origin: Option<tftp_origin::Origin>,
        http: Option<HttpServer<Stack>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("tftpd");
        registry.register(
            "transfer_duration_seconds",
            "Duration of finished transfers and HTTP requests, by protocol.",
            durations.0.clone(),
        );
        registry.register_collector(Box::new(Counters(stats, accept_errors)));
        if let Some(origin) = origin {
            registry.register_collector(Box::new(OriginCounters(origin)));
        }
        if let Some(http) = http {
            registry.register_collector(Box::new(HttpCounters(http)));
        }
        Metrics { registry }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Binds the endpoint's socket (before privileges are dropped; no thread).
pub fn bind(
    addr: SocketAddr,
) -> Result<std::net::TcpListener, Box<dyn std::error::Error + Send + Sync>> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A connection being served, as the admission sees it.
#[derive(Debug)]
struct Open {
    id: u64,
    /// Set once its request head has arrived (the service was called).
    requested: Arc<AtomicBool>,
    /// Notified to close it.
    close: Arc<tokio::sync::Notify>,
}

/// The connections being served, oldest first.
#[derive(Debug, Default)]
struct Connections {
    next_id: u64,
    open: VecDeque<Open>,
}

impl Connections {
    /// Registers a new connection: its id, request flag and close signal.
    fn add(&mut self) -> (u64, Arc<AtomicBool>, Arc<tokio::sync::Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let requested = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        self.open.push_back(Open {
            id,
            requested: Arc::clone(&requested),
            close: Arc::clone(&close),
        });
        (id, requested, close)
    }

    fn remove(&mut self, id: u64) {
        self.open.retain(|c| c.id != id);
    }

    /// Closes the oldest connection that has not sent its whole request
    /// head; false if every one has (they are being answered).
    fn close_oldest_idle(&mut self) -> bool {
        let Some(i) = self
            .open
            .iter()
            .position(|c| !c.requested.load(Ordering::Acquire))
        else {
            return false;
        };
        if let Some(c) = self.open.remove(i) {
            // Stored if the task is not waiting yet: it ends at its next poll.
            c.close.notify_one();
        }
        true
    }
}

/// Serves `GET /metrics` on the current tokio runtime until the process
/// exits.
pub fn spawn(
    listener: std::net::TcpListener,
    stats: StatsHandle,
    durations: &Durations,
    origin: Option<tftp_origin::Origin>,
    http: Option<HttpServer<Stack>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let accept_errors = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(Metrics::new(
        stats,
        durations,
        Arc::clone(&accept_errors),
        origin,
        http,
    ));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = Arc::new(Mutex::new(Connections::default()));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "metrics accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // At the cap: the oldest idle connection makes room (its
                    // task ends and gives its permit back); if every one is
                    // being answered, one will be done shortly.
                    let closed = lock(&connections).close_oldest_idle();
                    if closed {
                        tracing::debug!("metrics: closed the oldest idle connection");
                    }
                    // The semaphore is never closed.
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return;
                    };
                    permit
                }
            };
            let (id, requested, close) = lock(&connections).add();
            let metrics = Arc::clone(&metrics);
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    requested.store(true, Ordering::Release);
                    let response = respond(&metrics, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
                    () = close.notified() => {}
                }
                // Out of the table before the permit is back, so the next
                // admission sees only connections that hold one.
                lock(&connections).remove(id);
                drop(permit);
            });
        }
    });
    Ok(())
}

/// The table, even if a task panicked holding it (it stays consistent).
fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    connections
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.uri().path() == "/metrics" {
        (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "see /metrics\n".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let mut table = Connections::default();
        let (a, a_requested, _) = table.add();
        let (b, _, b_close) = table.add();
        let (_, _, c_close) = table.add();
        // `a` has sent its request: it is being answered, never closed.
        a_requested.store(true, Ordering::Release);
        assert!(table.close_oldest_idle());
        let ids: Vec<u64> = table.open.iter().map(|c| c.id).collect();
        assert_eq!(ids, [a, b + 1]);
        // The close was signalled to `b` (a stored permit), not to `c`.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = |n: &tokio::sync::Notify, cx: &mut std::task::Context<'_>| {
            std::pin::pin!(n.notified()).poll(cx).is_ready()
        };
        assert!(polled(&b_close, &mut cx));
        assert!(!polled(&c_close, &mut cx));
        table.remove(b + 1);
        assert!(!table.close_oldest_idle(), "only answered connections left");
        table.remove(a);
        assert!(table.open.is_empty());
    }
}
