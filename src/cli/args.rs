//! Raw command-line arguments: syntax only, no filesystem or store access.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Build OCI / Docker images from Nix store closures, without the Nix evaluator.
#[derive(Debug, Parser)]
#[command(name = "nixlayer", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build the image a manifest describes.
    Build(BuildArgs),
    /// Print the layer plan: each store layer's paths and size.
    Layers(LayersArgs),
    /// Merge images (docker-archives, OCI archives and layouts) into one
    /// docker-archive, OCI archive or OCI layout holding every tag.
    Merge(MergeArgs),
    /// Show the images, layers, config and tags of an archive or OCI layout.
    Inspect(InspectArgs),
    /// Print a JSON Schema of the manifest, for editors (taplo, Even Better TOML).
    Schema,
    /// Print a manifest for store paths that builds as is.
    Init(InitArgs),
    /// Build the image and push it to a registry (OCI distribution API).
    Push(PushArgs),
    /// Compare two images: store paths, layers and the bytes an update moves.
    Diff(DiffArgs),
    /// Print the SBOM of the image a manifest describes (SPDX or CycloneDX JSON).
    Sbom(SbomArgs),
}

/// The SBOM formats, as `--format` and `--sbom` take them.
const SBOM_FORMATS: [&str; 2] = ["spdx-json", "cyclonedx-json"];

