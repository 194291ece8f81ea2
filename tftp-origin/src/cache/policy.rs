//! HTTP freshness as a shared cache reads it (RFC 9111), with time as an
//! argument: how long a response may be served, how a 304 refreshes a
//! copy, and how long a copy is served stale while the origin fails.
//!
//! Pure: no clock, no I/O. The origin's headers become a [`Meta`] (see
//! [`freshness`]); the [`Policy`] turns it into instants.

use std::time::{Duration, Instant};

/// After a failed revalidation, how long the stale copy is served before
/// the origin is asked again.
pub const STALE_RETRY: Duration = Duration::from_secs(10);

/// Longest lifetime taken from `Cache-Control` (RFC 9111 §1.2.2 caps delta
/// seconds at 2^31; a year is plenty for a boot file).
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a URL whose body of unknown length outgrew the cache is
/// streamed straight through instead of being tried again.
pub(crate) const TOO_LARGE_FOR: Duration = Duration::from_secs(300);

/// What a conditional GET can be answered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    /// Whether a conditional GET can be made.
    pub fn any(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// How long a response may be served without asking the origin again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// `no-store` or `private`: never kept.
    NoStore,
    /// `max-age` / `s-maxage` (less `Age`); `no-cache` is zero.
    For(Duration),
    /// No directive: the cache's default TTL.
    Default,
}

/// The origin's description of an object.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub size: Option<u64>,
    /// When the object last changed, when the origin says (HTTP's
    /// `Last-Modified`, an object store's or a file's modification time):
    /// passed on to the HTTP side's clients.
    pub modified: Option<std::time::SystemTime>,
    pub validators: Validators,
    pub freshness: Freshness,
}

/// `Cache-Control` as a shared cache reads it (RFC 9111 §5.2.2): `no-store`
/// and `private` forbid keeping, `s-maxage` wins over `max-age`, `no-cache`
/// means revalidate every time, and `Age` counts against the lifetime.
pub(crate) fn freshness<'a>(
    directives: impl Iterator<Item = &'a str>,
    age: Option<u64>,
) -> Freshness {
    let (mut max_age, mut s_maxage, mut no_cache) = (None, None, false);
    for directive in directives.flat_map(|v| v.split(',')) {
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let seconds = || value.and_then(|v| v.parse::<u64>().ok());
        match name.to_ascii_lowercase().as_str() {
            "no-store" | "private" => return Freshness::NoStore,
            "no-cache" => no_cache = true,
            "max-age" => max_age = seconds().or(Some(0)),
            "s-maxage" => s_maxage = seconds().or(Some(0)),
            _ => {}
        }
    }
    if no_cache {
        return Freshness::For(Duration::ZERO);
    }
    match s_maxage.or(max_age) {
        Some(secs) => Freshness::For(Duration::from_secs(secs.saturating_sub(age.unwrap_or(0)))),
        None => Freshness::Default,
    }
}

/// The cache's freshness settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Lifetime of an object without `Cache-Control`.
    pub ttl: Duration,
    /// Longest a copy is served stale while the origin fails.
    pub stale_if_error: Duration,
}

/// What a failed revalidation leaves of a copy (see [`Policy::on_error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StaleIfError {
    /// Served stale until `until`, when the origin is asked again; it has
    /// been stale since `since`.
    Serve { since: Instant, until: Instant },
    /// Stale for `stale_for`, past the bound: dropped.
    Expired { stale_for: Duration },
}

impl Policy {
    /// Whether a response of `freshness` may be kept at all.
    pub fn keeps(freshness: Freshness) -> bool {
        freshness != Freshness::NoStore
    }

    /// How long a response of `freshness` is fresh: its own lifetime
    /// (capped at [`MAX_LIFETIME`]), else the TTL.
    pub fn lifetime(&self, freshness: Freshness) -> Duration {
        match freshness {
            Freshness::For(d) => d.min(MAX_LIFETIME),
            Freshness::Default | Freshness::NoStore => self.ttl,
        }
    }

    /// When a response of `freshness` received at `now` goes stale (`now`
    /// if that instant cannot be represented).
    pub fn fresh_until(&self, now: Instant, freshness: Freshness) -> Instant {
        now.checked_add(self.lifetime(freshness)).unwrap_or(now)
    }

    /// A copy's freshness and validators after a 304 carrying `meta`: what
    /// the 304 says, and the copy's own where it says nothing.
    pub fn revalidated(old: (Freshness, &Validators), meta: &Meta) -> (Freshness, Validators) {
        let freshness = match meta.freshness {
            Freshness::Default => old.0,
            said => said,
        };
        let validators = match meta.validators.any() {
            true => meta.validators.clone(),
            false => old.1.clone(),
        };
        (freshness, validators)
    }

    /// The origin failed at `now` to revalidate a copy that went stale at
    /// `fresh_until` (or, if it is already served stale, at `since`): the
    /// copy is served for [`STALE_RETRY`] more, never past the
    /// stale-if-error bound, or dropped once it is past.
    pub fn on_error(
        &self,
        now: Instant,
        fresh_until: Instant,
        since: Option<Instant>,
    ) -> StaleIfError {
        let since = since.unwrap_or(fresh_until);
        let stale_for = now.saturating_duration_since(since);
        if stale_for > self.stale_if_error {
            return StaleIfError::Expired { stale_for };
        }
        let left = self.stale_if_error.saturating_sub(stale_for);
        let until = now.checked_add(STALE_RETRY.min(left)).unwrap_or(now);
        StaleIfError::Serve { since, until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            ttl: MIN,
            stale_if_error: 10 * MIN,
        }
    }

