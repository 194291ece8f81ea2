//! File name remapping with tftpd-hpa's rule files (`-m` / `--map-file`,
//! "FILENAME REMAPPING" in its tftpd(8) manual), applied before any handler
//! by the [`Remap`] wrapper.
//!
//! Each non-comment line is `OPERATION REGEX [REPLACEMENT]`, fields split by
//! whitespace (`\ ` is a literal space, `\#` a literal hash; an unescaped
//! `#` starts a comment). Rules run from the top; all of them, unless one
//! ends processing. OPERATION is any combination of:
//!
//! | letter | meaning |
//! |---|---|
//! | `r` | replace the part of the name the regex matched with REPLACEMENT |
//! | `g` | with `r`: repeat the rule until it no longer matches |
//! | `i` | match case-insensitively |
//! | `e` | if the rule matched, stop processing after it |
//! | `s` | if the rule matched, start over from the first rule |
//! | `a` | if the rule matched, refuse the request with ERROR 2 (REPLACEMENT, if given, is the message) |
//! | `G` / `P` | the rule applies to reads (RRQ) / writes (WRQ) only |
//! | `4` / `6` | the rule applies to IPv4 / IPv6 clients only |
//! | `~` | the rule applies when the regex does *not* match (not with `r`) |
//!
//! In REPLACEMENT, `\0` is the whole match, `\1`..`\9` the groups, `\i` the
//! client's IP address (`192.0.2.7`), `\x` the same in hexadecimal
//! (`C0000207`), `\U` / `\L` / `\E` upper-case / lower-case / stop changing
//! case, and a backslash before any other character is that character
//! (`\\`, `\ `, `\#`).
//!
//! The regex is POSIX-extended in tftpd-hpa and Rust's `regex` syntax here,
//! the same for the rules seen in practice (`\\`, `^`, `$`, groups, classes,
//! `[[:alpha:]]`, repetition); it matches bytes, so non-UTF-8 names work.
//! Two differences: alternation picks the first alternative that matches,
//! not the longest, and back-references inside a regex are rejected when the
//! file is read. A file is checked when it is read: a bad operation letter
//! or regex is an error naming the line. A rule set that loops (`s` rules
//! that keep matching, a `g` rule whose replacement matches again) stops
//! after [`MAX_STEPS`] steps and refuses the request, as does a name that
//! grows past [`MAX_NAME`] bytes.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use regex::bytes::{Captures, Regex, RegexBuilder};
use tftp_proto::failure::Failure;
use tftp_proto::options::Direction;
use tftp_proto::server::{Request, TftpError};

use crate::blocking::{self, StdSink, StdSource};
use crate::handler::{Handler, ReadResponse, WriteResponse};

/// Most rule applications for one name (tftpd-hpa's `DEADMAN_MAX_STEPS`).
pub const MAX_STEPS: usize = 1024;
/// Longest name a rewrite may produce, in bytes.
pub const MAX_NAME: usize = 4096;
/// The ERROR 2 text of a rule set that looped or grew the name too long.
pub const REMAP_FAILURE: &str = Failure::RemapFailure.message();

/// A parsed rule file.
#[derive(Clone, Debug, Default)]
pub struct RemapRules {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    line: usize,
    regex: Regex,
    replacement: Vec<u8>,
    rewrite: bool,
    global: bool,
    exit: bool,
    restart: bool,
    abort: bool,
    inverse: bool,
    direction: Option<Direction>,
    family: Option<Family>,
}

/// The letters of an operation.
#[derive(Default)]
struct Flags {
    rewrite: bool,
    global: bool,
    exit: bool,
    restart: bool,
    abort: bool,
    icase: bool,
    inverse: bool,
    direction: Option<Direction>,
    family: Option<Family>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// A rule file that cannot be used: the line (from 1) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemapError {
    /// The line, counted from 1 (0 when the file could not be read).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RemapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for RemapError {}

impl RemapRules {
    /// Reads and checks a rule file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RemapError> {
        let text = std::fs::read(path.as_ref()).map_err(|e| RemapError {
            line: 0,
            message: format!("cannot read {}: {e}", path.as_ref().display()),
        })?;
        Self::parse(&text)
    }

