//! Server state every server shares: the settings, the admission table
//! (behind a lock never held across I/O) with each session's cancel flag,
//! the memory budget, the counters, and the [`Ticket`] that ends a session's
//! admission exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tftp_proto::server::{Admission, Admit, SessionKey};

use crate::config::ServerConfig;
use crate::session::Signal;
use tftp_proto::stats::{ServerCounters, Stats};

/// A session's share of what is left of the memory budget (see
/// [`Registry::grant`]).
const FAIR_SHARE: usize = 16;
/// What a lock-step session with 512-byte blocks needs, with room to spare.
const SESSION_FLOOR: usize = 4096;

/// The admission table and the cancel flag of every admitted session.
#[derive(Debug)]
struct Table {
    admission: Admission,
    cancels: HashMap<SessionKey, Arc<Signal>>,
}

/// Settings, admission, memory budget and counters of one server.
#[derive(Debug)]
pub struct Registry {
    /// The server's settings.
    pub config: ServerConfig,
    /// Server-wide counters.
    pub counters: ServerCounters,
    table: Mutex<Table>,
    /// Bytes of session buffers granted (at most `config.max_memory`).
    memory: AtomicUsize,
    /// Sessions running on threads of their own (at most
    /// `config.session_threads`).
    threads: AtomicUsize,
}

impl Registry {
    /// A registry for `config`.
    pub fn new(config: ServerConfig) -> Arc<Self> {
        let table = Mutex::new(Table {
            admission: config.admission(),
            cancels: HashMap::new(),
        });
        Arc::new(Registry {
            config,
            counters: ServerCounters::default(),
            table,
            memory: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
        })
    }

