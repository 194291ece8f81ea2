//! The cache's runtime half: one origin request per URL at a time
//! (single-flight), shared by every request that waits for it, and the
//! fills that copy bodies into stored objects as their readers ask.
//!
//! The only part of the cache that knows tokio: it reads the clock (through
//! `tokio::time`, so paused-time tests drive it), spawns the flights,
//! waits, and hands `now` to the pure [`Index`].

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::index::{Bounds, Index, Lookup, Outgrew, Response, Settled, Why, MAX_ENTRIES};
use super::object::{Object, Store};
use super::policy::{Meta, Policy, Validators, STALE_RETRY};
use super::slot::{Busy, Slot, Slots};
use crate::fetch::{next_chunk, Backend, Body, FetchError, Fetched, Timing};
use crate::stats::{CacheResult, Counters};
use crate::template::redact;

/// How long a body (or a flight) with no reader left is kept before its
/// origin request is abandoned: long enough for the download that follows
/// a tsize probe (UEFI's second request comes milliseconds after its
/// ERROR 8) to find it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// The cache's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Most bytes stored.
    pub max_bytes: u64,
    /// Freshness and stale-if-error.
    pub policy: Policy,
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

impl PartialEq for FlightRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.waiters, &other.waiters)
    }
}

impl FlightRef {
    /// One more waiter (under the index's lock, so the flight sees it).
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

type CacheIndex = Index<Arc<Object>, FlightRef>;

/// The index under its lock; what it lets go is released (counted,
/// logged, unlinked) before the lock is.
struct Locked<'a> {
    index: MutexGuard<'a, CacheIndex>,
    counters: &'a Counters,
}

impl std::ops::Deref for Locked<'_> {
    type Target = CacheIndex;
    fn deref(&self) -> &CacheIndex {
        &self.index
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut CacheIndex {
        &mut self.index
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for released in self.index.released() {
            released.object.release();
            if let Why::Evicted(url) = released.why {
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(url = %redact(&url), "evicted from the cache");
            }
        }
    }
}

/// The cache. Shared by every session of a handler.
pub(crate) struct Cache {
    index: Mutex<CacheIndex>,
    store: Store,
    timing: Timing,
    counters: Arc<Counters>,
    slots: Slots,
    policy: Policy,
    /// Numbers the cache directory's files.
    next_file: AtomicU64,
}

