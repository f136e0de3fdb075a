//! Renders an error as `error: <what failed>`, its causes, then hints.

use std::error::Error as StdError;
use std::fmt::Write as _;

use nixlayer::{closure, manifest};

/// The text shown for `err`.
#[must_use]
pub(crate) fn render(err: &(dyn StdError + 'static)) -> String {
    let mut out = format!("error: {err}");
    let mut hints: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    let mut last_line = err.to_string();
    while let Some(e) = cause {
        if let Some(h) = hint(e) {
            if !hints.contains(&h) {
                hints.push(h);
            }
        }
        cause = e.source();
        if let Some(c) = cause {
            let text = c.to_string();
            // `#[error(transparent)]` wrappers repeat their source's text.
            if text != last_line {
                let _ = write!(out, "\n  Caused by: {text}");
                last_line = text;
            }
        }
    }
    for h in hints {
        let _ = write!(out, "\n\nhint: {h}");
    }
    printable(&out).into_owned()
}

/// `text` with its control characters other than newline and tab escaped
/// (`\u{1b}`): errors and `inspect` quote hostile input (a store path from
/// a closure file, an archive's tags), whose escape sequences must not
/// reach the terminal and retitle, clear or rewrite it.
#[must_use]
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The exit status of a closed pipe: 128 + SIGPIPE, what a shell reports
/// for a program SIGPIPE killed (Rust ignores SIGPIPE, so writes fail
/// with EPIPE instead and the program says what happened).
pub(crate) const PIPE_CLOSED_STATUS: u8 = 141;

/// The reader of an image (stdout, a FIFO) went away before it was
/// complete: it got a cut-short image, which `docker load` may or may not
/// notice, so this is said on stderr (exit [`PIPE_CLOSED_STATUS`]).
#[derive(Debug, thiserror::Error)]
#[error("{0} was closed before the image was complete: its reader got only part of the image (broken pipe)")]
pub(crate) struct PipeClosed(pub String);

/// Whether `err` or one of its causes is a broken pipe (the reader of
/// the output went away).
#[must_use]
pub(crate) fn is_broken_pipe(err: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

fn hint(err: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(e) = err.downcast_ref::<manifest::Error>() {
        return e.hint().map(str::to_owned);
    }
    if let Some(e) = err.downcast_ref::<closure::NixStoreError>() {
        return e.hint().map(str::to_owned);
    }
    if let Some(e) = err.downcast_ref::<super::init::MissingRoot>() {
        return Some(e.hint());
    }
    None
}
