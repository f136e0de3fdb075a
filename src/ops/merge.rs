//! Many docker-archives into one that `docker load` turns into every image
//! they hold, with nixpkgs' `mergeImages` semantics: the members of all
//! inputs, the first copy of a member name winning (layers are named by
//! content, so a layer two images share is stored once); `manifest.json`
//! entries concatenated in input order (but one tag naming two different
//! images is refused); `repositories` objects united, later keys winning. Inputs may be plain, gzip, zstd or xz.
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
//! A later input's copy of a member or blob an earlier input supplied is
//! not written, but it is read and checked all the same (digest, size,
//! diff_id), so a corrupt copy fails the merge naming its input.
//!
//! [`merge_images`] takes any mix of docker-archives, OCI archives and OCI
//! layouts and writes any of the three, image by image rather than member
//! by member: OCI blobs and descriptors are copied verbatim (so digests
//! stay), tags move between docker `RepoTags` and `index.json` ref names,
//! and a docker-archive output gets each layer once as a plain tar named
//! by its diff_id. `merge` (docker-archives into a docker-archive) keeps
//! nixpkgs' member-level semantics and bytes.

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
    /// One reference names two different images: `docker load` would keep
    /// the later and silently untag the earlier.
    #[error(transparent)]
    TagConflict(Box<ImagesError>),
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

