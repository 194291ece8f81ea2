//! The origin URL template: `{path}`, `{client_ip}` and `{local_ip}` filled
//! in per request, after the URL's scheme and authority only, so a client
//! chooses at most a path below the template's prefix, never a host.

use std::fmt;
use std::net::IpAddr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tftp_tokio::{RequestInfo, TftpError};

/// Bytes kept as they are in a path segment or value: RFC 3986's unreserved
/// characters. Everything else, `%` included, is percent-encoded, so no
/// requested name can form a `..` or `%2e%2e` segment for the URL parser
/// or the origin to resolve.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A URL scheme an origin can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
    /// `s3://bucket/…` (Amazon S3 or an S3-compatible store).
    S3,
    /// `gs://bucket/…` (Google Cloud Storage).
    Gs,
    /// `az://container/…` (Azure Blob Storage).
    Az,
    /// `file:///dir/…` (a local directory).
    File,
}

impl Scheme {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "s3" => Scheme::S3,
            "gs" => Scheme::Gs,
            "az" => Scheme::Az,
            "file" => Scheme::File,
            _ => return None,
        })
    }

    /// HTTP(S), not an object store.
    pub fn is_http(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Path,
    ClientIp,
    LocalIp,
}

/// Why a template is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// A parsed origin URL template, e.g. `http://repo/boot/{path}` or
/// `http://prov/api/tftp?file={path}&ip={client_ip}`. Its `Debug` form is
/// [`redact`]ed.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    scheme: Scheme,
    /// `scheme://authority`, without a trailing slash.
    base: String,
    /// Everything after the base, split at the placeholders.
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.base.clone();
        for part in &self.parts {
            text.push_str(match part {
                Part::Literal(s) => s,
                Part::Path => "{path}",
                Part::ClientIp => "{client_ip}",
                Part::LocalIp => "{local_ip}",
            });
        }
        f.debug_tuple("Template").field(&redact(&text)).finish()
    }
}

