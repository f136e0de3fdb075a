//! Integration tests, one binary. Modules:
//! - `util`: the test context, tool checks and Nix fixtures.

mod closure_sources;
mod util;
