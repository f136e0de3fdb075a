//! The one place that writes to the terminal. stdout carries data only (the
//! image under `--stream`); everything for people goes to stderr.

use std::time::Duration;

/// Decides what reaches stderr.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Printer {
    quiet: bool,
}

impl Printer {
    /// A printer that is silent under `--quiet`.
    #[must_use]
    pub(crate) fn new(quiet: bool) -> Self {
        Self { quiet }
    }

    /// Whether `--quiet` silences everything but errors.
    #[must_use]
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// An informational line (the build summary).
    pub(crate) fn info(&self, line: &str) {
        if !self.quiet {
            to_stderr(format_args!("{line}"));
        }
    }

    /// A warning the user can act on.
    pub(crate) fn warn(&self, line: &str) {
        if !self.quiet {
            to_stderr(format_args!("warning: {line}"));
        }
    }

    /// Data for scripts (`--json`) on stdout, ending with a newline;
    /// never silenced by `--quiet`.
    ///
    /// # Errors
    /// When stdout cannot be written.
    pub(crate) fn data(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// An error report (always shown).
    pub(crate) fn error(&self, text: &str) {
        to_stderr(format_args!("{text}"));
    }
}

/// One line on stderr; a stderr that cannot be written (a closed pipe: a
/// log reader that went away) is let be, as `eprintln!` would not (it
/// panics, exit 101): the exit status still says how the command went.
fn to_stderr(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `850ms`, `1.20s`, `2m 05s`.
#[must_use]
pub(crate) fn elapsed(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// `512 B`, `1.5 KiB`, `12.3 MiB`, `1.02 GiB`.
#[must_use]
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(elapsed(Duration::from_millis(850)), "850ms");
        assert_eq!(elapsed(Duration::from_millis(1200)), "1.20s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m 05s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
    }
}
