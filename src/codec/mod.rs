//! Compression, both directions: the one [`Compression`] type, the
//! deterministic parallel compressors in [`compress`], the one blob writer
//! stack over them ([`BlobWriter`]: compressor → hasher → destination), and
//! the decompressors with stream sniffing in [`decompress`](mod@decompress).
//!
//! Formats tier: this module imports no stage.

pub mod blob;
pub mod compress;
pub mod decompress;
pub mod gzip;

pub use blob::{BlobWriter, WrittenBlob};
pub use compress::{CompressOptions, Compressor};
pub use decompress::decompress;
pub use gzip::{GZIP_FORMAT, GZIP_MEMBER};

/// The name of the stored form `options` writes, for the layer cache's
/// records of compressed digests: the compression, what else its bytes
/// depend on (for gzip, [`GZIP_FORMAT`]: compressor, version, member
/// size; for zstd, [`compress::zstd_format`]: job size and libzstd's
/// version) and the level. A digest filed by a build whose compressor wrote
/// other bytes is under another name, so a warm build never serves a
/// digest a cold one would not write. Never the thread count: it changes
/// no byte.
#[must_use]
pub fn stored_form(options: &CompressOptions) -> String {
    match options.codec {
        Compression::Gzip => format!("{GZIP_FORMAT}-{}", options.level),
        Compression::Zstd => format!("{}-{}", compress::zstd_format(), options.level),
        codec => format!("{}-{}", codec.name(), options.level),
    }
}

/// A compression: what the manifest and the flags name, what a writer
/// applies, and what a reader finds by a stream's first bytes.
///
/// One type for all three, so a new variant is a compile error wherever it
/// is not handled. xz is read (mergeImages takes xz archives) but never
/// written: it is not in [`Compression::WRITABLE`], [`Compression::from_name`]
/// does not name it, and [`Compressor::new`] refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Bytes as they are (or, sniffed, not a format recognised here).
    None,
    /// gzip (RFC 1952, magic `1f 8b`); written as a series of members
    /// (see [`gzip`](mod@gzip)), read with all its members.
    Gzip,
    /// zstd (RFC 8878, magic `28 b5 2f fd`); written as one frame with a checksum.
    Zstd,
    /// xz (magic `fd 37 7a 58 5a 00`); read only.
    Xz,
}

impl Compression {
    /// Every compression this crate writes, in SPEC order: the values of
    /// `[output] compression` and `--compression`.
    pub const WRITABLE: [Self; 3] = [Self::None, Self::Gzip, Self::Zstd];

    /// The compression whose magic `head` starts with.
    #[must_use]
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else {
            Self::None
        }
    }

    /// The manifest / CLI / `inspect` spelling: `none`, `gzip`, `zstd`, `xz`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
        }
    }

    /// The writable compression spelt `name`, if any (`xz` is none).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::WRITABLE.into_iter().find(|c| c.name() == name)
    }

    /// Whether [`Compressor`] writes it.
    #[must_use]
    pub fn is_writable(self) -> bool {
        match self {
            Self::None | Self::Gzip | Self::Zstd => true,
            Self::Xz => false,
        }
    }

    /// The level used when none is given: gzip 6 (gzip's and pigz's
    /// default), zstd 3 (zstd's default); 0 for what takes no level.
    #[must_use]
    pub fn default_level(self) -> i32 {
        match self {
            Self::None | Self::Xz => 0,
            Self::Gzip => 6,
            Self::Zstd => 3,
        }
    }

    /// The levels accepted: gzip 1–9, zstd 1–19 (the levels that need no
    /// `--ultra` memory), 0 only for what takes no level.
    #[must_use]
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Self::None | Self::Xz => 0..=0,
            Self::Gzip => 1..=9,
            Self::Zstd => 1..=19,
        }
    }

    /// The OCI layer media type of a tar compressed this way (xz has none:
    /// a docker-archive member only).
    #[must_use]
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Self::Xz => "application/x-xz",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_what_is_written_only() {
        for c in Compression::WRITABLE {
            assert!(c.is_writable());
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        assert!(!Compression::Xz.is_writable());
        assert_eq!(Compression::from_name("xz"), None);
    }

    /// gzip's and zstd's stored forms name their formats, so digests filed
    /// by another compressor (`gzip-6`, `zstd-3`) are not found; the
    /// threads are not in them.
    #[test]
    fn stored_forms_name_the_gzip_format_and_level() {
        let two = std::num::NonZeroUsize::new(2).unwrap();
        let gzip = CompressOptions::new(Compression::Gzip, two);
        assert_eq!(stored_form(&gzip), format!("{GZIP_FORMAT}-6"));
        assert_ne!(stored_form(&gzip), "gzip-6");
        let one = CompressOptions::new(Compression::Gzip, std::num::NonZeroUsize::MIN);
        assert_eq!(stored_form(&gzip), stored_form(&one));
        let nine = CompressOptions { level: 9, ..gzip };
        assert_ne!(stored_form(&gzip), stored_form(&nine));
        let zstd = stored_form(&CompressOptions::new(Compression::Zstd, two));
        assert_eq!(zstd, format!("{}-3", compress::zstd_format()));
        assert!(zstd.starts_with("zstd-jobs-2MiB-libzstd-1."), "{zstd}");
        assert_eq!(
            zstd,
            stored_form(&CompressOptions::new(
                Compression::Zstd,
                std::num::NonZeroUsize::MIN
            ))
        );
    }

    #[test]
    fn layer_media_types_are_the_oci_ones() {
        assert_eq!(
            Compression::None.layer_media_type(),
            crate::oci::LAYER_MEDIA_TYPE
        );
        for (c, suffix) in [(Compression::Gzip, "+gzip"), (Compression::Zstd, "+zstd")] {
            assert_eq!(
                c.layer_media_type(),
                format!("{}{suffix}", crate::oci::LAYER_MEDIA_TYPE)
            );
        }
    }
}
