//! sha256 digests, their one parser, and writers that hash (sha256) and
//! count exactly the bytes their inner writer accepted. `sha2` 0.11 no
//! longer implements `io::Write`, and the count is needed anyway, so these
//! writers are ours.

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

    /// `sha256:<64 lowercase hex>` → a digest; anything else (another
    /// algorithm, a wrong length, uppercase, a sign, a non-ASCII byte) is
    /// `None`. The one parser of digest text in the crate: archives,
    /// caches and registries all read digests from untrusted bytes.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::from_hex(text.strip_prefix("sha256:")?)
    }

    /// 64 lowercase hex digits (no `sha256:`) → a digest, as strictly as
    /// [`Digest::parse`]. For names that carry the bare hex
    /// (`blobs/sha256/<hex>`, `<hex>.json`).
    #[must_use]
    pub fn from_hex(hex: &str) -> Option<Self> {
        // Bytes, never string slices: a multi-byte character of the right
        // byte length is an error, not a panic. Not `from_str_radix`,
        // which takes a leading `+` and uppercase.
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
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
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(&d.prefixed()), Some(d));
        assert_eq!(Digest::from_hex(&d.hex()), Some(d));
        assert_eq!(Digest::parse(&d.hex()), None);
        assert_eq!(Digest::parse("sha256:abc"), None);
        assert_eq!(Digest::parse(&format!("sha256:{}", "g".repeat(64))), None);
        // Uppercase and signs are not the OCI spelling.
        assert_eq!(Digest::parse(&d.prefixed().to_uppercase()), None);
        assert_eq!(Digest::parse(&format!("sha256:{}", "+f".repeat(32))), None);
        assert_eq!(Digest::parse(&format!("sha512:{}", d.hex())), None);
        // 64 bytes, but multi-byte characters: no panic.
        assert_eq!(Digest::parse(&format!("sha256:{}", "é".repeat(32))), None);
        assert_eq!(Digest::parse(&format!("sha256:a{}", "é".repeat(31))), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(text in ".{0,80}", bytes in any::<[u8; 32]>()) {
            if let Some(d) = Digest::parse(&text) {
                prop_assert_eq!(d.prefixed(), text);
            }
            let d = Digest(bytes);
            prop_assert_eq!(Digest::parse(&d.prefixed()), Some(d));
            prop_assert_eq!(Digest::from_hex(&d.hex()), Some(d));
        }

        #[test]
        fn parse_takes_only_lowercase_hex(hex in "[0-9a-fA-F+é-]{64}") {
            let parsed = Digest::parse(&format!("sha256:{hex}"));
            let lower = hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            prop_assert_eq!(parsed.is_some(), lower);
        }
    }

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
