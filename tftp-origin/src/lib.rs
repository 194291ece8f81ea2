//! # tftp-origin: serve TFTP from an HTTP or object-store origin
//!
//! A [`tftp_tokio::Handler`] that answers each read request with an object
//! from an origin named by a URL template, through a bounded cache, so many
//! stateless tftpd nodes can stand in front of one HTTP repository or
//! bucket:
//!
//! - `http://`, `https://` (reqwest, rustls); `s3://`, `gs://`, `az://`
//!   (object_store, with its usual environment credentials: `AWS_*`,
//!   `GOOGLE_*`, `AZURE_*`); `file://` (a directory read as tftpd's
//!   `--root` is: names resolve inside it as under a chroot, regular files
//!   only, opened without blocking).
//! - The template's `{path}` is the requested name, normalised and confined
//!   (no `..`, every segment percent-encoded, see [`normalise`]);
//!   `{client_ip}` and `{local_ip}` give per-machine URLs, so
//!   `http://prov/api/tftp?file={path}&ip={client_ip}` asks a provisioning
//!   service for each machine's own boot config.
//! - The size (`tsize`) comes from `Content-Length` or the object's size,
//!   before DATA 1. 404 is ERROR 1, 401/403 ERROR 2, anything else ERROR 0
//!   "Origin unavailable" within the configured timeout and retries.
//! - The cache (in memory or in a directory) is keyed by the rendered URL,
//!   honours `Cache-Control`, revalidates with ETag / Last-Modified, makes
//!   one origin request for any number of simultaneous clients and streams
//!   it to all of them as it arrives, and serves stale copies while the
//!   origin is down. See [`cache`](crate::OriginBuilder::cache_dir) for the
//!   details.
//!
//! ```no_run
//! use tftp_origin::{redact, Origin};
//! use tftp_tokio::Server;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let origin = Origin::builder("http://repo.example/boot/{path}")?
//!     .cache_size(1 << 30)
//!     .on_lookup(|l| {
//!         let url = l.url.as_deref().map(redact);
//!         println!("{} {:?} {}", l.peer, url, l.result.as_str())
//!     })
//!     .build()?;
//! let server = Server::builder(origin).listen("0.0.0.0:69".parse()?).bind()?;
//! server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod cache;
mod cachedir;
mod fetch;
mod stats;
mod template;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tftp_tokio::tftp_proto::options::Limits;
use tftp_tokio::tftp_proto::packet::ErrorCode;
use tftp_tokio::{Handler, ReadResponse, RequestInfo, TftpError};

pub use cache::{
    DirectReader, ObjectReader, ENTRY_OVERHEAD, FIRST_WINDOW, MAX_ENTRIES, MAX_LIFETIME,
    ORPHAN_GRACE, STALE_RETRY,
};
pub use cachedir::prepare_cache_dir;
pub use stats::{CacheResult, Lookup, OriginStats};
pub use template::{normalise, redact, Scheme, Template, TemplateError};

use cache::policy::Policy;
use cache::{Cache, Config, Found, Store};
use fetch::{Backend, FetchError, Timing};

/// Default size of an in-memory cache (bytes).
pub const DEFAULT_MEMORY_CACHE_SIZE: u64 = 256 << 20;
/// Default size of an on-disk cache (bytes).
pub const DEFAULT_DISK_CACHE_SIZE: u64 = 4 << 30;
/// Default time an object without `Cache-Control` is served before it is
/// revalidated.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default connect, header and read-stall timeout of origin requests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default retries of a failed origin request (before any body byte).
pub const DEFAULT_RETRIES: u32 = 1;
/// Most retries of a failed origin request.
pub const MAX_RETRIES: u32 = 10;
/// Longest origin timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default longest time a cached copy is served stale while the origin
/// fails (a day: an outage of the repository does not stop the boots, but a
/// copy the origin stopped serving is not served forever).
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(24 * 3600);
/// Default most origin requests at once (headers and bodies, cached or
/// streamed through); more wait in line, within their sessions' deadlines.
pub const DEFAULT_MAX_REQUESTS: usize = 64;