impl Template {
    /// Parses a template. The scheme must be one of [`Scheme`]'s, the
    /// placeholders `{path}`, `{client_ip}` or `{local_ip}`, and none may
    /// stand in the scheme or authority (host, port, bucket).
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        // The message is printed and logged: no credentials nor query.
        let err = |m: &str| TemplateError(format!("origin template {:?}: {m}", redact(template)));
        let (scheme, rest) = template
            .split_once("://")
            .ok_or_else(|| err("no scheme (http://, https://, s3://, gs://, az://, file://)"))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| err("unsupported scheme"))?;
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if authority.contains(['{', '}']) {
            return Err(err(
                "placeholders may stand only after the host (or bucket)",
            ));
        }
        match scheme {
            Scheme::File if !authority.is_empty() && authority != "localhost" => {
                return Err(err("file:// takes no host: file:///dir/{path}"))
            }
            Scheme::File => {}
            _ if authority.is_empty() => return Err(err("no host (or bucket)")),
            _ => {}
        }
        let base = format!(
            "{}://{}",
            &template[..template.find("://").unwrap_or(0)],
            authority
        );
        let mut parts = Vec::new();
        let mut rest = &rest[authority_end..];
        while !rest.is_empty() {
            match rest.find('{') {
                Some(open) => {
                    let close = rest[open..].find('}').ok_or_else(|| err("unclosed {"))? + open;
                    if open > 0 {
                        parts.push(Part::Literal(rest[..open].to_owned()));
                    }
                    parts.push(match &rest[open + 1..close] {
                        "path" => Part::Path,
                        "client_ip" => Part::ClientIp,
                        "local_ip" => Part::LocalIp,
                        other => return Err(err(&format!("unknown placeholder {{{other}}}"))),
                    });
                    rest = &rest[close + 1..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        let literal = parts.iter().filter_map(|p| match p {
            Part::Literal(s) => Some(s.as_str()),
            _ => None,
        });
        if literal.clone().any(|s| s.contains('}')) {
            return Err(err("stray }"));
        }
        if !scheme.is_http() && literal.clone().any(|s| s.contains(['?', '#'])) {
            return Err(err("an object store URL has no query"));
        }
        if !parts.contains(&Part::Path) {
            return Err(err("no {path}: every request would get the same object"));
        }
        Ok(Template {
            scheme,
            base,
            parts,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `scheme://authority` (the part no request can change).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The text between the base and the first placeholder (the part of
    /// every URL no request changes), e.g. `/srv/boot/` of
    /// `file:///srv/boot/{path}`.
    pub(crate) fn fixed_path(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(s)) => s,
            _ => "",
        }
    }

    /// Whether the template names the client or local address, so each
    /// machine gets its own URL.
    pub fn per_client(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::ClientIp | Part::LocalIp))
    }

    /// The URL for a request, or the TFTP error to answer: ERROR 2 for a
    /// name that would leave the template's prefix (`..`), ERROR 1 for an
    /// empty one.
    pub fn render(&self, request: &RequestInfo) -> Result<String, TftpError> {
        let path = normalise(request.filename())?;
        let local = request.local().map(|a| a.ip());
        self.render_with(&path, request.peer().ip(), local)
    }

    /// [`render`](Self::render) from the parts of a request: `path` as
    /// [`normalise`] returned it.
    pub fn render_with(
        &self,
        path: &str,
        client: IpAddr,
        local: Option<IpAddr>,
    ) -> Result<String, TftpError> {
        let mut url = self.base.clone();
        for part in &self.parts {
            match part {
                Part::Literal(s) => url.push_str(s),
                Part::Path => url.push_str(path),
                Part::ClientIp => push_ip(&mut url, client),
                Part::LocalIp => push_ip(
                    &mut url,
                    local.ok_or_else(|| {
                        TftpError::new(
                            tftp_tokio::tftp_proto::packet::ErrorCode::NotDefined,
                            "Local address unknown",
                        )
                    })?,
                ),
            }
        }
        Ok(url)
    }
}

fn push_ip(url: &mut String, ip: IpAddr) {
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    let ip = ip.to_canonical().to_string();
    url.extend(utf8_percent_encode(&ip, SEGMENT));
}

/// `url` (a rendered URL or a template) for a log line or an error message:
/// credentials in its authority (`https://user:secret@repo/…`) replaced by
/// `***`, and its query, which may carry a token or signature
/// (`?X-Amz-Signature=…`, `?token=…`), by `?***`. The authority ends at the
/// first `/` after the scheme, as [`Template::parse`] reads it; the query
/// starts at the first `?` after the credentials, if any (so a `?` in a
/// password hides no less; a requested name cannot add one: [`normalise`]
/// percent-encodes `?`).
pub fn redact(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let userinfo = url[start..end].rfind('@').map(|at| start + at);
    let after = userinfo.unwrap_or(start);
    let query = url[after..].find('?').map(|q| after + q);
    if userinfo.is_none() && query.is_none() {
        return url.into();
    }
    let mut out = String::with_capacity(url.len());
    match userinfo {
        Some(at) => {
            out.push_str(&url[..start]);
            out.push_str("***");
            out.push_str(&url[at..query.unwrap_or(url.len())]);
        }
        None => out.push_str(&url[..query.unwrap_or(url.len())]),
    }
    if query.is_some() {
        out.push_str("?***");
    }
    out.into()
}

/// A requested file name as a relative, percent-encoded URL path: `\` read
/// as `/` (Windows boot loaders), leading `/`, empty and `.` segments
/// dropped, each segment percent-encoded. A `..` segment or a control
/// character is ERROR 2; a name with no segment left is ERROR 1.
pub fn normalise(filename: &[u8]) -> Result<String, TftpError> {
    if filename.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(TftpError::access_violation("Bad file name"));
    }
    let mut path = String::with_capacity(filename.len() + 8);
    for segment in filename.split(|&b| b == b'/' || b == b'\\') {
        match segment {
            b"" | b"." => continue,
            b".." => return Err(TftpError::access_violation("Path outside the origin")),
            _ => {}
        }
        if !path.is_empty() {
            path.push('/');
        }
        path.extend(percent_encoding::percent_encode(segment, SEGMENT));
    }
    if path.is_empty() {
        return Err(TftpError::not_found());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, name: &[u8]) -> Result<String, TftpError> {
        let path = normalise(name)?;
        Template::parse(t).unwrap().render_with(
            &path,
            "192.0.2.7".parse().unwrap(),
            Some("198.51.100.1".parse().unwrap()),
        )
    }

    #[test]
    fn paths_stay_under_the_prefix() {
        let t = "http://repo:8080/boot/{path}";
        assert_eq!(
            render(t, b"pxelinux.0").unwrap(),
            "http://repo:8080/boot/pxelinux.0"
        );
        assert_eq!(render(t, b"/a//./b").unwrap(), "http://repo:8080/boot/a/b");
        assert_eq!(
            render(t, b"a\\b.efi").unwrap(),
            "http://repo:8080/boot/a/b.efi"
        );
        assert_eq!(
            render(t, b"%2e%2e/x").unwrap(),
            "http://repo:8080/boot/%252e%252e/x"
        );
        assert_eq!(render(t, b"...").unwrap(), "http://repo:8080/boot/...");
        assert_eq!(
            render(t, b"a b?c#d").unwrap(),
            "http://repo:8080/boot/a%20b%3Fc%23d"
        );
        assert_eq!(render(t, b"\xff").unwrap(), "http://repo:8080/boot/%FF");
        for bad in [
            &b"../etc/passwd"[..],
            b"a/../../b",
            b"..\\x",
            b"a/..",
            b"a\nb",
        ] {
            let e = render(t, bad).unwrap_err();
            assert_eq!(e.code.as_u16(), 2, "{bad:?}");
        }
        assert_eq!(render(t, b"/").unwrap_err().code.as_u16(), 1);
        assert_eq!(render(t, b"").unwrap_err().code.as_u16(), 1);
    }

    #[test]
    fn addresses_and_queries() {
        let t = "http://prov/api/tftp?file={path}&ip={client_ip}&on={local_ip}";
        assert_eq!(
            render(t, b"grub/grub.cfg").unwrap(),
            "http://prov/api/tftp?file=grub/grub.cfg&ip=192.0.2.7&on=198.51.100.1"
        );
        let v6 = Template::parse("http://p/{client_ip}/{path}").unwrap();
        let url = v6
            .render_with("f", "2001:db8::7".parse().unwrap(), None)
            .unwrap();
        assert_eq!(url, "http://p/2001%3Adb8%3A%3A7/f");
        let mapped = v6
            .render_with("f", "::ffff:192.0.2.9".parse().unwrap(), None)
            .unwrap();
        assert_eq!(mapped, "http://p/192.0.2.9/f");
        let local = Template::parse("http://p/{local_ip}/{path}").unwrap();
        assert!(local.per_client());
        assert!(local
            .render_with("f", "192.0.2.1".parse().unwrap(), None)
            .is_err());
    }

    #[test]
    fn credentials_are_not_logged() {
        assert_eq!(
            redact("https://u:pw@repo/a@b/{path}"),
            "https://***@repo/a@b/{path}"
        );
        assert_eq!(redact("http://repo/boot/x@y"), "http://repo/boot/x@y");
        assert_eq!(redact("s3://bucket/k"), "s3://bucket/k");
        assert!(matches!(
            redact("http://repo/boot/f"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn queries_are_not_logged() {
        // A template and a URL rendered from it.
        assert_eq!(
            redact("http://prov/api/tftp?token=s3cret&file={path}"),
            "http://prov/api/tftp?***"
        );
        assert_eq!(
            redact("http://prov/api/tftp?token=s3cret&file=grub/grub.cfg"),
            "http://prov/api/tftp?***"
        );
        // Both at once; a fragment is part of what is hidden.
        assert_eq!(
            redact("https://u:pw@repo/b/{path}?sig=abc#frag"),
            "https://***@repo/b/{path}?***"
        );
        // An empty query, and `?` or `@` inside the query.
        assert_eq!(redact("http://repo/f?"), "http://repo/f?***");
        assert_eq!(redact("http://repo/f?a=1?b=x@y/z"), "http://repo/f?***");
        // A `?` in a password, or a query right after the host.
        assert_eq!(redact("https://u:p?w@repo/f"), "https://***@repo/f");
        assert_eq!(redact("http://repo?token=1"), "http://repo?***");
        // Not a URL: its query is hidden all the same.
        assert_eq!(redact("repo/f?key=1"), "repo/f?***");
        // A percent-encoded `?` (from a requested name) is no query.
        assert_eq!(redact("http://repo/a%3Fb"), "http://repo/a%3Fb");
    }

    #[test]
    fn errors_and_debug_hide_secrets() {
        for bad in [
            "http://repo/static?token=s3cret",
            "http://u:s3cret@repo/static",
            "http://repo?token=s3cret",
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("***"), "{e}");
        }
        let t =
            Template::parse("https://u:s3cret@repo/b/{path}?sig=s3cret&ip={client_ip}").unwrap();
        assert_eq!(
            format!("{t:?}"),
            r#"Template("https://***@repo/b/{path}?***")"#
        );
        let plain = Template::parse("http://repo/{client_ip}/{path}").unwrap();
        assert_eq!(
            format!("{plain:?}"),
            r#"Template("http://repo/{client_ip}/{path}")"#
        );
    }

    #[test]
    fn refused_templates() {
        for bad in [
            "repo/{path}",
            "ftp://repo/{path}",
            "http://{client_ip}/{path}",
            "http://repo{path}",
            "http:///{path}",
            "http://repo/{nope}",
            "http://repo/{path",
            "http://repo/}{path}",
            "http://repo/static",
            "s3://bucket/{path}?x=1",
            "file://host/{path}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let t = Template::parse("s3://bucket/tftp/{path}").unwrap();
        assert_eq!((t.scheme(), t.base()), (Scheme::S3, "s3://bucket"));
        let f = Template::parse("file:///srv/boot/{path}").unwrap();
        assert_eq!((f.scheme(), f.base()), (Scheme::File, "file://"));
        assert_eq!(f.fixed_path(), "/srv/boot/");
        let p = Template::parse("file:///srv/{client_ip}/{path}").unwrap();
        assert_eq!(p.fixed_path(), "/srv/");
        assert!(!f.per_client());
    }
}
