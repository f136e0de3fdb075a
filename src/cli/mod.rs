//! The command line: arguments, settings, printing and exit codes.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (also an output that
//! would overwrite an input). A closed pipe exits 141, the status a shell
//! reports for a program killed by SIGPIPE (`set -o pipefail` sees it):
//! when an image was being written (`build --stream … | head -c 100`, or
//! `-o` naming a FIFO whose reader went away) stderr says the reader got a
//! cut-short image; a listing cut short by `| head` (`layers`, `inspect`,
//! `schema`) ends silently, as such programs do. SIGINT, SIGTERM and SIGHUP
//! remove every temporary file and staged layout, then end the process by
//! the same signal (the shell reports 130, 143, 129): see
//! [`nixlayer::cleanup`].

pub(crate) mod args;
pub(crate) mod diagnostics;
mod diff;
mod init;
mod layers;
mod progress;
mod sbom;
pub(crate) mod printer;

use std::error::Error as StdError;
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser as _;

use nixlayer::archive::ImageArchive;
use nixlayer::closure::{ClosureGraph, Source};
use nixlayer::codec::Compression;
use nixlayer::layer::customisation::FileData;
use nixlayer::manifest::{LoadedManifest, OutputFormat};
use nixlayer::ops::merge;
use nixlayer::ops::{self, settings, BuildSettings, BuildSummary};
use nixlayer::sink::docker_archive::DockerArchiveWriter;
use nixlayer::sink::oci_archive::OciArchiveWriter;
use nixlayer::sink::oci_layout::OciLayout;
use nixlayer::sink::{self, OutputFile};

use args::{BuildArgs, Cli, Command, InspectArgs, MergeArgs, PushArgs};
use printer::Printer;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// A push that failed, named by where it was going as the reference was
/// resolved: `alpine` is `docker.io/library/alpine`, which the registry's
/// URLs in the causes (`registry-1.docker.io`) do not make plain.
#[derive(Debug, thiserror::Error)]
#[error("push to `{target}` failed")]
struct PushFailed {
    target: String,
    #[source]
    source: ops::Error,
}

