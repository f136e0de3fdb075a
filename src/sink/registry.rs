//! Pushing an image to a registry over the OCI distribution API, with a
//! small blocking HTTP client (ureq, no async runtime).
//!
//! [`RegistrySink`] is a [`BlobSink`]: each layer blob is spooled to a
//! temporary file while it is compressed and hashed, then uploaded unless
//! the registry already has it (`HEAD /v2/<name>/blobs/<digest>`), with a
//! monolithic upload (`POST …/blobs/uploads/`, then `PUT <location>?digest=…`
//! streaming the file). [`RegistrySink::has_blob`] asks the registry, so a
//! layer the layer cache knows and the registry holds is never read. Small
//! blobs (config, manifest) stay in memory; [`RegistrySink::finish`]
//! uploads the config and PUTs the manifest with exactly the bytes that
//! were hashed.
//!
//! Auth: anonymous; basic (`USER:PASS` from `--creds` or
//! `~/.docker/config.json`); bearer tokens (`WWW-Authenticate: Bearer
//! realm=…,service=…,scope=…`). Transient failures (5xx, 429, connection
//! errors) are retried [`ATTEMPTS`] times.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use tempfile::{NamedTempFile, TempDir};

use super::BlobSink;
use crate::image::oci::MANIFEST_MEDIA_TYPE;
use crate::layer::Digest;