/// Reads the regular member `name` of `input` to its end into the writer
/// `start` gives for its size, checking it as it is read: against the
/// digest its name carries, else `diff_id` (an uncompressed layer's), and
/// against its size.
fn copy_member<D: Write>(
    input: &ImageArchive,
    name: &str,
    diff_id: Option<Digest>,
    start: impl FnOnce(u64) -> io::Result<D>,
) -> Result<(), Error> {
    let malformed = |what: String| {
        Error::Read(archive::Error::Malformed {
            path: input.path().to_owned(),
            member: name.to_owned(),
            what,
        })
    };
    let (mut reader, size) = input.open_member(name, diff_id)?;
    let mut dest = start(size).map_err(Error::Write)?;
    let copied =
        io::copy(&mut reader, &mut dest).map_err(|source| match archive::DigestMismatch::in_io(
            &source,
        ) {
            Some(m) => malformed(format!(
                "does not match its digest {} (found {})",
                m.expected, m.found
            )),
            None => Error::Read(archive::Error::Io {
                path: input.path().to_owned(),
                source,
            }),
        })?;
    if copied != size {
        return Err(malformed("is shorter than its header says".to_owned()));
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
/// When an input is not a docker-archive or cannot be read, two inputs
/// name different images by one tag, or `out` cannot be written.
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
    // nixpkgs concatenates the entries whatever their tags; refused here
    // as `merge_images` refuses it, since `docker load` of such an archive
    // keeps one image per tag and drops the other's name without a word.
    // The same image twice (one config) is no conflict.
    let mut names: BTreeMap<String, (Digest, PathBuf)> = BTreeMap::new();
    for input in inputs {
        for image in input.images() {
            for tag in &image.tags {
                claim(&mut names, tag, image.config_digest, input.path())
                    .map_err(|e| Error::TagConflict(Box::new(e)))?;
            }
        }
    }
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
                // The first copy wins, but this one is read and checked
                // all the same: a corrupt copy is a corrupt input.
                if matches!(member.kind, MemberKind::Regular | MemberKind::Hardlink(_)) {
                    let diff_id = diff_ids.get(&member.name).copied();
                    copy_member(input, &member.name, diff_id, |_| Ok(io::sink()))?;
                }
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
                    let diff_id = diff_ids.get(&member.name).copied();
                    copy_member(input, &member.name, diff_id, |size| {
                        tar.start_entry(&header(&member.name, Kind::Regular, size))?;
                        Ok(&mut tar)
                    })?;
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

/// What `merge` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeFormat {
    /// One docker-archive (`docker load`), compressed as a whole or not.
    DockerArchive,
    /// An OCI layout in one tar.
    OciArchive,
    /// An OCI layout directory.
    OciLayout,
}

/// Why a merge of images (any input format) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImagesError {
    /// An input could not be read, or its bytes do not match their digest.
    #[error(transparent)]
    Read(#[from] archive::Error),
    /// The output could not be written.
    #[error(transparent)]
    Sink(#[from] crate::sink::Error),
    /// A multi-platform index cannot go into a docker-archive as it is.
    #[error("`{}` holds the multi-platform image index {name} ({}), but a docker-archive holds one image per tag: choose one with `--platform ARCH[/VARIANT]`, or merge into `--format oci-layout` or `oci-archive`", path.display(), platforms.join(", "))]
    NeedsPlatform {
        /// The input.
        path: PathBuf,
        /// How the index is named (`tag` or `untagged sha256:…`).
        name: String,
        /// The platforms it offers.
        platforms: Vec<String>,
    },
    /// The index has no image for `--platform`.
    #[error("`{}`: the image index {name} has no `{wanted}` image; it offers {}", path.display(), platforms.join(", "))]
    NoSuchPlatform {
        /// The input.
        path: PathBuf,
        /// How the index is named.
        name: String,
        /// `--platform`.
        wanted: String,
        /// The platforms it offers.
        platforms: Vec<String>,
    },
    /// An OCI image named by a bare tag has no image name for `RepoTags`.
    #[error("`{}` names an image `{tag}` (its `org.opencontainers.image.ref.name`, with no `io.containerd.image.name`): a docker-archive needs `NAME:TAG`; merge into `--format oci-layout` or `oci-archive` instead, or name it with `skopeo copy oci:DIR:{tag} oci:DIR:NAME:TAG` first", path.display())]
    NoImageName {
        /// The input.
        path: PathBuf,
        /// The ref name.
        tag: String,
    },
    /// One reference would name two different images.
    #[error("`{reference}` names two different images, {first} in `{}` and {second} in `{}`", first_path.display(), second_path.display())]
    TagConflict {
        /// The reference (tag, or `name:tag`).
        reference: String,
        /// The first image's digest (`sha256:…`).
        first: String,
        /// Where it is.
        first_path: PathBuf,
        /// The second image's digest.
        second: String,
        /// Where that is.
        second_path: PathBuf,
    },
    /// One reference names one image (one config) under two manifests:
    /// its layers stored in two compressions.
    #[error("`{reference}` names one image (config {config}) stored two ways, manifest {manifests} (its layers in another compression, or other manifest annotations), and an OCI output names one manifest per tag: merge into a docker-archive, which keeps one copy, or leave one of them out")]
    SameImageTwoManifests {
        /// The reference (tag, or `name:tag`).
        reference: String,
        /// The image's config digest (`sha256:…`).
        config: String,
        /// The two manifests and where each is: "sha256:… in `A` and
        /// sha256:… in `B`".
        manifests: String,
    },
    /// A layer's bytes are not what its image's config records.
    #[error("`{}` is malformed: layer `{location}` {what}", path.display())]
    Layer {
        /// The input.
        path: PathBuf,
        /// The layer's member or blob.
        location: String,
        /// What is wrong.
        what: String,
    },
    /// A temporary file could not be used, or the output written.
    #[error("failed to write the merged image")]
    Write(#[source] io::Error),
}

/// The options of [`merge_images`].
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Of every multi-platform index, keep only this platform's image.
    pub platform: Option<crate::manifest::PlatformName>,
    /// mtime of every archive member.
    pub mtime: u64,
    /// Compression of a docker-archive output as a whole (OCI outputs copy
    /// every blob as stored).
    pub compress: CompressOptions,
}

/// Where [`merge_images`] writes.
#[non_exhaustive]
pub enum MergeSink<W: Write + Send> {
    /// A docker-archive to `W`.
    DockerArchive(W),
    /// An OCI archive to `W`.
    OciArchive(W),
    /// An OCI layout (new or existing); boxed, as it is much larger than
    /// a writer.
    OciLayout(Box<crate::sink::oci_layout::OciLayout>),
}

/// What is known of an input's layer once copied.
struct Copied {
    digest: Digest,
    size: u64,
    new: bool,
}

/// `ARCH[/VARIANT]` of an image: its descriptor's platform when an index
/// gave one, else its config's.
fn platform_of(image: &archive::Image) -> crate::manifest::PlatformName {
    let from = |v: &Value| {
        let arch = v.get("architecture")?.as_str()?.to_owned();
        Some(crate::manifest::PlatformName {
            architecture: arch,
            variant: v.get("variant").and_then(Value::as_str).map(str::to_owned),
        })
    };
    image
        .descriptor
        .as_ref()
        .and_then(|d| d.get("platform"))
        .and_then(from)
        .or_else(|| image.config_value().ok().as_ref().and_then(from))
        .unwrap_or(crate::manifest::PlatformName {
            architecture: "unknown".to_owned(),
            variant: None,
        })
}

/// The `platform` object of an index entry for an image, from its config.
fn platform_json(image: &archive::Image) -> Value {
    let config = image.config_value().unwrap_or(Value::Null);
    let field = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_owned);
    crate::sink::Platform {
        os: field("os").unwrap_or_else(|| "linux".to_owned()),
        architecture: field("architecture").unwrap_or_else(|| "unknown".to_owned()),
        variant: field("variant"),
    }
    .to_json()
}

/// How an `index.json` entry is shown in errors.
fn entry_label(descriptor: &Value) -> String {
    match crate::oci::entry_ref_name(descriptor) {
        Some(tag) => format!("`{tag}`"),
        None => format!(
            "untagged {}",
            descriptor
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or("?")
        ),
    }
}

/// What names an entry for conflicts: its containerd name, else its ref name.
fn entry_reference(descriptor: &Value) -> Option<String> {
    descriptor
        .get("annotations")
        .and_then(|a| a.get(crate::oci::CONTAINERD_NAME))
        .and_then(Value::as_str)
        .or_else(|| crate::oci::entry_ref_name(descriptor))
        .map(str::to_owned)
}

/// The tag of a docker reference `name:tag` (after the last `/`).
fn tag_part(reference: &str) -> &str {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.rsplit_once(':').map_or("latest", |(_, t)| t)
}

/// One image of the output, with the references naming it.
struct Selected<'a> {
    input: &'a ImageArchive,
    image: &'a archive::Image,
    /// docker `RepoTags` (docker output).
    tags: Vec<String>,
    /// The same image (one config) in later inputs: not written again, but
    /// its layers are read and checked.
    copies: Vec<(&'a ImageArchive, &'a archive::Image)>,
}

