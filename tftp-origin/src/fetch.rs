//! One GET from the origin: reqwest for HTTP(S), object_store for object
//! stores, tftp-io's confined [`Root`] for `file://` directories, with the
//! answer mapped into what the cache and TFTP need (size, validators,
//! freshness, not found / denied / failed).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::StatusCode;

use tftp_io::root::Root;
use tftp_io::tftp_proto::packet::ErrorCode;
use tftp_io::TftpError;
use tftp_tokio::escape_controls;

use crate::cache::policy::{freshness, Freshness, Meta, Validators};
use crate::template::{Scheme, Template};

/// A body as it arrives.
pub(crate) type Body = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What the origin answered.
pub(crate) enum Fetched {
    /// A (new) body.
    Body(Meta, Body),
    /// 304: the cached copy is current.
    NotModified(Meta),
}

/// Why a fetch gave no object. Cheap to clone: every waiter of a
/// single-flight gets a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// 404 / 410, or no such object.
    NotFound,
    /// 401 / 403, or the store refused the credentials.
    Denied,
    /// Anything else (refused connection, timeout, 5xx), with a short reason
    /// for the log (never sent to the client), made fit for it by
    /// [`log_text`].
    Failed(Arc<str>),
}

impl FetchError {
    fn failed(reason: impl std::fmt::Display) -> Self {
        FetchError::Failed(log_text(reason).into())
    }
}

/// Most characters of an error text from the origin or the store that
/// reach a log line.
pub(crate) const MAX_ERROR_CHARS: usize = 200;

/// An error text from the origin or the store (which may quote the body of
/// an error response) made fit for a log line, as tftpd's logs treat the
/// names clients send: its first [`MAX_ERROR_CHARS`] characters (`…` marks
/// a cut), with control characters escaped ([`escape_controls`]), so it can
/// neither forge a line nor reach a terminal as an escape sequence. Applied
/// where such a text enters this crate (a failed fetch, a failed body), so
/// every line that logs it, here or in the server, gets it clean.
pub(crate) fn log_text(text: impl std::fmt::Display) -> String {
    let text = text.to_string();
    let cut = text.char_indices().nth(MAX_ERROR_CHARS).map(|(i, _)| i);
    let mut out = escape_controls(&text[..cut.unwrap_or(text.len())]).into_owned();
    if cut.is_some() {
        out.push('…');
    }
    out
}

/// A body's failure as the readers of the body see it (see [`log_text`]).
fn body_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(log_text(e))
}

/// Connect, header and read timeouts and retries of origin requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub timeout: Duration,
    pub retries: u32,
}

/// The origin behind a template.
pub(crate) enum Backend {
    Http(reqwest::Client),
    Store {
        store: Arc<dyn ObjectStore>,
        /// Bytes of a rendered URL before the object's key.
        key_start: usize,
    },
    /// A `file://` directory (the template's part before its first
    /// placeholder), opened once and read as tftpd's `--root` is: confined
    /// (`openat2` `RESOLVE_IN_ROOT`), non-blocking, regular files only.
    File {
        root: Root,
        /// Bytes of a rendered URL before the name under `root`.
        key_start: usize,
    },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Http(_) => f.write_str("Backend::Http"),
            Backend::Store { store, .. } => write!(f, "Backend::Store({store})"),
            Backend::File { .. } => f.write_str("Backend::File"),
        }
    }
}

