//! nixlayer builds OCI / Docker container images from Nix store closures,
//! without the Nix evaluator.
//!
//! # Overview
//!
//! The modules follow the data flow of a build, each stage only using the
//! ones before it:
//!
//! 1. [`manifest`]: the TOML manifest (`image.toml`) → a typed [`manifest::Manifest`].
//! 2. [`nix`]: the small Nix formats every stage shares (store paths, nixbase32, NAR hashes).
//! 3. [`closure`]: a closure source (live store, registration, graph JSON,
//!    path-info JSON, DOT) → one [`closure::ClosureGraph`].
//! 4. [`plan`]: a closure graph and a layering pipeline → a [`plan::LayerPlan`].
//! 5. [`layer`]: store paths → deterministic layer tars, byte-compatible with
//!    nixpkgs' `stream_layered_image.py`, sized from metadata before a byte is written.
//! 6. [`image`]: the image config, history and docker `manifest.json`, serialised canonically.
//! 7. [`archive`]: reading existing images (docker-archives in any
//!    compression, OCI archives and layouts), for `merge`, `inspect` and base images.
//! 8. [`sink`]: where the image goes (a docker-archive, an OCI layout or
//!    archive, a stream), compressed deterministically on all cores.
//! 9. [`build`]: drives the stages above for one resolved build.
//! 10. [`merge`]: many docker-archives into one (nixpkgs' `mergeImages`).
//! 11. [`cli`]: arguments, settings, printing and exit codes; the only place that
//!     reads the clock or the environment.
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
pub mod build;
pub mod cli;
pub mod closure;
pub mod image;
pub mod layer;
pub mod manifest;
pub mod merge;
pub mod nix;
pub mod plan;
pub mod sink;