    /// Parses and checks the text of a rule file.
    pub fn parse(text: &[u8]) -> Result<Self, RemapError> {
        let mut rules = Vec::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = index + 1;
            let error = |message: String| RemapError {
                line: line_no,
                message,
            };
            let mut rest = line;
            let Some(op) = token(&mut rest) else { continue };
            let regex =
                token(&mut rest).ok_or_else(|| error("no regex after the operation".into()))?;
            let replacement = token(&mut rest).unwrap_or_default();
            let mut flags = Flags::default();
            for &c in op {
                match c {
                    b'r' => flags.rewrite = true,
                    b'g' => flags.global = true,
                    b'e' => flags.exit = true,
                    b's' => flags.restart = true,
                    b'a' => flags.abort = true,
                    b'i' => flags.icase = true,
                    b'~' => flags.inverse = true,
                    b'G' => flags.direction = Some(Direction::Read),
                    b'P' => flags.direction = Some(Direction::Write),
                    b'4' => flags.family = Some(Family::V4),
                    b'6' => flags.family = Some(Family::V6),
                    other => {
                        return Err(error(format!(
                            "invalid operation {:?} in {:?}",
                            char::from(other),
                            String::from_utf8_lossy(op)
                        )))
                    }
                }
            }
            if flags.rewrite && flags.inverse {
                return Err(error("an r rule cannot be inverted with ~".into()));
            }
            let pattern = std::str::from_utf8(&unescape_regex(regex))
                .map_err(|_| error("the regex is not UTF-8".into()))?
                .to_owned();
            let regex = RegexBuilder::new(&pattern)
                .case_insensitive(flags.icase)
                // POSIX regcomp without REG_NEWLINE: `.` matches a newline.
                .dot_matches_new_line(true)
                .unicode(false)
                .build()
                .map_err(|e| error(format!("bad regex {pattern:?}: {e}")))?;
            let rule = Rule {
                line: line_no,
                regex,
                replacement: replacement.to_vec(),
                rewrite: flags.rewrite,
                global: flags.global && flags.rewrite,
                exit: flags.exit,
                restart: flags.restart,
                abort: flags.abort,
                inverse: flags.inverse,
                direction: flags.direction,
                family: flags.family,
            };
            rules.push(rule);
        }
        Ok(RemapRules { rules })
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (every name stays as it is).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rewrites `name` for a request in `direction` from `client`: the new
    /// name, or the ERROR 2 an `a` rule (or a runaway rule set) answers.
    pub fn apply(
        &self,
        name: &[u8],
        direction: Direction,
        client: IpAddr,
    ) -> Result<Vec<u8>, TftpError> {
        let client = client.to_canonical();
        let family = if client.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let failure = || TftpError::from(Failure::RemapFailure);
        let mut current = name.to_vec();
        let mut steps = 0usize;
        let mut index = 0usize;
        while let Some(rule) = self.rules.get(index) {
            index += 1;
            if rule.direction.is_some_and(|d| d != direction)
                || rule.family.is_some_and(|f| f != family)
            {
                continue;
            }
            let mut matched = false;
            loop {
                steps += 1;
                if steps > MAX_STEPS {
                    tracing::warn!(
                        input = %String::from_utf8_lossy(name).escape_debug(),
                        line = rule.line,
                        "remap rules did not terminate"
                    );
                    return Err(failure());
                }
                let captures = rule.regex.captures(&current);
                if captures.is_some() == rule.inverse {
                    break;
                }
                matched = true;
                let captures = captures.filter(|_| !rule.inverse);
                if rule.abort {
                    if rule.replacement.is_empty() {
                        return Err(TftpError::from(Failure::AccessViolation));
                    }
                    let message = expand(&rule.replacement, captures.as_ref(), client);
                    return Err(TftpError::access_violation(
                        String::from_utf8_lossy(&message).into_owned(),
                    ));
                }
                if rule.rewrite {
                    if let Some(c) = &captures {
                        current = rewrite(&current, c, &rule.replacement, client);
                        if current.len() > MAX_NAME {
                            return Err(failure());
                        }
                    }
                }
                if !rule.global {
                    break;
                }
            }
            if matched {
                if rule.exit {
                    break;
                }
                if rule.restart {
                    index = 0;
                }
            }
        }
        Ok(current)
    }
}

