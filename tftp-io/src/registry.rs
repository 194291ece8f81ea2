//! Server state every server shares: the settings, the admission table
//! (behind a lock never held across I/O) and the counters, and the
//! [`Ticket`] that ends a session's admission exactly once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tftp_proto::server::{Admission, Admit, SessionKey};

use crate::config::ServerConfig;
use tftp_proto::stats::{ServerCounters, Stats};

/// Settings, admission and counters of one server.
#[derive(Debug)]
pub struct Registry {
    /// The server's settings.
    pub config: ServerConfig,
    /// Server-wide counters.
    pub counters: ServerCounters,
    admission: Mutex<Admission>,
}

impl Registry {
    /// A registry for `config`.
    pub fn new(config: ServerConfig) -> Arc<Self> {
        let admission = Mutex::new(config.admission());
        Arc::new(Registry {
            config,
            counters: ServerCounters::default(),
            admission,
        })
    }

    /// The decision for one datagram on the listening socket at `local`
    /// ([`Admission::admit_datagram`]); an answer goes into `reply`.
    pub fn on_datagram(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
        reply: &mut [u8],
    ) -> Admit {
        // NOTE(unwrap): every update of the table is one call, so a poisoned
        // lock still holds a consistent table.
        let mut admission = self.admission.lock().unwrap_or_else(|p| p.into_inner());
        admission.admit_datagram(
            datagram,
            peer,
            local,
            &self.config.limits,
            &self.counters,
            reply,
        )
    }

    fn release(&self, key: &SessionKey) {
        self.admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(key);
    }
}

/// A running session's place. [`Ticket::finish`] records its statistics and
/// calls `on_session_end`; dropped unfinished (its task panicked) it counts
/// as lost. Either way the admission is released and `notify` runs.
pub struct Ticket {
    registry: Arc<Registry>,
    key: Option<SessionKey>,
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
        Ticket {
            registry,
            key: Some(key),
            notify: Box::new(notify),
        }
    }

    /// The session ended with `stats`.
    pub fn finish(mut self, stats: &Stats) {
        if let Some(key) = self.key.take() {
            self.registry.release(&key);
            self.registry.counters.record(stats);
            if let Some(f) = &self.registry.config.on_session_end {
                f(stats);
            }
            (self.notify)();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.registry.release(&key);
            self.registry.counters.session_lost();
            (self.notify)();
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
