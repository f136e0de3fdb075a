//! A writer that hashes (sha256) and counts exactly the bytes its inner
//! writer accepted. `sha2` 0.11 no longer implements `io::Write`, and the
//! count is needed anyway, so this is ours.

use std::fmt;
use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// sha256 of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lowercase hex, 64 characters.
    #[must_use]
    pub fn hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// `sha256:<hex>`, the OCI spelling.
    #[must_use]
    pub fn prefixed(&self) -> String {
        format!("sha256:{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefixed())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefixed())
    }
}

/// Hashes and counts what passes through to `W`.
pub struct HashCountWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashCountWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably; bytes written through it are not hashed.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Flushes, then returns the inner writer, the digest and the byte count.
    ///
    /// # Errors
    /// When flushing fails.
    pub fn finish(mut self) -> io::Result<(W, Digest, u64)> {
        self.inner.flush()?;
        Ok((
            self.inner,
            Digest(self.hasher.finalize().into()),
            self.count,
        ))
    }
}

impl<W: Write> Write for HashCountWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts what passes through to `W`, without hashing: for outputs whose
/// size is reported but whose digest nothing needs (a sha256 over every
/// byte would cost as much as hashing the layers themselves).
pub struct CountWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> CountWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, count: 0 }
    }

    /// Flushes, then returns the inner writer and the byte count.
    ///
    /// # Errors
    /// When flushing fails.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.inner.flush()?;
        Ok((self.inner, self.count))
    }
}

impl<W: Write> Write for CountWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_counts_what_passed() {
        let mut w = HashCountWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, count) = w.finish().unwrap();
        assert_eq!(inner, b"hello world");
        assert_eq!(count, 11);
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(
            digest.hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