type LookupCallback = Arc<dyn Fn(&Lookup) + Send + Sync>;

/// Builds an [`Origin`].
pub struct OriginBuilder {
    template: Template,
    dir: Option<PathBuf>,
    size: Option<u64>,
    ttl: Duration,
    stale_if_error: Duration,
    max_requests: usize,
    timing: Timing,
    on_lookup: Option<LookupCallback>,
}

impl fmt::Debug for OriginBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginBuilder")
            .field("template", &self.template)
            .field("dir", &self.dir)
            .field("size", &self.size)
            .field("ttl", &self.ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("max_requests", &self.max_requests)
            .finish_non_exhaustive()
    }
}

/// Why an [`Origin`] cannot be built.
#[derive(Debug)]
pub struct OriginError(String);

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OriginError {}

impl From<TemplateError> for OriginError {
    fn from(e: TemplateError) -> Self {
        OriginError(e.to_string())
    }
}

impl OriginBuilder {
    /// Keeps the cache in files under `dir` instead of memory.
    ///
    /// `dir` is created mode 0700 if missing, and refused if it is owned by
    /// another user than the effective one or is group- or
    /// world-writable (see [`prepare_cache_dir`] for a server that drops
    /// privileges). The cache keeps its files (mode 0600) in a
    /// subdirectory of its own, locked while it lives and removed when it
    /// is dropped, so several caches (processes) can share `dir` without
    /// touching each other's files; what dead ones left is removed when
    /// the next one is built.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Most bytes the cache stores ([`DEFAULT_MEMORY_CACHE_SIZE`], or
    /// [`DEFAULT_DISK_CACHE_SIZE`] with a directory). 0 turns caching off:
    /// every request is its own origin request.
    pub fn cache_size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// How long an object the origin sent without `Cache-Control` lifetime
    /// is served before it is revalidated ([`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.min(MAX_LIFETIME);
        self
    }

    /// Longest a cached copy is served stale while the origin fails
    /// ([`DEFAULT_STALE_IF_ERROR`]); counted from when it went stale. Past
    /// it the copy is dropped and requests get the origin's failure.
    pub fn stale_if_error(mut self, bound: Duration) -> Self {
        self.stale_if_error = bound;
        self
    }

    /// Most origin requests at once ([`DEFAULT_MAX_REQUESTS`], at least 1):
    /// a request holds its place from its headers to the end of its body.
    /// More wait in line; a session that ends while waiting leaves the line.
    /// When none is free, the place held longest only for clients that have
    /// not answered (a body waiting for them to ask for more, or streamed
    /// through to one) is taken back: those transfers fail.
    pub fn max_requests(mut self, n: usize) -> Self {
        self.max_requests = n.max(1);
        self
    }

    /// Connect timeout, time to the response headers, and longest pause
    /// within a body ([`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timing.timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// Retries of a failed origin request before any body byte
    /// ([`DEFAULT_RETRIES`], at most [`MAX_RETRIES`]).
    pub fn retries(mut self, retries: u32) -> Self {
        self.timing.retries = retries.min(MAX_RETRIES);
        self
    }

    /// Called once per read request with how it was answered.
    pub fn on_lookup(mut self, f: impl Fn(&Lookup) + Send + Sync + 'static) -> Self {
        self.on_lookup = Some(Arc::new(f));
        self
    }

    /// The handler. Fails if the client or store cannot be set up (bad
    /// credentials configuration, a `file://` directory that does not
    /// exist, a cache directory refused or not writable).
    pub fn build(self) -> Result<Origin, OriginError> {
        let backend = build_backend(&self.template, self.timing)?;
        let (instance, store, default_size) = match self.dir {
            Some(dir) => {
                let instance =
                    cachedir::Instance::open(&dir).map_err(|e| OriginError(e.to_string()))?;
                let store = Store::Disk(instance.path().to_owned());
                (Some(instance), store, DEFAULT_DISK_CACHE_SIZE)
            }
            None => (None, Store::Memory, DEFAULT_MEMORY_CACHE_SIZE),
        };
        let counters = Arc::default();
        let config = Config {
            max_bytes: self.size.unwrap_or(default_size),
            policy: Policy {
                ttl: self.ttl,
                stale_if_error: self.stale_if_error,
            },
            max_requests: self.max_requests,
        };
        let cache = Cache::new(store.clone(), config, self.timing, Arc::clone(&counters))
            .map_err(|e| OriginError(e.to_string()))?;
        Ok(Origin(Arc::new(Inner {
            route: RwLock::new(Arc::new(Route {
                template: self.template,
                backend: Arc::new(backend),
            })),
            cache: Arc::new(cache),
            counters,
            timing: self.timing,
            on_lookup: self.on_lookup,
            _cache_dir: instance,
        })))
    }
}