/// `nixlayer sbom`.
#[derive(Debug, Args)]
pub(crate) struct SbomArgs {
    /// The manifest (`image.toml`).
    pub(crate) manifest: PathBuf,
    /// The SBOM format.
    #[arg(long, value_name = "FORMAT", value_parser = SBOM_FORMATS)]
    pub(crate) format: String,
    /// Write the SBOM to this file (via a temporary file, renamed when
    /// complete) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Of a manifest with `[[platforms]]`, the platform whose image it
    /// describes (`ARCH[/VARIANT]` or `linux/ARCH[/VARIANT]`; one SBOM per
    /// platform image).
    #[arg(long, value_name = "ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Override the manifest's name and tag, as `build --tag` does (the
    /// SBOM names the image).
    #[arg(long, value_name = "NAME[:TAG]")]
    pub(crate) tag: Option<String>,
    /// How to reach the registry of a manifest's `[base] image =
    /// "docker://…"` (pulled to count and describe its layers).
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// `nixlayer diff`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The old image: a manifest (`*.toml`), a docker-archive (any
    /// compression), an OCI archive or an OCI layout directory (`-`: an
    /// archive on stdin); of one holding several tags, `PATH:NAME` picks
    /// one (`layout:1`).
    pub(crate) old: PathBuf,
    /// The new image, of any of the same kinds.
    pub(crate) new: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Of a multi-platform side (a manifest with `[[platforms]]`, an image
    /// index), compare this platform's image (`ARCH[/VARIANT]`, or docker's
    /// `linux/ARCH[/VARIANT]`); needed for an index.
    #[arg(long, value_name = "ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// How to reach the registry of a manifest's `[base] image =
    /// "docker://…"`.
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// `nixlayer build`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("dest").required(true).args(["output", "stream"]))]
pub(crate) struct BuildArgs {
    /// The manifest (`image.toml`).
    pub(crate) manifest: PathBuf,
    /// Write the image to this file (via a temporary file, renamed when
    /// complete); a device or FIFO (`/dev/stdout`) is written in place;
    /// `-` is stdout, as `--stream`.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Write the image to stdout, e.g. `| docker load`.
    #[arg(long)]
    pub(crate) stream: bool,
    /// Override the manifest's name and tag: `NAME[:TAG]`.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub(crate) tag: Option<String>,
    /// Output format (default: `[output] format`, else docker-archive).
    #[arg(long, value_name = "FORMAT", value_parser = ["docker-archive", "oci-layout", "oci-archive", "rootfs"])]
    pub(crate) format: Option<String>,
    /// Compression: docker-archive as a whole, OCI per layer (default:
    /// `[output] compression`, else none).
    #[arg(long, value_name = "ALGO", value_parser = ["none", "gzip", "zstd"])]
    pub(crate) compression: Option<String>,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub(crate) level: Option<i32>,
    /// Compression threads (default: all cores); never changes the bytes.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<NonZeroUsize>,
    /// Print the summary as JSON on stdout.
    #[arg(long, conflicts_with = "stream")]
    pub(crate) json: bool,
    /// Do not use or update the layer cache (`$XDG_CACHE_HOME/nixlayer`),
    /// which lets an OCI layout rebuild skip reading unchanged layers.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Of a manifest with `[[platforms]]`, build only this one
    /// (`ARCH[/VARIANT]`, or docker's `linux/ARCH[/VARIANT]`); needed for docker-archive and rootfs, which
    /// hold one platform.
    #[arg(long, value_name = "ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Warn instead of failing when the entrypoint or a root's `bin/`
    /// program is an ELF file for another machine than the image platform.
    #[arg(long)]
    pub(crate) no_arch_check: bool,
    /// Add an annotation (repeatable; over the manifest's): `KEY=VALUE` or
    /// `manifest:KEY=VALUE` on the image manifest(s), `index:KEY=VALUE` on
    /// the image index of several platforms; a docker-archive has none.
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) annotation: Vec<String>,
    /// Make an SBOM of the image (repeatable for both formats): attached to
    /// each image manifest of an OCI output as an OCI 1.1 artifact, or
    /// written beside a docker-archive or rootfs file (`FILE.spdx.json`,
    /// `FILE.cdx.json`).
    #[arg(long, value_name = "FORMAT", value_parser = SBOM_FORMATS)]
    pub(crate) sbom: Vec<String>,
    /// How to reach the registry of a `[base] image = "docker://…"`.
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// `nixlayer merge`.
#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// The images, in order: docker-archives (plain, gzip, zstd or xz), OCI
    /// archives and OCI layout directories, in any mix; the first copy of
    /// a blob wins.
    #[arg(required = true, num_args = 1..)]
    pub(crate) inputs: Vec<PathBuf>,
    /// The merged image: a file (via a temporary file, renamed when
    /// complete; a device or FIFO is written in place), or a directory
    /// for `--format oci-layout`.
    #[arg(short, long, value_name = "PATH")]
    pub(crate) output: PathBuf,
    /// Output format (default: docker-archive).
    #[arg(long, value_name = "FORMAT", value_parser = ["docker-archive", "oci-archive", "oci-layout"])]
    pub(crate) format: Option<String>,
    /// Of every multi-platform image index, keep only this platform's
    /// image (`ARCH[/VARIANT]`, or docker's `linux/ARCH[/VARIANT]`);
    /// needed for a docker-archive output.
    #[arg(long, value_name = "PLATFORM")]
    pub(crate) platform: Option<String>,
    /// Compression of a docker-archive output (default: that of the last
    /// input); OCI outputs keep every blob as stored.
    #[arg(long, value_name = "ALGO", value_parser = ["none", "gzip", "zstd"])]
    pub(crate) compression: Option<String>,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub(crate) level: Option<i32>,
    /// Compression threads (default: all cores); never changes the bytes.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<NonZeroUsize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `nixlayer inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A docker-archive (plain, gzip, zstd or xz), an OCI archive or an OCI
    /// layout directory; `-` reads an archive from stdin.
    pub(crate) image: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `nixlayer layers`.
#[derive(Debug, Args)]
pub(crate) struct LayersArgs {
    /// The manifest (`image.toml`).
    pub(crate) manifest: PathBuf,
    /// Print the layers as JSON, an array of arrays of store paths (nixpkgs' format).
    #[arg(long, conflicts_with = "html")]
    pub(crate) json: bool,
    /// Write the plan as a self-contained HTML page to this file instead.
    #[arg(long, value_name = "FILE")]
    pub(crate) html: Option<PathBuf>,
    /// Of a manifest with `[[platforms]]`, plan this platform's image
    /// (`ARCH[/VARIANT]`, or docker's `linux/ARCH[/VARIANT]`; default: the
    /// top-level platform).
    #[arg(long, value_name = "ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// How to reach the registry of a `[base] image = "docker://…"`.
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// `nixlayer init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The roots: store paths whose closure goes into the image (or
    /// out-links to them, such as `./result`); the first names the image.
    #[arg(required = true, num_args = 1.., value_name = "STORE_PATH")]
    pub(crate) roots: Vec<String>,
    /// The store directory the paths live in.
    #[arg(long, value_name = "DIR", default_value = nixlayer::manifest::DEFAULT_STORE_DIR)]
    pub(crate) store_dir: String,
    /// Read the roots from this Nix binary cache (`file://`, `http://`,
    /// `https://`) instead of the local store; the manifest builds from it.
    #[arg(long, value_name = "URL")]
    pub(crate) binary_cache: Option<String>,
    /// A key (`name:base64`) trusted to sign the cache's paths; repeat for more.
    #[arg(
        long = "trusted-public-key",
        value_name = "KEY",
        requires = "binary_cache"
    )]
    pub(crate) trusted_public_keys: Vec<String>,
}

