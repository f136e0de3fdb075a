//! An index of a tar file's members (name, kind, where the data is), so
//! that members can be read in any order without extracting the archive.
//! Reads ustar, GNU (`L`/`K` long names, base-256 sizes) and PAX (`path`,
//! `linkpath`, `size`) headers; never panics on a malformed archive.

use std::collections::BTreeMap;
use std::io::{self, Read};

/// What a member is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link to the target.
    Symlink(String),
    /// A hard link to an earlier member.
    Hardlink(String),
    /// Anything else (devices, fifos): kept, never read.
    Other(u8),
}

/// One member of a tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name, without a leading `./` or trailing `/`.
    pub name: String,
    /// What it is.
    pub kind: MemberKind,
    /// Offset of its data in the tar.
    pub offset: u64,
    /// Length of its data.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// Why a tar could not be indexed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// Reading failed (or the file ended inside a member).
    #[error("failed to read the tar")]
    Io(#[from] io::Error),
    /// A header is not a tar header.
    #[error("malformed tar header at byte {offset}: {what}")]
    Malformed {
        /// Where the header starts.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

/// The members of a tar, in archive order; a later member of the same name
/// replaces an earlier one, as extraction would.
#[derive(Clone, Debug, Default)]
pub struct TarIndex {
    members: Vec<Member>,
    by_name: BTreeMap<String, usize>,
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, the top bit of the first byte is the flag.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `./a/b/` → `a/b`.
#[must_use]
pub fn normalize(name: &str) -> String {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest;
    }
    n.trim_start_matches('/').trim_end_matches('/').to_owned()
}

/// PAX records `"<len> key=value\n"`.
fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space + 1 || len > rest.len() {
            break;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&record[..eq]).into_owned(),
                String::from_utf8_lossy(&record[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[len..];
    }
    out
}

/// Largest long-name or PAX header read into memory.
const MAX_META: u64 = 1 << 20;

impl TarIndex {
    /// Reads every header of the tar `r`, skipping the data.
    ///
    /// # Errors
    /// When reading fails, the archive is truncated or a header is malformed.
    pub fn read<R: Read>(mut r: R) -> Result<Self, TarError> {
        let mut index = Self::default();
        let mut pos: u64 = 0;
        let mut block = [0u8; 512];
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut pax: Vec<(String, String)> = Vec::new();
        loop {
            let got = read_full(&mut r, &mut block)?;
            if got == 0 {
                // No end-of-archive blocks: accepted, as GNU tar does.
                break;
            }
            if got < 512 {
                return Err(TarError::Malformed {
                    offset: pos,
                    what: "truncated header",
                });
            }
            let start = pos;
            pos += 512;
            if block.iter().all(|&b| b == 0) {
                break;
            }
            let stored = octal(&block[148..156]).ok_or(TarError::Malformed {
                offset: start,
                what: "bad checksum field",
            })?;
            let sum: u64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(b)
                    }
                })
                .sum();
            if sum != stored {
                return Err(TarError::Malformed {
                    offset: start,
                    what: "checksum mismatch",
                });
            }
            let mut size = octal(&block[124..136]).ok_or(TarError::Malformed {
                offset: start,
                what: "bad size field",
            })?;
            let typeflag = block[156];
            let padded = |s: u64| s.div_ceil(512) * 512;
            if matches!(typeflag, b'L' | b'K' | b'x' | b'g') {
                if size > MAX_META {
                    return Err(TarError::Malformed {
                        offset: start,
                        what: "extended header too large",
                    });
                }
                let mut data = vec![0u8; usize::try_from(padded(size)).unwrap_or(0)];
                if read_full(&mut r, &mut data)? < data.len() {
                    return Err(TarError::Malformed {
                        offset: start,
                        what: "truncated extended header",
                    });
                }
                pos += data.len() as u64;
                data.truncate(usize::try_from(size).unwrap_or(0));
                match typeflag {
                    b'L' => long_name = Some(cstr(&data)),
                    b'K' => long_link = Some(cstr(&data)),
                    b'x' => pax = pax_records(&data),
                    _ => {} // global PAX headers: nothing here needs them
                }
                continue;
            }
            let mut name = cstr(&block[0..100]);
            if &block[257..262] == b"ustar" {
                let prefix = cstr(&block[345..500]);
                if !prefix.is_empty() {
                    name = format!("{prefix}/{name}");
                }
            }
            let mut link = cstr(&block[157..257]);
            if let Some(n) = long_name.take() {
                name = n;
            }
            if let Some(l) = long_link.take() {
                link = l;
            }
            for (k, v) in std::mem::take(&mut pax) {
                match k.as_str() {
                    "path" => name = v,
                    "linkpath" => link = v,
                    "size" => {
                        size = v.parse().map_err(|_| TarError::Malformed {
                            offset: start,
                            what: "bad PAX size",
                        })?;
                    }
                    _ => {}
                }
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' => MemberKind::Regular,
                b'5' => MemberKind::Directory,
                b'2' => MemberKind::Symlink(link),
                b'1' => MemberKind::Hardlink(normalize(&link)),
                other => MemberKind::Other(other),
            };
            // Only regular files carry data (hard links and others: none,
            // whatever the size field says, except GNU-style regular data).
            let data_len = if kind == MemberKind::Regular { size } else { 0 };
            let member = Member {
                name: normalize(&name),
                kind,
                offset: pos,
                size: data_len,
                mode: u32::try_from(octal(&block[100..108]).unwrap_or(0o644) & 0o7777)
                    .unwrap_or(0o644),
            };
            skip(&mut r, padded(data_len)).map_err(|_| TarError::Malformed {
                offset: start,
                what: "archive ends inside a member",
            })?;
            pos += padded(data_len);
            match index.by_name.get(&member.name) {
                Some(&i) => index.members[i] = member,
                None => {
                    index
                        .by_name
                        .insert(member.name.clone(), index.members.len());
                    index.members.push(member);
                }
            }
        }
        Ok(index)
    }

    /// The members, in archive order.
    #[must_use]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member `name` (normalised), if any.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.by_name
            .get(&normalize(name))
            .map(|&i| &self.members[i])
    }

    /// The regular file `name` refers to, following symbolic links
    /// (relative to the link's directory) and hard links.
    #[must_use]
    pub fn resolve(&self, name: &str) -> Option<&Member> {
        let mut current = normalize(name);
        for _ in 0..16 {
            let m = self.get(&current)?;
            match &m.kind {
                MemberKind::Regular => return Some(m),
                MemberKind::Hardlink(target) => current = target.clone(),
                MemberKind::Symlink(target) => {
                    let base = match current.rfind('/') {
                        Some(i) if !target.starts_with('/') => &current[..i],
                        _ => "",
                    };
                    current = join_path(base, target);
                }
                _ => return None,
            }
        }
        None
    }
}

