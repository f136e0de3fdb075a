#![allow(unreachable_pub, missing_docs, clippy::print_stderr)]
//! Integration tests, one binary. Modules:
//! - `util`: the test context, tool checks and Nix fixtures;
//! - `accounts`: `[[users]]`/`[[groups]]` files and homes, `config.User` by name run by docker, collisions;
//! - `binary_cache`: the binary-cache store on real `nix copy` caches, from `file://` and nginx (plain, basic auth), against the local store; tampering refused;
//! - `build`: `nixlayer build` end to end with docker, reproducibility;
//! - `build_from_cache`: `build`, `layers` and `init` from a `nix copy` cache (`file://`, nginx, netrc) with no local store: the local build's bytes; refusals leave no output;
//! - `closure_sources`: the five closure sources agree on real closures;
//! - `content`: customisation layer, permissions, owner, Nix DB, base images, created/mtime;
//! - `errors`: bad input gives one message and no output;
//! - `hostile_archives`: edited and symlinked blobs, decompression bombs, unsafe merge members, a tampered base under `--stream`;
//! - `init`: `nixlayer init` manifests build, load and run; bad roots are refused;
//! - `layers`: `nixlayer layers` plans (table, JSON, HTML, strategies) and pipeline errors;
//! - `layer_golden`: store layers reproduce nixpkgs' diff_ids;
//! - `outputs`: OCI layouts/archives, gzip/zstd, merge and inspect with skopeo and docker;
//! - `output_faults`: `-o` onto devices, FIFOs, links and inputs; umask; signals; concurrent layouts; closed pipes;
//! - `pull`: `[base] image = "docker://…@sha256:…"` pulled from the real registry, cached by digest (builds with the registry unreachable), indexes resolved by platform, missing and wrong digests and tampered manifests/blobs refused, docker v2 manifests from skopeo;
//! - `push`: `nixlayer push` to a real registry (anonymous and basic auth), pulled by skopeo and run by docker;
//! - `push_faults`: `push` against misbehaving registries: where credentials go, deadlines, echoed secrets;
//! - `registry_auth`: `push` to a real token-auth registry (issuer, identity tokens, credential helpers) and a TLS one (test CA);
//! - `rootfs`: `--format rootfs` merges layers, applies whiteouts, and imports with docker;
//! - `runtimes`: `podman load` and containerd's `ctr images import` of built docker and OCI archives;
//! - `schema`: `nixlayer schema` prints the manifest's JSON Schema;
//! - `script`: `[customisation] run` as fake root: owners and modes in the layer and in docker, failures.

mod accounts;
mod binary_cache;
mod build;
mod build_from_cache;
mod closure_sources;
mod content;
mod errors;
mod hostile_archives;
mod init;
mod layer_golden;
mod layers;
mod output_faults;
mod outputs;
mod pull;
mod push;
mod push_faults;
mod registry_auth;
mod rootfs;
mod runtimes;
mod schema;
mod script;
mod util;
