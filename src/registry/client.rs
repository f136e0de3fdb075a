//! The blocking registry client: requests with deadlines, authentication,
//! and the rule of where credentials go.
//!
//! Credentials (basic, or a bearer token got with them) are sent only to
//! the registry's own origin (scheme, host and port), as docker does. An
//! upload `Location` on another origin gets the request without any
//! `Authorization`; a 401 from there is an error, never answered with our
//! credentials. A bearer challenge's token realm gets the registry's
//! credentials as basic auth — the token request docker makes — and never
//! a bearer token; over HTTPS unless the registry itself is plain HTTP.
//! ureq follows no redirect (`max_redirects(0)`): a redirect within the
//! registry's origin is followed here with the credentials, as docker does;
//! one to another origin is not followed (a blob GET's is, to a CDN, with
//! no credentials), so no header is carried off the origin. A token
//! realm's redirect is followed as Go's client follows it, a few hops:
//! never from HTTPS to plain HTTP, the credentials (and an identity
//! token's form) only to the realm's own origin.
//!
//! Transport: HTTPS by default, trusting the system bundle (or
//! `SSL_CERT_FILE`), docker's `/etc/docker/certs.d/HOST[:PORT]/*.crt`
//! (`NIXLAYER_CERTS_D` moves that root) and `--ca-file`; plain HTTP only
//! with `insecure`, or — as docker does — for a loopback host whose port
//! does not speak TLS. A certificate that is not trusted is an error,
//! never a reason to try plain HTTP.
//!
//! Bearer tokens are cached per scope until they expire (`expires_in`,
//! `issued_at`) and fetched again on expiry or on a 401. Identity tokens
//! (docker's `identitytoken`, user `<token>` from a helper) are exchanged
//! with an OAuth2 `POST` (`grant_type=refresh_token`) instead of basic auth.
//!
//! Every request has a deadline covering connect, send, the answer and
//! reading its body ([`Timeouts`]); an upload's grows with its size. Bodies
//! read from the registry are capped, and error text quoted from them has
//! every secret replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::credentials::REDACTED;
use super::{Credentials, Error, Reference, ATTEMPTS};
use crate::oci::Digest;
use crate::oci::MANIFEST_MEDIA_TYPE;

/// The most of a token answer that is read (JSON with a JWT: a few KiB).
const TOKEN_BODY_LIMIT: u64 = 1 << 20;
/// The most of an error answer that is read, to quote its start.
const ERROR_BODY_LIMIT: u64 = 4096;

use crate::http::tls_refusal;
pub use crate::http::Timeouts;

/// Docker's directory of per-registry CA certificates.
pub const CERTS_D: &str = "/etc/docker/certs.d";
/// The environment variable that moves [`CERTS_D`] (tests use it).
pub const CERTS_D_ENV: &str = "NIXLAYER_CERTS_D";
/// The most of a CA file that is read.
const CA_FILE_LIMIT: u64 = 16 << 20;
/// The system's CA bundle (Debian's `ca-certificates`).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// How long a loopback host has to answer a TLS handshake before it is
/// taken for a plain-HTTP one.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// A token without `expires_in` lives this long (the distribution spec's
/// default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// How to reach a registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Credentials, for this registry only.
    pub credentials: Option<Credentials>,
    /// Plain HTTP, for any host.
    pub insecure: bool,
    /// Request deadlines.
    pub timeouts: Timeouts,
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The most bytes one `PATCH` of a chunked upload carries (0:
    /// [`DEFAULT_CHUNK`]).
    pub chunk_size: u64,
    /// How many blobs upload at once (0: the default, 4).
    pub jobs: usize,
    /// Only pulls: a bearer token is asked for `pull` on the repository,
    /// not `pull,push` (a realm may refuse push to a reader, and a token
    /// should not grant more than is used).
    pub pull_only: bool,
}

/// Bytes of layer uploads, for progress: those queued for upload, and
/// those sent of them (a request that fails takes its bytes back, and a
/// restarted upload those acknowledged before, so `sent` counts each byte
/// once as it goes out).
#[derive(Debug, Default)]
pub struct UploadMeter {
    queued: AtomicU64,
    sent: AtomicU64,
}

impl UploadMeter {
    /// Bytes queued for upload so far.
    #[must_use]
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn queue(&self, bytes: u64) {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }

    fn take_back(&self, bytes: u64) {
        let _ = self
            .sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(bytes))
            });
    }
}

/// A request body read through the meter: every byte read is counted sent.
struct Metered<'a, R> {
    inner: R,
    meter: &'a UploadMeter,
    count: u64,
}

impl<R: std::io::Read> std::io::Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.meter.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The default chunk of a chunked upload: a dropped connection costs at
/// most this much again, and a 1 GiB layer takes 64 requests.
pub const DEFAULT_CHUNK: u64 = 16 << 20;

/// Where the registry answers: its base URL and origin.
#[derive(Clone, Debug)]
struct Endpoint {
    base: String,
    origin: Origin,
}

/// A bearer token and when it stops being used.
#[derive(Clone)]
struct CachedToken {
    header: String,
    expires: Instant,
}

/// Scheme, host and port of a URL: where credentials may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of `url`; `None` when it is not an absolute http(s) URL.
    pub(crate) fn of(url: &str) -> Option<Self> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        Some(Self {
            host: uri.host()?.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default),
            scheme,
        })
    }

    /// `host[:port]`, the port left out when it is the scheme's default;
    /// an IPv6 host in brackets.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.scheme.as_str(), self.port) {
            ("https", 443) | ("http", 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

/// `url` as errors show it: no user information, no query (an upload
/// `Location` carries the registry's upload state there), no fragment.
#[must_use]
pub(crate) fn shown_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// A blocking client for one repository of one registry. `Debug` never
/// shows a password or token.
pub struct Client {
    /// Through the environment's proxy, if any.
    agent: ureq::Agent,
    /// The same, without a proxy: for loopback hosts (see [`Client::new`]).
    direct: ureq::Agent,
    /// `host[:port]` of the registry API.
    host: String,
    /// Set once the scheme is known: at once, or after the loopback probe.
    endpoint: Mutex<Option<Endpoint>>,
    /// Why the agent could not be made (an unreadable CA file): reported
    /// by the first request.
    setup_error: Option<String>,
    repository: String,
    credentials: Option<Credentials>,
    timeouts: Timeouts,
    /// The `Authorization` header that worked last, for the registry's
    /// origin only: basic, or the bearer token of `scope`.
    authorization: Mutex<Option<String>>,
    /// Bearer tokens by scope, with their expiry.
    tokens: Mutex<BTreeMap<String, CachedToken>>,
    /// The last bearer challenge's parameters, to fetch a token again when
    /// the cached one expires.
    challenge: Mutex<Option<BTreeMap<String, String>>>,
    /// A refresh token the realm gave in exchange for ours.
    refresh_token: Mutex<Option<String>>,
    /// The most bytes of one `PATCH`.
    chunk_size: u64,
    /// Set when the registry refused a `PATCH`: later blobs go
    /// monolithic at once.
    chunks_refused: AtomicBool,
    jobs: usize,
    /// The actions a bearer token is asked for on our repository.
    actions: &'static str,
    /// Counts the bytes of file bodies sent.
    meter: Arc<UploadMeter>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let authorized = self
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("repository", &self.repository)
            .field("credentials", &self.credentials)
            .field("timeouts", &self.timeouts)
            .field("authorization", &authorized.then_some(REDACTED))
            .finish_non_exhaustive()
    }
}

/// A request body, re-creatable for retries and auth.
pub(crate) enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// A spooled file and its size.
    File(&'a Path, u64),
    /// Part of a spooled file: its offset and length.
    Range(&'a Path, u64, u64),
}

impl Body<'_> {
    /// The size of the body.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::None => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, n) | Body::Range(_, _, n) => *n,
        }
    }
}

type Response = ureq::http::Response<ureq::Body>;

