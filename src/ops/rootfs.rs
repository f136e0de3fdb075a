//! `--format rootfs`: the image's merged filesystem as one tar (nixpkgs'
//! `exportImage`, without a VM), for `docker import`, `machinectl
//! import-tar`, WSL or a microVM root.
//!
//! How: each layer (base layers, store layers, the customisation layer)
//! is written once to a spool file next to the output, and indexed
//! (headers only). The layers are then walked top-down to decide, for
//! every path, which layer's entry is visible: a later layer's entry wins;
//! a `.wh.NAME` whiteout hides `NAME` and what is below it in the layers
//! underneath; a `.wh..wh..opq` opaque marker hides a directory's contents
//! underneath; a file or symlink hides a lower directory's contents.
//! Whiteouts themselves never reach the output. The winners are written
//! in component-wise sorted order (a parent before its children), each
//! once, their bytes copied from the spool; a missing parent directory is
//! written as root's 0755 at `mtime`. Hard links become regular files with
//! their target's bytes, as nixpkgs' store layers do, so no entry refers
//! to another.
//!
//! Why a spool and not one streaming pass: the order needs later layers'
//! deletions before an earlier layer's entry can be written, and a
//! bottom-up stream cannot know them; a top-down stream would write
//! children before lower layers' parents. Memory holds the headers (one
//! per path), never file bytes; disk holds the uncompressed layers once,
//! removed when done (or on a signal).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::{BuildSettings, Error, PreparedImage, Reporter};
use crate::sink::{Spooled, SpooledBlob};
use crate::tar::read::{Member, MemberKind, TarIndex};
use crate::tar::{Header, Kind, TarWriter};

/// Chunk of file bytes copied at once.
const COPY: usize = 1 << 20;

/// What a rootfs export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootfsSummary {
    /// Entries in the tar.
    pub entries: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Layers merged.
    pub layers: usize,
}

/// A layer spooled and indexed.
struct SpooledLayer {
    spool: Spooled,
    index: TarIndex,
}

/// How a path hides entries of the layers below.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hide {
    /// The path and everything below it (a whiteout).
    AtAndBelow,
    /// Only what is below it (an opaque directory, a non-directory).
    Below,
}

/// The visible entry at a path: its layer and member.
type Winner<'a> = (usize, &'a Member);

fn components(name: &str) -> Vec<String> {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect()
}

fn layer_error(index: usize, what: String) -> Error {
    Error::Write(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("layer {}: {what}", index + 1),
    ))
}

/// Writes the merged filesystem of `image` as one tar to `out`, spooling
/// the layers in `spool_dir`; `reporter` hears of each layer's bytes as
/// they are spooled.
///
/// # Errors
/// When a layer cannot be written or read back, a member is unsafe (`..`)
/// or of a kind a rootfs tar does not carry (a device), or `out` fails.
pub fn export_rootfs<W: Write>(
    settings: &BuildSettings,
    image: &PreparedImage,
    spool_dir: &Path,
    out: W,
    reporter: &dyn Reporter,
) -> Result<(W, RootfsSummary), Error> {
    let mut layers = Vec::with_capacity(image.layers.len());
    for index in 0..image.layers.len() {
        let mut blob = SpooledBlob::new_in(spool_dir)?;
        let reporting = super::write::Progress {
            inner: &mut blob,
            index,
            reporter,
        };
        let digest = image.write_layer(settings, index, reporting)?;
        reporter.on_layer_done(index, &digest.diff_id);
        let spool = blob.finish()?;
        let index_of = TarIndex::read(BufReader::new(&spool.file))
            .map_err(|e| layer_error(index, e.to_string()))?;
        layers.push(SpooledLayer {
            spool,
            index: index_of,
        });
    }
    let indexes: Vec<&TarIndex> = layers.iter().map(|l| &l.index).collect();
    let winners = merge(&indexes)?;
    write_merged(&layers, &winners, settings.mtime, out)
}

