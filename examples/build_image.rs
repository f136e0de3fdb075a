//! Builds the image a manifest describes into a docker-archive file, through
//! the library alone (no command-line types): load the manifest, resolve it
//! with overrides and the environment, prepare, build into a sink.
//!
//!     cargo run --example build_image -- manifests/example.toml example.tar
//!
//! The same bytes as `nixlayer build MANIFEST -o OUT` (without its checks
//! that the output overwrites no input).

use std::path::PathBuf;

use nixlayer::manifest::LoadedManifest;
use nixlayer::ops::settings::{self, Environment, Overrides};
use nixlayer::ops::{self, NoReporter};
use nixlayer::sink::docker_archive::DockerArchiveWriter;
use nixlayer::sink::OutputFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(manifest), Some(out), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: build_image MANIFEST OUT".into());
    };
    let loaded = LoadedManifest::load(&PathBuf::from(manifest))?;
    // The clock, SOURCE_DATE_EPOCH and the layer cache directory, as the
    // command line reads them; a caller may fill `Environment` itself.
    let resolved =
        settings::resolve_build(&loaded, &Overrides::default(), &Environment::capture())?;
    let settings = &resolved.settings;
    let image = ops::prepare(settings)?;
    // Written to a temporary file, renamed into place once complete.
    let file = OutputFile::create(&PathBuf::from(out))?;
    let sink = DockerArchiveWriter::new(file, settings.mtime, &resolved.compress)?;
    let (summary, file) = ops::build(settings, &image, sink, &NoReporter)?;
    file.commit()?;
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(
        &mut stdout,
        format!(
            "{} {} ({} layers, {} bytes)\n",
            summary.reference,
            summary.config_digest,
            summary.layers.len(),
            summary.bytes
        )
        .as_bytes(),
    )?;
    Ok(())
}
