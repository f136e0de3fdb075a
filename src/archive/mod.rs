//! Reading existing images: docker-archives (plain, gzip, zstd or xz, as
//! `docker save`, skopeo, nixpkgs and nixlayer write them), OCI archives
//! and OCI layout directories. `merge` and `inspect` use it, and so can a
//! build that starts from a base image.
//!
//! [`ImageArchive::open`] sniffs what a path is, indexes it and parses its
//! manifests; then [`ImageArchive::open_blob`] / [`ImageArchive::open_layer`]
//! read a layer's stored or uncompressed bytes. Malformed input is an
//! [`Error`] naming the file, never a panic.
//!
//! Every input is treated as hostile:
//! - A compressed archive is indexed *as* it is decompressed into an
//!   anonymous temporary file (so members can later be read in any order):
//!   the first bad header stops it, reading stops at the end-of-archive
//!   block, each header's size is checked against a budget (the space free
//!   where the spool lives) before its data is read, and a member too large
//!   to be JSON must start like a layer. A bomb fails at its first sign.
//! - Every blob read is checked against its digest: OCI index → manifest →
//!   config as they are read (and their descriptor sizes), layers as they
//!   stream ([`ImageArchive::open_blob`] fails at the end of a blob whose
//!   bytes do not match); a docker-archive config against the digest its
//!   name carries (`<hex>.json`, `blobs/sha256/<hex>`), and its layers named
//!   `blobs/sha256/<hex>` likewise. diff_ids are checked by the consumer of
//!   the uncompressed bytes (`image::base`, `inspect`, `merge`).
//! - In an OCI layout directory no symbolic link is followed: each path is
//!   opened component by component with `O_NOFOLLOW` from the layout
//!   directory, so neither a symlinked blob nor a symlinked `blobs/` leads
//!   out of it. JSON documents are capped at [`MAX_JSON`] before parsing.
//! - Documents naming one another many times (nested indexes, one config
//!   for many entries) are bounded in all: the JSON read, the images and
//!   the layers reached are counted each time, so a small archive cannot
//!   make opening it exponential; a layer listed many times is opened once.
//!
//! ```no_run
//! use std::io::Read as _;
//! let archive = nixlayer::archive::ImageArchive::open("base.tar.gz".as_ref())?;
//! let image = &archive.images()[0];
//! for layer in &image.layers {
//!     let mut tar = archive.open_layer(layer)?; // uncompressed layer tar
//!     let mut first = [0u8; 512];
//!     tar.read_exact(&mut first)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::Digest as _;

use crate::tar::{self, Member, TarIndex};

use crate::codec::{self, Compression};
use crate::oci;
use crate::oci::Digest;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("failed to read `{}`", path.display())]
    Io {
        /// The image file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The archive is not a valid tar.
    #[error("`{}` is not a valid tar archive", path.display())]
    Tar {
        /// The image file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tar::TarError,
    },
    /// Neither a docker-archive nor an OCI layout.
    #[error("`{}` is not a docker-archive or OCI image: {what}", path.display())]
    NotAnImage {
        /// The image file or directory.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A file inside the image is missing or has the wrong shape.
    #[error("`{}` is malformed: `{member}` {what}", path.display())]
    Malformed {
        /// The image file or directory.
        path: PathBuf,
        /// The member or blob.
        member: String,
        /// What is wrong.
        what: String,
    },
}

/// What kind of image container a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// A docker-archive (`manifest.json`).
    DockerArchive,
    /// An OCI layout in a tar.
    OciArchive,
    /// An OCI layout directory.
    OciLayout,
}

impl Format {
    /// `docker-archive`, `oci-archive`, `oci-layout`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerArchive => "docker-archive",
            Self::OciArchive => "oci-archive",
            Self::OciLayout => "oci-layout",
        }
    }
}

/// A layer of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Where its bytes are: a member name of the archive, or a path
    /// relative to the layout directory.
    pub location: String,
    /// sha256 of the stored bytes, when the format records it (OCI
    /// descriptors, docker-archive members named `blobs/sha256/<hex>`);
    /// [`ImageArchive::open_blob`] checks the bytes against it.
    pub digest: Option<Digest>,
    /// sha256 of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Option<Digest>,
    /// Bytes stored.
    pub size: u64,
    /// The OCI descriptor's media type, or for a docker-archive member the
    /// OCI layer media type of its sniffed compression.
    pub media_type: String,
}

/// One image of an archive or layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Its names: docker `RepoTags`, or the OCI `ref.name` annotation.
    pub tags: Vec<String>,
    /// The config JSON, as stored.
    pub config: Vec<u8>,
    /// sha256 of the config (the docker image id).
    pub config_digest: Digest,
    /// Where the config is (member name or relative path).
    pub config_location: String,
    /// sha256 of the OCI manifest (OCI only).
    pub manifest_digest: Option<Digest>,
    /// sha256 of the image index naming it, one platform among several
    /// (OCI only; `None` for a manifest `index.json` names directly).
    pub index_digest: Option<Digest>,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The descriptor naming the OCI manifest, as stored in `index.json`
    /// or its parent index (media type, size, platform, annotations; OCI
    /// only).
    pub descriptor: Option<Value>,
    /// Which top-level entry it belongs to: an `index.json` descriptor
    /// ([`ImageArchive::entries`]) or a `manifest.json` entry.
    pub entry: usize,
}

/// A top-level `index.json` descriptor of an OCI archive or layout, as
/// stored, with the image indexes under it (in the order read, the
/// descriptor's own first when it names an index). Its images are those
/// whose [`Image::entry`] is its position.
#[derive(Clone, Debug, PartialEq)]
pub struct OciEntry {
    /// The descriptor, verbatim (annotations and platform included).
    pub descriptor: Value,
    /// sha256 and size of every image index under it.
    pub indexes: Vec<(Digest, u64)>,
}