/// Most redirects followed.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Redirects are followed only to the same scheme, host and port (a
/// trailing-slash fix, a moved file), never elsewhere: what the template
/// names is the only place tftpd fetches from.
fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let same = first.is_some_and(|f| {
            let url = attempt.url();
            f.scheme() == url.scheme()
                && f.host_str() == url.host_str()
                && f.port_or_known_default() == url.port_or_known_default()
        });
        if !same {
            attempt.error("redirect to another origin")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// The longest a fetch may take to its first body byte: per attempt a
/// connect and a wait for headers (each `timeout`), the backoff between
/// attempts, and a second to spare.
pub(crate) fn attempt_bound(timing: Timing) -> Duration {
    let attempts = timing.retries + 1;
    let backoff: u64 = (1..attempts).map(|a| 100u64 << a.min(5)).sum();
    timing.timeout * 2 * attempts + Duration::from_millis(backoff) + Duration::from_secs(1)
}

/// Installs rustls' ring provider as the process default (reqwest and
/// object_store build their TLS from it), unless one is installed already.
fn crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Backend {
    /// The client or store for a template. Object store credentials and
    /// endpoints come from the usual environment (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`), as object_store reads them.
    pub fn new(template: &Template, timing: Timing) -> Result<Self, String> {
        crypto_provider();
        // Set key by key: `with_client_options` would replace what the
        // environment configured (AWS_ALLOW_HTTP, proxies). A read timeout,
        // not a whole-request one: a large object may take long to arrive.
        use object_store::ClientConfigKey::{ConnectTimeout, ReadTimeout};
        let ms = format!("{}ms", timing.timeout.as_millis().max(1));
        let retry = object_store::RetryConfig {
            max_retries: timing.retries as usize,
            retry_timeout: timing.timeout * (timing.retries + 1),
            ..Default::default()
        };
        let base = template.base();
        let store: Arc<dyn ObjectStore> = match template.scheme() {
            Scheme::Http | Scheme::Https => {
                let client = reqwest::Client::builder()
                    .user_agent(concat!("tftp-rs/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(timing.timeout)
                    .read_timeout(timing.timeout)
                    .redirect(same_host_redirects())
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?;
                return Ok(Backend::Http(client));
            }
            Scheme::S3 => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(base)
                    .with_config(
                        object_store::aws::AmazonS3ConfigKey::Client(ConnectTimeout),
                        &ms,
                    )
                    .with_config(
                        object_store::aws::AmazonS3ConfigKey::Client(ReadTimeout),
                        &ms,
                    )
                    .with_retry(retry)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Scheme::Gs => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(base)
                    .with_config(
                        object_store::gcp::GoogleConfigKey::Client(ConnectTimeout),
                        &ms,
                    )
                    .with_config(object_store::gcp::GoogleConfigKey::Client(ReadTimeout), &ms)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Scheme::Az => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(base)
                    .with_config(
                        object_store::azure::AzureConfigKey::Client(ConnectTimeout),
                        &ms,
                    )
                    .with_config(
                        object_store::azure::AzureConfigKey::Client(ReadTimeout),
                        &ms,
                    )
                    .with_retry(retry)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Scheme::File => return file_backend(template),
        };
        Ok(Backend::Store {
            store,
            key_start: base.len(),
        })
    }

    /// GETs `url`, conditionally if `validators` has any. Returns within
    /// about `timing.timeout × (retries + 1)` plus backoff.
    pub async fn fetch(
        &self,
        url: &str,
        validators: &Validators,
        timing: Timing,
    ) -> Result<Fetched, FetchError> {
        // The whole exchange up to the first body byte is bounded, whatever
        // the client library's own timers do.
        let bound = attempt_bound(timing);
        match tokio::time::timeout(bound, self.fetch_inner(url, validators, timing)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::failed(format!("no answer in {bound:?}"))),
        }
    }

    async fn fetch_inner(
        &self,
        url: &str,
        validators: &Validators,
        timing: Timing,
    ) -> Result<Fetched, FetchError> {
        match self {
            Backend::Http(client) => {
                let mut attempt = 0;
                loop {
                    match http_get(client, url, validators).await {
                        Err(FetchError::Failed(why)) if attempt < timing.retries => {
                            attempt += 1;
                            tracing::debug!(url = %crate::template::redact(url), %why, attempt, "origin request failed, retrying");
                            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                        }
                        other => return other,
                    }
                }
            }
            Backend::Store { store, key_start } => {
                store_get(store.as_ref(), &url[*key_start..], validators).await
            }
            Backend::File { root, key_start } => {
                file_get(root, &url[*key_start..], validators).await
            }
        }
    }
}

async fn http_get(
    client: &reqwest::Client,
    url: &str,
    validators: &Validators,
) -> Result<Fetched, FetchError> {
    let mut request = client.get(url);
    if let Some(etag) = &validators.etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    if let Some(date) = &validators.last_modified {
        request = request.header(header::IF_MODIFIED_SINCE, date);
    }
    let response = request.send().await.map_err(|e| {
        FetchError::failed(if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            // Without the URL: it may hold credentials.
            e.without_url().to_string()
        })
    })?;
    let status = response.status();
    let meta = |headers: &HeaderMap| Meta {
        size: response.content_length(),
        modified: headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        validators: Validators {
            etag: text(headers.get(header::ETAG)),
            last_modified: text(headers.get(header::LAST_MODIFIED)),
        },
        freshness: freshness(
            headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            headers
                .get(header::AGE)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok()),
        ),
    };
    match status {
        StatusCode::OK => {
            let meta = meta(response.headers());
            // Without the URL: it may hold credentials or a token.
            let body = response
                .bytes_stream()
                .map_err(|e| body_error(e.without_url()));
            Ok(Fetched::Body(meta, Box::pin(body)))
        }
        StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified(meta(response.headers()))),
        StatusCode::NOT_FOUND | StatusCode::GONE => Err(FetchError::NotFound),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(FetchError::Denied),
        other => Err(FetchError::failed(format!("HTTP {}", other.as_u16()))),
    }
}

