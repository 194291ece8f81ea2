//! The cache's index: which URL holds which copy, how fresh it is, what
//! it costs, and which copies go when room is needed.
//!
//! Pure: no clock (every call takes `now`), no I/O, no runtime. The index
//! is generic over the stored object (`O`, see [`Stored`]) and over the
//! handle of an origin request in flight (`F`), so it is tested with plain
//! values. It never touches an object's bytes: a copy it lets go (evicted,
//! replaced, dropped) is queued in [`Index::released`], and its owner
//! releases it (unlinks its file) before it lets go of the index's lock.
//!
//! Charges: an entry is charged its body (reserved at its announced size,
//! or grown as it arrives) plus [`ENTRY_OVERHEAD`] and its URL, so many
//! small objects are bounded too. The charged total never exceeds
//! [`Bounds::max_bytes`], and every sum is checked: an announced length
//! near 2^64 is too large, never a wrap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::policy::{Freshness, Meta, Policy, StaleIfError, Validators, TOO_LARGE_FOR};
use crate::stats::CacheResult;

/// Most entries (URLs) the cache holds, whatever their sizes.
pub const MAX_ENTRIES: usize = 10_000;

/// Bytes an entry is charged besides its body and URL (map slot, object,
/// validators), so that many small objects are bounded too.
pub const ENTRY_OVERHEAD: u64 = 512;

/// How far a stored object's body has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Still arriving.
    Filling,
    /// Whole.
    Done,
    /// Cut short; why.
    Failed(std::sync::Arc<str>),
}

/// What the index needs to know of a stored object.
pub(crate) trait Stored: Clone {
    /// Body bytes stored so far.
    fn len(&self) -> u64;
    /// How far its body has come.
    fn fill(&self) -> Fill;
    /// Whether `other` is this same object (not an equal one).
    fn same(&self, other: &Self) -> bool;
}

/// The index's limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Most bytes charged (bodies and entries' overheads). 0: nothing kept.
    pub max_bytes: u64,
    /// Most entries.
    pub max_entries: usize,
}

/// What a request for a URL finds.
pub(crate) enum Lookup<O, F> {
    /// A copy to serve now: fresh ([`CacheResult::Hit`]), still arriving
    /// (the newest there is), or served stale while the origin fails
    /// ([`CacheResult::Stale`]).
    Hit(O, CacheResult),
    /// An origin request is in flight: wait for its outcome.
    Join(F),
    /// Its body outgrew the cache a while ago: fetch it for this client
    /// alone.
    Bypass,
    /// A new origin request, `flight`, is now in flight for this URL;
    /// `prior` is the whole copy to revalidate (conditionally, with its
    /// validators), if any. Settle it with [`Index::on_fetched`].
    Start {
        flight: F,
        prior: Option<(O, Validators)>,
    },
}

/// What the origin answered a flight (the body itself stays with the
/// caller).
#[derive(Clone, Debug)]
pub(crate) enum Response {
    /// 304: the prior copy is current.
    NotModified(Meta),
    /// A (new) body, described by its headers.
    Body(Meta),
    /// 404 / 403: no object; any copy goes.
    Missing,
    /// The origin failed (refused, timed out, 5xx).
    Failed,
}

/// How a flight settled (see [`Index::on_fetched`]).
#[derive(Debug)]
pub(crate) enum Settled<O> {
    /// A new body is stored as this object (to fill): a
    /// [`CacheResult::Miss`] or [`CacheResult::Refreshed`].
    Admitted(O, CacheResult),
    /// A new body is not kept (no-store, larger than the cache, no room,
    /// the object could not be made): streamed through.
    NotAdmitted,
    /// 304: the prior copy is current (if its freshness now says no-store,
    /// it is released too, and served this once).
    Revalidated(O),
    /// The origin failed: the stale copy is served; `first` for the first
    /// failure since it went stale.
    Stale { object: O, first: bool },
    /// The origin failed past the stale-if-error bound: the copy is
    /// dropped.
    Expired { stale_for: Duration },
    /// Nothing to serve: not found, denied, failed with no copy, or a 304
    /// to a plain GET.
    Nothing,
}

/// Why a copy left the index.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// Least recently used, evicted for room; its URL.
    Evicted(String),
    /// Replaced by a new version, or dropped (not found, no-store, failed
    /// fill, past stale-if-error).
    Dropped,
}

/// A copy the index let go, to be released by its owner.
#[derive(Debug)]
pub(crate) struct Released<O> {
    pub object: O,
    pub why: Why,
}

/// The body grew past what the cache can hold (see [`Index::grow`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outgrew;

