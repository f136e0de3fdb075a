//! The OCI distribution client: registry references (`host[:port]/repo[:tag]`,
//! Docker Hub's names), credentials (docker's config, credential helpers,
//! redaction), auth (basic, bearer tokens) and the HTTP requests with
//! their deadlines and retries.
//!
//! It sits below the stages, beside [`crate::http`]: the registry sink
//! ([`crate::sink::registry`]) pushes with it and a base-image pull
//! ([`crate::image::pull`]) fetches with it, so neither stage imports the
//! other.
//!
//! Modules: [`reference`](mod@reference) parses references, [`credentials`]
//! reads and redacts credentials, [`client`] speaks HTTP to the registry.

pub mod client;
pub mod credentials;
pub mod reference;

use std::path::PathBuf;
use std::time::Duration;

use crate::oci::Digest;
pub use client::{Client, ClientOptions, Timeouts, UploadMeter};
pub use credentials::Credentials;
pub use reference::Reference;

/// How many times a request is tried before a transient failure is final.
pub const ATTEMPTS: u32 = 4;

/// What to do about a TLS failure: trust the CA, unless the certificate
/// was trusted but names another host (rustls checks the chain first), or
/// the server speaks plain HTTP.
fn tls_advice(host: &str, reason: &str) -> String {
    if reason == client::PLAIN_HTTP_ANSWER {
        "use `--insecure` if it is a plain-HTTP registry".to_owned()
    } else if reason == client::HTTPS_ONLY {
        format!("drop `--insecure` if given (certificates are always checked) and trust its CA with `--ca-file FILE`, `SSL_CERT_FILE` or `/etc/docker/certs.d/{host}/ca.crt`")
    } else if reason.contains("not valid for name") {
        // A certificate names hosts, not ports.
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        format!("its certificate is trusted but does not name `{name}`: reach it by a name the certificate holds, or give it a certificate for `{name}`")
    } else {
        format!("trust its CA with `--ca-file FILE`, `SSL_CERT_FILE` or `/etc/docker/certs.d/{host}/ca.crt`, or use `--insecure` for a plain-HTTP registry")
    }
}

/// Why a push or a base-image pull failed at the registry.
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
    #[error("{method} {url} ({what}) failed{via}")]
    Request {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The blob or manifest concerned.
        what: String,
        /// ` through the proxy HOST:PORT …` when the environment's proxy
        /// took the request, else empty.
        via: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A request passed its deadline (see [`Timeouts`]).
    #[error("{method} {url} ({what}): no complete answer within {secs}s; raise the deadline with `--timeout SECS`", secs = after.as_secs_f64())]
    Timeout {
        /// The HTTP method.
        method: &'static str,
        /// The URL, without its query.
        url: String,
        /// The blob or manifest concerned.
        what: String,
        /// The deadline that passed.
        after: Duration,
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
    /// The server answered with success, but not as a registry does: a web
    /// server (or a registry's web interface) on the registry's port
    /// answers `200` to everything, and taking that for a push would
    /// report an image the registry never stored.
    #[error("{method} {url} ({what}): the answer ({status}) is not a registry's: {reason}")]
    NotRegistry {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The blob or manifest concerned.
        what: String,
        /// The status code.
        status: u16,
        /// What is wrong with the answer.
        reason: &'static str,
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
    /// The registry's TLS could not be set up or its certificate is not
    /// trusted.
    #[error("{host}: TLS failed: {reason}; {}", tls_advice(host, reason))]
    Tls {
        /// The registry host.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// A CA file (`--ca-file`, `SSL_CERT_FILE`, docker's `certs.d`)
    /// cannot be read or holds no certificate: the registry was not asked
    /// anything, so no advice on trusting it.
    #[error("{host}: cannot set up TLS: {reason}")]
    TrustRoots {
        /// The registry host.
        host: String,
        /// Which file, and what is wrong with it.
        reason: String,
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
    /// A referrers tag holds something other than an index of referrers.
    #[error("the registry's referrers tag `{tag}` {reason}: refusing to replace it")]
    ReferrersTag {
        /// The tag, `sha256-<hex>`.
        tag: String,
        /// What it holds.
        reason: &'static str,
    },
    /// Blobs the blob records (see [`crate::sink::registry::homes`]) placed in the repository,
    /// taken for present without asking, are not there: the registry
    /// refused the manifest. [`crate::ops::push`] then pushes again asking
    /// the registry about every blob.
    #[error("{} blob(s) recorded as pushed to `{repository}` are no longer there (first {}): {source}", missing.len(), missing.first().map(Digest::prefixed).unwrap_or_default())]
    Vanished {
        /// The repository.
        repository: String,
        /// The blobs missing.
        missing: Vec<Digest>,
        /// The registry's refusal of the manifest.
        #[source]
        source: Box<Error>,
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
