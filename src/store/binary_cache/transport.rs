//! Getting files from a cache: a directory (`file://`) or HTTP(S).
//!
//! HTTP goes through ureq with rustls, as the registry push does: deadlines
//! on every request, retries with backoff on 5xx, 429 and broken
//! connections, redirects followed (CDNs serve NARs) but with no
//! `Authorization` carried to where they point. Credentials, from a netrc
//! file or a bearer token, are only sent to the cache's own origin; they
//! never appear in errors or Debug output.
//!
//! Trust roots: the system's bundle (`/etc/ssl/certs/ca-certificates.crt`)
//! plus the given CA files (`SSL_CERT_FILE` or `NIX_SSL_CERT_FILE` by
//! default, as Nix reads them); Mozilla's roots when there are none.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use super::CacheError;
use crate::http::{tls_refusal, Timeouts};

/// Tries of one request: the first and three retries.
const ATTEMPTS: u32 = 4;

/// Where the system keeps its trusted CAs (Debian, Ubuntu, Alpine, Arch).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A credential that never prints.
#[derive(Clone)]
pub(super) struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How files of one cache are got.
pub(super) enum Transport {
    /// A directory.
    File { root: PathBuf },
    /// An HTTP(S) server.
    Http {
        agent: ureq::Agent,
        /// The cache URL without a trailing `/`.
        base: String,
        /// The `Authorization` header value for the cache's origin.
        auth: Option<Secret>,
        /// Where `auth` came from, or why there is none, for errors.
        whence: String,
        timeouts: Timeouts,
    },
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { root } => f.debug_struct("File").field("root", root).finish(),
            Self::Http {
                base,
                auth,
                timeouts,
                ..
            } => f
                .debug_struct("Http")
                .field("base", base)
                .field("auth", auth)
                .field("timeouts", timeouts)
                .finish_non_exhaustive(),
        }
    }
}

