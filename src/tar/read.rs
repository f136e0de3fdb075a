//! An index of a tar file's members (name, kind, where the data is), so
//! that members can be read in any order without extracting the archive.
//! Reads ustar, GNU (`L`/`K` long names, base-256 sizes) and PAX (`path`,
//! `linkpath`, `size`) headers; never panics on a malformed archive.
//!
//! Why hand-written rather than the `tar` crate (which the design card names
//! and which the writer side does not use either, see [`super::write`](mod@super::write)): the
//! archives read here are hostile, and what matters is what the reader
//! refuses *before* it allocates or reads on. `tar` 0.4.46 reads a GNU
//! long-name (`L`/`K`) or PAX (`x`) entry whole into memory whatever its
//! size field says (`EntryFields::read_all`, no cap): measured, a 1 GiB
//! `L` entry made it allocate 1.5 GiB (peak RSS) before it failed, where
//! this reader refuses the header; its `raw(true)` mode avoids that but ignores
//! PAX `size` overrides (members over 8 GiB from Go's writer). This reader
//! is one loop over 512-byte headers that checks each checksum, caps every
//! extended header ([`MAX_META`]), the number of members and the bytes of
//! their names, and checks a member's announced size against the caller's
//! byte budget *before* reading its data — so a compressed archive that
//! would expand past its budget fails at the header, not after spooling. It
//! stops at the end-of-archive block (trailing bytes are never read). The
//! property tests below (`never_panics_*`) mutate real archives and random
//! bytes and check it always returns, with an error or an index whose
//! offsets lie inside the input; `PROPTEST_CASES=200000` runs them as a
//! longer fuzz run (done for this choice: no failure).

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
    /// Its name as stored (after long-name and PAX records), for callers
    /// that must refuse absolute names or `..` rather than normalise them.
    pub raw_name: String,
    /// What it is.
    pub kind: MemberKind,
    /// Offset of its data in the tar.
    pub offset: u64,
    /// Length of its data.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner id (PAX `uid` over the header field).
    pub uid: u64,
    /// Group id (PAX `gid` over the header field).
    pub gid: u64,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// Modification time in whole seconds (PAX `mtime` truncated).
    pub mtime: u64,
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
    /// The archive goes past a limit (size, members, names), or holds a
    /// member no image has.
    #[error("tar member at byte {offset}: {what}")]
    Limit {
        /// Where the member's header starts.
        offset: u64,
        /// Which limit.
        what: String,
    },
}

/// Bounds on what [`TarIndex::read_limited`] accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most bytes the archive may span (headers and data), checked
    /// against each header's size field before its data is read.
    pub max_bytes: u64,
    /// Members larger than this must start as a layer does (a tar header or
    /// a gzip/zstd/xz magic): in an image nothing else is that large.
    pub large_member: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: u64::MAX,
            large_member: u64::MAX,
        }
    }
}

/// The most members an archive may have (an image has a few per layer).
pub const MAX_MEMBERS: usize = 1 << 20;
/// The most bytes all member names (and link targets) may take together.
pub const MAX_NAME_BYTES: usize = 64 << 20;

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
pub const MAX_META: u64 = 1 << 20;

/// Whether `head` (a member's first bytes) can start a layer: a tar header
/// with a valid checksum that is not all zeros, or a compressed stream.
fn looks_like_layer(head: &[u8]) -> bool {
    if crate::codec::Compression::sniff(head) != crate::codec::Compression::None {
        return true;
    }
    head.len() == 512 && head.iter().any(|&b| b != 0) && checksum_ok(head)
}

fn checksum_ok(block: &[u8]) -> bool {
    let Some(stored) = octal(&block[148..156]) else {
        return false;
    };
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
    sum == stored
}

impl TarIndex {
    /// Reads every header of the tar `r`, skipping the data.
    ///
    /// # Errors
    /// When reading fails, the archive is truncated or a header is malformed.
    pub fn read<R: Read>(r: R) -> Result<Self, TarError> {
        Self::read_limited(r, Limits::default())
    }

