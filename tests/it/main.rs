//! Integration tests, one binary. Modules:
//! - `util`: the test context, tool checks and Nix fixtures.

mod layer_golden;
mod util;
