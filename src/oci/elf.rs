//! The identity of an ELF file from its header: class, byte order and
//! machine (`e_ident[EI_CLASS]`, `e_ident[EI_DATA]`, `e_machine`), which is
//! all the architecture guard needs. Written by hand: the `goblin`/`object`
//! crates parse whole files; these are 20 fixed bytes of a documented header.
//!
//! Formats tier: bytes in, a value out; never panics on any input.

/// How many leading bytes [`identify`] looks at.
pub const HEADER_LEN: usize = 20;

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Not an ELF file (no `\x7fELF` magic): a script, data, anything.
    NotElf,
    /// The magic, but too short or with an unknown class or byte order.
    Malformed,
    /// An ELF file for this machine.
    Elf(Machine),
}

/// The machine an ELF file is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    /// `e_machine`, e.g. 62 (`EM_X86_64`).
    pub machine: u16,
    /// 64-bit (`ELFCLASS64`) rather than 32-bit.
    pub is_64: bool,
    /// Little-endian (`ELFDATA2LSB`).
    pub little_endian: bool,
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.machine {
            2 => "SPARC",
            3 => "Intel 80386",
            8 => "MIPS",
            20 => "PowerPC",
            21 => "PowerPC64",
            22 => "IBM S/390",
            40 => "ARM",
            43 => "SPARC V9",
            62 => "x86-64",
            183 => "AArch64",
            243 => "RISC-V",
            258 => "LoongArch",
            _ => "",
        };
        if name.is_empty() {
            write!(f, "e_machine {}", self.machine)?;
        } else {
            write!(f, "{name}")?;
        }
        write!(
            f,
            " ({}-bit {})",
            if self.is_64 { 64 } else { 32 },
            if self.little_endian { "LE" } else { "BE" }
        )
    }
}

/// Identifies `head`, the first bytes of a file (at least [`HEADER_LEN`]
/// of them when the file is that long).
#[must_use]
pub fn identify(head: &[u8]) -> Kind {
    if !head.starts_with(b"\x7fELF") {
        return Kind::NotElf;
    }
    let Some(header) = head.get(..HEADER_LEN) else {
        return Kind::Malformed;
    };
    let is_64 = match header[4] {
        1 => false,
        2 => true,
        _ => return Kind::Malformed,
    };
    let little_endian = match header[5] {
        1 => true,
        2 => false,
        _ => return Kind::Malformed,
    };
    let bytes = [header[18], header[19]];
    let machine = if little_endian {
        u16::from_le_bytes(bytes)
    } else {
        u16::from_be_bytes(bytes)
    };
    Kind::Elf(Machine {
        machine,
        is_64,
        little_endian,
    })
}

/// The interpreter of a `#!` script: the first word after `#!` on the
/// first line of `head`, when it is an absolute path.
#[must_use]
pub fn shebang(head: &[u8]) -> Option<&[u8]> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let word = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    word.starts_with(b"/").then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal ELF header: magic, class, data, version, then `e_machine`.
    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1;
        let m = if data == 2 {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn identifies_machines_in_both_byte_orders() {
        assert_eq!(
            identify(&header(2, 1, 183)),
            Kind::Elf(Machine {
                machine: 183,
                is_64: true,
                little_endian: true
            })
        );
        assert_eq!(
            identify(&header(2, 2, 22)),
            Kind::Elf(Machine {
                machine: 22,
                is_64: true,
                little_endian: false
            })
        );
        assert_eq!(identify(b"#!/bin/sh\n"), Kind::NotElf);
        assert_eq!(identify(b"\x7fELF\x02"), Kind::Malformed);
        assert_eq!(identify(&header(3, 1, 62)), Kind::Malformed);
        assert_eq!(
            identify(&header(2, 1, 183)).to_string_elf(),
            "AArch64 (64-bit LE)"
        );
    }

    impl Kind {
        fn to_string_elf(self) -> String {
            match self {
                Kind::Elf(m) => m.to_string(),
                other => format!("{other:?}"),
            }
        }
    }

    #[test]
    fn finds_the_interpreter_of_a_script() {
        assert_eq!(shebang(b"#!/bin/sh -e\necho"), Some(&b"/bin/sh"[..]));
        assert_eq!(
            shebang(b"#! /usr/bin/env python3\n"),
            Some(&b"/usr/bin/env"[..])
        );
        assert_eq!(shebang(b"#!sh\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = identify(&bytes);
            let _ = shebang(&bytes);
            let mut elf = b"\x7fELF".to_vec();
            elf.extend_from_slice(&bytes);
            let _ = identify(&elf).to_string_elf();
        }
    }
}
