//! The origin request slots: at most `max_requests` origin requests at
//! once (headers and body, cached or streamed through); more wait in line.
//! When none is free, the slot idle longest of those held only for clients
//! that have not answered (possibly spoofed) is taken back, as a SYN
//! backlog drops its oldest half-open entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use event_listener::Event;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stats::Counters;

/// Slots that may be taken back, idle longest first.
type IdleList = Mutex<Vec<Weak<Hold>>>;

/// The slots of one cache.
pub(crate) struct Slots {
    requests: Arc<Semaphore>,
    /// Slots whose holders wait for or serve only clients that have not
    /// answered (idle longest first; stale entries are skipped).
    idle: Arc<IdleList>,
    counters: Arc<Counters>,
}

impl Slots {
    /// `max` slots (at least 1).
    pub fn new(max: usize, counters: Arc<Counters>) -> Self {
        Slots {
            requests: Arc::new(Semaphore::new(max.max(1))),
            idle: Arc::default(),
            counters,
        }
    }

    /// One origin request slot, waiting in line for it. When none is free,
    /// the slot idle longest of those held only for clients that have not
    /// answered (a fill waiting for them to ask for more, or a body
    /// streamed through to one) is taken back: unanswered requests cannot
    /// keep the origin from the clients that answer. Requests still
    /// waiting for headers keep their slots (nobody has answered any of
    /// them yet).
    pub async fn acquire(&self) -> Slot {
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

    /// Takes back the slot idle longest (see [`Slots::acquire`]), if any.
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
}

/// One of the `max_requests` origin request slots, held from the request
/// to the end of its body, unless taken back (see [`Slots::acquire`]).
pub(crate) struct Slot {
    hold: Arc<Hold>,
    /// The cache's list of slots that may be taken back.
    list: Arc<IdleList>,
}

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
    /// Whether the slot was taken back.
    pub fn preempted(&self) -> bool {
        self.hold.preempted.load(Ordering::Acquire)
    }

    /// Resolves once the slot has been taken back.
    pub async fn taken_back(&self) {
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
    pub fn set_idle(&self, idle: bool) {
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

/// Marks a slot busy when dropped (its holder stopped waiting).
pub(crate) struct Busy<'a>(pub &'a Slot);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set_idle(false);
    }
}
