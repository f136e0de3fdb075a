//! Hints for the manifest's errors: the nearest valid word for a typo, and
//! the forms a value takes.
//!
//! Shared by the parse diagnostics (`diagnose.rs`) and the checks run after
//! parsing (`resolved.rs`, `content.rs`, `config.rs`); kept apart from both
//! so that neither imports the other.

/// The forms `closure.source` takes, as a hint.
pub(super) const SOURCE_FORMS: &str = "`closure.source` is \"nix-store\" or a table with one key: \
     `{ registration = \"FILE\" }`, `{ graph = \"FILE\" }`, `{ path_info = \"FILE\" }`, \
     `{ dot = \"FILE\" }` or `{ binary_cache = \"URL\" }`";

/// The hint for a bad mode under `key` (`mode`, `dir_mode`, `file_mode`).
pub(super) fn mode_hint(key: &str) -> String {
    format!("write the mode as an octal string, e.g. `{key} = \"0644\"`, or as `0o644`")
}

/// The candidate nearest to `word`, if it is close enough to be a likely
/// typo: about a third of the word's length in edits, rounded up, so
/// `rots` → `roots` and `sauce` → `source` qualify but `foo` → `os` does
/// not. Edits are strsim's optimal-string-alignment distance, which counts
/// two swapped letters as one edit: `tga` → `tag`, the commonest typo,
/// qualifies (plain Levenshtein counts it as two). A candidate differing only by case always qualifies
/// (`entrypoint` → `Entrypoint`).
pub(super) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3).max(1);
    candidates
        .iter()
        .map(|&c| {
            let distance = if c.eq_ignore_ascii_case(word) {
                0
            } else {
                strsim::osa_distance(word, c)
            };
            (distance, c)
        })
        // min_by_key keeps the first of equal distances: the order the
        // candidates were declared in, so the answer is stable.
        .min_by_key(|&(distance, _)| distance)
        .filter(|&(distance, _)| distance <= limit)
        .map(|(_, c)| c)
}

/// The hint for an unknown `word` among `valid`: the nearest key, or the
/// list of valid ones when none is close.
pub(super) fn key_hint(word: &str, valid: &[&str]) -> Option<String> {
    if let Some(near) = nearest(word, valid) {
        return Some(format!("did you mean `{near}`?"));
    }
    if valid.is_empty() {
        return None;
    }
    let list: Vec<String> = valid.iter().map(|k| format!("`{k}`")).collect();
    Some(format!("valid keys: {}", list.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_picks_a_close_key_or_none() {
        let keys = ["roots", "source", "exclude"];
        assert_eq!(nearest("rots", &keys), Some("roots"));
        assert_eq!(nearest("sauce", &keys), Some("source"));
        assert_eq!(nearest("zzzzzz", &keys), None);
        // Swapped letters are one edit.
        assert_eq!(nearest("tga", &["name", "tag", "os"]), Some("tag"));
        assert_eq!(nearest("soruce", &keys), Some("source"));
        assert_eq!(nearest("foo", &["os", "tag"]), None);
        assert_eq!(
            nearest("entrypoint", &["Cmd", "Entrypoint"]),
            Some("Entrypoint")
        );
    }
}
