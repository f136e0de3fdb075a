//! An OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), as skopeo's `oci:DIR:TAG` reads and writes it.
//!
//! Blobs are streamed into a temporary file inside `blobs/sha256/`, hashed
//! on the way, and renamed to their digest; a blob already present is kept
//! as it is (same name, same bytes), so a rebuild after one store path
//! changed writes only the new blobs. `index.json` is replaced atomically:
//! its entry for the tag is replaced in place, other entries stay (as
//! skopeo does).
//!
//! Concurrent builds and readers:
//! - a layout that does not exist yet (missing, or an empty directory) is
//!   made in a staging directory beside it (`.nixlayer-*.tmp`) and renamed
//!   into place complete, so a reader never sees a half-made layout and a
//!   failed or interrupted build leaves nothing. When another build made
//!   the layout meanwhile, the staged blobs are moved into it and the tag
//!   is added as to any existing layout;
//! - `index.json` is read, changed and replaced under an exclusive `flock`
//!   of the layout directory itself (no lock file is added to the layout),
//!   so concurrent builds of different tags keep every tag. Blobs need no
//!   lock: they are content-addressed and put in place without replacing.
//!
//! An interrupted build into an existing layout leaves it valid: at most
//! some unreferenced blobs, and `index.json` as it was.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use super::output::Staged;
use super::{Error, ImageEntry, ImageSink, LayerForm};
use crate::cleanup::Pending;
use crate::codec::CompressOptions;
use crate::oci;
use crate::oci::{Descriptor, Digest};

/// A new layout's directory until its first tag is set.
#[derive(Debug)]
struct Staging {
    dir: TempDir,
    pending: Pending,
    /// Beside the target (renamed into place), or inside an empty target
    /// whose parent cannot be written (its contents are moved instead).
    beside: bool,
}