impl Image {
    /// The config, parsed.
    ///
    /// # Errors
    /// When the config is not JSON (checked at open, so only if changed).
    pub fn config_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.config)
    }
}

/// What [`ImageArchive::verify_blob`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobCheck {
    /// sha256 of the stored bytes.
    pub digest: Digest,
    /// Their compression, sniffed.
    pub compression: Compression,
    /// Their length.
    pub size: u64,
}

/// Where the bytes are.
#[derive(Debug)]
enum Storage {
    /// A tar (the file itself, or its decompressed copy).
    Tar { file: File, index: TarIndex },
    /// A layout directory.
    Dir(PathBuf),
}

/// An opened image archive or layout.
#[derive(Debug)]
pub struct ImageArchive {
    path: PathBuf,
    format: Format,
    compression: Compression,
    storage: Storage,
    images: Vec<Image>,
    entries: Vec<OciEntry>,
}

/// Largest JSON document (manifest, config, index) read into memory.
pub const MAX_JSON: u64 = 64 << 20;

/// Most JSON bytes opening an archive reads in all, each document counted
/// every time it is reached: documents can name one another many times
/// (an index listing one nested index a thousand times, itself listing
/// another, …), so the per-document cap alone bounds neither time nor the
/// configs the images keep.
const MAX_JSON_TOTAL: u64 = 512 << 20;

/// Most images and nested indexes (each counted every time it is named)
/// opening an archive follows: each costs a manifest and config read.
const MAX_MANIFESTS: usize = 1 << 16;

/// Most layers (each counted every time it is listed) opening an archive
/// lists.
const MAX_LAYERS: usize = 1 << 20;

/// What opening an archive has left to read: the bound on documents that
/// name one another over and over (a nested index DAG is exponential in
/// its depth), and the layers already measured, so a layer listed many
/// times is opened once.
struct Budget {
    json: u64,
    manifests: usize,
    layer_count: usize,
    layers: HashMap<String, (u64, Compression)>,
}

impl Budget {
    fn new() -> Self {
        Self {
            json: MAX_JSON_TOTAL,
            manifests: MAX_MANIFESTS,
            layer_count: MAX_LAYERS,
            layers: HashMap::new(),
        }
    }
}

/// Bytes left free on the spool's file system when a compressed archive is
/// decompressed into it (or a twentieth of it, when smaller).
const SPOOL_RESERVE: u64 = 1 << 30;

/// How many bytes a compressed archive may expand to in the spool `file`:
/// what its file system has free, less a reserve, so a bomb fails at the
/// header that would pass it instead of filling the disk.
fn spool_budget(file: &File) -> u64 {
    use std::os::fd::AsRawFd as _;
    // SAFETY: fstatvfs writes into the zeroed struct we own, on a
    // descriptor we hold open.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &raw mut st) } != 0 {
        // Unknown: no budget beyond the disk itself.
        return u64::MAX;
    }
    // u64 here; narrower or wider fields on other targets.
    #[allow(clippy::useless_conversion)]
    let (frsize, avail, total) = (
        u64::try_from(st.f_frsize).unwrap_or(1).max(1),
        u64::try_from(st.f_bavail).unwrap_or(0),
        u64::try_from(st.f_blocks).unwrap_or(0),
    );
    let reserve = SPOOL_RESERVE.min(total.saturating_mul(frsize) / 20);
    avail.saturating_mul(frsize).saturating_sub(reserve)
}

/// Copies everything read through it into `spool`: the compressed
/// archive's bytes land in the spool exactly as the indexer consumes them,
/// so member offsets are spool offsets.
struct Tee<R, W> {
    inner: R,
    spool: W,
    /// Set when writing the spool failed (a full disk), so that is what the
    /// error says rather than "not a valid tar".
    spool_failed: bool,
}

impl<R: Read, W: io::Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.spool.write_all(&buf[..n]) {
            self.spool_failed = true;
            return Err(e);
        }
        Ok(n)
    }
}

