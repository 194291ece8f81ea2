//! SIGHUP: the files tftpd was started with are read again, each replaced
//! only if it is good: `--map-file` (the remap rules) and `--origin-file`
//! (the origin's URL template, with its client). A file that cannot be read
//! or has a bad line keeps what is in use, and the log says why (the line,
//! for rules). Requests from then on see the new rules or template;
//! transfers under way are not affected. The files are read as the user
//! tftpd runs as (after `--user`).

use std::path::PathBuf;

use tftp_origin::Origin;
use tftp_tokio::remap::RulesHandle;
use tftp_tokio::RemapRules;

/// What a SIGHUP reloads.
pub struct Reload {
    /// `--map-file` and the rules it feeds.
    pub rules: Option<(PathBuf, RulesHandle)>,
    /// `--origin-file` and the origin it feeds.
    pub origin: Option<(PathBuf, Origin)>,
}

impl Reload {
    /// Reloads on every SIGHUP while the runtime runs (a SIGHUP no longer
    /// ends tftpd, whatever it was started with).
    pub fn spawn(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                self.reload();
            }
        });
        Ok(())
    }

    /// Reads the files again; each replaces what is in use only if good.
    pub fn reload(&self) {
        if self.rules.is_none() && self.origin.is_none() {
            tracing::info!("SIGHUP: nothing to reload (no --map-file, no --origin-file)");
        }
        if let Some((file, rules)) = &self.rules {
            match RemapRules::from_file(file) {
                Ok(new) => {
                    tracing::info!(file = %file.display(), rules = new.len(), "SIGHUP: remap rules reloaded");
                    rules.replace(new);
                }
                Err(e) => tracing::error!(
                    file = %file.display(),
                    error = %e,
                    "SIGHUP: remap rules not reloaded; the rules in use stay"
                ),
            }
        }
        if let Some((file, origin)) = &self.origin {
            let reloaded = crate::cli::read_origin_file(file)
                .and_then(|t| origin.reload(&t).map_err(|e| e.to_string()));
            match reloaded {
                Ok(()) => tracing::info!(
                    file = %file.display(),
                    origin = %tftp_origin::redact(origin.template().base()),
                    "SIGHUP: origin reloaded"
                ),
                Err(e) => tracing::error!(
                    file = %file.display(),
                    // Template and client errors quote the template redacted.
                    error = %e,
                    "SIGHUP: origin not reloaded; the one in use stays"
                ),
            }
        }
    }
}