/// The visible entry of every path, keyed by its components (so the map's
/// order is the output's: a parent before its children).
fn merge<'a>(layers: &[&'a TarIndex]) -> Result<BTreeMap<Vec<String>, Winner<'a>>, Error> {
    let mut winners: BTreeMap<Vec<String>, Winner<'_>> = BTreeMap::new();
    let mut hidden: HashMap<Vec<String>, Hide> = HashMap::new();
    // Every whiteout and opaque marker: its layer, its directory, and
    // its member, checked once all layers are read.
    let mut markers: Vec<(usize, Vec<String>, &Member)> = Vec::new();
    for (at, layer) in layers.iter().enumerate().rev() {
        let mut hides: Vec<(Vec<String>, Hide)> = Vec::new();
        for member in layer.members() {
            let comps = components(&member.name);
            if comps.iter().any(|c| c == "..") {
                return Err(layer_error(
                    at,
                    format!("member `{}` escapes `/` with `..`", member.raw_name),
                ));
            }
            let Some((base, parent)) = comps.split_last() else {
                continue; // `./` itself: the root is the importer's
            };
            // A whiteout is a marker, not a directory: a member under one
            // would put a whiteout's name in the output.
            if let Some(marker) = parent.iter().find(|c| c.starts_with(".wh.")) {
                return Err(layer_error(
                    at,
                    format!(
                        "member `{}` lies under the whiteout `{marker}`",
                        member.raw_name
                    ),
                ));
            }
            if base == ".wh..wh..opq" {
                markers.push((at, parent.to_vec(), member));
                hides.push((parent.to_vec(), Hide::Below));
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                // `.wh.`, `.wh..` and `.wh...` would remove the directory
                // itself or its parent: no runtime agrees on what that
                // means, and it names nothing inside the directory.
                if matches!(name, "" | "." | "..") {
                    return Err(layer_error(
                        at,
                        format!(
                            "whiteout `{}` names `{name}`, not an entry of its directory",
                            member.raw_name
                        ),
                    ));
                }
                markers.push((at, parent.to_vec(), member));
                let mut target = parent.to_vec();
                target.push(name.to_owned());
                hides.push((target, Hide::AtAndBelow));
                continue;
            }
            if let MemberKind::Other(kind) = member.kind {
                return Err(layer_error(
                    at,
                    format!(
                        "member `{}` is of tar type `{}`, which a rootfs tar does not carry",
                        member.raw_name,
                        char::from(kind).escape_default()
                    ),
                ));
            }
            let visible = hidden.get(&comps) != Some(&Hide::AtAndBelow)
                && (1..comps.len()).all(|n| !hidden.contains_key(&comps[..n]));
            if visible && !winners.contains_key(&comps) {
                winners.insert(comps.clone(), (at, member));
            }
            if member.kind != MemberKind::Directory {
                hides.push((comps, Hide::Below));
            }
        }
        // A layer's whiteouts hide only the layers below it.
        for (path, hide) in hides {
            let entry = hidden.entry(path).or_insert(hide);
            if hide == Hide::AtAndBelow {
                *entry = hide;
            }
        }
    }
    refuse_entries_under_non_directories(&winners)?;
    refuse_markers_under_non_directories(layers, &markers)?;
    Ok(winners)
}