/// One version of an object as the index keeps it.
#[derive(Debug)]
struct Version<O> {
    object: O,
    /// Bytes charged for it (its body and the entry's cost).
    charged: u64,
    validators: Validators,
    /// The origin's last word on the lifetime (a 304 without one keeps it).
    freshness: Freshness,
    fresh_until: Instant,
    standing: Standing,
}

/// Whether a copy is what the origin last confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// The origin's answer (a fresh body or a 304).
    Current,
    /// Served stale since then, because the origin fails.
    Failing { stale_since: Instant },
}

/// What an entry holds.
#[derive(Debug)]
enum State<O> {
    /// Nothing yet (a first fetch is in flight).
    Empty,
    /// A copy.
    Cached(Version<O>),
    /// Its body of unknown length outgrew the cache: streamed through, not
    /// cached, until then.
    TooLarge { until: Instant },
}

#[derive(Debug)]
struct Entry<O, F> {
    state: State<O>,
    /// The origin request in flight for it, if any.
    flight: Option<F>,
    /// When it was last used (the index's use counter).
    last_used: u64,
}

impl<O, F> Entry<O, F> {
    /// Holds nothing and waits for nothing: gone from the index.
    fn is_idle(&self) -> bool {
        self.flight.is_none() && matches!(self.state, State::Empty)
    }
}

/// The index: entries by URL, their charges, the LRU order.
pub(crate) struct Index<O, F> {
    entries: HashMap<String, Entry<O, F>>,
    /// Bytes charged for all stored copies.
    used: u64,
    /// Counts uses: the LRU order.
    clock: u64,
    bounds: Bounds,
    policy: Policy,
    released: Vec<Released<O>>,
}

impl<O: Stored, F: Clone + PartialEq> Index<O, F> {
    /// An empty index.
    pub fn new(bounds: Bounds, policy: Policy) -> Self {
        Index {
            entries: HashMap::new(),
            used: 0,
            clock: 0,
            bounds,
            policy,
            released: Vec::new(),
        }
    }

    /// What a request for `key` at `now` finds. A flight is started (made
    /// by `flight`) when nothing can be served and none is in flight.
    pub fn lookup(&mut self, key: &str, now: Instant, flight: impl FnOnce() -> F) -> Lookup<O, F> {
        let entry = self.touch(key);
        if let Some(flight) = &entry.flight {
            return Lookup::Join(flight.clone());
        }
        let mut prior = None;
        match &entry.state {
            State::Cached(copy) => match copy.object.fill() {
                // A body still arriving is the newest there is.
                Fill::Filling => return Lookup::Hit(copy.object.clone(), copy.result()),
                Fill::Done if now < copy.fresh_until => {
                    return Lookup::Hit(copy.object.clone(), copy.result())
                }
                Fill::Done => prior = Some((copy.object.clone(), copy.validators.clone())),
                Fill::Failed(_) => {}
            },
            State::TooLarge { until } if now < *until => return Lookup::Bypass,
            State::TooLarge { .. } | State::Empty => {}
        }
        let flight = flight();
        entry.flight = Some(flight.clone());
        Lookup::Start { flight, prior }
    }

    /// Settles `key`'s flight at `now` with the origin's `response`;
    /// `prior` is what [`Lookup::Start`] gave it. A new body is stored as
    /// the object `create` makes for it (`None`: it cannot be, streamed
    /// through).
    pub fn on_fetched(
        &mut self,
        key: &str,
        now: Instant,
        prior: Option<O>,
        response: Response,
        create: impl FnOnce(&Meta) -> Option<O>,
    ) -> Settled<O> {
        let settled = match (response, prior) {
            (Response::NotModified(meta), Some(object)) => {
                self.touch(key);
                let policy = self.policy;
                let mut dropped = false;
                if let Some(copy) = self.copy_mut(key) {
                    let (freshness, validators) =
                        Policy::revalidated((copy.freshness, &copy.validators), &meta);
                    copy.freshness = freshness;
                    copy.validators = validators;
                    copy.fresh_until = policy.fresh_until(now, freshness);
                    copy.standing = Standing::Current;
                    dropped = !Policy::keeps(freshness);
                }
                if dropped {
                    // Now marked not to be kept: served this once.
                    self.drop_copy(key);
                }
                Settled::Revalidated(object)
            }
            (Response::NotModified(_), None) => Settled::Nothing,
            (Response::Body(meta), prior) => match self.admit(key, now, &meta, create) {
                Some(object) => {
                    let how = match prior {
                        Some(_) => CacheResult::Refreshed,
                        None => CacheResult::Miss,
                    };
                    Settled::Admitted(object, how)
                }
                None => Settled::NotAdmitted,
            },
            (Response::Missing, _) => {
                self.drop_copy(key);
                Settled::Nothing
            }
            (Response::Failed, Some(object)) => {
                self.touch(key);
                let policy = self.policy;
                let decision = self.copy_mut(key).map(|copy| {
                    let since = match copy.standing {
                        Standing::Failing { stale_since } => Some(stale_since),
                        Standing::Current => None,
                    };
                    let decision = policy.on_error(now, copy.fresh_until, since);
                    if let StaleIfError::Serve { since, until } = decision {
                        copy.standing = Standing::Failing { stale_since: since };
                        copy.fresh_until = until;
                    }
                    (decision, since.is_none())
                });
                match decision {
                    Some((StaleIfError::Serve { .. }, first)) => Settled::Stale { object, first },
                    Some((StaleIfError::Expired { stale_for }, _)) => {
                        self.drop_copy(key);
                        Settled::Expired { stale_for }
                    }
                    // NOTE: a flight's entry is never evicted, and only the
                    // flight itself replaces its copy: not reached.
                    None => Settled::Nothing,
                }
            }
            (Response::Failed, None) => Settled::Nothing,
        };
        self.end_flight(key, None);
        settled
    }