    /// A place for a session on a thread of its own, if fewer than
    /// `config.session_threads` hold one.
    pub(crate) fn session_thread(self: &Arc<Self>) -> Option<ThreadSlot> {
        let cap = self.config.session_threads;
        self.threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| ThreadSlot(Arc::clone(self)))
    }

    /// Sessions running on threads of their own now.
    pub fn session_threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // NOTE(unwrap): every update of the table is one call, so a poisoned
        // lock still holds a consistent table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decision for one datagram on the listening socket at `local`
    /// ([`Admission::admit_datagram`]); an answer goes into `reply`. A
    /// session it evicts is told to stop at once.
    pub fn on_datagram(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
        reply: &mut [u8],
    ) -> Admit {
        let mut table = self.table();
        let admit = table.admission.admit_datagram(
            datagram,
            peer,
            local,
            &self.config.limits,
            &self.counters,
            reply,
        );
        if let Admit::Start { key, evicted, .. } = &admit {
            table.cancels.insert(*key, Arc::default());
            if let Some(cancel) = evicted.and_then(|e| table.cancels.remove(&e)) {
                cancel.raise();
            }
        }
        admit
    }

    /// Bytes of session buffers granted now.
    pub fn memory_in_use(&self) -> usize {
        self.memory.load(Ordering::Acquire)
    }

    /// Grants up to `want` bytes of the budget; returns how many. While the
    /// budget is plentiful a session gets all it wants; as it runs low each
    /// gets at most a [`FAIR_SHARE`]th of what is left (but at least
    /// [`SESSION_FLOOR`] while that much remains), so windows and blocks
    /// shrink gradually and many sessions still fit, instead of the first
    /// few taking everything.
    fn grant(&self, want: usize) -> usize {
        let limit = self.config.max_memory;
        let mut granted = 0;
        let _ = self
            .memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let left = limit.saturating_sub(used);
                let share = (left / FAIR_SHARE).max(SESSION_FLOOR).min(left);
                granted = want.min(share);
                Some(used.saturating_add(granted))
            });
        granted
    }

    /// Takes `want` bytes more for a session that has some, all or nothing.
    fn grant_exactly(&self, want: usize) -> bool {
        let limit = self.config.max_memory;
        self.memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let total = used.checked_add(want)?;
                (total <= limit).then_some(total)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        let _ = self
            .memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// A running session's place. [`Ticket::finish`] records its statistics and
/// calls `on_session_end`; dropped unfinished (its task panicked) it counts
/// as lost. Either way the admission and the memory are released and
/// `notify` runs.
pub struct Ticket {
    registry: Arc<Registry>,
    key: Option<SessionKey>,
    cancel: Arc<Signal>,
    verified: bool,
    memory: usize,
    /// Of `memory`, the bytes the driver holds for the session (its
    /// read-ahead buffer) beyond the session's own buffers.
    extra: usize,
    notify: Box<dyn Fn() + Send + Sync>,
}

impl Ticket {
    /// The place of the session admitted under `key`; `notify` wakes whoever
    /// waits for sessions to end (a graceful shutdown).
    pub fn new(
        registry: Arc<Registry>,
        key: SessionKey,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let cancel = registry.table().cancels.get(&key).cloned();
        let cancel = cancel.unwrap_or_else(|| {
            // Evicted before its ticket was made (by another accept loop).
            let cancel = Arc::new(Signal::default());
            cancel.raise();
            cancel
        });
        Ticket {
            registry,
            key: Some(key),
            cancel,
            verified: false,
            memory: 0,
            extra: 0,
            notify: Box::new(notify),
        }
    }

    /// Raised when the session's place went to a newer request: cancel it.
    pub(crate) fn cancel_signal(&self) -> &Signal {
        &self.cancel
    }

    /// The cancel signal, to watch while the session waits.
    pub(crate) fn cancel_handle(&self) -> Arc<Signal> {
        Arc::clone(&self.cancel)
    }

    /// The server's limits.
    pub(crate) fn limits(&self) -> &tftp_proto::options::Limits {
        &self.registry.config.limits
    }

    /// Whether [`Ticket::verified`] was called.
    pub(crate) fn is_verified(&self) -> bool {
        self.verified
    }

    /// The session's peer is verified: it can no longer be evicted, and
    /// its buffers (`memory` bytes now that its window exists) come out of
    /// the budget. False if the budget has no room for them.
    pub(crate) fn verified(&mut self, memory: usize) -> bool {
        if !self.verified {
            self.verified = true;
            if let Some(key) = &self.key {
                self.registry.table().admission.verify(key);
            }
        }
        self.settle(memory)
    }

    /// Takes up to `want` bytes of the server's memory budget for the
    /// session; returns how many it got.
    pub(crate) fn reserve(&mut self, want: usize) -> usize {
        let got = self.registry.grant(want);
        self.memory = self.memory.saturating_add(got);
        got
    }

    /// Takes `want` bytes of the budget for a buffer the driver holds only
    /// to go faster (a read-ahead, a second receive slot), or nothing: only while the budget stays
    /// at most half used, so such buffers never take the room that windows
    /// and new sessions need. True if it got them.
    pub(crate) fn reserve_optional(&mut self, want: usize) -> bool {
        let half = self.registry.config.max_memory / 2;
        let got = self
            .registry
            .memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let total = used.checked_add(want)?;
                (total <= half).then_some(total)
            })
            .is_ok();
        if got {
            self.memory = self.memory.saturating_add(want);
            self.extra = self.extra.saturating_add(want);
        }
        got
    }

    /// The session holds `bytes` (and the driver its extra buffers): keeps
    /// exactly that much of the budget. False if more was needed and the
    /// budget has no room.
    pub(crate) fn settle(&mut self, bytes: usize) -> bool {
        let bytes = bytes.saturating_add(self.extra);
        if bytes <= self.memory {
            self.registry.give_back(self.memory.saturating_sub(bytes));
            self.memory = bytes;
            return true;
        }
        let more = bytes.saturating_sub(self.memory);
        if self.registry.grant_exactly(more) {
            self.memory = bytes;
            true
        } else {
            false
        }
    }

    /// The session ended with `stats`.
    pub fn finish(mut self, stats: &Stats) {
        if let Some(key) = self.key.take() {
            self.release(&key);
            self.registry.counters.record(stats);
            if let Some(f) = &self.registry.config.on_session_end {
                f(stats);
            }
            (self.notify)();
        }
    }

    fn release(&mut self, key: &SessionKey) {
        let mut table = self.registry.table();
        table.admission.release(key);
        table.cancels.remove(key);
        drop(table);
        self.registry.give_back(std::mem::take(&mut self.memory));
    }
}

/// A session's place on a thread of its own, given back when dropped.
#[derive(Debug)]
pub(crate) struct ThreadSlot(Arc<Registry>);

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.release(&key);
            self.registry.counters.session_lost();
            (self.notify)();
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}