/// How to reach a registry: `push`'s target, and the registry of a
/// `[base] image = "docker://…"` that `build`, `layers` and `push` pull.
/// For `push`, credentials and `--insecure` given here are for the push
/// registry only; a base image on another host gets docker's `config.json`.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Registry")]
pub(crate) struct RegistryArgs {
    /// Credentials `USER:PASS`. Other users see them in `ps`: prefer
    /// `--username` with `--password-stdin` or `NIXLAYER_REGISTRY_PASSWORD`.
    /// Default: those, else `~/.docker/config.json`, else anonymous.
    #[arg(long, value_name = "USER:PASS", conflicts_with_all = ["username", "password_stdin"])]
    pub(crate) creds: Option<Secret>,
    /// The registry user (default: `NIXLAYER_REGISTRY_USER`); the password
    /// comes from `--password-stdin` or `NIXLAYER_REGISTRY_PASSWORD`.
    #[arg(long, value_name = "USER")]
    pub(crate) username: Option<String>,
    /// Read the password from stdin (a trailing newline is dropped), as
    /// `docker login --password-stdin`.
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// The deadline of each registry request in seconds (default:
    /// `NIXLAYER_REGISTRY_TIMEOUT`, else 60); an upload gets more in
    /// proportion to its size.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// Use plain HTTP. Without it: HTTPS; a loopback host (`localhost`,
    /// `127.0.0.0/8`, `::1`) whose port does not speak TLS gets plain HTTP.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// A PEM file of CA certificates to trust for the registry (and a base image's), besides
    /// the system's (or `SSL_CERT_FILE`) and `/etc/docker/certs.d/HOST/*.crt`.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// `nixlayer push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The manifest (`image.toml`).
    pub(crate) manifest: PathBuf,
    /// Where to push: `host[:port]/repo[:tag]`, skopeo's `docker://`
    /// before it allowed (tag default: the manifest's tag, else derived
    /// from the config digest).
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// Also push as this tag, in the same repository (repeatable; with
    /// `REF`'s tag, every one is pushed, that one first).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Layer compression.
    #[arg(long, value_name = "ALGO", default_value = "gzip", value_parser = ["none", "gzip", "zstd"])]
    pub(crate) compression: String,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub(crate) level: Option<i32>,
    /// Compression threads (default: all cores); never changes the bytes.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<NonZeroUsize>,
    /// How to reach the registry (and a `[base] image = "docker://…"`).
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// The most bytes one `PATCH` of a chunked layer upload carries
    /// (default 16 MiB; at least 4096). A dropped connection costs one
    /// chunk again.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4096..))]
    pub(crate) chunk_size: Option<u64>,
    /// How many layers upload at once, while the build goes on (default 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: Option<u16>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Do not use or update the layer cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Warn instead of failing when the entrypoint or a root's `bin/`
    /// program is an ELF file for another machine than the image platform.
    #[arg(long)]
    pub(crate) no_arch_check: bool,
    /// Add an annotation (repeatable; over the manifest's): `KEY=VALUE` or
    /// `manifest:KEY=VALUE` on the image manifest(s), `index:KEY=VALUE` on
    /// the image index of several platforms; a docker-archive has none.
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) annotation: Vec<String>,
    /// Attach an SBOM to each pushed image manifest (repeatable for both
    /// formats): through the registry's referrers API, else its referrers
    /// tag `sha256-<manifest hex>`.
    #[arg(long, value_name = "FORMAT", value_parser = SBOM_FORMATS)]
    pub(crate) sbom: Vec<String>,
}

/// A command-line value that is a secret: its `Debug` never shows it, and
/// parsing never fails (a parse error would quote it).
#[derive(Clone)]
pub(crate) struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Parses a positive number of seconds (fractions allowed) up to a day.
///
/// # Errors
/// When `text` is not such a number.
pub(crate) fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        // `1e-12` is more than 0 but no whole nanosecond: a deadline of 0.
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a number of seconds, more than 0 and at most 86400".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_creds() {
        let cli = Cli::try_parse_from([
            "nixlayer",
            "push",
            "image.toml",
            "127.0.0.1:5000/a",
            "--creds",
            "someone:s3cret-pw",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        let Command::Push(push) = cli.command else {
            panic!("push");
        };
        assert_eq!(
            push.registry.creds.map(|c| c.0).as_deref(),
            Some("someone:s3cret-pw")
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            parse_timeout("1.5"),
            Ok(std::time::Duration::from_millis(1500))
        );
        for bad in [
            "0",
            "-1",
            "NaN",
            "inf",
            "1e9",
            "",
            "soon",
            "1e-12",
            "0.0000000001",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_timeout("1e-9"),
            Ok(std::time::Duration::from_nanos(1))
        );
    }

    proptest::proptest! {
        /// `--timeout` and `NIXLAYER_REGISTRY_TIMEOUT`: any text is a
        /// deadline of more than 0 and at most a day, or refused.
        #[test]
        fn any_timeout_text_is_a_deadline_or_refused(
            text in "\\PC{0,16}",
            number in "[+-]?[0-9]{0,6}(\\.[0-9]{0,12})?([eE][+-]?[0-9]{1,3})?",
        ) {
            for text in [&text, &number] {
                if let Ok(d) = parse_timeout(text) {
                    proptest::prop_assert!(!d.is_zero() && d <= std::time::Duration::from_secs(86_400), "{}: {:?}", text, d);
                }
            }
        }
    }
}
