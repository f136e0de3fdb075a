//! The command line: arguments, settings, printing and exit codes.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error. A broken pipe while
//! streaming (`nixlayer build --stream … | head`) ends quietly with 0.

pub mod args;
pub mod diagnostics;
mod layers;
pub mod printer;
pub mod settings;

use std::error::Error as StdError;
use std::io::{self, IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser as _;

use crate::build::{self, NoReporter};
use crate::manifest::LoadedManifest;
use crate::sink::OutputFile;

use args::{BuildArgs, Cli, Command};
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
        Command::Layers(args) => layers::run(args),
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
    let image = build::prepare(&command.settings).map_err(|e| layers::locate(&loaded, e))?;
    let (summary, dest) = match &command.output {
        Some(path) => {
            let out = OutputFile::create(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("failed to create `{}`: {e}", path.display()),
                )
            })?;
            let (out, summary) =
                build::write_docker_archive(&command.settings, &image, out, &NoReporter)?;
            out.commit().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("failed to write `{}`: {e}", path.display()),
                )
            })?;
            (summary, path.display().to_string())
        }
        None => {
            // `Stdout`, not its lock: the layer writer hands it to a writer thread.
            let stdout = io::BufWriter::with_capacity(1 << 20, io::stdout());
            let (mut out, summary) =
                build::write_docker_archive(&command.settings, &image, stdout, &NoReporter)?;
            out.flush().map_err(build::Error::Write)?;
            (summary, "stdout".to_owned())
        }
    };
    printer.info(&format!(
        "built {} ({}, {} layer{}, {}) in {} → {dest}",
        summary.reference,
        summary.config_digest,
        summary.layers.len(),
        if summary.layers.len() == 1 { "" } else { "s" },
        printer::bytes(summary.bytes),
        printer::elapsed(start.elapsed()),
    ));
    Ok(())
}