/// `base/rel` with `.` and `..` resolved, never above the root.
fn join_path(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{Header, Kind, TarWriter};

    fn header(name: &str, kind: Kind, size: u64) -> Header {
        Header::archive_member(name, kind, size, 1)
    }

    #[test]
    fn indexes_members_long_names_and_links() {
        let long = format!("{}/layer.tar", "d".repeat(150));
        let mut w = TarWriter::new(Vec::new());
        w.append(&header("dir/", Kind::Directory, 0), &[]).unwrap();
        w.append(&header(&long, Kind::Regular, 5), b"hello")
            .unwrap();
        w.append(
            &header(
                "other/layer.tar",
                Kind::Symlink(format!("../{long}").into_bytes()),
                0,
            ),
            &[],
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        let index = TarIndex::read(&bytes[..]).unwrap();
        assert_eq!(index.members().len(), 3);
        let m = index.resolve("other/layer.tar").unwrap();
        assert_eq!(m.name, long);
        let at = usize::try_from(m.offset).unwrap();
        assert_eq!(&bytes[at..at + 5], b"hello");
        assert_eq!(index.get("./dir/").unwrap().kind, MemberKind::Directory);
    }

    #[test]
    fn numbers_are_octal_or_base_256() {
        assert_eq!(octal(b"0000012\0"), Some(10));
        assert_eq!(octal(b"\x80\0\0\0\0\0\0\x01"), Some(1));
        assert_eq!(octal(b"        "), Some(0));
        assert_eq!(octal(b"9\0"), None);
    }

    #[test]
    fn malformed_archives_are_errors() {
        let mut w = TarWriter::new(Vec::new());
        w.append(&header("a", Kind::Regular, 600), &[7; 600])
            .unwrap();
        let bytes = w.finish().unwrap();
        // A flipped byte in the header breaks its checksum.
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(matches!(
            TarIndex::read(&bad[..]),
            Err(TarError::Malformed { offset: 0, .. })
        ));
        // Cut inside the member.
        let cut = &bytes[..700];
        assert!(TarIndex::read(cut).is_err());
        // Cut inside a header.
        assert!(TarIndex::read(&bytes[..100]).is_err());
        // Not a tar at all.
        assert!(TarIndex::read(&[b'x'; 1024][..]).is_err());
    }
}