    fn f(cc: &[&str], age: Option<u64>) -> Freshness {
        freshness(cc.iter().copied(), age)
    }

    #[test]
    fn cache_control() {
        assert_eq!(f(&[], None), Freshness::Default);
        assert_eq!(
            f(&["public, max-age=60"], None),
            Freshness::For(Duration::from_secs(60))
        );
        assert_eq!(
            f(&["max-age=60"], Some(50)),
            Freshness::For(Duration::from_secs(10))
        );
        assert_eq!(f(&["max-age=60"], Some(90)), Freshness::For(Duration::ZERO));
        assert_eq!(
            f(&["max-age=60", "s-maxage=5"], None),
            Freshness::For(Duration::from_secs(5))
        );
        assert_eq!(
            f(&["max-age=\"7\""], None),
            Freshness::For(Duration::from_secs(7))
        );
        assert_eq!(
            f(&["no-cache, max-age=60"], None),
            Freshness::For(Duration::ZERO)
        );
        assert_eq!(f(&["max-age=60, No-Store"], None), Freshness::NoStore);
        assert_eq!(f(&["private"], None), Freshness::NoStore);
        assert_eq!(f(&["max-age=bogus"], None), Freshness::For(Duration::ZERO));
    }

    /// The origin's lifetime wins over the TTL, capped at a year; no
    /// directive (and no-store, served once) is the TTL; an instant past
    /// what `Instant` can hold is `now` (stale at once), never a panic.
    #[test]
    fn lifetimes_and_their_cap() {
        let p = policy();
        let now = Instant::now();
        assert_eq!(p.fresh_until(now, Freshness::Default), now + MIN);
        assert_eq!(p.fresh_until(now, Freshness::NoStore), now + MIN);
        let five = Freshness::For(Duration::from_secs(5));
        assert_eq!(p.fresh_until(now, five), now + Duration::from_secs(5));
        let zero = Freshness::For(Duration::ZERO);
        assert_eq!(p.fresh_until(now, zero), now);
        let forever = Freshness::For(Duration::from_secs(u64::MAX));
        assert_eq!(p.lifetime(forever), MAX_LIFETIME);
        let huge = Policy {
            ttl: Duration::MAX,
            ..p
        };
        assert_eq!(huge.fresh_until(now, Freshness::Default), now);
        assert!(!Policy::keeps(Freshness::NoStore));
        assert!(Policy::keeps(Freshness::Default) && Policy::keeps(zero));
    }

    /// A 304 keeps the copy's lifetime and validators where it says
    /// nothing, and takes its own where it does.
    #[test]
    fn a_304_refreshes_what_it_carries() {
        let old = Validators {
            etag: Some("\"a\"".into()),
            last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".into()),
        };
        let old_life = Freshness::For(Duration::from_secs(30));
        let bare = Meta {
            size: None,
            modified: None,
            validators: Validators::default(),
            freshness: Freshness::Default,
        };
        assert_eq!(
            Policy::revalidated((old_life, &old), &bare),
            (old_life, old.clone())
        );
        let new = Validators {
            etag: Some("\"b\"".into()),
            last_modified: None,
        };
        let said = Meta {
            size: None,
            modified: None,
            validators: new.clone(),
            freshness: Freshness::NoStore,
        };
        assert_eq!(
            Policy::revalidated((old_life, &old), &said),
            (Freshness::NoStore, new)
        );
    }

    /// Stale-if-error: counted from when the copy went stale; each failure
    /// serves it for the retry interval, never past the bound; past the
    /// bound it is dropped.
    #[test]
    fn stale_if_error_is_bounded() {
        let p = policy();
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        // Went stale at 60 s; the origin fails at 61 s.
        assert_eq!(
            p.on_error(at(61), at(60), None),
            StaleIfError::Serve {
                since: at(60),
                until: at(61) + STALE_RETRY
            }
        );
        // Near the bound (10 min after 60 s): served only up to it.
        assert_eq!(
            p.on_error(at(655), at(71), Some(at(60))),
            StaleIfError::Serve {
                since: at(60),
                until: at(660)
            }
        );
        // Exactly at the bound: still served (until now).
        assert_eq!(
            p.on_error(at(660), at(665), Some(at(60))),
            StaleIfError::Serve {
                since: at(60),
                until: at(660)
            }
        );
        // Past it: dropped.
        assert_eq!(
            p.on_error(at(661), at(660), Some(at(60))),
            StaleIfError::Expired {
                stale_for: Duration::from_secs(601)
            }
        );
        // A clock that reads earlier than the copy's staleness (a
        // revalidation of a copy made fresh meanwhile) counts zero.
        assert!(matches!(
            p.on_error(at(10), at(60), None),
            StaleIfError::Serve { .. }
        ));
        // A zero bound: dropped as soon as it has been stale at all.
        let none = Policy {
            stale_if_error: Duration::ZERO,
            ..p
        };
        assert!(matches!(
            none.on_error(at(61), at(60), None),
            StaleIfError::Expired { .. }
        ));
    }
}
