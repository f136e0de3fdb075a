//! Many docker-archives into one that `docker load` turns into every image
//! they hold, with nixpkgs' `mergeImages` semantics: the members of all
//! inputs, the first copy of a member name winning (layers are named by
//! content, so a layer two images share is stored once); `manifest.json`
//! entries concatenated in input order; `repositories` objects united,
//! later keys winning. Inputs may be plain, gzip, zstd or xz.
//!
//! Inputs are hostile: before anything is written, every member is checked
//! and the merge is refused (naming the input and the member) when one has
//! an absolute name, a `..` component, or a name under a symbolic link an
//! earlier member (of this or an earlier input) put in the output — each
//! would make extracting the merged archive write outside its directory.
//! Refusing rather than dropping: a silently thinner image is worse than a
//! clear error. Members whose name carries a digest (`blobs/sha256/<hex>`,
//! `<hex>.json`) are checked against it as they are copied, and an
//! uncompressed layer against its config's diff_id; a mismatch fails the
//! merge, and its output (written to a temporary file) is never committed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::archive::{self, Format, ImageArchive};
use crate::codec::{BlobWriter, CompressOptions, Compression};
use crate::oci::Digest;
use crate::tar::{Header, Kind, MemberKind, TarWriter};

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input could not be read.
    #[error(transparent)]
    Read(#[from] archive::Error),
    /// An input is not a docker-archive.
    #[error("`{}` is an {}, not a docker-archive: merge takes docker-archives", path.display(), format.name())]
    NotDockerArchive {
        /// The input.
        path: PathBuf,
        /// What it is.
        format: Format,
    },
    /// A member would be extracted outside the archive's directory.
    #[error("`{}` has an unsafe member `{member}`: {what}; refusing to merge", path.display())]
    UnsafeMember {
        /// The input.
        path: PathBuf,
        /// The member's name as stored.
        member: String,
        /// What is wrong.
        what: String,
    },
    /// The output could not be written.
    #[error("failed to write the merged archive")]
    Write(#[source] io::Error),
}

/// Refuses members with absolute names, `..` components, or names under a
/// symbolic link an earlier member put in the output (first copy of a name
/// wins, as in [`merge`]).
fn check_member_names(inputs: &[ImageArchive]) -> Result<(), Error> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut symlinks: BTreeSet<&str> = BTreeSet::new();
    for input in inputs {
        for member in input.members().unwrap_or_default() {
            let unsafe_member = |what: String| Error::UnsafeMember {
                path: input.path().to_owned(),
                member: member.raw_name.clone(),
                what,
            };
            if member.raw_name.starts_with('/') {
                return Err(unsafe_member("an absolute name".to_owned()));
            }
            if member.raw_name.split('/').any(|p| p == "..") {
                return Err(unsafe_member("a `..` component".to_owned()));
            }
            let name = member.name.as_str();
            let mut at = 0;
            while let Some(i) = name[at..].find('/') {
                let dir = &name[..at + i];
                if symlinks.contains(dir) {
                    return Err(unsafe_member(format!(
                        "it is written through the symbolic link `{dir}`"
                    )));
                }
                at += i + 1;
            }
            if seen.insert(name) && matches!(member.kind, MemberKind::Symlink(_)) {
                symlinks.insert(name);
            }
        }
    }
    Ok(())
}

/// What a merge wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeSummary {
    /// The tags of every image, in order.
    pub tags: Vec<String>,
    /// Images (manifest entries) in the output.
    pub images: usize,
    /// Members written.
    pub members: usize,
    /// Members skipped because an earlier input had the same name.
    pub duplicates: usize,
    /// Bytes of the output as written (compressed).
    pub bytes: u64,
}

/// The output compression mergeImages picks: the last input's (xz, which
/// nixlayer does not write, becomes gzip, mergeImages' default).
#[must_use]
pub fn default_codec(inputs: &[ImageArchive]) -> Compression {
    match inputs.last().map(ImageArchive::compression) {
        Some(Compression::None) => Compression::None,
        Some(Compression::Zstd) => Compression::Zstd,
        Some(Compression::Gzip | Compression::Xz) | None => Compression::Gzip,
    }
}

