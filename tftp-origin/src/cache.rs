//! The bounded cache between the clients and the origin.
//!
//! - **Keyed by the rendered URL.** An entry holds one version of the
//!   object (in memory or in a file of the cache directory), its
//!   validators and until when it is fresh.
//! - **Single-flight.** At most one origin request per URL is in flight:
//!   the first request for a missing or stale entry starts it as its own
//!   task (so a client that goes away does not cancel it for the others);
//!   every request for the same URL meanwhile waits for its outcome.
//! - **Streaming tee.** A new body is published as soon as its headers
//!   arrive; a task appends the chunks as they come and every reader
//!   follows behind it, so no client waits for the whole object.
//! - **Revalidation** with `If-None-Match` / `If-Modified-Since` once an
//!   entry's lifetime (`Cache-Control`, else the default TTL) has passed.
//! - **Stale-if-error.** When revalidation fails (origin down, 5xx,
//!   timeout) the cached copy is served, and the origin is asked again
//!   only after [`STALE_RETRY`], so an outage does not cost every client
//!   the origin's timeout.
//! - **Bounded by size.** Stored bytes never exceed the cache's size:
//!   least recently used entries go first. What cannot fit (too large,
//!   `no-store`, an unknown length that outgrows the cache) is streamed
//!   straight through to its one client.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fetch::{
    next_chunk, Backend, Body, FetchError, Fetched, Freshness, Meta, Timing, Validators,
};
use crate::stats::{CacheResult, Counters};
use crate::template::redact;

/// After a failed revalidation, how long the stale copy is served before
/// the origin is asked again.
pub const STALE_RETRY: Duration = Duration::from_secs(10);

/// Longest lifetime taken from `Cache-Control` (RFC 9111 §1.2.2 caps delta
/// seconds at 2^31; a year is plenty for a boot file).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Most entries (URLs) the cache holds, whatever their sizes; each cached
/// disk object also holds a file descriptor.
pub const MAX_ENTRIES: usize = 10_000;

/// Bytes an entry is charged besides its body and URL (map slot, object,
/// validators), so that many small objects are bounded too.
pub const ENTRY_OVERHEAD: u64 = 512;

/// How long a URL whose body of unknown length outgrew the cache is
/// streamed straight through instead of being tried again.
const TOO_LARGE_FOR: Duration = Duration::from_secs(300);

/// File name suffix of the cache directory's objects (removed at start).
const OBJECT_SUFFIX: &str = ".tftp-cache";

/// Where cached bodies live.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Memory,
    Disk(PathBuf),
}

/// What a lookup found: a cached object to read, or a body to stream
/// straight through (not cacheable).
pub(crate) enum Found {
    Cached(Arc<Object>, CacheResult),
    Direct(Meta, Body),
}

/// The outcome of one flight, handed to every request waiting on it.
#[derive(Clone)]
enum Flight {
    Ready(Arc<Object>, CacheResult),
    /// Not cacheable: the first taker gets the body the flight fetched,
    /// later ones fetch their own.
    Bypass(Arc<Mutex<Option<(Meta, Body)>>>),
    Failed(FetchError),
}

struct Entry {
    object: Option<Arc<Object>>,
    validators: Validators,
    /// The origin's last word on the lifetime (a 304 without one keeps it).
    freshness: Freshness,
    /// Streamed through, not cached, until then (its body outgrew the cache).
    bypass_until: Option<Instant>,
    fresh_until: Instant,
    /// Served stale since a failed revalidation, until `fresh_until`.
    stale: bool,
    flight: Option<watch::Receiver<Option<Flight>>>,
    last_used: u64,
}

impl Entry {
    fn empty(now: Instant) -> Self {
        Entry {
            object: None,
            validators: Validators::default(),
            freshness: Freshness::Default,
            bypass_until: None,
            fresh_until: now,
            stale: false,
            flight: None,
            last_used: 0,
        }
    }
}

struct State {
    entries: HashMap<String, Entry>,
    /// Bytes of all stored objects (reserved at their announced size).
    used: u64,
    clock: u64,
    next_file: u64,
}