impl Client {
    /// A client for `reference`'s repository: HTTPS, or plain HTTP when
    /// `options.insecure`; a loopback host without `insecure` gets HTTPS
    /// when its port speaks TLS and plain HTTP otherwise (found by the
    /// first request).
    #[must_use]
    pub fn new(reference: &Reference, options: ClientOptions) -> Self {
        let host = reference.api_host().to_owned();
        let timeouts = options.timeouts;
        let mut tls = None;
        let mut setup_error = None;
        if !options.insecure {
            let certs_d = std::env::var_os(CERTS_D_ENV)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(CERTS_D), PathBuf::from);
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
            match root_certs(&host, bundle, options.ca_file.as_deref(), &certs_d) {
                Ok(roots) => tls = Some(ureq::tls::TlsConfig::builder().root_certs(roots).build()),
                Err(e) => setup_error = Some(e),
            }
        }
        // One agent through the environment's proxy (`HTTPS_PROXY`, …, and
        // `NO_PROXY`), one without for loopback hosts, which Go's clients
        // (docker, skopeo, crane) never send to a proxy: a CI machine's
        // proxy cannot reach its own `localhost:5000`.
        let agent = |proxied: bool| -> ureq::Agent {
            let mut config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                // ureq follows no redirect: `send_with` follows those within
                // the registry's origin, so our headers stay where we send them.
                .max_redirects(0)
                .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
                .timeout_connect(Some(timeouts.request.min(Duration::from_secs(30))))
                .timeout_global(Some(timeouts.request))
                .user_agent(concat!("nixlayer/", env!("CARGO_PKG_VERSION")));
            if let Some(tls) = &tls {
                config = config.tls_config(tls.clone());
            }
            if !proxied {
                config = config.proxy(None);
            }
            config.build().into()
        };
        let endpoint = if options.insecure {
            Some(Endpoint::new("http", &host))
        } else if reference.is_local() {
            None
        } else {
            Some(Endpoint::new("https", &host))
        };
        Self {
            agent: agent(true),
            direct: agent(false),
            host,
            endpoint: Mutex::new(endpoint),
            setup_error,
            repository: reference.repository.clone(),
            credentials: options.credentials,
            timeouts,
            authorization: Mutex::new(None),
            tokens: Mutex::new(BTreeMap::new()),
            challenge: Mutex::new(None),
            refresh_token: Mutex::new(None),
            chunk_size: if options.chunk_size == 0 {
                DEFAULT_CHUNK
            } else {
                options.chunk_size
            },
            chunks_refused: AtomicBool::new(false),
            jobs: options.jobs,
            actions: if options.pull_only {
                "pull"
            } else {
                "pull,push"
            },
            meter: Arc::default(),
        }
    }

    /// The registry's endpoint; for a loopback host, found the first time
    /// by trying HTTPS.
    fn endpoint(&self) -> Result<Endpoint, Error> {
        if let Some(e) = &self.setup_error {
            return Err(Error::TrustRoots {
                host: self.host.clone(),
                reason: e.clone(),
            });
        }
        let mut slot = lock(&self.endpoint);
        if let Some(e) = &*slot {
            return Ok(e.clone());
        }
        let https = Endpoint::new("https", &self.host);
        let url = format!("{}/v2/", https.base);
        // A TLS server on loopback answers a handshake at once; one that
        // is silent this long is taken for a plain-HTTP one.
        let probe = self
            .agent_for(&url)
            .get(&url)
            .config()
            .timeout_global(Some(self.timeouts.request.min(PROBE_DEADLINE)))
            .build()
            .call();
        let chosen = match probe {
            Ok(_) => https,
            // The port speaks TLS but is not trusted: never a reason to
            // fall back to plain HTTP.
            Err(e) if tls_refusal(&e, "registry").is_some() => {
                return Err(Error::Tls {
                    host: self.host.clone(),
                    reason: tls_refusal(&e, "registry").unwrap_or_default(),
                })
            }
            // Not TLS (or nothing listening): plain HTTP, as docker does
            // for loopback registries.
            Err(_) => Endpoint::new("http", &self.host),
        };
        *slot = Some(chosen.clone());
        Ok(chosen)
    }

    /// The agent for a request to `url`: without a proxy for a loopback
    /// host.
    fn agent_for(&self, url: &str) -> &ureq::Agent {
        let loopback = Origin::of(url).is_some_and(|o| {
            let host = o.host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if loopback {
            &self.direct
        } else {
            &self.agent
        }
    }

    /// How a request to `url` went when a proxy of the environment took
    /// it (` through the proxy HOST:PORT …`), else nothing: a refused
    /// connection is then the proxy's, not the registry's. Never the
    /// proxy's credentials.
    fn via_proxy(&self, url: &str) -> String {
        let Some(proxy) = self.agent_for(url).config().proxy() else {
            return String::new();
        };
        match url.parse::<ureq::http::Uri>() {
            Ok(uri) if !proxy.is_no_proxy(&uri) => format!(
                " through the proxy {}:{} (from `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`)",
                proxy.host(),
                proxy.port()
            ),
            _ => String::new(),
        }
    }

    fn url(&self, path: &str) -> Result<String, Error> {
        Ok(format!(
            "{}/v2/{}/{path}",
            self.endpoint()?.base,
            self.repository
        ))
    }

    fn auth_header(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `url` is on the registry's own origin, where credentials go.
    fn is_ours(&self, url: &str) -> bool {
        let origin = lock(&self.endpoint).as_ref().map(|e| e.origin.clone());
        origin.is_some() && Origin::of(url) == origin
    }

    /// `text` with every secret we hold replaced: a hostile registry may
    /// echo our headers in an error body.
    fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Some(c) = &self.credentials {
            secrets.push(c.password.clone());
            secrets.push(c.basic_token());
        }
        let headers = self
            .auth_header()
            .into_iter()
            .chain(lock(&self.tokens).values().map(|t| t.header.clone()))
            .collect::<Vec<_>>();
        for a in headers {
            if let Some((_, value)) = a.split_once(' ') {
                secrets.push(value.to_owned());
            }
        }
        secrets.extend(lock(&self.refresh_token).clone());
        let mut out = text.to_owned();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    }

    /// Sends one request, answering a 401 from the registry with
    /// credentials once and retrying transient failures; returns the
    /// response whatever its status.
    fn send(
        &self,
        method: &'static str,
        url: &str,
        what: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
    ) -> Result<Response, Error> {
        self.send_with(method, url, what, headers, body, true)
    }

    /// [`Client::send`]; with `retry` false, a 5xx, a 429 or a broken
    /// connection is the caller's to handle (a `PATCH` sent again could
    /// append its bytes twice).
    ///
    /// A redirect from the registry's origin to a place on the same origin
    /// is followed, credentials kept, as docker does (Go's client keeps
    /// `Authorization` on a redirect to the same host): a few hops, `307`
    /// and `308` for every method (the same request again, body and all),
    /// `301`, `302` and `303` for `GET` and `HEAD` only (they turn another
    /// method into a `GET`). A redirect to another origin is answered to
    /// the caller as it came: never followed with credentials.
    fn send_with(
        &self,
        method: &'static str,
        url: &str,
        what: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
        retry: bool,
    ) -> Result<Response, Error> {
        let mut url = url.to_owned();
        let mut resp = self.send_to(method, &url, what, headers, body, retry)?;
        for _ in 0..MAX_SAME_ORIGIN_REDIRECTS {
            let followed = match resp.status().as_u16() {
                307 | 308 => true,
                301..=303 => matches!(method, "GET" | "HEAD"),
                _ => false,
            };
            let next = location(&resp).and_then(|l| redirect_target(&url, &l));
            match next {
                Some(next) if followed && self.is_ours(&url) && self.is_ours(&next) => {
                    url = next;
                }
                _ => break,
            }
            resp = self.send_to(method, &url, what, headers, body, retry)?;
        }
        Ok(resp)
    }

    /// One request to `url` (retried, and authenticated on a 401, as
    /// [`Client::send_with`] says); a redirect is the caller's.
    fn send_to(
        &self,
        method: &'static str,
        url: &str,
        what: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
        retry: bool,
    ) -> Result<Response, Error> {
        let attempts = if retry { ATTEMPTS } else { 1 };
        let ours = self.is_ours(url);
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if ours {
                self.renew_expired_token(url)?;
            }
            let deadline = self.timeouts.for_body(body.len());
            let result = self.send_once(method, url, headers, body, ours, deadline);
            match result {
                Ok(resp) if resp.status() == 401 && !ours => {
                    return Err(Error::Auth {
                        url: shown_url(url),
                        reason: format!(
                            "another host asks for credentials; they are only sent to {}",
                            self.host
                        ),
                    });
                }
                Ok(resp) if resp.status() == 401 && !authenticated => {
                    authenticated = true;
                    let challenge = pick_challenge(
                        resp.headers()
                            .get_all("www-authenticate")
                            .iter()
                            .filter_map(|v| v.to_str().ok()),
                    );
                    self.authenticate(url, &challenge)?;
                    attempt -= 1;
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status() == 429)
                        && attempt < attempts =>
                {
                    backoff(attempt);
                }
                Ok(resp) => return Ok(resp),
                // A deadline is final: retrying would multiply it.
                Err(ureq::Error::Timeout(_)) => {
                    return Err(Error::Timeout {
                        method,
                        url: shown_url(url),
                        what: what.to_owned(),
                        after: deadline,
                    })
                }
                // An untrusted certificate is no connection trouble: it
                // is said at once, with the ways to trust it, for every
                // HTTPS host (the registry, a token realm, a blob's CDN).
                Err(e) if tls_failure(&e).is_some() => {
                    let host = Origin::of(url).map_or_else(|| self.host.clone(), |o| o.authority());
                    return Err(Error::Tls {
                        host,
                        reason: tls_failure(&e).unwrap_or_default(),
                    });
                }
                Err(e) if attempt < attempts && transient(&e) => backoff(attempt),
                Err(e) => {
                    return Err(Error::Request {
                        method,
                        url: shown_url(url),
                        what: what.to_owned(),
                        via: self.via_proxy(url),
                        source: Box::new(e),
                    })
                }
            }
        }
    }

    fn send_once(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
        ours: bool,
        deadline: Duration,
    ) -> Result<Response, ureq::Error> {
        // Never to another origin, whatever it is.
        let auth = if ours { self.auth_header() } else { None };
        let agent = self.agent_for(url);
        macro_rules! prepared {
            ($req:expr) => {{
                let mut req = $req;
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.config().timeout_global(Some(deadline)).build()
            }};
        }
        match (method, body) {
            ("HEAD", _) => prepared!(agent.head(url)).call(),
            ("GET", _) => prepared!(agent.get(url)).call(),
            ("DELETE", _) => prepared!(agent.delete(url)).call(),
            (m, b) => {
                let req = match m {
                    "POST" => agent.post(url),
                    "PATCH" => agent.patch(url),
                    _ => agent.put(url),
                };
                let req = prepared!(req);
                let (file, offset, len) = match b {
                    Body::None => return req.send_empty(),
                    Body::Bytes(bytes) => return req.send(*bytes),
                    Body::File(path, len) => (File::open(path)?, 0, *len),
                    Body::Range(path, offset, len) => (File::open(path)?, *offset, *len),
                };
                let mut file = file;
                file.seek(SeekFrom::Start(offset))?;
                let mut part = Metered {
                    inner: file.take(len),
                    meter: &self.meter,
                    count: 0,
                };
                let sent = req
                    .header("Content-Length", len.to_string())
                    .send(ureq::SendBody::from_reader(&mut part));
                // Bytes of a request that failed were not uploaded.
                if !sent.as_ref().is_ok_and(|r| r.status().is_success()) {
                    self.meter.take_back(part.count);
                }
                sent
            }
        }
    }

    /// Answers a `WWW-Authenticate` challenge from the registry: basic
    /// credentials, or a bearer token fetched from the realm (see
    /// [`Client::fetch_token`]) and cached for its scope.
    fn authenticate(&self, url: &str, challenge: &str) -> Result<(), Error> {
        let auth_err = |reason: String| Error::Auth {
            url: shown_url(url),
            reason,
        };
        let (scheme, params) = split_challenge(challenge);
        let header = if scheme.eq_ignore_ascii_case("basic") {
            let creds = self
                .credentials
                .as_ref()
                .filter(|c| c.as_identity_token().is_none())
                .ok_or_else(|| {
                    // An identity token is only good for a token realm.
                    let found = if self.credentials.is_some() {
                        " (the credentials found are an identity token, which only a bearer-token registry takes)"
                    } else {
                        ""
                    };
                    auth_err(format!(
                        "the registry wants a user and password{found}: give `--username USER` with `--password-stdin`, or set `NIXLAYER_REGISTRY_USER` and `NIXLAYER_REGISTRY_PASSWORD`, or `docker login` (or `podman login`)"
                    ))
                })?;
            creds.basic()
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let params = challenge_params(params);
            let header = self.token_for(&params, &auth_err)?;
            *lock(&self.challenge) = Some(params);
            header
        } else {
            let scheme: String = scheme.chars().take(40).collect();
            return Err(auth_err(format!(
                "unsupported challenge `{scheme}` (expected Basic or Bearer)"
            )));
        };
        *lock(&self.authorization) = Some(header);
        Ok(())
    }

    /// The scopes a token is asked for: push and pull on our repository
    /// (pull alone for a pull), and what the challenge names besides.
    fn scopes(&self, params: &BTreeMap<String, String>) -> Vec<String> {
        let mut scopes = vec![format!("repository:{}:{}", self.repository, self.actions)];
        if let Some(asked) = params.get("scope") {
            for scope in asked.split(' ').filter(|s| !s.is_empty()) {
                if !scopes.iter().any(|s| scope_covers(s, scope)) {
                    scopes.push(scope.to_owned());
                }
            }
        }
        scopes
    }

    /// A fresh bearer header for the challenge `params`, cached under its
    /// scopes.
    fn token_for(
        &self,
        params: &BTreeMap<String, String>,
        auth_err: &dyn Fn(String) -> Error,
    ) -> Result<String, Error> {
        let scopes = self.scopes(params);
        let (token, lifetime) = self.fetch_token(params, &scopes, auth_err)?;
        let header = format!("Bearer {token}");
        lock(&self.tokens).insert(
            scopes.join(" "),
            CachedToken {
                header: header.clone(),
                expires: Instant::now() + lifetime,
            },
        );
        Ok(header)
    }

    /// Fetches the bearer token again when the one in use has expired, so
    /// a long push does not meet a 401 for every request.
    fn renew_expired_token(&self, url: &str) -> Result<(), Error> {
        let Some(params) = lock(&self.challenge).clone() else {
            return Ok(());
        };
        let key = self.scopes(&params).join(" ");
        let expired = lock(&self.tokens)
            .get(&key)
            .is_none_or(|t| Instant::now() >= t.expires);
        if !expired {
            return Ok(());
        }
        let auth_err = |reason: String| Error::Auth {
            url: shown_url(url),
            reason,
        };
        let header = self.token_for(&params, &auth_err)?;
        *lock(&self.authorization) = Some(header);
        Ok(())
    }

    /// The token flow: `GET realm?service=…&scope=…` with our credentials
    /// as basic auth (or none); or, for an identity token, the OAuth2
    /// `POST realm` with `grant_type=refresh_token`. The token and how long
    /// it may be used.
    fn fetch_token(
        &self,
        params: &BTreeMap<String, String>,
        scopes: &[String],
        auth_err: &dyn Fn(String) -> Error,
    ) -> Result<(String, Duration), Error> {
        let realm = params
            .get("realm")
            .ok_or_else(|| auth_err("the bearer challenge names no realm".to_owned()))?;
        let realm_origin = Origin::of(realm).ok_or_else(|| {
            auth_err(format!(
                "the token realm `{}` is not an http(s) URL",
                shown_url(realm)
            ))
        })?;
        let registry_scheme = lock(&self.endpoint)
            .as_ref()
            .map_or("https".to_owned(), |e| e.origin.scheme.clone());
        // Credentials never leave HTTPS for plain HTTP.
        if realm_origin.scheme == "http" && registry_scheme == "https" {
            return Err(auth_err(format!(
                "refusing to send credentials to the plain-HTTP token realm `{}`",
                shown_url(realm)
            )));
        }
        let mut form: Vec<(&str, String)> = Vec::new();
        if let Some(service) = params.get("service") {
            form.push(("service", service.clone()));
        }
        for scope in scopes {
            form.push(("scope", scope.clone()));
        }
        let identity = self
            .credentials
            .as_ref()
            .and_then(Credentials::as_identity_token);
        let query = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let shown = shown_url(realm);
        if let Some(identity) = identity {
            // The refresh token the realm gave last, else the identity token.
            let refresh = lock(&self.refresh_token)
                .clone()
                .unwrap_or_else(|| identity.to_owned());
            form.push(("grant_type", "refresh_token".to_owned()));
            form.push(("client_id", "nixlayer".to_owned()));
            form.push(("refresh_token", refresh));
        }
        let token_url = format!(
            "{realm}{}{}",
            if realm.contains('?') { '&' } else { '?' },
            query(&form)
        );
        // One request to `url`: the POST of an identity token (its form
        // holds the refresh token) or the GET; credentials and the form
        // only to the realm's own origin (a redirect may lead elsewhere).
        let request = |url: &str, post: bool| {
            let home = Origin::of(url).as_ref() == Some(&realm_origin);
            if post {
                let body = query(&form);
                self.agent_for(url)
                    .post(url)
                    .config()
                    .timeout_global(Some(self.timeouts.request))
                    .build()
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .send(body.as_bytes())
            } else {
                let mut req = self
                    .agent_for(url)
                    .get(url)
                    .config()
                    .timeout_global(Some(self.timeouts.request))
                    .build();
                if let (Some(c), true, None) = (&self.credentials, home, identity) {
                    req = req.header("Authorization", c.basic());
                }
                req.call()
            }
        };
        // A realm is a server like the registry: a dropped connection, a
        // 5xx or a 429 is tried again, as every registry request is.
        let send = |url: &str, post: bool| {
            let mut attempt = 1;
            loop {
                match request(url, post) {
                    Err(e) if attempt < ATTEMPTS && transient(&e) && tls_failure(&e).is_none() => {}
                    Ok(resp)
                        if attempt < ATTEMPTS
                            && (resp.status().is_server_error() || resp.status() == 429) => {}
                    other => break other,
                }
                backoff(attempt);
                attempt += 1;
            }
        };
        // A realm behind a redirect (a moved token service, a load
        // balancer) is followed as Go's client follows it — docker,
        // skopeo and crane get their tokens so — within the limits
        // [`token_redirect`] sets.
        let mut post = identity.is_some();
        let mut url = if post { realm.clone() } else { token_url };
        let mut sent = send(&url, post);
        for hop in 0..=MAX_TOKEN_REDIRECTS {
            let Ok(resp) = &sent else { break };
            let status = resp.status().as_u16();
            if !matches!(status, 301..=303 | 307 | 308) {
                break;
            }
            if hop == MAX_TOKEN_REDIRECTS {
                return Err(auth_err(format!(
                    "{shown}: more than {MAX_TOKEN_REDIRECTS} redirects"
                )));
            }
            let (next, next_post) =
                token_redirect(&url, location(resp).as_deref(), status, post, &realm_origin)
                    .map_err(|why| auth_err(format!("{shown}: {why}")))?;
            url = next;
            post = next_post;
            sent = send(&url, post);
        }
        let timeout = || Error::Timeout {
            method: if identity.is_some() { "POST" } else { "GET" },
            url: shown.clone(),
            what: "bearer token".to_owned(),
            after: self.timeouts.request,
        };
        let mut resp = sent.map_err(|e| match e {
            ureq::Error::Timeout(_) => timeout(),
            // As for the registry: an untrusted certificate is said as one.
            // `--insecure` cannot help there: the registry names the realm.
            e if tls_failure(&e).as_deref() == Some(PLAIN_HTTP_ANSWER) => auth_err(format!(
                "{shown}: the token realm the registry names answers plain HTTP to HTTPS"
            )),
            e if tls_failure(&e).is_some() => Error::Tls {
                host: realm_origin.authority(),
                reason: tls_failure(&e).unwrap_or_default(),
            },
            e => auth_err(format!("{shown}: {e}")),
        })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let text = self.error_body(&mut resp);
            return Err(auth_err(format!("{shown} answered {status}: {text}")));
        }
        let html = is_html(&resp);
        let text = resp
            .body_mut()
            .with_config()
            .limit(TOKEN_BODY_LIMIT)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => timeout(),
                ureq::Error::BodyExceedsLimit(_) => {
                    auth_err(format!("{shown}: the token answer is over 1 MiB"))
                }
                e => auth_err(format!("{shown}: {e}")),
            })?;
        let answer = token_answer(&text, jiff::Timestamp::now()).map_err(|why| {
            // An SSO proxy's login page, say: JSON's "expected value at
            // line 1 column 1" would not tell. (A token in JSON sent as
            // `text/html` is still taken.)
            if html && serde_json::from_str::<serde_json::Value>(&text).is_err() {
                auth_err(format!(
                    "{shown} answered an HTML page, not a token (a login page rather than the registry's token service?)"
                ))
            } else {
                auth_err(format!("{shown}{why}"))
            }
        })?;
        if let Some(refresh) = answer.refresh {
            *lock(&self.refresh_token) = Some(refresh);
        }
        Ok((answer.token, answer.lifetime))
    }

    /// The start of an error answer's body, capped and with our secrets
    /// replaced.
    fn error_body(&self, resp: &mut Response) -> String {
        let mut bytes = Vec::new();
        // A read error (a timeout, a reset) leaves what was read.
        let _ = resp
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_LIMIT)
            .read_to_end(&mut bytes);
        self.redact(&snippet(&String::from_utf8_lossy(&bytes)))
    }

    fn status_error(
        &self,
        method: &'static str,
        url: &str,
        what: &str,
        mut resp: Response,
    ) -> Error {
        let status = resp.status().as_u16();
        // A 401 here came after the challenge was answered (see
        // `send_to`): what was sent was refused, which the registry's own
        // body (`authentication required`, or nothing for a HEAD) does not
        // say.
        if status == 401 {
            // RFC 6750's `error` of the registry's new challenge: an
            // `invalid_token` is no matter of access rights.
            let invalid_token = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter(|c| split_challenge(c).0.eq_ignore_ascii_case("bearer"))
                .any(|c| {
                    challenge_params(split_challenge(c).1)
                        .get("error")
                        .is_some_and(|e| e == "invalid_token")
                });
            let mut reason = self.refusal();
            if invalid_token {
                reason += " (the registry calls the token invalid: expired, or its clock and the token realm's apart?)";
            }
            return Error::Auth {
                url: shown_url(url),
                reason,
            };
        }
        let body = self.error_body(&mut resp);
        // Go's HTTP server (distribution, Harbor …) answers plain HTTP on
        // its TLS port so: `--insecure` (skopeo's `--tls-verify=false`
        // skips certificate checks; ours never does) sent it plain HTTP.
        if status == 400
            && url.starts_with("http://")
            && body.contains("HTTP request to an HTTPS server")
        {
            return Error::Tls {
                host: Origin::of(url).map_or_else(|| self.host.clone(), |o| o.authority()),
                reason: HTTPS_ONLY.to_owned(),
            };
        }
        // A HEAD answer has no body, and some refusals none either: the
        // status's name then, not a dangling `: `.
        let body = if body.is_empty() {
            resp.status()
                .canonical_reason()
                .unwrap_or("(no explanation)")
                .to_owned()
        } else {
            body
        };
        Error::Status {
            method,
            url: shown_url(url),
            what: what.to_owned(),
            status,
            body,
        }
    }

    /// Why the registry answers 401 to a request sent with the
    /// authorization its challenge asked for: who was refused what.
    fn refusal(&self) -> String {
        let bearer = self.auth_header().is_some_and(|h| h.starts_with("Bearer "));
        let access = format!("`{}` on `{}`", self.actions, self.repository);
        match &self.credentials {
            None => format!(
                "the registry answered 401 to anonymous access ({access}): give `--username USER` with `--password-stdin`, or set `NIXLAYER_REGISTRY_USER` and `NIXLAYER_REGISTRY_PASSWORD`, or `docker login` (or `podman login`)"
            ),
            Some(c) if c.as_identity_token().is_some() => format!(
                "the registry answered 401 to the token its realm gave for the identity token ({access}): log in again (`docker login`)"
            ),
            Some(c) if bearer => format!(
                "the registry answered 401 to the token its realm gave user `{}` ({access}): does the user have that access?",
                c.user
            ),
            Some(c) => format!(
                "the registry answered 401 to the credentials of user `{}`: a wrong password, or no {access}",
                c.user
            ),
        }
    }

    /// How many blobs are to upload at once (0: the default).
    #[must_use]
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// What the uploads through this client have sent.
    #[must_use]
    pub fn meter(&self) -> &Arc<UploadMeter> {
        &self.meter
    }

    /// Checks that the registry speaks the distribution API (`GET /v2/`),
    /// authenticating when it asks: a quick failure before anything is built.
    ///
    /// # Errors
    /// When it cannot be reached, or refuses us.
    pub fn ping(&self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.endpoint()?.base);
        let what = "API version check";
        let resp = self.send("GET", &url, what, &[], &Body::None)?;
        match resp.status().as_u16() {
            // A registry's API root answers JSON (`{}`), or nothing; an
            // HTML page is a web server or a registry's web interface on
            // this port, which would answer `200` to every later request.
            status @ 200..=299 if is_html(&resp) && !is_registry_answer(&resp) => {
                Err(Error::NotRegistry {
                    method: "GET",
                    url: shown_url(&url),
                    what: what.to_owned(),
                    status,
                    reason: "it is an HTML page, not the registry API (is this the port of a web server or of a registry's web interface?)",
                })
            }
            200..=299 => Ok(()),
            _ => Err(self.status_error("GET", &url, what, resp)),
        }
    }

    /// Whether the registry holds blob `digest`.
    ///
    /// # Errors
    /// When the registry cannot be reached or answers neither 200 nor 404.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool, Error> {
        let what = format!("blob {}", digest.prefixed());
        let url = self.url(&format!("blobs/{}", digest.prefixed()))?;
        let resp = self.send("HEAD", &url, &what, &[], &Body::None)?;
        match resp.status().as_u16() {
            200..=299 | 301..=308 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error("HEAD", &url, &what, resp)),
        }
    }

    /// The URL to PUT an upload to, from the `Location` of its POST:
    /// relative to the registry, or absolute (then possibly another host,
    /// which gets no credentials).
    fn upload_url(&self, start: &str, what: &str, location: &str) -> Result<String, Error> {
        let bad = |reason: &str| Error::Status {
            method: "POST",
            url: shown_url(start),
            what: what.to_owned(),
            status: 202,
            body: reason.to_owned(),
        };
        if location.starts_with('/') && !location.starts_with("//") {
            Ok(format!("{}{location}", self.endpoint()?.base))
        } else if Origin::of(location).is_some() {
            Ok(location.to_owned())
        } else {
            Err(bad(
                "the Location header is neither a path nor an http(s) URL",
            ))
        }
    }

    /// Asks the registry to mount blob `digest` from repository `from` of
    /// the same registry (`POST …/blobs/uploads/?mount=&from=`): `true`
    /// when it did (201). A registry that cannot answers 202 and opens an
    /// upload instead, which is cancelled (`DELETE`, best effort): the
    /// blob is then uploaded as usual.
    ///
    /// # Errors
    /// When the registry cannot be reached.
    pub fn mount(&self, digest: &Digest, from: &str) -> Result<bool, Error> {
        let what = format!("blob {} (mount from {from})", digest.prefixed());
        let url = self.url(&format!(
            "blobs/uploads/?mount={}&from={}",
            encode(&digest.prefixed()),
            encode(from)
        ))?;
        let resp = self.send("POST", &url, &what, &[], &Body::None)?;
        match resp.status().as_u16() {
            201 => {
                check_digest(&resp, &url, &what, digest)?;
                Ok(true)
            }
            202 => {
                if let Some(l) = location(&resp) {
                    if let Ok(open) = self.upload_url(&url, &what, &l) {
                        let _ = self.send("DELETE", &open, &what, &[], &Body::None);
                    }
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Starts an upload session (`POST …/blobs/uploads/`): the URL its
    /// `Location` names.
    fn start_upload(&self, what: &str) -> Result<String, Error> {
        let start = self.url("blobs/uploads/")?;
        let resp = self.send("POST", &start, what, &[], &Body::None)?;
        if resp.status().as_u16() != 202 {
            return Err(self.status_error("POST", &start, what, resp));
        }
        let location = location(&resp).ok_or_else(|| Error::Status {
            method: "POST",
            url: shown_url(&start),
            what: what.to_owned(),
            status: 202,
            body: "no Location header".to_owned(),
        })?;
        self.upload_url(&start, what, &location)
    }

    /// Uploads blob `digest` from a file or from memory; checks the digest
    /// the registry reports. A file larger than a chunk goes in chunks
    /// (`PATCH` with `Content-Range`, then `PUT ?digest=`), unless the
    /// registry refused a `PATCH` before; then, and for a file of one chunk
    /// or bytes in memory, in one `PUT`. (A single `PATCH` would carry the
    /// same bytes and be resumed no better, and the registry handles one
    /// request less: a fifth of its work for the many small layers of an
    /// image.)
    pub(crate) fn upload(&self, digest: &Digest, body: &Body<'_>) -> Result<(), Error> {
        let what = format!("blob {}", digest.prefixed());
        if let Body::File(path, size) = *body {
            if size > self.chunk_size && !self.chunks_refused.load(Ordering::Relaxed) {
                match self.upload_chunked(digest, &what, path, size)? {
                    Chunked::Done => return Ok(()),
                    Chunked::Refused => self.chunks_refused.store(true, Ordering::Relaxed),
                }
            }
        }
        self.upload_monolithic(digest, &what, body)
    }

    /// Appends `digest=` to an upload URL.
    fn with_digest(url: &str, digest: &Digest) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}digest={}", encode(&digest.prefixed()))
    }

    /// A monolithic upload: POST, then one PUT with the whole body.
    fn upload_monolithic(&self, digest: &Digest, what: &str, body: &Body<'_>) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let put = Self::with_digest(&self.start_upload(what)?, digest);
            let resp = self.send(
                "PUT",
                &put,
                what,
                &[("Content-Type", "application/octet-stream")],
                body,
            )?;
            let status = resp.status().as_u16();
            if status == 201 {
                return check_digest(&resp, &put, what, digest);
            }
            // An upload session can fail as a whole; start a new one.
            if (resp.status().is_server_error() || status == 404) && attempt < ATTEMPTS {
                backoff(attempt);
                continue;
            }
            return Err(self.status_error("PUT", &put, what, resp));
        }
    }

    /// A chunked upload of the file `path` (`size` bytes): POST, a `PATCH`
    /// per chunk (see [`Client::send_chunks`]), then `PUT ?digest=` with no
    /// body. `Chunked::Refused` when the first `PATCH` is refused (400,
    /// 405, 501: a registry without chunked uploads).
    fn upload_chunked(
        &self,
        digest: &Digest,
        what: &str,
        path: &Path,
        size: u64,
    ) -> Result<Chunked, Error> {
        let chunk = self.chunk_size;
        let mut next = |offset: u64| (offset < size).then(|| chunk.min(size - offset));
        match self.send_chunks(what, path, &mut next)? {
            None => Ok(Chunked::Refused),
            Some(session) => self
                .close_session(&session, digest, what)
                .map(|()| Chunked::Done),
        }
    }

    /// Whether a chunked upload may be tried: the registry has not
    /// refused a `PATCH`.
    pub(crate) fn chunks_allowed(&self) -> bool {
        !self.chunks_refused.load(Ordering::Relaxed)
    }

    /// The most bytes of one `PATCH`.
    pub(crate) fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Sends the file `path` in `PATCH`es into a new upload session:
    /// `next(offset)` says how many bytes from `offset` go next (it may
    /// wait for them to be written: see `stream`), `None` when none are
    /// left. The session, every byte sent; `None` when the first `PATCH`
    /// is refused (400, 405, 501: a registry without chunked uploads;
    /// later uploads then go in one `PUT`).
    ///
    /// A chunk that fails (a dropped connection, a 5xx, a 429) is
    /// followed by `GET` on the upload URL: when the registry says
    /// (`Range: 0-N`) which bytes it holds, the upload goes on from there;
    /// when it no longer knows the session or holds bytes we did not see
    /// acknowledged, a new session starts from the first byte. A blob is
    /// content-addressed, so a restart never stores it twice.
    pub(crate) fn send_chunks(
        &self,
        what: &str,
        path: &Path,
        next: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Result<Option<Session>, Error> {
        // Recoveries (resumes and restarts) before a failure is final.
        let mut recoveries = 0;
        let mut url = self.start_upload(what)?;
        let mut offset = 0;
        let mut first = true;
        while let Some(len) = next(offset).filter(|&len| len > 0) {
            let range = format!("{offset}-{}", offset + len - 1);
            let sent = self.send_with(
                "PATCH",
                &url,
                what,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                &Body::Range(path, offset, len),
                false,
            );
            let failed = match sent {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    let next = location(&resp).ok_or_else(|| Error::Status {
                        method: "PATCH",
                        url: shown_url(&url),
                        what: what.to_owned(),
                        status: 202,
                        body: "no Location header".to_owned(),
                    })?;
                    url = self.upload_url(&url, what, &next)?;
                    offset += len;
                    first = false;
                    continue;
                }
                Ok(resp) if first && matches!(resp.status().as_u16(), 400 | 405 | 501) => {
                    self.chunks_refused.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                // 416: the registry holds other bytes than we think.
                Ok(resp)
                    if resp.status().is_server_error()
                        || matches!(resp.status().as_u16(), 416 | 429) =>
                {
                    self.status_error("PATCH", &url, what, resp)
                }
                Ok(resp) => return Err(self.status_error("PATCH", &url, what, resp)),
                Err(e @ Error::Request { .. }) => e,
                Err(e) => return Err(e),
            };
            recoveries += 1;
            if recoveries >= 2 * ATTEMPTS {
                return Err(failed);
            }
            backoff(recoveries.min(ATTEMPTS));
            match self.upload_status(&url, what)? {
                // The registry holds exactly what was acknowledged: go on.
                Some((held, next)) if held == offset => url = next,
                // It holds something else, or lost the session: restart.
                _ => {
                    url = self.start_upload(what)?;
                    self.meter.take_back(offset);
                    offset = 0;
                }
            }
        }
        Ok(Some(Session { url, offset }))
    }

    /// Ends a session whose bytes are all sent: `PUT ?digest=` with no
    /// body, and the digest the registry reports checked.
    pub(crate) fn close_session(
        &self,
        session: &Session,
        digest: &Digest,
        what: &str,
    ) -> Result<(), Error> {
        let put = Self::with_digest(&session.url, digest);
        let resp = self.send("PUT", &put, what, &[], &Body::None)?;
        match resp.status().as_u16() {
            201 => check_digest(&resp, &put, what, digest),
            // A PUT that completed although its answer was lost leaves no
            // session: the blob is there when HEAD says so.
            404 if self.has_blob(digest)? => Ok(()),
            _ => Err(self.status_error("PUT", &put, what, resp)),
        }
    }

    /// Abandons a session (`DELETE` on its URL), best effort: a registry
    /// also drops sessions left open.
    pub(crate) fn cancel_session(&self, session: &Session, what: &str) {
        let _ = self.send_with("DELETE", &session.url, what, &[], &Body::None, false);
    }

    /// `GET` on an upload URL: how many bytes the registry holds (from
    /// `Range: 0-N`) and the URL to go on with; `None` when it no longer
    /// knows the session (or answers otherwise).
    fn upload_status(&self, url: &str, what: &str) -> Result<Option<(u64, String)>, Error> {
        let resp = match self.send("GET", url, what, &[], &Body::None) {
            Ok(resp) => resp,
            Err(Error::Request { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if resp.status().as_u16() != 204 {
            return Ok(None);
        }
        let held = resp
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(held_bytes);
        let next = match location(&resp) {
            Some(l) => self.upload_url(url, what, &l)?,
            None => url.to_owned(),
        };
        Ok(held.map(|h| (h, next)))
    }

    /// PUTs `manifest` (an OCI image manifest) as `tag`.
    ///
    /// # Errors
    /// When the registry refuses it or reports another digest.
    pub fn put_manifest(&self, tag: &str, manifest: &[u8]) -> Result<Digest, Error> {
        self.put_typed_manifest(tag, manifest, MANIFEST_MEDIA_TYPE)
    }

    /// PUTs `manifest` of media type `media_type` (an image manifest or
    /// index) as `tag`, or by digest when `tag` is `sha256:…`.
    ///
    /// # Errors
    /// When the registry refuses it or reports another digest.
    pub fn put_typed_manifest(
        &self,
        tag: &str,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<Digest, Error> {
        self.put_manifest_answer(tag, manifest, media_type)
            .map(|(digest, _)| digest)
    }

    /// PUTs an artifact manifest with a `subject` (an SBOM) by its
    /// digest; whether the registry answered with an `OCI-Subject` header,
    /// which says it lists the artifact in its referrers API (OCI
    /// distribution 1.1). Without it the client keeps the referrers tag.
    ///
    /// # Errors
    /// When the registry refuses it or reports another digest.
    pub fn put_referrer_manifest(&self, manifest: &[u8]) -> Result<bool, Error> {
        let digest = Digest::of(manifest);
        self.put_manifest_answer(&digest.prefixed(), manifest, MANIFEST_MEDIA_TYPE)
            .map(|(_, subject)| subject)
    }

    /// GETs the image index tagged `tag` (a referrers tag): `None` when
    /// the tag does not exist. At most [`MANIFEST_LIMIT`] bytes are read.
    ///
    /// # Errors
    /// When the registry answers anything but 200 or 404, or too much.
    pub fn get_tagged_index(&self, tag: &str) -> Result<Option<Vec<u8>>, Error> {
        let what = format!("referrers tag {tag}");
        let url = self.url(&format!("manifests/{tag}"))?;
        // Every manifest type: a registry answers 404 for a manifest whose
        // type is not accepted (distribution 2.8 does for an OCI image
        // manifest), and a tag holding something else must be seen, not
        // taken for a missing one and replaced.
        let mut resp = self.send("GET", &url, &what, &[("Accept", PULL_ACCEPT)], &Body::None)?;
        match resp.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            _ => return Err(self.status_error("GET", &url, &what, resp)),
        }
        let Some(bytes) = self.read_manifest(&mut resp, &url, &what)? else {
            return Err(Error::Status {
                method: "GET",
                url: shown_url(&url),
                what,
                status: 200,
                body: "more than 4 MiB of index".to_owned(),
            });
        };
        Ok(Some(bytes))
    }

    /// PUTs `manifest` as `tag` (or digest): its digest, and whether the
    /// answer carried `OCI-Subject`.
    fn put_manifest_answer(
        &self,
        tag: &str,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<(Digest, bool), Error> {
        let digest = Digest::of(manifest);
        let what = format!("manifest {tag}");
        let url = self.url(&format!("manifests/{tag}"))?;
        let resp = self.send(
            "PUT",
            &url,
            &what,
            &[("Content-Type", media_type)],
            &Body::Bytes(manifest),
        )?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(self.status_error("PUT", &url, &what, resp));
        }
        // `201 Created` is the distribution spec's answer; Quay answers
        // `202 Accepted`, and others may `200`. Those are taken only with
        // the manifest's digest in `Docker-Content-Digest`, as registries
        // send it: a web server answering `200` to everything would
        // otherwise pass for a registry that stored the image.
        if status != 201 && !resp.headers().contains_key("docker-content-digest") {
            return Err(Error::NotRegistry {
                method: "PUT",
                url: shown_url(&url),
                what,
                status,
                reason: "it carries no `Docker-Content-Digest`, so nothing says the manifest was stored (is this the port of a web server?)",
            });
        }
        check_digest(&resp, &url, &what, &digest)?;
        let subject = resp.headers().contains_key("oci-subject");
        Ok((digest, subject))
    }
}

/// An upload session whose bytes are sent: its URL for the closing
/// `PUT ?digest=`, and how many bytes the registry acknowledged.
#[derive(Debug)]
pub(crate) struct Session {
    url: String,
    offset: u64,
}

impl Session {
    /// Bytes the registry acknowledged.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

/// How a chunked upload ended.
enum Chunked {
    Done,
    /// The registry refused `PATCH`: upload in one `PUT` instead.
    Refused,
}

/// The `Location` header of an answer.
fn location(resp: &Response) -> Option<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The bytes an upload holds from its `Range: 0-N` header: `N + 1`, except
/// that `0-0` (which distribution also answers for an empty upload) is
/// taken for none; were one byte held, the next `PATCH` is refused and the
/// upload restarts.
fn held_bytes(range: &str) -> Option<u64> {
    let (start, end) = range.trim().split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let end: u64 = end.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end.checked_add(1)? })
}

/// The manifest media types a pull accepts: OCI and docker v2, images and
/// indexes (docker's "manifest list").
pub const PULL_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How many redirects a blob GET follows.
const MAX_BLOB_REDIRECTS: usize = 4;

/// How many redirects within the registry's origin a request follows.
const MAX_SAME_ORIGIN_REDIRECTS: usize = 4;

/// How many redirects a token request follows (Go's client: 10; a realm
/// needs one or two).
const MAX_TOKEN_REDIRECTS: usize = 4;

/// Where a token request answered `status` with `location` goes next, and
/// whether it is still the `POST` (`post`) of an identity token: `301`,
/// `302` and `303` turn it into a `GET` without the form, as Go's client
/// does; `307` and `308` repeat it. Refused: no usable `Location`, HTTPS
/// to plain HTTP (the credentials or the token would travel in clear),
/// and a `POST` repeated on another origin than the realm's `home` (its
/// form holds the refresh token). A `GET` may leave the origin: it is
/// sent there without credentials.
fn token_redirect(
    current: &str,
    location: Option<&str>,
    status: u16,
    post: bool,
    home: &Origin,
) -> Result<(String, bool), String> {
    let next = location
        .and_then(|l| redirect_target(current, l))
        .ok_or_else(|| format!("a {status} redirect without a usable `Location`"))?;
    let from = Origin::of(current);
    let to = Origin::of(&next);
    if from.as_ref().is_some_and(|o| o.scheme == "https")
        && to.as_ref().is_some_and(|o| o.scheme == "http")
    {
        return Err(format!(
            "refusing a redirect from HTTPS to the plain-HTTP `{}`",
            shown_url(&next)
        ));
    }
    let post = post && matches!(status, 307 | 308);
    if post && to.as_ref() != Some(home) {
        return Err(format!(
            "refusing to send the identity token to another origin, `{}`",
            shown_url(&next)
        ));
    }
    Ok((next, post))
}

/// Where a redirect from `current` to `location` goes: an absolute http(s)
/// URL, or a path on `current`'s origin; `None` for anything else.
fn redirect_target(current: &str, location: &str) -> Option<String> {
    if Origin::of(location).is_some() {
        return Some(location.to_owned());
    }
    if !location.starts_with('/') || location.starts_with("//") {
        return None;
    }
    let (scheme, rest) = current.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    Some(format!("{scheme}://{authority}{location}"))
}

/// The most of a manifest that is read: real ones are a few KiB.
pub const MANIFEST_LIMIT: u64 = 4 << 20;

impl Client {
    /// GETs manifest `digest`: its bytes (hashed here and checked against
    /// `digest`, and against `Docker-Content-Digest` when the registry
    /// sends it) and its `Content-Type`.
    ///
    /// # Errors
    /// When the registry refuses, the answer is larger than
    /// [`MANIFEST_LIMIT`], or its bytes are not `digest`'s.
    pub fn get_manifest(&self, digest: &Digest) -> Result<(Vec<u8>, String), Error> {
        let what = format!("manifest {}", digest.prefixed());
        let url = self.url(&format!("manifests/{}", digest.prefixed()))?;
        let mut resp = self.send("GET", &url, &what, &[("Accept", PULL_ACCEPT)], &Body::None)?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error("GET", &url, &what, resp));
        }
        check_digest(&resp, &url, &what, digest)?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let Some(bytes) = self.read_manifest(&mut resp, &url, &what)? else {
            return Err(self.mismatch(&url, &what, digest, "more than 4 MiB of manifest"));
        };
        let got = Digest::of(&bytes);
        if got != *digest {
            return Err(self.mismatch(&url, &what, digest, &got.prefixed()));
        }
        Ok((bytes, media_type))
    }

    /// GETs blob `digest` into `out`, at most `size` bytes, hashing as it
    /// streams; the bytes written are `digest`'s or this is an error (the
    /// caller drops what it wrote).
    ///
    /// # Errors
    /// When the registry refuses, the body is longer or shorter than
    /// `size`, or its bytes are not `digest`'s.
    pub fn get_blob(
        &self,
        digest: &Digest,
        size: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        let what = format!("blob {}", digest.prefixed());
        let url = self.url(&format!("blobs/{}", digest.prefixed()))?;
        // The deadline grows with the size, as an upload's does.
        let mut url = url;
        let mut resp = self.send_sized("GET", &url, &what, size)?;
        // Registries send blobs from a CDN (Docker Hub, GHCR, ECR answer
        // 307). Followed here by hand, a few hops, http(s) only: `send`
        // gives another origin no credentials, and the bytes are checked
        // against the digest wherever they come from.
        for _ in 0..MAX_BLOB_REDIRECTS {
            if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                break;
            }
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| redirect_target(&url, l));
            let Some(next) = location else {
                return Err(self.status_error("GET", &url, &what, resp));
            };
            url = next;
            resp = self.send_sized("GET", &url, &what, size)?;
        }
        if resp.status().as_u16() != 200 {
            return Err(self.status_error("GET", &url, &what, resp));
        }
        let mut hashing = crate::oci::HashCountWriter::new(out);
        std::io::copy(
            &mut resp.body_mut().as_reader().take(size.saturating_add(1)),
            &mut hashing,
        )
        .map_err(|e| self.read_error(&url, &what, e))?;
        let (_, got, count) = hashing
            .finish()
            .map_err(|e| self.read_error(&url, &what, e))?;
        if count != size {
            return Err(self.mismatch(
                &url,
                &what,
                digest,
                &format!("{count} bytes where the manifest says {size}"),
            ));
        }
        if got != *digest {
            return Err(self.mismatch(&url, &what, digest, &got.prefixed()));
        }
        Ok(())
    }

    /// A GET whose deadline is that of a body of `size` bytes.
    fn send_sized(
        &self,
        method: &'static str,
        url: &str,
        what: &str,
        size: u64,
    ) -> Result<Response, Error> {
        // `send` sizes the deadline by the request body; a download's
        // is its answer, so a stand-in of that length is given. It is never
        // sent: GET sends no body.
        self.send(
            method,
            url,
            what,
            &[],
            &Body::File(Path::new("/dev/null"), size),
        )
    }

    /// The body of a manifest or index answer, at most [`MANIFEST_LIMIT`]
    /// bytes; `None` when the registry sends more.
    fn read_manifest(
        &self,
        resp: &mut Response,
        url: &str,
        what: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut bytes = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(MANIFEST_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(url, what, e))?;
        Ok((bytes.len() as u64 <= MANIFEST_LIMIT).then_some(bytes))
    }

    fn read_error(&self, url: &str, what: &str, e: std::io::Error) -> Error {
        Error::Status {
            method: "GET",
            url: shown_url(url),
            what: what.to_owned(),
            status: 200,
            body: self.redact(&format!("reading the answer failed: {e}")),
        }
    }

    fn mismatch(&self, url: &str, what: &str, digest: &Digest, got: &str) -> Error {
        Error::DigestMismatch {
            url: shown_url(url),
            what: what.to_owned(),
            expected: digest.prefixed(),
            got: self.redact(&snippet(got)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Endpoint {
    fn new(scheme: &str, host: &str) -> Self {
        let base = format!("{scheme}://{host}");
        let origin = Origin::of(&base).unwrap_or(Origin {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port: 0,
        });
        Self { base, origin }
    }
}

/// How long a token may be used from now: `expires_in` seconds (60 when
/// absent, as the spec says) counted from `issued_at` when that is in the
/// past (the realm's clock), less a margin so it is not sent as it
/// expires.
/// What a token realm's answer gives.
#[derive(PartialEq, Eq)]
struct TokenAnswer {
    token: String,
    refresh: Option<String>,
    lifetime: Duration,
}

/// A token realm's JSON answer (`token` or `access_token`, a
/// `refresh_token`, `expires_in`, `issued_at`) read at `now`; the error
/// is what follows the realm's URL in the message, and never holds the
/// answer's text (serde_json's errors name a position only).
fn token_answer(text: &str, now: jiff::Timestamp) -> Result<TokenAnswer, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!(": not JSON: {e}"))?;
    // As docker takes them: an OAuth2 server's non-empty `access_token`
    // first, else `token` (a realm may send both, one of them empty).
    let field = |key: &str| doc[key].as_str().filter(|t| !t.is_empty());
    let token = field("access_token")
        .or_else(|| field("token"))
        .ok_or_else(|| " gave no token".to_owned())?;
    // It goes into a header: a token that cannot is refused, not sent.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(" gave a token that is not printable ASCII".to_owned());
    }
    Ok(TokenAnswer {
        token: token.to_owned(),
        refresh: doc["refresh_token"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        lifetime: token_lifetime(doc["expires_in"].as_u64(), doc["issued_at"].as_str(), now),
    })
}

fn token_lifetime(
    expires_in: Option<u64>,
    issued_at: Option<&str>,
    now: jiff::Timestamp,
) -> Duration {
    let lifetime = expires_in
        .filter(|&s| s > 0)
        .map_or(DEFAULT_TOKEN_LIFETIME, |s| {
            Duration::from_secs(s.min(86_400 * 365))
        });
    let age = issued_at
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
        .unwrap_or(Duration::ZERO);
    let left = lifetime.saturating_sub(age);
    left.saturating_sub((left / 10).min(Duration::from_secs(10)))
}

/// The trust roots for `host`: the system bundle (or `bundle`, from
/// `SSL_CERT_FILE`), `ca_file`, and every `*.crt` in docker's
/// `certs_d/HOST[:PORT]/`. An error names the file.
fn root_certs(
    host: &str,
    bundle: Option<PathBuf>,
    ca_file: Option<&Path>,
    certs_d: &Path,
) -> Result<ureq::tls::RootCerts, String> {
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    match bundle {
        Some(b) => files.push((b, true)),
        None if Path::new(SYSTEM_BUNDLE).exists() => {
            files.push((PathBuf::from(SYSTEM_BUNDLE), false));
        }
        None => {}
    }
    if let Some(f) = ca_file {
        files.push((f.to_owned(), true));
    }
    // `certs.d/HOST:PORT/`, as docker names it (`:` in a directory name).
    let dir = certs_d.join(host);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        found.sort();
        files.extend(found.into_iter().map(|p| (p, true)));
    }
    let mut certs = Vec::new();
    for (file, required) in &files {
        // Bounded, and a FIFO is not waited on: `--ca-file /dev/zero` ends
        // with an error, not out of memory (a system bundle is ~200 KiB).
        let pem = crate::input::read_bounded(file, CA_FILE_LIMIT)
            .map_err(|e| format!("cannot read CA file `{}`: {e}", file.display()))?;
        let before = certs.len();
        for item in ureq::tls::parse_pem(&pem).flatten() {
            if let ureq::tls::PemItem::Certificate(cert) = item {
                certs.push(cert);
            }
        }
        if *required && certs.len() == before {
            return Err(format!(
                "CA file `{}` holds no PEM certificate",
                file.display()
            ));
        }
    }
    if certs.is_empty() {
        return Ok(ureq::tls::RootCerts::WebPki);
    }
    Ok(ureq::tls::RootCerts::Specific(Arc::new(certs)))
}