/// Records `reference` as naming `digest` from `path`; two different
/// digests for one reference are an error.
fn claim(
    names: &mut BTreeMap<String, (Digest, PathBuf)>,
    reference: &str,
    digest: Digest,
    path: &std::path::Path,
) -> Result<(), ImagesError> {
    match names.get(reference) {
        Some((first, first_path)) if *first != digest => Err(ImagesError::TagConflict {
            reference: reference.to_owned(),
            first: first.prefixed(),
            first_path: first_path.clone(),
            second: digest.prefixed(),
            second_path: path.to_owned(),
        }),
        Some(_) => Ok(()),
        None => {
            names.insert(reference.to_owned(), (digest, path.to_owned()));
            Ok(())
        }
    }
}

/// The images under the `index`th entry of an OCI input.
fn entry_images(input: &ImageArchive, index: usize) -> Vec<&archive::Image> {
    input.images().iter().filter(|i| i.entry == index).collect()
}

/// The one image of a multi-platform entry that `platform` names.
fn pick<'a>(
    input: &'a ImageArchive,
    entry: &archive::OciEntry,
    images: &[&'a archive::Image],
    platform: Option<&crate::manifest::PlatformName>,
) -> Result<&'a archive::Image, ImagesError> {
    let offered: Vec<String> = images.iter().map(|i| platform_of(i).to_string()).collect();
    let Some(wanted) = platform else {
        return Err(ImagesError::NeedsPlatform {
            path: input.path().to_owned(),
            name: entry_label(&entry.descriptor),
            platforms: offered,
        });
    };
    // Without a variant, any variant of the architecture (as a pull does);
    // with one, the variant as docker compares it (`arm64/v8` is `arm64`).
    let fits = |i: &&&archive::Image| {
        let p = platform_of(i);
        p.architecture == wanted.architecture
            && (wanted.variant.is_none() || p.is_same_platform(wanted))
    };
    images
        .iter()
        .find(fits)
        .copied()
        .ok_or_else(|| ImagesError::NoSuchPlatform {
            path: input.path().to_owned(),
            name: entry_label(&entry.descriptor),
            wanted: wanted.to_string(),
            platforms: offered,
        })
}

/// Merges images of any format (docker-archives, OCI archives and layouts)
/// into `sink`: every blob stored once (the first copy wins), every tag
/// kept — a docker `RepoTags` entry becomes an `index.json` entry with the
/// tag as `org.opencontainers.image.ref.name` and the whole reference as
/// `io.containerd.image.name` (as `build`, containerd and docker write
/// them), and back; untagged images stay untagged. OCI entries are copied
/// with their descriptors and every blob under them, byte for byte, so
/// digests (of indexes too) do not change. A docker-archive output needs
/// one image per tag: a multi-platform index is refused there unless
/// `options.platform` picks one of its images.
///
/// Everything read is checked as [`ImageArchive`] checks it: JSON blobs
/// when opened, layers against their digest as they are copied, and a
/// layer whose uncompressed bytes are written against its diff_id. A
/// layer the output already has (from an earlier input) is read and
/// checked the same way, then not written again. The
/// output order follows the inputs' order, so the same inputs give the
/// same bytes.
///
/// # Errors
/// When an input cannot be read or does not match its digests, two inputs
/// name different images by one reference, an index needs `--platform`,
/// or the output cannot be written.
pub fn merge_images<W: Write + Send>(
    inputs: &[ImageArchive],
    options: &MergeOptions,
    sink: MergeSink<W>,
) -> Result<(Option<W>, MergeSummary), ImagesError> {
    match sink {
        MergeSink::DockerArchive(out) => {
            let selected = select_for_docker(inputs, options)?;
            let (out, summary) = write_docker(&selected, options, out)?;
            Ok((Some(out), summary))
        }
        MergeSink::OciArchive(out) => {
            write_oci::<crate::sink::oci_archive::OciArchiveWriter<W>>(inputs, options, None)?;
            let mut sink = crate::sink::oci_archive::OciArchiveWriter::new(
                out,
                options.mtime,
                CompressOptions::NONE,
            )
            .map_err(ImagesError::Write)?;
            let (entries, mut summary) = write_oci(inputs, options, Some(&mut sink))?;
            let (out, bytes) = sink.finish_entries(entries)?;
            summary.bytes = bytes;
            Ok((Some(out), summary))
        }
        MergeSink::OciLayout(mut layout) => {
            write_oci::<crate::sink::oci_layout::OciLayout>(inputs, options, None)?;
            let (entries, summary) = write_oci(inputs, options, Some(&mut *layout))?;
            layout.add_entries(&entries)?;
            Ok((None, summary))
        }
    }
}

