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
//!
//! # Layout
//!
//! - [`policy`]: HTTP freshness and stale-if-error, with time as an
//!   argument (pure).
//! - [`index`]: the entries, their charges and the LRU order; what a
//!   lookup finds and how a flight settles (pure, time as an argument).
//! - [`object`]: stored bodies (memory or disk) and their readers.
//! - [`slot`]: the origin request slots, taken back from unanswered
//!   clients.
//! - [`direct`]: bodies streamed straight through to one client.
//! - [`flight`]: single-flight and the fills: the only part that knows
//!   tokio and reads the clock.

pub(crate) mod direct;
pub(crate) mod flight;
pub(crate) mod index;
pub(crate) mod object;
pub(crate) mod policy;
pub(crate) mod slot;

pub use direct::DirectReader;
pub use flight::ORPHAN_GRACE;
pub use index::{ENTRY_OVERHEAD, MAX_ENTRIES};
pub use object::{ObjectReader, FIRST_WINDOW};
pub use policy::{MAX_LIFETIME, STALE_RETRY};

pub(crate) use flight::{Cache, Config, Found};
pub(crate) use object::Store;
