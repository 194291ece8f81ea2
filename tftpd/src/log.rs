//! What tftpd logs: the logger's set-up, the "listening" lines, and one
//! line per finished session (target `tftpd::session`) with its outcome in
//! one word.

use std::net::SocketAddr;
use std::path::Path;

use tftp_proto::stats::{Outcome, Stats};
use tftp_tokio::escape_controls;
use tftp_tokio::http::{HttpOutcome, HttpStats};

use crate::cli::LogFormat;

/// Logs to standard error at the level `-v` asks for (info, debug, trace),
/// unless `RUST_LOG` says otherwise, as text or JSON lines.
pub fn init(verbose: u8, format: LogFormat) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// One "listening" line per distinct listening address, with its number of
/// sockets, what it serves (`root`: the directory, or `-` for none) and
/// whether it accepts uploads.
pub fn listening(addrs: &[SocketAddr], root: Option<&Path>, origin: Option<&str>, write: bool) {
    for (addr, sockets) in group_addrs(addrs) {
        let root = root.map_or_else(|| "-".to_owned(), |r| r.display().to_string());
        let origin = origin.map(tftp_origin::redact);
        tracing::info!(%addr, sockets, root, origin = origin.as_deref(), write, "listening");
    }
}

/// Each distinct listening address with its number of sockets (workers),
/// in order of first appearance.
fn group_addrs(addrs: &[SocketAddr]) -> Vec<(SocketAddr, usize)> {
    let mut groups: Vec<(SocketAddr, usize)> = Vec::new();
    for addr in addrs {
        match groups.iter_mut().find(|(a, _)| a == addr) {
            Some((_, n)) => *n += 1,
            None => groups.push((*addr, 1)),
        }
    }
    groups
}

/// One structured line per finished session. Peer-supplied fields (file
/// name, options, the peer's ERROR text) have their control characters
/// escaped when `escape` is set (the text format), so they cannot forge a
/// line or reach a terminal as escape sequences.
pub fn session(s: &Stats, escape: bool) {
    let clean = |text: String| -> String {
        if escape {
            escape_controls(&text).into_owned()
        } else {
            text
        }
    };
    let options: Vec<String> = s
        .requested_options()
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                String::from_utf8_lossy(o.name),
                String::from_utf8_lossy(o.value)
            )
        })
        .collect();
    let options = clean(options.join(","));
    let negotiated: Vec<String> = s
        .options_negotiated
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let (error_code, error_message) = match &s.error {
        Some(e) => (
            Some(e.code.as_u16()),
            clean(String::from_utf8_lossy(&e.message).into_owned()),
        ),
        None => (None, String::new()),
    };
    let file = clean(s.filename_lossy());
    // Rounded to whole milliseconds.
    let duration_ms = s
        .finished
        .map(|f| (f - s.started).as_micros().saturating_add(500) / 1000)
        .unwrap_or(0);
    tracing::info!(
        target: "tftpd::session",
        protocol = "tftp",
        peer = %s.peer,
        local = %s.local.map(|l| l.to_string()).unwrap_or_default(),
        file = %file,
        direction = ?s.direction,
        mode = %s.mode,
        options_requested = %options,
        options_negotiated = %negotiated.join(","),
        outcome = %outcome_word(s),
        verified = s.verified,
        bytes_sent = s.bytes_sent,
        bytes_received = s.bytes_received,
        blocks_sent = s.blocks_sent,
        blocks_received = s.blocks_received,
        retransmits = s.retransmits,
        duplicate_acks = s.duplicate_acks,
        duplicate_data = s.duplicate_data,
        timeouts = s.timeouts,
        error_code,
        error_message = %error_message,
        duration_ms,
        "session"
    );
}

/// A session's outcome in one word: `completed`, `options_refused` (the
/// client declined the OACK, e.g. a UEFI tsize probe), `peer_error`,
/// `refused` (this server answered the request with an ERROR: no OACK, no
/// data), `failed` (it ended a started transfer with an ERROR), `timed_out`
/// or `evicted` (an unverified session that gave its place to a newer
/// request, or a single-port session whose client sent a new request from
/// the same port).
/// The line of a finished HTTP request (`--http`): the session line's
/// fields that apply, with `protocol=http`, the status and the range.
pub fn http(s: &HttpStats, escape: bool) {
    let clean = |text: String| -> String {
        if escape {
            escape_controls(&text).into_owned()
        } else {
            text
        }
    };
    let outcome = match s.outcome {
        HttpOutcome::Completed => "completed",
        HttpOutcome::Refused => "refused",
        _ => "aborted",
    };
    let range = s
        .range
        .map(|(first, last)| format!("{first}-{last}"))
        .unwrap_or_default();
    let duration_ms = s.duration.as_micros().saturating_add(500) / 1000;
    tracing::info!(
        target: "tftpd::session",
        protocol = "http",
        peer = %s.peer,
        local = %s.local.map(|l| l.to_string()).unwrap_or_default(),
        file = %clean(s.path_lossy().into_owned()),
        method = %s.method,
        status = s.status,
        range = %range,
        size = s.size,
        outcome = %outcome,
        verified = true,
        bytes_sent = s.bytes_sent,
        error_message = %clean(s.error.clone().unwrap_or_default()),
        duration_ms,
        "session"
    );
}

fn outcome_word(s: &Stats) -> &'static str {
    match s.outcome {
        Some(Outcome::Completed) => "completed",
        Some(Outcome::OptionsRefused) => "options_refused",
        Some(Outcome::PeerError(_)) => "peer_error",
        Some(Outcome::Refused { .. }) => "refused",
        Some(Outcome::LocalError(_)) => "failed",
        Some(Outcome::TimedOut) => "timed_out",
        Some(Outcome::Evicted) => "evicted",
        None => "unfinished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_grouped_in_order() {
        let a: SocketAddr = "127.0.0.1:6969".parse().unwrap();
        let b: SocketAddr = "[::1]:6969".parse().unwrap();
        assert_eq!(group_addrs(&[a, a, b, a, b]), [(a, 3), (b, 2)]);
        assert!(group_addrs(&[]).is_empty());
    }
}
