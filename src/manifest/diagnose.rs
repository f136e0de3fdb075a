//! Turns `toml`/serde errors into one-line [`Error::Invalid`]s with a line,
//! a column and, for an unknown key, the nearest valid key.
//!
//! toml renders its errors as a multi-line snippet; the CLI prints
//! `file:line:column: message` plus a `hint:` line instead (STYLE 6), so
//! only the essence of toml's message is kept and rephrased in the
//! manifest's words (keys and tables, not fields and structs).

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::hints::{key_hint, mode_hint, SOURCE_FORMS};
use super::Error;

/// 1-based line and column (in characters) of byte `offset` of `text`.
///
/// An offset past the end is clamped to the end, and one inside a UTF-8
/// sequence counts as that character, so any offset is answered.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// An [`Error::Invalid`] at byte `offset` of `text`.
pub(super) fn invalid_at(
    path: &Path,
    text: &str,
    offset: usize,
    message: String,
    hint: Option<String>,
) -> Error {
    let (line, column) = line_col(text, offset);
    Error::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message: one_line(message),
        hint,
    }
}

/// `message` with its line breaks escaped (`\n`): a manifest error is one
/// line, however the value it quotes is written (`os = "li\nux"`). Other
/// control characters are the printer's to escape, as for every error.
fn one_line(message: String) -> String {
    if !message.contains(['\n', '\r']) {
        return message;
    }
    message
        .chars()
        .map(|c| match c {
            '\n' | '\r' => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Where in the document an error span points.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Location {
    /// Keys from the root to the table holding the offending key.
    pub(super) table: Vec<String>,
    /// The offending key itself (the unknown key, or the key of a bad value).
    pub(super) key: Option<String>,
    /// The TOML type of the value there ("an array"), which serde cannot
    /// always tell: it sees a date-time as a table, `[[t]]` as a sequence.
    pub(super) found: Option<&'static str>,
}

impl Location {
    /// `closure.roots`, for messages about a value.
    pub(super) fn dotted(&self) -> Option<String> {
        let mut parts = self.table.clone();
        parts.extend(self.key.clone());
        (!parts.is_empty()).then(|| parts.join("."))
    }

    /// ` in `[closure]`` or nothing at the top level.
    fn in_table(&self) -> String {
        if self.table.is_empty() {
            String::new()
        } else {
            format!(" in `[{}]`", self.table.join("."))
        }
    }
}

/// Finds which key `span` belongs to: serde reports an unknown key at the
/// key's span and a bad value at the value's span, and `toml` does not
/// expose the key path itself, so the parsed document is searched for it.
pub(super) fn locate(text: &str, span: &Range<usize>) -> Location {
    let mut found = Location::default();
    if let Ok(doc) = DeTable::parse(text) {
        let mut path = Vec::new();
        search_table(doc.get_ref(), span, &mut path, &mut found);
    }
    found
}

fn search_table(
    table: &DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<String>,
    found: &mut Location,
) -> bool {
    for (key, value) in table {
        if key.span() == *span {
            *found = Location {
                table: path.clone(),
                key: Some(key.get_ref().to_string()),
                found: Some(kind(value.get_ref())),
            };
            return true;
        }
        path.push(key.get_ref().to_string());
        let hit = if value.span() == *span {
            *found = Location {
                table: path[..path.len() - 1].to_vec(),
                key: path.last().cloned(),
                found: Some(kind(value.get_ref())),
            };
            true
        } else {
            search_value(value, span, path, found)
        };
        path.pop();
        if hit {
            return true;
        }
    }
    false
}

fn search_value(
    value: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<String>,
    found: &mut Location,
) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => search_table(table, span, path, found),
        // An element of an array is reported under the array's key.
        DeValue::Array(items) => items.into_iter().any(|item| {
            if item.span() == *span {
                *found = Location {
                    table: path[..path.len().saturating_sub(1)].to_vec(),
                    key: path.last().cloned(),
                    found: Some(kind(item.get_ref())),
                };
                true
            } else {
                search_value(item, span, path, found)
            }
        }),
        _ => false,
    }
}

/// The TOML type of `value`, as messages name it.
pub(super) fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The top-level keys that are tables (`[closure]`, …). serde reports
/// `[[owner]]` or `closure = []` in terms of the struct's fields
/// ("invalid length 1", "expected u64"), which would mislead.
const SECTIONS: [&str; 6] = ["store", "closure", "config", "owner", "layering", "output"];

/// The backquoted words of `s`, in order: serde's lists of valid keys.
fn backquoted(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// `u32` → "an integer from 0 to 4294967295" and the like: serde names
/// Rust types, the manifest's readers know TOML types.
fn toml_type(expected: &str) -> String {
    let expected = expected.trim();
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_owned(),
        "a string" | "a borrowed string" => "a string".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        "a boolean" => "a boolean".to_owned(),
        "any valid JSON value" => "a TOML value".to_owned(),
        s if s.starts_with("struct ") => "a table".to_owned(),
        s => s.to_owned(),
    }
}

/// The range an integer type holds, for "out of range" messages.
fn integer_range(expected: &str) -> Option<String> {
    let (lo, hi): (i128, i128) = match expected.trim() {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        _ => return None,
    };
    Some(format!("an integer from {lo} to {hi}"))
}

/// serde's "found" side: `sequence` → `an array`, the rest as written.
fn toml_found(found: &str) -> String {
    match found.trim() {
        "sequence" => "an array".to_owned(),
        "map" => "a table".to_owned(),
        s => s.to_owned(),
    }
}

/// What a missing required key needs, for the hint.
fn missing_key_hint(key: &str) -> Option<String> {
    match key {
        "name" => Some("add `name = \"registry.example.com/team/app\"` at the top".to_owned()),
        "closure" => Some("add a `[closure]` table with `roots = [\"/nix/store/…\"]`".to_owned()),
        _ => None,
    }
}

/// Turns a `toml` error (syntax, or serde's verdict on the typed
/// [`super::Manifest`]) into an [`Error::Invalid`] with a one-line message.
pub(super) fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let span = err.span().unwrap_or(0..0);
    // toml's own message is already free of the snippet; keep its first
    // line only, in case a future version grows more.
    let raw = err.message().lines().next().unwrap_or("").trim();
    let location = locate(text, &span);
    let (message, hint) = rephrase(raw, text, &span, &location);
    invalid_at(path, text, span.start, message, hint)
}

