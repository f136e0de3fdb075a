//! An OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), as skopeo's `oci:DIR:TAG` reads and writes it.
//!
//! Blobs are streamed into a temporary file inside `blobs/sha256/`, hashed
//! on the way, and renamed to their digest; a blob already present is kept
//! as it is (same name, same bytes), so a rebuild after one store path
//! changed writes only the new blobs. `index.json` is replaced atomically:
//! its entry for the tag is replaced in place, other entries stay (as
//! skopeo does).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::NamedTempFile;

use super::{BlobSink, Error};
use crate::oci;
use crate::oci::Digest;

/// Large writes: blobs are big and streamed.
const BUFFER: usize = 1 << 20;

/// An OCI image layout directory open for writing.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
    blobs: PathBuf,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl OciLayout {
    /// Opens the layout at `dir`, creating it (and `oci-layout`,
    /// `blobs/sha256/`) when missing.
    ///
    /// # Errors
    /// When `dir` exists, is not empty and has no `oci-layout` file (it is
    /// something else, which must not be written into), or cannot be created.
    pub fn create(dir: &Path) -> Result<Self, Error> {
        let marker = dir.join("oci-layout");
        if dir.is_dir() && !marker.exists() {
            let mut entries = fs::read_dir(dir).map_err(io_at(dir))?;
            if entries.next().is_some() {
                return Err(Error::NotALayout {
                    path: dir.to_owned(),
                });
            }
        }
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        if !marker.exists() {
            replace_file(&marker, oci::LAYOUT_FILE)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            blobs,
        })
    }

    /// The layout's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives.
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Names the manifest of `entry` (an index entry from
    /// [`oci::index_entry`]) `tag` in `index.json`: an entry with the same
    /// ref name is replaced in place, others are kept.
    ///
    /// # Errors
    /// When the existing `index.json` is malformed or cannot be replaced.
    pub fn set_tag(&self, tag: &str, entry: Value) -> Result<(), Error> {
        let path = self.dir.join("index.json");
        let mut manifests: Vec<Value> = match fs::read(&path) {
            Ok(bytes) => {
                let index: Value =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                        path: path.clone(),
                        source,
                    })?;
                match index.get("manifests") {
                    Some(Value::Array(m)) => m.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(Error::Malformed {
                            path,
                            what: "`manifests` is not an array",
                        })
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_at(&path)(e)),
        };
        match manifests
            .iter_mut()
            .find(|m| oci::entry_ref_name(m) == Some(tag))
        {
            Some(slot) => *slot = entry,
            None => manifests.push(entry),
        }
        replace_file(&path, &oci::index_json(manifests))
    }
}

/// Writes `path` through a temporary file in its directory and a rename.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".nixlayer-")
        .tempfile_in(dir)
        .map_err(io_at(dir))?;
    temp.write_all(bytes).map_err(io_at(path))?;
    finish_temp(temp, path)
}

/// Syncs, makes world-readable and renames `temp` to `path`.
fn finish_temp(temp: NamedTempFile, path: &Path) -> Result<(), Error> {
    temp.as_file().sync_all().map_err(io_at(path))?;
    set_readable(temp.as_file()).map_err(io_at(path))?;
    temp.persist(path).map_err(|e| io_at(path)(e.error))?;
    Ok(())
}

#[cfg(unix)]
fn set_readable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_readable(_: &File) -> io::Result<()> {
    Ok(())
}

/// A blob being written into the layout.
pub struct LayoutBlob {
    file: BufWriter<NamedTempFile>,
}

impl Write for LayoutBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobSink for OciLayout {
    type Blob = LayoutBlob;

    fn start_blob(&mut self) -> Result<LayoutBlob, Error> {
        let temp = tempfile::Builder::new()
            .prefix(".nixlayer-")
            .suffix(".tmp")
            .tempfile_in(&self.blobs)
            .map_err(io_at(&self.blobs))?;
        Ok(LayoutBlob {
            file: BufWriter::with_capacity(BUFFER, temp),
        })
    }

    fn commit_blob(
        &mut self,
        blob: LayoutBlob,
        digest: &Digest,
        _size: u64,
    ) -> Result<bool, Error> {
        let path = self.blob_path(digest);
        if path.exists() {
            // Same digest, same bytes: keep the existing file untouched
            // (its inode and mtime), drop the temporary one.
            return Ok(false);
        }
        let temp = blob
            .file
            .into_inner()
            .map_err(|e| io_at(&path)(e.into_error()))?;
        finish_temp(temp, &path)?;
        Ok(true)
    }

    fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    fn put_blob(&mut self, bytes: &[u8]) -> Result<(Digest, bool), Error> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        if path.exists() {
            return Ok((digest, false));
        }
        replace_file(&path, bytes)?;
        Ok((digest, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_digest_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layout");
        let mut layout = OciLayout::create(&root).unwrap();
        assert_eq!(fs::read(root.join("oci-layout")).unwrap(), oci::LAYOUT_FILE);
        let (d, new) = layout.put_blob(b"abc").unwrap();
        assert!(new);
        assert_eq!(fs::read(layout.blob_path(&d)).unwrap(), b"abc");

        let mut blob = layout.start_blob().unwrap();
        blob.write_all(b"abc").unwrap();
        assert!(!layout.commit_blob(blob, &d, 3).unwrap());
        // Only the blob, no temporary file left behind.
        assert_eq!(fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 1);
    }

    #[test]
    fn tags_replace_their_entry_and_keep_others() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let entry = |n: &[u8], tag: &str| {
            let d = oci::Descriptor {
                media_type: oci::MANIFEST_MEDIA_TYPE.into(),
                digest: Digest::of(n),
                size: 1,
            };
            oci::index_entry(&d, &format!("x:{tag}"), tag, "linux", "amd64")
        };
        layout.set_tag("a", entry(b"1", "a")).unwrap();
        layout.set_tag("b", entry(b"2", "b")).unwrap();
        layout.set_tag("a", entry(b"3", "a")).unwrap();
        let index: Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["digest"], Digest::of(b"3").prefixed());
        assert_eq!(m[1]["digest"], Digest::of(b"2").prefixed());
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("important.txt"), "x").unwrap();
        assert!(matches!(
            OciLayout::create(dir.path()),
            Err(Error::NotALayout { .. })
        ));
    }
}