/// Authentication for an HTTP cache.
#[derive(Clone, Default)]
pub struct Auth {
    /// A netrc file to look the cache's host up in (Nix's `netrc-file`).
    pub netrc_file: Option<PathBuf>,
    /// A bearer token (e.g. from `NIXLAYER_CACHE_TOKEN`); wins over netrc.
    pub bearer_token: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("netrc_file", &self.netrc_file)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

type Response = ureq::http::Response<ureq::Body>;

impl Transport {
    /// The transport for `url`, a validated `file://`, `http://` or `https://` URL.
    pub(super) fn new(
        url: &str,
        auth: &Auth,
        timeouts: Timeouts,
        ca_files: &[PathBuf],
    ) -> Result<Self, CacheError> {
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Self::File {
                root: PathBuf::from(path),
            });
        }
        let base = url.trim_end_matches('/').to_owned();
        let host = host_of(&base).unwrap_or_default().to_owned();
        // The netrc file's absence or missing entry is said in a 401's
        // error: a mistyped `netrc_file` would otherwise read as "no
        // credentials" with no word of the file.
        let (header, whence) = match (&auth.bearer_token, &auth.netrc_file) {
            (Some(token), _) => (
                Some(format!("Bearer {token}")),
                "NIXLAYER_CACHE_TOKEN".into(),
            ),
            (None, Some(netrc)) => match netrc_credentials(netrc, &host)? {
                Some((login, password)) => {
                    let pair = format!("{login}:{password}");
                    let header = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    );
                    (Some(header), format!("from `{}`", netrc.display()))
                }
                None if !netrc.exists() => (None, format!("`{}` does not exist", netrc.display())),
                None => (
                    None,
                    format!(
                        "`{}` has no `machine {host}` or `default` entry with a password",
                        netrc.display()
                    ),
                ),
            },
            (None, None) => (None, "no netrc file".into()),
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(5)
            // Our Authorization header stays on the cache's origin.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .timeout_connect(Some(timeouts.request.min(Duration::from_secs(30))))
            .timeout_global(Some(timeouts.request))
            .user_agent(concat!("nixlayer/", env!("CARGO_PKG_VERSION")));
        if url.starts_with("https://") {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certs(url, ca_files)?)
                    .build(),
            );
        }
        Ok(Self::Http {
            agent: config.build().into(),
            base,
            auth: header.map(Secret),
            whence,
            timeouts,
        })
    }

    /// The URL of `rel`, as errors show it.
    pub(super) fn url(&self, rel: &str) -> String {
        match self {
            Self::File { root } => format!("file://{}", root.join(rel).display()),
            Self::Http { base, .. } => format!("{base}/{rel}"),
        }
    }

    /// The whole of a small file (`nix-cache-info`, a narinfo, a
    /// listing), at most `limit` bytes; `None` when the cache has none.
    pub(super) fn get(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, CacheError> {
        let url = self.url(rel);
        let too_large = || CacheError::TooLarge {
            url: url.clone(),
            limit,
        };
        match self {
            Self::File { root } => {
                let file = match File::open(root.join(rel)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => return Err(CacheError::Read { url, source }),
                };
                let mut bytes = Vec::new();
                file.take(limit + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| CacheError::Read {
                        url: url.clone(),
                        source,
                    })?;
                if bytes.len() as u64 > limit {
                    return Err(too_large());
                }
                Ok(Some(bytes))
            }
            Self::Http { .. } => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let Some(resp) = self.request(rel, None)? else {
                        return Ok(None);
                    };
                    let mut bytes = Vec::new();
                    let read = resp
                        .into_body()
                        .into_with_config()
                        .limit(limit + 1)
                        .reader()
                        .read_to_end(&mut bytes);
                    match read {
                        Ok(_) if bytes.len() as u64 > limit => return Err(too_large()),
                        Ok(_) => return Ok(Some(bytes)),
                        Err(_) if attempt < ATTEMPTS => backoff(attempt),
                        Err(source) => return Err(CacheError::Read { url, source }),
                    }
                }
            }
        }
    }

    /// Hands the file `rel`, at most `limit` bytes of it, to `consume` as
    /// it arrives (no copy of it is kept): what `consume` returns, or
    /// `None` when the cache has no such file. When reading the body fails
    /// (a reset, a timeout) whatever `consume` made of it is dropped and
    /// the request is made again, up to [`ATTEMPTS`] times; `consume`
    /// starts over each time. `expected` sizes the deadline.
    pub(super) fn stream<T>(
        &self,
        rel: &str,
        limit: u64,
        expected: u64,
        mut consume: impl FnMut(&mut dyn Read) -> T,
    ) -> Result<Option<T>, CacheError> {
        let url = self.url(rel);
        // One attempt: what `consume` made, and the body's own read error.
        let mut attempt_with = |from: &mut dyn Read| {
            let mut watched = Watched {
                inner: from.take(limit),
                failed: None,
            };
            let made = consume(&mut watched);
            (made, watched.failed)
        };
        match self {
            Self::File { root } => {
                let mut file = match File::open(root.join(rel)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => return Err(CacheError::Read { url, source }),
                };
                match attempt_with(&mut file) {
                    (_, Some(source)) => Err(CacheError::Read { url, source }),
                    (made, None) => Ok(Some(made)),
                }
            }
            Self::Http { .. } => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let Some(resp) = self.request(rel, Some(expected))? else {
                        return Ok(None);
                    };
                    let mut body = resp.into_body();
                    let mut reader = body.with_config().limit(limit).reader();
                    match attempt_with(&mut reader) {
                        (made, None) => return Ok(Some(made)),
                        (_, Some(_)) if attempt < ATTEMPTS => backoff(attempt),
                        (_, Some(source)) => return Err(CacheError::Read { url, source }),
                    }
                }
            }
        }
    }

    /// A GET of `rel` over HTTP, retried; `None` on 404 (or 403/410, which
    /// some object stores answer for a missing key).
    fn request(&self, rel: &str, body_bytes: Option<u64>) -> Result<Option<Response>, CacheError> {
        let Self::Http {
            agent,
            base,
            auth,
            whence,
            timeouts,
        } = self
        else {
            return Ok(None);
        };
        let url = format!("{base}/{rel}");
        let deadline = timeouts.for_body(body_bytes.unwrap_or(0));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = agent.get(&url);
            if let Some(a) = auth {
                req = req.header("Authorization", &a.0);
            }
            let result = req.config().timeout_global(Some(deadline)).build().call();
            match result {
                Ok(resp) if resp.status() == 401 => {
                    return Err(CacheError::Unauthorized {
                        url,
                        sent: auth.is_some(),
                        whence: whence.clone(),
                    })
                }
                Ok(resp) if matches!(resp.status().as_u16(), 403 | 404 | 410) => {
                    if resp.status() == 403 && auth.is_some() {
                        return Err(CacheError::Unauthorized {
                            url,
                            sent: true,
                            whence: whence.clone(),
                        });
                    }
                    return Ok(None);
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status() == 429)
                        && attempt < ATTEMPTS =>
                {
                    backoff(attempt);
                }
                Ok(resp) if !resp.status().is_success() => {
                    return Err(CacheError::Status {
                        url,
                        status: resp.status().as_u16(),
                    })
                }
                Ok(resp) => return Ok(Some(resp)),
                Err(ureq::Error::Timeout(_)) => {
                    return Err(CacheError::Timeout {
                        url,
                        after: deadline,
                    })
                }
                Err(e) if tls_refusal(&e, "cache").is_some() => {
                    return Err(CacheError::Tls {
                        reason: tls_refusal(&e, "cache").unwrap_or_default(),
                        url,
                    })
                }
                Err(e) if attempt < ATTEMPTS && transient(&e) => backoff(attempt),
                Err(e) => {
                    return Err(CacheError::Http {
                        url,
                        source: Box::new(e),
                    })
                }
            }
        }
    }
}

