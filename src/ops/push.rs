//! A build pushed to a registry: the image's blobs go straight to a
//! [`RegistrySink`] (the store read once, each layer compressed on its own
//! and uploaded unless the registry has it), then the manifest is PUT as
//! the tag. Where credentials come from (flags, stdin, the environment,
//! docker's `config.json`) is the caller's business: they arrive in
//! [`ClientOptions`].

use super::{build, build_platforms, BuildSettings, BuildSummary, Error, PreparedImage, Reporter};
use crate::codec::CompressOptions;
use crate::sink::registry::homes::BlobHomes;
use crate::sink::registry::{
    Client, ClientOptions, Error as RegistryError, PushCounts, Reference, RegistrySink,
};
use crate::sink::tag_of;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushSummary {
    /// The build: digests and layers (its `reference` is the image's
    /// `name:tag`).
    pub build: BuildSummary,
    /// Where it was pushed: `host/repository:tag`, with the first tag.
    pub reference: String,
    /// Every tag it was pushed as, in the order they were PUT.
    pub tags: Vec<String>,
    /// `host/repository@sha256:…`: the manifest pushed, by digest, for
    /// deploy steps that pin it.
    pub pinned: String,
    /// Blobs uploaded and found; a layer the layer cache knew and the
    /// registry holds counts as found.
    pub counts: PushCounts,
    /// Layers taken from the layer cache, whose store paths were not read.
    pub layers_cached: usize,
}

/// Pushes `image` (from [`super::prepare`]) to `target`, its layers
/// compressed with `compress`, tagged `target`'s tag and each of
/// `more_tags` (duplicates once); with neither, the build's tag.
///
/// # Errors
/// When the registry cannot be reached or refuses a request, or a store
/// file cannot be read.
pub fn push(
    settings: &BuildSettings,
    image: &PreparedImage,
    target: &Reference,
    more_tags: &[String],
    options: ClientOptions,
    compress: CompressOptions,
    reporter: &dyn Reporter,
) -> Result<PushSummary, Error> {
    note_base_blobs(settings, [settings], target);
    let (sink, mut tags) = open_sink(settings, target, more_tags, options.clone(), compress, true)?;
    reporter.on_uploads(sink.meter());
    // A layer from the cache the registry has (or mounted) counts as
    // existing (or mounted) in the sink's counts.
    let (summary, counts) = match build(settings, image, sink, reporter) {
        // A blob recorded in the repository has gone (a registry's garbage
        // collection, or another registry on the same host and port): push
        // again asking the registry about every blob, which builds and
        // uploads what is missing.
        Err(e) if vanished(&e) => {
            let (sink, _) = open_sink(settings, target, more_tags, options, compress, false)?;
            reporter.on_uploads(sink.meter());
            build(settings, image, sink, reporter)?
        }
        result => result?,
    };
    let layers_cached = summary.blobs.map_or(0, |b| b.layers_cached);
    if tags.is_empty() {
        tags.push(tag_of(&summary.reference).to_owned());
    }
    let name = format!("{}/{}", target.host, target.repository);
    let pinned = summary
        .manifest_digest
        .map_or_else(String::new, |d| format!("{name}@{}", d.prefixed()));
    Ok(PushSummary {
        reference: format!("{name}:{}", tags[0]),
        tags,
        pinned,
        build: summary,
        counts,
        layers_cached,
    })
}

/// Notes in `records`' blob records (the first settings' layer cache)
/// that each pulled base image of `images` that is on `target`'s registry
/// holds its blobs in its own repository: a push to another repository
/// there then mounts the base's layers (as docker and crane do) instead
/// of uploading them all again. Only hints; the registry decides.
fn note_base_blobs<'a>(
    records: &BuildSettings,
    images: impl IntoIterator<Item = &'a BuildSettings>,
    target: &Reference,
) {
    let Some(cache) = &records.cache else {
        return;
    };
    let homes = BlobHomes::new(&cache.dir().join("registry-blobs"), &target.host);
    for base in images
        .into_iter()
        .filter_map(|s| s.content.base_pull.as_ref())
    {
        let from = &base.reference;
        if !from.host.eq_ignore_ascii_case(&target.host) || from.repository == target.repository {
            continue;
        }
        for digest in base.blob_digests() {
            if !homes.get(&digest).contains(&from.repository) {
                // A record that cannot be written only costs an upload.
                let _ = homes.put(&digest, &from.repository);
            }
        }
    }
}

