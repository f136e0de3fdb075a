//! What every HTTP client of nixlayer shares (the registry client of
//! `push` and the binary-cache store): request deadlines, and how a TLS
//! refusal is told from other failures. Below every
//! stage, so that the store and the sinks can both use it without
//! importing each other.

use std::time::Duration;

/// Deadlines of HTTP requests (registries, binary caches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The deadline of each request — connect, send, answer and body —
    /// and the base of an upload's.
    pub request: Duration,
    /// The slowest upload tolerated, in bytes per second: a body of `n`
    /// bytes gets `request + n / min_upload_rate`.
    pub min_upload_rate: u64,
}

impl Default for Timeouts {
    /// 60 s per request; uploads at 64 KiB/s or more (a 1 GiB layer gets
    /// about 4.5 hours): generous, but never forever.
    fn default() -> Self {
        Self {
            request: Duration::from_secs(60),
            min_upload_rate: 64 << 10,
        }
    }
}

impl Timeouts {
    /// The deadline of a request sending `bytes` of body.
    #[must_use]
    pub fn for_body(&self, bytes: u64) -> Duration {
        self.request
            .saturating_add(Duration::from_secs(bytes / self.min_upload_rate.max(1)))
    }
}

/// When `e` says the server speaks TLS but its certificate is not trusted
/// (or the handshake failed on its side): why, for an error that says how
/// to trust it. `None` for failures that are not TLS ones (those may be
/// retried; a refused certificate never changes). `server` names the
/// server in the explanation (`registry`, `cache`).
#[must_use]
pub fn tls_refusal(e: &ureq::Error, server: &str) -> Option<String> {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    // ureq shows rustls' errors with their names; a certificate problem
    // or an alert from the server means the port speaks TLS.
    let tls = ["certificate", "alert", "handshake"]
        .iter()
        .any(|k| lower.contains(k))
        && !lower.contains("invalidcontenttype")
        && !lower.contains("corrupt message");
    if tls && text.contains("CaUsedAsEndEntity") {
        // What `openssl req -x509` makes by default (and the distribution
        // docs' self-signed recipe): docker's Go TLS and curl (so Nix)
        // take it when it is trusted, rustls (webpki) never does.
        return Some(format!(
            "{text} (the {server}'s certificate is itself a CA certificate, `basicConstraints CA:TRUE`, as `openssl req -x509` makes by default; rustls refuses such a server certificate even when it is trusted: give the {server} one made with `-addext basicConstraints=critical,CA:FALSE`, or one signed by a CA of its own, and trust that CA)"
        ));
    }
    tls.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_certificate_served_by_the_server_is_explained() {
        // As ureq shows rustls' refusal of a certificate with
        // `basicConstraints CA:TRUE` (what `openssl req -x509` makes).
        let io = |text: &str| {
            ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, text))
        };
        let why = tls_refusal(
            &io("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))"),
            "registry",
        )
        .unwrap();
        assert!(
            why.contains("CaUsedAsEndEntity")
                && why.contains("the registry's certificate")
                && why.contains("basicConstraints=critical,CA:FALSE"),
            "{why}"
        );
        let why = tls_refusal(&io("invalid peer certificate: UnknownIssuer"), "cache").unwrap();
        assert!(!why.contains("CA:FALSE"), "{why}");
        assert!(tls_refusal(&io("Connection refused"), "cache").is_none());
    }
}
