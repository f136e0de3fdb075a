//! The command line: arguments, settings, printing and exit codes.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error. A broken pipe while
//! streaming (`nixlayer build --stream … | head`) ends quietly with 0.

pub mod args;
pub mod diagnostics;
pub mod printer;
pub mod settings;

use std::error::Error as StdError;
use std::io::{self, IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser as _;

use crate::build::{self, BuildSummary, NoReporter};
use crate::manifest::{LoadedManifest, OutputFormat};
use crate::sink::OutputFile;

use args::{BuildArgs, Cli, Command, InspectArgs, MergeArgs};
use printer::Printer;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Runs the command line and maps the outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let printer = Printer::new(cli.quiet);
    let result = match &cli.command {
        Command::Build(args) => run_build(args, printer),
        Command::Merge(args) => run_merge(args, printer),
        Command::Inspect(args) => run_inspect(args, printer),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if diagnostics::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&diagnostics::render(e.as_ref()));
            if e.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run_build(args: &BuildArgs, printer: Printer) -> Result<(), BoxError> {
    let start = Instant::now();
    if args.stream && io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write an image to a terminal: pipe `--stream` into `docker load`, or use `-o FILE`".to_owned(),
        )
        .into());
    }
    let loaded = LoadedManifest::load(&args.manifest)?;
    let command = settings::resolve_build(args, &loaded, &settings::Environment::capture())?;
    for w in &command.warnings {
        printer.warn(w);
    }
    if command.format == OutputFormat::OciLayout && command.output.is_none() {
        return Err(UsageError(
            "an `oci-layout` is a directory: give it with `-o DIR`, or use `--format oci-archive --stream`".to_owned(),
        )
        .into());
    }
    let image = build::prepare(&command.settings)?;
    let settings = &command.settings;
    let compress = &command.compress;
    let (summary, dest) = match &command.output {
        Some(dir) if command.format == OutputFormat::OciLayout => {
            let summary = build::write_oci_layout(settings, &image, compress, dir, &NoReporter)?;
            (summary, dir.display().to_string())
        }
        Some(path) => {
            let out = OutputFile::create(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("failed to create `{}`: {e}", path.display()),
                )
            })?;
            let (out, summary) = write_archive(&command, &image, out)?;
            out.commit().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("failed to write `{}`: {e}", path.display()),
                )
            })?;
            (summary, path.display().to_string())
        }
        None => {
            let stdout = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            let (mut out, summary) = write_archive(&command, &image, stdout)?;
            out.flush().map_err(build::Error::Write)?;
            (summary, "stdout".to_owned())
        }
    };
    if command.json {
        printer.data(&summary_json(&summary, &command, &dest))?;
    }
    printer.info(&format!(
        "built {} ({}, {} layer{}, {}) in {} → {dest}",
        summary.reference,
        summary.config_digest,
        summary.layers.len(),
        if summary.layers.len() == 1 { "" } else { "s" },
        printer::bytes(summary.bytes),
        printer::elapsed(start.elapsed()),
    ));
    if let Some(blobs) = summary
        .blobs
        .filter(|_| command.format == OutputFormat::OciLayout)
    {
        printer.info(&format!(
            "{} blob{} written, {} already present",
            blobs.written,
            if blobs.written == 1 { "" } else { "s" },
            blobs.existing
        ));
    }
    Ok(())
}

/// Writes the archive formats (docker-archive, oci-archive) to `out`.
fn write_archive<W: Write>(
    command: &settings::BuildCommand,
    image: &build::PreparedImage,
    out: W,
) -> Result<(W, BuildSummary), build::Error> {
    let (settings, compress) = (&command.settings, &command.compress);
    if command.format == OutputFormat::OciArchive {
        build::write_oci_archive(settings, image, compress, out, &NoReporter)
    } else {
        build::write_compressed_docker_archive(settings, image, compress, out, &NoReporter)
    }
}

/// The `build --json` summary: canonical JSON, one line.
fn summary_json(summary: &BuildSummary, command: &settings::BuildCommand, dest: &str) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = summary
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "diff_id": l.diff_id.prefixed(),
                "digest": l.digest.prefixed(),
                "size": l.blob_size,
                "uncompressed_size": l.size,
                "media_type": l.media_type,
                "paths": l.paths,
            })
        })
        .collect();
    let mut doc = serde_json::json!({
        "reference": summary.reference,
        "format": command.format.name(),
        "compression": command.compress.codec.name(),
        "config_digest": summary.config_digest.prefixed(),
        "image_id": summary.config_digest.prefixed(),
        "manifest_digest": summary.manifest_digest.map(|d| d.prefixed()),
        "layers": layers,
        "bytes": summary.bytes,
        "output": dest,
    });
    if let (Some(blobs), Some(obj)) = (summary.blobs, doc.as_object_mut()) {
        obj.insert(
            "blobs".into(),
            serde_json::json!({ "written": blobs.written, "existing": blobs.existing }),
        );
    }
    crate::image::canonical_json(&doc)
}

fn run_merge(_args: &MergeArgs, _printer: Printer) -> Result<(), BoxError> {
    Err(UsageError("merge: not yet".to_owned()).into())
}

fn run_inspect(_args: &InspectArgs, _printer: Printer) -> Result<(), BoxError> {
    Err(UsageError("inspect: not yet".to_owned()).into())
}
