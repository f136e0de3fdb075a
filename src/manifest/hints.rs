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

/// Levenshtein distance in characters. Hand-written: ten lines do not
/// justify a dependency, and only short key names are compared.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // One row of the classic dynamic-programming table at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The candidate nearest to `word`, if it is close enough to be a likely
/// typo: about a third of the word's length in edits, rounded up, so
/// `rots` → `roots` and `sauce` → `source` qualify but `foo` → `os` does
/// not. A candidate differing only by case always qualifies
/// (`entrypoint` → `Entrypoint`).
pub(super) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3).max(1);
    candidates
        .iter()
        .map(|&c| {
            let distance = if c.eq_ignore_ascii_case(word) {
                0
            } else {
                edit_distance(word, c)
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
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("rots", "roots"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn nearest_picks_a_close_key_or_none() {
        let keys = ["roots", "source", "exclude"];
        assert_eq!(nearest("rots", &keys), Some("roots"));
        assert_eq!(nearest("sauce", &keys), Some("source"));
        assert_eq!(nearest("zzzzzz", &keys), None);
        assert_eq!(nearest("foo", &["os", "tag"]), None);
        assert_eq!(
            nearest("entrypoint", &["Cmd", "Entrypoint"]),
            Some("Entrypoint")
        );
    }
}
