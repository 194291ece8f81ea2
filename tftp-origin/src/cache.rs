//! The bounded cache between the clients and the origin.
//!
//! - **Keyed by the rendered URL.** An entry holds one version of the
//!   object (in memory or in a file of the cache directory), its
//!   validators and until when it is fresh.
//! - **Single-flight.** At most one origin request per URL is in flight:
//!   the first request for a missing or stale entry starts it as its own
//!   task (so a client that goes away does not cancel it for the others);
//!   every request for the same URL meanwhile waits for its outcome. When
//!   every request waiting for its headers has gone (evicted, timed out,
//!   shut down), the origin request is abandoned.
//! - **Bounded concurrency.** At most `max_requests` origin requests run at
//!   once (headers and body); past it, flights and streamed requests queue.
//! - **Streaming tee, pulled by demand.** A new body is published as soon
//!   as its headers arrive; a task appends the chunks and every reader
//!   follows behind it, so no client waits for the whole object. Until a
//!   reader asks for more than [`FIRST_WINDOW`] bytes (which only a client
//!   that answered can: an unverified session sends one block), the body is
//!   read only as far as readers ask; after that it is read to its end.
//!   When no reader is left for [`ORPHAN_GRACE`], the body is abandoned.
//! - **Revalidation** with `If-None-Match` / `If-Modified-Since` once an
//!   entry's lifetime (`Cache-Control`, else the default TTL) has passed.
//! - **Stale-if-error, bounded.** When revalidation fails (origin down,
//!   5xx, timeout) the cached copy is served, and the origin is asked again
//!   only after [`STALE_RETRY`], so an outage does not cost every client
//!   the origin's timeout; once the copy has been stale for longer than
//!   the stale-if-error bound it is dropped instead.
//! - **Bounded by size, counted exactly.** Stored bytes never exceed the
//!   cache's size: least recently used entries go first. Memory objects are
//!   copied into pages of their own (never holding the HTTP library's
//!   buffers); disk objects hold no descriptor of their own (each reader
//!   opens the file). What cannot fit (too large, `no-store`, an unknown
//!   length that outgrows the cache) is streamed straight through to its
//!   one client.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
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

/// Most entries (URLs) the cache holds, whatever their sizes.
pub const MAX_ENTRIES: usize = 10_000;

/// Bytes an entry is charged besides its body and URL (map slot, object,
/// validators), so that many small objects are bounded too.
pub const ENTRY_OVERHEAD: u64 = 512;

/// How far a body is read while no reader has asked for more: a session
/// whose client has not answered sends one DATA block (at most 65464
/// bytes), so a reader past this is a verified client's.
pub const FIRST_WINDOW: u64 = 64 * 1024;

/// How long a body (or a flight) with no reader left is kept before its
/// origin request is abandoned: long enough for the download that follows
/// a tsize probe (UEFI's second request comes milliseconds after its
/// ERROR 8) to find it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// How long a URL whose body of unknown length outgrew the cache is
/// streamed straight through instead of being tried again.
const TOO_LARGE_FOR: Duration = Duration::from_secs(300);

/// File name suffix of the cache directory's objects (removed at start).
const OBJECT_SUFFIX: &str = ".tftp-cache";

/// Bytes of one page of an in-memory object.
const PAGE: usize = 64 * 1024;

/// Where cached bodies live.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Memory,
    Disk(PathBuf),
}

/// The cache's policy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Most bytes stored.
    pub max_bytes: u64,
    /// Lifetime of an object without `Cache-Control`.
    pub ttl: Duration,
    /// Longest a copy is served stale while the origin fails.
    pub stale_if_error: Duration,
    /// Most origin requests at once.
    pub max_requests: usize,
}

/// What a lookup found: a cached object to read, or a body to stream
/// straight through (not cacheable) with its origin request slot.
pub(crate) enum Found {
    Cached(Arc<Object>, CacheResult),
    Direct(Meta, Body, Slot),
}

/// A body fetched by a flight but not cacheable, for its first taker.
type Handoff = Arc<Mutex<Option<(Meta, Body, Slot)>>>;

/// The outcome of one flight, handed to every request waiting on it.
#[derive(Clone)]
enum Flight {
    Ready(Arc<Object>, CacheResult),
    /// Not cacheable: the first taker gets the body the flight fetched,
    /// later ones fetch their own.
    Bypass(Handoff),
    Failed(FetchError),
}

/// The requests waiting for a flight's outcome.
#[derive(Debug, Default)]
struct Waiters {
    count: AtomicUsize,
    /// Notified when the count drops to zero.
    gone: Notify,
}

/// A flight as its entry keeps it, for later requests to join.
#[derive(Clone)]
struct FlightRef {
    outcome: watch::Receiver<Option<Flight>>,
    waiters: Arc<Waiters>,
}

impl FlightRef {
    /// One more waiter (under the state lock, so the flight sees it).
    fn join(&self) -> (watch::Receiver<Option<Flight>>, Waiting) {
        self.waiters.count.fetch_add(1, Ordering::AcqRel);
        (self.outcome.clone(), Waiting(Arc::clone(&self.waiters)))
    }
}

/// A request waiting for a flight; dropped when it stops waiting.
struct Waiting(Arc<Waiters>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.gone.notify_one();
        }
    }
}

/// One of the `max_requests` origin request slots, held from the request
/// to the end of its body, unless taken back (see [`Cache::slot`]).
pub(crate) struct Slot {
    hold: Arc<Hold>,
    /// The cache's list of slots that may be taken back.
    list: Arc<IdleList>,
}

/// Slots that may be taken back, idle longest first.
type IdleList = Mutex<Vec<Weak<Hold>>>;

/// What a slot holds, shared with the cache's list of slots that may be
/// taken back.
struct Hold {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    counters: Arc<Counters>,
    /// The holder only waits for (or serves) clients that have not
    /// answered: the slot may be taken back now.
    idle: AtomicBool,
    /// The slot was taken back: the holder gives up its body.
    preempted: AtomicBool,
    /// Notified when it is taken back.
    taken: Event,
}