/// The next whitespace-separated field of a line (tftpd-hpa's
/// `readescstring`): backslashes are kept, but a backslash makes the next
/// whitespace or `#` part of the field; an unescaped `#` ends the line.
fn token<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let line = *rest;
    let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
    let mut escaped = false;
    let mut end = line.len();
    for (i, &b) in line.iter().enumerate().skip(start) {
        if !escaped && (b.is_ascii_whitespace() || b == b'#') {
            end = i;
            break;
        }
        escaped = !escaped && b == b'\\';
    }
    let field = line.get(start..end)?;
    // A `#` right here ends the line: nothing more is read from it.
    *rest = match line.get(end) {
        Some(b'#') | None => &[],
        Some(_) => line.get(end..).unwrap_or_default(),
    };
    (!field.is_empty()).then_some(field)
}

/// A rule file's regex in `regex` syntax: `\` before whitespace or `#` (a
/// field-splitting escape) becomes the plain character.
fn unescape_regex(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match (b, bytes.peek().copied()) {
            (b'\\', Some(next)) if next.is_ascii_whitespace() || next == b'#' => {
                out.push(next);
                bytes.next();
            }
            (b'\\', Some(next)) => {
                out.push(b'\\');
                out.push(next);
                bytes.next();
            }
            _ => out.push(b),
        }
    }
    out
}

/// `current` with its match replaced by the expanded replacement.
fn rewrite(current: &[u8], captures: &Captures<'_>, replacement: &[u8], client: IpAddr) -> Vec<u8> {
    let whole = captures.get(0).map_or(0..0, |m| m.range());
    let mut out = current.get(..whole.start).unwrap_or_default().to_vec();
    out.extend(expand(replacement, Some(captures), client));
    out.extend_from_slice(current.get(whole.end..).unwrap_or_default());
    out
}

/// The replacement with its escapes expanded (tftpd-hpa's `genmatchstring`).
fn expand(replacement: &[u8], captures: Option<&Captures<'_>>, client: IpAddr) -> Vec<u8> {
    #[derive(Clone, Copy)]
    enum Case {
        Keep,
        Upper,
        Lower,
    }
    let mut case = Case::Keep;
    let mut out = Vec::new();
    let push = |out: &mut Vec<u8>, case: Case, bytes: &[u8]| {
        out.extend(bytes.iter().map(|&b| match case {
            Case::Keep => b,
            Case::Upper => b.to_ascii_uppercase(),
            Case::Lower => b.to_ascii_lowercase(),
        }))
    };
    let mut bytes = replacement.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            push(&mut out, case, &[b]);
            continue;
        }
        let Some(escape) = bytes.next() else {
            push(&mut out, case, b"\\");
            break;
        };
        match escape {
            b'0'..=b'9' => {
                let group = usize::from(escape - b'0');
                if let Some(m) = captures.and_then(|c| c.get(group)) {
                    push(&mut out, case, m.as_bytes());
                }
            }
            b'U' => case = Case::Upper,
            b'L' => case = Case::Lower,
            b'E' => case = Case::Keep,
            b'i' => push(&mut out, case, client.to_string().as_bytes()),
            b'x' => push(&mut out, case, hex_ip(client).as_bytes()),
            other => push(&mut out, case, &[other]),
        }
    }
    out
}

/// The address in upper-case hexadecimal, as PXELINUX names its config
/// files (`C0000207` for 192.0.2.7).
fn hex_ip(ip: IpAddr) -> String {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A handler behind remap rules: each request's file name is rewritten by
/// the rules before `H` sees it, or refused by them with ERROR 2. Works with
/// any handler, async or blocking (and tokio's, through tftp-tokio).
///
/// ```
/// use tftp_io::remap::{Remap, RemapRules};
/// use tftp_io::DirHandler;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Windows and WDS clients send backslashes.
/// let rules = RemapRules::parse(br"rg \\ /")?;
/// let handler = Remap::new(rules, DirHandler::new(".")?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Remap<H> {
    rules: RulesHandle,
    inner: H,
}

/// The rules a [`Remap`] applies, replaceable while it serves (tftpd's
/// SIGHUP): each request is rewritten by the rules current when it
/// arrives; running transfers are not affected. Clones share the rules.
#[derive(Clone, Debug)]
pub struct RulesHandle(Arc<RwLock<Arc<RemapRules>>>);

impl RulesHandle {
    /// The rules now.
    pub fn current(&self) -> Arc<RemapRules> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the rules, for the requests from now on.
    pub fn replace(&self, rules: impl Into<Arc<RemapRules>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = rules.into();
    }
}

