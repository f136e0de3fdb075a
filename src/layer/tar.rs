//! Tar headers exactly as Python's `tarfile` writes them in its default PAX
//! format (the format of nixpkgs' streamer), and a streaming tar writer.

/// The tar block size.
pub const BLOCK: u64 = 512;
/// Python tarfile pads the archive to a multiple of this (20 blocks).
pub const RECORD: u64 = 10240;
