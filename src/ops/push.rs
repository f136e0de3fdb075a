//! A build pushed to a registry: the image's blobs go straight to a
//! [`RegistrySink`] (the store read once, each layer compressed on its own
//! and uploaded unless the registry has it), then the manifest is PUT as
//! the tag. Where credentials come from (flags, stdin, the environment,
//! docker's `config.json`) is the caller's business: they arrive in
//! [`ClientOptions`].

use super::{build, BuildSettings, BuildSummary, Error, PreparedImage, Reporter};
use crate::codec::CompressOptions;
use crate::sink::registry::{Client, ClientOptions, PushCounts, Reference, RegistrySink};
use crate::sink::tag_of;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushSummary {
    /// The build: digests and layers (its `reference` is the image's
    /// `name:tag`).
    pub build: BuildSummary,
    /// Where it was pushed: `host/repository:tag`.
    pub reference: String,
    /// Blobs uploaded and found; a layer the layer cache knew and the
    /// registry holds counts as found.
    pub counts: PushCounts,
    /// Layers taken from the layer cache, whose store paths were not read.
    pub layers_cached: usize,
}

/// Pushes `image` (from [`super::prepare`]) to `target`, its layers
/// compressed with `compress`, tagged `target`'s tag or else the build's.
///
/// # Errors
/// When the registry cannot be reached or refuses a request, or a store
/// file cannot be read.
pub fn push(
    settings: &BuildSettings,
    image: &PreparedImage,
    target: &Reference,
    options: ClientOptions,
    compress: CompressOptions,
    reporter: &dyn Reporter,
) -> Result<PushSummary, Error> {
    let client = Client::new(target, options);
    client.ping()?;
    let sink = RegistrySink::new(client, compress, target.tag.clone())?;
    let (summary, mut counts) = build(settings, image, sink, reporter)?;
    let layers_cached = summary.blobs.map_or(0, |b| b.layers_cached);
    // A layer from the cache was found on the registry by HEAD: present too.
    counts.existing += layers_cached;
    let tag = target
        .tag
        .clone()
        .unwrap_or_else(|| tag_of(&summary.reference).to_owned());
    Ok(PushSummary {
        reference: format!("{}/{}:{tag}", target.host, target.repository),
        build: summary,
        counts,
        layers_cached,
    })
}
