//! Where the image goes: a docker-archive written to a file (through a
//! temporary file renamed into place) or streamed to stdout.

pub mod docker_archive;
mod output;

pub use output::OutputFile;