impl ImageArchive {
    /// Opens `path`: an OCI layout directory, or a file holding a
    /// docker-archive or OCI archive, plain or compressed (gzip, zstd, xz).
    ///
    /// # Errors
    /// When it cannot be read or is not an image in one of these formats.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        if path.is_dir() {
            let mut archive = Self {
                path: path.to_owned(),
                format: Format::OciLayout,
                compression: Compression::None,
                storage: Storage::Dir(path.to_owned()),
                images: Vec::new(),
                entries: Vec::new(),
            };
            if !path.join("index.json").exists() {
                return Err(Error::NotAnImage {
                    path: path.to_owned(),
                    what: "a directory without `index.json`".to_owned(),
                });
            }
            (archive.images, archive.entries) = archive.read_oci()?;
            return Ok(archive);
        }
        // Not waiting for a FIFO's writer: one without reads as empty.
        let file = crate::input::open_without_waiting(path).map_err(io_err)?;
        Self::from_file(path, file)
    }

    /// Reads an image archive (docker-archive or OCI archive, plain or
    /// compressed) from stdin, as `docker load` and `skopeo` read `-`;
    /// errors name it `-`.
    ///
    /// # Errors
    /// When stdin is a terminal (nothing would come), cannot be read or
    /// holds no image in one of these formats.
    pub fn open_stdin() -> Result<Self, Error> {
        use std::io::IsTerminal as _;
        use std::os::fd::AsFd as _;
        let path = Path::new("-");
        let stdin = io::stdin();
        if stdin.is_terminal() {
            return Err(Error::NotAnImage {
                path: path.to_owned(),
                what: "a terminal: stdin must be an image archive piped or redirected in"
                    .to_owned(),
            });
        }
        let fd = stdin
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        Self::from_file(path, File::from(fd))
    }

    /// The archive in `file`, read from its start (a pipe, or a file not
    /// at its start, is spooled), named `path` in errors.
    fn from_file(path: &Path, file: File) -> Result<Self, Error> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let tar_err = |source| Error::Tar {
            path: path.to_owned(),
            source,
        };
        // A plain archive is read out of order, at the offsets its index
        // gives: in place only when it is a file read from its start; a
        // pipe (stdin, a FIFO) is spooled, as a compressed one is.
        let in_place = (&file).stream_position().is_ok_and(|at| at == 0);
        let (compression, reader) = codec::decompress(&file).map_err(io_err)?;
        let limits = tar::Limits {
            large_member: MAX_JSON,
            ..tar::Limits::default()
        };
        let (file, index) = if compression == Compression::None && in_place {
            drop(reader);
            let mut f = file;
            f.rewind().map_err(io_err)?;
            let index = TarIndex::read_limited(io::BufReader::with_capacity(1 << 16, &f), limits)
                .map_err(tar_err)?;
            (f, index)
        } else {
            // Indexed while it is spooled: the first bad header, an
            // announced size past the budget or a member that cannot be
            // part of an image stops it before more is written.
            let mut spool = tempfile::tempfile().map_err(io_err)?;
            let limits = tar::Limits {
                max_bytes: spool_budget(&spool),
                ..limits
            };
            let mut tee = Tee {
                inner: reader,
                spool: io::BufWriter::with_capacity(1 << 16, &mut spool),
                spool_failed: false,
            };
            let index =
                TarIndex::read_limited(io::BufReader::with_capacity(1 << 16, &mut tee), limits)
                    .map_err(|e| match e {
                        tar::TarError::Io(source) if tee.spool_failed => io_err(source),
                        e => tar_err(e),
                    })?;
            io::Write::flush(&mut tee.spool).map_err(io_err)?;
            drop(tee);
            (spool, index)
        };
        let format = if index.get("manifest.json").is_some() {
            Format::DockerArchive
        } else if index.get("index.json").is_some() {
            Format::OciArchive
        } else {
            return Err(Error::NotAnImage {
                path: path.to_owned(),
                what: "neither `manifest.json` nor `index.json` in it".to_owned(),
            });
        };
        let mut archive = Self {
            path: path.to_owned(),
            format,
            compression,
            storage: Storage::Tar { file, index },
            images: Vec::new(),
            entries: Vec::new(),
        };
        (archive.images, archive.entries) = match format {
            Format::DockerArchive => (archive.read_docker()?, Vec::new()),
            _ => archive.read_oci()?,
        };
        Ok(archive)
    }

    /// The path opened.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it is.
    #[must_use]
    pub fn format(&self) -> Format {
        self.format
    }

    /// How the archive file as a whole was compressed.
    #[must_use]
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Its images, in manifest order.
    #[must_use]
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The top-level `index.json` descriptors of an OCI archive or layout,
    /// in order (empty for a docker-archive).
    #[must_use]
    pub fn entries(&self) -> &[OciEntry] {
        &self.entries
    }

    /// The JSON blob `digest` of `size` bytes (an OCI manifest, index or
    /// config), checked against both.
    ///
    /// # Errors
    /// When it is missing, unreadable, not JSON or does not match.
    pub fn read_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, Error> {
        self.read_blob_json(digest, size, &mut Budget::new())
            .map(|(_, bytes, _)| bytes)
    }

    /// The tar's members (archives only; `None` for a layout).
    #[must_use]
    pub fn members(&self) -> Option<&[Member]> {
        match &self.storage {
            Storage::Tar { index, .. } => Some(index.members()),
            Storage::Dir(_) => None,
        }
    }

    fn malformed(&self, member: &str, what: impl Into<String>) -> Error {
        Error::Malformed {
            path: self.path.clone(),
            member: member.to_owned(),
            what: what.into(),
        }
    }

    /// Opens the stored bytes at `location` (a member name, following
    /// links, or a path relative to the layout); returns them and their
    /// length.
    ///
    /// # Errors
    /// When there is no such member or file.
    pub fn open_location(&self, location: &str) -> Result<(Box<dyn Read + Send + '_>, u64), Error> {
        let io_err = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        match &self.storage {
            Storage::Tar { file, index } => {
                let member = index
                    .resolve(location)
                    .ok_or_else(|| self.malformed(location, "is missing"))?;
                // Positional reads: several readers can be open at once.
                let reader = MemberReader {
                    file,
                    pos: member.offset,
                    end: member.offset + member.size,
                };
                Ok((
                    Box::new(io::BufReader::with_capacity(1 << 16, reader)),
                    member.size,
                ))
            }
            Storage::Dir(dir) => {
                let f = self.open_in_layout(dir, location)?;
                let len = f.metadata().map_err(io_err)?.len();
                Ok((Box::new(io::BufReader::with_capacity(1 << 16, f)), len))
            }
        }
    }

    /// Opens the regular file `location` inside the layout `dir`, following
    /// no symbolic link on the way (each directory and the file itself are
    /// opened with `O_NOFOLLOW`, relative to the one before): a link, even
    /// one pointing inside, is refused, so nothing outside can be reached.
    fn open_in_layout(&self, dir: &Path, location: &str) -> Result<File, Error> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let rel = tar::normalize(location);
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() || parts.contains(&"..") {
            return Err(self.malformed(location, "leaves the layout"));
        }
        let fail = |i: usize, source: io::Error| {
            let at = parts[..=i].join("/");
            let is_link = std::fs::symlink_metadata(dir.join(&at)).is_ok_and(|m| m.is_symlink());
            if is_link {
                self.malformed(
                    location,
                    format!("leads through the symbolic link `{at}`, which is not followed"),
                )
            } else if source.raw_os_error() == Some(libc::ENOTDIR) {
                self.malformed(
                    location,
                    format!("leads through `{at}`, which is not a directory"),
                )
            } else {
                Error::Io {
                    path: dir.join(&rel),
                    source,
                }
            }
        };
        let mut current = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            // The file itself non-blocking: opening a FIFO put where a
            // blob or `index.json` belongs would otherwise wait for a
            // writer forever; it is refused below, as is any non-file.
            let flags = libc::O_NOFOLLOW
                | if last {
                    libc::O_NONBLOCK
                } else {
                    libc::O_DIRECTORY
                };
            current = openat(&current, part, flags).map_err(|e| fail(i, e))?;
        }
        let meta = current.metadata().map_err(|e| fail(parts.len() - 1, e))?;
        if !meta.is_file() {
            return Err(self.malformed(location, "is not a regular file"));
        }
        crate::input::clear_nonblocking(&current).map_err(|e| fail(parts.len() - 1, e))?;
        Ok(current)
    }

    /// Reads a small file (JSON) whole.
    fn read_small(&self, location: &str) -> Result<Vec<u8>, Error> {
        let (r, len) = self.open_location(location)?;
        if len > MAX_JSON {
            return Err(self.malformed(location, "is too large for a JSON document"));
        }
        let mut out = Vec::new();
        r.take(MAX_JSON)
            .read_to_end(&mut out)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(out)
    }

    /// Reads the JSON document at `location` (at most 64 MiB): its bytes
    /// and its value.
    ///
    /// # Errors
    /// When it is missing, too large, unreadable or not JSON.
    pub fn read_json(&self, location: &str) -> Result<(Vec<u8>, Value), Error> {
        self.read_json_counted(location, &mut Budget::new())
    }

    /// [`ImageArchive::read_json`], its bytes counted against `budget`.
    fn read_json_counted(
        &self,
        location: &str,
        budget: &mut Budget,
    ) -> Result<(Vec<u8>, Value), Error> {
        let bytes = self.read_small(location)?;
        budget.json = budget.json.checked_sub(bytes.len() as u64).ok_or_else(|| {
            self.malformed(
                location,
                format!(
                    "takes the JSON read to open the image past {} MiB \
                     (documents counted each time they are named)",
                    MAX_JSON_TOTAL >> 20
                ),
            )
        })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| self.malformed(location, format!("is not valid JSON: {e}")))?;
        Ok((bytes, value))
    }

    /// A layer's stored bytes (maybe compressed). When the format records
    /// their digest, reading them fails (`InvalidData`) at their end if the
    /// bytes do not match it, before the reader returns end-of-file.
    ///
    /// # Errors
    /// When they cannot be opened.
    pub fn open_blob(&self, layer: &Layer) -> Result<Box<dyn Read + Send + '_>, Error> {
        let (reader, _) = self.open_location(&layer.location)?;
        Ok(match layer.digest {
            Some(expected) => Box::new(VerifyingReader::new(reader, expected, &layer.location)),
            None => reader,
        })
    }

    /// [`ImageArchive::open_location`], checked as [`ImageArchive::open_blob`]
    /// does against `expected`, else against the digest the name carries
    /// (`blobs/sha256/<hex>`, `<hex>.json`), if any.
    ///
    /// # Errors
    /// When there is no such member or file.
    pub fn open_member(
        &self,
        location: &str,
        expected: Option<Digest>,
    ) -> Result<(Box<dyn Read + Send + '_>, u64), Error> {
        let (reader, len) = self.open_location(location)?;
        Ok(match expected.or_else(|| digest_in_name(location)) {
            Some(expected) => (
                Box::new(VerifyingReader::new(reader, expected, location)),
                len,
            ),
            None => (reader, len),
        })
    }

    /// The name of the regular member `location` leads to (following
    /// links inside the archive); for a layout, `location` itself.
    #[must_use]
    pub fn resolve(&self, location: &str) -> Option<String> {
        match &self.storage {
            Storage::Tar { index, .. } => index.resolve(location).map(|m| m.name.clone()),
            Storage::Dir(_) => Some(tar::normalize(location)),
        }
    }

    /// Reads a layer's stored bytes to their end and checks them: against
    /// their digest when recorded, and against the diff_id when they are an
    /// uncompressed tar (whose digest the diff_id is).
    ///
    /// # Errors
    /// When they cannot be read or do not match.
    pub fn verify_blob(&self, layer: &Layer) -> Result<BlobCheck, Error> {
        let mut reader = self.open_blob(layer)?;
        let mut head = Vec::with_capacity(8);
        let mut size = 0u64;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    if let Some(m) = DigestMismatch::in_io(&source) {
                        return Err(self.malformed(
                            &layer.location,
                            format!(
                                "does not match its digest {} (found {})",
                                m.expected, m.found
                            ),
                        ));
                    }
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            if head.len() < 8 {
                let take = (8 - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let digest = Digest(hasher.finalize().into());
        let compression = Compression::sniff(&head);
        if let Some(diff_id) = layer.diff_id {
            if compression == Compression::None && digest != diff_id {
                return Err(self.malformed(
                    &layer.location,
                    format!("is an uncompressed layer whose sha256 {digest} is not its diff_id {diff_id}"),
                ));
            }
        }
        Ok(BlobCheck {
            digest,
            compression,
            size,
        })
    }

    /// Reads the JSON blob `digest` (an OCI manifest, index or config) and
    /// checks it against its descriptor's digest and size.
    fn read_blob_json(
        &self,
        digest: &Digest,
        size: u64,
        budget: &mut Budget,
    ) -> Result<(String, Vec<u8>, Value), Error> {
        let location = blob_location(digest);
        let (bytes, value) = self.read_json_counted(&location, budget)?;
        if Digest::of(&bytes) != *digest {
            return Err(self.malformed(&location, "does not match its digest"));
        }
        if bytes.len() as u64 != size {
            return Err(self.malformed(
                &location,
                format!("is {} bytes, its descriptor says {size}", bytes.len()),
            ));
        }
        Ok((location, bytes, value))
    }

    /// A layer's uncompressed tar, whatever its compression.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open_layer(&self, layer: &Layer) -> Result<Box<dyn Read + '_>, Error> {
        let blob = self.open_blob(layer)?;
        let (_, reader) = codec::decompress(blob).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(reader)
    }

    /// Sniffs the compression of the bytes at `location`.
    fn sniff(&self, location: &str) -> Result<Compression, Error> {
        let (mut r, _) = self.open_location(location)?;
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(source) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(Compression::sniff(&head[..got]))
    }

    fn diff_ids(&self, location: &str, config: &Value) -> Result<Vec<Digest>, Error> {
        let Some(ids) = config.pointer("/rootfs/diff_ids") else {
            return Ok(Vec::new());
        };
        let ids = ids.as_array().ok_or_else(|| {
            self.malformed(location, "has a `rootfs.diff_ids` that is not a list")
        })?;
        ids.iter()
            .map(|v| {
                v.as_str()
                    .and_then(Digest::parse)
                    .ok_or_else(|| self.malformed(location, format!("has a bad diff_id {v}")))
            })
            .collect()
    }

    /// Counts one image or index, named in `location`, against `budget`.
    fn spend_manifest(&self, location: &str, budget: &mut Budget) -> Result<(), Error> {
        budget.manifests = budget.manifests.checked_sub(1).ok_or_else(|| {
            self.malformed(
                location,
                format!(
                    "leads to more than {MAX_MANIFESTS} images and indexes \
                     (counted each time they are named)"
                ),
            )
        })?;
        Ok(())
    }

    /// Counts one layer, listed in `location`, against `budget`.
    fn spend_layer(&self, location: &str, budget: &mut Budget) -> Result<(), Error> {
        budget.layer_count = budget.layer_count.checked_sub(1).ok_or_else(|| {
            self.malformed(
                location,
                format!(
                    "leads to more than {MAX_LAYERS} layers \
                     (counted each time they are listed)"
                ),
            )
        })?;
        Ok(())
    }

    /// The stored size and compression of the layer at `location`, opened
    /// once however often it is listed.
    fn measure_layer(
        &self,
        location: &str,
        budget: &mut Budget,
    ) -> Result<(u64, Compression), Error> {
        if let Some(&known) = budget.layers.get(location) {
            return Ok(known);
        }
        let (_, size) = self.open_location(location)?;
        let compression = self.sniff(location)?;
        budget
            .layers
            .insert(location.to_owned(), (size, compression));
        Ok((size, compression))
    }

    fn read_docker(&self) -> Result<Vec<Image>, Error> {
        let budget = &mut Budget::new();
        let (_, manifest) = self.read_json_counted("manifest.json", budget)?;
        let entries = manifest
            .as_array()
            .ok_or_else(|| self.malformed("manifest.json", "is not a list"))?;
        let mut images = Vec::with_capacity(entries.len());
        for entry in entries {
            let config_location = entry
                .get("Config")
                .and_then(Value::as_str)
                .ok_or_else(|| self.malformed("manifest.json", "has an entry without `Config`"))?
                .to_owned();
            self.spend_manifest("manifest.json", budget)?;
            let (config, config_value) = self.read_json_counted(&config_location, budget)?;
            // docker, skopeo, podman and nixpkgs name the config by its
            // digest: hold it to that name.
            if let Some(named) = digest_in_name(&config_location) {
                if Digest::of(&config) != named {
                    return Err(self
                        .malformed(&config_location, "does not match the digest its name gives"));
                }
            }
            let diff_ids = self.diff_ids(&config_location, &config_value)?;
            let tags = string_list(entry.get("RepoTags"));
            let members = entry
                .get("Layers")
                .and_then(Value::as_array)
                .ok_or_else(|| self.malformed("manifest.json", "has an entry without `Layers`"))?;
            let mut layers = Vec::with_capacity(members.len());
            for (i, m) in members.iter().enumerate() {
                let location = m
                    .as_str()
                    .ok_or_else(|| {
                        self.malformed("manifest.json", "has a layer that is not a string")
                    })?
                    .to_owned();
                self.spend_layer("manifest.json", budget)?;
                let (size, compression) = self.measure_layer(&location, budget)?;
                let digest = location
                    .strip_prefix("blobs/sha256/")
                    .and_then(Digest::from_hex);
                layers.push(Layer {
                    digest,
                    diff_id: diff_ids.get(i).copied(),
                    size,
                    media_type: compression.layer_media_type().to_owned(),
                    location,
                });
            }
            images.push(Image {
                tags,
                config_digest: Digest::of(&config),
                config,
                config_location,
                manifest_digest: None,
                index_digest: None,
                layers,
                descriptor: None,
                entry: images.len(),
            });
        }
        Ok(images)
    }

    fn read_oci(&self) -> Result<(Vec<Image>, Vec<OciEntry>), Error> {
        let budget = &mut Budget::new();
        let (_, index) = self.read_json_counted("index.json", budget)?;
        let mut images = Vec::new();
        let mut entries = Vec::new();
        self.read_oci_index(
            "index.json",
            &index,
            None,
            None,
            0,
            (&mut images, &mut entries),
            budget,
        )?;
        Ok((images, entries))
    }

    // One recursion over nested indexes; the arguments are its state.
    #[allow(clippy::too_many_arguments)]
    fn read_oci_index(
        &self,
        location: &str,
        index: &Value,
        parent_tag: Option<&str>,
        parent_index: Option<Digest>,
        depth: usize,
        (images, entries): (&mut Vec<Image>, &mut Vec<OciEntry>),
        budget: &mut Budget,
    ) -> Result<(), Error> {
        if depth > 4 {
            return Err(self.malformed(location, "nests indexes too deeply"));
        }
        let manifests = index
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| self.malformed(location, "has no `manifests` list"))?;
        for desc in manifests {
            let (media_type, digest, size) = self.descriptor(location, desc)?;
            self.spend_manifest(location, budget)?;
            let tag = oci::entry_ref_name(desc).or(parent_tag);
            if depth == 0 {
                entries.push(OciEntry {
                    descriptor: desc.clone(),
                    indexes: Vec::new(),
                });
            }
            let entry = entries.len().saturating_sub(1);
            let (blob, _, doc) = self.read_blob_json(&digest, size, budget)?;
            let media_type = doc
                .get("mediaType")
                .and_then(Value::as_str)
                .map_or(media_type, str::to_owned);
            if media_type == oci::INDEX_MEDIA_TYPE
                || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
            {
                if let Some(e) = entries.last_mut() {
                    e.indexes.push((digest, size));
                }
                self.read_oci_index(
                    &blob,
                    &doc,
                    tag,
                    Some(digest),
                    depth + 1,
                    (&mut *images, &mut *entries),
                    budget,
                )?;
                continue;
            }
            if doc.get("artifactType").is_some() || doc.get("subject").is_some() {
                // An OCI 1.1 artifact (an SBOM) about an image, not an
                // image: its config is `{}`, its layer no tar.
                continue;
            }
            let config_desc = doc
                .get("config")
                .ok_or_else(|| self.malformed(&blob, "has no `config`"))?;
            let (_, config_digest, config_size) = self.descriptor(&blob, config_desc)?;
            let (config_location, config, config_value) =
                self.read_blob_json(&config_digest, config_size, budget)?;
            let diff_ids = self.diff_ids(&config_location, &config_value)?;
            let layer_descs = doc
                .get("layers")
                .and_then(Value::as_array)
                .ok_or_else(|| self.malformed(&blob, "has no `layers` list"))?;
            let mut layers = Vec::with_capacity(layer_descs.len());
            for (i, d) in layer_descs.iter().enumerate() {
                let (media_type, digest, size) = self.descriptor(&blob, d)?;
                let location = blob_location(&digest);
                self.spend_layer(&blob, budget)?;
                let (stored, _) = self.measure_layer(&location, budget)?;
                if stored != size {
                    return Err(self.malformed(
                        &location,
                        format!("is {stored} bytes, its descriptor says {size}"),
                    ));
                }
                layers.push(Layer {
                    location,
                    digest: Some(digest),
                    diff_id: diff_ids.get(i).copied(),
                    size,
                    media_type,
                });
            }
            images.push(Image {
                tags: tag.map(str::to_owned).into_iter().collect(),
                config_digest,
                config,
                config_location,
                manifest_digest: Some(digest),
                index_digest: parent_index,
                layers,
                descriptor: Some(desc.clone()),
                entry,
            });
        }
        Ok(())
    }

    fn descriptor(&self, location: &str, desc: &Value) -> Result<(String, Digest, u64), Error> {
        let media_type = desc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let digest = desc
            .get("digest")
            .and_then(Value::as_str)
            .and_then(Digest::parse)
            .ok_or_else(|| self.malformed(location, "has a descriptor without a sha256 digest"))?;
        let size = desc
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.malformed(location, "has a descriptor without a size"))?;
        Ok((media_type, digest, size))
    }
}