/// The clock the index is given.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Cache {
    /// A cache of `config` storing in `store`.
    pub fn new(
        store: Store,
        config: Config,
        timing: Timing,
        counters: Arc<Counters>,
    ) -> io::Result<Self> {
        if let Store::Disk(dir) = &store {
            // An instance's own new directory (`cachedir::Instance`).
            crate::cachedir::check_private(dir)?;
        }
        let bounds = Bounds {
            max_bytes: config.max_bytes,
            max_entries: MAX_ENTRIES,
        };
        Ok(Cache {
            index: Mutex::new(Index::new(bounds, config.policy)),
            slots: Slots::new(config.max_requests, Arc::clone(&counters)),
            policy: config.policy,
            store,
            timing,
            counters,
            next_file: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            // A panic elsewhere leaves the index consistent (every update
            // is one step), so a poisoned lock is used as it is.
            index: self.index.lock().unwrap_or_else(|e| e.into_inner()),
            counters: &self.counters,
        }
    }

    /// Body bytes stored and objects held.
    pub fn usage(&self) -> (u64, u64) {
        self.lock().usage()
    }

    /// The object for `url`: cached, fetched once for everyone asking, or
    /// streamed through.
    pub async fn get(
        self: &Arc<Self>,
        url: &str,
        backend: &Arc<Backend>,
    ) -> Result<Found, FetchError> {
        let joined = {
            let mut index = self.lock();
            let new_flight = || {
                let (tx, rx) = watch::channel(None);
                let flight = FlightRef {
                    outcome: rx,
                    waiters: Arc::default(),
                };
                (flight, tx)
            };
            let mut sender = None;
            let lookup = index.lookup(url, now(), || {
                let (flight, tx) = new_flight();
                sender = Some(tx);
                flight
            });
            match lookup {
                Lookup::Hit(object, how) => {
                    self.counters.count(how);
                    return Ok(Found::Cached(object, how));
                }
                Lookup::Bypass => None,
                Lookup::Join(flight) => Some(flight.join()),
                Lookup::Start { flight, prior } => {
                    let joined = flight.join();
                    // NOTE: `lookup` made the flight, and with it the sender.
                    if let Some(tx) = sender {
                        let cache = self.clone();
                        let backend = backend.clone();
                        let url = url.to_owned();
                        tokio::spawn(
                            async move { cache.fly(url, backend, prior, tx, flight).await },
                        );
                    }
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
        let slot = self.slots.acquire().await;
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

    /// Resolves once every request waiting for `url`'s `flight` has gone;
    /// the flight is then forgotten, so a later request starts its own.
    async fn abandoned(&self, url: &str, flight: &FlightRef) {
        let waiters = &flight.waiters;
        loop {
            let notified = waiters.gone.notified();
            if waiters.count.load(Ordering::Acquire) == 0 {
                let mut index = self.lock();
                // Requests join under this lock: none can join after this.
                if waiters.count.load(Ordering::Acquire) == 0 {
                    index.end_flight(url, Some(flight));
                    return;
                }
            }
            notified.await;
        }
    }

    /// One flight: the origin request for `url` (conditional when there is
    /// a `prior` copy with validators), its outcome settled in the index
    /// and sent to every waiter; then, for a new body, the fill. Abandoned,
    /// with its origin request, when every waiter has gone before the
    /// headers came.
    async fn fly(
        self: Arc<Self>,
        url: String,
        backend: Arc<Backend>,
        prior: Option<(Arc<Object>, Validators)>,
        tx: watch::Sender<Option<Flight>>,
        flight: FlightRef,
    ) {
        let (prior, validators) = match prior {
            Some((object, validators)) => (Some(object), validators),
            None => (None, Validators::default()),
        };
        let started = AtomicBool::new(false);
        let request = async {
            let slot = self.slots.acquire().await;
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
            () = self.abandoned(&url, &flight), if !revalidating => {
                if started.load(Ordering::Relaxed) {
                    self.counters.origin_aborted.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(url = %redact(&url), "origin request abandoned: nobody waits for it");
                return;
            }
        };
        let (response, body, error) = match fetched {
            Ok(Fetched::NotModified(meta)) => (Response::NotModified(meta), None, None),
            Ok(Fetched::Body(meta, body)) => (Response::Body(meta), Some(body), None),
            Err(e @ (FetchError::NotFound | FetchError::Denied)) => {
                (Response::Missing, None, Some(e))
            }
            Err(e @ FetchError::Failed(_)) => (Response::Failed, None, Some(e)),
        };
        let meta = match &response {
            Response::Body(meta) => Some(meta.clone()),
            _ => None,
        };
        let settled = {
            let mut index = self.lock();
            let settled = index.on_fetched(&url, now(), prior, response, |meta| {
                let n = self.next_file.fetch_add(1, Ordering::Relaxed) + 1;
                match Object::create(&self.store, n, meta.size, meta.modified) {
                    Ok(o) => Some(Arc::new(o)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create a cache file: streaming through");
                        None
                    }
                }
            });
            // Released (unlinked) before the answer goes out: a disk copy
            // a 304 made no-store is gone for its waiters.
            drop(index);
            settled
        };
        let failure = || {
            error
                .clone()
                .unwrap_or_else(|| FetchError::Failed("304 to a plain GET".into()))
        };
        let mut fill = None;
        let outcome = match settled {
            Settled::Admitted(object, how) => {
                fill = body.map(|body| (object.clone(), body, slot));
                Flight::Ready(object, how)
            }
            Settled::NotAdmitted => match (meta, body) {
                (Some(meta), Some(body)) => {
                    Flight::Bypass(Arc::new(Mutex::new(Some((meta, body, slot)))))
                }
                _ => Flight::Failed(FetchError::Failed("no request slot".into())),
            },
            // A disk copy released by the 304 (no-store now) is gone: its
            // waiters fetch it themselves.
            Settled::Revalidated(object) if object.is_gone() => {
                Flight::Bypass(Arc::new(Mutex::new(None)))
            }
            Settled::Revalidated(object) => Flight::Ready(object, CacheResult::Revalidated),
            Settled::Stale { object, first } => {
                self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                let bound = self.policy.stale_if_error;
                if first {
                    tracing::warn!(url = %redact(&url), error = ?failure(), retry_in = ?STALE_RETRY, served_until = ?bound, "origin failed: serving the cached copy");
                } else {
                    tracing::debug!(url = %redact(&url), error = ?failure(), "origin still failing: serving the cached copy");
                }
                Flight::Ready(object, CacheResult::Stale)
            }
            Settled::Expired { stale_for } => {
                self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                self.counters.stale_expired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %redact(&url), error = ?failure(), ?stale_for, "origin still failing past --stale-if-error: the cached copy is dropped");
                Flight::Failed(failure())
            }
            Settled::Nothing => {
                if !matches!(failure(), FetchError::NotFound | FetchError::Denied) {
                    self.counters.origin_errors.fetch_add(1, Ordering::Relaxed);
                }
                Flight::Failed(failure())
            }
        };
        // Nobody waiting (all clients gone) is fine: the body is kept for a
        // while for the next ones (see `fill`).
        let _ = tx.send(Some(outcome));
        if let Some((object, body, slot)) = fill {
            self.fill(&url, object, body, slot).await;
        }
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
                    wanted = wanted(&object, &slot) => wanted,
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
                match object.announced() {
                    Some(size) if len > size => {
                        return Err(io::Error::other("origin sent more than it announced"))
                    }
                    Some(_) => {}
                    None => {
                        // Unknown length: charged as it grows.
                        let more = object.charge_for(chunk.len());
                        if self.lock().grow(url, &object, more) == Err(Outgrew) {
                            outgrew = true;
                            return Err(io::Error::other("object outgrew the cache"));
                        }
                    }
                }
                self.counters
                    .origin_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                object.append(&chunk)?;
            }
            match object.announced() {
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
                self.lock().fill_failed(url, &object, now(), outgrew);
                object.finish(Err(e.to_string()));
            }
        }
    }
}

/// Waits until a reader of `object` wants more than is there (or anything,
/// once committed). False once no reader has been left for
/// [`ORPHAN_GRACE`]: the body is abandoned. Meanwhile the fill's `slot`
/// is idle (it may be taken back, see [`Slots::acquire`]).
async fn wanted(object: &Object, slot: &Slot) -> bool {
    let mut orphaned_until = None;
    let _busy = Busy(slot);
    loop {
        let listener = object.listen_demand();
        if object.readers() == 0 {
            // Nobody to serve: the slot may be taken back too.
            slot.set_idle(true);
            let until = *orphaned_until.get_or_insert_with(|| Instant::now() + ORPHAN_GRACE);
            if tokio::time::timeout_at(until, listener).await.is_err() && object.readers() == 0 {
                return false;
            }
            continue;
        }
        orphaned_until = None;
        if object.wants_more() {
            return true;
        }
        // Waiting for readers that have not answered yet: the slot
        // may be taken back.
        slot.set_idle(true);
        listener.await;
    }
}

/// Fails an object's fill if dropped before it is disarmed (`forget`).
struct FailOnDrop<'a>(&'a Object);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish(Err("cache fill abandoned".into()));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cache::index::{entry_cost, Fill};
    use crate::cache::object::PAGE;
    use crate::cache::policy::Freshness;

    fn new_cache(max_bytes: u64, max_requests: usize) -> Arc<Cache> {
        let config = Config {
            max_bytes,
            policy: Policy {
                ttl: Duration::from_secs(60),
                stale_if_error: Duration::from_secs(60),
            },
            max_requests,
        };
        let timing = Timing {
            timeout: Duration::from_secs(1),
            retries: 0,
        };
        Arc::new(Cache::new(Store::Memory, config, timing, Arc::default()).unwrap())
    }

    fn meta(size: Option<u64>) -> Meta {
        Meta {
            size,
            modified: None,
            validators: Validators::default(),
            freshness: Freshness::Default,
        }
    }

    /// `url`'s body announced as `size`, admitted as a flight would.
    fn admit(cache: &Cache, url: &str, size: Option<u64>) -> Option<Arc<Object>> {
        let mut index = cache.lock();
        let (_, rx) = watch::channel(None);
        let flight = || FlightRef {
            outcome: rx,
            waiters: Arc::default(),
        };
        assert!(matches!(
            index.lookup(url, now(), flight),
            Lookup::Start { .. }
        ));
        let response = Response::Body(meta(size));
        let create = |m: &Meta| {
            Object::create(&Store::Memory, 1, m.size, None)
                .ok()
                .map(Arc::new)
        };
        match index.on_fetched(url, now(), None, response, create) {
            Settled::Admitted(object, _) => Some(object),
            _ => None,
        }
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
        let object = admit(cache, "http://o/x", announced).unwrap();
        let reader = object.reader(512).unwrap();
        object.want(u64::MAX, 512);
        let slot = cache.slots.acquire().await;
        cache
            .fill("http://o/x", object.clone(), body(chunks), slot)
            .await;
        drop(reader);
        object.fill_state()
    }

    /// Body bytes are what the usage counts; the entry's overhead is only
    /// charged.
    #[tokio::test]
    async fn usage_counts_body_bytes_only() {
        let cache = new_cache(1 << 20, 4);
        let o = admit(&cache, "http://o/x", Some(1000)).unwrap();
        assert_eq!(cache.usage(), (0, 1));
        o.append(&[0; 1000]).unwrap();
        assert_eq!(cache.usage(), (1000, 1));
        assert_eq!(cache.lock().charged(), 1000 + entry_cost("http://o/x"));
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
            let cache = new_cache(1 << 20, 4);
            let end = fill_with(&cache, Some(announced), chunks.clone()).await;
            assert!(matches!(end, Fill::Failed(_)), "{chunks:?}: {end:?}");
            assert_eq!(cache.usage(), (0, 0), "{chunks:?}");
            assert_eq!(cache.lock().charged(), 0, "{chunks:?}");
            assert_eq!(cache.lock().len(), 0);
        }
        let cache = new_cache(1 << 20, 4);
        let end = fill_with(&cache, Some(1000), vec![1, 998, 1]).await;
        assert!(matches!(end, Fill::Done), "{end:?}");
        assert_eq!(cache.usage(), (1000, 1));
        assert_eq!(cache.lock().charged(), 1000 + entry_cost("http://o/x"));
    }

    /// An unknown length is charged in pages as it grows; one that
    /// outgrows the cache fails, is uncharged and then streamed through.
    #[tokio::test]
    async fn unknown_lengths_are_charged_as_they_grow() {
        let cache = new_cache(4 * PAGE as u64, 4);
        let end = fill_with(&cache, None, vec![PAGE, PAGE, 100]).await;
        assert!(matches!(end, Fill::Done), "{end:?}");
        assert_eq!(cache.usage(), (2 * PAGE as u64 + 100, 1));
        assert_eq!(
            cache.lock().charged(),
            3 * PAGE as u64 + entry_cost("http://o/x")
        );
        let cache = new_cache(4 * PAGE as u64, 4);
        let end = fill_with(&cache, None, vec![PAGE; 4]).await;
        assert!(matches!(end, Fill::Failed(_)), "{end:?}");
        assert_eq!(cache.usage(), (0, 0));
        assert_eq!(cache.lock().charged(), 0);
        let mut index = cache.lock();
        let flight = || unreachable!("a flight for a body that outgrew the cache");
        assert!(matches!(
            index.lookup("http://o/x", now(), flight),
            Lookup::Bypass
        ));
    }

    /// With every request slot taken, a waiting request takes the slot of a
    /// fill that waits only for unanswered readers; a fill whose reader
    /// answered keeps its slot.
    #[tokio::test]
    async fn unanswered_fills_give_their_slot_to_waiting_requests() {
        let cache = new_cache(1 << 20, 1);
        for committed in [false, true] {
            let url = format!("http://o/{committed}");
            let object = admit(&cache, &url, Some(1 << 19)).unwrap();
            let reader = object.reader(512).unwrap();
            object.want(if committed { 1024 } else { 512 }, 512);
            // One chunk, then the origin goes quiet for good.
            let body: Body = Box::pin(futures_util::StreamExt::chain(
                futures_util::stream::iter([Ok(Bytes::from(vec![1u8; 8192]))]),
                futures_util::stream::pending(),
            ));
            let slot = cache.slots.acquire().await;
            let filling = {
                let (cache, object) = (cache.clone(), object.clone());
                tokio::spawn(async move { cache.fill(&url, object, body, slot).await })
            };
            while object.len() == 0 {
                tokio::task::yield_now().await;
            }
            let waiting =
                tokio::time::timeout(Duration::from_millis(300), cache.slots.acquire()).await;
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

    /// The fill reads only what readers ask for until one asks past the
    /// first window, and gives up once no reader is left for the grace.
    #[tokio::test(start_paused = true)]
    async fn fill_follows_demand_then_commits_and_orphans_end_it() {
        let cache = new_cache(1 << 20, 4);
        let slot = cache.slots.acquire().await;
        let o = Arc::new(Object::create(&Store::Memory, 1, Some(1 << 20), None).unwrap());
        // No reader: abandoned after the grace, not before.
        let started = Instant::now();
        assert!(!wanted(&o, &slot).await);
        assert!(started.elapsed() >= ORPHAN_GRACE);
        let reader = o.reader(512).unwrap();
        // A reader that asked for nothing yet: no demand, the fill waits.
        let waiting = tokio::time::timeout(Duration::from_secs(30), wanted(&o, &slot)).await;
        assert!(waiting.is_err(), "filled without demand");
        // One block asked (an unverified session's DATA 1).
        o.want(512, 512);
        assert!(wanted(&o, &slot).await);
        o.append(&[0; 8192]).unwrap();
        let waiting = tokio::time::timeout(Duration::from_secs(30), wanted(&o, &slot)).await;
        assert!(waiting.is_err(), "filled past the demand");
        assert!(!o.committed());
        // A client of a larger block: its first block is not past it.
        o.want(8192, 65464);
        assert!(!o.committed());
        // Past its first block: committed, read on without asking.
        o.want(1024, 512);
        assert!(o.committed());
        o.append(&[0; 200_000]).unwrap();
        assert!(wanted(&o, &slot).await);
        // The last reader goes: abandoned after the grace.
        drop(reader);
        let started = Instant::now();
        assert!(!wanted(&o, &slot).await);
        assert!(started.elapsed() >= ORPHAN_GRACE);
    }
}
