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

/// After a failed revalidation, how long the stale copy is served before
/// the origin is asked again.
pub const STALE_RETRY: Duration = Duration::from_secs(10);

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
            std::fs::create_dir_all(dir)?;
            // Nothing survives a restart: the index lives in memory.
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().ends_with(OBJECT_SUFFIX) {
                    std::fs::remove_file(entry.path())?;
                }
            }
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
        loop {
            let mut waiting = {
                let now = Instant::now();
                let mut state = self.lock();
                state.clock += 1;
                let clock = state.clock;
                let entry = state
                    .entries
                    .entry(url.to_owned())
                    .or_insert_with(|| Entry::empty(now));
                match (&entry.flight, &entry.object) {
                    (Some(flight), _) => flight.clone(),
                    // A body still arriving is the newest there is.
                    (None, Some(object)) if now < entry.fresh_until || object.filling() => {
                        entry.last_used = clock;
                        let how = if entry.stale {
                            CacheResult::Stale
                        } else {
                            CacheResult::Hit
                        };
                        self.counters.count(how);
                        return Ok(Found::Cached(object.clone(), how));
                    }
                    (None, _) => {
                        let prior = entry
                            .object
                            .clone()
                            .filter(|o| o.complete() && entry.validators.any())
                            .map(|o| (o, entry.validators.clone()));
                        let (tx, rx) = watch::channel(None);
                        entry.flight = Some(rx.clone());
                        let cache = self.clone();
                        let backend = backend.clone();
                        let url = url.to_owned();
                        tokio::spawn(async move { cache.fly(url, backend, prior, tx).await });
                        rx
                    }
                }
            };
            let flight = match waiting.wait_for(Option::is_some).await {
                Ok(flight) => flight.clone(),
                Err(_) => None,
            };
            match flight {
                Some(Flight::Ready(object, how)) => {
                    self.counters.count(how);
                    return Ok(Found::Cached(object, how));
                }
                Some(Flight::Bypass(handoff)) => {
                    self.counters.count(CacheResult::Bypass);
                    let taken = handoff.lock().unwrap_or_else(|e| e.into_inner()).take();
                    return match taken {
                        Some((meta, body)) => Ok(Found::Direct(meta, body)),
                        None => self.direct(url, backend).await,
                    };
                }
                Some(Flight::Failed(e)) => return Err(e),
                None => {
                    // The flight's task died without an answer (a panic):
                    // clear it so the next round starts a new one.
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
                }
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

    /// One flight: the origin request for `url`, its outcome recorded in
    /// the entry and sent to every waiter; then, for a new body, the fill.
    async fn fly(
        self: Arc<Self>,
        url: String,
        backend: Arc<Backend>,
        prior: Option<(Arc<Object>, Validators)>,
        tx: watch::Sender<Option<Flight>>,
    ) {
        let validators = prior.as_ref().map(|p| p.1.clone()).unwrap_or_default();
        self.counters
            .origin_requests
            .fetch_add(1, Ordering::Relaxed);
        if prior.is_some() {
            self.counters.revalidations.fetch_add(1, Ordering::Relaxed);
        }
        let fetched = backend.fetch(&url, &validators, self.timing).await;
        let now = Instant::now();
        let mut fill = None;
        let flight = {
            let mut state = self.lock();
            let state = &mut *state;
            let entry = state
                .entries
                .entry(url.clone())
                .or_insert_with(|| Entry::empty(now));
            let flight = match (fetched, prior) {
                (Ok(Fetched::NotModified(meta)), Some((object, _))) => {
                    entry.fresh_until = now + self.lifetime(meta.freshness);
                    entry.stale = false;
                    if meta.validators.any() {
                        entry.validators = meta.validators;
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
                    let entry = state.entries.remove(&url);
                    if let Some(object) = entry.and_then(|e| e.object) {
                        release(&mut state.used, &object);
                    }
                    Flight::Failed(e)
                }
                (Err(FetchError::Failed(why)), Some((object, _))) => {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%url, %why, retry_in = ?STALE_RETRY, "origin failed: serving the cached copy");
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
                if entry.object.is_none() {
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

    fn lifetime(&self, freshness: Freshness) -> Duration {
        match freshness {
            Freshness::For(d) => d,
            Freshness::Default | Freshness::NoStore => self.ttl,
        }
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
        if meta.freshness == Freshness::NoStore || self.max_bytes == 0 {
            return None;
        }
        let reserve = meta.size.unwrap_or(0);
        if reserve > self.max_bytes {
            return None;
        }
        // The old version goes first: it is being replaced.
        if let Some(entry) = state.entries.get_mut(url) {
            if let Some(old) = entry.object.take() {
                release(&mut state.used, &old);
            }
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
        let entry = state
            .entries
            .entry(url.to_owned())
            .or_insert_with(|| Entry::empty(now));
        entry.object = Some(object.clone());
        entry.validators = meta.validators.clone();
        entry.fresh_until = now + self.lifetime(meta.freshness);
        entry.stale = false;
        Some(object)
    }

    /// Evicts least recently used entries (not in flight, not filling,
    /// not `keep`) until `more` bytes fit. False if they cannot.
    fn make_room(&self, state: &mut State, more: u64, keep: Option<&str>) -> bool {
        while state.used + more > self.max_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(k, e)| {
                    Some(k.as_str()) != keep
                        && e.flight.is_none()
                        && e.object.as_ref().is_some_and(|o| !o.filling())
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { return false };
            if let Some(object) = state.entries.remove(&victim).and_then(|e| e.object) {
                release(&mut state.used, &object);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(url = %victim, "evicted from the cache");
            }
        }
        true
    }

    /// Appends the body to `object` as it arrives. On failure the readers
    /// get an error and the entry is dropped (the next request fetches
    /// again).
    async fn fill(&self, url: &str, object: Arc<Object>, mut body: Body) {
        let result: io::Result<()> = async {
            loop {
                let Some(chunk) = next_chunk(&mut body, self.timing.timeout).await? else {
                    break;
                };
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
        match result {
            Ok(()) => object.finish(Ok(())),
            Err(e) => {
                self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%url, error = %e, "origin body failed");
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
                        if entry.flight.is_none() {
                            state.entries.remove(url);
                        }
                    }
                }
                object.finish(Err(e.to_string()));
            }
        }
    }
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

enum Data {
    Memory(Mutex<Vec<Bytes>>),
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
            Store::Memory => Data::Memory(Mutex::new(Vec::new())),
            Store::Disk(dir) => {
                let path = dir.join(format!("{}-{n}{OBJECT_SUFFIX}", std::process::id()));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
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
            Data::Memory(chunks) => chunks.lock().unwrap_or_else(|e| e.into_inner()).push(chunk),
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
                let chunks = chunks.lock().unwrap_or_else(|e| e.into_inner());
                let mut start = 0u64;
                let mut copied = 0;
                for chunk in chunks.iter() {
                    let end = start + chunk.len() as u64;
                    if end > pos + copied as u64 {
                        let from = (pos + copied as u64 - start) as usize;
                        let n = (chunk.len() - from).min(want - copied);
                        buf[copied..copied + n].copy_from_slice(&chunk[from..from + n]);
                        copied += n;
                        if copied == want {
                            break;
                        }
                    }
                    start = end;
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