fn text(value: Option<&HeaderValue>) -> Option<String> {
    Some(value?.to_str().ok()?.to_owned())
}

async fn store_get(
    store: &dyn ObjectStore,
    key: &str,
    validators: &Validators,
) -> Result<Fetched, FetchError> {
    // The key is percent-encoded segments (the template's and normalise's):
    // decoded here, and refused if it holds `..` or an empty segment.
    let path = object_store::path::Path::from_url_path(key.trim_start_matches('/'))
        .map_err(|_| FetchError::NotFound)?;
    let options = GetOptions {
        if_none_match: validators.etag.clone(),
        ..Default::default()
    };
    let meta_of = |meta: &object_store::ObjectMeta, attributes: &object_store::Attributes| Meta {
        size: Some(meta.size),
        modified: Some(std::time::SystemTime::from(meta.last_modified)),
        validators: Validators {
            etag: meta.e_tag.clone(),
            last_modified: None,
        },
        freshness: attributes
            .get(&Attribute::CacheControl)
            .map(|v| freshness(std::iter::once(v.as_ref()), None))
            .unwrap_or(Freshness::Default),
    };
    match store.get_opts(&path, options).await {
        Ok(result) => {
            let meta = meta_of(&result.meta, &result.attributes);
            let body = result.into_stream().map_err(body_error);
            Ok(Fetched::Body(meta, Box::pin(body)))
        }
        Err(object_store::Error::NotModified { .. }) => {
            // The store answers 304 without a description: ask for it.
            let head = store.head(&path).await.map_err(store_error)?;
            Ok(Fetched::NotModified(meta_of(
                &head,
                &object_store::Attributes::new(),
            )))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// What an object store's error means here (its text made fit for the log).
fn store_error(e: object_store::Error) -> FetchError {
    match e {
        object_store::Error::NotFound { .. } => FetchError::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => FetchError::Denied,
        other => FetchError::failed(other),
    }
}

/// Bytes read from a `file://` origin at a time.
const FILE_CHUNK: usize = 64 * 1024;

/// The `file://` backend: the directory part of the template's fixed text
/// (`/srv/boot/` of `file:///srv/boot/{path}`, `/srv/` of
/// `file:///srv/{client_ip}/{path}`), percent-decoded, opened now.
fn file_backend(template: &Template) -> Result<Backend, String> {
    use std::os::unix::ffi::OsStrExt;
    let fixed = template.fixed_path();
    let dir = &fixed[..fixed.rfind('/').map_or(0, |i| i + 1)];
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(dir).collect();
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&decoded));
    let root = Root::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(Backend::File {
        root,
        key_start: template.base().len() + dir.len(),
    })
}

/// The name under a `file://` root for the rest of a rendered URL: each
/// segment percent-decoded (the template's and [`normalise`]'s encoding);
/// empty and `.` segments dropped; `None` for a `..`, or a segment that
/// decodes to a `/` or a NUL (only a template's own text can hold those).
///
/// [`normalise`]: crate::normalise
fn file_name(key: &str) -> Option<Vec<u8>> {
    let mut name = Vec::with_capacity(key.len());
    for segment in key.split('/') {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        match &bytes[..] {
            b"" | b"." => continue,
            b".." => return None,
            b if b.contains(&b'/') || b.contains(&0) => return None,
            _ => {}
        }
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend(bytes);
    }
    (!name.is_empty()).then_some(name)
}

/// A `file://` GET: the open and every read on the runtime's blocking
/// threads (a slow disk never holds a worker); the open itself never
/// blocks (a FIFO is refused, not waited on). The validator is an ETag of
/// the file's inode, modification time and size, as object_store's local
/// store makes it, so revalidating an unchanged file reads nothing.
async fn file_get(root: &Root, key: &str, validators: &Validators) -> Result<Fetched, FetchError> {
    let name = file_name(key).ok_or(FetchError::NotFound)?;
    let root = root.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let (file, _) = root.open_read(&name).map_err(file_error)?;
        let stat = file.metadata().map_err(FetchError::failed)?;
        Ok::<_, FetchError>((file, stat))
    })
    .await
    .map_err(FetchError::failed)??;
    let (file, stat) = opened;
    let meta = Meta {
        size: Some(stat.len()),
        modified: stat.modified().ok(),
        validators: Validators {
            etag: Some(file_etag(&stat)),
            last_modified: None,
        },
        freshness: Freshness::Default,
    };
    if validators.etag.is_some() && validators.etag == meta.validators.etag {
        return Ok(Fetched::NotModified(meta));
    }
    Ok(Fetched::Body(meta, file_body(file)))
}

