//! Which ELF machine an image platform runs: the mapping from the config's
//! `architecture` (GOARCH spelling, as OCI uses) to [`Machine`]; and how
//! two platforms' variants compare.
//!
//! Formats tier: a table, no I/O.

use super::elf::Machine;

/// The ELF machine, class and byte order that `architecture` executes, or
/// `None` for an architecture this table does not know (then nothing is
/// checked). `variant` (`v6`, `v7`, `v8`) is not told apart: it lives in
/// ARM attribute sections, not in the header.
#[must_use]
pub fn elf_machine(architecture: &str) -> Option<Machine> {
    let (machine, is_64, little_endian) = match architecture {
        "amd64" => (62, true, true),
        "386" => (3, false, true),
        "arm64" => (183, true, true),
        "arm" => (40, false, true),
        "ppc64le" => (21, true, true),
        "ppc64" => (21, true, false),
        "s390x" => (22, true, false),
        "riscv64" => (243, true, true),
        "loong64" => (258, true, true),
        "mips" => (8, false, false),
        "mipsle" => (8, false, true),
        "mips64" => (8, true, false),
        "mips64le" => (8, true, true),
        _ => return None,
    };
    Some(Machine {
        machine,
        is_64,
        little_endian,
    })
}

/// A platform's variant as docker and containerd compare them: `arm64`
/// without one is `v8` and `arm` without one `v7` (so an `arm64/v8` image
/// finds an index's plain `arm64` entry, and the other way round), and
/// `amd64`'s `v1` is none.
#[must_use]
pub fn comparable_variant<'a>(architecture: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (architecture, variant) {
        ("arm64", None | Some("8" | "v8")) => Some("v8"),
        ("arm", None) => Some("v7"),
        ("arm", Some("5")) => Some("v5"),
        ("arm", Some("6")) => Some("v6"),
        ("arm", Some("7")) => Some("v7"),
        ("arm", Some("8")) => Some("v8"),
        ("amd64", Some("v1")) => None,
        _ => variant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_common_platforms() {
        assert_eq!(elf_machine("amd64").map(|m| m.machine), Some(62));
        assert_eq!(elf_machine("arm64").map(|m| m.machine), Some(183));
        assert!(!elf_machine("arm").unwrap().is_64);
        assert!(!elf_machine("s390x").unwrap().little_endian);
        assert_eq!(elf_machine("wasm"), None);
    }
}