/// How many times a request is tried before a transient failure is final.
pub const ATTEMPTS: u32 = 4;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference is not `host[:port]/repo[:tag]`.
    #[error("`{reference}` is not a registry reference: {reason}")]
    Reference {
        /// The reference given.
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A request could not be sent or its answer read.
    #[error("{method} {url} ({what}) failed")]
    Request {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The blob or manifest concerned.
        what: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url} ({what}): the registry answered {status}: {body}")]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The blob or manifest concerned.
        what: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The registry stored a blob or manifest under another digest.
    #[error("{url}: the registry says `{what}` has digest {got}, expected {expected}")]
    DigestMismatch {
        /// The URL.
        url: String,
        /// The blob or manifest.
        what: String,
        /// Our digest.
        expected: String,
        /// The registry's `Docker-Content-Digest`.
        got: String,
    },
    /// Authentication failed.
    #[error("{url}: authentication failed: {reason}")]
    Auth {
        /// The URL that asked for it.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A spooled blob could not be written or read.
    #[error("failed to spool blob {what} in `{}`", path.display())]
    Io {
        /// The blob.
        what: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The docker config (`~/.docker/config.json`) could not be read.
    #[error("`{}`: {reason}", path.display())]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed `host[:port]/repo[:tag]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub host: String,
    /// The repository, `team/app`.
    pub repository: String,
    /// The tag, when given.
    pub tag: Option<String>,
}

impl Reference {
    /// Parses `host[:port]/repo[:tag]`; the host is required (it must hold
    /// a `.` or `:` or be `localhost`, as docker decides).
    ///
    /// ```
    /// use nixlayer::sink::registry::Reference;
    /// let r = Reference::parse("127.0.0.1:5000/team/app:1.0")?;
    /// assert_eq!((r.host.as_str(), r.repository.as_str(), r.tag.as_deref()),
    ///            ("127.0.0.1:5000", "team/app", Some("1.0")));
    /// assert!(Reference::parse("team/app").is_err());
    /// # Ok::<(), nixlayer::sink::registry::Error>(())
    /// ```
    ///
    /// # Errors
    /// When there is no host or no repository, or a digest reference (`@`).
    pub fn parse(reference: &str) -> Result<Self, Error> {
        let err = |reason| Error::Reference {
            reference: reference.to_owned(),
            reason,
        };
        if reference.contains('@') {
            return Err(err("push by digest is not supported; give a tag"));
        }
        let (host, rest) = reference
            .split_once('/')
            .ok_or_else(|| err("it names no registry host (`host[:port]/repo[:tag]`)"))?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(err(
                "its first component is not a registry host (`host[:port]/repo[:tag]`)",
            ));
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (rest, None),
        };
        if repository.is_empty()
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(err(
                "the repository must be lowercase letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        if tag.as_deref() == Some("") {
            return Err(err("the tag is empty"));
        }
        Ok(Self {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag,
        })
    }

    /// Whether plain HTTP is used by default: loopback hosts.
    #[must_use]
    pub fn is_local(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(&*self.host, |(h, _)| h);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// Credentials for the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password or token.
    pub password: String,
}

impl Credentials {
    /// Parses `USER:PASS`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (user, password) = text.split_once(':')?;
        Some(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The credentials for `host` in a docker `config.json`
    /// (`auths.<host>.auth`, base64 of `USER:PASS`); `None` when there are none.
    ///
    /// # Errors
    /// When the file exists but is not valid.
    pub fn from_docker_config(path: &Path, host: &str) -> Result<Option<Self>, Error> {
        let bad = |reason: String| Error::DockerConfig {
            path: path.to_owned(),
            reason,
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let auths = &doc["auths"];
        let entry = [
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
        .iter()
        .find_map(|k| auths.get(k).and_then(|e| e.get("auth")?.as_str()));
        let Some(auth) = entry else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("`auths.{host}.auth` is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("`auths.{host}.auth` is not UTF-8")))?;
        Self::parse(&decoded)
            .map(Some)
            .ok_or_else(|| bad(format!("`auths.{host}.auth` is not `USER:PASS`")))
    }

    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// What a push did with the blobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub existing: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

/// A blocking client for one repository of one registry.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` header that worked last.
    authorization: Mutex<Option<String>>,
}

/// A request to make, re-creatable for retries and auth.
enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl Client {
    /// A client for `reference`'s repository; plain HTTP when `insecure`
    /// or the host is a loopback one, HTTPS otherwise.
    #[must_use]
    pub fn new(reference: &Reference, credentials: Option<Credentials>, insecure: bool) -> Self {
        let scheme = if insecure || reference.is_local() {
            "http"
        } else {
            "https"
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .user_agent(concat!("nixlayer/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: config.into(),
            base: format!("{scheme}://{}", reference.host),
            repository: reference.repository.clone(),
            credentials,
            authorization: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    fn auth_header(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sends one request, answering a 401 with credentials once and
    /// retrying transient failures; returns the response whatever its status.
    fn send(
        &self,
        method: &'static str,
        url: &str,
        what: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send_once(method, url, headers, body);
            match result {
                Ok(resp) if resp.status() == 401 && !authenticated => {
                    authenticated = true;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    self.authenticate(url, &challenge)?;
                    attempt -= 1;
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status() == 429)
                        && attempt < ATTEMPTS =>
                {
                    backoff(attempt);
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < ATTEMPTS && transient(&e) => backoff(attempt),
                Err(e) => {
                    return Err(Error::Request {
                        method,
                        url: url.to_owned(),
                        what: what.to_owned(),
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
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let auth = self.auth_header();
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut req = $req;
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req
            }};
        }
        match (method, body) {
            ("HEAD", _) => with_headers!(self.agent.head(url)).call(),
            ("GET", _) => with_headers!(self.agent.get(url)).call(),
            (m, b) => {
                let req = if m == "POST" {
                    self.agent.post(url)
                } else {
                    self.agent.put(url)
                };
                let req = with_headers!(req);
                match b {
                    Body::None => req.send_empty(),
                    Body::Bytes(bytes) => req.send(*bytes),
                    Body::File(path) => req.send(&File::open(path)?),
                }
            }
        }
    }

    /// Answers a `WWW-Authenticate` challenge: basic credentials, or a
    /// bearer token fetched from the realm (with the credentials, if any).
    fn authenticate(&self, url: &str, challenge: &str) -> Result<(), Error> {
        let auth_err = |reason: String| Error::Auth {
            url: url.to_owned(),
            reason,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let header = if scheme.eq_ignore_ascii_case("basic") {
            let creds = self.credentials.as_ref().ok_or_else(|| {
                auth_err(
                    "the registry wants a user and password: give `--creds USER:PASS` or `docker login`"
                        .to_owned(),
                )
            })?;
            creds.basic()
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let params = challenge_params(params);
            let realm = params
                .get("realm")
                .ok_or_else(|| auth_err("the bearer challenge names no realm".to_owned()))?;
            let mut token_url = format!("{realm}?");
            if let Some(service) = params.get("service") {
                token_url += &format!("service={}&", encode(service));
            }
            let scope = format!("repository:{}:pull,push", self.repository);
            token_url += &format!("scope={}", encode(&scope));
            let mut req = self.agent.get(&token_url);
            if let Some(c) = &self.credentials {
                req = req.header("Authorization", c.basic());
            }
            let mut resp = req
                .call()
                .map_err(|e| auth_err(format!("{token_url}: {e}")))?;
            let text = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| auth_err(format!("{token_url}: {e}")))?;
            if !resp.status().is_success() {
                return Err(auth_err(format!(
                    "{token_url} answered {}: {}",
                    resp.status().as_u16(),
                    snippet(&text)
                )));
            }
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| auth_err(format!("{token_url}: not JSON: {e}")))?;
            let token = doc["token"]
                .as_str()
                .or_else(|| doc["access_token"].as_str())
                .ok_or_else(|| auth_err(format!("{token_url} gave no token")))?;
            format!("Bearer {token}")
        } else {
            return Err(auth_err(format!(
                "unsupported challenge `{challenge}` (expected Basic or Bearer)"
            )));
        };
        *self
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(header);
        Ok(())
    }

    /// Checks that the registry speaks the distribution API (`GET /v2/`),
    /// authenticating when it asks: a quick failure before anything is built.
    ///
    /// # Errors
    /// When it cannot be reached, or refuses us.
    pub fn ping(&self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base);
        let resp = self.send("GET", &url, "API version check", &[], &Body::None)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(status_error("GET", &url, "API version check", resp, status)),
        }
    }

    /// Whether the registry holds blob `digest`.
    ///
    /// # Errors
    /// When the registry cannot be reached or answers neither 200 nor 404.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool, Error> {
        let what = format!("blob {}", digest.prefixed());
        let url = self.url(&format!("blobs/{}", digest.prefixed()));
        let resp = self.send("HEAD", &url, &what, &[], &Body::None)?;
        match resp.status().as_u16() {
            200..=299 | 301..=308 => Ok(true),
            404 => Ok(false),
            status => Err(status_error("HEAD", &url, &what, resp, status)),
        }
    }

    /// Uploads blob `digest` (monolithic: POST then PUT), from `path` or
    /// from memory; checks the digest the registry reports.
    fn upload(&self, digest: &Digest, body: &Body<'_>) -> Result<(), Error> {
        let what = format!("blob {}", digest.prefixed());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let start = self.url("blobs/uploads/");
            let resp = self.send("POST", &start, &what, &[], &Body::None)?;
            let status = resp.status().as_u16();
            if status != 202 {
                return Err(status_error("POST", &start, &what, resp, status));
            }
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Status {
                    method: "POST",
                    url: start.clone(),
                    what: what.clone(),
                    status,
                    body: "no Location header".to_owned(),
                })?;
            let mut put = if location.starts_with('/') {
                format!("{}{location}", self.base)
            } else {
                location.to_owned()
            };
            put.push(if put.contains('?') { '&' } else { '?' });
            put += &format!("digest={}", encode(&digest.prefixed()));
            let resp = self.send(
                "PUT",
                &put,
                &what,
                &[("Content-Type", "application/octet-stream")],
                body,
            )?;
            let status = resp.status().as_u16();
            if status == 201 {
                return check_digest(&resp, &put, &what, digest);
            }
            // An upload session can fail as a whole; start a new one.
            if (resp.status().is_server_error() || status == 404) && attempt < ATTEMPTS {
                backoff(attempt);
                continue;
            }
            return Err(status_error("PUT", &put, &what, resp, status));
        }
    }

    /// PUTs `manifest` (an OCI image manifest) as `tag`.
    ///
    /// # Errors
    /// When the registry refuses it or reports another digest.
    pub fn put_manifest(&self, tag: &str, manifest: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::of(manifest);
        let what = format!("manifest {tag}");
        let url = self.url(&format!("manifests/{tag}"));
        let resp = self.send(
            "PUT",
            &url,
            &what,
            &[("Content-Type", MANIFEST_MEDIA_TYPE)],
            &Body::Bytes(manifest),
        )?;
        let status = resp.status().as_u16();
        if status != 201 && status != 200 {
            return Err(status_error("PUT", &url, &what, resp, status));
        }
        check_digest(&resp, &url, &what, &digest)?;
        Ok(digest)
    }
}

fn check_digest(
    resp: &ureq::http::Response<ureq::Body>,
    url: &str,
    what: &str,
    digest: &Digest,
) -> Result<(), Error> {
    match resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(got) if got != digest.prefixed() => Err(Error::DigestMismatch {
            url: url.to_owned(),
            what: what.to_owned(),
            expected: digest.prefixed(),
            got: got.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn status_error(
    method: &'static str,
    url: &str,
    what: &str,
    mut resp: ureq::http::Response<ureq::Body>,
    status: u16,
) -> Error {
    let body = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    Error::Status {
        method,
        url: url.to_owned(),
        what: what.to_owned(),
        status,
        body: snippet(&body),
    }
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether a failed request is worth retrying (the connection, not the request).
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_)
    )
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

/// `key="value",key2=value2` of a `WWW-Authenticate` challenge.
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
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = after.trim_start_matches([',', ' ']);
    }
    out
}

/// A [`BlobSink`] that uploads to a registry: see the module docs.
#[derive(Debug)]
pub struct RegistrySink {
    client: Client,
    spool: TempDir,
    /// Small blobs (config, manifest), kept for [`RegistrySink::finish`].
    small: BTreeMap<Digest, Vec<u8>>,
    /// What HEAD said, so no blob is asked about twice.
    known: Mutex<BTreeMap<Digest, bool>>,
    counts: PushCounts,
}

/// A blob being spooled for upload.
#[derive(Debug)]
pub struct SpooledBlob(BufWriter<NamedTempFile>);

impl Write for SpooledBlob {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn sink_err(e: Error) -> super::Error {
    super::Error::Registry(Box::new(e))
}

impl RegistrySink {
    /// A sink uploading through `client`, spooling blobs in a new temporary
    /// directory.
    ///
    /// # Errors
    /// When the temporary directory cannot be made.
    pub fn new(client: Client) -> Result<Self, Error> {
        let spool = tempfile::Builder::new()
            .prefix("nixlayer-push")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "(spool directory)".to_owned(),
                path: std::env::temp_dir(),
                source,
            })?;
        Ok(Self {
            client,
            spool,
            small: BTreeMap::new(),
            known: Mutex::new(BTreeMap::new()),
            counts: PushCounts::default(),
        })
    }

    fn head(&self, digest: &Digest) -> Result<bool, Error> {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&have) = known.get(digest) {
            return Ok(have);
        }
        let have = self.client.has_blob(digest)?;
        known.insert(*digest, have);
        Ok(have)
    }

    fn push_blob(&mut self, digest: &Digest, size: u64, body: &Body<'_>) -> Result<bool, Error> {
        if self.head(digest)? {
            self.counts.existing += 1;
            return Ok(false);
        }
        self.client.upload(digest, body)?;
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(*digest, true);
        self.counts.uploaded += 1;
        self.counts.bytes_uploaded += size;
        Ok(true)
    }

    /// Uploads the config `config` (when missing) and PUTs the manifest
    /// `manifest` as `tag`: the last step of a push, after the build wrote
    /// every layer into this sink.
    ///
    /// # Errors
    /// When either blob was never stored here, or the registry refuses them.
    pub fn finish(
        mut self,
        config: &Digest,
        manifest: &Digest,
        tag: &str,
    ) -> Result<PushCounts, Error> {
        let missing = |d: &Digest| Error::Io {
            what: d.prefixed(),
            path: PathBuf::from("(memory)"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "blob was not built"),
        };
        let config_bytes = self
            .small
            .get(config)
            .cloned()
            .ok_or_else(|| missing(config))?;
        self.push_blob(
            config,
            config_bytes.len() as u64,
            &Body::Bytes(&config_bytes),
        )?;
        let manifest_bytes = self.small.get(manifest).ok_or_else(|| missing(manifest))?;
        self.client.put_manifest(tag, manifest_bytes)?;
        Ok(self.counts)
    }
}

impl BlobSink for RegistrySink {
    type Blob = SpooledBlob;

    fn start_blob(&mut self) -> Result<Self::Blob, super::Error> {
        let file = NamedTempFile::new_in(self.spool.path()).map_err(|source| super::Error::Io {
            path: self.spool.path().to_owned(),
            source,
        })?;
        Ok(SpooledBlob(BufWriter::with_capacity(1 << 20, file)))
    }

    fn commit_blob(
        &mut self,
        blob: Self::Blob,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, super::Error> {
        let file = blob.0.into_inner().map_err(|e| super::Error::Io {
            path: self.spool.path().to_owned(),
            source: e.into_error(),
        })?;
        let path = file.path().to_owned();
        let new = self
            .push_blob(digest, size, &Body::File(&path))
            .map_err(sink_err)?;
        drop(file); // removes the spooled copy
        Ok(new)
    }

    fn has_blob(&self, digest: &Digest) -> bool {
        // An error here only means the layer is built; the upload then
        // reports what is wrong.
        self.head(digest).unwrap_or(false)
    }

    fn put_blob(&mut self, bytes: &[u8]) -> Result<(Digest, bool), super::Error> {
        let digest = Digest::of(bytes);
        self.small.insert(digest, bytes.to_vec());
        Ok((digest, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("app", None));
        assert!(r.is_local());
        let r = Reference::parse("registry.example.com:443/a/b:v1").unwrap();
        assert!(!r.is_local());
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(Reference::parse("127.0.0.1:5000/App").is_err());
        assert!(Reference::parse("127.0.0.1:5000/a@sha256:00").is_err());
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
    }

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"reg.example.com":{"auth":"dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let c = Credentials::from_docker_config(&path, "reg.example.com")
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("user", "pass"));
        assert!(Credentials::from_docker_config(&path, "other")
            .unwrap()
            .is_none());
        assert!(
            Credentials::from_docker_config(&dir.path().join("none"), "x")
                .unwrap()
                .is_none()
        );
    }
}
