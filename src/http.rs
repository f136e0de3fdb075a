//! What every HTTP client of nixlayer shares (the registry client of
//! `push` and the binary-cache store): request deadlines. Below every
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
