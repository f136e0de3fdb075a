//! Nix's `builtins.parseDrvName`: a store path name split into its name
//! and version.

/// Splits `name` as Nix's `DrvName` constructor does (`names.cc`): the
/// name ends at the first `-` followed by a character that is not an
/// ASCII letter (Nix calls `isalpha` in the C locale); the rest, without
/// that dash, is the version. No such dash: the whole text is the name and
/// the version is empty. So `apache-httpd-2.0.48` gives (`apache-httpd`,
/// `2.0.48`), `bash--1-2` gives (`bash`, `-1-2`), `hello-` gives
/// (`hello-`, ``).
#[must_use]
pub fn parse_drv_name(name: &str) -> (&str, &str) {
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            // Both cuts sit next to an ASCII `-`, so on char boundaries.
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of Nix's own test (`tests/functional/lang/eval-okay-parse-drv-name`… and
    /// `names.cc`'s comment), plus edge cases.
    #[test]
    fn splits_as_nix_does() {
        for (text, name, version) in [
            ("ripgrep-1.2", "ripgrep", "1.2"),
            ("rip-grep-1.2", "rip-grep", "1.2"),
            ("7zip_archiver-0.2", "7zip_archiver", "0.2"),
            ("gcc-1-2", "gcc", "1-2"),
            ("bash--1-2", "bash", "-1-2"),
            ("xvidtune-?1-2", "xvidtune", "?1-2"),
            ("apache-httpd-2.0.48", "apache-httpd", "2.0.48"),
            ("python3.11-pip-23.0", "python3.11-pip", "23.0"),
            ("glibc-2.38-44-bin", "glibc", "2.38-44-bin"),
            ("hello", "hello", ""),
            ("hello-", "hello-", ""),
            ("-1.0", "", "1.0"),
            ("source", "source", ""),
            ("foo-_bar", "foo", "_bar"),
        ] {
            assert_eq!(parse_drv_name(text), (name, version), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_rejoins(text in "\\PC{0,40}") {
            let (name, version) = parse_drv_name(&text);
            if version.is_empty() && name == text {
                return Ok(());
            }
            proptest::prop_assert_eq!(format!("{name}-{version}"), text);
        }
    }
}