fn transient(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(_) | ureq::Error::ConnectionFailed)
}

/// A body that remembers its first read error: a failed transfer (to
/// retry), as opposed to bytes that arrived and were found wrong.
struct Watched<R> {
    inner: R,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the download failed already"));
        }
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(100 << attempt.min(5)));
}

/// The host of an `http(s)://host[:port]/…` URL, lowercase.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// The trust roots for `url`: the system bundle and `ca_files`.
fn root_certs(url: &str, ca_files: &[PathBuf]) -> Result<ureq::tls::RootCerts, CacheError> {
    let mut certs = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    if Path::new(SYSTEM_BUNDLE).exists() {
        files.push(PathBuf::from(SYSTEM_BUNDLE));
    }
    files.extend(ca_files.iter().cloned());
    for file in &files {
        let pem = std::fs::read(file).map_err(|source| CacheError::Read {
            url: format!("{} (trusted CAs for {url})", file.display()),
            source,
        })?;
        let before = certs.len();
        for item in ureq::tls::parse_pem(&pem).flatten() {
            if let ureq::tls::PemItem::Certificate(cert) = item {
                certs.push(cert);
            }
        }
        // A CA file that holds none (a key, a DER file) would otherwise
        // be skipped quietly, and the build fail later on an untrusted
        // certificate with no word of the file.
        if certs.len() == before && ca_files.contains(file) {
            return Err(CacheError::Read {
                url: format!("{} (trusted CAs for {url})", file.display()),
                source: io::Error::new(io::ErrorKind::InvalidData, "it holds no PEM certificate"),
            });
        }
    }
    if certs.is_empty() {
        return Ok(ureq::tls::RootCerts::WebPki);
    }
    Ok(ureq::tls::RootCerts::from(certs))
}

/// The login and password for `host` in the netrc file `path`, if any;
/// a missing file is no credentials (Nix's default file need not exist).
///
/// Parsed by hand: netrc is a dozen lines of grammar (`machine`,
/// `default`, `login`, `password`, `account`, `macdef`), and the crates
/// for it are unmaintained.
fn netrc_credentials(path: &Path, host: &str) -> Result<Option<(String, String)>, CacheError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                url: path.display().to_string(),
                source,
            })
        }
    };
    Ok(netrc_lookup(&String::from_utf8_lossy(&text), host))
}

