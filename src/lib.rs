//! nixlayer builds OCI / Docker container images from Nix store closures,
//! without the Nix evaluator.
//!
//! # Overview
//!
//! The modules follow the data flow of a build; each stage uses only the
//! tiers below it and the stages before it, never the ops tier above it,
//! and nothing in the library knows the command line (`src/cli/`, under
//! the binary):
//!
//! 1. The formats tier, shared vocabulary that imports no stage: [`nix`]
//!    (store paths, nixbase32, NAR hashes), [`oci`] (digests and their one
//!    parser, media types, descriptors, manifest and index JSON, canonical
//!    JSON), [`tar`] (the CPython-exact writer and the hardened reader) and
//!    [`codec`] (the one [`codec::Compression`] type, deterministic parallel
//!    compressors, sniffing decompressors, and the one blob writer stack
//!    [`codec::BlobWriter`]). Beside it, [`input`] (bounded reads of input
//!    files), [`cleanup`] (temporary paths removed on a signal) and [`http`]
//!    (the deadlines every HTTP client shares), which
//!    every stage may use.
//! 2. [`store`]: where store path content comes from, behind the
//!    [`store::Store`] trait (entries in layer order, file bytes, NAR sizes);
//!    the local store on disk ([`store::StoreLocation`]) is its first implementation.
//! 3. [`manifest`]: the TOML manifest (`image.toml`) → a typed [`manifest::Manifest`].
//! 4. [`closure`]: a closure source (live store, registration, graph JSON,
//!    path-info JSON, DOT) → one [`closure::ClosureGraph`].
//!    [`sbom`] turns a closure graph into an SPDX or CycloneDX document.
//! 5. [`plan`]: a closure graph and a layering pipeline → a [`plan::LayerPlan`].
//! 6. [`layer`]: store paths, read through a [`store::Store`] → deterministic
//!    layer tars, byte-compatible with nixpkgs' `stream_layered_image.py`, sized
//!    from metadata before a byte is written; the customisation layer and the
//!    permission rules applied to every layer.
//! 7. [`image`]: the image config, history and docker `manifest.json`, serialised
//!    canonically; the Nix database; base images.
//! 8. [`archive`]: reading existing images (docker-archives in any
//!    compression, OCI archives and layouts), for `merge`, `inspect` and base images.
//! 9. [`sink`]: where the image goes, behind one [`sink::ImageSink`] trait
//!    (layers, configs, several manifests, a name): a docker-archive, an OCI
//!    layout or archive, a registry; output files that never exist half-written.
//! 10. [`ops`]: what the library does, driving the stages: settings
//!     resolution ([`ops::settings`]: manifest + overrides + environment →
//!     [`ops::BuildSettings`]), [`ops::prepare`] and [`ops::build`] into any
//!     sink, [`ops::push`], [`ops::merge`], and [`ops::rootfs`] (the merged
//!     filesystem as one tar).
//!
//! # Example
//!
//! Build the example manifest (its store paths are committed under
//! `fixtures/example/`) into an in-memory docker-archive, through the
//! library alone: load the manifest, resolve it with no overrides and a
//! fixed environment, prepare, and build into a sink.
//!
//! ```
//! use std::path::PathBuf;
//! use nixlayer::manifest::LoadedManifest;
//! use nixlayer::ops::settings::{self, Environment, Overrides};
//! use nixlayer::ops::{self, NoReporter};
//! use nixlayer::sink::docker_archive::DockerArchiveWriter;
//!
//! let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/example.toml");
//! let loaded = LoadedManifest::load(&path)?;
//! let env = Environment {
//!     now: jiff::Timestamp::UNIX_EPOCH,
//!     source_date_epoch: None,
//!     cache_dir: None, // no layer cache
//!     binary_cache: Default::default(), // no binary cache in this manifest
//! };
//! let resolved = settings::resolve_build(&loaded, &Overrides::default(), &env)?;
//! let image = ops::prepare(&resolved.settings)?;
//! let sink = DockerArchiveWriter::new(Vec::new(), resolved.settings.mtime, &resolved.compress)?;
//! let (summary, archive) = ops::build(&resolved.settings, &image, sink, &NoReporter)?;
//! assert_eq!(summary.reference, "nixlayer/example:0.3");
//! assert_eq!(summary.layers.len(), 3); // one per store path
//! assert_eq!(archive.len() as u64, summary.bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`ops::BuildSettings::new`] makes settings without a manifest; the
//! `build_image` example writes any manifest's image to a file.
//!
//! # Glossary
//!
//! - *store path*: an absolute path `STORE_DIR/<nixbase32 hash>-<name>`.
//! - *closure*: a set of store paths closed under references; *roots* are where it starts.
//! - *layer plan*: the store paths of each store layer, bottom first.
//! - *store layer*: a layer holding whole store paths; the *customisation layer* holds the rest.
//! - *diff_id*: sha256 of a layer's uncompressed tar; a *blob* is the stored (maybe compressed) bytes.
//! - *sink*: an output the image is written to.

// Formats tier: vocabulary, imports no stage.
pub mod nix;
pub mod oci;
pub mod tar;
pub mod codec;

// Below every stage: bounded input reads, signal clean-up, HTTP deadlines,
// the registry client.
pub mod input;
pub mod cleanup;
pub mod http;
pub mod registry;

// The stages, in data-flow order.
pub mod store;
pub mod manifest;
pub mod closure;
pub mod sbom;
pub mod plan;
pub mod layer;
pub mod image;
pub mod archive;
pub mod sink;

// The ops tier: drives the stages.
pub mod ops;