/// Merges `inputs` into one docker-archive written to `out`; every member
/// gets `mtime`, owner 0:0.
///
/// # Errors
/// When an input is not a docker-archive or cannot be read, or `out`
/// cannot be written.
pub fn merge<W: Write>(
    inputs: &[ImageArchive],
    mtime: u64,
    compress: &CompressOptions,
    out: W,
) -> Result<(W, MergeSummary), Error> {
    for input in inputs {
        if input.format() != Format::DockerArchive {
            return Err(Error::NotDockerArchive {
                path: input.path().to_owned(),
                format: input.format(),
            });
        }
    }
    check_member_names(inputs)?;
    let mut tar = TarWriter::new(BlobWriter::stream(out, compress).map_err(Error::Write)?);
    let header =
        |name: &str, kind: Kind, size: u64| Header::archive_member(name, kind, size, mtime);
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut summary = MergeSummary {
        tags: Vec::new(),
        images: 0,
        members: 0,
        duplicates: 0,
        bytes: 0,
    };
    let mut manifests: Vec<Value> = Vec::new();
    let mut repositories: Option<Map<String, Value>> = None;
    let uncompressed = Compression::None.layer_media_type();
    for input in inputs {
        let Some(members) = input.members() else {
            continue;
        };
        // An uncompressed layer's bytes are its diff_id's: check them as
        // they are copied (the member a layer names may be a link).
        let diff_ids: BTreeMap<String, Digest> = input
            .images()
            .iter()
            .flat_map(|image| &image.layers)
            .filter(|layer| layer.media_type == uncompressed)
            .filter_map(|layer| Some((input.resolve(&layer.location)?, layer.diff_id?)))
            .collect();
        for member in members {
            match member.name.as_str() {
                "manifest.json" | "repositories" | "" => continue,
                _ => {}
            }
            if !written.insert(member.name.clone()) {
                summary.duplicates += 1;
                continue;
            }
            match &member.kind {
                MemberKind::Directory => {
                    let name = format!("{}/", member.name);
                    tar.append(&header(&name, Kind::Directory, 0), &[])
                        .map_err(Error::Write)?;
                }
                MemberKind::Symlink(target) => {
                    let kind = Kind::Symlink(target.clone().into_bytes());
                    tar.append(&header(&member.name, kind, 0), &[])
                        .map_err(Error::Write)?;
                }
                // Hard links become regular files with the linked bytes:
                // the target may be a member an earlier input won.
                MemberKind::Regular | MemberKind::Hardlink(_) => {
                    let (mut reader, size) =
                        input.open_member(&member.name, diff_ids.get(&member.name).copied())?;
                    tar.start_entry(&header(&member.name, Kind::Regular, size))
                        .map_err(Error::Write)?;
                    let copied = io::copy(&mut reader, &mut tar).map_err(|source| {
                        Error::Read(if let Some(m) = archive::DigestMismatch::in_io(&source) {
                            archive::Error::Malformed {
                                path: input.path().to_owned(),
                                member: member.name.clone(),
                                what: format!(
                                    "does not match its digest {} (found {})",
                                    m.expected, m.found
                                ),
                            }
                        } else {
                            archive::Error::Io {
                                path: input.path().to_owned(),
                                source,
                            }
                        })
                    })?;
                    if copied != size {
                        return Err(Error::Read(archive::Error::Malformed {
                            path: input.path().to_owned(),
                            member: member.name.clone(),
                            what: "is shorter than its header says".to_owned(),
                        }));
                    }
                    tar.end_entry().map_err(Error::Write)?;
                }
                // Devices and fifos have no place in an image archive.
                _ => {
                    written.remove(&member.name);
                    continue;
                }
            }
            summary.members += 1;
        }
        // The entries as they are; their tags as the reader parsed them.
        let (_, manifest) = input.read_json("manifest.json")?;
        manifests.extend(manifest.as_array().into_iter().flatten().cloned());
        summary
            .tags
            .extend(input.images().iter().flat_map(|i| i.tags.iter().cloned()));
        if input
            .members()
            .is_some_and(|m| m.iter().any(|m| m.name == "repositories"))
        {
            if let Value::Object(obj) = input.read_json("repositories")?.1 {
                repositories.get_or_insert_with(Map::new).extend(obj);
            }
        }
    }
    summary.images = manifests.len();
    let manifest = crate::oci::canonical_json(&Value::Array(manifests));
    tar.append(
        &header("manifest.json", Kind::Regular, manifest.len() as u64),
        &manifest,
    )
    .map_err(Error::Write)?;
    if let Some(repos) = repositories {
        let bytes = crate::oci::canonical_json(&Value::Object(repos));
        tar.append(
            &header("repositories", Kind::Regular, bytes.len() as u64),
            &bytes,
        )
        .map_err(Error::Write)?;
    }
    let (out, bytes) = tar
        .finish()
        .and_then(BlobWriter::finish_stream)
        .map_err(Error::Write)?;
    summary.bytes = bytes;
    Ok((out, summary))
}