/// Whether scope `have` (`TYPE:NAME:ACTIONS`) grants all that `want` asks:
/// the same resource and every action of `want`, in any order — docker's
/// registry names a repository's actions in no fixed order (`push,pull`
/// one time, `pull,push` the next).
fn scope_covers(have: &str, want: &str) -> bool {
    match (have.rsplit_once(':'), want.rsplit_once(':')) {
        (Some((resource, have)), Some((wanted, want))) => {
            resource == wanted && want.split(',').all(|a| have.split(',').any(|h| h == a))
        }
        _ => have == want,
    }
}

fn check_digest(resp: &Response, url: &str, what: &str, digest: &Digest) -> Result<(), Error> {
    match resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(got) if got != digest.prefixed() => Err(Error::DigestMismatch {
            url: shown_url(url),
            what: what.to_owned(),
            expected: digest.prefixed(),
            got: snippet(got),
        }),
        _ => Ok(()),
    }
}

/// Whether an answer says it is an HTML page.
fn is_html(resp: &Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

/// Whether an answer carries the header every registry API answer does
/// (distribution, Harbor, Quay, GHCR, ECR …), though the spec does not
/// require it.
fn is_registry_answer(resp: &Response) -> bool {
    resp.headers()
        .contains_key("docker-distribution-api-version")
}

/// The start of `text`, on one line: what an error quotes of an answer.
fn snippet(text: &str) -> String {
    let text = text.trim();
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What [`Error::Tls`] says of a server that answered a TLS handshake in
/// plain HTTP (the advice it gets is `--insecure`).
pub(crate) const PLAIN_HTTP_ANSWER: &str = "it answered in plain HTTP, not TLS";

/// What [`Error::Tls`] says of a registry that speaks HTTPS only, sent
/// plain HTTP (`--insecure`, or a loopback port that did not answer the
/// TLS probe in time).
pub(crate) const HTTPS_ONLY: &str = "it speaks HTTPS only, and was sent plain HTTP";

/// Why an HTTPS request failed at TLS: the server's certificate or
/// handshake refused (see [`tls_refusal`]), or a server that speaks plain
/// HTTP (rustls' `InvalidContentType`: the answer is no TLS record). Both
/// are final, never retried as connection trouble; the loopback probe
/// (`Client::endpoint`) takes the second for its cue to use plain HTTP.
fn tls_failure(e: &ureq::Error) -> Option<String> {
    tls_refusal(e, "registry").or_else(|| {
        e.to_string()
            .contains("InvalidContentType")
            .then(|| PLAIN_HTTP_ANSWER.to_owned())
    })
}

/// Whether a failed request is worth retrying (the connection, not the
/// request). Timeouts are not: see [`Client::send`].
fn transient(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(_) | ureq::Error::ConnectionFailed)
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// The challenge answered of a 401's `WWW-Authenticate` headers (RFC 7235
/// allows several, e.g. `Negotiate` from a proxy before the registry's
/// `Bearer`): the first Bearer one, else the first Basic one, as docker
/// prefers them; else the first, whose scheme the error names.
fn pick_challenge<'a>(headers: impl Iterator<Item = &'a str>) -> String {
    let headers: Vec<&str> = headers.collect();
    let with = |scheme: &str| {
        headers
            .iter()
            .find(|h| split_challenge(h).0.eq_ignore_ascii_case(scheme))
    };
    with("bearer")
        .or_else(|| with("basic"))
        .or(headers.first())
        .map_or_else(String::new, |h| (*h).to_owned())
}

/// The scheme and the parameters of a `WWW-Authenticate` challenge.
fn split_challenge(challenge: &str) -> (&str, &str) {
    let challenge = challenge.trim();
    challenge.split_once(' ').unwrap_or((challenge, ""))
}

/// `key="value",key2=value2` of a `WWW-Authenticate` challenge. Written by
/// hand: the HTTP crates we have (ureq, http) do not parse auth
/// parameters, and this small grammar is all a registry uses. Any input
/// ends in at most one pass over it, without a panic.
fn challenge_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted-string (RFC 9110 §5.6.4): `\x` stands for `x`.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            match after.find(',') {
                Some(end) => (after[..end].to_owned(), &after[end..]),
                None => (after.to_owned(), ""),
            }
        };
        out.insert(key, value);
        rest = after.trim_start_matches([',', ' ']);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A challenge naming our repository's actions in another order
    /// (`push,pull`) asks for nothing more; another repository is added.
    #[test]
    fn quoted_challenge_values_take_backslash_escapes() {
        let p = challenge_params(
            r#"realm="http://127.0.0.1:9/t",service="a\"b\\c",scope="repository:x:pull",error="unterminated\"#,
        );
        assert_eq!(p["realm"], "http://127.0.0.1:9/t");
        assert_eq!(p["service"], r#"a"b\c"#);
        assert_eq!(p["scope"], "repository:x:pull");
        assert_eq!(p["error"], "unterminated");
    }

    #[test]
    fn bearer_then_basic_is_picked_among_several_challenges() {
        let pick = |h: &[&str]| pick_challenge(h.iter().copied());
        assert_eq!(
            pick(&["Negotiate", r#"Basic realm="r""#, r#"Bearer realm="t""#]),
            r#"Bearer realm="t""#
        );
        assert_eq!(
            pick(&["Negotiate", r#"basic realm="r""#]),
            r#"basic realm="r""#
        );
        assert_eq!(pick(&["Negotiate", "NTLM"]), "Negotiate");
        assert_eq!(pick(&[]), "");
    }

    #[test]
    fn scopes_in_another_order_are_not_asked_twice() {
        assert!(scope_covers(
            "repository:a/b:pull,push",
            "repository:a/b:push,pull"
        ));
        assert!(scope_covers(
            "repository:a/b:pull,push",
            "repository:a/b:pull"
        ));
        assert!(!scope_covers(
            "repository:a/b:pull",
            "repository:a/b:pull,push"
        ));
        assert!(!scope_covers(
            "repository:a/b:pull,push",
            "repository:a/c:pull"
        ));
        assert!(!scope_covers(
            "repository:a/b:pull,push",
            "registry:catalog:*"
        ));
    }

    #[test]
    fn challenges() {
        let p = challenge_params(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
        assert_eq!(split_challenge(" Bearer realm=x"), ("Bearer", "realm=x"));
    }

    #[test]
    fn origins() {
        let o = |u| Origin::of(u);
        assert_eq!(o("http://Reg.Example:80/v2/"), o("http://reg.example/x?y"));
        assert_ne!(
            o("http://127.0.0.1:5000/v2/"),
            o("http://127.0.0.1:5001/v2/")
        );
        assert_ne!(o("http://reg.example/"), o("https://reg.example/"));
        assert_ne!(o("http://reg.example/"), o("http://user@evil.example/"));
        assert_eq!(o("ftp://reg.example/"), None);
        assert_eq!(o("/v2/x"), None);
        assert_eq!(
            shown_url("https://u:p@h.example:1/v2/a/blobs/uploads/x?_state=s3cr3t#f"),
            "https://h.example:1/v2/a/blobs/uploads/x"
        );
    }

    fn client(creds: Option<Credentials>) -> Client {
        let r = Reference::parse("127.0.0.1:5000/team/app:1").unwrap();
        Client::new(
            &r,
            ClientOptions {
                credentials: creds,
                ..ClientOptions::default()
            },
        )
    }

    #[test]
    fn debug_and_errors_show_no_secret() {
        let creds = Credentials::parse("someone:pa55-secret").unwrap();
        let c = client(Some(creds.clone()));
        *c.authorization.lock().unwrap() = Some("Bearer tok-SECRET".to_owned());
        c.tokens.lock().unwrap().insert(
            "s".to_owned(),
            CachedToken {
                header: "Bearer cached-SECRET".to_owned(),
                expires: Instant::now(),
            },
        );
        *c.refresh_token.lock().unwrap() = Some("refresh-SECRET".to_owned());
        let debug = format!("{c:?}");
        for secret in ["SECRET", "pa55-secret", &creds.basic_token()] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let shown = c.redact("a cached-SECRET b refresh-SECRET");
        assert!(!shown.contains("SECRET"), "{shown}");
        // An identity token's Debug and redaction.
        let id = client(Some(Credentials::identity_token("idtok-SECRET")));
        assert!(!format!("{id:?}").contains("SECRET"));
        assert!(!id.redact("x idtok-SECRET").contains("SECRET"));
        // An error body echoing our headers.
        let echoed = format!(
            "denied: Authorization: {} / Bearer tok-SECRET / pa55-secret",
            creds.basic()
        );
        let shown = c.redact(&echoed);
        for secret in ["pa55-secret", "tok-SECRET", &creds.basic_token()] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let e = Error::Status {
            method: "GET",
            url: shown_url("http://127.0.0.1:5000/v2/?_state=x"),
            what: "w".to_owned(),
            status: 401,
            body: shown,
        };
        assert!(!format!("{e} {e:?}").contains("secret"), "{e}");
        let t = Error::Timeout {
            method: "GET",
            url: "http://127.0.0.1:5000/v2/".to_owned(),
            what: "API version check".to_owned(),
            after: Duration::from_secs(2),
        };
        assert!(t.to_string().contains("127.0.0.1:5000"), "{t}");
    }

    #[test]
    fn token_answers_take_the_token_docker_takes() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let token = |text: &str| token_answer(text, now).map(|a| a.token);
        assert_eq!(token(r#"{"token":"t1"}"#).unwrap(), "t1");
        assert_eq!(token(r#"{"access_token":"a1"}"#).unwrap(), "a1");
        // Both: the OAuth2 one, as docker; an empty one is no token.
        assert_eq!(
            token(r#"{"token":"t1","access_token":"a1"}"#).unwrap(),
            "a1"
        );
        assert_eq!(token(r#"{"token":"","access_token":"a1"}"#).unwrap(), "a1");
        assert_eq!(token(r#"{"token":"t1","access_token":""}"#).unwrap(), "t1");
        assert!(token(r#"{"token":"","access_token":""}"#).is_err());
    }

    #[test]
    fn token_lifetimes() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let secs = |e, i| token_lifetime(e, i, now).as_secs_f64();
        // No `expires_in`: the spec's 60 s, less a tenth.
        assert_eq!(secs(None, None), 54.0);
        assert_eq!(secs(Some(300), None), 290.0);
        // Issued 100 s ago (the realm's clock): 200 s left.
        assert_eq!(secs(Some(300), Some("2026-01-01T00:08:20Z")), 190.0);
        // Issued "in the future" (a clock ahead): counted from now.
        assert_eq!(secs(Some(300), Some("2026-01-01T01:00:00Z")), 290.0);
        // Long expired, or nonsense: used for no time, never a panic.
        assert_eq!(secs(Some(30), Some("2025-01-01T00:00:00Z")), 0.0);
        assert_eq!(secs(Some(30), Some("yesterday")), 27.0);
        assert!(token_lifetime(Some(u64::MAX), None, now) <= Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn expired_tokens_are_not_used() {
        let c = client(None);
        *c.endpoint.lock().unwrap() = Some(Endpoint::new("http", "127.0.0.1:5000"));
        let mut params = BTreeMap::new();
        // A realm nothing listens on: renewing fails, so a renewal shows.
        params.insert("realm".to_owned(), "http://127.0.0.1:9/token".to_owned());
        *c.challenge.lock().unwrap() = Some(params.clone());
        let key = c.scopes(&params).join(" ");
        let cached = |secs_left: i64| CachedToken {
            header: "Bearer old-tok".to_owned(),
            expires: if secs_left >= 0 {
                Instant::now() + Duration::from_secs(secs_left.unsigned_abs())
            } else {
                Instant::now() - Duration::from_secs(secs_left.unsigned_abs())
            },
        };
        c.tokens.lock().unwrap().insert(key.clone(), cached(100));
        assert!(c.renew_expired_token("http://127.0.0.1:5000/v2/").is_ok());
        c.tokens.lock().unwrap().insert(key, cached(-1));
        let e = c
            .renew_expired_token("http://127.0.0.1:5000/v2/")
            .unwrap_err();
        assert!(
            e.to_string().contains("http://127.0.0.1:9/token:")
                && !e.to_string().contains("refusing"),
            "{e}"
        );
    }

    #[test]
    fn scopes_add_what_the_challenge_asks() {
        let c = client(None);
        let mut p = BTreeMap::new();
        assert_eq!(c.scopes(&p), ["repository:team/app:pull,push"]);
        p.insert(
            "scope".to_owned(),
            "repository:team/app:pull,push repository:other/base:pull".to_owned(),
        );
        assert_eq!(
            c.scopes(&p),
            [
                "repository:team/app:pull,push",
                "repository:other/base:pull"
            ]
        );
        // docker's registry names the actions in no fixed order.
        p.insert(
            "scope".to_owned(),
            "repository:team/app:push,pull repository:other/base:pull".to_owned(),
        );
        assert_eq!(
            c.scopes(&p),
            [
                "repository:team/app:pull,push",
                "repository:other/base:pull"
            ]
        );
    }

    /// A pull asks for a token to pull, nothing more.
    #[test]
    fn a_pull_asks_for_pull_only() {
        let r = Reference::parse("127.0.0.1:5000/team/base").unwrap();
        let options = ClientOptions {
            pull_only: true,
            ..ClientOptions::default()
        };
        let c = Client::new(&r, options);
        assert_eq!(c.scopes(&BTreeMap::new()), ["repository:team/base:pull"]);
    }

    #[test]
    fn root_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        // An unreadable or empty CA file is an error naming it.
        let e = root_certs("h:1", None, Some(&none), dir.path()).unwrap_err();
        assert!(e.contains("none"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").unwrap();
        let e = root_certs("h:1", None, Some(&junk), dir.path()).unwrap_err();
        assert!(e.contains("junk.pem") && e.contains("no PEM"), "{e}");
        // A certs.d directory for another host is not read.
        std::fs::create_dir_all(dir.path().join("other:1")).unwrap();
        std::fs::write(dir.path().join("other:1/ca.crt"), "junk").unwrap();
        assert!(root_certs("h:1", None, None, dir.path()).is_ok());
        assert!(root_certs("other:1", None, None, dir.path()).is_err());
        // `/dev/zero` or a FIFO nobody writes to (as `--ca-file` or
        // `SSL_CERT_FILE`): an error naming it, at once.
        let e = root_certs("h:1", None, Some(Path::new("/dev/zero")), dir.path()).unwrap_err();
        assert!(
            e.contains("/dev/zero") && e.contains("more than 16 MiB"),
            "{e}"
        );
        let fifo = dir.path().join("fifo.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = root_certs("h:1", Some(fifo), None, dir.path()).unwrap_err();
        assert!(e.contains("fifo.pem") && e.contains("no PEM"), "{e}");
    }

    #[test]
    fn upload_deadlines_grow_with_size() {
        let t = Timeouts {
            request: Duration::from_secs(10),
            min_upload_rate: 1000,
        };
        assert_eq!(t.for_body(0), Duration::from_secs(10));
        assert_eq!(t.for_body(5000), Duration::from_secs(15));
        assert!(Timeouts::default().for_body(u64::MAX) > Duration::from_secs(1 << 40));
    }

    /// The requests a test server got: path, and whether with an
    /// `Authorization`.
    type Asked = Arc<Mutex<Vec<(String, bool)>>>;

    /// A server on 127.0.0.1 answering `answer(path, authorization)`
    /// (status, headers, body) to at most `max` requests, one per
    /// connection; what it was asked (path, whether it got an
    /// `Authorization`).
    fn token_server(
        max: usize,
        answer: impl Fn(&str, Option<&str>) -> (u16, Vec<(String, String)>, String) + Send + 'static,
    ) -> (u16, Asked) {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max) {
                let Ok(stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let mut auth = None;
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((&header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "authorization" => auth = Some(value.trim().to_owned()),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                log.lock().unwrap().push((path.clone(), auth.is_some()));
                let (status, headers, text) = answer(&path, auth.as_deref());
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                    text.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&text);
                let _ = (&stream).write_all(out.as_bytes());
            }
        });
        (port, asked)
    }

    /// A registry on `port` whose bearer realm is `/token` of its own
    /// origin, `token` answering the realm (and what it redirects to);
    /// the outcome of a ping with user `u`'s credentials.
    fn ping_through(
        token: impl Fn(&str, Option<&str>) -> (u16, Vec<(String, String)>, String) + Send + 'static,
    ) -> (Result<(), Error>, Vec<(String, bool)>) {
        let port = Arc::new(std::sync::OnceLock::new());
        let known = Arc::clone(&port);
        let (p, asked) = token_server(12, move |path, auth| {
            let port = known.get().copied().unwrap_or(0);
            if path.starts_with("/v2/") {
                if auth == Some("Bearer good") {
                    return (200, Vec::new(), "{}".to_owned());
                }
                let realm = format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"t\"");
                return (
                    401,
                    vec![("WWW-Authenticate".to_owned(), realm)],
                    String::new(),
                );
            }
            token(path, auth)
        });
        port.set(p).unwrap();
        let r = Reference::parse(&format!("127.0.0.1:{p}/team/app:1")).unwrap();
        let c = Client::new(
            &r,
            ClientOptions {
                credentials: Credentials::parse("u:pw-secret"),
                insecure: true,
                ..ClientOptions::default()
            },
        );
        let result = c.ping();
        let asked = asked.lock().unwrap().clone();
        (result, asked)
    }

    fn redirect(to: &str) -> (u16, Vec<(String, String)>, String) {
        (
            302,
            vec![("Location".to_owned(), to.to_owned())],
            String::new(),
        )
    }

    /// A token realm answering a redirect is followed, as Go's client
    /// follows it (it was an error: "answered 302"): credentials kept on
    /// the realm's origin, dropped on another; a loop ends after a few
    /// hops with an error.
    #[test]
    fn token_realm_redirects_are_followed_within_limits() {
        let token = || (200, Vec::new(), r#"{"token":"good"}"#.to_owned());
        // Within the realm's origin: the credentials go along.
        let (result, asked) = ping_through(move |path, auth| {
            if path.starts_with("/token?") {
                redirect("/moved/token?again=1")
            } else {
                assert!(auth.is_some_and(|a| a.starts_with("Basic ")), "{path}");
                token()
            }
        });
        result.unwrap();
        assert!(asked
            .iter()
            .any(|(p, auth)| p.starts_with("/moved/token") && *auth));

        // To another origin: followed, no credentials sent there.
        let (other, other_asked) = token_server(1, move |_, _| token());
        let (result, asked) = ping_through(move |path, _| {
            assert!(path.starts_with("/token?"), "{path}");
            redirect(&format!("http://127.0.0.1:{other}/elsewhere"))
        });
        result.unwrap();
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert_eq!(
            other_asked.lock().unwrap().clone(),
            vec![("/elsewhere".to_owned(), false)]
        );

        // A loop: an error after a few hops, naming the realm.
        let (result, asked) = ping_through(|_, _| redirect("/token?loop"));
        let e = result.unwrap_err().to_string();
        assert!(e.contains("redirects") && e.contains("/token"), "{e}");
        assert!(!e.contains("pw-secret"), "{e}");
        assert_eq!(asked.len(), 2 + MAX_TOKEN_REDIRECTS, "{asked:?}");
    }

    #[test]
    fn token_redirect_limits() {
        let home = Origin::of("https://auth.example/token").unwrap();
        let from = "https://auth.example/token?scope=x";
        let go = |l: Option<&str>, status, post| token_redirect(from, l, status, post, &home);
        assert_eq!(
            go(Some("/t2"), 302, false),
            Ok(("https://auth.example/t2".to_owned(), false))
        );
        // 301-303 turn the POST into a GET; 307/308 repeat it at home only.
        assert_eq!(
            go(Some("/t2"), 303, true),
            Ok(("https://auth.example/t2".to_owned(), false))
        );
        assert_eq!(
            go(Some("/t2"), 307, true),
            Ok(("https://auth.example/t2".to_owned(), true))
        );
        assert!(go(Some("https://other.example/t"), 308, true).is_err());
        assert_eq!(
            go(Some("https://other.example/t"), 302, true),
            Ok(("https://other.example/t".to_owned(), false))
        );
        // Never down to plain HTTP, nor to nowhere.
        let e = go(Some("http://auth.example/token"), 302, false).unwrap_err();
        assert!(e.contains("plain-HTTP"), "{e}");
        for bad in [None, Some("//evil/x"), Some("file:///etc/passwd"), Some("")] {
            assert!(go(bad, 302, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blob_redirects() {
        let from = "https://r.io:5000/v2/a/blobs/sha256:x";
        assert_eq!(
            redirect_target(from, "/cdn/x?sig=1").as_deref(),
            Some("https://r.io:5000/cdn/x?sig=1")
        );
        assert_eq!(
            redirect_target(from, "https://cdn.example/x").as_deref(),
            Some("https://cdn.example/x")
        );
        for bad in [
            "//evil/x",
            "file:///etc/passwd",
            "relative",
            "",
            "ftp://x/y",
        ] {
            assert_eq!(redirect_target(from, bad), None, "{bad}");
        }
    }

    #[test]
    fn locations() {
        let c = client(None);
        let start = c.url("blobs/uploads/").unwrap();
        let ok = |l| c.upload_url(&start, "b", l).unwrap();
        assert_eq!(ok("/v2/x?a=1"), "http://127.0.0.1:5000/v2/x?a=1");
        assert_eq!(ok("http://other.example:9/up"), "http://other.example:9/up");
        assert!(!c.is_ours(&ok("http://127.0.0.1:5001/up")));
        assert!(!c.is_ours(&ok("http://localhost:5000/up")));
        assert!(c.is_ours(&ok("/v2/up")));
        // Scheme-relative and odd Locations are refused, not guessed at.
        assert!(c.upload_url(&start, "b", "//evil.example/up").is_err());
        assert!(c.upload_url(&start, "b", "uploads/x").is_err());
        assert!(c.upload_url(&start, "b", "file:///etc/passwd").is_err());
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(held_bytes("0-65535"), Some(65536));
        assert_eq!(held_bytes(" 0-9 "), Some(10));
        // distribution answers `0-0` for an empty upload.
        assert_eq!(held_bytes("0-0"), Some(0));
        for bad in [
            "",
            "5-9",
            "0-",
            "bytes=0-9",
            "0-x",
            "0-18446744073709551615",
        ] {
            assert_eq!(held_bytes(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn upload_ranges_never_panic(text in "\\PC{0,40}") {
            let _ = held_bytes(&text);
        }

        #[test]
        fn challenge_parsing_never_panics(text in "\\PC{0,200}") {
            let (scheme, params) = split_challenge(&text);
            let _ = (scheme, challenge_params(params));
            let _ = challenge_params(&text);
        }

        #[test]
        fn challenge_parsing_of_challenge_like_text(
            text in "(Bearer |Basic )?([a-z]{0,6}(=(\"[^\"]{0,10}\"?|[^,]{0,10}))?[, ]{0,2}){0,8}"
        ) {
            let (_, params) = split_challenge(&text);
            let p = challenge_params(params);
            prop_assert!(p.len() <= 8);
        }

        /// A token realm's answer: any text, and JSON of the answer's
        /// shape with values of any type: a token (one a header can carry)
        /// or an error that quotes none of it.
        #[test]
        fn token_answers_never_panic_or_quote_the_answer(
            text in "\\PC{0,80}",
            fields in proptest::collection::btree_map(
                "(token|access_token|refresh_token|expires_in|issued_at|x)",
                prop_oneof![
                    Just(serde_json::Value::Null),
                    any::<i64>().prop_map(serde_json::Value::from),
                    any::<u64>().prop_map(serde_json::Value::from),
                    any::<f64>().prop_map(serde_json::Value::from),
                    "s3cr3t\\PC{0,20}".prop_map(serde_json::Value::from),
                    "[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
                        .prop_map(serde_json::Value::from),
                    Just(serde_json::json!(["s3cr3t"])),
                ],
                0..6,
            ),
            now_seconds in -377_705_116_800_i64..=253_402_207_200,
        ) {
            let now = jiff::Timestamp::from_second(now_seconds).unwrap();
            let json = serde_json::to_string(&fields).unwrap();
            for text in [text.as_str(), json.as_str()] {
                match token_answer(text, now) {
                    Ok(answer) => {
                        prop_assert!(!answer.token.is_empty());
                        prop_assert!(answer.token.bytes().all(|b| b.is_ascii_graphic()));
                        prop_assert!(answer.lifetime <= Duration::from_secs(86_400 * 365));
                    }
                    Err(why) => prop_assert!(!why.contains("s3cr3t"), "{}", why),
                }
            }
        }

        /// A redirect's or an upload's `Location`: an http(s) URL, a path
        /// on the same origin, or refused; never a panic.
        #[test]
        fn locations_never_panic(
            current in "(https?://[a-z0-9.:\\[\\]@]{0,20})?\\PC{0,30}",
            location in "(https?:|//|/)?\\PC{0,60}",
        ) {
            if let Some(target) = redirect_target(&current, &location) {
                prop_assert!(target.ends_with(&location));
            }
            // One client for every case: making one loads the trust roots.
            static CLIENT: std::sync::OnceLock<Client> = std::sync::OnceLock::new();
            let c = CLIENT.get_or_init(|| {
                let c = client(None);
                *c.endpoint.lock().unwrap() = Some(Endpoint::new("http", "127.0.0.1:5000"));
                c
            });
            if let Ok(url) = c.upload_url("http://127.0.0.1:5000/v2/", "blob", &location) {
                prop_assert!(url.starts_with("http://127.0.0.1:5000/") || Origin::of(&url).is_some());
            }
        }

        /// Any `WWW-Authenticate` headers: one of them is answered.
        #[test]
        fn any_challenges_pick_one_of_them(headers in proptest::collection::vec("((Bearer|Basic|Negotiate|bearer) )?\\PC{0,20}", 0..4)) {
            let picked = pick_challenge(headers.iter().map(String::as_str));
            prop_assert!(picked.is_empty() && headers.is_empty() || headers.contains(&picked));
        }

        #[test]
        fn urls_never_panic(text in "\\PC{0,120}") {
            let _ = Origin::of(&text);
            let shown = shown_url(&text);
            prop_assert!(!shown.contains('?'));
        }
    }
}
