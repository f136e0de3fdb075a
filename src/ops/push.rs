//! A build pushed to a registry: the image's blobs go straight to a
//! [`RegistrySink`] (the store read once, each layer compressed on its own
//! and uploaded unless the registry has it), then the manifest is PUT as
//! the tag. Where credentials come from (flags, stdin, the environment,
//! docker's `config.json`) is the caller's business: they arrive in
//! [`ClientOptions`].

use super::{build, BuildSettings, BuildSummary, Error, PreparedImage, Reporter};
use crate::codec::CompressOptions;
use crate::sink::registry::homes::BlobHomes;
use crate::sink::registry::{Client, ClientOptions, PushCounts, Reference, RegistrySink};
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
        sink = sink.with_homes(homes, &target.repository);
    }
    // A layer from the cache the registry has (or mounted) counts as
    // existing (or mounted) in the sink's counts.
    let (summary, counts) = build(settings, image, sink, reporter)?;
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
