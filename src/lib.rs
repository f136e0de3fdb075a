//! nixlayer builds OCI / Docker container images from Nix store closures,
//! without the Nix evaluator.
//!
//! # Overview
//!
//! The modules follow the data flow of a build, each stage only using the
//! ones before it:
//!
//! 1. [`manifest`]: the TOML manifest (`image.toml`) → a typed [`manifest::Manifest`].
//! 2. The formats tier, shared vocabulary that imports no stage: [`nix`]
//!    (store paths, nixbase32, NAR hashes), [`oci`] (digests and their one
//!    parser, media types, descriptors, manifest and index JSON, canonical
//!    JSON), [`tar`] (the CPython-exact writer and the hardened reader) and
//!    [`codec`] (the one [`codec::Compression`] type, deterministic parallel
//!    compressors, sniffing decompressors).
//! 3. [`store`]: where store path content comes from, behind the
//!    [`store::Store`] trait (entries in layer order, file bytes, NAR sizes);
//!    the local store on disk ([`store::StoreLocation`]) is its first implementation.
//! 4. [`closure`]: a closure source (live store, registration, graph JSON,
//!    path-info JSON, DOT) → one [`closure::ClosureGraph`].
//! 5. [`plan`]: a closure graph and a layering pipeline → a [`plan::LayerPlan`].
//! 6. [`layer`]: store paths, read through a [`store::Store`] → deterministic
//!    layer tars, byte-compatible with nixpkgs' `stream_layered_image.py`, sized
//!    from metadata before a byte is written; the customisation layer and the
//!    permission rules applied to every layer.
//! 7. [`image`]: the image config, history and docker `manifest.json`, serialised
//!    canonically; the Nix database; base images.
//! 8. [`archive`]: reading existing images (docker-archives in any
//!    compression, OCI archives and layouts), for `merge`, `inspect` and base images.
//! 9. [`sink`]: where the image goes (a docker-archive, an OCI layout or
//!    archive, a stream), compressed deterministically on all cores.
//! 10. [`build`]: drives the stages above for one resolved build.
//! 11. [`merge`]: many docker-archives into one (nixpkgs' `mergeImages`).
//! 12. [`cli`]: arguments, settings, printing and exit codes; the only place that
//!     reads the clock or the environment.
//!
//! # Example
//!
//! Build the embedded example (store paths committed under
//! `fixtures/example/`) into memory:
//!
//! ```
//! use std::path::PathBuf;
//! use nixlayer::ops::{self as build, BuildSettings, NoReporter};
//! use nixlayer::closure::Source;
//! use nixlayer::image::ConfigSpec;
//! use nixlayer::nix::{StoreDir, StorePath};
//! use nixlayer::plan::Pipeline;
//! use nixlayer::store::StoreLocation;
//!
//! let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/example");
//! let dir = StoreDir::default();
//! let app = "/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3";
//! let settings = BuildSettings {
//!     name: "example".to_owned(),
//!     tag: Some("doc".to_owned()),
//!     config: ConfigSpec {
//!         created: "1970-01-01T00:00:01Z".to_owned(),
//!         architecture: "amd64".to_owned(),
//!         os: "linux".to_owned(),
//!         variant: None,
//!         config: serde_json::from_str(&format!(r#"{{"Cmd": ["{app}/bin/hello"]}}"#))?,
//!     },
//!     store: StoreLocation { dir: dir.clone(), root: fixtures.join("store") },
//!     roots: vec![StorePath::parse(&dir, app)?],
//!     source: Source::Graph(fixtures.join("graph.json")),
//!     exclude: vec![],
//!     pipeline: Pipeline::popularity(99),
//!     owner: Default::default(),
//!     mtime: 1,
//!     content: Default::default(),
//!     cache: None,
//! };
//! let image = build::prepare(&settings)?;
//! let (archive, summary) = build::write_docker_archive(&settings, &image, Vec::new(), &NoReporter)?;
//! assert_eq!(summary.reference, "example:doc");
//! assert_eq!(summary.layers.len(), 3); // one per store path
//! assert_eq!(archive.len() as u64, summary.bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Glossary
//!
//! - *store path*: an absolute path `STORE_DIR/<nixbase32 hash>-<name>`.
//! - *closure*: a set of store paths closed under references; *roots* are where it starts.
//! - *layer plan*: the store paths of each store layer, bottom first.
//! - *store layer*: a layer holding whole store paths; the *customisation layer* holds the rest.
//! - *diff_id*: sha256 of a layer's uncompressed tar; a *blob* is the stored (maybe compressed) bytes.
//! - *sink*: an output the image is written to.

pub mod archive;
pub mod cleanup;
pub mod closure;
pub mod codec;
pub mod image;
pub mod input;
pub mod layer;
pub mod manifest;
pub mod nix;
pub mod oci;
pub mod ops;
pub mod plan;
pub mod sink;
pub mod store;
pub mod tar;