/// The images a docker-archive output holds, one per config, with every
/// reference naming them.
fn select_for_docker<'a>(
    inputs: &'a [ImageArchive],
    options: &MergeOptions,
) -> Result<Vec<Selected<'a>>, ImagesError> {
    let mut selected: Vec<Selected<'a>> = Vec::new();
    let mut names: BTreeMap<String, (Digest, PathBuf)> = BTreeMap::new();
    let mut add = |input: &'a ImageArchive,
                   image: &'a archive::Image,
                   tags: Vec<String>|
     -> Result<(), ImagesError> {
        for tag in &tags {
            claim(&mut names, tag, image.config_digest, input.path())?;
        }
        match selected
            .iter_mut()
            .find(|s| s.image.config_digest == image.config_digest)
        {
            Some(s) => {
                for tag in tags {
                    if !s.tags.contains(&tag) {
                        s.tags.push(tag);
                    }
                }
                s.copies.push((input, image));
            }
            None => selected.push(Selected {
                input,
                image,
                tags,
                copies: Vec::new(),
            }),
        }
        Ok(())
    };
    for input in inputs {
        if input.format() == Format::DockerArchive {
            for image in input.images() {
                add(input, image, image.tags.clone())?;
            }
            continue;
        }
        for (i, entry) in input.entries().iter().enumerate() {
            let images = entry_images(input, i);
            if images.is_empty() && entry.indexes.is_empty() {
                // An OCI 1.1 artifact (an SBOM) about an image: a
                // docker-archive has no place for it.
                continue;
            }
            let image = if entry.indexes.is_empty() && images.len() == 1 {
                images[0]
            } else {
                pick(input, entry, &images, options.platform.as_ref())?
            };
            let annotations = entry.descriptor.get("annotations");
            let full = annotations
                .and_then(|a| a.get(crate::oci::CONTAINERD_NAME))
                .and_then(Value::as_str);
            let tags = match (full, crate::oci::entry_ref_name(&entry.descriptor)) {
                (Some(full), _) => vec![full.to_owned()],
                // A ref name may be a whole reference (`name:tag`).
                (None, Some(r)) if r.rsplit('/').next().is_some_and(|l| l.contains(':')) => {
                    vec![r.to_owned()]
                }
                (None, Some(r)) => {
                    return Err(ImagesError::NoImageName {
                        path: input.path().to_owned(),
                        tag: r.to_owned(),
                    })
                }
                (None, None) => Vec::new(),
            };
            add(input, image, tags)?;
        }
    }
    Ok(selected)
}

/// Reads `reader` to its end into `dest`, hashing and counting; maps a
/// digest mismatch the reader reports to an error naming `location`.
fn copy_hashed<D: Write>(
    input: &ImageArchive,
    location: &str,
    mut reader: impl io::Read,
    dest: D,
) -> Result<(D, Digest, u64), ImagesError> {
    let mut hashed = crate::oci::HashCountWriter::new(dest);
    io::copy(&mut reader, &mut hashed).map_err(|source| read_error(input, location, source))?;
    hashed.finish().map_err(ImagesError::Write)
}

/// An error reading `location` of `input`: a digest mismatch named as
/// such, else the I/O error.
fn read_error(input: &ImageArchive, location: &str, source: io::Error) -> ImagesError {
    ImagesError::Read(match archive::DigestMismatch::in_io(&source) {
        Some(m) => archive::Error::Malformed {
            path: input.path().to_owned(),
            member: location.to_owned(),
            what: format!(
                "does not match its digest {} (found {})",
                m.expected, m.found
            ),
        },
        // The blob named under its input (a path in a layout, a member
        // of an archive).
        None => archive::Error::Io {
            path: input.path().join(location),
            source,
        },
    })
}

fn check_diff_id(
    input: &ImageArchive,
    layer: &archive::Layer,
    found: Digest,
) -> Result<(), ImagesError> {
    match layer.diff_id {
        Some(diff_id) if diff_id != found => Err(ImagesError::Layer {
            path: input.path().to_owned(),
            location: layer.location.clone(),
            what: format!("uncompressed has sha256 {found}, but its config's diff_id is {diff_id}"),
        }),
        _ => Ok(()),
    }
}

