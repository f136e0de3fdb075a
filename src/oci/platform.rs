//! Which ELF machine an image platform runs: the mapping from the config's
//! `architecture` (GOARCH spelling, as OCI uses) to [`Machine`].
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
