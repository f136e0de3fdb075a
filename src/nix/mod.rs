//! The small Nix formats every stage shares: nixbase32, store paths and NAR
//! hashes. Written here because nix-compat is GPL-3.0 and not on crates.io
//! (see `reference/crates.md`); the formats are a few dozen lines each.

pub mod base32;
mod drv_name;
mod hash;
pub mod listing;
pub mod nar;
pub mod narinfo;
mod store_path;

pub use drv_name::parse_drv_name;
pub use hash::{HashParseError, NarHash};
pub use store_path::{StoreDir, StorePath, StorePathError};