impl State {
    /// The entry for `url` (created empty), marked as just used.
    fn touch(&mut self, url: &str, now: Instant) -> &mut Entry {
        self.clock += 1;
        let clock = self.clock;
        let entry = self
            .entries
            .entry(url.to_owned())
            .or_insert_with(|| Entry::empty(now));
        entry.last_used = clock;
        entry
    }
}

/// The cache. Shared by every session of a handler.
pub(crate) struct Cache {
    state: Mutex<State>,
    max_bytes: u64,
    store: Store,
    ttl: Duration,
    timing: Timing,
    counters: Arc<Counters>,
}

impl Cache {
    pub fn new(
        store: Store,
        max_bytes: u64,
        ttl: Duration,
        timing: Timing,
        counters: Arc<Counters>,
    ) -> io::Result<Self> {
        if let Store::Disk(dir) = &store {
            // An instance's own new directory (`cachedir::Instance`).
            crate::cachedir::check_private(dir)?;
        }
        Ok(Cache {
            state: Mutex::new(State {
                entries: HashMap::new(),
                used: 0,
                clock: 0,
                next_file: 0,
            }),
            max_bytes,
            store,
            ttl,
            timing,
            counters,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves the map consistent (every update is one
        // step), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes stored and objects held.
    pub fn usage(&self) -> (u64, u64) {
        let state = self.lock();
        let objects = state
            .entries
            .values()
            .filter(|e| e.object.is_some())
            .count();
        (state.used, objects as u64)
    }

    /// The object for `url`: cached, fetched once for everyone asking, or
    /// streamed through.
    pub async fn get(
        self: &Arc<Self>,
        url: &str,
        backend: &Arc<Backend>,
    ) -> Result<Found, FetchError> {
        let waiting = {
            let now = Instant::now();
            let mut state = self.lock();
            let entry = state.touch(url, now);
            match (&entry.flight, &entry.object) {
                (Some(flight), _) => Some(flight.clone()),
                // A body still arriving is the newest there is.
                (None, Some(object))
                    if !object.failed() && (now < entry.fresh_until || object.filling()) =>
                {
                    let how = if entry.stale {
                        CacheResult::Stale
                    } else {
                        CacheResult::Hit
                    };
                    self.counters.count(how);
                    return Ok(Found::Cached(object.clone(), how));
                }
                (None, None) if entry.bypass_until.is_some_and(|t| now < t) => None,
                (None, _) => {
                    // The copy to revalidate, or to serve if the origin fails.
                    let prior = entry.object.clone().filter(|o| o.complete());
                    let validators = entry.validators.clone();
                    let (tx, rx) = watch::channel(None);
                    entry.flight = Some(rx.clone());
                    let cache = self.clone();
                    let backend = backend.clone();
                    let url = url.to_owned();
                    tokio::spawn(
                        async move { cache.fly(url, backend, prior, validators, tx).await },
                    );
                    Some(rx)
                }
            }
        };
        let Some(mut waiting) = waiting else {
            self.counters.count(CacheResult::Bypass);
            return self.direct(url, backend).await;
        };
        let flight = match waiting.wait_for(Option::is_some).await {
            Ok(flight) => flight.clone(),
            Err(_) => None,
        };
        match flight {
            Some(Flight::Ready(object, how)) => {
                self.counters.count(how);
                Ok(Found::Cached(object, how))
            }
            Some(Flight::Bypass(handoff)) => {
                self.counters.count(CacheResult::Bypass);
                let taken = handoff.lock().unwrap_or_else(|e| e.into_inner()).take();
                match taken {
                    Some((meta, body)) => Ok(Found::Direct(meta, body)),
                    None => self.direct(url, backend).await,
                }
            }
            Some(Flight::Failed(e)) => Err(e),
            None => {
                // The flight's task died without an answer (a bug): clear
                // it so the next request starts a new one, and fail this
                // one rather than loop.
                let mut state = self.lock();
                if let Some(entry) = state.entries.get_mut(url) {
                    if entry
                        .flight
                        .as_ref()
                        .is_some_and(|f| f.same_channel(&waiting))
                    {
                        entry.flight = None;
                    }
                }
                Err(FetchError::Failed("cache flight lost".into()))
            }
        }
    }

    /// A fetch of our own, streamed to one client (no cache).
    async fn direct(&self, url: &str, backend: &Backend) -> Result<Found, FetchError> {
        self.counters
            .origin_requests
            .fetch_add(1, Ordering::Relaxed);
        match backend
            .fetch(url, &Validators::default(), self.timing)
            .await
        {
            Ok(Fetched::Body(meta, body)) => Ok(Found::Direct(meta, body)),
            Ok(Fetched::NotModified(_)) => Err(FetchError::Failed("304 to a plain GET".into())),
            Err(e) => {
                self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// One flight: the origin request for `url` (conditional when `prior`
    /// has validators), its outcome recorded in the entry and sent to
    /// every waiter; then, for a new body, the fill.
    async fn fly(
        self: Arc<Self>,
        url: String,
        backend: Arc<Backend>,
        prior: Option<Arc<Object>>,
        validators: Validators,
        tx: watch::Sender<Option<Flight>>,
    ) {
        let validators = match &prior {
            Some(_) => validators,
            None => Validators::default(),
        };
        self.counters
            .origin_requests
            .fetch_add(1, Ordering::Relaxed);
        if validators.any() {
            self.counters.revalidations.fetch_add(1, Ordering::Relaxed);
        }
        let fetched = backend.fetch(&url, &validators, self.timing).await;
        let now = Instant::now();
        let mut fill = None;
        let flight = {
            let mut state = self.lock();
            let state = &mut *state;
            let flight = match (fetched, prior) {
                (Ok(Fetched::NotModified(meta)), Some(object)) => {
                    let entry = state.touch(&url, now);
                    if meta.freshness != Freshness::Default {
                        entry.freshness = meta.freshness;
                    }
                    if meta.validators.any() {
                        entry.validators = meta.validators;
                    }
                    entry.fresh_until = self.fresh_until(now, entry.freshness);
                    entry.stale = false;
                    if entry.freshness == Freshness::NoStore {
                        // Now marked not to be kept: served this once.
                        if let Some(old) = entry.object.take() {
                            release(&mut state.used, &old);
                        }
                    }
                    Flight::Ready(object, CacheResult::Revalidated)
                }
                (Ok(Fetched::NotModified(_)), None) => {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                    Flight::Failed(FetchError::Failed("304 to a plain GET".into()))
                }
                (Ok(Fetched::Body(meta, body)), prior) => {
                    let how = if prior.is_some() {
                        CacheResult::Refreshed
                    } else {
                        CacheResult::Miss
                    };
                    match self.admit(state, &url, &meta, now) {
                        Some(object) => {
                            fill = Some((object.clone(), body));
                            Flight::Ready(object, how)
                        }
                        None => Flight::Bypass(Arc::new(Mutex::new(Some((meta, body))))),
                    }
                }
                (Err(e @ (FetchError::NotFound | FetchError::Denied)), _) => {
                    if let Some(object) = state.entries.get_mut(&url).and_then(|e| e.object.take())
                    {
                        release(&mut state.used, &object);
                    }
                    Flight::Failed(e)
                }
                (Err(FetchError::Failed(why)), Some(object)) => {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %redact(&url), %why, retry_in = ?STALE_RETRY, "origin failed: serving the cached copy");
                    let entry = state.touch(&url, now);
                    entry.fresh_until = now + STALE_RETRY;
                    entry.stale = true;
                    Flight::Ready(object, CacheResult::Stale)
                }
                (Err(e @ FetchError::Failed(_)), None) => {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                    Flight::Failed(e)
                }
            };
            if let Some(entry) = state.entries.get_mut(&url) {
                entry.flight = None;
                if entry.object.is_none() && entry.bypass_until.is_none() {
                    state.entries.remove(&url);
                }
            }
            flight
        };
        // Nobody waiting (all clients gone) is fine: the entry is filled
        // for the next ones.
        let _ = tx.send(Some(flight));
        if let Some((object, body)) = fill {
            self.fill(&url, object, body).await;
        }
    }

    /// When an entry of `freshness` fetched at `now` goes stale.
    fn fresh_until(&self, now: Instant, freshness: Freshness) -> Instant {
        let lifetime = match freshness {
            Freshness::For(d) => d.min(MAX_LIFETIME),
            Freshness::Default | Freshness::NoStore => self.ttl,
        };
        now.checked_add(lifetime).unwrap_or(now)
    }

    /// A new stored object for a body, replacing the entry's old version,
    /// or `None` if it cannot be kept (no-store, larger than the cache,
    /// no room left after evicting what is not in use).
    fn admit(
        &self,
        state: &mut State,
        url: &str,
        meta: &Meta,
        now: Instant,
    ) -> Option<Arc<Object>> {
        // The old version goes first: it is being replaced (or may no
        // longer be kept).
        if let Some(entry) = state.entries.get_mut(url) {
            if let Some(old) = entry.object.take() {
                release(&mut state.used, &old);
            }
        }
        if meta.freshness == Freshness::NoStore || self.max_bytes == 0 {
            return None;
        }
        let reserve = meta.size.unwrap_or(0) + entry_cost(url);
        if reserve > self.max_bytes {
            return None;
        }
        if !self.make_room(state, reserve, Some(url)) {
            return None;
        }
        state.next_file += 1;
        let object = match Object::create(&self.store, state.next_file, meta.size) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a cache file: streaming through");
                return None;
            }
        };
        object.reserved.store(reserve, Ordering::Relaxed);
        state.used += reserve;
        let entry = state.touch(url, now);
        entry.object = Some(object.clone());
        entry.validators = meta.validators.clone();
        entry.freshness = meta.freshness;
        entry.fresh_until = self.fresh_until(now, meta.freshness);
        entry.stale = false;
        entry.bypass_until = None;
        Some(object)
    }

    /// Evicts least recently used entries (not in flight, not filling,
    /// not `keep`) until `more` bytes, and one more entry, fit. False if
    /// they cannot.
    fn make_room(&self, state: &mut State, more: u64, keep: Option<&str>) -> bool {
        while state.used + more > self.max_bytes || state.entries.len() > MAX_ENTRIES {
            let victim = state
                .entries
                .iter()
                .filter(|(k, e)| {
                    Some(k.as_str()) != keep
                        && e.flight.is_none()
                        && e.object.as_ref().is_none_or(|o| !o.filling())
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { return false };
            if let Some(object) = state.entries.remove(&victim).and_then(|e| e.object) {
                release(&mut state.used, &object);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(url = %redact(&victim), "evicted from the cache");
            }
        }
        true
    }

    /// Appends the body to `object` as it arrives. On failure the readers
    /// get an error and the entry is dropped (the next request fetches
    /// again).
    async fn fill(&self, url: &str, object: Arc<Object>, mut body: Body) {
        // If this task is dropped (runtime shut down) or panics, the
        // readers must not wait for bytes that never come.
        let guard = FailOnDrop(&object);
        let mut outgrew = false;
        let result: io::Result<()> = async {
            loop {
                let Some(chunk) = next_chunk(&mut body, self.timing.timeout).await? else {
                    break;
                };
                if chunk.is_empty() {
                    continue;
                }
                let len = object.len() + chunk.len() as u64;
                match object.size {
                    Some(size) if len > size => {
                        return Err(io::Error::other("origin sent more than it announced"))
                    }
                    Some(_) => {}
                    None => {
                        // Unknown length: reserved as it grows.
                        let mut state = self.lock();
                        if !self.make_room(&mut state, chunk.len() as u64, Some(url)) {
                            outgrew = true;
                            return Err(io::Error::other("object outgrew the cache"));
                        }
                        if object.is_cached() {
                            state.used += chunk.len() as u64;
                            object
                                .reserved
                                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
                self.counters
                    .origin_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                object.append(chunk)?;
            }
            match object.size {
                Some(size) if object.len() != size => Err(io::Error::other(format!(
                    "origin body ended at {} of {size} bytes",
                    object.len()
                ))),
                _ => Ok(()),
            }
        }
        .await;
        std::mem::forget(guard);
        match result {
            Ok(()) => object.finish(Ok(())),
            Err(e) => {
                self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %redact(url), error = %e, "origin body failed");
                let mut state = self.lock();
                let state = &mut *state;
                if let Some(entry) = state.entries.get_mut(url) {
                    if entry
                        .object
                        .as_ref()
                        .is_some_and(|o| Arc::ptr_eq(o, &object))
                    {
                        entry.object = None;
                        release(&mut state.used, &object);
                        if outgrew {
                            // Streamed through for a while, not retried.
                            entry.bypass_until = Some(Instant::now() + TOO_LARGE_FOR);
                        } else if entry.flight.is_none() {
                            state.entries.remove(url);
                        }
                    }
                }
                object.finish(Err(e.to_string()));
            }
        }
    }
}

/// Fails an object's fill if dropped before it is disarmed (`forget`).
struct FailOnDrop<'a>(&'a Object);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish(Err("cache fill abandoned".into()));
    }
}

/// What an entry costs besides its body.
fn entry_cost(url: &str) -> u64 {
    ENTRY_OVERHEAD + url.len() as u64
}

/// Takes `object`'s bytes out of the cache's count (once) and unlinks its
/// file; readers that have it open read on.
fn release(used: &mut u64, object: &Object) {
    let reserved = object.reserved.swap(u64::MAX, Ordering::Relaxed);
    if reserved != u64::MAX {
        *used -= reserved;
        object.unlink();
    }
}

/// An in-memory body: its chunks as they arrived, and where each starts
/// (for a binary search: a read never walks the list).
#[derive(Default)]
struct Chunks {
    chunks: Vec<Bytes>,
    starts: Vec<u64>,
}

enum Data {
    Memory(Mutex<Chunks>),
    Disk { path: PathBuf, file: std::fs::File },
}

#[derive(Clone, Debug)]
enum Fill {
    Filling,
    Done,
    Failed(Arc<str>),
}

/// One version of an object: its bytes so far and whether more come.
pub(crate) struct Object {
    size: Option<u64>,
    data: Data,
    len: AtomicU64,
    state: Mutex<Fill>,
    grown: Event,
    /// Bytes counted in the cache's `used`; `u64::MAX` once released.
    reserved: AtomicU64,
}

impl Object {
    fn create(store: &Store, n: u64, size: Option<u64>) -> io::Result<Self> {
        let data = match store {
            Store::Memory => Data::Memory(Mutex::default()),
            Store::Disk(dir) => {
                let path = dir.join(format!("{n}{OBJECT_SUFFIX}"));
                let file = crate::cachedir::create_file(&path)?;
                Data::Disk { path, file }
            }
        };
        Ok(Object {
            size,
            data,
            len: AtomicU64::new(0),
            state: Mutex::new(Fill::Filling),
            grown: Event::new(),
            reserved: AtomicU64::new(0),
        })
    }

    fn fill_state(&self) -> Fill {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn filling(&self) -> bool {
        matches!(self.fill_state(), Fill::Filling)
    }

    fn failed(&self) -> bool {
        matches!(self.fill_state(), Fill::Failed(_))
    }

    fn complete(&self) -> bool {
        matches!(self.fill_state(), Fill::Done)
    }

    fn is_cached(&self) -> bool {
        self.reserved.load(Ordering::Relaxed) != u64::MAX
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// The size to announce (`tsize`): the origin's, or the final length.
    pub fn size(&self) -> Option<u64> {
        self.size.or_else(|| self.complete().then(|| self.len()))
    }

    fn append(&self, chunk: Bytes) -> io::Result<()> {
        let n = chunk.len() as u64;
        match &self.data {
            Data::Memory(chunks) => {
                let mut c = chunks.lock().unwrap_or_else(|e| e.into_inner());
                c.starts.push(self.len());
                c.chunks.push(chunk);
            }
            Data::Disk { file, .. } => {
                use std::os::unix::fs::FileExt;
                file.write_all_at(&chunk, self.len())?;
            }
        }
        self.len.fetch_add(n, Ordering::Release);
        self.grown.notify(usize::MAX);
        Ok(())
    }

    fn finish(&self, result: Result<(), String>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = match result {
            Ok(()) => Fill::Done,
            Err(e) => Fill::Failed(e.into()),
        };
        self.grown.notify(usize::MAX);
    }

    fn unlink(&self) {
        if let Data::Disk { path, .. } = &self.data {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Copies bytes at `pos` into `buf`; 0 if none are there yet.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.len().saturating_sub(pos);
        let want = (buf.len() as u64).min(available) as usize;
        if want == 0 {
            return Ok(0);
        }
        match &self.data {
            Data::Memory(chunks) => {
                let c = chunks.lock().unwrap_or_else(|e| e.into_inner());
                // The chunk holding `pos`: the last one starting at or before it.
                // NOTE(unwrap): `want > 0` means bytes exist at `pos`, so the
                // first chunk (start 0) is at or before it.
                let mut i = c.starts.partition_point(|&start| start <= pos) - 1;
                let mut copied = 0;
                while copied < want {
                    let from = (pos + copied as u64 - c.starts[i]) as usize;
                    let n = (c.chunks[i].len() - from).min(want - copied);
                    buf[copied..copied + n].copy_from_slice(&c.chunks[i][from..from + n]);
                    copied += n;
                    i += 1;
                }
                Ok(copied)
            }
            Data::Disk { file, .. } => {
                use std::os::unix::fs::FileExt;
                file.read_at(&mut buf[..want], pos)
            }
        }
    }

    /// A reader from the first byte.
    pub fn reader(self: &Arc<Self>) -> ObjectReader {
        ObjectReader {
            object: self.clone(),
            pos: 0,
            listener: None,
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Reads a cached object, waiting for bytes the fill has not written yet.
pub struct ObjectReader {
    object: Arc<Object>,
    pos: u64,
    listener: Option<EventListener>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let n = self.object.read_at(self.pos, buf.initialize_unfilled())?;
            if n > 0 {
                buf.advance(n);
                self.pos += n as u64;
                self.listener = None;
                return Poll::Ready(Ok(()));
            }
            match self.object.fill_state() {
                Fill::Done if self.pos >= self.object.len() => return Poll::Ready(Ok(())),
                Fill::Failed(why) => return Poll::Ready(Err(io::Error::other(why.to_string()))),
                _ => {}
            }
            match &mut self.listener {
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                }
                // Listen, then look again: bytes that came in between
                // would otherwise be missed.
                None => self.listener = Some(self.object.grown.listen()),
            }
        }
    }
}

/// A body streamed straight to one client, each chunk within `timeout`.
pub struct DirectReader {
    body: Body,
    chunk: Bytes,
    timeout: Duration,
    pending: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Option<Arc<Counters>>,
}

impl DirectReader {
    pub(crate) fn new(body: Body, timeout: Duration) -> Self {
        DirectReader {
            body,
            chunk: Bytes::new(),
            timeout,
            pending: None,
            counters: None,
        }
    }

    /// Counts the body's bytes as origin bytes.
    pub(crate) fn counting(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }
}

impl std::fmt::Debug for DirectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectReader").finish_non_exhaustive()
    }
}

impl AsyncRead for DirectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.chunk.is_empty() {
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(c) = &this.counters {
                        c.origin_bytes
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    this.chunk = chunk;
                    this.pending = None;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let timeout = this.timeout;
                    let sleep = this
                        .pending
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("origin sent nothing for {timeout:?}"),
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
        let n = this.chunk.len().min(buf.remaining());
        buf.put_slice(&this.chunk.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(store: &Store, chunks: &[&[u8]]) -> Object {
        let o = Object::create(store, 1, None).unwrap();
        for c in chunks {
            o.append(Bytes::copy_from_slice(c)).unwrap();
        }
        o
    }

    #[test]
    fn reads_at_any_offset_span_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..=255).cycle().take(5000).collect();
        let pieces: Vec<&[u8]> = [1, 7, 1000, 1, 2500, 1491]
            .iter()
            .scan(0, |at, &n| {
                let piece = &data[*at..*at + n];
                *at += n;
                Some(piece)
            })
            .collect();
        for store in [Store::Memory, Store::Disk(dir.path().to_owned())] {
            let o = object(&store, &pieces);
            assert_eq!(o.len(), 5000);
            for pos in [0u64, 1, 7, 8, 1007, 1008, 3000, 4999] {
                for size in [1usize, 3, 1468, 6000] {
                    let mut buf = vec![0; size];
                    let n = o.read_at(pos, &mut buf).unwrap();
                    let end = (pos as usize + size).min(5000);
                    assert_eq!(&buf[..n], &data[pos as usize..end], "{pos} {size}");
                }
            }
            assert_eq!(o.read_at(5000, &mut [0; 8]).unwrap(), 0);
        }
    }
}