/// An OCI image layout directory open for writing.
#[derive(Debug)]
pub struct OciLayout {
    /// The directory as the user named it, for messages.
    shown: PathBuf,
    /// Where the layout is, through links, or will be once complete.
    target: PathBuf,
    /// `blobs/sha256` where blobs are written now (in `staging` until the
    /// layout is in place).
    blobs: PathBuf,
    staging: Option<Staging>,
    /// How layers are compressed.
    compress: CompressOptions,
    /// What `index.json` will list, until [`ImageSink::finish`].
    index: super::PendingIndex,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

const BLOBS: &str = "blobs/sha256";

impl OciLayout {
    /// Opens the layout at `dir`; a missing one (or an empty directory) is
    /// made in a staging directory and put in place by the first
    /// [`OciLayout::set_tag`]. A link to a directory is followed.
    ///
    /// # Errors
    /// When `dir` is not a directory, a dangling link, or is not empty and
    /// has no `oci-layout` file (it is something else, which must not be
    /// written into), or cannot be created.
    pub fn create(dir: &Path) -> Result<Self, Error> {
        let refuse = |reason: &str| Error::Refused {
            path: dir.to_owned(),
            reason: reason.to_owned(),
        };
        let target = match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::fresh(dir, dir, false),
            Err(e) => return Err(io_at(dir)(e)),
            Ok(m) => {
                let m = if m.file_type().is_symlink() {
                    match fs::metadata(dir) {
                        Ok(m) => m,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(refuse(
                            "is a dangling symbolic link: refusing to write a layout through it",
                        )),
                        Err(e) => return Err(io_at(dir)(e)),
                    }
                } else {
                    m
                };
                if !m.is_dir() {
                    return Err(refuse(
                        "is not a directory: an `oci-layout` output is a directory",
                    ));
                }
                // Through links: renaming a staged layout over a link would
                // replace the link.
                fs::canonicalize(dir).map_err(io_at(dir))?
            }
        };
        if target.join("oci-layout").exists() {
            // Blobs are written into `blobs/sha256`: through a link there
            // they would land outside the layout (reading a layout refuses
            // such links too; see `archive`).
            for part in ["blobs", BLOBS] {
                let at = target.join(part);
                if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(Error::Refused {
                        path: at,
                        reason: "is a symbolic link: the layout's blobs are never written through a link, which would put them outside the layout".to_owned(),
                    });
                }
            }
            let blobs = target.join(BLOBS);
            fs::create_dir_all(&blobs).map_err(io_at(dir))?;
            return Ok(Self {
                shown: dir.to_owned(),
                target,
                blobs,
                staging: None,
                compress: CompressOptions::NONE,
                index: super::PendingIndex::default(),
            });
        }
        if is_empty(&target).map_err(io_at(dir))? {
            return Self::fresh(dir, &target, true);
        }
        Err(Error::NotALayout {
            path: dir.to_owned(),
        })
    }

    /// A new layout for `target`, staged.
    fn fresh(shown: &Path, target: &Path, exists: bool) -> Result<Self, Error> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let staged = |at: &Path| Pending::create(|| staging_dir(at), |d| d.path());
        let ((dir, pending), beside) = match staged(parent) {
            Ok(made) => (made, true),
            // An empty directory the user may write, in one they may not.
            Err(e) if exists && e.kind() == io::ErrorKind::PermissionDenied => {
                (staged(target).map_err(io_at(shown))?, false)
            }
            Err(e) => return Err(io_at(shown)(e)),
        };
        let blobs = dir.path().join(BLOBS);
        fs::create_dir_all(&blobs).map_err(io_at(shown))?;
        replace_file(
            &dir.path().join("oci-layout"),
            oci::LAYOUT_FILE,
            &shown.join("oci-layout"),
        )?;
        Ok(Self {
            shown: shown.to_owned(),
            target: target.to_owned(),
            blobs,
            staging: Some(Staging {
                dir,
                pending,
                beside,
            }),
            compress: CompressOptions::NONE,
            index: super::PendingIndex::default(),
        })
    }

    /// Layers compressed with `compress` (uncompressed by default).
    #[must_use]
    pub fn compressed(mut self, compress: CompressOptions) -> Self {
        self.compress = compress;
        self
    }

    /// The layout's directory, as given.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shown
    }

    /// Where the blob `digest` is written.
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// `blobs/sha256/<hex>` under the directory the user named.
    fn shown_blob(&self, digest: &Digest) -> PathBuf {
        self.shown.join(BLOBS).join(digest.hex())
    }

    /// Names the manifest of `entry` (an index entry from
    /// [`oci::index_entry`]) `tag` in `index.json`: an entry with the same
    /// ref name is replaced in place, others are kept. The first tag of a
    /// new layout puts the layout in place.
    ///
    /// # Errors
    /// When the existing `index.json` is malformed or cannot be replaced,
    /// or its entry of that tag is another image name's (`app:1` into a
    /// layout holding `db:1`): tools pick a layout's image by tag alone
    /// (`oci:DIR:1`), so replacing it would silently drop `db:1`, and
    /// adding a second `1` would leave skopeo to take either.
    pub fn set_tag(&mut self, tag: &str, entry: Value) -> Result<(), Error> {
        let name = entry_name(&entry).1.map(str::to_owned);
        self.update(&|mut manifests: Vec<Value>| {
            let tagged = |m: &Value| oci::entry_ref_name(m) == Some(tag);
            // Its own entry first (a merge may have put `db:1` beside it).
            let own = manifests
                .iter()
                .position(|m| tagged(m) && entry_name(m).1 == name.as_deref());
            let slot = match own {
                Some(i) => Some(i),
                None => match (manifests.iter().position(tagged), name.as_deref()) {
                    (Some(i), Some(new)) => {
                        if let Some(old) = entry_name(&manifests[i]).1 {
                            return Err(format!(
                                "already names `{old}` by the tag `{tag}`; tools pick a layout's image by tag (`oci:DIR:{tag}`), so `{new}` would replace it: use another tag or layout, or remove that entry"
                            ));
                        }
                        Some(i)
                    }
                    (found, _) => found,
                },
            };
            match slot {
                Some(i) => manifests[i] = entry.clone(),
                None => manifests.push(entry.clone()),
            }
            Ok(manifests)
        })
    }

    /// Adds `entries` (descriptors of manifests or indexes already put,
    /// with their annotations) to `index.json`, in order, as `merge` does:
    /// an existing entry with the same ref name and the same
    /// `io.containerd.image.name` is replaced in place, an identical one
    /// kept once, an untagged one added. The first call on a new layout
    /// puts the layout in place.
    ///
    /// # Errors
    /// When the existing `index.json` is malformed or cannot be replaced.
    pub fn add_entries(&mut self, entries: &[Value]) -> Result<(), Error> {
        self.update(&|mut manifests: Vec<Value>| {
            for entry in entries {
                let name = entry_name(entry);
                let slot = manifests
                    .iter_mut()
                    .find(|m| *m == entry || (name.0.is_some() && entry_name(m) == name));
                match slot {
                    Some(slot) => slot.clone_from(entry),
                    None => manifests.push(entry.clone()),
                }
            }
            Ok(manifests)
        })
    }

    /// Replaces `index.json`'s `manifests` with what `change` makes of
    /// them; a new layout is put in place.
    fn update(&mut self, change: Change<'_>) -> Result<(), Error> {
        let Some(staging) = self.staging.take() else {
            return self.update_index(change);
        };
        self.blobs = self.target.join(BLOBS);
        if staging.beside {
            let index = staging.dir.path().join("index.json");
            replace_file(
                &index,
                &oci::index_json(self.with_referrers(change(Vec::new()).map_err(|reason| {
                    Error::Refused {
                        path: self.shown.join("index.json"),
                        reason,
                    }
                })?)),
                &self.shown.join("index.json"),
            )?;
            let renamed = staging
                .pending
                .publish(|| fs::rename(staging.dir.path(), &self.target));
            match renamed {
                Ok(()) => {
                    let _ = staging.dir.keep();
                    return Ok(());
                }
                // Another build made it meanwhile (or it is a mount
                // point): move the staged blobs into it instead.
                Err(_) if fs::metadata(&self.target).is_ok_and(|m| m.is_dir()) => {}
                Err(e) => return Err(io_at(&self.shown)(e)),
            }
        }
        self.merge_staged(staging.dir.path(), change)
    }

    /// Moves the staged blobs into the layout that is now at the target,
    /// then changes `index.json` and, last, adds the `oci-layout` marker if
    /// missing.
    fn merge_staged(&self, staged: &Path, change: Change<'_>) -> Result<(), Error> {
        let _lock = lock(&self.target, &self.shown)?;
        let marker = self.target.join("oci-layout");
        if !marker.exists() && !is_empty(&self.target).map_err(io_at(&self.shown))? {
            return Err(Error::NotALayout {
                path: self.shown.clone(),
            });
        }
        fs::create_dir_all(&self.blobs).map_err(io_at(&self.shown))?;
        let from = staged.join(BLOBS);
        for item in fs::read_dir(&from).map_err(io_at(&self.shown))? {
            let name = item.map_err(io_at(&self.shown))?.file_name();
            let dest = self.blobs.join(&name);
            if !dest.exists() {
                fs::rename(from.join(&name), &dest)
                    .map_err(io_at(&self.shown.join(BLOBS).join(&name)))?;
            }
        }
        self.write_index(change)?;
        if !marker.exists() {
            replace_file(&marker, oci::LAYOUT_FILE, &self.shown.join("oci-layout"))?;
        }
        Ok(())
    }

    /// `manifests` and the referrers put (SBOMs) after them. Referrers are
    /// named by digest alone: one entry each, kept when already listed (a
    /// rebuild of the same image).
    fn with_referrers(&self, mut manifests: Vec<Value>) -> Vec<Value> {
        for referrer in &self.index.referrers {
            if !manifests
                .iter()
                .any(|m| m.get("digest") == referrer.get("digest"))
            {
                manifests.push(referrer.clone());
            }
        }
        manifests
    }

    /// Changes `index.json` of the layout in place, under its lock.
    fn update_index(&self, change: Change<'_>) -> Result<(), Error> {
        let _lock = lock(&self.target, &self.shown)?;
        self.write_index(change)
    }

    /// Reads, changes and replaces `index.json`; the caller holds the lock.
    fn write_index(&self, change: Change<'_>) -> Result<(), Error> {
        let path = self.target.join("index.json");
        let shown = self.shown.join("index.json");
        let manifests: Vec<Value> = match fs::read(&path) {
            Ok(bytes) => {
                let index: Value =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                        path: shown.clone(),
                        source,
                    })?;
                if !index.is_object() {
                    return Err(Error::Malformed {
                        path: shown,
                        what: "it is not a JSON object",
                    });
                }
                match index.get("manifests") {
                    Some(Value::Array(m)) => m.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(Error::Malformed {
                            path: shown,
                            what: "`manifests` is not an array",
                        })
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_at(&shown)(e)),
        };
        let changed = change(manifests).map_err(|reason| Error::Refused {
            path: shown.clone(),
            reason,
        })?;
        let manifests = self.with_referrers(changed);
        replace_file(&path, &oci::index_json(manifests), &shown)
    }
}