impl PushFailed {
    /// A closure wrapping an error of the push to `target`.
    fn to(target: &nixlayer::sink::registry::Reference) -> impl Fn(ops::Error) -> Self + '_ {
        move |source| Self {
            target: match &target.tag {
                Some(tag) => format!("{}/{}:{tag}", target.host, target.repository),
                None => format!("{}/{}", target.host, target.repository),
            },
            source,
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to 8 per
/// core), and the compressor threads of OCI outputs each keep theirs full
/// of freed job buffers: a cold zstd layout build peaked at 116–140 MB
/// with the default and 81–88 MB with two arenas, at the same speed. Two
/// suffice for the pipeline's few busy threads.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs the command line and maps the outcome to an exit code.
#[must_use]
pub(crate) fn main() -> ExitCode {
    // Without the handlers a signal would still end the process, only
    // leaving its temporary files behind: nothing to refuse to run for.
    let _ = nixlayer::cleanup::install_signal_handlers();
    limit_malloc_arenas();
    let mut cli = match Cli::try_parse() {
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
    if let Err(e) = dash_means_stdout(&mut cli.command) {
        printer.error(&diagnostics::render(&e));
        return ExitCode::from(2);
    }
    let result = match &cli.command {
        Command::Build(args) => run_build(args, printer),
        Command::Layers(args) => layers::run(args, printer),
        Command::Merge(args) => run_merge(args, printer),
        Command::Inspect(args) => run_inspect(args, printer),
        // Reads no manifest and no store (STYLE 3).
        Command::Schema => run_schema(printer),
        Command::Init(args) => init::run(args, printer),
        Command::Push(args) => run_push(args, printer),
        Command::Diff(args) => diff::run(args, printer),
        Command::Sbom(args) => sbom::run(args, printer),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<diagnostics::PipeClosed>() => {
            printer.error(&diagnostics::render(e.as_ref()));
            ExitCode::from(diagnostics::PIPE_CLOSED_STATUS)
        }
        Err(e) if diagnostics::is_broken_pipe(e.as_ref()) => {
            ExitCode::from(diagnostics::PIPE_CLOSED_STATUS)
        }
        Err(e) => {
            printer.error(&diagnostics::render(e.as_ref()));
            let bad_flag = e
                .downcast_ref::<nixlayer::manifest::Error>()
                .is_some_and(nixlayer::manifest::Error::is_usage);
            if e.is::<UsageError>() || bad_flag {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `-o -` (and `layers --html -`) is stdout, as `tar -f -` and `curl -o -`
/// have it, not a file named `-` in the working directory: `build -o -` is
/// `build --stream`; `merge`, `layers --html` and `sbom` write `/dev/stdout`
/// in place (a device or FIFO), as they would with that path. `--json`,
/// which prints its summary on stdout, cannot share it with the image.
fn dash_means_stdout(command: &mut Command) -> Result<(), UsageError> {
    let dash = |p: &Option<PathBuf>| p.as_deref() == Some(Path::new("-"));
    let stdout = || Some(PathBuf::from("/dev/stdout"));
    // `merge -o - --json` is refused naming the `-` the user gave, not the
    // `/dev/stdout` it stands for.
    if let Command::Merge(args) = command {
        if args.json && args.output == Path::new("-") {
            return Err(json_on_stdout(Path::new("-")));
        }
    }
    match command {
        Command::Build(args) if dash(&args.output) => {
            args.output = None;
            args.stream = true;
        }
        Command::Merge(args) if args.output == Path::new("-") => {
            args.output = PathBuf::from("/dev/stdout");
        }
        Command::Layers(args) if dash(&args.html) => args.html = stdout(),
        Command::Sbom(args) if dash(&args.output) => args.output = None,
        _ => {}
    }
    match command {
        Command::Build(args) if args.json && args.stream => Err(json_on_stdout(Path::new("-"))),
        Command::Build(BuildArgs {
            output: Some(path),
            json: true,
            ..
        }) => refuse_json_onto_stdout(path),
        Command::Merge(args) if args.json => refuse_json_onto_stdout(&args.output),
        _ => Ok(()),
    }
}

/// Refuses `--json` when `-o PATH` is the file stdout is (`/dev/stdout`,
/// `/proc/self/fd/1`, or the file stdout is redirected to): the summary
/// would land inside or after the image.
fn refuse_json_onto_stdout(path: &Path) -> Result<(), UsageError> {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(out), Ok(stdout)) = (std::fs::metadata(path), rustix::fs::fstat(io::stdout())) else {
        return Ok(());
    };
    // `st_dev` and `st_ino` are u64 on the 64-bit Linux targets, wider or
    // signed elsewhere; compare them as u64 either way.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let same = out.dev() == stdout.st_dev as u64 && out.ino() == stdout.st_ino as u64;
    if same {
        Err(json_on_stdout(path))
    } else {
        Ok(())
    }
}

fn json_on_stdout(path: &Path) -> UsageError {
    UsageError(format!(
        "`--json` prints the summary on stdout, where `-o {}` writes the image: write the image to a file, or drop `--json`",
        path.display()
    ))
}

/// Refuses `--annotation` on a build of one image into a docker-archive or
/// rootfs: neither has a place for annotations, and a flag the user typed
/// must not vanish silently (the manifest's `[annotations]` may serve
/// other outputs, so those are left alone).
fn refuse_annotations_without_place(
    args: &BuildArgs,
    format: OutputFormat,
) -> Result<(), UsageError> {
    let Some(first) = args.annotation.first() else {
        return Ok(());
    };
    if matches!(format, OutputFormat::OciLayout | OutputFormat::OciArchive) {
        return Ok(());
    }
    Err(UsageError(format!(
        "`--annotation {first}`: a `{}` has no place for annotations and would drop it; they are kept by `--format oci-layout`, `--format oci-archive` and `nixlayer push` (use `[config] Labels` for metadata a docker-archive keeps)",
        format.name()
    )))
}

/// Warns about each `--annotation index:…` of a build or push of one
/// image: only an image index of several platforms has a place for it
/// (buildx likewise writes index annotations only with an index), so it
/// is not written anywhere.
fn warn_index_annotations_unused(flags: &[String], printer: Printer) {
    for flag in flags.iter().filter(|f| f.starts_with("index:")) {
        printer.warn(&format!(
            "`--annotation {flag}` is not written: one image has no image index (`index:` annotations go on the index of several `[[platforms]]`; drop `index:` to annotate the image manifest)"
        ));
    }
}

/// The flags of `build` that change the manifest's values.
fn overrides(args: &BuildArgs) -> settings::Overrides {
    let mut o = settings::Overrides::default();
    o.tag.clone_from(&args.tag);
    o.format.clone_from(&args.format);
    o.compression.clone_from(&args.compression);
    o.level = args.level;
    o.threads = args.threads;
    o.no_cache = args.no_cache;
    o.annotations.clone_from(&args.annotation);
    o
}

/// The architecture guard ([`ops::arch`]): a program built for another
/// machine fails the build before any output exists, or with
/// `--no-arch-check` is a warning.
/// Refuses an image whose `config.User` names a user or group its files
/// cannot resolve (see [`ops::arch::unresolvable_user`]).
fn user_guard(settings: &ops::BuildSettings, image: &ops::PreparedImage) -> Result<(), BoxError> {
    match ops::arch::unresolvable_user(settings, image)? {
        Some((kind, name, file)) => Err(format!(
            "`config.User` names the {kind} `{name}`, but the image has no `{file}` to find it in: docker and podman would refuse to start it; define it in `[[users]]`/`[[groups]]`, or give a numeric id (`User = \"1000\"`, `\"1000:1000\"`)"
        )
        .into()),
        None => Ok(()),
    }
}

/// Plans the image `settings` make and holds it to the guards every
/// command that writes an image applies before any output exists: the
/// `config.User` (unless `check_user` is false: a rootfs has no config)
/// and the architecture; then warns of a deep closure. A planning line
/// shows on a terminal meanwhile.
fn prepare_guarded(
    settings: &ops::BuildSettings,
    loaded: &LoadedManifest,
    check_user: bool,
    no_arch_check: bool,
    printer: Printer,
) -> Result<ops::PreparedImage, BoxError> {
    let mut planning = progress::Planning::start(nar_meter(settings), printer.is_quiet());
    let image = ops::prepare(settings).map_err(|e| layers::locate(loaded, e))?;
    if check_user {
        user_guard(settings, &image)?;
    }
    arch_guard(settings, &image, no_arch_check, printer, &mut planning)?;
    if let Some(w) = image.depth_warning() {
        printer.warn(&w);
    }
    Ok(image)
}

/// `planning` is cleared once the programs are read, before any warning.
fn arch_guard(
    settings: &ops::BuildSettings,
    image: &ops::PreparedImage,
    warn_only: bool,
    printer: Printer,
    planning: &mut progress::Planning,
) -> Result<(), BoxError> {
    let mismatches = ops::arch::check(settings, image)?;
    planning.clear();
    if warn_only {
        for m in &mismatches {
            printer.warn(&m.to_string());
        }
        return Ok(());
    }
    let Some(first) = mismatches.first() else {
        return Ok(());
    };
    let more = match mismatches.len() - 1 {
        0 => String::new(),
        1 => " (and 1 more program)".to_owned(),
        n => format!(" (and {n} more programs)"),
    };
    Err(format!(
        "{first}{more}: it would fail with \"exec format error\"; set `architecture` in the manifest, or pass `--no-arch-check` to build anyway"
    )
    .into())
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
    let env = settings::Environment::capture();
    let access = RegistryAccess::new(
        &args.registry,
        &PushEnv::capture(),
        None,
        &mut io::stdin().lock(),
    )?;
    let (loaded, mut command) = match choose_platform(args, &loaded, &env)? {
        Chosen::One(loaded, command) => (*loaded, *command),
        Chosen::All(mut all) => {
            for (_, command) in &mut all {
                access.reach_base(&mut command.settings)?;
                command.settings.content.base_any_platform = args.no_arch_check;
            }
            return run_build_platforms(args, all, printer, start);
        }
    };
    let oci = matches!(
        command.format,
        OutputFormat::OciLayout | OutputFormat::OciArchive
    );
    refuse_annotations_without_place(args, command.format)?;
    warn_index_annotations_unused(&args.annotation, printer);
    // OCI outputs carry their SBOMs; a docker-archive or rootfs file gets
    // them beside it.
    let sbom_formats = sbom::formats(&args.sbom);
    let beside = if oci {
        command.settings.sbom.clone_from(&sbom_formats);
        Vec::new()
    } else {
        sbom_formats
    };
    if !beside.is_empty() && args.output.is_none() {
        return Err(UsageError(format!(
            "`--sbom` with a streamed `{}` has nowhere to go: write the image with `-o FILE` (the SBOM goes beside it), or print it with `nixlayer sbom`",
            command.format.name()
        ))
        .into());
    }
    access.reach_base(&mut command.settings)?;
    command.settings.content.base_any_platform = args.no_arch_check;
    for w in &command.warnings {
        printer.warn(w);
    }
    let output = &args.output;
    if command.format == OutputFormat::OciLayout && output.is_none() {
        return Err(UsageError(
            "an `oci-layout` is a directory: give it with `-o DIR`, or use `--format oci-archive --stream`".to_owned(),
        )
        .into());
    }
    if command.format == OutputFormat::Rootfs && command.compress.codec != Compression::None {
        return Err(UsageError(
            "`--format rootfs` is written uncompressed: drop the compression, and pipe `--stream` through gzip or zstd if needed".to_owned(),
        )
        .into());
    }
    let layout = command.format == OutputFormat::OciLayout;
    // The SBOM files beside a docker-archive or rootfs file are outputs
    // too: held to the same checks as `-o`, and opened before the image is
    // written, so a bad one fails the build before any output exists.
    let beside: Vec<(nixlayer::sbom::SbomFormat, PathBuf)> = match output {
        Some(output) => beside
            .iter()
            .map(|&f| (f, sbom::beside_path(output, f)))
            .collect(),
        None => Vec::new(),
    };
    if let Some(output) = output {
        let inputs = build_inputs(&args.manifest, &command.settings);
        refuse_overwriting_inputs("-o", output, &inputs, layout)?;
        for (_, path) in &beside {
            refuse_overwriting_inputs("--sbom", path, &inputs, false)?;
        }
    }
    // A rootfs has no config, so no `User` to resolve.
    let image = prepare_guarded(
        &command.settings,
        &loaded,
        command.format != OutputFormat::Rootfs,
        args.no_arch_check,
        printer,
    )?;
    if let Some(output) = output {
        refuse_output_in_closure("-o", output, &command.settings, &image.closure)?;
        for (_, path) in &beside {
            refuse_output_in_closure("--sbom", path, &command.settings, &image.closure)?;
        }
    }
    let beside = beside
        .into_iter()
        .map(|(f, path)| Ok((f, path.clone(), OutputFile::create(&path)?)))
        .collect::<Result<Vec<_>, BoxError>>()?;
    if command.format == OutputFormat::Rootfs {
        write_rootfs(args, &command, &image, printer, start)?;
        return sboms_beside(&command.settings, &image, beside, printer);
    }
    let settings = &command.settings;
    let compress = &command.compress;
    let progress = progress::Progress::new(
        layer_sizes(&image),
        printer.is_quiet(),
        false,
        nar_meter(settings),
    );
    let (summary, dest) = match output {
        Some(dir) if layout => {
            let layout = OciLayout::create(dir)?.compressed(*compress);
            let (summary, ()) = ops::build(settings, &image, layout, &progress)?;
            (summary, dir.display().to_string())
        }
        Some(path) => {
            let shown = format!("`{}`", path.display());
            let written = OutputFile::create(path)
                .map_err(BoxError::from)
                .and_then(|out| {
                    let (out, summary) = write_archive(&command, &image, out, &progress)?;
                    out.commit()?;
                    Ok(summary)
                });
            (on_closed_pipe(written, &shown)?, path.display().to_string())
        }
        None => {
            // `Stdout`, not its lock: the layer writer hands it to a writer thread.
            widen_stdout_pipe();
            let stdout = io::BufWriter::with_capacity(1 << 20, NamedStdout(io::stdout()));
            let written = write_archive(&command, &image, stdout, &progress).and_then(
                |(mut out, summary)| {
                    out.flush().map_err(ops::Error::Write)?;
                    Ok(summary)
                },
            );
            (
                on_closed_pipe(written.map_err(BoxError::from), "stdout")?,
                "stdout".to_owned(),
            )
        }
    };
    progress.clear();
    if args.json {
        printer.data(&summary_json(&summary, &command, &dest))?;
    }
    // One summary line; a layout also says what it had to write.
    let blobs = summary
        .blobs
        .filter(|_| command.format == OutputFormat::OciLayout)
        .map(|b| {
            format!(
                "; {} blob{} written, {} already present ({} layer{} from the cache)",
                b.written,
                plural(b.written),
                b.existing,
                b.layers_cached,
                plural(b.layers_cached),
            )
        })
        .unwrap_or_default();
    printer.info(&format!(
        "built {} ({}, {} layer{}, {}) in {} → {dest}{blobs}",
        summary.reference,
        summary.config_digest,
        summary.layers.len(),
        plural(summary.layers.len()),
        printer::bytes(summary.bytes),
        printer::elapsed(start.elapsed()),
    ));
    report_attached(&summary, "", printer);
    sboms_beside(&command.settings, &image, beside, printer)
}

/// One line per SBOM `build` attached to an image manifest of an OCI
/// output; `platform` (` (arm64)`) tells the images of an index apart.
fn report_attached(summary: &BuildSummary, platform: &str, printer: Printer) {
    for s in &summary.sboms {
        printer.info(&format!(
            "attached the {} SBOM ({}) to {}{platform}",
            s.format.name(),
            s.manifest.digest,
            summary
                .manifest_digest
                .map_or_else(String::new, |d| d.to_string()),
        ));
    }
}

/// `build --sbom` of a docker-archive or rootfs file: the SBOMs beside it.
fn sboms_beside(
    settings: &BuildSettings,
    image: &ops::PreparedImage,
    opened: Vec<(nixlayer::sbom::SbomFormat, PathBuf, OutputFile)>,
    printer: Printer,
) -> Result<(), BoxError> {
    if opened.is_empty() {
        return Ok(());
    }
    for path in sbom::write_beside(opened, settings, image)? {
        printer.info(&format!("wrote the SBOM → {}", path.display()));
    }
    Ok(())
}

/// `build --format rootfs`: the merged filesystem to `-o FILE` or stdout,
/// the layers spooled next to the output (or in the temporary directory).
fn write_rootfs(
    args: &BuildArgs,
    command: &settings::ResolvedBuild,
    image: &ops::PreparedImage,
    printer: Printer,
    start: Instant,
) -> Result<(), BoxError> {
    let settings = &command.settings;
    let progress = progress::Progress::new(
        layer_sizes(image),
        printer.is_quiet(),
        false,
        nar_meter(settings),
    );
    let (summary, dest) = match &args.output {
        Some(path) => {
            let shown = format!("`{}`", path.display());
            let spool_dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let written = OutputFile::create(path)
                .map_err(BoxError::from)
                .and_then(|out| {
                    let (out, summary) =
                        ops::rootfs::export_rootfs(settings, image, &spool_dir, out, &progress)?;
                    out.commit()?;
                    Ok(summary)
                });
            (on_closed_pipe(written, &shown)?, path.display().to_string())
        }
        None => {
            let stdout = io::BufWriter::with_capacity(1 << 20, NamedStdout(io::stdout().lock()));
            let written = ops::rootfs::export_rootfs(
                settings,
                image,
                &std::env::temp_dir(),
                stdout,
                &progress,
            )
            .and_then(|(mut out, summary)| {
                out.flush().map_err(ops::Error::Write)?;
                Ok(summary)
            });
            (
                on_closed_pipe(written.map_err(BoxError::from), "stdout")?,
                "stdout".to_owned(),
            )
        }
    };
    progress.clear();
    if args.json {
        let doc = serde_json::json!({
            "format": command.format.name(),
            "layers": summary.layers,
            "entries": summary.entries,
            "bytes": summary.bytes,
            "output": dest,
        });
        printer.data(doc.to_string().as_bytes())?;
    }
    printer.info(&format!(
        "exported the merged filesystem of {} layer{} ({} entries, {}) in {} → {dest}",
        summary.layers,
        plural(summary.layers),
        summary.entries,
        printer::bytes(summary.bytes),
        printer::elapsed(start.elapsed()),
    ));
    Ok(())
}

/// `result`, with a closed pipe named as what it is: the reader of
/// `reader` (stdout, a FIFO) stopped before the image was complete.
/// Stdout for an image, whose write errors say they are stdout's: the
/// layer writer names the layer it was writing, and without this a full
/// disk behind `--stream > file` read as a problem of that store path.
/// The error kind is kept, so a closed pipe is still recognised.
struct NamedStdout<W>(W);

/// A write to stdout failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to write the image to stdout")]
struct StdoutWriteError(#[source] io::Error);

impl<W: Write> NamedStdout<W> {
    fn named(e: io::Error) -> io::Error {
        io::Error::new(e.kind(), StdoutWriteError(e))
    }
}

impl<W: Write> Write for NamedStdout<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(Self::named)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).map_err(Self::named)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(Self::named)
    }
}

fn on_closed_pipe<T>(result: Result<T, BoxError>, reader: &str) -> Result<T, BoxError> {
    result.map_err(|e| {
        if diagnostics::is_broken_pipe(e.as_ref()) {
            diagnostics::PipeClosed(reader.to_owned()).into()
        } else {
            e
        }
    })
}

/// The files a build reads, each with what it is, so that no output
/// overwrites one: the manifest, the closure source, the base image and
/// the `customisation.files` sources.
fn build_inputs<'a>(manifest: &'a Path, settings: &'a BuildSettings) -> Vec<(String, &'a Path)> {
    let mut inputs = vec![("the manifest".to_owned(), manifest)];
    match &settings.source {
        Source::Registration(p) | Source::Graph(p) | Source::PathInfo(p) | Source::Dot(p) => {
            inputs.push(("the closure source".to_owned(), p.as_path()));
        }
        _ => {}
    }
    if let Some(base) = &settings.content.base {
        inputs.push(("the base image".to_owned(), base.as_path()));
    }
    for file in &settings.content.files {
        if let FileData::Disk(p) = &file.data {
            inputs.push((format!("the source of `{}`", file.path), p.as_path()));
        }
    }
    inputs
}

/// Refuses an output (`flag PATH`) that is one of `inputs` or a file in
/// one (compared by device and inode, so links and `..` do not hide it);
/// `layout`: the output is an OCI layout directory.
fn refuse_overwriting_inputs(
    flag: &str,
    output: &Path,
    inputs: &[(String, &Path)],
    layout: bool,
) -> Result<(), UsageError> {
    for (what, input) in inputs {
        let clash = if layout {
            sink::layout_would_overwrite(output, input)
        } else {
            sink::would_overwrite(output, input)
        };
        if clash {
            return Err(UsageError(format!(
                "`{flag} {}` would overwrite {what} `{}`: write the output elsewhere",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Refuses an output inside a store path of the image's closure (or the
/// store directory itself), which the build reads.
fn refuse_output_in_closure(
    flag: &str,
    output: &Path,
    settings: &BuildSettings,
    closure: &ClosureGraph,
) -> Result<(), UsageError> {
    // A binary cache reads no store on this machine.
    let Some(location) = settings.store.local() else {
        return Ok(());
    };
    let store_dir = location.dir.as_str();
    let Ok(store) = std::fs::canonicalize(location.disk_path(store_dir)) else {
        return Ok(());
    };
    // Where the output is or will be, through links.
    let resolved = std::fs::canonicalize(output).ok().or_else(|| {
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Some(
            std::fs::canonicalize(parent)
                .ok()?
                .join(output.file_name()?),
        )
    });
    let Some(rest) = resolved
        .as_deref()
        .and_then(|r| r.strip_prefix(&store).ok())
    else {
        return Ok(());
    };
    let inside = match rest.components().next() {
        None => Some(store_dir.to_owned()),
        Some(first) => {
            let path = format!("{store_dir}/{}", first.as_os_str().to_string_lossy());
            closure.get(&path).map(|_| path)
        }
    };
    match inside {
        Some(path) => Err(UsageError(format!(
            "`{flag} {}` is inside `{path}`, which the image is built from: write the output elsewhere",
            output.display()
        ))),
        None => Ok(()),
    }
}

/// Writes the archive formats (docker-archive, oci-archive) to `out`.
fn write_archive<W: Write + Send>(
    command: &settings::ResolvedBuild,
    image: &ops::PreparedImage,
    out: W,
    reporter: &dyn ops::Reporter,
) -> Result<(W, BuildSummary), ops::Error> {
    let (settings, compress) = (&command.settings, &command.compress);
    let (summary, out) = if command.format == OutputFormat::OciArchive {
        let sink =
            OciArchiveWriter::new(out, settings.mtime, *compress).map_err(ops::Error::Write)?;
        ops::build(settings, image, sink, reporter)?
    } else {
        let sink =
            DockerArchiveWriter::new(out, settings.mtime, compress).map_err(ops::Error::Write)?;
        ops::build(settings, image, sink, reporter)?
    };
    Ok((out, summary))
}

/// The `build --json` summary: canonical JSON, one line.
fn summary_json(summary: &BuildSummary, command: &settings::ResolvedBuild, dest: &str) -> Vec<u8> {
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
    if let (false, Some(obj)) = (summary.sboms.is_empty(), doc.as_object_mut()) {
        let sboms: Vec<serde_json::Value> = summary
            .sboms
            .iter()
            .map(|s| {
                serde_json::json!({
                    "format": s.format.name(),
                    "artifact_manifest": s.manifest.digest.prefixed(),
                    "digest": s.blob.digest.prefixed(),
                    "size": s.blob.size,
                })
            })
            .collect();
        obj.insert("sboms".into(), sboms.into());
    }
    if let (Some(blobs), Some(obj)) = (summary.blobs, doc.as_object_mut()) {
        obj.insert(
            "blobs".into(),
            serde_json::json!({
                "written": blobs.written,
                "existing": blobs.existing,
                "layers_cached": blobs.layers_cached,
            }),
        );
    }
    nixlayer::oci::canonical_json(&doc)
}

fn run_merge(args: &MergeArgs, printer: Printer) -> Result<(), BoxError> {
    let start = Instant::now();
    let format = match args.format.as_deref() {
        None | Some("docker-archive") => merge::MergeFormat::DockerArchive,
        Some("oci-archive") => merge::MergeFormat::OciArchive,
        Some(_) => merge::MergeFormat::OciLayout,
    };
    let platform = platform_option(args.platform.as_deref())?;
    if format != merge::MergeFormat::DockerArchive
        && (args.compression.is_some() || args.level.is_some())
    {
        return Err(UsageError(
            "`--compression` and `--level` compress a docker-archive output; OCI outputs keep every blob as stored".to_owned(),
        )
        .into());
    }
    let named: Vec<(String, &Path)> = args
        .inputs
        .iter()
        .map(|p| ("an input".to_owned(), p.as_path()))
        .collect();
    let layout = format == merge::MergeFormat::OciLayout;
    refuse_overwriting_inputs("-o", &args.output, &named, layout)?;
    let inputs = args
        .inputs
        .iter()
        .map(|p| ImageArchive::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let codec = match &args.compression {
        Some(name) => nixlayer::codec::Compression::from_name(name)
            .ok_or_else(|| UsageError(format!("unknown compression `{name}`")))?,
        None if format == merge::MergeFormat::DockerArchive => merge::default_codec(&inputs),
        None => Compression::None,
    };
    let compress = settings::resolve_compress(codec, args.level, None, args.threads)?;
    let mtime = settings::Environment::capture().source_date_epoch_or_default()?;
    let path = &args.output;
    let legacy = format == merge::MergeFormat::DockerArchive
        && inputs
            .iter()
            .all(|i| i.format() == nixlayer::archive::Format::DockerArchive);
    let options = merge::MergeOptions {
        platform,
        mtime,
        compress,
    };
    let unit = if legacy { "member" } else { "blob" };
    let summary = if layout {
        let sink = merge::MergeSink::<io::Sink>::OciLayout(Box::new(OciLayout::create(path)?));
        merge::merge_images(&inputs, &options, sink)?.1
    } else {
        let out = OutputFile::create(path)?;
        let merged = if legacy {
            // nixpkgs' mergeImages, member by member, as before.
            merge::merge(&inputs, mtime, &compress, out)
                .map(|(out, summary)| (Some(out), summary))
                .map_err(BoxError::from)
        } else {
            let sink = if format == merge::MergeFormat::OciArchive {
                merge::MergeSink::OciArchive(out)
            } else {
                merge::MergeSink::DockerArchive(out)
            };
            merge::merge_images(&inputs, &options, sink).map_err(BoxError::from)
        };
        let merged = merged.and_then(|(out, summary)| {
            if let Some(out) = out {
                out.commit()?;
            }
            Ok(summary)
        });
        // `-o -` writes through `/dev/stdout`: its reader is stdout.
        let reader = if path == Path::new("/dev/stdout") {
            "stdout".to_owned()
        } else {
            format!("`{}`", path.display())
        };
        on_closed_pipe(merged, &reader)?
    };
    if args.json {
        let docker = format == merge::MergeFormat::DockerArchive;
        printer.data(&merge_summary_json(
            &summary,
            format,
            docker.then_some(codec),
            unit,
            &path.display().to_string(),
        ))?;
    }
    let untagged = if summary.tags.is_empty() {
        "untagged".to_owned()
    } else {
        summary.tags.join(", ")
    };
    printer.info(&format!(
        "merged {} image{} ({untagged}; {} {unit}{} written, {} shared) in {} → {}",
        summary.images,
        if summary.images == 1 { "" } else { "s" },
        summary.members,
        if summary.members == 1 { "" } else { "s" },
        summary.duplicates,
        printer::elapsed(start.elapsed()),
        path.display(),
    ));
    Ok(())
}

/// The `merge --json` summary: canonical JSON, one line, as `build
/// --json`'s. `compression` is the docker-archive output's (OCI outputs
/// keep every blob as stored: `null`); `unit` says what `written` and
/// `shared` count (`member` of a member-by-member docker-archive merge,
/// else `blob`).
fn merge_summary_json(
    summary: &merge::MergeSummary,
    format: merge::MergeFormat,
    compression: Option<Compression>,
    unit: &str,
    dest: &str,
) -> Vec<u8> {
    let format = match format {
        merge::MergeFormat::OciArchive => "oci-archive",
        merge::MergeFormat::OciLayout => "oci-layout",
        _ => "docker-archive",
    };
    let doc = serde_json::json!({
        "format": format,
        "compression": compression.map(Compression::name),
        "images": summary.images,
        "tags": summary.tags,
        "unit": unit,
        "written": summary.members,
        "shared": summary.duplicates,
        "bytes": summary.bytes,
        "output": dest,
    });
    nixlayer::oci::canonical_json(&doc)
}

fn run_inspect(args: &InspectArgs, printer: Printer) -> Result<(), BoxError> {
    // `-`: an archive on stdin, as `docker load` and skopeo take it.
    let archive = if args.image == Path::new("-") {
        ImageArchive::open_stdin()?
    } else {
        ImageArchive::open(&args.image)?
    };
    let mut images = Vec::new();
    for image in archive.images() {
        let mut layers = Vec::new();
        for layer in &image.layers {
            // Every layer is read: its digest checked (OCI) or computed
            // (docker-archive), and an uncompressed one held to its diff_id.
            let digest = archive.verify_blob(layer)?.digest;
            layers.push(serde_json::json!({
                "digest": digest.prefixed(),
                "diff_id": layer.diff_id.map(|d| d.prefixed()),
                "size": layer.size,
                "media_type": layer.media_type,
            }));
        }
        let config = image.config_value().unwrap_or(serde_json::Value::Null);
        let (tags, ref_name) = inspect_names(&archive, image);
        images.push(serde_json::json!({
            "tags": tags,
            "ref_name": ref_name,
            "config_digest": image.config_digest.prefixed(),
            "manifest_digest": image.manifest_digest.map(|d| d.prefixed()),
            "index_digest": image.index_digest.map(|d| d.prefixed()),
            "config": config,
            "layers": layers,
        }));
    }
    let doc = serde_json::json!({
        "path": args.image.display().to_string(),
        "format": archive.format().name(),
        "compression": archive.compression().name(),
        "images": images,
    });
    if args.json {
        printer.data(&nixlayer::oci::canonical_json(&doc))?;
    } else {
        printer.data(diagnostics::printable(&inspect_text(&doc)).as_bytes())?;
    }
    Ok(())
}

/// `nixlayer schema`: the manifest's JSON Schema, pretty-printed (sorted
/// keys, so the same bytes every time).
fn run_schema(printer: Printer) -> Result<(), BoxError> {
    let text = serde_json::to_string_pretty(&nixlayer::manifest::json_schema())?;
    printer.data(text.as_bytes())?;
    Ok(())
}

/// The names `inspect` shows for `image`, and for an OCI image its
/// `org.opencontainers.image.ref.name` apart. A docker-archive's
/// `RepoTags` are full references; an OCI `index.json` entry's ref name is
/// a bare tag (`0.3`, what `oci:DIR:0.3` takes) and its
/// `io.containerd.image.name` the full reference docker and containerd
/// show (`name:0.3`), so that one is shown when the entry has it.
fn inspect_names(
    archive: &ImageArchive,
    image: &nixlayer::archive::Image,
) -> (Vec<String>, Option<String>) {
    if archive.format() == nixlayer::archive::Format::DockerArchive {
        return (image.tags.clone(), None);
    }
    let full = |descriptor: Option<&serde_json::Value>| {
        descriptor?
            .get("annotations")?
            .get(nixlayer::oci::CONTAINERD_NAME)?
            .as_str()
            .map(str::to_owned)
    };
    // The image's own descriptor first (it may sit in an index under the
    // `index.json` entry), then the entry's.
    let named = full(image.descriptor.as_ref())
        .or_else(|| full(archive.entries().get(image.entry).map(|e| &e.descriptor)));
    let ref_name = image.tags.first().cloned();
    match named {
        Some(named) => (vec![named], ref_name),
        None => (image.tags.clone(), ref_name),
    }
}

/// The human form of `inspect`'s JSON.
fn inspect_text(doc: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    // The file's compression (a layout, a directory, has none) and, apart,
    // how its layers are stored: a zstd layout is no "compression none".
    let mut layer_kinds: Vec<&str> = Vec::new();
    let layers = doc["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["layers"].as_array().into_iter().flatten());
    for layer in layers {
        let kind = match layer["media_type"].as_str().unwrap_or("") {
            m if m.ends_with("+gzip") || m.ends_with(".tar.gzip") => "gzip",
            m if m.ends_with("+zstd") => "zstd",
            m if m.ends_with("+xz") => "xz",
            _ => "uncompressed",
        };
        if !layer_kinds.contains(&kind) {
            layer_kinds.push(kind);
        }
    }
    let file = if doc["format"] == "oci-layout" {
        String::new()
    } else {
        format!(", compression {}", s(&doc["compression"]))
    };
    let layer_kinds = if layer_kinds.is_empty() {
        String::new()
    } else {
        format!(", layers {}", layer_kinds.join(" and "))
    };
    let mut out = format!(
        "{}: {}{file}{layer_kinds}\n",
        s(&doc["path"]),
        s(&doc["format"]),
    );
    for (i, image) in doc["images"].as_array().into_iter().flatten().enumerate() {
        let tags: Vec<String> = image["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        // skopeo and crane pick an OCI image by its ref name
        // (`oci:DIR:TAG`): shown too when the name shown is another.
        let ref_name = image["ref_name"]
            .as_str()
            .filter(|r| !tags.iter().any(|t| t == r))
            .map(|r| format!(" (ref.name `{r}`)"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\nimage {}: {}{ref_name}",
            i + 1,
            if tags.is_empty() {
                "(untagged)".to_owned()
            } else {
                tags.join(", ")
            }
        );
        let config = &image["config"];
        let _ = writeln!(out, "  config    {}", s(&image["config_digest"]));
        if image["manifest_digest"].is_string() {
            let _ = writeln!(out, "  manifest  {}", s(&image["manifest_digest"]));
        }
        if image["index_digest"].is_string() {
            let _ = writeln!(out, "  index     {}", s(&image["index_digest"]));
        }
        let variant = config["variant"]
            .as_str()
            .map(|v| format!("/{v}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  platform  {}/{}{variant}   created {}",
            s(&config["os"]),
            s(&config["architecture"]),
            s(&config["created"])
        );
        for key in ["Entrypoint", "Cmd", "Env", "WorkingDir", "User"] {
            let v = &config["config"][key];
            if !v.is_null() {
                let _ = writeln!(out, "  {key:<9} {v}");
            }
        }
        let layers = image["layers"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(out, "  layers ({}):", layers.len());
        for (n, l) in layers.iter().enumerate() {
            let _ = writeln!(
                out,
                "    {:>3}  {}  {:>10}  {}",
                n + 1,
                s(&l["digest"]),
                printer::bytes(l["size"].as_u64().unwrap_or(0)),
                s(&l["media_type"])
            );
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// A binary cache's downloads, for the progress bar.
fn nar_meter(
    settings: &ops::BuildSettings,
) -> Option<std::sync::Arc<nixlayer::store::binary_cache::NarMeter>> {
    settings
        .store
        .binary_cache()
        .map(nixlayer::store::BinaryCache::meter)
}

/// The tar size of each layer, for the progress bar.
fn layer_sizes(image: &ops::PreparedImage) -> Vec<u64> {
    image.layers.iter().map(|l| l.size).collect()
}

fn run_push(args: &PushArgs, printer: Printer) -> Result<(), BoxError> {
    use nixlayer::sink::registry::{ClientOptions, Reference};
    let start = Instant::now();
    // skopeo's transport prefix, as a pipeline moving from `skopeo copy`
    // writes it (and as a manifest's `[base] image` has it).
    let reference = args
        .reference
        .strip_prefix(nixlayer::registry::reference::SCHEME)
        .unwrap_or(&args.reference);
    let target = Reference::parse(reference).map_err(|e| UsageError(e.to_string()))?;
    for tag in &args.tags {
        nixlayer::sink::registry::reference::check_tag(tag)
            .map_err(|reason| UsageError(format!("--tag `{tag}`: {reason}")))?;
    }
    let access = RegistryAccess::new(
        &args.registry,
        &PushEnv::capture(),
        Some(&target.host),
        &mut io::stdin().lock(),
    )?;
    let mut overrides = settings::Overrides::default();
    overrides.format = Some("oci-layout".to_owned());
    overrides.compression = Some(args.compression.clone());
    overrides.level = args.level;
    overrides.threads = args.threads;
    overrides.no_cache = args.no_cache;
    overrides.annotations.clone_from(&args.annotation);
    let loaded = LoadedManifest::load(&args.manifest)?;
    let options = ClientOptions {
        chunk_size: args.chunk_size.unwrap_or(0),
        jobs: args.jobs.map_or(0, usize::from),
        ..access.options(&target.host, &target.repository)?
    };
    if loaded.is_multi_platform() {
        return run_push_platforms(
            args, &loaded, &overrides, &target, &access, options, printer, start,
        );
    }
    warn_index_annotations_unused(&args.annotation, printer);
    let mut command =
        settings::resolve_build(&loaded, &overrides, &settings::Environment::capture())?;
    command.settings.sbom = sbom::formats(&args.sbom);
    access.reach_base(&mut command.settings)?;
    command.settings.content.base_any_platform = args.no_arch_check;
    for w in &command.warnings {
        printer.warn(w);
    }
    let image = prepare_guarded(
        &command.settings,
        &loaded,
        true,
        args.no_arch_check,
        printer,
    )?;
    let progress = progress::Progress::new(
        layer_sizes(&image),
        printer.is_quiet(),
        true,
        nar_meter(&command.settings),
    );
    let pushed = ops::push::push(
        &command.settings,
        &image,
        &target,
        &args.tags,
        options,
        command.compress,
        &progress,
    )
    .map_err(PushFailed::to(&target))?;
    progress.clear();
    let (summary, counts, layers_cached) = (&pushed.build, pushed.counts, pushed.layers_cached);
    let manifest_digest = summary
        .manifest_digest
        .ok_or("the build made no OCI manifest")?;
    let reference = pushed.reference.clone();
    let pinned = pushed.pinned.clone();
    if args.json {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&summary_json(summary, &command, &reference))?;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("reference".into(), reference.clone().into());
            obj.insert("tags".into(), pushed.tags.clone().into());
            obj.insert("pushed".into(), pinned.clone().into());
            obj.insert(
                "blobs".into(),
                serde_json::json!({
                    "uploaded": counts.uploaded,
                    "existing": counts.existing,
                    "bytes_uploaded": counts.bytes_uploaded,
                    "mounted": counts.mounted,
                    "layers_cached": layers_cached,
                }),
            );
            if !summary.sboms.is_empty() {
                obj.insert("referrers".into(), referrers_json(counts));
            }
        }
        printer.data(&nixlayer::oci::canonical_json(&doc))?;
    } else {
        // The one line a deploy step captures to pin the digest.
        printer.data(pinned.as_bytes())?;
    }
    let (also, mounted) = summary_extras(&pushed.tags, counts.mounted);
    printer.info(&format!(
        "pushed {reference}{also} ({manifest_digest}, {} layer{}) in {}; {} blob{} uploaded ({}){mounted}, {} already present ({} layer{} from the cache)",
        summary.layers.len(),
        plural(summary.layers.len()),
        printer::elapsed(start.elapsed()),
        counts.uploaded,
        plural(counts.uploaded),
        printer::bytes(counts.bytes_uploaded),
        counts.existing,
        layers_cached,
        plural(layers_cached),
    ));
    report_referrers(&pushed.build.sboms, counts, manifest_digest, printer);
    Ok(())
}

/// How the registry lists the pushed SBOMs, for `--json`.
fn referrers_json(counts: nixlayer::sink::registry::PushCounts) -> serde_json::Value {
    serde_json::json!({
        "api": counts.referrers_api,
        "tagged": counts.referrers_tagged,
    })
}

/// One line per pushed SBOM: where a client finds it.
fn report_referrers(
    sboms: &[ops::sbom::AttachedSbom],
    counts: nixlayer::sink::registry::PushCounts,
    subject: nixlayer::oci::Digest,
    printer: Printer,
) {
    for s in sboms {
        let how = if counts.referrers_tagged > 0 {
            format!(
                "the referrers tag `{}` (the registry has no referrers API)",
                nixlayer::sink::registry::referrers_tag(&subject)
            )
        } else {
            format!("the referrers API (`/v2/…/referrers/{subject}`)")
        };
        printer.info(&format!(
            "attached the {} SBOM ({}), listed in {how}",
            s.format.name(),
            s.manifest.digest
        ));
    }
}

/// The environment `push` reads, captured once.
#[derive(Default)]
struct PushEnv {
    user: Option<String>,
    password: Option<args::Secret>,
    timeout: Option<String>,
    credential_files: Vec<std::path::PathBuf>,
}

/// Where `push` reads the user and the password from the environment.
const USER_ENV: &str = "NIXLAYER_REGISTRY_USER";
const PASSWORD_ENV: &str = "NIXLAYER_REGISTRY_PASSWORD";
const TIMEOUT_ENV: &str = "NIXLAYER_REGISTRY_TIMEOUT";

impl PushEnv {
    fn capture() -> Self {
        let var = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            user: var(USER_ENV),
            password: var(PASSWORD_ENV).map(args::Secret),
            timeout: var(TIMEOUT_ENV),
            credential_files: nixlayer::registry::credentials::credential_files(),
        }
    }
}

/// How to reach registries, as the command line and the environment say:
/// the one code for `push`'s target and for a `[base] image =
/// "docker://…"` that `build`, `layers` and `push` pull.
struct RegistryAccess {
    /// Credentials from `--creds`, `--username` with `--password-stdin`,
    /// or the environment.
    given: Option<nixlayer::sink::registry::Credentials>,
    /// The host `given` and `--insecure` are for (`None`: whichever
    /// registry the command reaches).
    given_for: Option<String>,
    insecure: bool,
    ca_file: Option<std::path::PathBuf>,
    timeouts: nixlayer::sink::registry::Timeouts,
    credential_files: Vec<std::path::PathBuf>,
}

/// The settings of a build of `loaded` for a command that only plans it
/// (`layers`, `sbom`): `overrides` without the layer cache, and a registry
/// base reached as `build` reaches it (the credentials, `--ca-file`,
/// `--insecure`, the deadline, docker's config.json).
fn planning_settings(
    loaded: &LoadedManifest,
    mut overrides: settings::Overrides,
    registry: &args::RegistryArgs,
) -> Result<settings::ResolvedBuild, BoxError> {
    overrides.no_cache = true;
    let mut command =
        settings::resolve_build(loaded, &overrides, &settings::Environment::capture())?;
    RegistryAccess::new(registry, &PushEnv::capture(), None, &mut io::stdin().lock())?
        .reach_base(&mut command.settings)?;
    Ok(command)
}

impl RegistryAccess {
    /// Reads the credentials (`stdin` for `--password-stdin`) and the
    /// deadline once; `given_for` as in [`RegistryAccess::given_for`].
    fn new(
        args: &args::RegistryArgs,
        env: &PushEnv,
        given_for: Option<&str>,
        stdin: &mut dyn io::Read,
    ) -> Result<Self, BoxError> {
        Ok(Self {
            given: given_credentials(args, env, stdin)?,
            given_for: given_for.map(str::to_owned),
            insecure: args.insecure,
            ca_file: args.ca_file.clone(),
            timeouts: nixlayer::sink::registry::Timeouts {
                request: push_timeout(args, env)?,
                ..nixlayer::sink::registry::Timeouts::default()
            },
            credential_files: env.credential_files.clone(),
        })
    }

    /// The options for `repository` at the registry `host`: the given
    /// credentials (and `--insecure`) when they are for it, else those of
    /// docker's `config.json` or podman's `auth.json` for that repository
    /// or host, else anonymous; `--ca-file` and the deadline always.
    fn options(
        &self,
        host: &str,
        repository: &str,
    ) -> Result<nixlayer::sink::registry::ClientOptions, BoxError> {
        let ours = self.given_for.as_deref().is_none_or(|h| h == host);
        let credentials = match (&self.given, ours) {
            (Some(given), true) => Some(given.clone()),
            _ => nixlayer::sink::registry::Credentials::from_config_files(
                &self.credential_files,
                host,
                repository,
            )?,
        };
        Ok(nixlayer::sink::registry::ClientOptions {
            credentials,
            insecure: self.insecure && ours,
            timeouts: self.timeouts,
            ca_file: self.ca_file.clone(),
            ..nixlayer::sink::registry::ClientOptions::default()
        })
    }

    /// Makes a registry base image of `settings` reached this way.
    fn reach_base(&self, settings: &mut ops::BuildSettings) -> Result<(), BoxError> {
        if let Some(pull) = settings.content.base_pull.as_mut() {
            pull.options = Some(self.options(&pull.reference.host, &pull.reference.repository)?);
        }
        Ok(())
    }
}

/// The credentials given: `--creds`; else a user (`--username` or the
/// environment) with the password from stdin or the environment; else
/// none (docker's `config.json` is asked per host). Errors never quote a
/// password.
fn given_credentials(
    args: &args::RegistryArgs,
    env: &PushEnv,
    stdin: &mut dyn io::Read,
) -> Result<Option<nixlayer::sink::registry::Credentials>, BoxError> {
    use nixlayer::sink::registry::Credentials;
    if let Some(text) = &args.creds {
        let creds = Credentials::parse(&text.0)
            .ok_or_else(|| UsageError("`--creds` must be `USER:PASS`".to_owned()))?;
        // As skopeo's `--creds`: a registry would only answer 401 to it.
        if creds.user.is_empty() {
            return Err(UsageError("`--creds`: the user before `:` is empty".to_owned()).into());
        }
        return Ok(Some(creds));
    }
    if args.username.as_deref() == Some("") {
        return Err(UsageError("`--username` is empty".to_owned()).into());
    }
    let user = args.username.clone().or_else(|| env.user.clone());
    let no_user = || {
        UsageError(format!(
            "a registry password is given (`--password-stdin` or `{PASSWORD_ENV}`) but no user: add `--username USER` or set `{USER_ENV}`"
        ))
    };
    if user.is_none() && (args.password_stdin || env.password.is_some()) {
        return Err(no_user().into());
    }
    let password = if args.password_stdin {
        let mut bytes = Vec::new();
        // A password is short: a bounded read, so `< /dev/zero` ends.
        io::Read::read_to_end(&mut io::Read::take(stdin, (64 << 10) + 1), &mut bytes)
            .map_err(|e| UsageError(format!("`--password-stdin`: cannot read stdin: {e}")))?;
        if bytes.len() > 64 << 10 {
            return Err(
                UsageError("`--password-stdin`: stdin holds more than 64 KiB".to_owned()).into(),
            );
        }
        let mut text = String::from_utf8(bytes)
            .map_err(|_| UsageError("`--password-stdin`: the password is not UTF-8".to_owned()))?;
        // As docker login: one trailing newline is not part of it.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(
                UsageError("`--password-stdin`: stdin holds no password".to_owned()).into(),
            );
        }
        Some(text)
    } else {
        env.password.as_ref().map(|p| p.0.clone())
    };
    match (user, password) {
        (Some(user), Some(password)) => Ok(Some(Credentials { user, password })),
        (Some(_), None) => Err(UsageError(format!(
            "a registry user is given but no password: add `--password-stdin` or set `{PASSWORD_ENV}`"
        ))
        .into()),
        (None, Some(_)) => Err(no_user().into()),
        (None, None) => Ok(None),
    }
}

/// The per-request deadline: `--timeout`, else the environment, else the
/// default.
fn push_timeout(args: &args::RegistryArgs, env: &PushEnv) -> Result<std::time::Duration, BoxError> {
    if let Some(t) = args.timeout {
        return Ok(t);
    }
    match &env.timeout {
        Some(text) => args::parse_timeout(text)
            .map_err(|e| UsageError(format!("`{TIMEOUT_ENV}={text}`: {e}")).into()),
        None => Ok(nixlayer::sink::registry::Timeouts::default().request),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Grows stdout to a 1 MiB pipe when it is one. A default 64 KiB pipe makes
/// the reader (`docker load`, `cat`) wake 16 times per chunk we write; a
/// larger one cuts those context switches. Best effort: on failure (not a
/// pipe, a lower `pipe-max-size`) nothing changes.
fn widen_stdout_pipe() {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let fd = io::stdout().as_raw_fd();
        // SAFETY: fcntl on our own stdout descriptor with an integer
        // argument; it touches no memory of ours.
        unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
        }
    }
}

/// What `build` makes of a manifest's platforms.
enum Chosen {
    /// One platform: the only one, or the one `--platform` names.
    One(Box<LoadedManifest>, Box<settings::ResolvedBuild>),
    /// Every platform, into one image index (OCI outputs only).
    All(Vec<(LoadedManifest, settings::ResolvedBuild)>),
}

/// What a push's summary line adds to the reference: the other tags
/// (`, :b`) and the blobs mounted from another repository, if any.
fn summary_extras(tags: &[String], mounted: usize) -> (String, String) {
    let also = tags.iter().skip(1).map(|t| format!(", :{t}")).collect();
    let mounted = if mounted > 0 {
        format!(", {mounted} mounted from another repository")
    } else {
        String::new()
    };
    (also, mounted)
}

/// `--platform TEXT` read as docker names platforms (a usage error when
/// it is not one); `None` without the option.
fn platform_option(
    text: Option<&str>,
) -> Result<Option<nixlayer::manifest::PlatformName>, UsageError> {
    text.map(|text| {
        nixlayer::manifest::PlatformName::parse_option(text).ok_or_else(|| {
            UsageError(format!(
                "--platform `{text}` is not `[linux/]ARCH[/VARIANT]`"
            ))
        })
    })
    .transpose()
}

/// The manifest of the platform `wanted` among a manifest's `platforms`
/// (a usage error naming those it describes when it is not one of them).
fn the_platform(
    platforms: Vec<(nixlayer::manifest::PlatformName, LoadedManifest)>,
    wanted: &nixlayer::manifest::PlatformName,
) -> Result<LoadedManifest, UsageError> {
    let names: Vec<String> = platforms.iter().map(|(n, _)| n.to_string()).collect();
    platforms
        .into_iter()
        .find(|(n, _)| n.is_same_platform(wanted))
        .map(|(_, one)| one)
        .ok_or_else(|| {
            UsageError(format!(
                "--platform `{wanted}` is not in the manifest, which describes {}",
                names.join(", ")
            ))
        })
}

/// Picks the platform(s) to build: all of a multi-platform manifest for an
/// OCI output, else the one `--platform` names (a docker-archive or rootfs
/// holds one image, so it must be named).
fn choose_platform(
    args: &BuildArgs,
    loaded: &LoadedManifest,
    env: &settings::Environment,
) -> Result<Chosen, BoxError> {
    let wanted = platform_option(args.platform.as_deref())?;
    if !loaded.is_multi_platform() && wanted.is_none() {
        let command = settings::resolve_build(loaded, &overrides(args), env)?;
        return Ok(Chosen::One(Box::new(loaded.clone()), Box::new(command)));
    }
    let manifests = loaded.platform_manifests(settings::host_architecture())?;
    if let Some(wanted) = wanted {
        let one = the_platform(manifests, &wanted)?;
        let command = settings::resolve_build(&one, &overrides(args), env)?;
        return Ok(Chosen::One(Box::new(one), Box::new(command)));
    }
    let names: Vec<String> = manifests.iter().map(|(n, _)| n.to_string()).collect();
    let mut all = Vec::with_capacity(manifests.len());
    for (_, one) in manifests {
        let command = settings::resolve_build(&one, &overrides(args), env)?;
        all.push((one, command));
    }
    if !matches!(
        all[0].1.format,
        OutputFormat::OciLayout | OutputFormat::OciArchive
    ) {
        return Err(UsageError(format!(
            "the manifest describes {} platforms ({}), but a `{}` holds one image: choose one with `--platform ARCH[/VARIANT]`, or use `--format oci-layout` or `oci-archive` for an image index",
            names.len(),
            names.join(", "),
            all[0].1.format.name()
        ))
        .into());
    }
    Ok(Chosen::All(all))
}

/// `build` of every platform into one OCI layout or archive, named by one
/// image index; layers the platforms share are stored once.
fn run_build_platforms(
    args: &BuildArgs,
    mut all: Vec<(LoadedManifest, settings::ResolvedBuild)>,
    printer: Printer,
    start: Instant,
) -> Result<(), BoxError> {
    let layout = all[0].1.format == OutputFormat::OciLayout;
    let output = &args.output;
    if layout && output.is_none() {
        return Err(UsageError(
            "an `oci-layout` is a directory: give it with `-o DIR`, or use `--format oci-archive --stream`".to_owned(),
        )
        .into());
    }
    // One SBOM per platform image, each attached to its manifest.
    let sbom_formats = sbom::formats(&args.sbom);
    for (_, command) in &mut all {
        command.settings.sbom.clone_from(&sbom_formats);
    }
    let mut images = Vec::with_capacity(all.len());
    for (loaded, command) in &all {
        for w in &command.warnings {
            printer.warn(w);
        }
        if let Some(output) = output {
            let inputs = build_inputs(&args.manifest, &command.settings);
            refuse_overwriting_inputs("-o", output, &inputs, layout)?;
        }
        let image = prepare_guarded(&command.settings, loaded, true, args.no_arch_check, printer)?;
        if let Some(output) = output {
            refuse_output_in_closure("-o", output, &command.settings, &image.closure)?;
        }
        images.push(image);
    }
    let pairs: Vec<(&ops::BuildSettings, &ops::PreparedImage)> =
        all.iter().map(|(_, c)| &c.settings).zip(&images).collect();
    let first = &all[0].1;
    let sizes: Vec<u64> = images.iter().flat_map(layer_sizes).collect();
    let progress = progress::Progress::new(sizes, printer.is_quiet(), false, nar_meter(pairs[0].0));
    let compress = first.compress;
    let mtime = first.settings.mtime;
    let (summaries, dest) = match output {
        Some(dir) if layout => {
            let sink = OciLayout::create(dir)?.compressed(compress);
            let (summaries, ()) = ops::build_platforms(&pairs, sink, &progress)?;
            (summaries, dir.display().to_string())
        }
        Some(path) => {
            let shown = format!("`{}`", path.display());
            let written = OutputFile::create(path)
                .map_err(BoxError::from)
                .and_then(|out| {
                    let sink = OciArchiveWriter::new(out, mtime, compress)?;
                    let (summaries, out) = ops::build_platforms(&pairs, sink, &progress)?;
                    out.commit()?;
                    Ok(summaries)
                });
            (on_closed_pipe(written, &shown)?, path.display().to_string())
        }
        None => {
            widen_stdout_pipe();
            let stdout = io::BufWriter::with_capacity(1 << 20, NamedStdout(io::stdout()));
            let written = OciArchiveWriter::new(stdout, mtime, compress)
                .map_err(ops::Error::Write)
                .and_then(|sink| ops::build_platforms(&pairs, sink, &progress))
                .and_then(|(summaries, mut out)| {
                    out.flush().map_err(ops::Error::Write)?;
                    Ok(summaries)
                });
            (
                on_closed_pipe(written.map_err(BoxError::from), "stdout")?,
                "stdout".to_owned(),
            )
        }
    };
    progress.clear();
    if args.json {
        let platforms: Vec<serde_json::Value> = summaries
            .iter()
            .zip(&all)
            .map(|(summary, (_, command))| {
                serde_json::from_slice(&summary_json(summary, command, &dest))
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        let doc = serde_json::json!({
            "reference": summaries.first().map(|s| s.reference.clone()),
            "platforms": platforms,
        });
        printer.data(&nixlayer::oci::canonical_json(&doc))?;
    }
    let platform = |c: &settings::ResolvedBuild| {
        let c = &c.settings.config;
        let variant = c
            .variant
            .as_ref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default();
        format!("{}{variant}", c.architecture)
    };
    let each: Vec<String> = summaries
        .iter()
        .zip(&all)
        .map(|(s, (_, c))| format!("{} {}", platform(c), s.config_digest))
        .collect();
    printer.info(&format!(
        "built {} ({} platforms: {}) in {} → {dest}",
        summaries.first().map_or("", |s| s.reference.as_str()),
        summaries.len(),
        each.join(", "),
        printer::elapsed(start.elapsed()),
    ));
    // As a single-platform build does, one line per attached SBOM.
    for (summary, (_, c)) in summaries.iter().zip(&all) {
        report_attached(summary, &format!(" ({})", platform(c)), printer);
    }
    Ok(())
}

/// `push` of a manifest with `[[platforms]]`: every platform, then one
/// image index as the tag(s); prints the index pinned by digest.
#[allow(clippy::too_many_arguments)] // the one caller's locals, passed on
fn run_push_platforms(
    args: &PushArgs,
    loaded: &LoadedManifest,
    overrides: &settings::Overrides,
    target: &nixlayer::sink::registry::Reference,
    access: &RegistryAccess,
    options: nixlayer::sink::registry::ClientOptions,
    printer: Printer,
    start: Instant,
) -> Result<(), BoxError> {
    let mut all =
        settings::resolve_platforms(loaded, overrides, &settings::Environment::capture())?;
    let sbom_formats = sbom::formats(&args.sbom);
    for (_, command) in &mut all {
        command.settings.sbom.clone_from(&sbom_formats);
        access.reach_base(&mut command.settings)?;
        command.settings.content.base_any_platform = args.no_arch_check;
    }
    let manifests = loaded.platform_manifests(settings::host_architecture())?;
    let mut images = Vec::with_capacity(all.len());
    for ((_, command), (_, one)) in all.iter().zip(&manifests) {
        for w in &command.warnings {
            printer.warn(w);
        }
        let image = prepare_guarded(&command.settings, one, true, args.no_arch_check, printer)?;
        images.push(image);
    }
    let pairs: Vec<(&ops::BuildSettings, &ops::PreparedImage)> =
        all.iter().map(|(_, c)| &c.settings).zip(&images).collect();
    let sizes: Vec<u64> = images.iter().flat_map(layer_sizes).collect();
    let progress = progress::Progress::new(sizes, printer.is_quiet(), true, nar_meter(pairs[0].0));
    let pushed = ops::push::push_platforms(
        &pairs,
        target,
        &args.tags,
        options,
        all[0].1.compress,
        &progress,
    )
    .map_err(PushFailed::to(target))?;
    progress.clear();
    let counts = pushed.counts;
    if args.json {
        let platforms: Vec<serde_json::Value> = pushed
            .builds
            .iter()
            .zip(&all)
            .map(|(summary, (_, command))| {
                serde_json::from_slice(&summary_json(summary, command, &pushed.reference))
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        let doc = serde_json::json!({
            "reference": pushed.reference,
            "tags": pushed.tags,
            "pushed": pushed.pinned,
            "platforms": platforms,
            // The same keys as a single-platform push's `blobs`.
            "blobs": {
                "uploaded": counts.uploaded,
                "existing": counts.existing,
                "bytes_uploaded": counts.bytes_uploaded,
                "mounted": counts.mounted,
                "layers_cached": pushed
                    .builds
                    .iter()
                    .map(|b| b.blobs.map_or(0, |x| x.layers_cached))
                    .sum::<usize>(),
            },
        });
        let mut doc = doc;
        if let (false, Some(obj)) = (sbom_formats.is_empty(), doc.as_object_mut()) {
            obj.insert("referrers".into(), referrers_json(counts));
        }
        printer.data(&nixlayer::oci::canonical_json(&doc))?;
    } else {
        printer.data(pushed.pinned.as_bytes())?;
    }
    let names: Vec<String> = all.iter().map(|(n, _)| n.to_string()).collect();
    // The same tags and counts as a single image's line.
    let (also, mounted) = summary_extras(&pushed.tags, counts.mounted);
    printer.info(&format!(
        "pushed {}{also} (image index of {}) in {}; {} blob{} uploaded ({}){mounted}, {} already present",
        pushed.reference,
        names.join(", "),
        printer::elapsed(start.elapsed()),
        counts.uploaded,
        plural(counts.uploaded),
        printer::bytes(counts.bytes_uploaded),
        counts.existing,
    ));
    for build in &pushed.builds {
        if let Some(subject) = build.manifest_digest {
            report_referrers(&build.sboms, counts, subject, printer);
        }
    }
    Ok(())
}