    /// [`TarIndex::read`] within `limits`.
    ///
    /// # Errors
    /// As [`TarIndex::read`], and when a limit is passed.
    pub fn read_limited<R: Read>(mut r: R, limits: Limits) -> Result<Self, TarError> {
        let mut index = Self::default();
        let mut name_bytes: usize = 0;
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
            if octal(&block[148..156]).is_none() {
                return Err(TarError::Malformed {
                    offset: start,
                    what: "bad checksum field",
                });
            }
            if !checksum_ok(&block) {
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
            let over_budget = |pos: u64, size: u64| {
                pos.checked_add(padded(size))
                    .is_none_or(|end| end > limits.max_bytes)
            };
            if matches!(typeflag, b'L' | b'K' | b'x' | b'g') {
                if size > MAX_META || over_budget(pos, size) {
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
            let mut uid = octal(&block[108..116]).unwrap_or(0);
            let mut gid = octal(&block[116..124]).unwrap_or(0);
            let mut mtime = octal(&block[136..148]).unwrap_or(0);
            let (mut uname, mut gname) = if &block[257..262] == b"ustar" {
                (cstr(&block[265..297]), cstr(&block[297..329]))
            } else {
                (String::new(), String::new())
            };
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
                    // Owners and times only describe; a bad one keeps the
                    // header's value rather than failing the archive.
                    "uid" => uid = v.parse().unwrap_or(uid),
                    "gid" => gid = v.parse().unwrap_or(gid),
                    "uname" => uname = v,
                    "gname" => gname = v,
                    "mtime" => {
                        let whole = v.split('.').next().unwrap_or("");
                        mtime = whole.parse().unwrap_or(mtime);
                    }
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
            let limit = |what: String| TarError::Limit {
                offset: start,
                what,
            };
            if over_budget(pos, data_len) {
                return Err(limit(format!(
                    "`{}` ({data_len} bytes) would take the archive past {} bytes",
                    normalize(&name),
                    limits.max_bytes
                )));
            }
            let link_len = match &kind {
                MemberKind::Symlink(l) | MemberKind::Hardlink(l) => l.len(),
                _ => 0,
            };
            name_bytes = name_bytes.saturating_add(2 * name.len() + link_len);
            if name_bytes > MAX_NAME_BYTES || index.members.len() >= MAX_MEMBERS {
                return Err(limit(format!(
                    "more than {MAX_MEMBERS} members or {MAX_NAME_BYTES} bytes of names"
                )));
            }
            let member = Member {
                name: normalize(&name),
                raw_name: name,
                kind,
                offset: pos,
                size: data_len,
                mode: u32::try_from(octal(&block[100..108]).unwrap_or(0o644) & 0o7777)
                    .unwrap_or(0o644),
                uid,
                gid,
                uname,
                gname,
                mtime,
            };
            let ends = || TarError::Malformed {
                offset: start,
                what: "archive ends inside a member",
            };
            let mut skipped = 0;
            if data_len > limits.large_member {
                // Nothing but a layer is this large in an image: look at its
                // first bytes before reading on through gigabytes.
                let mut head = [0u8; 512];
                let got = read_full(&mut r, &mut head)?;
                if got < head.len() {
                    return Err(ends());
                }
                if !looks_like_layer(&head) {
                    return Err(limit(format!(
                        "`{}` ({data_len} bytes) is neither a layer (tar or compressed \
                         tar) nor small enough for a JSON document",
                        member.name
                    )));
                }
                skipped = 512;
            }
            skip(&mut r, padded(data_len) - skipped).map_err(|_| ends())?;
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
    use crate::tar::{Header, Kind, TarWriter};

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

    /// A raw ustar header block with a valid checksum.
    fn raw_header(name: &[u8], typeflag: u8, size: &[u8]) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name);
        b[100..107].copy_from_slice(b"0000644");
        b[124..124 + size.len()].copy_from_slice(size);
        b[156] = typeflag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }

    /// A GNU long name announcing 8 GiB is refused at its header: the
    /// `tar` crate would try to read it whole into memory.
    #[test]
    fn huge_long_name_is_refused_at_the_header() {
        let mut bytes =
            raw_header(b"././@LongLink", b'L', b"\x80\0\0\0\0\x02\0\0\0\0\0\0").to_vec();
        bytes.extend_from_slice(&[b'a'; 4096]);
        assert!(matches!(
            TarIndex::read(&bytes[..]),
            Err(TarError::Malformed {
                offset: 0,
                what: "extended header too large"
            })
        ));
    }

    /// A member announcing more than the budget fails before its data is
    /// read; a large member that is not a layer fails at its first block.
    #[test]
    fn budget_and_large_members() {
        let limits = Limits {
            max_bytes: 1 << 20,
            large_member: 4096,
        };
        let mut big = raw_header(b"x", b'0', b"77777777777").to_vec();
        big.extend_from_slice(&[0; 1024]);
        let err = TarIndex::read_limited(&big[..], limits).unwrap_err();
        assert!(matches!(err, TarError::Limit { offset: 0, .. }), "{err}");
        // 8 KiB of zeros: neither JSON-sized nor a layer.
        let mut zeros = raw_header(b"x", b'0', b"00000020000").to_vec();
        zeros.extend_from_slice(&[0; 8192]);
        let err = TarIndex::read_limited(&zeros[..], limits).unwrap_err();
        assert!(err.to_string().contains("neither a layer"), "{err}");
        // The same size holding a tar (a layer) is fine.
        let mut layer = raw_header(b"x", b'0', b"00000020000").to_vec();
        let inner = raw_header(b"f", b'0', b"00000000000");
        layer.extend_from_slice(&inner);
        layer.extend_from_slice(&[0; 8192 - 512]);
        let index = TarIndex::read_limited(&layer[..], limits).unwrap();
        assert_eq!(index.members()[0].size, 8192);
        assert_eq!(index.members()[0].raw_name, "x");
    }

    fn sample_archive() -> Vec<u8> {
        let long = format!("{}/layer.tar", "d".repeat(120));
        let mut w = TarWriter::new(Vec::new());
        w.append(&header("dir/", Kind::Directory, 0), &[]).unwrap();
        w.append(&header(&long, Kind::Regular, 700), &[5; 700])
            .unwrap();
        w.append(
            &header("l", Kind::Symlink(long.clone().into_bytes()), 0),
            &[],
        )
        .unwrap();
        w.append(&header("manifest.json", Kind::Regular, 2), b"[]")
            .unwrap();
        w.finish().unwrap()
    }

    /// Every index the reader returns points inside its input.
    fn check_index(input: &[u8], index: &TarIndex) {
        for m in index.members() {
            assert!(m.offset + m.size <= input.len() as u64, "{m:?}");
        }
        // Resolving never loops.
        for m in index.members() {
            let _ = index.resolve(&m.name);
        }
    }

    proptest::proptest! {
        // 256 cases, or `PROPTEST_CASES` for a longer fuzz run.
        #![proptest_config(proptest::prelude::ProptestConfig::default())]

        /// Random bytes: an error or an index, never a panic or a hang.
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            if let Ok(index) = TarIndex::read(&bytes[..]) {
                check_index(&bytes, &index);
            }
        }

        /// A real archive with bytes overwritten (headers, sizes, long
        /// names), cut short, and read within small limits.
        #[test]
        fn never_panics_on_mutated_archives(
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..16),
            cut in 0usize..4096,
            fix_checksums in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = sample_archive();
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if fix_checksums {
                // Let mutations past the checksum reach the field parsers.
                for start in (0..bytes.len() / 512).map(|i| i * 512) {
                    let block = &mut bytes[start..start + 512];
                    if block.iter().all(|&b| b == 0) { continue; }
                    block[148..156].fill(b' ');
                    let sum: u32 = block.iter().map(|&x| u32::from(x)).sum();
                    block[148..155].copy_from_slice(format!("{:06o}\0", sum % 0o1000000).as_bytes());
                }
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            for limits in [Limits::default(), Limits { max_bytes: 2048, large_member: 600 }] {
                if let Ok(index) = TarIndex::read_limited(&bytes[..], limits) {
                    check_index(&bytes, &index);
                }
            }
        }
    }
}