/// A change of `index.json`'s `manifests`, or why it is refused.
type Change<'a> = &'a dyn Fn(Vec<Value>) -> Result<Vec<Value>, String>;

/// What names an `index.json` entry: its ref name and containerd name.
fn entry_name(entry: &Value) -> (Option<&str>, Option<&str>) {
    let name = entry
        .get("annotations")
        .and_then(|a| a.get(oci::CONTAINERD_NAME))
        .and_then(Value::as_str);
    (oci::entry_ref_name(entry), name)
}

/// A staging directory in `parent`: mode 0777 less the umask, like any
/// new directory (tempfile's default, 0700, would ignore the umask).
fn staging_dir(parent: &Path) -> io::Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".nixlayer-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(fs::Permissions::from_mode(0o777));
    }
    builder.tempdir_in(parent).map_err(super::output::os_cause)
}

/// Whether `dir` holds nothing but our own temporary entries.
fn is_empty(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        if !entry?
            .file_name()
            .as_encoded_bytes()
            .starts_with(b".nixlayer-")
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An exclusive `flock` of the layout directory, held until the file is
/// dropped (also released by the kernel if the process dies).
fn lock(dir: &Path, shown: &Path) -> Result<File, Error> {
    let file = File::open(dir).map_err(io_at(shown))?;
    file.lock().map_err(io_at(shown))?;
    Ok(file)
}

/// Writes `path` through a temporary file in its directory and a rename;
/// errors name `shown`.
fn replace_file(path: &Path, bytes: &[u8], shown: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = Staged::new_in(dir, shown).map_err(io_at(shown))?;
    temp.write_all(bytes).map_err(io_at(shown))?;
    temp.publish(path).map_err(io_at(shown))?;
    Ok(())
}

/// A blob being written into the layout.
///
/// Its bytes are handed to the disk as they come, 8 MiB at a
/// time: the sync before the blob is committed then waits for its last
/// few MiB, not for a 100 MiB layer written at once after the compressor
/// finished (the build's cores would idle meanwhile).
pub struct LayoutBlob {
    file: Staged,
    written: u64,
    handed: u64,
}

/// Bytes written between two writeback requests.
const WRITEBACK_STEP: u64 = 8 << 20;

/// A blob's write buffer. Compressors hand over their output in pieces
/// of 256 KiB or so and the uncompressed layer writer in 1 MiB chunks,
/// which go to the file without a copy; the buffer only gathers small
/// writes. Small, as a build holds up to eight blobs at once (being
/// written, synced or waiting to be committed in layer order).
const BLOB_BUFFER: usize = 64 << 10;

impl LayoutBlob {
    fn wrote(&mut self, n: usize) -> io::Result<()> {
        self.written += n as u64;
        if self.written - self.handed >= WRITEBACK_STEP {
            self.file.start_writeback(self.handed, self.written)?;
            self.handed = self.written;
        }
        Ok(())
    }
}

impl Write for LayoutBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.wrote(n)?;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.wrote(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ImageSink for OciLayout {
    type Blob = LayoutBlob;
    type Output = ();

    fn layer_form(&self) -> LayerForm {
        LayerForm::Blobs(self.compress)
    }

    /// Each blob is a temporary file of its own until committed.
    fn concurrent_layers(&self) -> bool {
        true
    }

    /// Synced by the thread that wrote it: committing (a rename) then
    /// finds its bytes on disk already.
    fn seal_layer(blob: &mut LayoutBlob) -> Result<(), Error> {
        blob.file.sync().map_err(|source| Error::Io {
            path: PathBuf::from(BLOBS),
            source,
        })
    }

    fn start_layer(&mut self, _key: &Digest, _size: u64) -> Result<LayoutBlob, Error> {
        let shown = self.shown.join(BLOBS);
        Staged::with_buffer(&self.blobs, &shown, BLOB_BUFFER)
            .map(|file| LayoutBlob {
                file,
                written: 0,
                handed: 0,
            })
            .map_err(io_at(&shown))
    }

    fn commit_layer(
        &mut self,
        blob: LayoutBlob,
        digest: &Digest,
        _size: u64,
    ) -> Result<bool, Error> {
        // Same digest, same bytes: an existing blob is kept untouched (its
        // inode and mtime), the temporary one dropped.
        blob.file
            .publish_new(&self.blob_path(digest))
            .map_err(io_at(&self.shown_blob(digest)))
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
        let shown = self.shown_blob(&digest);
        let mut temp = Staged::new_in(&self.blobs, &shown).map_err(io_at(&shown))?;
        temp.write_all(bytes).map_err(io_at(&shown))?;
        let new = temp.publish_new(&path).map_err(io_at(&shown))?;
        Ok((digest, new))
    }

    fn set_annotations(&mut self, annotations: &super::OutputAnnotations) {
        self.index.annotations = annotations.clone();
    }

    fn put_manifest(&mut self, image: &ImageEntry<'_>) -> Result<(Descriptor, bool), Error> {
        let (digest, new) = self.put_blob(image.manifest)?;
        Ok((self.index.add_manifest(image, digest), new))
    }

    /// Stores the artifact's blobs and manifest; `index.json` lists it
    /// (no ref name, as oras and skopeo leave referrers) when
    /// [`ImageSink::finish`] names the image.
    fn put_referrer(&mut self, referrer: &super::Referrer<'_>) -> Result<Descriptor, Error> {
        for blob in [referrer.config, referrer.blob, referrer.manifest] {
            self.put_blob(blob)?;
        }
        Ok(self.index.add_referrer(referrer))
    }

    /// Names the manifest (or, for several, an index of them) by
    /// `reference`'s tag in `index.json`; a new layout is put in place.
    fn finish(mut self, reference: &str) -> Result<((), Option<u64>), Error> {
        let index = std::mem::take(&mut self.index);
        let entry = index.entry(reference, |b| self.put_blob(b))?;
        // `index.json`'s update lists the referrers after the entry.
        self.index.referrers = index.referrers;
        self.set_tag(super::tag_of(reference), entry)?;
        Ok(((), None))
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;

    use super::*;

    fn entry(n: &[u8], tag: &str) -> Value {
        named_entry(n, "x", tag)
    }

    /// An index entry of a manifest `n` named `NAME:TAG`.
    fn named_entry(n: &[u8], name: &str, tag: &str) -> Value {
        let d = oci::Descriptor {
            media_type: oci::MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::of(n),
            size: 1,
        };
        oci::index_entry(&d, &format!("{name}:{tag}"), tag, "linux", "amd64")
    }

    /// The digests `index.json` under `root` lists, in order.
    fn index_digests(root: &Path) -> Vec<String> {
        let index: Value =
            serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_new_layout_appears_complete_and_keeps_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layout");
        let mut layout = OciLayout::create(&root).unwrap();
        let (d, new) = layout.put_blob(b"abc").unwrap();
        assert!(new);
        assert!(!root.exists(), "the layout appears only once complete");

        let mut blob = layout.start_layer(&d, 3).unwrap();
        blob.write_all(b"abc").unwrap();
        assert!(!layout.commit_layer(blob, &d, 3).unwrap());
        layout.set_tag("a", entry(b"1", "a")).unwrap();
        assert_eq!(fs::read(root.join("oci-layout")).unwrap(), oci::LAYOUT_FILE);
        assert_eq!(fs::read(layout.blob_path(&d)).unwrap(), b"abc");
        // Only the blob, no temporary file or staging directory left behind.
        assert_eq!(fs::read_dir(root.join(BLOBS)).unwrap().count(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// An existing layout whose `blobs` or `blobs/sha256` is a link (out
    /// of the layout) is refused before anything is written through it.
    #[test]
    fn blobs_through_a_link_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layout");
        let mut layout = OciLayout::create(&root).unwrap();
        layout.set_tag("a", entry(b"1", "a")).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("sha256")).unwrap();
        for (link, to) in [
            ("blobs/sha256", elsewhere.join("sha256")),
            ("blobs", elsewhere.clone()),
        ] {
            let at = root.join(link);
            fs::rename(&at, dir.path().join("kept")).unwrap();
            std::os::unix::fs::symlink(&to, &at).unwrap();
            let Err(Error::Refused { path, reason }) = OciLayout::create(&root) else {
                panic!("{link}: a layout writing through a link");
            };
            assert_eq!(path, root.canonicalize().unwrap().join(link));
            assert!(reason.contains("symbolic link"), "{reason}");
            fs::remove_file(&at).unwrap();
            fs::rename(dir.path().join("kept"), &at).unwrap();
        }
        assert_eq!(fs::read_dir(elsewhere.join("sha256")).unwrap().count(), 0);
        OciLayout::create(&root).unwrap();
    }

    /// A blob of several writeback steps, written in odd pieces, is
    /// stored whole.
    #[test]
    fn a_large_blob_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(&dir.path().join("layout")).unwrap();
        let bytes: Vec<u8> = (0..2 * WRITEBACK_STEP + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = Digest::of(&bytes);
        let mut blob = layout.start_layer(&digest, 0).unwrap();
        for piece in bytes.chunks(1_000_003) {
            blob.write_all(piece).unwrap();
        }
        OciLayout::seal_layer(&mut blob).unwrap();
        assert!(layout.commit_layer(blob, &digest, 0).unwrap());
        assert!(fs::read(layout.blob_path(&digest)).unwrap() == bytes);
    }

    #[test]
    fn several_manifests_are_named_by_one_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(dir.path()).unwrap();
        let (config, _) = layout.put_blob(b"{}").unwrap();
        let config = Descriptor {
            media_type: oci::CONFIG_MEDIA_TYPE.into(),
            digest: config,
            size: 2,
        };
        for (arch, manifest) in [("amd64", &b"[1]"[..]), ("arm64", b"[2]")] {
            let platform = crate::sink::Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: None,
            };
            let image = ImageEntry {
                platform: &platform,
                config: &config,
                layers: &[],
                manifest,
            };
            assert!(layout.put_manifest(&image).unwrap().1);
        }
        layout.finish("x:multi").unwrap();
        let index: Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["mediaType"], oci::INDEX_MEDIA_TYPE);
        assert_eq!(oci::entry_ref_name(&entries[0]), Some("multi"));
        let digest = Digest::parse(entries[0]["digest"].as_str().unwrap()).unwrap();
        let inner: Value =
            serde_json::from_slice(&fs::read(layout_blob(dir.path(), &digest)).unwrap()).unwrap();
        let platforms: Vec<&str> = inner["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(platforms, ["amd64", "arm64"]);
    }

    /// An artifact referring to the image is listed once, without a ref
    /// name, in a new layout and again after a rebuild of the same tag.
    #[test]
    fn referrers_are_listed_once_without_a_ref_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layout");
        let subject = Descriptor {
            media_type: oci::MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::of(b"[1]"),
            size: 3,
        };
        let annotations = std::collections::BTreeMap::new();
        let referrer = super::super::Referrer {
            artifact_type: "application/spdx+json",
            blob: b"sbom",
            config: b"{}",
            manifest: b"{\"artifact\":1}",
            subject: &subject,
            annotations: &annotations,
        };
        for _ in 0..2 {
            let mut layout = OciLayout::create(&root).unwrap();
            let desc = layout.put_referrer(&referrer).unwrap();
            assert_eq!(desc.digest, Digest::of(referrer.manifest));
            layout.set_tag("a", entry(b"[1]", "a")).unwrap();
            for bytes in [&b"sbom"[..], b"{}", referrer.manifest] {
                assert!(layout.blob_path(&Digest::of(bytes)).is_file());
            }
        }
        let index: Value =
            serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{index}");
        assert_eq!(m[1]["artifactType"], "application/spdx+json");
        assert_eq!(oci::entry_ref_name(&m[1]), None);
    }

    fn layout_blob(root: &Path, digest: &Digest) -> PathBuf {
        root.join(BLOBS).join(digest.hex())
    }

    #[test]
    fn a_dropped_new_layout_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(&dir.path().join("layout")).unwrap();
        layout.put_blob(b"abc").unwrap();
        drop(layout);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn tags_replace_their_entry_and_keep_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(dir.path()).unwrap();
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

    /// `merge`'s entries: one tag under two image names stays two
    /// entries (as containerd and docker write them); the same name and
    /// tag again replaces its entry; an identical entry is kept once.
    #[test]
    fn a_tag_of_another_name_is_refused_and_the_index_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(&dir.path().join("l")).unwrap();
        layout.set_tag("a", entry(b"1", "a")).unwrap();
        let before = fs::read(dir.path().join("l/index.json")).unwrap();
        let d = oci::Descriptor {
            media_type: oci::MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::of(b"2"),
            size: 1,
        };
        let other = oci::index_entry(&d, "y:a", "a", "linux", "amd64");
        let err = OciLayout::create(&dir.path().join("l"))
            .unwrap()
            .set_tag("a", other)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already names `x:a` by the tag `a`"), "{err}");
        assert_eq!(fs::read(dir.path().join("l/index.json")).unwrap(), before);
        // Beside it (as `merge` puts them), `y:a` is rebuilt in place.
        let y = |n: &[u8]| named_entry(n, "y", "a");
        let mut layout = OciLayout::create(&dir.path().join("l")).unwrap();
        layout.add_entries(&[y(b"2")]).unwrap();
        layout.set_tag("a", y(b"3")).unwrap();
        assert_eq!(
            index_digests(&dir.path().join("l")),
            [Digest::of(b"1").prefixed(), Digest::of(b"3").prefixed()]
        );
    }

    #[test]
    fn merged_entries_keep_a_tag_of_two_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(&dir.path().join("l")).unwrap();
        let named = |n: &[u8], name: &str| named_entry(n, name, "1");
        layout
            .add_entries(&[named(b"a", "x"), named(b"b", "y"), named(b"b", "y")])
            .unwrap();
        layout.add_entries(&[named(b"c", "x")]).unwrap();
        assert_eq!(
            index_digests(&dir.path().join("l")),
            [Digest::of(b"c").prefixed(), Digest::of(b"b").prefixed()]
        );
    }

    #[test]
    fn two_new_layouts_of_one_directory_merge() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layout");
        let mut a = OciLayout::create(&root).unwrap();
        let mut b = OciLayout::create(&root).unwrap();
        let (da, _) = a.put_blob(b"a").unwrap();
        let (db, _) = b.put_blob(b"b").unwrap();
        a.set_tag("a", entry(b"1", "a")).unwrap();
        b.set_tag("b", entry(b"2", "b")).unwrap();
        let index: Value =
            serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        assert!(root.join(BLOBS).join(da.hex()).is_file());
        assert!(root.join(BLOBS).join(db.hex()).is_file());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// An existing `index.json` is untrusted: whatever it holds, a tag
        /// is added or a located error returned, never a panic.
        #[test]
        fn any_existing_index_gives_a_tag_or_an_error(
            text in proptest::prelude::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                "[\\[\\]{}:,\" 0-9a-z.]{0,48}".prop_map(String::into_bytes),
                proptest::prelude::Just(br#"{"manifests":[1,null,{"annotations":5}]}"#.to_vec()),
            ]
        ) {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("oci-layout"), oci::LAYOUT_FILE).unwrap();
            fs::write(dir.path().join("index.json"), &text).unwrap();
            let mut layout = OciLayout::create(dir.path()).unwrap();
            match layout.set_tag("a", entry(b"1", "a")) {
                Ok(()) => {}
                Err(e) => proptest::prop_assert!(e.to_string().contains("index.json")),
            }
        }
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("important.txt"), "x").unwrap();
        assert!(matches!(
            OciLayout::create(dir.path()),
            Err(Error::NotALayout { .. })
        ));
        assert!(matches!(
            OciLayout::create(&dir.path().join("important.txt")),
            Err(Error::Refused { .. })
        ));
    }
}