impl Hold {
    /// Gives the permit back (once).
    fn release(&self) {
        let permit = self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
        if permit.is_some() {
            self.counters.origin_active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes the slot back if its holder is idle: true if it was.
    fn preempt(&self) -> bool {
        if !self.idle.load(Ordering::Acquire) || self.preempted.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.release();
        self.taken.notify(usize::MAX);
        true
    }
}

impl Slot {
    fn preempted(&self) -> bool {
        self.hold.preempted.load(Ordering::Acquire)
    }

    /// Resolves once the slot has been taken back.
    async fn taken_back(&self) {
        loop {
            let listener = self.hold.taken.listen();
            if self.preempted() {
                return;
            }
            listener.await;
        }
    }

    /// Marks the holder idle (its slot may be taken back) or busy. Going
    /// idle puts it last in the list: the one idle longest goes first.
    fn set_idle(&self, idle: bool) {
        if !idle {
            self.hold.idle.store(false, Ordering::Release);
            return;
        }
        if self.hold.idle.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|h| {
            h.upgrade().is_some_and(|h| {
                !Arc::ptr_eq(&h, &self.hold)
                    && h.idle.load(Ordering::Acquire)
                    && !h.preempted.load(Ordering::Acquire)
            })
        });
        list.push(Arc::downgrade(&self.hold));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hold.idle.store(false, Ordering::Release);
        self.hold.release();
    }
}

/// Counts a request queued for a slot while it waits.
struct Queued<'a>(&'a Counters);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.origin_queued.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    object: Option<Arc<Object>>,
    validators: Validators,
    /// The origin's last word on the lifetime (a 304 without one keeps it).
    freshness: Freshness,
    /// Streamed through, not cached, until then (its body outgrew the cache).
    bypass_until: Option<Instant>,
    fresh_until: Instant,
    /// When the copy went stale, while it is served because the origin
    /// fails (`None` while the origin answers).
    stale_since: Option<Instant>,
    flight: Option<FlightRef>,
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
            stale_since: None,
            flight: None,
            last_used: 0,
        }
    }
}

struct State {
    entries: HashMap<String, Entry>,
    /// Bytes charged for all stored objects (reserved at their announced
    /// size, or at what their pages hold, plus each entry's overhead).
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

    /// Forgets `url`'s flight if it is the one `waiters` wait on (and the
    /// entry, if nothing else is left in it).
    fn end_flight(&mut self, url: &str, waiters: &Arc<Waiters>) {
        if let Some(entry) = self.entries.get_mut(url) {
            if entry
                .flight
                .as_ref()
                .is_some_and(|f| Arc::ptr_eq(&f.waiters, waiters))
            {
                entry.flight = None;
                if entry.object.is_none() && entry.bypass_until.is_none() {
                    self.entries.remove(url);
                }
            }
        }
    }
}

/// The cache. Shared by every session of a handler.
pub(crate) struct Cache {
    state: Mutex<State>,
    policy: Policy,
    store: Store,
    timing: Timing,
    counters: Arc<Counters>,
    requests: Arc<Semaphore>,
    /// Slots whose holders wait for or serve only clients that have not
    /// answered (idle longest first; stale entries are skipped).
    idle: Arc<IdleList>,
}

impl Cache {
    pub fn new(
        store: Store,
        policy: Policy,
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
            requests: Arc::new(Semaphore::new(policy.max_requests.max(1))),
            idle: Arc::default(),
            policy,
            store,
            timing,
            counters,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves the map consistent (every update is one
        // step), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Body bytes stored and objects held.
    pub fn usage(&self) -> (u64, u64) {
        let state = self.lock();
        let (mut bytes, mut objects) = (0u64, 0u64);
        for object in state.entries.values().filter_map(|e| e.object.as_ref()) {
            bytes = bytes.saturating_add(object.len());
            objects += 1;
        }
        (bytes, objects)
    }

    /// Bytes charged against the cache's size (bodies, pages, overheads).
    #[cfg(test)]
    fn charged(&self) -> u64 {
        self.lock().used
    }

    /// One origin request slot, waiting in line for it. When none is free,
    /// the slot idle longest of those held only for clients that have not
    /// answered (possibly spoofed: a fill waiting for them to ask for more,
    /// or a body streamed through to one) is taken back, as a SYN backlog
    /// drops its oldest half-open entry: unanswered requests cannot keep the
    /// origin from the clients that answer. Requests still waiting for
    /// headers keep their slots (nobody has answered any of them yet).
    async fn slot(&self) -> Slot {
        let permit = match Arc::clone(&self.requests).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.preempt_idle();
                self.counters.origin_queued.fetch_add(1, Ordering::Relaxed);
                let _queued = Queued(&self.counters);
                // NOTE(unwrap): the semaphore is never closed.
                #[allow(clippy::expect_used)]
                Arc::clone(&self.requests)
                    .acquire_owned()
                    .await
                    .expect("the request semaphore is never closed")
            }
        };
        self.counters.origin_active.fetch_add(1, Ordering::Relaxed);
        Slot {
            hold: Arc::new(Hold {
                permit: Mutex::new(Some(permit)),
                counters: Arc::clone(&self.counters),
                idle: AtomicBool::new(false),
                preempted: AtomicBool::new(false),
                taken: Event::new(),
            }),
            list: Arc::clone(&self.idle),
        }
    }

