//! The process around the server: the descriptor limit, the switch to an
//! unprivileged user, and the shutdown signals.

use crate::cli::Args;
use crate::BoxError;

/// Descriptors a session may hold: its socket and usually a file.
const DESCRIPTORS_PER_SESSION: u64 = 2;
/// Descriptors besides the sessions': listening sockets, the root, the
/// runtime, the metrics endpoint and its connections, logs.
const DESCRIPTORS_SPARE: u64 = 256;

/// Raises the soft limit on open descriptors to the hard one, and, when
/// started privileged, both to what `max_sessions` sessions need: each
/// holds a socket and usually a file, and the default soft limit (often
/// 1024) would run out long before `--max-sessions`.
pub fn raise_descriptor_limit(max_sessions: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let need = (max_sessions as u64)
        .saturating_mul(DESCRIPTORS_PER_SESSION)
        .saturating_add(DESCRIPTORS_SPARE);
    if limit.maximum.is_some_and(|hard| hard < need) {
        // Only with CAP_SYS_RESOURCE; the kernel caps it at fs.nr_open.
        let wanted = Rlimit {
            current: Some(need),
            maximum: Some(need),
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            tracing::debug!(limit = need, "raised the descriptor limit");
            return;
        }
    }
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(soft = ?limit.maximum, "raised the descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    if soft.is_some_and(|n| n < need) {
        tracing::warn!(
            limit = ?soft,
            need,
            "the descriptor limit is below what --max-sessions needs (raise ulimit -n)"
        );
    }
}

/// The user a root-started tftpd switches to without `--user`.
const DEFAULT_USER: &str = "nobody";

/// Switches to the user [`switch_to`] picks, if any; the `--cache-dir` is
/// made for that user first (created 0700 and given to it, or checked to
/// be its own), while tftpd may still create it where that user could not.
pub fn become_user(args: &Args) -> Result<(), BoxError> {
    let is_root = rustix::process::geteuid().is_root();
    let Some(user) = switch_to(args.user.as_deref(), is_root) else {
        return Ok(());
    };
    let (uid, gid) = lookup_user(user)
        .map_err(|e| format!("cannot drop privileges to {user}: {e} (--user root keeps root)"))?;
    if let Some(dir) = &args.cache_dir {
        tftp_origin::prepare_cache_dir(dir, Some((uid, gid)))?;
    }
    drop_privileges(user, uid, gid)
}

/// The user to switch to, given `--user` and whether tftpd runs as root:
/// `--user` when it names someone other than root; without it, nobody
/// when started as root, as tftpd-hpa does; `--user root` keeps root.
pub fn switch_to(user: Option<&str>, is_root: bool) -> Option<&str> {
    match (user, is_root) {
        // Explicitly asked to stay root.
        (Some("root"), true) => {
            tracing::warn!("running as root (--user root)");
            None
        }
        (Some("root"), false) => None,
        (Some(user), _) => Some(user),
        // Started as root with no --user: as tftpd-hpa, become nobody.
        (None, true) => Some(DEFAULT_USER),
        (None, false) => None,
    }
}

/// Switches to `user` (`uid`:`gid`, as [`lookup_user`] found "name", "uid"
/// or "uid:gid"; the name is for the log) before any thread starts,
/// so the per-thread Linux calls apply to the whole process (and refuses if
/// a thread exists already, since it would keep the privileges). Switching
/// away from uid 0 clears every capability.
fn drop_privileges(user: &str, uid: u32, gid: u32) -> Result<(), BoxError> {
    use rustix::process::{Gid, Uid};
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    match std::fs::read_dir("/proc/self/task").map(|d| d.count()) {
        Ok(1) => {}
        Ok(threads) => {
            return Err(format!("cannot drop privileges: {threads} threads already run").into())
        }
        // No /proc to look at: nothing in tftpd starts a thread before this.
        Err(e) => tracing::warn!(error = %e, "cannot count threads before dropping privileges"),
    }
    let gid = Gid::from_raw(gid);
    let uid = Uid::from_raw(uid);
    set_thread_groups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    set_thread_res_gid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    set_thread_res_uid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    tracing::info!(
        user,
        uid = uid.as_raw(),
        gid = gid.as_raw(),
        "dropped privileges"
    );
    Ok(())
}

/// The uid and gid of `user`: "uid:gid" as it is, or a name or a uid found
/// in the user database (getpwnam_r, getpwuid_r: NSS, not only /etc/passwd).
fn lookup_user(user: &str) -> Result<(u32, u32), BoxError> {
    use nix::unistd::{Uid, User};
    if let Some((u, g)) = user.split_once(':') {
        if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
            return Ok((u, g));
        }
    }
    let found = match User::from_name(user)? {
        Some(found) => Some(found),
        None => match user.parse() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid))?,
            Err(_) => None,
        },
    };
    match found {
        Some(found) => Ok((found.uid.as_raw(), found.gid.as_raw())),
        None => Err(format!("unknown user {user}").into()),
    }
}

/// SIGTERM or SIGINT. The handlers are installed at once (before the
/// "listening" line), not when the future is first polled: a signal that
/// arrives right after start-up drains instead of killing the process.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    // NOTE(unwrap): fails only outside a tokio runtime with signals enabled.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining transfers"),
            _ = int.recv() => tracing::info!("SIGINT: draining transfers"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_to_become() {
        assert_eq!(switch_to(None, false), None);
        assert_eq!(switch_to(None, true), Some(DEFAULT_USER));
        assert_eq!(switch_to(Some("root"), true), None);
        assert_eq!(switch_to(Some("root"), false), None);
        assert_eq!(switch_to(Some("tftp"), true), Some("tftp"));
        assert_eq!(switch_to(Some("65534:65534"), false), Some("65534:65534"));
    }

    #[test]
    fn users_found() {
        assert_eq!(lookup_user("65534:65533").unwrap(), (65534, 65533));
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert_eq!(lookup_user("0").unwrap(), (0, 0));
        let e = lookup_user("no-such-user-tftpd").unwrap_err();
        assert_eq!(e.to_string(), "unknown user no-such-user-tftpd");
    }
}