    /// Forgets `key`'s flight (only if it is `flight`, when given), and the
    /// entry if nothing else is left in it.
    pub fn end_flight(&mut self, key: &str, flight: Option<&F>) {
        if let Some(entry) = self.entries.get_mut(key) {
            if flight.is_none_or(|f| entry.flight.as_ref() == Some(f)) {
                entry.flight = None;
                if entry.is_idle() {
                    self.entries.remove(key);
                }
            }
        }
    }

    /// Charges `more` bytes to `object` (a body of unknown length growing),
    /// evicting what it takes; nothing if `object` is no longer `key`'s
    /// copy. [`Outgrew`] if the cache cannot hold it.
    pub fn grow(&mut self, key: &str, object: &O, more: u64) -> Result<(), Outgrew> {
        if more == 0 || self.copy_of(key, object).is_none() {
            return Ok(());
        }
        if !self.make_room(more, Some(key)) {
            return Err(Outgrew);
        }
        self.used = self.used.saturating_add(more);
        if let Some(copy) = self.copy_of(key, object) {
            copy.charged = copy.charged.saturating_add(more);
        }
        Ok(())
    }

    /// `object`'s fill failed at `now` (if it is still `key`'s copy, it
    /// goes): after it outgrew the cache, the URL is streamed through for
    /// [`TOO_LARGE_FOR`]; otherwise the next request fetches it again.
    pub fn fill_failed(&mut self, key: &str, object: &O, now: Instant, outgrew: bool) {
        if self.copy_of(key, object).is_none() {
            return;
        }
        self.drop_copy(key);
        if let Some(entry) = self.entries.get_mut(key) {
            if outgrew {
                let until = now.checked_add(TOO_LARGE_FOR).unwrap_or(now);
                entry.state = State::TooLarge { until };
            } else if entry.is_idle() {
                self.entries.remove(key);
            }
        }
    }