    /// Takes back the slot idle longest (see [`Cache::slot`]), if any.
    fn preempt_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while !idle.is_empty() {
            let oldest = idle.remove(0);
            if oldest.upgrade().is_some_and(|h| h.preempt()) {
                self.counters.origin_aborted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("an origin request held for unanswered clients gives its place");
                return;
            }
        }
    }

    /// The object for `url`: cached, fetched once for everyone asking, or
    /// streamed through.
    pub async fn get(
        self: &Arc<Self>,
        url: &str,
        backend: &Arc<Backend>,
    ) -> Result<Found, FetchError> {
        let joined = {
            let now = Instant::now();
            let mut state = self.lock();
            let entry = state.touch(url, now);
            match (&entry.flight, &entry.object) {
                (Some(flight), _) => Some(flight.join()),
                // A body still arriving is the newest there is.
                (None, Some(object))
                    if !object.failed() && (now < entry.fresh_until || object.filling()) =>
                {
                    let how = if entry.stale_since.is_some() {
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
                    let flight = FlightRef {
                        outcome: rx,
                        waiters: Arc::default(),
                    };
                    let joined = flight.join();
                    let waiters = Arc::clone(&flight.waiters);
                    entry.flight = Some(flight);
                    let cache = self.clone();
                    let backend = backend.clone();
                    let url = url.to_owned();
                    tokio::spawn(async move {
                        cache
                            .fly(url, backend, prior, validators, tx, waiters)
                            .await
                    });
                    Some(joined)
                }
            }
        };
        let Some((mut waiting, _waiting)) = joined else {
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
                    Some((meta, body, slot)) => Ok(Found::Direct(meta, body, slot)),
                    None => self.direct(url, backend).await,
                }
            }
            Some(Flight::Failed(e)) => Err(e),
            // The flight's task ended without an answer: it was abandoned
            // by every waiter but this one, which joined as it gave up (or
            // it died). Fail this one rather than loop; the next request
            // starts a new flight.
            None => Err(FetchError::Failed("cache flight abandoned".into())),
        }
    }

    /// A fetch of our own, streamed to one client (no cache).
    async fn direct(&self, url: &str, backend: &Backend) -> Result<Found, FetchError> {
        let slot = self.slot().await;
        self.counters
            .origin_requests
            .fetch_add(1, Ordering::Relaxed);
        match backend
            .fetch(url, &Validators::default(), self.timing)
            .await
        {
            Ok(Fetched::Body(meta, body)) => Ok(Found::Direct(meta, body, slot)),
            Ok(Fetched::NotModified(_)) => Err(FetchError::Failed("304 to a plain GET".into())),
            Err(e) => {
                self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Resolves once every request waiting for `url`'s flight (`waiters`)
    /// has gone; the flight is then forgotten, so a later request starts
    /// its own.
    async fn abandoned(&self, url: &str, waiters: &Arc<Waiters>) {
        loop {
            let notified = waiters.gone.notified();
            if waiters.count.load(Ordering::Acquire) == 0 {
                let mut state = self.lock();
                // Requests join under this lock: none can join after this.
                if waiters.count.load(Ordering::Acquire) == 0 {
                    state.end_flight(url, waiters);
                    return;
                }
            }
            notified.await;
        }
    }

    /// One flight: the origin request for `url` (conditional when `prior`
    /// has validators), its outcome recorded in the entry and sent to
    /// every waiter; then, for a new body, the fill. Abandoned, with its
    /// origin request, when every waiter has gone before the headers came.
    async fn fly(
        self: Arc<Self>,
        url: String,
        backend: Arc<Backend>,
        prior: Option<Arc<Object>>,
        validators: Validators,
        tx: watch::Sender<Option<Flight>>,
        waiters: Arc<Waiters>,
    ) {
        let validators = match &prior {
            Some(_) => validators,
            None => Validators::default(),
        };
        let started = AtomicBool::new(false);
        let request = async {
            let slot = self.slot().await;
            started.store(true, Ordering::Relaxed);
            self.counters
                .origin_requests
                .fetch_add(1, Ordering::Relaxed);
            if validators.any() {
                self.counters.revalidations.fetch_add(1, Ordering::Relaxed);
            }
            (backend.fetch(&url, &validators, self.timing).await, slot)
        };
        // A revalidation runs to its end even when its waiters have gone:
        // its outcome (a failure in particular, for stale-if-error) is
        // what the next requests are answered from.
        let revalidating = prior.is_some();
        let (fetched, slot) = tokio::select! {
            fetched = request => fetched,
            () = self.abandoned(&url, &waiters), if !revalidating => {
                if started.load(Ordering::Relaxed) {
                    self.counters.origin_aborted.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(url = %redact(&url), "origin request abandoned: nobody waits for it");
                return;
            }
        };
        let now = Instant::now();
        let mut fill = None;
        let mut slot = Some(slot);
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
                    entry.stale_since = None;
                    if entry.freshness == Freshness::NoStore {
                        // Now marked not to be kept: served this once from
                        // memory; a disk copy's file is gone with it, so
                        // its waiters fetch it themselves.
                        if let Some(old) = entry.object.take() {
                            release(&mut state.used, &old);
                        }
                    }
                    if object.is_gone() {
                        Flight::Bypass(Arc::new(Mutex::new(None)))
                    } else {
                        Flight::Ready(object, CacheResult::Revalidated)
                    }
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
                        None => match slot.take() {
                            Some(slot) => {
                                Flight::Bypass(Arc::new(Mutex::new(Some((meta, body, slot)))))
                            }
                            None => Flight::Failed(FetchError::Failed("no request slot".into())),
                        },
                    }
                }
                (Err(e @ (FetchError::NotFound | FetchError::Denied)), _) => {
                    if let Some(object) = state.entries.get_mut(&url).and_then(|e| e.object.take())
                    {
                        release(&mut state.used, &object);
                    }
                    Flight::Failed(e)
                }
                (Err(e @ FetchError::Failed(_)), Some(object)) => {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                    let bound = self.policy.stale_if_error;
                    let entry = state.touch(&url, now);
                    let first = entry.stale_since.is_none();
                    let since = *entry.stale_since.get_or_insert(entry.fresh_until);
                    if now.saturating_duration_since(since) > bound {
                        tracing::warn!(url = %redact(&url), error = ?e, stale_for = ?now.saturating_duration_since(since), "origin still failing past --stale-if-error: the cached copy is dropped");
                        self.counters.stale_expired.fetch_add(1, Ordering::Relaxed);
                        if let Some(old) = entry.object.take() {
                            release(&mut state.used, &old);
                        }
                        Flight::Failed(e)
                    } else {
                        if first {
                            tracing::warn!(url = %redact(&url), error = ?e, retry_in = ?STALE_RETRY, served_until = ?bound, "origin failed: serving the cached copy");
                        } else {
                            tracing::debug!(url = %redact(&url), error = ?e, "origin still failing: serving the cached copy");
                        }
                        // Asked again after a while, and no later than
                        // the bound.
                        let left = bound.saturating_sub(now.saturating_duration_since(since));
                        entry.fresh_until = now + STALE_RETRY.min(left);
                        Flight::Ready(object, CacheResult::Stale)
                    }
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
        // Nobody waiting (all clients gone) is fine: the body is kept for a
        // while for the next ones (see `fill`).
        let _ = tx.send(Some(flight));
        if let (Some((object, body)), Some(slot)) = (fill, slot) {
            self.fill(&url, object, body, slot).await;
        }
    }

    /// When an entry of `freshness` fetched at `now` goes stale.
    fn fresh_until(&self, now: Instant, freshness: Freshness) -> Instant {
        let lifetime = match freshness {
            Freshness::For(d) => d.min(MAX_LIFETIME),
            Freshness::Default | Freshness::NoStore => self.policy.ttl,
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
        if meta.freshness == Freshness::NoStore || self.policy.max_bytes == 0 {
            return None;
        }
        // An announced length near 2^64 does not wrap: it is too large.
        let reserve = meta
            .size
            .unwrap_or(0)
            .checked_add(entry_cost(url))
            .filter(|&r| r <= self.policy.max_bytes)?;
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
        state.used = state.used.saturating_add(reserve);
        let entry = state.touch(url, now);
        entry.object = Some(object.clone());
        entry.validators = meta.validators.clone();
        entry.freshness = meta.freshness;
        entry.fresh_until = self.fresh_until(now, meta.freshness);
        entry.stale_since = None;
        entry.bypass_until = None;
        Some(object)
    }

    /// Evicts least recently used entries (not in flight, not filling,
    /// not `keep`) until `more` bytes, and one more entry, fit. False if
    /// they cannot.
    fn make_room(&self, state: &mut State, more: u64, keep: Option<&str>) -> bool {
        while state
            .used
            .checked_add(more)
            .is_none_or(|t| t > self.policy.max_bytes)
            || state.entries.len() > MAX_ENTRIES
        {
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

    /// Appends the body to `object` as readers ask for it (see the module
    /// docs), holding `slot` until the body ends. On failure the readers
    /// get an error and the entry is dropped (the next request fetches
    /// again).
    async fn fill(&self, url: &str, object: Arc<Object>, mut body: Body, slot: Slot) {
        // If this task is dropped (runtime shut down) or panics, the
        // readers must not wait for bytes that never come.
        let guard = FailOnDrop(&object);
        let mut outgrew = false;
        let mut abandoned = false;
        let result: io::Result<()> = async {
            loop {
                let wanted = tokio::select! {
                    wanted = object.wanted(&slot) => wanted,
                    () = slot.taken_back() => false,
                };
                if !wanted {
                    abandoned = true;
                    return Err(io::Error::other("abandoned: no reader left"));
                }
                let Some(chunk) = next_chunk(&mut body, self.timing.timeout).await? else {
                    break;
                };
                if chunk.is_empty() {
                    continue;
                }
                let len = object.len().saturating_add(chunk.len() as u64);
                match object.size {
                    Some(size) if len > size => {
                        return Err(io::Error::other("origin sent more than it announced"))
                    }
                    Some(_) => {}
                    None => {
                        // Unknown length: charged as it grows.
                        let more = object.charge_for(chunk.len());
                        let mut state = self.lock();
                        if object.is_cached() && more > 0 {
                            if !self.make_room(&mut state, more, Some(url)) {
                                outgrew = true;
                                return Err(io::Error::other("object outgrew the cache"));
                            }
                            state.used = state.used.saturating_add(more);
                            object.reserved.fetch_add(more, Ordering::Relaxed);
                        }
                    }
                }
                self.counters
                    .origin_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                object.append(&chunk)?;
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
        // The origin request is over: its connection goes with the body.
        drop(body);
        let slot_preempted = slot.preempted();
        drop(slot);
        std::mem::forget(guard);
        match result {
            Ok(()) => object.finish(Ok(())),
            Err(e) => {
                if abandoned {
                    // A slot taken back was counted when it was.
                    if !slot_preempted {
                        self.counters.origin_aborted.fetch_add(1, Ordering::Relaxed);
                    }
                    let why = if slot_preempted {
                        "its request slot went to a waiting request"
                    } else {
                        "no reader left"
                    };
                    tracing::debug!(url = %redact(url), fetched = object.len(), why, "origin body abandoned");
                } else {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %redact(url), error = %e, "origin body failed");
                }
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
    ENTRY_OVERHEAD.saturating_add(url.len() as u64)
}

/// Takes `object`'s bytes out of the cache's count (once) and unlinks its
/// file; readers that have it open read on.
fn release(used: &mut u64, object: &Object) {
    let reserved = object.reserved.swap(u64::MAX, Ordering::Relaxed);
    if reserved != u64::MAX {
        *used = used.saturating_sub(reserved);
        object.unlink();
    }
}

/// An in-memory body: pages of [`PAGE`] bytes (the last one, or with a
/// known size each, allocated no larger than what is left), filled by
/// copying, so the cache holds exactly what it counts.
#[derive(Default)]
struct Pages(Vec<Vec<u8>>);

enum Data {
    Memory(Mutex<Pages>),
    /// A file of the cache directory. Only the fill holds a descriptor (to
    /// write); every reader opens its own, so stored objects hold none.
    Disk {
        path: PathBuf,
        writer: Mutex<Option<std::fs::File>>,
    },
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
    /// Readers alive.
    readers: AtomicUsize,
    /// The furthest byte a reader has asked for.
    demand: AtomicU64,
    /// A reader asked past [`FIRST_WINDOW`]: the body is read to its end.
    committed: AtomicBool,
    /// Notified when demand grows or a reader comes or goes.
    wanted: Event,
}

/// Marks a slot busy when dropped (the fill stopped waiting).
struct Busy<'a>(&'a Slot);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set_idle(false);
    }
}

impl Object {
    fn create(store: &Store, n: u64, size: Option<u64>) -> io::Result<Self> {
        let data = match store {
            Store::Memory => Data::Memory(Mutex::default()),
            Store::Disk(dir) => {
                let path = dir.join(format!("{n}{OBJECT_SUFFIX}"));
                let file = crate::cachedir::create_file(&path)?;
                Data::Disk {
                    path,
                    writer: Mutex::new(Some(file)),
                }
            }
        };
        Ok(Object {
            size,
            data,
            len: AtomicU64::new(0),
            state: Mutex::new(Fill::Filling),
            grown: Event::new(),
            reserved: AtomicU64::new(0),
            readers: AtomicUsize::new(0),
            demand: AtomicU64::new(0),
            committed: AtomicBool::new(false),
            wanted: Event::new(),
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

    /// A disk copy released (evicted, replaced) before it could be opened:
    /// its file is gone.
    pub fn is_gone(&self) -> bool {
        matches!(self.data, Data::Disk { .. }) && !self.is_cached()
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// The size to announce (`tsize`): the origin's, or the final length.
    pub fn size(&self) -> Option<u64> {
        self.size.or_else(|| self.complete().then(|| self.len()))
    }

    /// Waits until a reader wants more than is there (or anything, once
    /// committed). False once no reader has been left for
    /// [`ORPHAN_GRACE`]: the body is abandoned.
    async fn wanted(&self, slot: &Slot) -> bool {
        let mut orphaned_until = None;
        let _busy = Busy(slot);
        loop {
            let listener = self.wanted.listen();
            if self.readers.load(Ordering::Acquire) == 0 {
                // Nobody to serve: the slot may be taken back too.
                slot.set_idle(true);
                let until = *orphaned_until.get_or_insert_with(|| Instant::now() + ORPHAN_GRACE);
                if tokio::time::timeout_at(until, listener).await.is_err()
                    && self.readers.load(Ordering::Acquire) == 0
                {
                    return false;
                }
                continue;
            }
            orphaned_until = None;
            if self.committed.load(Ordering::Acquire)
                || self.demand.load(Ordering::Acquire) > self.len()
            {
                return true;
            }
            // Waiting for readers that have not answered yet: the slot
            // may be taken back (see `Cache::slot`).
            slot.set_idle(true);
            listener.await;
        }
    }

    /// A reader whose client's first block ends at `first_block` asks for
    /// the bytes up to `end`: past that block, its client has answered.
    fn want(&self, end: u64, first_block: u64) {
        if end > first_block.min(FIRST_WINDOW) && !self.committed.swap(true, Ordering::AcqRel) {
            self.wanted.notify(1);
        }
        if end > self.demand.fetch_max(end, Ordering::AcqRel) {
            self.wanted.notify(1);
        }
    }

    /// Bytes of capacity appending `n` bytes adds, for an object of unknown
    /// size (whole pages in memory; the bytes themselves on disk).
    fn charge_for(&self, n: usize) -> u64 {
        match &self.data {
            Data::Memory(_) => {
                let page = PAGE as u64;
                let held = self.len().div_ceil(page).saturating_mul(page);
                let needed = self
                    .len()
                    .saturating_add(n as u64)
                    .div_ceil(page)
                    .saturating_mul(page);
                needed.saturating_sub(held)
            }
            Data::Disk { .. } => n as u64,
        }
    }

    fn append(&self, chunk: &[u8]) -> io::Result<()> {
        let at = self.len();
        match &self.data {
            Data::Memory(pages) => {
                let mut pages = pages.lock().unwrap_or_else(|e| e.into_inner());
                let mut rest = chunk;
                let mut len = at;
                while !rest.is_empty() {
                    let full = pages.0.last().is_none_or(|p| p.len() == p.capacity());
                    if full {
                        let left = self.size.map_or(u64::MAX, |s| s.saturating_sub(len));
                        let cap = usize::try_from(left).unwrap_or(PAGE).clamp(1, PAGE);
                        pages.0.push(Vec::with_capacity(cap));
                    }
                    // NOTE(unwrap): a page was pushed above if there was none.
                    let Some(page) = pages.0.last_mut() else {
                        break;
                    };
                    let n = (page.capacity() - page.len()).min(rest.len());
                    let (now, later) = rest.split_at(n);
                    page.extend_from_slice(now);
                    rest = later;
                    len += n as u64;
                }
            }
            Data::Disk { writer, .. } => {
                use std::os::unix::fs::FileExt;
                let writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                match writer.as_ref() {
                    Some(file) => file.write_all_at(chunk, at)?,
                    None => return Err(io::Error::other("cache file closed")),
                }
            }
        }
        self.len.fetch_add(chunk.len() as u64, Ordering::Release);
        self.grown.notify(usize::MAX);
        Ok(())
    }

    fn finish(&self, result: Result<(), String>) {
        if let Data::Disk { writer, .. } = &self.data {
            writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
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

    /// Copies bytes at `pos` into `buf` (from `file`, a disk object's
    /// reader's own descriptor); 0 if none are there yet.
    fn read_at(&self, pos: u64, buf: &mut [u8], file: Option<&std::fs::File>) -> io::Result<usize> {
        let available = self.len().saturating_sub(pos);
        let want = usize::try_from((buf.len() as u64).min(available)).unwrap_or(buf.len());
        if want == 0 {
            return Ok(0);
        }
        match (&self.data, file) {
            (Data::Memory(pages), _) => {
                let pages = pages.lock().unwrap_or_else(|e| e.into_inner());
                let mut copied = 0;
                while copied < want {
                    let at = pos + copied as u64;
                    // Every page but the last holds PAGE bytes (a known
                    // size's last page is shorter), so the page is at/PAGE.
                    let index = usize::try_from(at / PAGE as u64).unwrap_or(usize::MAX);
                    let from = (at % PAGE as u64) as usize;
                    let Some(page) = pages.0.get(index) else {
                        break;
                    };
                    let Some(bytes) = page.get(from..) else { break };
                    let n = bytes.len().min(want - copied);
                    if n == 0 {
                        break;
                    }
                    buf[copied..copied + n].copy_from_slice(&bytes[..n]);
                    copied += n;
                }
                Ok(copied)
            }
            (Data::Disk { .. }, Some(file)) => {
                use std::os::unix::fs::FileExt;
                file.read_at(&mut buf[..want], pos)
            }
            (Data::Disk { .. }, None) => Err(io::Error::other("cache file not open")),
        }
    }

    /// A reader from the first byte, for a client whose first block (all
    /// it reads before it has answered) is `first_block` bytes; a disk
    /// object's reader opens the file (an error if it cannot: out of
    /// descriptors, or the object was evicted in between).
    pub fn reader(self: &Arc<Self>, first_block: u64) -> io::Result<ObjectReader> {
        let file = match &self.data {
            Data::Memory(_) => None,
            Data::Disk { path, .. } => Some(std::fs::File::open(path)?),
        };
        self.readers.fetch_add(1, Ordering::AcqRel);
        self.wanted.notify(1);
        Ok(ObjectReader {
            object: self.clone(),
            file,
            pos: 0,
            first_block,
            listener: None,
        })
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
    file: Option<std::fs::File>,
    pos: u64,
    first_block: u64,
    listener: Option<EventListener>,
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if self.object.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.object.wanted.notify(1);
        }
    }
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
        let this = &mut *self;
        this.object.want(
            this.pos.saturating_add(buf.remaining() as u64),
            this.first_block,
        );
        loop {
            let n = this
                .object
                .read_at(this.pos, buf.initialize_unfilled(), this.file.as_ref())?;
            if n > 0 {
                buf.advance(n);
                this.pos += n as u64;
                this.listener = None;
                return Poll::Ready(Ok(()));
            }
            match this.object.fill_state() {
                Fill::Done if this.pos >= this.object.len() => return Poll::Ready(Ok(())),
                Fill::Failed(why) => return Poll::Ready(Err(io::Error::other(why.to_string()))),
                _ => {}
            }
            match &mut this.listener {
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.listener = None;
                }
                // Listen, then look again: bytes that came in between
                // would otherwise be missed.
                None => this.listener = Some(this.object.grown.listen()),
            }
        }
    }
}

/// A body streamed straight to one client, each chunk within `timeout`,
/// holding its origin request slot. A body longer or shorter than its
/// announced length fails. Until its client asks past its first block (it
/// has not answered yet), the slot may be taken back for a request that
/// waits (see [`OriginBuilder::max_requests`](crate::OriginBuilder::max_requests)):
/// the transfer then fails.
pub struct DirectReader {
    body: Body,
    chunk: Bytes,
    timeout: Duration,
    pending: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Arc<Counters>,
    announced: Option<u64>,
    received: u64,
    /// Bytes handed to the client.
    delivered: u64,
    first_block: u64,
    committed: bool,
    slot: Slot,
}

impl DirectReader {
    pub(crate) fn new(
        body: Body,
        announced: Option<u64>,
        slot: Slot,
        first_block: u64,
        timeout: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        slot.set_idle(true);
        DirectReader {
            body,
            chunk: Bytes::new(),
            timeout,
            pending: None,
            counters,
            announced,
            received: 0,
            delivered: 0,
            first_block,
            committed: false,
            slot,
        }
    }

    fn read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while self.chunk.is_empty() {
            match self.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.counters
                        .origin_bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    self.received = self.received.saturating_add(chunk.len() as u64);
                    if self.announced.is_some_and(|a| self.received > a) {
                        return Poll::Ready(Err(io::Error::other(
                            "origin sent more than it announced",
                        )));
                    }
                    self.chunk = chunk;
                    self.pending = None;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    return Poll::Ready(match self.announced {
                        Some(a) if self.received < a => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("origin body ended at {} of {a} bytes", self.received),
                        )),
                        _ => Ok(()),
                    })
                }
                Poll::Pending => {
                    let timeout = self.timeout;
                    let sleep = self
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
        let n = self.chunk.len().min(buf.remaining());
        buf.put_slice(&self.chunk.split_to(n));
        self.delivered = self.delivered.saturating_add(n as u64);
        Poll::Ready(Ok(()))
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
        if this.slot.preempted() {
            return Poll::Ready(Err(io::Error::other(
                "its origin request went to a client that answered",
            )));
        }
        let end = this.delivered.saturating_add(buf.remaining() as u64);
        if end > this.first_block.min(FIRST_WINDOW) {
            this.committed = true;
        }
        this.slot.set_idle(false);
        let read = this.read(cx, buf);
        if !this.committed {
            this.slot.set_idle(true);
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(store: &Store, size: Option<u64>, chunks: &[&[u8]]) -> Arc<Object> {
        let o = Object::create(store, 1, size).unwrap();
        for c in chunks {
            o.append(c).unwrap();
        }
        Arc::new(o)
    }

    fn pieces(data: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&n| {
                let piece = data[at..at + n].to_vec();
                at += n;
                piece
            })
            .collect()
    }

    #[test]
    fn reads_at_any_offset_across_pieces_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let total = 3 * PAGE + 5000;
        let data: Vec<u8> = (0..=255).cycle().take(total).collect();
        let sizes = [1, 7, 1000, 1, PAGE, 2500, PAGE + 3, PAGE - 2000];
        let rest = total - sizes.iter().sum::<usize>();
        let parts = pieces(&data, &[&sizes[..], &[rest]].concat());
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), total);
        for store in [Store::Memory, Store::Disk(dir.path().to_owned())] {
            for size in [None, Some(total as u64)] {
                let o = object(&store, size, &parts);
                let reader = o.reader(512).unwrap();
                assert_eq!(o.len(), total as u64);
                let p = PAGE as u64;
                for pos in [0u64, 1, 7, 8, 1007, 1008, p - 1, p, p + 1, 2 * p + 17] {
                    for len in [1usize, 3, 1468, PAGE + 1, 3 * PAGE] {
                        let mut buf = vec![0; len];
                        let n = o.read_at(pos, &mut buf, reader.file.as_ref()).unwrap();
                        let end = (pos as usize + len).min(total);
                        assert_eq!(n, end - pos as usize, "{store:?} {size:?} {pos} {len}");
                        assert_eq!(&buf[..n], &data[pos as usize..end]);
                    }
                }
                let mut buf = [0; 8];
                assert_eq!(
                    o.read_at(total as u64, &mut buf, reader.file.as_ref())
                        .unwrap(),
                    0
                );
            }
        }
    }

    /// Small writes are copied into pages: the object holds what it
    /// stores (its announced size exactly; an unknown size in whole
    /// pages, as charged), not the chunks it was given.
    #[test]
    fn memory_pages_hold_what_is_counted() {
        let data = vec![7u8; 2 << 20];
        let parts: Vec<&[u8]> = data.chunks(128).collect();
        for size in [Some(data.len() as u64), None] {
            let o = object(&Store::Memory, size, &[]);
            let mut charged = 0;
            for part in &parts {
                charged += o.charge_for(part.len());
                o.append(part).unwrap();
            }
            let Data::Memory(pages) = &o.data else {
                unreachable!()
            };
            let held: usize = pages.lock().unwrap().0.iter().map(Vec::capacity).sum();
            assert_eq!(held, data.len(), "{size:?}");
            assert_eq!(charged, data.len() as u64);
        }
        // A known size that is not a whole number of pages: the last page
        // is exactly what is left.
        let o = object(
            &Store::Memory,
            Some(PAGE as u64 + 700),
            &[&[1; 300], &[2; PAGE + 400]],
        );
        let Data::Memory(pages) = &o.data else {
            unreachable!()
        };
        let caps: Vec<usize> = pages.lock().unwrap().0.iter().map(Vec::capacity).collect();
        assert_eq!(caps, [PAGE, 700]);
    }

    fn new_cache(max_bytes: u64, store: Store) -> Cache {
        Cache::new(
            store,
            Policy {
                max_bytes,
                ttl: Duration::from_secs(60),
                stale_if_error: Duration::from_secs(60),
                max_requests: 4,
            },
            Timing {
                timeout: Duration::from_secs(1),
                retries: 0,
            },
            Arc::default(),
        )
        .unwrap()
    }

    fn meta(size: Option<u64>) -> Meta {
        Meta {
            size,
            validators: Validators::default(),
            freshness: Freshness::Default,
        }
    }

    /// An announced length near 2^64 does not wrap the reservation: it is
    /// not admitted (streamed through) and nothing is charged.
    #[tokio::test]
    async fn huge_announced_lengths_are_not_admitted() {
        let cache = new_cache(1 << 20, Store::Memory);
        let now = Instant::now();
        for size in [u64::MAX, u64::MAX - 100, u64::MAX - ENTRY_OVERHEAD, 1 << 20] {
            let mut state = cache.lock();
            assert!(cache
                .admit(&mut state, "http://o/x", &meta(Some(size)), now)
                .is_none());
            assert_eq!(state.used, 0, "{size}");
        }
        let mut state = cache.lock();
        let o = cache.admit(&mut state, "http://o/x", &meta(Some(1000)), now);
        assert!(o.is_some());
        assert_eq!(state.used, 1000 + entry_cost("http://o/x"));
        drop(state);
        assert_eq!(cache.usage(), (0, 1));
        o.unwrap().append(&[0; 1000]).unwrap();
        assert_eq!(cache.usage(), (1000, 1));
        assert_eq!(cache.charged(), 1000 + entry_cost("http://o/x"));
    }

    fn body(chunks: Vec<usize>) -> Body {
        let chunks: Vec<io::Result<Bytes>> = chunks
            .into_iter()
            .map(|n| Ok(Bytes::from(vec![9u8; n])))
            .collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    /// Fills `url` announced as `announced` with `chunks`, read to the end
    /// by one reader; the object's fill state after.
    async fn fill_with(cache: &Arc<Cache>, announced: Option<u64>, chunks: Vec<usize>) -> Fill {
        let object = {
            let mut state = cache.lock();
            cache
                .admit(&mut state, "http://o/x", &meta(announced), Instant::now())
                .unwrap()
        };
        let reader = object.reader(512).unwrap();
        object.want(u64::MAX, 512);
        let slot = cache.slot().await;
        cache
            .fill("http://o/x", object.clone(), body(chunks), slot)
            .await;
        drop(reader);
        object.fill_state()
    }

    /// A body longer or shorter than its Content-Length fails its
    /// transfer and leaves nothing cached or charged; an exact one stays.
    #[tokio::test]
    async fn bodies_other_than_announced_fail_and_cache_nothing() {
        for (announced, chunks) in [
            (1000, vec![500, 499]),
            (1000, vec![500, 501]),
            (1000, vec![2000]),
            (1000, vec![]),
        ] {
            let cache = Arc::new(new_cache(1 << 20, Store::Memory));
            let end = fill_with(&cache, Some(announced), chunks.clone()).await;
            assert!(matches!(end, Fill::Failed(_)), "{chunks:?}: {end:?}");
            assert_eq!(cache.usage(), (0, 0), "{chunks:?}");
            assert_eq!(cache.charged(), 0, "{chunks:?}");
            assert!(cache.lock().entries.is_empty());
        }
        let cache = Arc::new(new_cache(1 << 20, Store::Memory));
        let end = fill_with(&cache, Some(1000), vec![1, 998, 1]).await;
        assert!(matches!(end, Fill::Done), "{end:?}");
        assert_eq!(cache.usage(), (1000, 1));
        assert_eq!(cache.charged(), 1000 + entry_cost("http://o/x"));
    }

    /// An unknown length is charged in pages as it grows; one that
    /// outgrows the cache fails, is uncharged and then streamed through.
    #[tokio::test]
    async fn unknown_lengths_are_charged_as_they_grow() {
        let cache = Arc::new(new_cache(4 * PAGE as u64, Store::Memory));
        let end = fill_with(&cache, None, vec![PAGE, PAGE, 100]).await;
        assert!(matches!(end, Fill::Done), "{end:?}");
        assert_eq!(cache.usage(), (2 * PAGE as u64 + 100, 1));
        assert_eq!(cache.charged(), 3 * PAGE as u64 + entry_cost("http://o/x"));
        let cache = Arc::new(new_cache(4 * PAGE as u64, Store::Memory));
        let end = fill_with(&cache, None, vec![PAGE; 4]).await;
        assert!(matches!(end, Fill::Failed(_)), "{end:?}");
        assert_eq!(cache.usage(), (0, 0));
        assert_eq!(cache.charged(), 0);
        let state = cache.lock();
        assert!(state.entries["http://o/x"].bypass_until.is_some());
    }

    /// With every request slot taken, a waiting request takes the slot of a
    /// fill that waits only for unanswered readers; a fill whose reader
    /// answered keeps its slot.
    #[tokio::test]
    async fn unanswered_fills_give_their_slot_to_waiting_requests() {
        let cache = Arc::new(new_cache(1 << 20, Store::Memory));
        let cache = Arc::new(Cache {
            requests: Arc::new(Semaphore::new(1)),
            ..Arc::into_inner(cache).unwrap()
        });
        for committed in [false, true] {
            let url = format!("http://o/{committed}");
            let object = {
                let mut state = cache.lock();
                cache
                    .admit(&mut state, &url, &meta(Some(1 << 19)), Instant::now())
                    .unwrap()
            };
            let reader = object.reader(512).unwrap();
            object.want(if committed { 1024 } else { 512 }, 512);
            // One chunk, then the origin goes quiet for good.
            let body: Body = Box::pin(futures_util::StreamExt::chain(
                futures_util::stream::iter([Ok(Bytes::from(vec![1u8; 8192]))]),
                futures_util::stream::pending(),
            ));
            let slot = cache.slot().await;
            let filling = {
                let (cache, object) = (cache.clone(), object.clone());
                tokio::spawn(async move { cache.fill(&url, object, body, slot).await })
            };
            while object.len() == 0 {
                tokio::task::yield_now().await;
            }
            let waiting = tokio::time::timeout(Duration::from_millis(300), cache.slot()).await;
            if committed {
                assert!(waiting.is_err(), "a verified reader's fill lost its slot");
                filling.abort();
            } else {
                assert!(waiting.is_ok(), "the unanswered fill kept its slot");
                filling.await.unwrap();
                assert!(object.failed());
                assert_eq!(cache.usage(), (0, 0));
            }
            drop(reader);
        }
    }

    /// A body streamed through to a client that has not asked past its
    /// first block gives its slot to a waiting request (and then fails);
    /// one whose client asked for more keeps it.
    #[tokio::test]
    async fn streamed_bodies_of_unanswered_clients_give_their_slot() {
        let cache = Arc::new(new_cache(1 << 20, Store::Memory));
        let cache = Arc::new(Cache {
            requests: Arc::new(Semaphore::new(1)),
            ..Arc::into_inner(cache).unwrap()
        });
        async fn read(r: &mut DirectReader, n: usize) -> io::Result<usize> {
            let mut buf = vec![0u8; n];
            let mut buf = ReadBuf::new(&mut buf);
            std::future::poll_fn(|cx| Pin::new(&mut *r).poll_read(cx, &mut buf)).await?;
            Ok(buf.filled().len())
        }
        for asked_more in [false, true] {
            let body: Body = Box::pin(futures_util::StreamExt::chain(
                futures_util::stream::iter([Ok(Bytes::from(vec![1u8; 8192]))]),
                futures_util::stream::pending(),
            ));
            let slot = cache.slot().await;
            let mut reader = DirectReader::new(
                body,
                Some(1 << 20),
                slot,
                512,
                Duration::from_secs(60),
                Arc::default(),
            );
            assert_eq!(read(&mut reader, 512).await.unwrap(), 512);
            if asked_more {
                assert_eq!(read(&mut reader, 512).await.unwrap(), 512);
            }
            let waiting = tokio::time::timeout(Duration::from_millis(300), cache.slot()).await;
            if asked_more {
                assert!(waiting.is_err(), "an answered client's body lost its slot");
            } else {
                assert!(
                    waiting.is_ok(),
                    "the unanswered client's body kept its slot"
                );
                assert!(read(&mut reader, 512).await.is_err());
            }
        }
    }

    /// Each disk object holds no descriptor once filled: only its readers
    /// do, each its own, closed when the reader goes.
    #[test]
    fn filled_disk_objects_hold_no_descriptor() {
        fn open_fds() -> usize {
            std::fs::read_dir("/proc/self/fd").unwrap().count()
        }
        let dir = tempfile::tempdir().unwrap();
        let before = open_fds();
        let objects: Vec<_> = (0..50)
            .map(|i| {
                let o = Object::create(&Store::Disk(dir.path().into()), i, Some(3)).unwrap();
                o.append(b"abc").unwrap();
                o.finish(Ok(()));
                Arc::new(o)
            })
            .collect();
        assert!(open_fds() < before + 5, "{} > {before}", open_fds());
        let reader = objects[7].reader(512).unwrap();
        assert!(open_fds() < before + 6);
        drop(reader);
        assert_eq!(objects[7].readers.load(Ordering::Relaxed), 0);
    }

    /// The fill reads only what readers ask for until one asks past the
    /// first window, and gives up once no reader is left for the grace.
    #[tokio::test(start_paused = true)]
    async fn fill_follows_demand_then_commits_and_orphans_end_it() {
        let cache = new_cache(1 << 20, Store::Memory);
        let slot = cache.slot().await;
        let o = object(&Store::Memory, Some(1 << 20), &[]);
        // No reader: abandoned after the grace, not before.
        let started = Instant::now();
        assert!(!o.wanted(&slot).await);
        assert!(started.elapsed() >= ORPHAN_GRACE);
        let reader = o.reader(512).unwrap();
        // A reader that asked for nothing yet: no demand, the fill waits.
        let waiting = tokio::time::timeout(Duration::from_secs(30), o.wanted(&slot)).await;
        assert!(waiting.is_err(), "filled without demand");
        // One block asked (an unverified session's DATA 1).
        o.want(512, 512);
        assert!(o.wanted(&slot).await);
        o.append(&[0; 8192]).unwrap();
        let waiting = tokio::time::timeout(Duration::from_secs(30), o.wanted(&slot)).await;
        assert!(waiting.is_err(), "filled past the demand");
        assert!(!o.committed.load(Ordering::Relaxed));
        // A client of a larger block: its first block is not past it.
        o.want(8192, 65464);
        assert!(!o.committed.load(Ordering::Relaxed));
        // Past its first block: committed, read on without asking.
        o.want(1024, 512);
        assert!(o.committed.load(Ordering::Relaxed));
        o.append(&[0; 200_000]).unwrap();
        assert!(o.wanted(&slot).await);
        // The last reader goes: abandoned after the grace.
        drop(reader);
        let started = Instant::now();
        assert!(!o.wanted(&slot).await);
        assert!(started.elapsed() >= ORPHAN_GRACE);
    }
}