/// The bytes `pos..end` of a file, read without moving its offset.
struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The error (kind `InvalidData`) a blob's reader returns at its end when
/// its bytes do not match the digest they should have.
#[derive(Debug, thiserror::Error)]
#[error("`{location}` does not match its digest (expected {expected}, found {found})")]
pub struct DigestMismatch {
    /// The member or blob.
    pub location: String,
    /// The digest it should have.
    pub expected: Digest,
    /// The digest of its bytes.
    pub found: Digest,
}

impl DigestMismatch {
    /// The mismatch inside `error`, if that is what it is.
    #[must_use]
    pub fn in_io(error: &io::Error) -> Option<&Self> {
        error.get_ref()?.downcast_ref::<Self>()
    }
}

/// Hashes what passes and, at the end, fails instead of returning
/// end-of-file when the bytes are not `expected`: a consumer that reads to
/// the end never takes a tampered blob for a good one.
struct VerifyingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    expected: Digest,
    location: String,
    done: bool,
}

impl<R> VerifyingReader<R> {
    fn new(inner: R, expected: Digest, location: &str) -> Self {
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            expected,
            location: location.to_owned(),
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        let found = Digest(std::mem::take(&mut self.hasher).finalize().into());
        if found != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DigestMismatch {
                    location: self.location.clone(),
                    expected: self.expected,
                    found,
                },
            ));
        }
        self.done = true;
        Ok(0)
    }
}