/// Writes the selected images as a docker-archive: each layer once, an
/// uncompressed member named by its diff_id (decompressed twice when
/// stored compressed, to measure and to write, and checked against the
/// diff_id every time),
/// each config once, `manifest.json` with every image's tags.
fn write_docker<W: Write + Send>(
    selected: &[Selected<'_>],
    options: &MergeOptions,
    out: W,
) -> Result<(W, MergeSummary), ImagesError> {
    use crate::sink::ImageSink as _;
    // A layer without a diff_id has no name here: refused before any
    // layer is copied, not after the images before it.
    for s in selected {
        if let Some(layer) = s.image.layers.iter().find(|l| l.diff_id.is_none()) {
            return Err(ImagesError::Layer {
                path: s.input.path().to_owned(),
                location: layer.location.clone(),
                what: "has no diff_id in its image's config".to_owned(),
            });
        }
    }
    let mut sink = crate::sink::docker_archive::DockerArchiveWriter::new(
        out,
        options.mtime,
        &options.compress,
    )
    .map_err(ImagesError::Write)?;
    let mut summary = MergeSummary {
        tags: Vec::new(),
        images: selected.len(),
        members: 0,
        duplicates: 0,
        bytes: 0,
    };
    let mut layers: BTreeSet<Digest> = BTreeSet::new();
    for s in selected {
        let input = s.input;
        for layer in &s.image.layers {
            let Some(diff_id) = layer.diff_id else {
                return Err(ImagesError::Layer {
                    path: input.path().to_owned(),
                    location: layer.location.clone(),
                    what: "has no diff_id in its image's config".to_owned(),
                });
            };
            let plain = layer.media_type == crate::oci::LAYER_MEDIA_TYPE
                || layer.media_type == "application/vnd.docker.image.rootfs.diff.tar";
            if !layers.insert(diff_id) {
                verify_docker_copy(input, layer, plain)?;
                sink.reuse_layer(&diff_id);
                summary.duplicates += 1;
                continue;
            }
            if plain {
                let member = sink.start_layer(&diff_id, layer.size)?;
                let reader = input.open_blob(layer)?;
                let (member, found, _) = copy_hashed(input, &layer.location, reader, member)?;
                check_diff_id(input, layer, found)?;
                sink.commit_layer(member, &found, layer.size)?;
            } else {
                // Measured by decompressing once (checking the diff_id),
                // then written by decompressing again: CPU rather than a
                // spool, so a decompression bomb cannot fill the disk.
                let reader = input.open_layer(layer)?;
                let (_, found, size) = copy_hashed(input, &layer.location, reader, io::sink())?;
                check_diff_id(input, layer, found)?;
                let member = sink.start_layer(&diff_id, size)?;
                let reader = input.open_layer(layer)?;
                let (member, again, _) = copy_hashed(input, &layer.location, reader, member)?;
                check_diff_id(input, layer, again)?;
                sink.commit_layer(member, &found, size)?;
            }
            summary.members += 1;
        }
        for (input, image) in &s.copies {
            for layer in &image.layers {
                let plain = layer.media_type == crate::oci::LAYER_MEDIA_TYPE
                    || layer.media_type == "application/vnd.docker.image.rootfs.diff.tar";
                verify_docker_copy(input, layer, plain)?;
            }
        }
        sink.put_blob(&s.image.config)?;
        summary.members += 1;
        sink.add_image(&s.image.config_digest);
        summary.tags.extend(s.tags.iter().cloned());
    }
    let tags: Vec<Vec<String>> = selected.iter().map(|s| s.tags.clone()).collect();
    let (out, bytes) = sink.finish_tagged(&tags)?;
    summary.bytes = bytes;
    Ok((out, summary))
}

/// Reads a layer whose bytes the output already has (an earlier input gave
/// them, or the layout held them) to its end, and checks it as a copy is
/// checked: against its digest where recorded, its size, and, `plain`,
/// its sha256 against its diff_id. The first copy wins, but no copy goes
/// unread: a corrupt one in a later input fails the merge, naming it.
fn verify_copy(
    input: &ImageArchive,
    layer: &archive::Layer,
    plain: bool,
) -> Result<(), ImagesError> {
    let reader = input.open_blob(layer)?;
    let (_, digest, size) = copy_hashed(input, &layer.location, reader, io::sink())?;
    if size != layer.size {
        return Err(ImagesError::Layer {
            path: input.path().to_owned(),
            location: layer.location.clone(),
            what: format!("is {size} bytes, but its descriptor says {}", layer.size),
        });
    }
    if plain {
        check_diff_id(input, layer, digest)?;
    }
    Ok(())
}

/// [`verify_copy`] for a docker-archive output, where a layer is named by
/// its diff_id: a compressed layer is decompressed and checked against it
/// too, as [`write_docker`] checks the copy it writes.
fn verify_docker_copy(
    input: &ImageArchive,
    layer: &archive::Layer,
    plain: bool,
) -> Result<(), ImagesError> {
    verify_copy(input, layer, plain)?;
    if !plain {
        let reader = input.open_layer(layer)?;
        let (_, found, _) = copy_hashed(input, &layer.location, reader, io::sink())?;
        check_diff_id(input, layer, found)?;
    }
    Ok(())
}

/// Stores a layer of `input` in `sink` unless it is there: streamed
/// through its digest check (and, uncompressed, its diff_id check); when
/// it is there, read and checked all the same ([`verify_copy`]).
fn put_layer<S: crate::sink::ImageSink>(
    input: &ImageArchive,
    layer: &archive::Layer,
    sink: &mut S,
) -> Result<Copied, ImagesError> {
    let plain = layer.media_type == crate::oci::LAYER_MEDIA_TYPE;
    let known = layer.digest.or(if plain { layer.diff_id } else { None });
    if let Some(digest) = known {
        if sink.has_blob(&digest) {
            verify_copy(input, layer, plain)?;
            return Ok(Copied {
                digest,
                size: layer.size,
                new: false,
            });
        }
    }
    let key = known.unwrap_or_else(|| Digest::of(layer.location.as_bytes()));
    let dest = sink.start_layer(&key, layer.size)?;
    let reader = input.open_blob(layer)?;
    let (dest, digest, size) = copy_hashed(input, &layer.location, reader, dest)?;
    if plain {
        check_diff_id(input, layer, digest)?;
    }
    let new = sink.commit_layer(dest, &digest, size)?;
    Ok(Copied { digest, size, new })
}

/// What [`put_layer`] would record for `layer` without reading it: its
/// stored digest where the input records it (an uncompressed layer's is
/// its diff_id, which the copy is checked against), and its stored size.
fn predicted(layer: &archive::Layer) -> Option<Copied> {
    let plain = layer.media_type == crate::oci::LAYER_MEDIA_TYPE;
    let digest = layer.digest.or(if plain { layer.diff_id } else { None })?;
    Some(Copied {
        digest,
        size: layer.size,
        new: true,
    })
}

/// Copies every image into an OCI `sink` and returns the `index.json`
/// entries naming them, in input order, each once.
///
/// Without a sink, a dry run: every refusal that depends only on indexes,
/// manifests and configs (a reference naming two images, one image stored
/// two ways, an index needing `--platform`, a malformed artifact) is found
/// without reading a layer, so a merge of large inputs fails at once rather
/// than after copying them. A docker-archive image with a layer whose
/// stored digest is only known once read (a compressed legacy member) is
/// left to the real run, which checks it the same way.
fn write_oci<S: crate::sink::ImageSink>(
    inputs: &[ImageArchive],
    options: &MergeOptions,
    mut sink: Option<&mut S>,
) -> Result<(Vec<Value>, MergeSummary), ImagesError> {
    let mut summary = MergeSummary {
        tags: Vec::new(),
        images: 0,
        members: 0,
        duplicates: 0,
        bytes: 0,
    };
    let mut entries: Vec<Value> = Vec::new();
    let mut names: BTreeMap<String, (Digest, PathBuf)> = BTreeMap::new();
    let mut configs: BTreeMap<String, Digest> = BTreeMap::new();
    let count = |summary: &mut MergeSummary, new: bool, size: u64| {
        if new {
            summary.members += 1;
            summary.bytes += size;
        } else {
            summary.duplicates += 1;
        }
    };
    let put_json = |sink: &mut Option<&mut S>, summary: &mut MergeSummary, bytes: &[u8]| {
        let (digest, new) = match sink {
            Some(sink) => sink.put_blob(bytes)?,
            None => (Digest::of(bytes), true),
        };
        count(summary, new, bytes.len() as u64);
        Ok::<Digest, ImagesError>(digest)
    };
    for input in inputs {
        if input.format() == Format::DockerArchive {
            for image in input.images() {
                let mut descs = Vec::with_capacity(image.layers.len());
                for layer in &image.layers {
                    let copied = match sink.as_deref_mut() {
                        Some(sink) => put_layer(input, layer, sink)?,
                        None => match predicted(layer) {
                            Some(copied) => copied,
                            None => break,
                        },
                    };
                    count(&mut summary, copied.new, copied.size);
                    descs.push(crate::oci::Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: copied.digest,
                        size: copied.size,
                    });
                }
                if descs.len() < image.layers.len() {
                    // A dry run that cannot know this image's manifest.
                    continue;
                }
                let config = crate::oci::Descriptor {
                    media_type: crate::oci::CONFIG_MEDIA_TYPE.to_owned(),
                    digest: put_json(&mut sink, &mut summary, &image.config)?,
                    size: image.config.len() as u64,
                };
                let manifest = crate::oci::manifest_json(&config, &descs);
                let desc = crate::oci::Descriptor {
                    media_type: crate::oci::MANIFEST_MEDIA_TYPE.to_owned(),
                    digest: put_json(&mut sink, &mut summary, &manifest)?,
                    size: manifest.len() as u64,
                };
                let platform = platform_json(image);
                let named: Vec<Value> = if image.tags.is_empty() {
                    let mut extra = Map::new();
                    extra.insert("platform".into(), platform);
                    vec![desc.to_json(extra)]
                } else {
                    image
                        .tags
                        .iter()
                        .map(|reference| {
                            let mut extra = Map::new();
                            extra.insert("platform".into(), platform.clone());
                            extra.insert(
                                "annotations".into(),
                                serde_json::json!({
                                    crate::oci::REF_NAME: tag_part(reference),
                                    crate::oci::CONTAINERD_NAME: reference,
                                }),
                            );
                            desc.to_json(extra)
                        })
                        .collect()
                };
                for entry in named {
                    add_entry(
                        &mut entries,
                        (&mut names, &mut configs),
                        &mut summary,
                        (entry, Some(image.config_digest)),
                        input,
                    )?;
                }
            }
            continue;
        }
        for (i, entry) in input.entries().iter().enumerate() {
            let images = entry_images(input, i);
            if images.is_empty() && entry.indexes.is_empty() {
                // An OCI 1.1 artifact (an SBOM) about an image: its
                // manifest, config and layers copied as stored, its entry
                // kept (it names no image).
                let (digest, size) = artifact_descriptor(input, &entry.descriptor, "index.json")?;
                let bytes = input.read_blob(&digest, size)?;
                let location = format!("blobs/sha256/{}", digest.hex());
                let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let config = doc.get("config").ok_or_else(|| {
                    ImagesError::Read(archive::Error::Malformed {
                        path: input.path().to_owned(),
                        member: location.clone(),
                        what: "has no `config`".to_owned(),
                    })
                })?;
                let (config_digest, config_size) = artifact_descriptor(input, config, &location)?;
                put_json(
                    &mut sink,
                    &mut summary,
                    &input.read_blob(&config_digest, config_size)?,
                )?;
                let layers = doc.get("layers").and_then(Value::as_array);
                for layer in layers.into_iter().flatten() {
                    let (layer_digest, layer_size) = artifact_descriptor(input, layer, &location)?;
                    let layer = archive::Layer {
                        location: format!("blobs/sha256/{}", layer_digest.hex()),
                        digest: Some(layer_digest),
                        diff_id: None,
                        size: layer_size,
                        media_type: layer
                            .get("mediaType")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    };
                    if let Some(sink) = sink.as_deref_mut() {
                        let copied = put_layer(input, &layer, sink)?;
                        count(&mut summary, copied.new, copied.size);
                    }
                }
                put_json(&mut sink, &mut summary, &bytes)?;
                if !entries.contains(&entry.descriptor) {
                    entries.push(entry.descriptor.clone());
                }
                continue;
            }
            let chosen: Vec<&archive::Image> = match (&options.platform, entry.indexes.is_empty()) {
                (Some(_), false) => vec![pick(input, entry, &images, options.platform.as_ref())?],
                _ => images,
            };
            for image in &chosen {
                if let Some(sink) = sink.as_deref_mut() {
                    for layer in &image.layers {
                        let copied = put_layer(input, layer, sink)?;
                        count(&mut summary, copied.new, copied.size);
                    }
                }
                put_json(&mut sink, &mut summary, &image.config)?;
                if let (Some(digest), Some(size)) = (
                    image.manifest_digest,
                    image
                        .descriptor
                        .as_ref()
                        .and_then(|d| d.get("size"))
                        .and_then(Value::as_u64),
                ) {
                    let bytes = input.read_blob(&digest, size)?;
                    put_json(&mut sink, &mut summary, &bytes)?;
                }
            }
            let descriptor = if options.platform.is_some() && !entry.indexes.is_empty() {
                // The chosen image's own descriptor, named as the index was.
                let mut d = chosen[0].descriptor.clone().unwrap_or(Value::Null);
                if let (Some(obj), Some(a)) =
                    (d.as_object_mut(), entry.descriptor.get("annotations"))
                {
                    obj.insert("annotations".into(), a.clone());
                }
                d
            } else {
                // Nested indexes after what they name, deepest first.
                for (digest, size) in entry.indexes.iter().rev() {
                    let bytes = input.read_blob(digest, *size)?;
                    put_json(&mut sink, &mut summary, &bytes)?;
                }
                entry.descriptor.clone()
            };
            // An entry of one image is known by its config too.
            let config = (chosen.len() == 1
                && (entry.indexes.is_empty() || options.platform.is_some()))
            .then(|| chosen[0].config_digest);
            add_entry(
                &mut entries,
                (&mut names, &mut configs),
                &mut summary,
                (descriptor, config),
                input,
            )?;
        }
    }
    Ok((entries, summary))
}

