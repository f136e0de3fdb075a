//! Where the image goes: a docker-archive written to a file (through a
//! temporary file renamed into place) or streamed to stdout, an OCI image
//! layout directory, or an OCI layout in a tar; compressed or not (by
//! [`crate::codec`]); or pushed to a registry ([`registry`]).

pub mod docker_archive;
pub mod oci_archive;
pub mod oci_layout;
mod output;
pub mod registry;

use std::io::Write;
use std::path::PathBuf;

use crate::oci::Digest;

pub use output::{layout_would_overwrite, would_overwrite, OutputError, OutputFile};

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the output could not be read or written.
    #[error("failed to write `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The target directory holds something other than an OCI layout.
    #[error("`{}` is not empty and not an OCI image layout (it has no `oci-layout` file)", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// The output is something an image is never written to.
    #[error("`{}` {reason}", path.display())]
    Refused {
        /// The output path.
        path: PathBuf,
        /// What it is and why it is refused.
        reason: String,
    },
    /// An existing layout file is not JSON.
    #[error("`{}` is not valid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An existing layout file has the wrong shape.
    #[error("`{}` is malformed: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A blob could not be pushed to a registry.
    #[error(transparent)]
    Registry(Box<registry::Error>),
}

/// Where OCI blobs go: a layout directory or an archive. A blob is
/// streamed into [`BlobSink::start_blob`]'s writer, hashed by the caller
/// on the way, then stored under its digest by [`BlobSink::commit_blob`].
pub trait BlobSink {
    /// A blob being written.
    type Blob: Write + Send;

    /// Starts a blob.
    ///
    /// # Errors
    /// When its temporary storage cannot be created.
    fn start_blob(&mut self) -> Result<Self::Blob, Error>;

    /// Stores `blob`, whose bytes have `digest` and `size`; returns
    /// whether it was new (a blob already stored is not written again).
    ///
    /// # Errors
    /// When it cannot be stored.
    fn commit_blob(&mut self, blob: Self::Blob, digest: &Digest, size: u64) -> Result<bool, Error>;

    /// Whether the blob `digest` is already stored, so a layer known (from
    /// the layer cache) to have that blob need not be read again.
    fn has_blob(&self, digest: &Digest) -> bool {
        let _ = digest;
        false
    }

    /// Stores a small blob held in memory; returns its digest and whether
    /// it was new.
    ///
    /// # Errors
    /// When it cannot be stored.
    fn put_blob(&mut self, bytes: &[u8]) -> Result<(Digest, bool), Error>;
}