/// `openat(dir, name, O_RDONLY | O_CLOEXEC | flags)`.
fn openat(dir: &File, name: &str, flags: libc::c_int) -> io::Result<File> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let name =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated name and a descriptor we hold; the
    // returned descriptor is new and owned by the File alone.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The digest a member name carries: `<hex>.json`, `<hex>` or
/// `blobs/sha256/<hex>` (any directory).
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    Digest::from_hex(base.strip_suffix(".json").unwrap_or(base))
}

/// `blobs/sha256/<hex>`.
fn blob_location(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers of two members of one archive, read in turns, each get their
    /// own bytes.
    #[test]
    fn interleaved_readers_are_independent() {
        use crate::tar::{Header, Kind, TarWriter};
        let mut w = TarWriter::new(Vec::new());
        for (name, data) in [
            ("a", &[1u8; 70_000][..]),
            ("b", &[2u8; 70_000][..]),
            ("manifest.json", b"[]"),
        ] {
            let header = Header::archive_member(name, Kind::Regular, data.len() as u64, 1);
            w.append(&header, data).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        let archive = ImageArchive::open(&path).unwrap();
        let (mut a, _) = archive.open_location("a").unwrap();
        let (mut b, _) = archive.open_location("b").unwrap();
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 1000];
        loop {
            let n = a.read(&mut buf).unwrap();
            got_a.extend_from_slice(&buf[..n]);
            let m = b.read(&mut buf).unwrap();
            got_b.extend_from_slice(&buf[..m]);
            if n == 0 && m == 0 {
                break;
            }
        }
        assert_eq!((got_a, got_b), (vec![1u8; 70_000], vec![2u8; 70_000]));
    }

    #[test]
    fn not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"definitely not a tar").unwrap();
        assert!(matches!(
            ImageArchive::open(&f),
            Err(Error::Tar { .. } | Error::NotAnImage { .. })
        ));
        assert!(matches!(
            ImageArchive::open(dir.path()),
            Err(Error::NotAnImage { .. })
        ));
        assert!(matches!(
            ImageArchive::open(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }

    /// JSON documents over [`MAX_JSON`] are refused before they are read
    /// (sparse files: the bytes are never there).
    #[test]
    fn oversized_json_is_refused_unread() {
        use crate::tar::{Header, Kind, TarWriter};
        let dir = tempfile::tempdir().unwrap();
        let big = MAX_JSON + 1;
        let mut w = TarWriter::new(Vec::new());
        w.start_entry(&Header::archive_member(
            "manifest.json",
            Kind::Regular,
            big,
            1,
        ))
        .unwrap();
        let header = w.get_ref().clone();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, &header).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(header.len() as u64 + big.div_ceil(512) * 512 + 1024)
            .unwrap();
        let err = ImageArchive::open(&path).unwrap_err();
        assert!(err.to_string().contains("a.tar"), "{err}");

        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        let index = File::create(layout.join("index.json")).unwrap();
        index.set_len(big).unwrap();
        let err = ImageArchive::open(&layout).unwrap_err();
        assert!(
            matches!(&err, Error::Malformed { member, what, .. } if member == "index.json" && what.contains("too large")),
            "{err:?}"
        );
    }

    /// An OCI layout whose `index.json` names one nested index 40 times,
    /// which names the next 40 times, four deep: 40^5 images by naming,
    /// one blob of each on disk. Opening it stops at the budget (in
    /// seconds) instead of reading 100 million manifests.
    #[test]
    fn a_nested_index_named_over_and_over_stops_at_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: Vec<u8>, media_type: &str| {
            let digest = Digest::of(&bytes);
            std::fs::write(blobs.join(digest.hex()), &bytes).unwrap();
            serde_json::json!({
                "mediaType": media_type,
                "digest": digest.prefixed(),
                "size": bytes.len(),
            })
        };
        let config = put(
            br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [],
        });
        let mut desc = put(manifest.to_string().into_bytes(), oci::MANIFEST_MEDIA_TYPE);
        for _ in 0..4 {
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": oci::INDEX_MEDIA_TYPE,
                "manifests": vec![desc; 40],
            });
            desc = put(index.to_string().into_bytes(), oci::INDEX_MEDIA_TYPE);
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": vec![desc; 40]});
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();

        let started = std::time::Instant::now();
        let err = ImageArchive::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Malformed { what, .. } if what.contains("more than 65536 images and indexes")),
            "{err:?}"
        );
        assert!(started.elapsed().as_secs() < 120, "{:?}", started.elapsed());
    }

    /// A docker-archive whose `manifest.json` names one 32 MiB config 20
    /// times: 640 MiB of JSON to read for one member, refused at the
    /// budget rather than read (and kept, once an image) again and again.
    #[test]
    fn a_config_named_over_and_over_stops_at_the_json_budget() {
        use crate::tar::{Header, Kind, TarWriter};
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":[]}},"x":"{}"}}"#,
            "a".repeat(32 << 20)
        );
        let entry = serde_json::json!({"Config": "c.json", "Layers": [], "RepoTags": []});
        let manifest = serde_json::Value::Array(vec![entry; 20]).to_string();
        let mut w = TarWriter::new(Vec::new());
        for (name, data) in [
            ("manifest.json", manifest.as_bytes()),
            ("c.json", config.as_bytes()),
        ] {
            let header = Header::archive_member(name, Kind::Regular, data.len() as u64, 1);
            w.append(&header, data).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        let err = ImageArchive::open(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Malformed { member, what, .. } if member == "c.json" && what.contains("past 512 MiB")),
            "{err:?}"
        );
    }

    /// `ImageArchive::open(path)`'s error, or a failure if it does not
    /// return within 30 seconds (a thread left blocked on a FIFO).
    fn open_error_within(path: PathBuf) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(ImageArchive::open(&path).map(|_| ()));
        });
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Err(e)) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            }
            Ok(Ok(())) => panic!("opened"),
            Err(_) => panic!("opening hung"),
        }
    }

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
    }

    /// A FIFO nobody writes to where an archive, a layout's `index.json`
    /// or one of its blobs belongs is an error naming it, not a wait for
    /// a writer forever (as `inspect`, `merge` and a build's base waited).
    #[test]
    fn fifos_for_an_archive_index_or_blob_are_errors_not_waits() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        mkfifo(&archive);
        let err = open_error_within(archive);
        // Read as a pipe (spooled, as `-` is): without a writer, empty.
        assert!(
            err.contains("image.tar") && err.contains("neither `manifest.json`"),
            "{err}"
        );

        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        mkfifo(&layout.join("index.json"));
        let err = open_error_within(layout.clone());
        assert!(err.contains("`index.json` is not a regular file"), "{err}");

        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            std::fs::write(blobs.join(digest.hex()), bytes).unwrap();
            serde_json::json!({"digest": digest.prefixed(), "size": bytes.len()})
        };
        let layer = Digest::of(b"layer");
        let config = put(
            serde_json::json!({"rootfs": {"diff_ids": [layer.prefixed()]}})
                .to_string()
                .as_bytes(),
        );
        let manifest = put(serde_json::json!({
            "config": config,
            "layers": [{"digest": layer.prefixed(), "size": 5}],
        })
        .to_string()
        .as_bytes());
        mkfifo(&blobs.join(layer.hex()));
        std::fs::remove_file(layout.join("index.json")).unwrap();
        std::fs::write(
            layout.join("index.json"),
            serde_json::json!({"manifests": [manifest]}).to_string(),
        )
        .unwrap();
        let err = open_error_within(layout);
        assert!(
            err.contains(&format!(
                "`blobs/sha256/{}` is not a regular file",
                layer.hex()
            )),
            "{err}"
        );
    }

    mod prop {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::*;
        use crate::tar::{Header, Kind, TarWriter};

        const KEYS: &[&str] = &[
            "Config",
            "Layers",
            "RepoTags",
            "manifests",
            "config",
            "layers",
            "digest",
            "size",
            "mediaType",
            "annotations",
            "rootfs",
            "diff_ids",
            "x",
        ];
        const WORDS: &[&str] = &[
            "c.json",
            "l.tar",
            "manifest.json",
            "../c.json",
            "/etc/passwd",
            "blobs/sha256/x",
            "@config",
            "@manifest",
            "@layer",
            "@layer_id",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
        ];

        /// JSON shaped like image documents, with `@config`, `@manifest`,
        /// `@layer` standing for real descriptors and `@layer_id` for the
        /// layer's diff_id, so parsing gets past the digest checks.
        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                prop::sample::select(WORDS).prop_map(Value::from),
                ".{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(
                        |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    ),
                ]
            })
        }

        fn substitute(v: &mut Value, blobs: &[(&str, &[u8])]) {
            match v {
                Value::String(s) => {
                    if s == "@layer_id" {
                        *v = Value::from(Digest::of(blobs[0].1).prefixed());
                        return;
                    }
                    if let Some((_, bytes)) = blobs.iter().find(|(n, _)| n == s) {
                        *v = serde_json::json!({
                            "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": Digest::of(bytes).prefixed(),
                            "size": bytes.len(),
                        });
                    }
                }
                Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, blobs)),
                Value::Object(o) => o.values_mut().for_each(|x| substitute(x, blobs)),
                _ => {}
            }
        }

        fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
            let mut w = TarWriter::new(Vec::new());
            for (name, data) in members {
                let header = Header::archive_member(name, Kind::Regular, data.len() as u64, 1);
                w.append(&header, data).unwrap();
            }
            w.finish().unwrap()
        }

        /// Opens, inspects (as `inspect` does) and reads every layer.
        fn exercise(path: &Path) {
            if let Ok(archive) = ImageArchive::open(path) {
                for entry in archive.entries() {
                    for (digest, size) in &entry.indexes {
                        let _ = archive.read_blob(digest, *size);
                    }
                }
                for image in archive.images() {
                    let _ = image.config_value();
                    for layer in &image.layers {
                        let _ = archive.verify_blob(layer);
                        if let Ok(mut r) = archive.open_layer(layer) {
                            let _ = io::copy(&mut r.by_ref().take(1 << 20), &mut io::sink());
                        }
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// manifest.json, repositories and the config of a
            /// docker-archive: any JSON (or bytes), never a panic.
            #[test]
            fn docker_archive_json_never_panics(
                config in arb_json(),
                mut manifest in arb_json(),
                repositories in arb_json(),
                raw in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            ) {
                let layer = tar_of(&[("f".to_owned(), b"x".to_vec())]);
                let mut config = config;
                substitute(&mut config, &[("@layer", &layer)]);
                let config = serde_json::to_vec(&config).unwrap();
                let config_name = format!("{}.json", Digest::of(&config).hex());
                substitute(&mut manifest, &[("@layer", &layer)]);
                let manifest = match raw {
                    Some(raw) => raw,
                    None => serde_json::to_vec(&manifest).unwrap().replace_c(&config_name),
                };
                let bytes = tar_of(&[
                    ("l.tar".to_owned(), layer),
                    ("c.json".to_owned(), config.clone()),
                    (config_name, config),
                    ("repositories".to_owned(), serde_json::to_vec(&repositories).unwrap()),
                    ("manifest.json".to_owned(), manifest),
                ]);
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("a.tar");
                std::fs::write(&path, bytes).unwrap();
                exercise(&path);
            }

            /// index.json, a manifest and a config of an OCI layout and
            /// archive: any JSON, never a panic.
            #[test]
            fn oci_index_and_manifest_never_panic(
                config in arb_json(),
                manifest in arb_json(),
                index in arb_json(),
            ) {
                let layer = tar_of(&[("f".to_owned(), b"x".to_vec())]);
                let mut config = config;
                substitute(&mut config, &[("@layer", &layer)]);
                let config = serde_json::to_vec(&config).unwrap();
                let mut manifest = manifest;
                substitute(&mut manifest, &[("@config", &config), ("@layer", &layer)]);
                let manifest = serde_json::to_vec(&manifest).unwrap();
                let mut index = index;
                substitute(&mut index, &[("@manifest", &manifest), ("@config", &config), ("@layer", &layer)]);
                let index = serde_json::to_vec(&index).unwrap();
                let dir = tempfile::tempdir().unwrap();
                let blobs = dir.path().join("blobs/sha256");
                std::fs::create_dir_all(&blobs).unwrap();
                let mut members = vec![("index.json".to_owned(), index.clone())];
                for blob in [&layer, &config, &manifest] {
                    std::fs::write(blobs.join(Digest::of(blob).hex()), blob).unwrap();
                    members.push((blob_location(&Digest::of(blob)), blob.clone()));
                }
                std::fs::write(dir.path().join("index.json"), &index).unwrap();
                exercise(dir.path());
                let path = dir.path().join("oci.tar");
                std::fs::write(&path, tar_of(&members)).unwrap();
                exercise(&path);
            }
        }

        trait ReplaceC {
            fn replace_c(self, name: &str) -> Vec<u8>;
        }

        impl ReplaceC for Vec<u8> {
            /// Points `c.json` at the config's digest-named copy half the
            /// time (by the name's parity), so both paths are taken.
            fn replace_c(self, name: &str) -> Vec<u8> {
                if self.len().is_multiple_of(2) {
                    return self;
                }
                String::from_utf8(self)
                    .unwrap()
                    .replace("\"c.json\"", &format!("\"{name}\""))
                    .into_bytes()
            }
        }
    }
}
