//! Raw command-line arguments: syntax only, no filesystem or store access.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Build OCI / Docker images from Nix store closures, without the Nix evaluator.
#[derive(Debug, Parser)]
#[command(name = "nixlayer", version, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the image a manifest describes.
    Build(BuildArgs),
    /// Print the layer plan: each store layer's paths and size.
    Layers(LayersArgs),
}

/// `nixlayer build`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("dest").required(true).args(["output", "stream"]))]
pub struct BuildArgs {
    /// The manifest (`image.toml`).
    pub manifest: PathBuf,
    /// Write the image to this file (via a temporary file, renamed when complete).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the image to stdout, e.g. `| docker load`.
    #[arg(long)]
    pub stream: bool,
    /// Override the manifest's name and tag: `NAME[:TAG]`.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub tag: Option<String>,
}

/// `nixlayer layers`.
#[derive(Debug, Args)]
pub struct LayersArgs {
    /// The manifest (`image.toml`).
    pub manifest: PathBuf,
    /// Print the layers as JSON, an array of arrays of store paths (nixpkgs' format).
    #[arg(long)]
    pub json: bool,
}