impl<H> Remap<H> {
    /// `inner` behind `rules`.
    pub fn new(rules: impl Into<Arc<RemapRules>>, inner: H) -> Self {
        Remap {
            rules: RulesHandle(Arc::new(RwLock::new(rules.into()))),
            inner,
        }
    }

    /// The rules, to replace them while the handler serves.
    pub fn rules(&self) -> &RulesHandle {
        &self.rules
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The request as the wrapped handler sees it: its name rewritten.
    pub fn remapped(&self, request: &Request) -> Result<Request, TftpError> {
        let rules = self.rules.current();
        let name = rules.apply(request.filename(), request.direction(), request.peer().ip())?;
        if name != request.filename() {
            tracing::debug!(
                from = %request.filename_lossy().escape_debug(),
                to = %String::from_utf8_lossy(&name).escape_debug(),
                "remapped"
            );
        }
        let mut remapped = request.clone();
        remapped.filename = name;
        Ok(remapped)
    }
}

impl<H: Handler> Handler for Remap<H> {
    async fn read(&self, request: &Request) -> Result<ReadResponse, TftpError> {
        self.inner.read(&self.remapped(request)?).await
    }

    async fn write(&self, request: &Request) -> Result<WriteResponse, TftpError> {
        self.inner.write(&self.remapped(request)?).await
    }
}

impl<H: blocking::Handler> blocking::Handler for Remap<H> {
    fn read(&self, request: &Request) -> Result<ReadResponse<StdSource>, TftpError> {
        self.inner.read(&self.remapped(request)?)
    }