/// The digest and size of a descriptor of an artifact in `input`, found
/// in `location`.
fn artifact_descriptor(
    input: &ImageArchive,
    descriptor: &Value,
    location: &str,
) -> Result<(Digest, u64), ImagesError> {
    let digest = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .and_then(Digest::parse);
    let size = descriptor.get("size").and_then(Value::as_u64);
    digest.zip(size).ok_or_else(|| {
        ImagesError::Read(archive::Error::Malformed {
            path: input.path().to_owned(),
            member: location.to_owned(),
            what: "has a descriptor without a sha256 `digest` and a `size`".to_owned(),
        })
    })
}

/// The image each reference names, and the input it came from.
type Names = BTreeMap<String, (Digest, PathBuf)>;

/// Adds an `index.json` entry unless an identical one is there; a
/// reference naming another digest already is an error, which says so
/// when both are one image (`config`, the config digest of an entry of one
/// image, is recorded per reference in `configs`).
fn add_entry(
    entries: &mut Vec<Value>,
    (names, configs): (&mut Names, &mut BTreeMap<String, Digest>),
    summary: &mut MergeSummary,
    (entry, config): (Value, Option<Digest>),
    input: &ImageArchive,
) -> Result<(), ImagesError> {
    let digest = entry
        .get("digest")
        .and_then(Value::as_str)
        .and_then(Digest::parse)
        .unwrap_or(Digest([0; 32]));
    if let Some(reference) = entry_reference(&entry) {
        claim(names, &reference, digest, input.path()).map_err(|e| match (e, config) {
            (
                ImagesError::TagConflict {
                    reference,
                    first,
                    first_path,
                    second,
                    second_path,
                },
                Some(config),
            ) if configs.get(&reference) == Some(&config) => ImagesError::SameImageTwoManifests {
                reference,
                config: config.prefixed(),
                manifests: format!(
                    "{first} in `{}` and {second} in `{}`",
                    first_path.display(),
                    second_path.display()
                ),
            },
            (e, _) => e,
        })?;
        if let Some(config) = config {
            configs.entry(reference.clone()).or_insert(config);
        }
        if !summary.tags.contains(&reference) {
            summary.tags.push(reference);
        }
    }
    if !entries.contains(&entry) {
        entries.push(entry);
        summary.images += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_references() {
        assert_eq!(tag_part("a/b:1.0"), "1.0");
        assert_eq!(tag_part("localhost:5000/app"), "latest");
        assert_eq!(tag_part("localhost:5000/app:2"), "2");
    }

    /// A layout of one image (a plain layer, its config, its manifest) and
    /// an index over the manifest, whose `index.json` lists `entries`;
    /// `@manifest` and `@index` stand for their descriptors' digests.
    fn layout(dir: &std::path::Path, entries: &[Value]) {
        let layer = {
            let mut w = TarWriter::new(Vec::new());
            w.append(&Header::archive_member("f", Kind::Regular, 1, 1), b"x")
                .unwrap();
            w.finish().unwrap()
        };
        let config = crate::oci::canonical_json(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [Digest::of(&layer).prefixed()] },
        }));
        let desc = |media: &str, bytes: &[u8]| crate::oci::Descriptor {
            media_type: media.to_owned(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        };
        let manifest = crate::oci::manifest_json(
            &desc(crate::oci::CONFIG_MEDIA_TYPE, &config),
            &[desc(crate::oci::LAYER_MEDIA_TYPE, &layer)],
        );
        let m = desc(crate::oci::MANIFEST_MEDIA_TYPE, &manifest);
        let index = crate::sink::platform_index(&[(
            m.clone(),
            crate::sink::Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
        )]);
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for b in [&layer, &config, &manifest, &index] {
            std::fs::write(blobs.join(Digest::of(b).hex()), b).unwrap();
        }
        let entries: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if let Some(obj) = e.as_object_mut() {
                    let (target, media) = match obj.get("digest").and_then(Value::as_str) {
                        Some("@index") => (&index, crate::oci::INDEX_MEDIA_TYPE),
                        _ => (&manifest, crate::oci::MANIFEST_MEDIA_TYPE),
                    };
                    obj.insert("digest".into(), Digest::of(target).prefixed().into());
                    obj.insert("size".into(), target.len().into());
                    obj.entry("mediaType").or_insert_with(|| media.into());
                }
                e
            })
            .collect();
        std::fs::write(dir.join("oci-layout"), crate::oci::LAYOUT_FILE).unwrap();
        std::fs::write(dir.join("index.json"), crate::oci::index_json(entries)).unwrap();
    }

    fn arb_entry() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = prop_oneof![
            Just("1".to_owned()),
            Just("a/b:1".to_owned()),
            Just("latest".to_owned()),
            "[ -~]{0,10}"
        ];
        (
            prop_oneof![Just("@manifest"), Just("@index")],
            proptest::option::of(text.clone()),
            proptest::option::of(text),
            proptest::option::of(prop_oneof![
                Just(serde_json::json!({"architecture": "amd64", "os": "linux"})),
                Just(serde_json::json!({"architecture": 5})),
                Just(Value::Null),
            ]),
        )
            .prop_map(|(digest, ref_name, name, platform)| {
                let mut e = serde_json::json!({ "digest": digest });
                let mut a = Map::new();
                if let Some(r) = ref_name {
                    a.insert(crate::oci::REF_NAME.into(), r.into());
                }
                if let Some(n) = name {
                    a.insert(crate::oci::CONTAINERD_NAME.into(), n.into());
                }
                e["annotations"] = Value::Object(a);
                if let Some(p) = platform {
                    e["platform"] = p;
                }
                e
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever names, platforms and kinds `index.json` entries carry,
        /// merging them into each output gives an image or an error, never
        /// a panic; an output that succeeds opens again.
        #[test]
        fn any_entries_merge_or_fail_cleanly(
            entries in proptest::collection::vec(arb_entry(), 0..4),
            platform in proptest::option::of(proptest::prelude::Just(
                crate::manifest::PlatformName { architecture: "amd64".into(), variant: None },
            )),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in");
            layout(&input, &entries);
            let Ok(archive) = ImageArchive::open(&input) else {
                return Ok(());
            };
            let inputs = [archive];
            let options = MergeOptions {
                platform,
                mtime: 1,
                compress: CompressOptions::NONE,
            };
            for (i, sink) in [
                MergeSink::DockerArchive(Vec::new()),
                MergeSink::OciArchive(Vec::new()),
                MergeSink::OciLayout(Box::new(
                    crate::sink::oci_layout::OciLayout::create(&dir.path().join("out")).unwrap(),
                )),
            ]
            .into_iter()
            .enumerate()
            {
                if let Ok((out, _)) = merge_images(&inputs, &options, sink) {
                    let path = dir.path().join(format!("out{i}.tar"));
                    match out {
                        Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                        None => std::fs::rename(dir.path().join("out"), &path).unwrap(),
                    }
                    proptest::prop_assert!(ImageArchive::open(&path).is_ok());
                }
            }
        }
    }

    proptest::proptest! {
        /// `index.json` descriptors are untrusted JSON: naming them for
        /// errors and conflicts never panics, whatever their shape.
        #[test]
        fn any_descriptor_is_named_without_panic(
            text in "[\\[\\]{}:,\" 0-9a-z.]{0,48}",
            reference in "[ -~]{0,24}",
        ) {
            let _ = tag_part(&reference);
            for value in [
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                serde_json::json!({ "annotations": { crate::oci::REF_NAME: reference.clone() }, "digest": 5 }),
                serde_json::json!({ "annotations": [reference.clone()], "platform": reference }),
            ] {
                let _ = entry_label(&value);
                let _ = entry_reference(&value);
            }
        }
    }
}