fn rephrase(
    raw: &str,
    text: &str,
    span: &Range<usize>,
    location: &Location,
) -> (String, Option<String>) {
    let key = location
        .dotted()
        .map_or_else(|| "value".to_owned(), |k| format!("`{k}`"));

    if let Some(rest) = raw
        .strip_prefix("unknown field ")
        .or_else(|| raw.strip_prefix("unknown variant "))
    {
        let words = backquoted(rest);
        let word = words.first().copied().unwrap_or("");
        let valid = words.get(1..).unwrap_or(&[]);
        let noun = if raw.starts_with("unknown field") {
            "key"
        } else {
            "value"
        };
        return (
            format!("unknown {noun} `{word}`{}", location.in_table()),
            key_hint(word, valid),
        );
    }
    if let Some(rest) = raw.strip_prefix("missing field ") {
        let word = backquoted(rest).first().copied().unwrap_or("");
        return (
            format!("missing required key `{word}`{}", location.in_table()),
            missing_key_hint(word),
        );
    }
    let is_section = location.table.is_empty()
        && location
            .key
            .as_deref()
            .is_some_and(|k| SECTIONS.contains(&k));
    if is_section && location.found.is_some_and(|f| f != "a table") {
        let found = location.found.unwrap_or("another type");
        return (
            format!("wrong type for {key}: expected a table, found {found}"),
            None,
        );
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            // An integer beyond 64 bits reaches serde as an i128, which no
            // field takes: out of the field's range, as any other.
            if let Some(number) = found.strip_suffix(" as i128") {
                if let Some(range) = integer_range(expected) {
                    return (
                        format!("invalid value for {key}: expected {range}, found {number}"),
                        None,
                    );
                }
            }
            // serde sees a TOML date-time as a one-key table.
            let found = match location.found {
                Some("a date-time") => "a date-time".to_owned(),
                _ => toml_found(found),
            };
            return (
                format!(
                    "wrong type for {key}: expected {}, found {found}",
                    toml_type(expected),
                ),
                None,
            );
        }
    }
    if let Some(rest) = raw.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            let expected = integer_range(expected).unwrap_or_else(|| toml_type(expected));
            return (
                format!("invalid value for {key}: expected {expected}, found {found}"),
                None,
            );
        }
    }
    if raw.starts_with("data did not match any variant of untagged enum") {
        // The untagged enums are `closure.source` and the modes; say which
        // forms the one at hand takes.
        let found = location.found.unwrap_or("another type");
        return match location.key.as_deref() {
            Some(mode @ ("mode" | "dir_mode" | "file_mode")) => (
                format!("wrong type for {key}: expected an octal string, found {found}"),
                Some(mode_hint(mode)),
            ),
            Some("source") if location.table == ["closure"] => {
                (format!("invalid {key}"), Some(SOURCE_FORMS.to_owned()))
            }
            _ => (format!("invalid {key}: unexpected {found}"), None),
        };
    }
    if raw == "duplicate key" {
        if let Some(word) = text.get(span.clone()).filter(|w| !w.contains('\n')) {
            return (format!("duplicate key `{}`", word.trim()), None);
        }
    }
    let message = if raw.is_empty() {
        "invalid TOML".to_owned()
    } else {
        format!("invalid TOML: {raw}")
    };
    (message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let text = "ab\nçd\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 2), (1, 3));
        assert_eq!(line_col(text, 3), (2, 1));
        // `d` is after a two-byte `ç`: byte 5, character column 2.
        assert_eq!(line_col(text, 5), (2, 2));
        // Inside `ç` and past the end: no panic.
        assert_eq!(line_col(text, 4), (2, 1));
        assert_eq!(line_col(text, 99), (3, 1));
        assert_eq!(line_col("", 7), (1, 1));
    }

    #[test]
    fn locate_finds_keys_and_values() {
        let text = "a = 1\n[t]\nb = [1, \"x\"]\nc.d = true\n";
        let at = |needle: &str| {
            let start = text.find(needle).unwrap();
            locate(text, &(start..start + needle.len()))
        };
        assert_eq!(at("b").dotted().as_deref(), Some("t.b"));
        assert_eq!(at("\"x\"").dotted().as_deref(), Some("t.b"));
        assert_eq!(at("d").table, vec!["t", "c"]);
        assert_eq!(at("true").dotted().as_deref(), Some("t.c.d"));
        assert_eq!(locate(text, &(0..0)), Location::default());
    }
}
