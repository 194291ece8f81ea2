//! The handler tftpd serves, built from the flags: the root (or each
//! client's own root), the origin, or the root first and the origin for
//! what is not there; behind the remap rules when `--map-file` is given.
//! Whatever the flags, it is one type, [`Stack`], so the server is built
//! once.

use std::path::Path;
use std::time::Duration;

use tftp_origin::Origin;
use tftp_tokio::{DirHandler, Fallback, Handler, Remap, RemapRules};
use tftp_tokio::{ReadResponse, RequestInfo, TftpError, WriteResponse};

use crate::cli::{Args, ClientKey};
use crate::BoxError;

/// What tftpd serves: [`Files`], behind the remap rules or not.
pub enum Stack {
    /// Requests go to the files as they are named.
    Direct(Files),
    /// Each name is rewritten by the `--map-file` rules first.
    Remapped(Remap<Files>),
}

/// Where files come from.
pub enum Files {
    /// `--root` (or the current directory).
    Dir(DirHandler),
    /// `--origin` alone.
    Origin(Origin),
    /// `--root` and `--origin`: the names not found under the root come
    /// from the origin; uploads go to the root only.
    DirThenOrigin(Fallback<DirHandler, Origin>),
}

impl Stack {
    /// The handler for `dir` and `origin` (at least one), behind `rules`.
    pub fn new(
        dir: Option<DirHandler>,
        origin: Option<Origin>,
        rules: Option<RemapRules>,
    ) -> Result<Self, BoxError> {
        let files = match (dir, origin) {
            (Some(d), None) => Files::Dir(d),
            (None, Some(o)) => Files::Origin(o),
            (Some(d), Some(o)) => Files::DirThenOrigin(Fallback::new(d, o)),
            (None, None) => return Err("nothing to serve".into()),
        };
        Ok(match rules {
            Some(rules) => {
                tracing::info!(rules = rules.len(), "file name remapping");
                Stack::Remapped(Remap::new(rules, files))
            }
            None => Stack::Direct(files),
        })
    }
}

impl Stack {
    /// The remap rules in use, to replace them on SIGHUP.
    pub fn rules(&self) -> Option<tftp_tokio::remap::RulesHandle> {
        match self {
            Stack::Direct(_) => None,
            Stack::Remapped(remap) => Some(remap.rules().clone()),
        }
    }
}

impl Handler for Stack {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        match self {
            Stack::Direct(files) => files.read(request).await,
            Stack::Remapped(remap) => remap.read(request).await,
        }
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        match self {
            Stack::Direct(files) => files.write(request).await,
            Stack::Remapped(remap) => remap.write(request).await,
        }
    }
}

impl Handler for Files {
    async fn read(&self, request: &RequestInfo) -> Result<ReadResponse, TftpError> {
        match self {
            Files::Dir(dir) => dir.read(request).await,
            Files::Origin(origin) => origin.read(request).await,
            Files::DirThenOrigin(both) => both.read(request).await,
        }
    }

    async fn write(&self, request: &RequestInfo) -> Result<WriteResponse, TftpError> {
        match self {
            Files::Dir(dir) => dir.write(request).await,
            Files::Origin(origin) => origin.write(request).await,
            Files::DirThenOrigin(both) => both.write(request).await,
        }
    }
}

/// Opens the root to serve (with the privileges tftpd starts with).
pub fn open_root(args: &Args, root: &Path) -> Result<DirHandler, BoxError> {
    let handler = DirHandler::new(root)
        .map_err(|e| format!("cannot open root {}: {e}", root.display()))?
        .allow_write(args.allow_write)
        .allow_overwrite(args.allow_overwrite)
        .max_upload_size(args.max_upload_size);
    let handler = match args.per_client_root {
        Some(ClientKey::Ip) => handler.per_client_root_by(tftp_tokio::ClientKey::Ip),
        Some(ClientKey::Mac) => handler.per_client_root_by(tftp_tokio::ClientKey::Mac),
        None => handler,
    };
    let handler = match &args.upload_dir {
        Some(dir) => handler.upload_dir(dir),
        None => handler,
    };
    if args.allow_write {
        // A crash can leave half-written uploads; they are never served,
        // and are removed here.
        match handler.root().remove_stale_uploads() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale upload temporary files"),
            Err(e) => tracing::warn!(error = %e, "cannot remove stale upload temporary files"),
        }
    }
    Ok(handler)
}

/// The `--origin` handler, with its cache and a debug line per lookup.
pub fn build_origin(args: &Args, template: &str) -> Result<Origin, BoxError> {
    let mut builder = Origin::builder(template)?
        .ttl(Duration::from_secs(args.cache_ttl))
        .timeout(args.origin_timeout)
        .retries(args.origin_retries)
        .max_requests(args.origin_max_requests as usize)
        .stale_if_error(Duration::from_secs(args.stale_if_error))
        .on_lookup(|l| {
            tracing::debug!(
                peer = %l.peer,
                url = %tftp_origin::redact(l.url.as_deref().unwrap_or("-")),
                cache = l.result.as_str(),
                size = l.size,
                elapsed_ms = l.elapsed.as_millis() as u64,
                error = l.error,
                "origin lookup"
            )
        });
    if let Some(dir) = &args.cache_dir {
        builder = builder.cache_dir(dir);
    }
    if let Some(size) = args.cache_size {
        builder = builder.cache_size(size);
    }
    let origin = builder.build()?;
    tracing::info!(
        origin = %tftp_origin::redact(template),
        cache = %args.cache_dir.as_deref().map_or("memory".into(), |d| d.display().to_string()),
        "serving from an origin"
    );
    Ok(origin)
}