/// Whether `e` says that blobs the blob records placed in the repository
/// are gone from it.
fn vanished(e: &Error) -> bool {
    matches!(e, Error::Sink(crate::sink::Error::Registry(r)) if matches!(**r, RegistryError::Vanished { .. }))
}

/// The registry sink for `target`, with the tags to PUT (checked, each
/// once, in order). With `trust_records`, blobs the layer cache's blob
/// records place in `target`'s repository are taken for present without
/// asking the registry (see [`RegistrySink::with_homes`]).
fn open_sink(
    settings: &BuildSettings,
    target: &Reference,
    more_tags: &[String],
    options: ClientOptions,
    compress: CompressOptions,
    trust_records: bool,
) -> Result<(RegistrySink, Vec<String>), Error> {
    let client = Client::new(target, options);
    client.ping()?;
    let mut tags: Vec<String> = Vec::new();
    for tag in target.tag.iter().chain(more_tags) {
        crate::sink::registry::reference::check_tag(tag).map_err(|reason| {
            crate::sink::Error::Registry(Box::new(crate::sink::registry::Error::Reference {
                reference: tag.clone(),
                reason,
            }))
        })?;
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    let mut sink = RegistrySink::new(client, compress, tags.clone())?;
    if let Some(cache) = &settings.cache {
        // Beside the layer records: where each blob went, for mounts.
        let homes = BlobHomes::new(&cache.dir().join("registry-blobs"), &target.host);
        sink = sink.with_homes(homes, &target.repository, trust_records);
    }
    Ok((sink, tags))
}

/// What a multi-platform push did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlatformsPushSummary {
    /// Each platform's build, in the order given.
    pub builds: Vec<BuildSummary>,
    /// Where it was pushed: `host/repository:tag`, with the first tag.
    pub reference: String,
    /// Every tag the index was pushed as.
    pub tags: Vec<String>,
    /// `host/repository@sha256:…`: the image index, by digest.
    pub pinned: String,
    /// Blobs uploaded and found, over all platforms: a layer they share
    /// is uploaded once.
    pub counts: PushCounts,
}

/// Pushes several platforms' images (each with its own settings) to
/// `target`: every blob once, each image manifest by digest, then one
/// image index over them as `target`'s tag and each of `more_tags`; with
/// neither, the first build's tag. The layer cache and blob homes are the
/// first settings'.
///
/// # Errors
/// As [`push`].
pub fn push_platforms(
    images: &[(&BuildSettings, &PreparedImage)],
    target: &Reference,
    more_tags: &[String],
    options: ClientOptions,
    compress: CompressOptions,
    reporter: &dyn Reporter,
) -> Result<PlatformsPushSummary, Error> {
    let Some((first, _)) = images.first() else {
        return Err(Error::Empty);
    };
    note_base_blobs(first, images.iter().map(|(s, _)| *s), target);
    let (sink, mut tags) = open_sink(first, target, more_tags, options.clone(), compress, true)?;
    reporter.on_uploads(sink.meter());
    let (builds, counts) = match build_platforms(images, sink, reporter) {
        // As in `push`.
        Err(e) if vanished(&e) => {
            let (sink, _) = open_sink(first, target, more_tags, options, compress, false)?;
            reporter.on_uploads(sink.meter());
            build_platforms(images, sink, reporter)?
        }
        result => result?,
    };
    if tags.is_empty() {
        if let Some(b) = builds.first() {
            tags.push(tag_of(&b.reference).to_owned());
        }
    }
    let name = format!("{}/{}", target.host, target.repository);
    let pinned = counts
        .index
        .map_or_else(String::new, |d| format!("{name}@{}", d.prefixed()));
    Ok(PlatformsPushSummary {
        reference: format!("{name}:{}", tags.first().map_or("latest", String::as_str)),
        tags,
        pinned,
        builds,
        counts,
    })
}