/// What [`Root::open_read`]'s refusal means to the cache: ERROR 1 and 2
/// stay themselves (a name that is not there, or leaves the root, or is
/// not a regular file), anything else is the origin failing.
fn file_error(e: TftpError) -> FetchError {
    match e.code {
        ErrorCode::FileNotFound => FetchError::NotFound,
        ErrorCode::AccessViolation => FetchError::Denied,
        _ => FetchError::failed(e.message),
    }
}

fn file_etag(stat: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = stat.mtime() as i128 * 1_000_000 + i128::from(stat.mtime_nsec() / 1000);
    format!("{:x}-{:x}-{:x}", stat.ino(), mtime, stat.size())
}

/// An opened file as a body: chunks of [`FILE_CHUNK`] bytes, each read on
/// a blocking thread.
fn file_body(file: std::fs::File) -> Body {
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0; FILE_CHUNK];
            let n = loop {
                match file.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            buf.truncate(n);
            Ok::<_, io::Error>((file, buf))
        })
        .await
        .map_err(io::Error::other)??;
        Ok((!chunk.is_empty()).then(|| (Bytes::from(chunk), file)))
    });
    Box::pin(chunks)
}

/// The next chunk of a body, or an error if none arrives within `timeout`.
pub(crate) async fn next_chunk(body: &mut Body, timeout: Duration) -> io::Result<Option<Bytes>> {
    match tokio::time::timeout(timeout, body.next()).await {
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => Ok(None),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("origin sent nothing for {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::normalise;

    const TIMING: Timing = Timing {
        timeout: Duration::from_secs(2),
        retries: 0,
    };

    /// A `file://` backend on `dir` (its template `file://DIR/{path}`).
    fn file_origin(dir: &std::path::Path) -> (Template, Backend) {
        let template = Template::parse(&format!("file://{}/{{path}}", dir.display())).unwrap();
        let backend = Backend::new(&template, TIMING).unwrap();
        assert!(matches!(backend, Backend::File { .. }), "{backend:?}");
        (template, backend)
    }

    async fn get(
        (template, backend): &(Template, Backend),
        name: &str,
        validators: &Validators,
    ) -> Result<Fetched, FetchError> {
        let path = normalise(name.as_bytes()).unwrap();
        let url = template
            .render_with(&path, "192.0.2.7".parse().unwrap(), None)
            .unwrap();
        backend.fetch(&url, validators, TIMING).await
    }

    async fn body_of(fetched: Result<Fetched, FetchError>) -> (Meta, Vec<u8>) {
        let Ok(Fetched::Body(meta, mut body)) = fetched else {
            panic!("no body");
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = next_chunk(&mut body, TIMING.timeout).await.unwrap() {
            bytes.extend_from_slice(&chunk);
        }
        (meta, bytes)
    }

    #[tokio::test]
    async fn file_origin_serves_regular_files_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::create_dir_all(dir.path().join("my boot/sub")).unwrap();
        std::fs::write(dir.path().join("my boot/sub/f.bin"), &data).unwrap();
        std::fs::write(dir.path().join("my boot/empty"), b"").unwrap();
        // The template's own directory is percent-decoded.
        let template = format!("file://{}/my%20boot/{{path}}", dir.path().display());
        let template = Template::parse(&template).unwrap();
        let origin = (template.clone(), Backend::new(&template, TIMING).unwrap());
        let (meta, bytes) = body_of(get(&origin, "/sub/f.bin", &Validators::default()).await).await;
        assert_eq!(meta.size, Some(data.len() as u64));
        assert!(bytes == data, "{} bytes", bytes.len());
        let (meta, bytes) = body_of(get(&origin, "empty", &Validators::default()).await).await;
        assert_eq!((meta.size, bytes.len()), (Some(0), 0));
        // Revalidating an unchanged file reads nothing; a changed one is new.
        let current = meta.validators;
        assert!(current.etag.is_some());
        assert!(matches!(
            get(&origin, "empty", &current).await,
            Ok(Fetched::NotModified(_))
        ));
        std::fs::write(dir.path().join("my boot/empty"), b"now full").unwrap();
        let (_, bytes) = body_of(get(&origin, "empty", &current).await).await;
        assert_eq!(bytes, b"now full");
        assert_eq!(
            get(&origin, "missing", &Validators::default()).await.err(),
            Some(FetchError::NotFound)
        );
        // A directory is not a file.
        assert_eq!(
            get(&origin, "sub", &Validators::default()).await.err(),
            Some(FetchError::Denied)
        );
    }

    #[tokio::test]
    async fn file_origin_symlinks_stay_inside_the_directory() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inside"), b"inside").unwrap();
        let secret = outside.path().join("secret");
        symlink(&secret, dir.path().join("abs")).unwrap();
        symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        let climb = std::path::Path::new("..")
            .join(outside.path().file_name().unwrap())
            .join("secret");
        symlink(&climb, dir.path().join("rel")).unwrap();
        let deep = format!("../../../../../../../..{}", secret.display());
        symlink(&deep, dir.path().join("deep")).unwrap();
        // Absolute symlinks resolve inside the directory, as under a chroot.
        symlink("/inside", dir.path().join("chrooted")).unwrap();
        let origin = file_origin(dir.path());
        for name in ["abs", "dirlink/secret", "rel", "deep"] {
            let got = get(&origin, name, &Validators::default()).await;
            assert!(
                matches!(got, Err(FetchError::NotFound | FetchError::Denied)),
                "{name}: served from outside the origin directory"
            );
        }
        let (_, bytes) = body_of(get(&origin, "chrooted", &Validators::default()).await).await;
        assert_eq!(bytes, b"inside");
    }

    #[test]
    fn file_origin_refuses_a_fifo_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let origin = file_origin(dir.path());
        // On a thread of its own, so that an open stuck waiting for a
        // writer (blocking its runtime) fails the test instead of hanging
        // it; well under the fetch's own bound (4 s at these timings).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let got = runtime.block_on(get(&origin, "fifo", &Validators::default()));
            let _ = tx.send(got.err());
        });
        let got = rx
            .recv_timeout(Duration::from_millis(1500))
            .expect("the FIFO's open blocked");
        assert_eq!(got, Some(FetchError::Denied));
    }

    #[test]
    fn file_names_decode_segments_and_never_climb() {
        let name = |k: &str| file_name(k).map(|n| String::from_utf8(n).unwrap());
        assert_eq!(name("a/b%20c").as_deref(), Some("a/b c"));
        assert_eq!(name("a//./b").as_deref(), Some("a/b"));
        assert_eq!(name("%252e%252e").as_deref(), Some("%2e%2e"));
        for bad in ["..", "a/../b", "%2e%2e/x", "a%2fb", "a%00", "", "./"] {
            assert_eq!(name(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_origin_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("file://{}/nope/{{path}}", dir.path().display());
        let e = Backend::new(&Template::parse(&template).unwrap(), TIMING).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn error_texts_are_escaped_and_capped() {
        // An error body quoted by the store, forging a line and a terminal
        // escape.
        let body = "<Error>\n2026-01-01T00:00:00Z  INFO tftpd: forged\x1b[2J\r</Error>";
        let e = store_error(object_store::Error::Generic {
            store: "S3",
            source: body.into(),
        });
        let FetchError::Failed(why) = e else {
            panic!("{e:?}")
        };
        assert!(!why.contains(['\n', '\r', '\x1b']), "{why}");
        assert!(
            why.contains(r"<Error>\n2026-01-01T00:00:00Z  INFO tftpd: forged\u{1b}[2J\r</Error>"),
            "{why}"
        );
        // Not found and denied stay what they are.
        let missing = object_store::Error::NotFound {
            path: "k".into(),
            source: "gone".into(),
        };
        assert_eq!(store_error(missing), FetchError::NotFound);
        // A body that fails mid-way, and an HTTP-side reason.
        let failed = body_error("reset\nforged").to_string();
        assert_eq!(failed, r"reset\nforged");
        assert_eq!(
            FetchError::failed("a\u{202e}b"),
            FetchError::Failed(r"a\u{202e}b".into())
        );
        // Capped at 200 characters (counted before escaping, on character
        // boundaries), the cut marked.
        let long = "é".repeat(300) + "\n";
        let capped = log_text(&long);
        assert_eq!(capped, "é".repeat(MAX_ERROR_CHARS) + "…");
        assert_eq!(log_text("é".repeat(MAX_ERROR_CHARS)), "é".repeat(200));
        let controls = log_text("\x1b".repeat(300));
        assert_eq!(controls, r"\u{1b}".repeat(MAX_ERROR_CHARS) + "…");
    }
}