    /// The copies let go since the last call, for their owner to release.
    pub fn released(&mut self) -> std::vec::Drain<'_, Released<O>> {
        self.released.drain(..)
    }

    /// Body bytes stored and objects held.
    pub fn usage(&self) -> (u64, u64) {
        let (mut bytes, mut objects) = (0u64, 0u64);
        for entry in self.entries.values() {
            if let State::Cached(copy) = &entry.state {
                bytes = bytes.saturating_add(copy.object.len());
                objects = objects.saturating_add(1);
            }
        }
        (bytes, objects)
    }

    /// Bytes charged against the bounds (bodies, reservations, overheads).
    #[cfg(test)]
    pub fn charged(&self) -> u64 {
        self.used
    }

    /// Entries held (with a copy, a flight or a too-large mark).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for `key` (created empty), marked as just used.
    fn touch(&mut self, key: &str) -> &mut Entry<O, F> {
        self.clock = self.clock.saturating_add(1);
        let clock = self.clock;
        let entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            state: State::Empty,
            flight: None,
            last_used: 0,
        });
        entry.last_used = clock;
        entry
    }

    fn copy_mut(&mut self, key: &str) -> Option<&mut Version<O>> {
        match &mut self.entries.get_mut(key)?.state {
            State::Cached(copy) => Some(copy),
            _ => None,
        }
    }

    /// `key`'s copy if it is `object`.
    fn copy_of(&mut self, key: &str, object: &O) -> Option<&mut Version<O>> {
        self.copy_mut(key).filter(|c| c.object.same(object))
    }

    /// Lets `key`'s copy go (the entry stays, empty).
    fn drop_copy(&mut self, key: &str) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if let State::Cached(copy) = std::mem::replace(&mut entry.state, State::Empty) {
            self.used = self.used.saturating_sub(copy.charged);
            self.released.push(Released {
                object: copy.object,
                why: Why::Dropped,
            });
        }
    }

    /// A new copy for a body, replacing the entry's old version, or `None`
    /// if it cannot be kept (no-store, larger than the cache, no room left
    /// after evicting what is not in use, not made).
    fn admit(
        &mut self,
        key: &str,
        now: Instant,
        meta: &Meta,
        create: impl FnOnce(&Meta) -> Option<O>,
    ) -> Option<O> {
        // The old version goes first: it is being replaced (or may no
        // longer be kept).
        self.drop_copy(key);
        if !Policy::keeps(meta.freshness) || self.bounds.max_bytes == 0 {
            return None;
        }
        // An announced length near 2^64 does not wrap: it is too large.
        let reserve = meta
            .size
            .unwrap_or(0)
            .checked_add(entry_cost(key))
            .filter(|&r| r <= self.bounds.max_bytes)?;
        if !self.make_room(reserve, Some(key)) {
            return None;
        }
        let object = create(meta)?;
        self.used = self.used.saturating_add(reserve);
        let fresh_until = self.policy.fresh_until(now, meta.freshness);
        let entry = self.touch(key);
        entry.state = State::Cached(Version {
            object: object.clone(),
            charged: reserve,
            validators: meta.validators.clone(),
            freshness: meta.freshness,
            fresh_until,
            standing: Standing::Current,
        });
        Some(object)
    }

    /// Evicts least recently used entries (not in flight, not filling, not
    /// `keep`) until `more` bytes, and one more entry, fit. False if they
    /// cannot.
    fn make_room(&mut self, more: u64, keep: Option<&str>) -> bool {
        while self
            .used
            .checked_add(more)
            .is_none_or(|t| t > self.bounds.max_bytes)
            || self.entries.len() > self.bounds.max_entries
        {
            let victim = self
                .entries
                .iter()
                .filter(|(k, e)| {
                    Some(k.as_str()) != keep
                        && e.flight.is_none()
                        && match &e.state {
                            State::Cached(copy) => copy.object.fill() != Fill::Filling,
                            State::Empty | State::TooLarge { .. } => true,
                        }
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { return false };
            if let Some(Entry {
                state: State::Cached(copy),
                ..
            }) = self.entries.remove(&victim)
            {
                self.used = self.used.saturating_sub(copy.charged);
                self.released.push(Released {
                    object: copy.object,
                    why: Why::Evicted(victim),
                });
            }
        }
        true
    }
}

impl<O> Version<O> {
    /// How serving it now is counted.
    fn result(&self) -> CacheResult {
        match self.standing {
            Standing::Current => CacheResult::Hit,
            Standing::Failing { .. } => CacheResult::Stale,
        }
    }
}

/// What an entry costs besides its body.
pub(crate) fn entry_cost(key: &str) -> u64 {
    ENTRY_OVERHEAD.saturating_add(key.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A stored object: its length and fill state, shared by its clones.
    #[derive(Clone, Debug)]
    struct Obj(Rc<RefCell<(u64, Fill)>>);

    impl Obj {
        fn new() -> Self {
            Obj(Rc::new(RefCell::new((0, Fill::Filling))))
        }
        /// Filled with `len` bytes, whole.
        fn done(&self, len: u64) {
            *self.0.borrow_mut() = (len, Fill::Done);
        }
        fn failed(&self) {
            self.0.borrow_mut().1 = Fill::Failed("cut".into());
        }
    }

    impl Stored for Obj {
        fn len(&self) -> u64 {
            self.0.borrow().0
        }
        fn fill(&self) -> Fill {
            self.0.borrow().1.clone()
        }
        fn same(&self, other: &Self) -> bool {
            Rc::ptr_eq(&self.0, &other.0)
        }
    }

    const SEC: Duration = Duration::from_secs(1);
    const TTL: Duration = Duration::from_secs(60);
    const BOUND: Duration = Duration::from_secs(600);

    /// The index under test, its virtual clock and its flight numbers.
    struct T {
        index: Index<Obj, u32>,
        base: Instant,
        flights: u32,
    }

    impl T {
        fn new(max_bytes: u64, max_entries: usize) -> Self {
            let bounds = Bounds {
                max_bytes,
                max_entries,
            };
            let policy = Policy {
                ttl: TTL,
                stale_if_error: BOUND,
            };
            T {
                index: Index::new(bounds, policy),
                base: Instant::now(),
                flights: 0,
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.base + Duration::from_secs(secs)
        }

        fn lookup(&mut self, key: &str, secs: u64) -> Lookup<Obj, u32> {
            let now = self.at(secs);
            let next = self.flights + 1;
            let found = self.index.lookup(key, now, || next);
            if let Lookup::Start { flight, .. } = &found {
                assert_eq!(*flight, next);
                self.flights = next;
            }
            found
        }

        /// A lookup that must start a flight: its prior copy, if any.
        fn start(&mut self, key: &str, secs: u64) -> Option<(Obj, Validators)> {
            match self.lookup(key, secs) {
                Lookup::Start { prior, .. } => prior,
                other => panic!("{key} at {secs} s: {}", name(&other)),
            }
        }

        /// A lookup that must hit: the copy and how it was counted.
        fn hit(&mut self, key: &str, secs: u64) -> (Obj, CacheResult) {
            match self.lookup(key, secs) {
                Lookup::Hit(o, how) => (o, how),
                other => panic!("{key} at {secs} s: {}", name(&other)),
            }
        }

        fn settle(
            &mut self,
            key: &str,
            secs: u64,
            prior: Option<Obj>,
            response: Response,
        ) -> Settled<Obj> {
            let now = self.at(secs);
            self.index
                .on_fetched(key, now, prior, response, |_| Some(Obj::new()))
        }

        /// `key` fetched at `secs` (a miss), filled whole with `len` bytes.
        fn fetch(&mut self, key: &str, secs: u64, len: u64, meta: Meta) -> Obj {
            assert!(self.start(key, secs).is_none());
            match self.settle(key, secs, None, Response::Body(meta)) {
                Settled::Admitted(o, CacheResult::Miss) => {
                    o.done(len);
                    o
                }
                other => panic!("{other:?}"),
            }
        }

        fn released(&mut self) -> Vec<(Obj, Why)> {
            self.index.released().map(|r| (r.object, r.why)).collect()
        }
    }

    fn name<O, F>(l: &Lookup<O, F>) -> &'static str {
        match l {
            Lookup::Hit(..) => "hit",
            Lookup::Join(_) => "join",
            Lookup::Bypass => "bypass",
            Lookup::Start { .. } => "start",
        }
    }

    fn meta(size: Option<u64>) -> Meta {
        Meta {
            size,
            modified: None,
            validators: Validators::default(),
            freshness: Freshness::Default,
        }
    }

    fn etag(tag: &str) -> Validators {
        Validators {
            etag: Some(tag.into()),
            last_modified: None,
        }
    }

    fn tagged(size: u64, tag: &str, freshness: Freshness) -> Meta {
        Meta {
            size: Some(size),
            modified: None,
            validators: etag(tag),
            freshness,
        }
    }

    /// A miss starts one flight; requests meanwhile join it; once settled,
    /// the copy (still filling, then whole) is a hit until its lifetime
    /// has passed; then a flight revalidates it with its validators.
    #[test]
    fn misses_start_one_flight_then_hits_until_stale() {
        let mut t = T::new(1 << 20, 100);
        assert!(t.start("a", 0).is_none());
        assert!(matches!(t.lookup("a", 0), Lookup::Join(1)));
        assert!(matches!(t.lookup("a", 1), Lookup::Join(1)));
        let o = match t.settle(
            "a",
            1,
            None,
            Response::Body(tagged(10, "\"1\"", Freshness::Default)),
        ) {
            Settled::Admitted(o, CacheResult::Miss) => o,
            other => panic!("{other:?}"),
        };
        // Still arriving: the newest there is, even past its lifetime.
        assert!(t.hit("a", 1).0.same(&o));
        assert!(t.hit("a", 1000).0.same(&o));
        o.done(10);
        assert_eq!(t.hit("a", 60).1, CacheResult::Hit);
        // Fresh until 1 + 60 s.
        let (prior, validators) = t.start("a", 61).unwrap();
        assert!(prior.same(&o));
        assert_eq!(validators, etag("\"1\""));
        assert!(matches!(t.lookup("a", 61), Lookup::Join(2)));
        assert_eq!(t.index.usage(), (10, 1));
        assert_eq!(t.index.charged(), 10 + entry_cost("a"));
    }

    /// A 304 keeps the copy and refreshes it: its lifetime (the copy's own
    /// when the 304 names none), its validators when the 304 has new
    /// ones; the copy is a hit again.
    #[test]
    fn a_304_refreshes_the_copy() {
        let mut t = T::new(1 << 20, 100);
        let short = Freshness::For(30 * SEC);
        assert!(t.start("a", 0).is_none());
        let Settled::Admitted(o, _) =
            t.settle("a", 0, None, Response::Body(tagged(5, "\"1\"", short)))
        else {
            panic!()
        };
        o.done(5);
        let (prior, _) = t.start("a", 30).unwrap();
        let bare = Meta {
            size: None,
            modified: None,
            validators: Validators::default(),
            freshness: Freshness::Default,
        };
        match t.settle("a", 30, Some(prior), Response::NotModified(bare)) {
            Settled::Revalidated(r) => assert!(r.same(&o)),
            other => panic!("{other:?}"),
        }
        // The copy's own 30 s again, not the TTL.
        assert_eq!(t.hit("a", 59).1, CacheResult::Hit);
        let (prior, validators) = t.start("a", 60).unwrap();
        assert_eq!(validators, etag("\"1\""));
        let said = tagged(5, "\"2\"", Freshness::Default);
        assert!(matches!(
            t.settle("a", 60, Some(prior), Response::NotModified(said)),
            Settled::Revalidated(_)
        ));
        let (_, validators) = t.start("a", 90).unwrap();
        assert_eq!(validators, etag("\"2\""));
        assert!(t.released().is_empty());
        assert_eq!(t.index.usage(), (5, 1));
    }

    /// A changed ETag (a 200 to the conditional GET) replaces the copy:
    /// the old one is released and uncharged, the new one is a refresh.
    #[test]
    fn a_changed_object_replaces_the_copy() {
        let mut t = T::new(1 << 20, 100);
        let old = t.fetch("a", 0, 100, tagged(100, "\"1\"", Freshness::Default));
        let (prior, _) = t.start("a", 60).unwrap();
        let new = match t.settle(
            "a",
            60,
            Some(prior),
            Response::Body(tagged(7, "\"2\"", Freshness::Default)),
        ) {
            Settled::Admitted(o, CacheResult::Refreshed) => o,
            other => panic!("{other:?}"),
        };
        let released = t.released();
        assert_eq!(released.len(), 1);
        assert!(released[0].0.same(&old) && released[0].1 == Why::Dropped);
        new.done(7);
        assert_eq!(t.index.usage(), (7, 1));
        assert_eq!(t.index.charged(), 7 + entry_cost("a"));
        assert!(t.hit("a", 61).0.same(&new));
    }

    /// A 304 that says no-store drops the copy (served this once); a
    /// not-found drops it too; the next request starts afresh.
    #[test]
    fn no_store_and_not_found_drop_the_copy() {
        let mut t = T::new(1 << 20, 100);
        let o = t.fetch("a", 0, 5, tagged(5, "\"1\"", Freshness::Default));
        let (prior, _) = t.start("a", 60).unwrap();
        let no_store = tagged(5, "\"1\"", Freshness::NoStore);
        match t.settle("a", 60, Some(prior), Response::NotModified(no_store)) {
            Settled::Revalidated(r) => assert!(r.same(&o)),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.released().len(), 1);
        assert_eq!(
            (t.index.usage(), t.index.charged(), t.index.len()),
            ((0, 0), 0, 0)
        );
        assert!(t.start("a", 60).is_none());
        t.index.end_flight("a", None);
        t.fetch("b", 0, 5, meta(Some(5)));
        let (prior, _) = t.start("b", 60).unwrap();
        assert!(matches!(
            t.settle("b", 60, Some(prior), Response::Missing),
            Settled::Nothing
        ));
        assert_eq!(t.released().len(), 1);
        assert_eq!(
            (t.index.usage(), t.index.charged(), t.index.len()),
            ((0, 0), 0, 0)
        );
    }

    /// Stale-if-error: a failed revalidation serves the copy (counted
    /// stale) and asks again after the retry interval; the origin failing
    /// past the bound (counted from when the copy went stale) drops it; a
    /// 304 meanwhile makes it current again.
    #[test]
    fn stale_if_error_within_and_past_the_bound() {
        let mut t = T::new(1 << 20, 100);
        let o = t.fetch("a", 0, 5, meta(Some(5)));
        // Stale at 60 s; the origin fails at 70 s.
        let (prior, _) = t.start("a", 70).unwrap();
        match t.settle("a", 70, Some(prior), Response::Failed) {
            Settled::Stale {
                object,
                first: true,
            } => assert!(object.same(&o)),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.hit("a", 79).1, CacheResult::Stale);
        let (prior, _) = t.start("a", 80).unwrap();
        assert!(matches!(
            t.settle("a", 80, Some(prior), Response::Failed),
            Settled::Stale { first: false, .. }
        ));
        // The bound (600 s from 60 s) caps the last retry: served until
        // 660 s, not 665 s.
        let (prior, _) = t.start("a", 655).unwrap();
        assert!(matches!(
            t.settle("a", 655, Some(prior), Response::Failed),
            Settled::Stale { .. }
        ));
        assert_eq!(t.hit("a", 659).1, CacheResult::Stale);
        let (prior, _) = t.start("a", 661).unwrap();
        match t.settle("a", 661, Some(prior), Response::Failed) {
            Settled::Expired { stale_for } => assert_eq!(stale_for, 601 * SEC),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.released().len(), 1);
        assert_eq!((t.index.usage(), t.index.len()), ((0, 0), 0));
        assert!(t.start("a", 661).is_none());
        t.index.end_flight("a", None);
        // Within the bound, the origin back: current again, a plain hit.
        let o = t.fetch("b", 0, 5, meta(Some(5)));
        let (prior, _) = t.start("b", 100).unwrap();
        t.settle("b", 100, Some(prior), Response::Failed);
        let (prior, _) = t.start("b", 110).unwrap();
        t.settle("b", 110, Some(prior), Response::NotModified(meta(None)));
        assert!(t.hit("b", 111).0.same(&o));
        assert_eq!(t.hit("b", 169).1, CacheResult::Hit);
        // And a new outage counts from the new staleness (170 s).
        let (prior, _) = t.start("b", 770).unwrap();
        assert!(matches!(
            t.settle("b", 770, Some(prior), Response::Failed),
            Settled::Stale { first: true, .. }
        ));
        // Nothing cached: the failure is the answer.
        assert!(t.start("c", 0).is_none());
        assert!(matches!(
            t.settle("c", 0, None, Response::Failed),
            Settled::Nothing
        ));
        assert!(matches!(
            t.lookup("c", 0),
            Lookup::Start { prior: None, .. }
        ));
    }

    /// Least recently used copies go first when bytes run out; a lookup is
    /// a use; entries in flight or still filling are never evicted.
    #[test]
    fn lru_by_bytes() {
        let cost = 1000 + entry_cost("k0");
        let mut t = T::new(3 * cost, 100);
        let objects: Vec<Obj> = (0..3)
            .map(|i| t.fetch(&format!("k{i}"), 0, 1000, meta(Some(1000))))
            .collect();
        assert_eq!(t.index.charged(), 3 * cost);
        t.hit("k0", 1);
        t.fetch("k3", 2, 1000, meta(Some(1000)));
        let released = t.released();
        assert_eq!(released.len(), 1);
        assert!(released[0].0.same(&objects[1]));
        assert_eq!(released[0].1, Why::Evicted("k1".into()));
        assert_eq!(t.index.charged(), 3 * cost);
        // k0 still filling, k2 in flight: k3 goes, though used last.
        objects[0].0.borrow_mut().1 = Fill::Filling;
        let _ = t.start("k2", 100).unwrap();
        t.hit("k3", 3);
        t.fetch("k4", 3, 1000, meta(Some(1000)));
        let released = t.released();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].1, Why::Evicted("k3".into()));
        // Nothing evictable: not admitted.
        assert!(t.start("k5", 4).is_none());
        let k4 = t.hit("k4", 4).0;
        k4.0.borrow_mut().1 = Fill::Filling;
        assert!(matches!(
            t.settle("k5", 4, None, Response::Body(meta(Some(1000)))),
            Settled::NotAdmitted
        ));
        assert!(t.released().is_empty());
        assert!(t.index.charged() <= 3 * cost);
    }

    /// Least recently used entries go first when entries run out, however
    /// small they are.
    #[test]
    fn lru_by_entry_count() {
        let mut t = T::new(1 << 30, 3);
        for i in 0..3 {
            t.fetch(&format!("k{i}"), i, 1, meta(Some(1)));
        }
        t.hit("k0", 5);
        // The fourth entry exists from its lookup: one goes to make room.
        t.fetch("k3", 6, 1, meta(Some(1)));
        let released = t.released();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].1, Why::Evicted("k1".into()));
        assert_eq!(t.index.len(), 3);
        assert_eq!(t.index.usage(), (3, 3));
    }

    /// What cannot be kept is streamed through and never made: larger
    /// than the cache (with its entry's cost), no-store, caching off.
    #[test]
    fn oversize_no_store_and_caching_off_are_not_admitted() {
        let max = 10_000;
        for (max_bytes, m) in [
            (max, meta(Some(max))),
            (max, meta(Some(max - entry_cost("a") + 1))),
            (max, tagged(1, "x", Freshness::NoStore)),
            (0, meta(Some(1))),
        ] {
            let mut t = T::new(max_bytes, 100);
            assert!(t.start("a", 0).is_none());
            let settled = t
                .index
                .on_fetched("a", t.at(0), None, Response::Body(m.clone()), |_| {
                    panic!("made an object for {m:?}")
                });
            assert!(matches!(settled, Settled::NotAdmitted), "{m:?}");
            assert_eq!((t.index.charged(), t.index.len()), (0, 0), "{m:?}");
        }
        let mut t = T::new(max, 100);
        t.fetch("a", 0, 0, meta(Some(max - entry_cost("a"))));
        assert_eq!(t.index.charged(), max);
    }

    /// Announced lengths and growth near 2^64 never wrap the charges: too
    /// large, nothing charged; a clock near its end never panics.
    #[test]
    fn checked_arithmetic_near_u64_max() {
        let mut t = T::new(1 << 20, 100);
        for size in [u64::MAX, u64::MAX - 100, u64::MAX - ENTRY_OVERHEAD, 1 << 20] {
            assert!(t.start("a", 0).is_none());
            assert!(
                matches!(
                    t.settle("a", 0, None, Response::Body(meta(Some(size)))),
                    Settled::NotAdmitted
                ),
                "{size}"
            );
            assert_eq!(t.index.charged(), 0, "{size}");
        }
        let o = t.fetch("b", 0, 0, meta(None));
        o.0.borrow_mut().1 = Fill::Filling;
        for more in [u64::MAX, u64::MAX - t.index.charged() + 1] {
            assert_eq!(t.index.grow("b", &o, more), Err(Outgrew));
            assert_eq!(t.index.charged(), entry_cost("b"));
        }
        let mut t = T::new(u64::MAX, 100);
        let o = t.fetch("b", 0, 0, meta(Some(u64::MAX - entry_cost("b"))));
        assert_eq!(t.index.charged(), u64::MAX);
        assert_eq!(t.index.grow("b", &o, 1), Err(Outgrew));
        assert_eq!(t.index.charged(), u64::MAX);
        // A lifetime of 2^64 s is capped (a year), never an overflow.
        let far = Freshness::For(Duration::from_secs(u64::MAX));
        let mut t = T::new(1 << 20, 100);
        t.fetch("c", 0, 1, tagged(1, "x", far));
        assert_eq!(t.hit("c", 1).1, CacheResult::Hit);
    }

    /// A body of unknown length is charged as it grows, evicting others;
    /// one that outgrows the cache is dropped and the URL streamed through
    /// for a while, then tried again. A failed fill is fetched again.
    #[test]
    fn unknown_lengths_grow_outgrow_and_failed_fills_refetch() {
        let max = 10_000;
        let mut t = T::new(max, 100);
        let other = t.fetch("x", 0, 4000, meta(Some(4000)));
        let o = t.fetch("a", 1, 0, meta(None));
        o.0.borrow_mut().1 = Fill::Filling;
        assert_eq!(t.index.grow("a", &o, 4000), Ok(()));
        assert_eq!(t.index.charged(), 8000 + entry_cost("x") + entry_cost("a"));
        // Room is made by evicting x.
        assert_eq!(t.index.grow("a", &o, 4000), Ok(()));
        let released = t.released();
        assert!(released.len() == 1 && released[0].0.same(&other));
        assert_eq!(t.index.grow("a", &o, 4000), Err(Outgrew));
        t.index.fill_failed("a", &o, t.at(2), true);
        assert_eq!(t.released().len(), 1);
        assert_eq!(t.index.charged(), 0);
        assert!(matches!(t.lookup("a", 2), Lookup::Bypass));
        let until = 2 + TOO_LARGE_FOR.as_secs();
        assert!(matches!(t.lookup("a", until - 1), Lookup::Bypass));
        assert!(t.start("a", until).is_none());
        // A grow or failure of an object that is no longer the copy does
        // nothing.
        assert_eq!(t.index.grow("a", &o, u64::MAX), Ok(()));
        t.index.end_flight("a", None);
        let o = t.fetch("f", 0, 0, meta(Some(10)));
        o.failed();
        t.index.fill_failed("f", &Obj::new(), t.at(1), false);
        assert!(t.released().is_empty());
        // A failed fill: dropped, and the next request fetches again.
        t.index.fill_failed("f", &o, t.at(1), false);
        assert_eq!(t.released().len(), 1);
        assert!(t.start("f", 1).is_none());
    }

    /// A copy whose fill failed (the fill task died) is not served: the
    /// next request fetches anew, with no copy to revalidate.
    #[test]
    fn failed_copies_are_not_served() {
        let mut t = T::new(1 << 20, 100);
        let o = t.fetch("a", 0, 5, meta(Some(5)));
        o.failed();
        assert!(t.start("a", 1).is_none());
    }

    /// An abandoned flight is forgotten only if it is still the entry's:
    /// a later request starts a new one.
    #[test]
    fn abandoned_flights_are_forgotten() {
        let mut t = T::new(1 << 20, 100);
        assert!(t.start("a", 0).is_none());
        t.index.end_flight("a", Some(&7));
        assert!(matches!(t.lookup("a", 0), Lookup::Join(1)));
        t.index.end_flight("a", Some(&1));
        assert_eq!(t.index.len(), 0);
        assert!(t.start("a", 0).is_none());
        assert!(matches!(t.lookup("a", 0), Lookup::Join(2)));
    }
}