    fn write(&self, request: &Request) -> Result<WriteResponse<StdSink>, TftpError> {
        self.inner.write(&self.remapped(request)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

    fn map(rules: &str, name: &str) -> Result<String, TftpError> {
        map_as(rules, name, Direction::Read, V4)
    }

    fn map_as(rules: &str, name: &str, d: Direction, ip: IpAddr) -> Result<String, TftpError> {
        let rules = RemapRules::parse(rules.as_bytes()).unwrap();
        rules
            .apply(name.as_bytes(), d, ip)
            .map(|n| String::from_utf8(n).unwrap())
    }

    /// Replaced rules apply to the requests from then on, in every clone.
    #[test]
    fn rules_replaced_while_serving() {
        let remap = Remap::new(RemapRules::parse(b"r ^a b").unwrap(), ());
        let clone = remap.clone();
        let request = |name: &str| {
            let mut rrq = vec![0, 1];
            rrq.extend_from_slice(name.as_bytes());
            rrq.extend_from_slice(b"\0octet\0");
            let peer = std::net::SocketAddr::new(V4, 1000);
            tftp_proto::server::accept(&rrq, peer, &Default::default()).unwrap()
        };
        let name = |r: &Remap<()>| r.remapped(&request("ax")).unwrap().filename;
        assert_eq!(name(&remap), b"bx");
        remap.rules().replace(RemapRules::parse(b"r ^a c").unwrap());
        assert_eq!(name(&remap), b"cx");
        assert_eq!(name(&clone), b"cx", "clones share the rules");
        assert_eq!(clone.rules().current().len(), 1);
    }

    #[test]
    fn backslashes_to_slashes() {
        // The rule every WDS / Windows deployment has.
        let rules = r"rg \\ /";
        assert_eq!(
            map(rules, r"boot\x64\wdsnbp.com").unwrap(),
            "boot/x64/wdsnbp.com"
        );
        assert_eq!(map(rules, "plain").unwrap(), "plain");
    }

    #[test]
    fn replacement_is_only_the_matched_part() {
        assert_eq!(map("r ^/tftpboot/ ''", "/tftpboot/a/b").unwrap(), "''a/b");
        assert_eq!(map("r ^/tftpboot/", "/tftpboot/a/b").unwrap(), "a/b");
        assert_eq!(
            map(r"r ^(pxelinux)\.0$ \1.new", "pxelinux.0").unwrap(),
            "pxelinux.new"
        );
        assert_eq!(map(r"r a(b)c [\0][\1]", "xabcx").unwrap(), "x[abc][b]x");
        // Without g, only the first match.
        assert_eq!(map("r a b", "aaa").unwrap(), "baa");
    }

    #[test]
    fn escapes_in_replacements() {
        assert_eq!(map(r"r ^ \i/", "f").unwrap(), "192.0.2.7/f");
        assert_eq!(map(r"r ^.*$ \x", "f").unwrap(), "C0000207");
        assert_eq!(map(r"r ^(.*)$ \U\1\E-\L\1", "AbC").unwrap(), "ABC-abc");
        // dnsmasq's tftp-lowercase.
        assert_eq!(
            map(r"r ^.*$ \L\0", "PXELinux.CFG/Default").unwrap(),
            "pxelinux.cfg/default"
        );
        assert_eq!(map(r"r x a\\b\ c\#d", "x").unwrap(), r"a\b c#d");
        assert_eq!(
            map_as(r"r ^ \i-\x-", "f", Direction::Read, V6).unwrap(),
            "::1-00000000000000000000000000000001-f"
        );
    }

    #[test]
    fn flags() {
        // i: case-insensitive.
        assert_eq!(map("ri ^PXE pxe", "PxElinux").unwrap(), "pxelinux");
        assert_eq!(map("r ^PXE pxe", "PxElinux").unwrap(), "PxElinux");
        // e: stop after a match; rules after it do not run.
        assert_eq!(map("re ^a b\nr b c", "a").unwrap(), "b");
        assert_eq!(map("re ^z b\nr a c", "a").unwrap(), "c");
        // s: start over from the first rule.
        assert_eq!(map("r ^b c\nrs ^a b", "a").unwrap(), "c");
        // G / P: reads or writes only.
        let rules = "rG ^ get/\nrP ^ put/";
        assert_eq!(map_as(rules, "f", Direction::Read, V4).unwrap(), "get/f");
        assert_eq!(map_as(rules, "f", Direction::Write, V4).unwrap(), "put/f");
        // 4 / 6: address family.
        let rules = "r4 ^ v4/\nr6 ^ v6/";
        assert_eq!(map_as(rules, "f", Direction::Read, V4).unwrap(), "v4/f");
        assert_eq!(map_as(rules, "f", Direction::Read, V6).unwrap(), "v6/f");
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(map_as(rules, "f", Direction::Read, mapped).unwrap(), "v4/f");
    }

    #[test]
    fn refusals() {
        let e = map(r"a \.\. ", "a/../b").unwrap_err();
        assert_eq!(e.code, tftp_proto::packet::ErrorCode::AccessViolation);
        assert_eq!(e.message, "Access violation");
        let e = map(r"a ^secret/ No\ secrets\ for\ \i", "secret/x").unwrap_err();
        assert_eq!(e.message, "No secrets for 192.0.2.7");
        // ~: refuse everything not under boot/.
        let rules = "a~ ^boot/";
        assert!(map(rules, "etc/x").is_err());
        assert_eq!(map(rules, "boot/x").unwrap(), "boot/x");
        // PUT-only refusal.
        let rules = "aP .";
        assert!(map_as(rules, "f", Direction::Write, V4).is_err());
        assert!(map_as(rules, "f", Direction::Read, V4).is_ok());
    }

    #[test]
    fn comments_and_blank_lines() {
        let rules = "# a comment\n\n   \nr a b # trailing comment\nr \\# hash\n";
        assert_eq!(map(rules, "a#").unwrap(), "bhash");
        assert_eq!(RemapRules::parse(rules.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn runaway_rules_are_stopped() {
        for rules in ["rg a a", "rs a a", "rg ^ x"] {
            let e = map(rules, "a").unwrap_err();
            assert_eq!(e.message, REMAP_FAILURE, "{rules}");
        }
        // A global rule that terminates.
        assert_eq!(map("rg a b", "aaa").unwrap(), "bbb");
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, line) in [
            ("r a b\nr (unclosed x", 2),
            ("# ok\n\nq a b", 3),
            ("r~ a b", 1),
            ("r", 1),
            (r"r (a)\1 b", 1),
        ] {
            let e = RemapRules::parse(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn dot_matches_a_newline_as_in_posix() {
        assert_eq!(map(r"rP ^(.*/)?([^/]*)$ in/\2", "x").unwrap(), "x");
        assert_eq!(
            map_as(r"rP ^(.*/)?([^/]*)$ in/\2", "a\nb/c", Direction::Write, V4).unwrap(),
            "in/c"
        );
    }

    #[test]
    fn non_utf8_names() {
        let rules = RemapRules::parse(br"rg \\ /").unwrap();
        assert_eq!(
            rules.apply(b"a\\\xff", Direction::Read, V4).unwrap(),
            b"a/\xff"
        );
    }
}
