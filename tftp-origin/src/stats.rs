//! What the origin handler counts, and what each lookup reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a request was answered from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheResult {
    /// Served from a fresh cached copy (or one still arriving).
    Hit,
    /// Not cached: fetched (once for all who asked at the same time).
    Miss,
    /// Stale, and the origin said it is unchanged (304).
    Revalidated,
    /// Stale, and the origin sent a new version.
    Refreshed,
    /// The origin failed: served from the stale cached copy.
    Stale,
    /// Not cacheable (`no-store`, larger than the cache, caching off):
    /// streamed straight from the origin.
    Bypass,
    /// No object: the origin said not found or denied, or failed with
    /// nothing cached.
    Error,
}

impl CacheResult {
    /// A lower-case word for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Refreshed => "refreshed",
            CacheResult::Stale => "stale",
            CacheResult::Bypass => "bypass",
            CacheResult::Error => "error",
        }
    }
}

/// One request's trip through the origin handler, given to the
/// [`on_lookup`](crate::OriginBuilder::on_lookup) callback when its answer
/// is known (before the transfer starts; the session's own statistics come
/// from the server's `on_session_end`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Lookup {
    /// The client.
    pub peer: SocketAddr,
    /// The URL the request rendered to (`None` if the name was refused),
    /// whole: log it through [`redact`](crate::redact), which hides its
    /// credentials and query.
    pub url: Option<String>,
    /// How it was answered.
    pub result: CacheResult,
    /// The object's size, if known.
    pub size: Option<u64>,
    /// Time from the request to the answer (first body bytes not awaited).
    pub elapsed: Duration,
    /// The TFTP error code sent instead, if any.
    pub error: Option<u16>,
}

/// A snapshot of the origin handler's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginStats {
    /// Read requests the handler answered (any outcome).
    pub requests: u64,
    /// Served from a fresh cached copy.
    pub hits: u64,
    /// Fetched because nothing was cached.
    pub misses: u64,
    /// Conditional requests sent for stale copies.
    pub revalidations: u64,
    /// Of those, answered "unchanged" (304).
    pub revalidated_unchanged: u64,
    /// Stale copies replaced by a new version.
    pub refreshed: u64,
    /// Served stale because the origin failed.
    pub stale_served: u64,
    /// Streamed through without caching.
    pub bypassed: u64,
    /// Requests sent to the origin.
    pub origin_requests: u64,
    /// Body bytes received from the origin.
    pub origin_bytes: u64,
    /// Origin requests or bodies that failed (refused, timed out, 5xx, cut).
    pub origin_errors: u64,
    /// Objects evicted to make room.
    pub evictions: u64,
    /// Origin requests abandoned because every session waiting on them
    /// ended (evicted, timed out, cancelled) before they were done.
    pub origin_aborted: u64,
    /// Stale copies dropped instead of served: the origin was still failing
    /// past the stale-if-error bound.
    pub stale_expired: u64,
    /// Origin requests running now (at most the request cap).
    pub origin_active: u64,
    /// Requests waiting for a free origin request slot now.
    pub origin_queued: u64,
    /// Body bytes stored in the cache now.
    pub cache_bytes: u64,
    /// Objects stored in the cache now.
    pub cache_objects: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub revalidations: AtomicU64,
    pub revalidated_unchanged: AtomicU64,
    pub refreshed: AtomicU64,
    pub stale_served: AtomicU64,
    pub bypassed: AtomicU64,
    pub origin_requests: AtomicU64,
    pub origin_bytes: AtomicU64,
    pub origin_errors: AtomicU64,
    pub evictions: AtomicU64,
    pub origin_aborted: AtomicU64,
    pub stale_expired: AtomicU64,
    pub origin_active: AtomicU64,
    pub origin_queued: AtomicU64,
}

impl Counters {
    pub fn count(&self, how: CacheResult) {
        let counter = match how {
            CacheResult::Hit => &self.hits,
            CacheResult::Miss => &self.misses,
            CacheResult::Revalidated => &self.revalidated_unchanged,
            CacheResult::Refreshed => &self.refreshed,
            CacheResult::Stale => &self.stale_served,
            CacheResult::Bypass => &self.bypassed,
            CacheResult::Error => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, (cache_bytes, cache_objects): (u64, u64)) -> OriginStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OriginStats {
            requests: get(&self.requests),
            hits: get(&self.hits),
            misses: get(&self.misses),
            revalidations: get(&self.revalidations),
            revalidated_unchanged: get(&self.revalidated_unchanged),
            refreshed: get(&self.refreshed),
            stale_served: get(&self.stale_served),
            bypassed: get(&self.bypassed),
            origin_requests: get(&self.origin_requests),
            origin_aborted: get(&self.origin_aborted),
            stale_expired: get(&self.stale_expired),
            origin_active: get(&self.origin_active),
            origin_queued: get(&self.origin_queued),
            origin_bytes: get(&self.origin_bytes),
            origin_errors: get(&self.origin_errors),
            evictions: get(&self.evictions),
            cache_bytes,
            cache_objects,
        }
    }
}
