//! Tar in both directions: [`write`](mod@write), the CPython-exact PAX encoder the
//! store layers and the docker-archive are written with, and [`read`](mod@read), the
//! hardened index of a hostile tar that existing images are read through.
//!
//! Formats tier: this module imports no stage. Both halves are hand-written;
//! each module says why (byte-compatibility for the writer, refusing before
//! allocating for the reader).

pub mod read;
pub mod write;

pub use read::{normalize, Limits, Member, MemberKind, TarError, TarIndex};
pub use write::{archive_len, entry_len, header_len, Header, Kind, TarWriter, BLOCK, RECORD};
