//! Where the image goes: a docker-archive written to a file (through a
//! temporary file renamed into place) or streamed to stdout, an OCI image
//! layout directory, or an OCI layout in a tar; compressed or not.

pub mod compress;
pub mod docker_archive;

mod output;

pub use output::OutputFile;