/// Refuses a whiteout or opaque marker whose directory is, in its own
/// layer or the nearest one below that has it, a symbolic link or a file
/// (`link -> /etc`, then `link/.wh.passwd`). A runtime resolves such a
/// name through the link, to wherever in the root it points (docker and
/// containerd would remove `/etc/passwd`); applied by name here it would
/// remove nothing and leave a file the container does not have. What the
/// link resolves to is the runtime's to decide, so the export refuses,
/// naming the marker and the link, rather than guess.
fn refuse_markers_under_non_directories(
    layers: &[&TarIndex],
    markers: &[(usize, Vec<String>, &Member)],
) -> Result<(), Error> {
    for (at, dir, member) in markers {
        for n in 1..=dir.len() {
            let name = dir[..n].join("/");
            let Some(found) = layers[..=*at].iter().rev().find_map(|l| l.get(&name)) else {
                continue;
            };
            let what = match found.kind {
                MemberKind::Directory => continue,
                MemberKind::Symlink(_) => "a symbolic link",
                _ => "not a directory",
            };
            return Err(layer_error(
                *at,
                format!(
                    "whiteout `{}` lies under `{name}`, which is {what} in the layers it applies to",
                    member.raw_name
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a visible entry whose parent (or any ancestor) is visible as a
/// symlink or file: `link -> /etc` then `link/passwd`. A runtime applying
/// the layers resolves such a name through the link (inside the root), but
/// a tar holding both makes `tar -x`, `docker import` and friends write
/// through the link, maybe out of the extraction directory; the entry has
/// no place of its own in a merged filesystem, so it is an error naming it
/// (as `merge` refuses members under an earlier member's symlink).
fn refuse_entries_under_non_directories(
    winners: &BTreeMap<Vec<String>, Winner<'_>>,
) -> Result<(), Error> {
    for (path, (at, member)) in winners {
        for n in 1..path.len() {
            let Some((_, above)) = winners.get(&path[..n]) else {
                continue;
            };
            let what = match above.kind {
                MemberKind::Directory => continue,
                MemberKind::Symlink(_) => "a symbolic link",
                _ => "not a directory",
            };
            return Err(layer_error(
                *at,
                format!(
                    "member `{}` lies under `{}`, which is {what} in the merged filesystem",
                    member.raw_name,
                    path[..n].join("/")
                ),
            ));
        }
    }
    Ok(())
}

/// The regular member a hard link at layer `at` names: in its own layer or
/// one below, as an overlay would find it.
fn link_target<'a>(
    layers: &'a [SpooledLayer],
    at: usize,
    target: &str,
) -> Option<(usize, &'a Member)> {
    (0..=at).rev().find_map(|i| {
        layers[i]
            .index
            .get(target)
            .filter(|m| m.kind == MemberKind::Regular)
            .map(|m| (i, m))
    })
}

fn write_merged<W: Write>(
    layers: &[SpooledLayer],
    winners: &BTreeMap<Vec<String>, Winner<'_>>,
    mtime: u64,
    out: W,
) -> Result<(W, RootfsSummary), Error> {
    let write_err = Error::Write;
    let mut tar = TarWriter::new(io::BufWriter::with_capacity(COPY, out));
    let mut buf = vec![0u8; COPY];
    let mut entries = 0;
    let mut written_dirs: std::collections::HashSet<Vec<String>> = std::collections::HashSet::new();
    for (comps, (at, member)) in winners {
        // Parents no layer shows (a whiteout removed them, a layer named
        // only the child): root's, so every tool sees a parent first.
        for n in 1..comps.len() {
            let parent = &comps[..n];
            if !winners.contains_key(parent) && written_dirs.insert(parent.to_vec()) {
                let mut header =
                    Header::archive_member(&parent.join("/"), Kind::Directory, 0, mtime);
                header.uname = "root".to_owned();
                header.gname = "root".to_owned();
                tar.append(&header, &[]).map_err(write_err)?;
                entries += 1;
            }
        }
        let (kind, data) = match &member.kind {
            MemberKind::Directory => (Kind::Directory, None),
            MemberKind::Symlink(target) => (Kind::Symlink(target.as_bytes().to_vec()), None),
            MemberKind::Regular => (Kind::Regular, Some((*at, *member))),
            MemberKind::Hardlink(target) => {
                let Some(found) = link_target(layers, *at, target) else {
                    return Err(layer_error(
                        *at,
                        format!(
                            "hard link `{}` names `{target}`, which no layer at or below it has as a file",
                            member.raw_name
                        ),
                    ));
                };
                (Kind::Regular, Some(found))
            }
            MemberKind::Other(_) => continue, // refused in `merge`
        };
        let size = data.map_or(0, |(_, m)| m.size);
        let header = Header {
            name: comps.join("/").into_bytes(),
            kind,
            mode: member.mode,
            uid: member.uid,
            gid: member.gid,
            uname: member.uname.clone(),
            gname: member.gname.clone(),
            mtime: member.mtime,
            size,
        };
        tar.start_entry(&header).map_err(write_err)?;
        if let Some((from, source)) = data {
            copy_at(
                &layers[from].spool.file,
                source.offset,
                source.size,
                &mut tar,
                &mut buf,
            )
            .map_err(write_err)?;
        }
        tar.end_entry().map_err(write_err)?;
        entries += 1;
    }
    // Every entry so far, then the trailer `finish` pads to a record.
    let bytes_total = crate::tar::archive_len(tar.bytes_written());
    let buffered = tar.finish().map_err(write_err)?;
    let out = buffered
        .into_inner()
        .map_err(|e| Error::Write(e.into_error()))?;
    Ok((
        out,
        RootfsSummary {
            entries,
            bytes: bytes_total,
            layers: layers.len(),
        },
    ))
}

/// Copies `size` bytes at `offset` of `file` into `out`.
fn copy_at<W: Write>(
    file: &File,
    offset: u64,
    size: u64,
    out: &mut W,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut done = 0;
    while done < size {
        let n = usize::try_from(size - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        file.read_exact_at(&mut buf[..n], offset + done)?;
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A layer tar of `(name, kind)`: `d` directory, `f` file (its name as
    /// data), `l` symlink.
    fn layer(entries: &[(&str, char)]) -> TarIndex {
        let mut tar = TarWriter::new(Vec::new());
        for (name, kind) in entries {
            let (kind, data) = match kind {
                'd' => (Kind::Directory, Vec::new()),
                'l' => (Kind::Symlink(b"x".to_vec()), Vec::new()),
                _ => (Kind::Regular, name.as_bytes().to_vec()),
            };
            let header = Header::archive_member(name, kind, data.len() as u64, 0);
            tar.append(&header, &data).unwrap();
        }
        TarIndex::read(&tar.finish().unwrap()[..]).unwrap()
    }

    fn visible(layers: &[TarIndex]) -> Vec<(String, usize)> {
        let refs: Vec<&TarIndex> = layers.iter().collect();
        merge(&refs)
            .unwrap()
            .iter()
            .map(|(k, (at, _))| (k.join("/"), *at))
            .collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_replaced_dirs() {
        let layers = [
            layer(&[
                ("a/", 'd'),
                ("a/x", 'f'),
                ("a/y", 'f'),
                ("b/", 'd'),
                ("b/z", 'f'),
                ("c/", 'd'),
                ("c/w", 'f'),
                ("keep", 'f'),
            ]),
            layer(&[
                ("a/.wh.x", 'f'),
                ("b/", 'd'),
                ("b/.wh..wh..opq", 'f'),
                ("b/n", 'f'),
                ("c", 'l'),
            ]),
            // A whiteout hides only lower layers: `a/x` comes back here.
            layer(&[("a/x", 'f'), ("a/.wh.x", 'f'), ("keep", 'f')]),
        ];
        assert_eq!(
            visible(&layers),
            [
                ("a".to_owned(), 0),
                ("a/x".to_owned(), 2),
                ("a/y".to_owned(), 0),
                ("b".to_owned(), 1),
                ("b/n".to_owned(), 1),
                ("c".to_owned(), 1),
                ("keep".to_owned(), 2),
            ]
        );
    }

    #[test]
    fn dot_dot_is_refused() {
        let l = layer(&[("a/../../etc/passwd", 'f')]);
        assert!(merge(&[&l]).is_err());
    }

    /// A member under a whiteout or opaque marker (`.wh.foo/child`) is
    /// refused: its path would put the marker's name in the output.
    #[test]
    fn members_under_a_whiteout_are_refused() {
        for name in [".wh.foo/child", "a/.wh..wh..opq/child"] {
            let l = layer(&[(name, 'f')]);
            let e = match merge(&[&l]) {
                Err(e) => std::error::Error::source(&e).unwrap().to_string(),
                Ok(_) => panic!("merged {name}"),
            };
            assert!(
                e.contains(&format!("`{name}` lies under the whiteout")),
                "{e}"
            );
        }
    }

    /// A whiteout of `..`, `.` or nothing (`.wh...`, `.wh..`, `.wh.`) is
    /// refused naming it; it used to be ignored.
    #[test]
    fn whiteouts_of_dot_and_dot_dot_are_refused() {
        for name in ["a/.wh...", "a/.wh..", "a/.wh.", ".wh..."] {
            let lower = layer(&[("a/", 'd'), ("a/x", 'f')]);
            let upper = layer(&[(name, 'f')]);
            let e = match merge(&[&lower, &upper]) {
                Err(e) => std::error::Error::source(&e).unwrap().to_string(),
                Ok(_) => panic!("merged {name}"),
            };
            assert!(
                e.starts_with(&format!("layer 2: whiteout `{name}` names `")),
                "{e}"
            );
        }
    }

    /// A whiteout or opaque marker under a directory that is a symlink
    /// (or a file) in the layers it applies to is refused naming both: a
    /// runtime would follow the link. It used to be applied by name, which
    /// removed nothing and left `etc/passwd` in the export.
    #[test]
    fn whiteouts_under_a_symlinked_directory_are_refused() {
        let lower = || layer(&[("etc/", 'd'), ("etc/passwd", 'f'), ("link", 'l')]);
        for (upper, marker) in [
            (layer(&[("link/.wh.passwd", 'f')]), "link/.wh.passwd"),
            (layer(&[("link/.wh..wh..opq", 'f')]), "link/.wh..wh..opq"),
            (layer(&[("link/sub/.wh.x", 'f')]), "link/sub/.wh.x"),
        ] {
            let base = lower();
            let e = match merge(&[&base, &upper]) {
                Err(e) => std::error::Error::source(&e).unwrap().to_string(),
                Ok(_) => panic!("merged {marker}"),
            };
            assert_eq!(
                e,
                format!("layer 2: whiteout `{marker}` lies under `link`, which is a symbolic link in the layers it applies to")
            );
        }
        // In the same layer as the link, and under a file, too.
        let one = layer(&[("link", 'l'), ("link/.wh.x", 'f')]);
        assert!(merge(&[&one]).is_err());
        let file = layer(&[("f", 'f')]);
        let e = match merge(&[&file, &layer(&[("f/.wh.x", 'f')])]) {
            Err(e) => std::error::Error::source(&e).unwrap().to_string(),
            Ok(_) => panic!("merged f/.wh.x"),
        };
        assert!(e.contains("which is not a directory"), "{e}");
        // A directory that replaced the link in the marker's layer is
        // fine: the marker applies inside it.
        let replaced = layer(&[("link/", 'd'), ("link/.wh.passwd", 'f')]);
        assert_eq!(
            visible(&[lower(), replaced]),
            [
                ("etc".to_owned(), 0),
                ("etc/passwd".to_owned(), 0),
                ("link".to_owned(), 1),
            ]
        );
    }

    /// An entry under a path that is visible as a symlink (same layer or
    /// a higher one) or a file is refused naming both; one under a
    /// directory that replaced a lower symlink is fine.
    #[test]
    fn entries_under_a_symlink_or_file_are_refused() {
        let error = |layers: &[TarIndex]| {
            let refs: Vec<&TarIndex> = layers.iter().collect();
            match merge(&refs) {
                Err(e) => std::error::Error::source(&e).unwrap().to_string(),
                Ok(_) => panic!("merged"),
            }
        };
        let e = error(&[layer(&[("link", 'l'), ("link/evil", 'f')])]);
        assert_eq!(
            e,
            "layer 1: member `link/evil` lies under `link`, which is a symbolic link in the merged filesystem"
        );
        let e = error(&[layer(&[("link", 'l')]), layer(&[("link/a/evil", 'f')])]);
        assert!(
            e.starts_with("layer 2: member `link/a/evil` lies under `link`"),
            "{e}"
        );
        let e = error(&[layer(&[("f", 'f'), ("f/x", 'f')])]);
        assert!(e.contains("which is not a directory"), "{e}");
        // A directory replacing a lower symlink: what is in it is fine,
        // and the symlink's lower contents stay hidden.
        let layers = [
            layer(&[("d/", 'd'), ("d/old", 'f'), ("s", 'l')]),
            layer(&[("s/", 'd'), ("s/new", 'f')]),
        ];
        assert_eq!(
            visible(&layers),
            [
                ("d".to_owned(), 0),
                ("d/old".to_owned(), 0),
                ("s".to_owned(), 1),
                ("s/new".to_owned(), 1),
            ]
        );
    }

    proptest! {
        /// Never panics; no whiteout is ever visible; every visible path
        /// is its topmost occurrence.
        #[test]
        fn merge_never_shows_a_whiteout(
            layers in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        proptest::sample::select(vec!["a", "a/b", "a/b/c", "a/.wh.b", "a/.wh..wh..opq", ".wh.a", "d", "a/b/.wh.c", ".wh.a/b"]),
                        proptest::sample::select(vec!['d', 'f', 'l']),
                    ),
                    0..8,
                ),
                0..5,
            )
        ) {
            let built: Vec<TarIndex> = layers.iter().map(|l| layer(l)).collect();
            let refs: Vec<&TarIndex> = built.iter().collect();
            let winners = match merge(&refs) {
                Ok(winners) => winners,
                Err(e) => {
                    let text = std::error::Error::source(&e).unwrap().to_string();
                    prop_assert!(text.contains("lies under") || text.contains("names `"), "{text}");
                    return Ok(());
                }
            };
            for (path, (at, _)) in &winners {
                prop_assert!(!path.iter().any(|c| c.starts_with(".wh.")));
                let name = path.join("/");
                for higher in &built[at + 1..] {
                    prop_assert!(higher.get(&name).is_none(), "{name} is shadowed above");
                }
            }
        }
    }
}