/// The credentials of the first `machine host` (or `default`) entry.
pub(super) fn netrc_lookup(text: &str, host: &str) -> Option<(String, String)> {
    let mut tokens: Vec<String> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        for word in netrc_words(line) {
            if word == "macdef" {
                // A macro runs to the next empty line.
                for l in lines.by_ref() {
                    if l.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            tokens.push(word);
        }
    }
    let mut it = tokens.into_iter();
    let (mut matching, mut login, mut password) = (false, None, None);
    while let Some(token) = it.next() {
        match token.as_str() {
            "machine" | "default" => {
                if matching {
                    break;
                }
                matching =
                    token == "default" || it.next().is_some_and(|m| m.eq_ignore_ascii_case(host));
            }
            "login" | "password" | "account" => {
                let value = it.next();
                if matching && token == "login" {
                    login = value;
                } else if matching && token == "password" {
                    password = value;
                }
            }
            _ => {}
        }
    }
    if !matching {
        return None;
    }
    Some((login.unwrap_or_default(), password?))
}

/// The words of a netrc line: split on white space, and, as curl (so Nix)
/// reads them, a word in double quotes may hold spaces and the escapes
/// `\"`, `\\`, `\n`, `\r`, `\t` (a password with a space or a quote;
/// found by the QA round: the quotes were taken as part of the password).
fn netrc_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(first) = chars.next() else {
            return words;
        };
        let mut word = String::new();
        if first == '"' {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('r') => word.push('\r'),
                        Some('t') => word.push('\t'),
                        Some(other) => word.push(other),
                        None => {}
                    },
                    c => word.push(c),
                }
            }
        } else {
            word.push(first);
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn netrc_entries() {
        let text = "machine other.example login a password b\n\
                    machine cache.example\n  login user\n  password s3cret\n\
                    default login d password e\n";
        assert_eq!(
            netrc_lookup(text, "cache.example"),
            Some(("user".into(), "s3cret".into()))
        );
        assert_eq!(netrc_lookup(text, "CACHE.example").unwrap().1, "s3cret");
        assert_eq!(
            netrc_lookup(text, "else.example"),
            Some(("d".into(), "e".into()))
        );
        assert_eq!(netrc_lookup("machine x login a password b", "y"), None);
        // Quoted, as curl reads them (found by the QA round).
        assert_eq!(
            netrc_lookup(
                "machine h login \"a user\" password \"s3 \\\"cr\\\\et\"\n",
                "h"
            ),
            Some(("a user".into(), "s3 \"cr\\et".into()))
        );
        assert_eq!(
            netrc_lookup("machine h login u password \"right\"", "h")
                .unwrap()
                .1,
            "right"
        );
        assert_eq!(
            netrc_lookup(
                "macdef init\nmachine h login no password no\n\nmachine h login a password b",
                "h"
            ),
            Some(("a".into(), "b".into()))
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("https://cache.example:8443/x"),
            Some("cache.example")
        );
        assert_eq!(host_of("http://[::1]:80/"), Some("::1"));
        assert_eq!(host_of("http:///x"), None);
    }

    #[test]
    fn debug_shows_no_secret() {
        let auth = Auth {
            netrc_file: None,
            bearer_token: Some("tok3n".into()),
        };
        assert!(!format!("{auth:?}").contains("tok3n"));
        let t = Transport::new("http://127.0.0.1:1/c", &auth, Timeouts::default(), &[]).unwrap();
        assert!(!format!("{t:?}").contains("tok3n"));
    }

    proptest! {
        #[test]
        fn netrc_never_panics(text in "\\PC{0,200}", host in "[a-z.]{0,10}") {
            let _ = netrc_lookup(&text, &host);
        }

        #[test]
        fn hosts_never_panic(url in "\\PC{0,60}") {
            let _ = host_of(&url);
        }
    }
}