/// The client or store for `template`'s base.
fn build_backend(template: &Template, timing: Timing) -> Result<Backend, OriginError> {
    // The store's message may quote the base: redacted there too.
    Backend::new(template, timing).map_err(|e| {
        let base = template.base();
        let shown = redact(base);
        OriginError(format!("origin {shown}: {}", e.replace(base, &shown)))
    })
}

struct Inner {
    /// The template and its client, replaced by [`Origin::reload`].
    route: RwLock<Arc<Route>>,
    cache: Arc<Cache>,
    counters: Arc<stats::Counters>,
    timing: Timing,
    on_lookup: Option<LookupCallback>,
    /// The cache's own space in the cache directory, held while the
    /// handler lives.
    _cache_dir: Option<cachedir::Instance>,
}

/// Where names go: the template and the client or store of its base.
#[derive(Debug)]
struct Route {
    template: Template,
    backend: Arc<Backend>,
}

/// The origin handler (cheap to clone: clones share the cache and
/// counters). Read requests only; writes are refused with ERROR 2.
#[derive(Clone)]
pub struct Origin(Arc<Inner>);

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("route", &self.route())
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// A builder for the template (see [`Template::parse`]).
    pub fn builder(template: &str) -> Result<OriginBuilder, OriginError> {
        Ok(OriginBuilder {
            template: Template::parse(template)?,
            dir: None,
            size: None,
            ttl: DEFAULT_TTL,
            stale_if_error: DEFAULT_STALE_IF_ERROR,
            max_requests: DEFAULT_MAX_REQUESTS,
            timing: Timing {
                timeout: DEFAULT_TIMEOUT,
                retries: DEFAULT_RETRIES,
            },
            on_lookup: None,
        })
    }

    /// The template now.
    pub fn template(&self) -> Template {
        self.route().template.clone()
    }

    /// Serves from `template` from now on (tftpd's SIGHUP re-reads
    /// `--origin-file`): its client or store is built first, and on any
    /// failure the template in use stays. Lookups already under way finish
    /// with the old one; cached objects of the old template's URLs are
    /// no longer asked for and age out of the cache.
    pub fn reload(&self, template: &str) -> Result<(), OriginError> {
        let template = Template::parse(template)?;
        let backend = build_backend(&template, self.0.timing)?;
        let route = Arc::new(Route {
            template,
            backend: Arc::new(backend),
        });
        *self.0.route.write().unwrap_or_else(|p| p.into_inner()) = route;
        Ok(())
    }

    fn route(&self) -> Arc<Route> {
        Arc::clone(&self.0.route.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The counters now.
    pub fn stats(&self) -> OriginStats {
        self.0.counters.snapshot(self.0.cache.usage())
    }

    /// What `request` gets, and how it was found.
    async fn lookup(
        &self,
        request: &RequestInfo,
    ) -> (Option<String>, CacheResult, Result<ReadResponse, TftpError>) {
        let route = self.route();
        let url = match route.template.render(request) {
            Ok(url) => url,
            Err(e) => return (None, CacheResult::Error, Err(e)),
        };
        // All a client reads before it has answered: its first block.
        let first_block = u64::from(
            request
                .negotiate(&Limits::default(), None)
                .oack
                .block_size(),
        );
        // A disk copy evicted between the lookup and its open is looked up
        // once more (the next lookup fetches it again).
        let mut found = self.0.cache.get(&url, &route.backend).await;
        if let Ok(Found::Cached(object, _)) = &found {
            if object.is_gone() {
                found = self.0.cache.get(&url, &route.backend).await;
            }
        }
        let answer = match found {
            Ok(Found::Cached(object, how)) => match object.reader(first_block) {
                Ok(reader) => {
                    let response = ReadResponse::new(reader, object.size());
                    let response = match object.modified() {
                        Some(time) => response.with_modified(time),
                        None => response,
                    };
                    (how, Ok(response))
                }
                Err(e) if out_of_descriptors(&e) => {
                    // The busy answer, asked again within the server's
                    // descriptor wait.
                    tracing::warn!(error = %e, "cannot open a cached object: out of descriptors");
                    (CacheResult::Error, Err(TftpError::busy()))
                }
                Err(e) => {
                    tracing::warn!(url = %redact(&url), error = %e, "cannot open a cached object");
                    (
                        CacheResult::Error,
                        Err(TftpError::new(ErrorCode::NotDefined, "Origin unavailable")),
                    )
                }
            },
            Ok(Found::Direct(meta, body, slot)) => {
                let reader = DirectReader::new(
                    body,
                    meta.size,
                    slot,
                    first_block,
                    self.0.timing.timeout,
                    Arc::clone(&self.0.counters),
                );
                (
                    CacheResult::Bypass,
                    Ok(ReadResponse::new(reader, meta.size)),
                )
            }
            Err(FetchError::NotFound) => (CacheResult::Error, Err(TftpError::not_found())),
            Err(FetchError::Denied) => (
                CacheResult::Error,
                Err(TftpError::access_violation("Access denied")),
            ),
            Err(FetchError::Failed(why)) => {
                tracing::warn!(url = %redact(&url), %why, "origin unavailable");
                (
                    CacheResult::Error,
                    Err(TftpError::new(ErrorCode::NotDefined, "Origin unavailable")),
                )
            }
        };
        (Some(url), answer.0, answer.1)
    }
}

/// Whether `e` says the process or the system is out of descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE and ENFILE.
    matches!(e.raw_os_error(), Some(24 | 23))
}

impl Handler for Origin {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        let started = tokio::time::Instant::now();
        self.0.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (url, result, response) = self.lookup(request).await;
        if let Some(callback) = &self.0.on_lookup {
            callback(&Lookup {
                peer: request.peer(),
                url,
                result,
                size: response.as_ref().ok().and_then(|r| r.size()),
                elapsed: started.elapsed(),
                error: response.as_ref().err().map(|e| e.code.as_u16()),
            });
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload replaces the template only when its client can be built;
    /// a bad one leaves the template in use.
    #[tokio::test]
    async fn reload_keeps_the_template_in_use_on_failure() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let url = |d: &tempfile::TempDir| format!("file://{}/{{path}}", d.path().display());
        let origin = Origin::builder(&url(&a)).unwrap().build().unwrap();
        origin.reload(&url(&b)).unwrap();
        assert_eq!(origin.template(), Template::parse(&url(&b)).unwrap());
        assert!(
            origin.reload("ftp://127.0.0.1/{path}").is_err(),
            "bad scheme"
        );
        assert!(
            origin.reload("file:///nonexistent-dir/{path}").is_err(),
            "no directory"
        );
        assert_eq!(origin.template(), Template::parse(&url(&b)).unwrap());
    }
}
