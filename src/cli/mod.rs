//! The command line: arguments, settings, printing and exit codes.

use std::process::ExitCode;

/// Runs the command line and maps the outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
