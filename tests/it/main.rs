#![allow(unreachable_pub, missing_docs, clippy::print_stderr)]
//! Integration tests, one binary. Modules:
//! - `util`: the test context, tool checks and Nix fixtures;
//! - `build`: `nixlayer build` end to end with docker, reproducibility;
//! - `errors`: bad input gives one message and no output.

mod build;
mod errors;
mod util;
