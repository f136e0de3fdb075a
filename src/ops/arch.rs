//! The architecture guard: the entrypoint (`Entrypoint[0]`, else `Cmd[0]`)
//! and the programs in the roots' `bin/` must be ELF files for the image
//! platform, or a container only fails with "exec format error" once it
//! is deployed.
//!
//! Paths are resolved lexically inside the image: store paths the layers
//! hold (read through the [`Store`] seam) and the customisation tree.
//! Symlinks are followed only as the image sees them (an absolute target
//! from the image root, `..` clamped at `/`), never out of the image; a
//! path that leads nowhere in the image (the base image, a `run` script's
//! output) is not checked. A `#!` script's interpreter is checked in its
//! place, once. Files that are not ELF are fine.

use std::collections::{BTreeSet, VecDeque};
use std::io::Read;

use super::{BuildSettings, Error, LayerContent, PreparedImage};
use crate::layer::customisation::{CustomisationTree, FileData, TreeNode};
use crate::oci::elf::{self, Kind, Machine};
use crate::oci::platform;
use crate::store::{EntryKind, Store};

/// How many leading bytes are read: the ELF header, or a `#!` line.
const HEAD: u64 = 256;
/// Symlinks followed for one path before giving up (Linux's `MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// A program that would not run on the image platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The path in the image, as the config or the root names it.
    pub file: String,
    /// The ELF file it resolves to, when it differs (a symlink or a
    /// script's interpreter).
    pub resolved: Option<String>,
    /// The machine that file is built for.
    pub found: Machine,
    /// The image platform, e.g. `linux/amd64`.
    pub platform: String,
    /// The machine the platform runs.
    pub expected: Machine,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.file)?;
        if let Some(resolved) = &self.resolved {
            write!(f, " (`{resolved}`)")?;
        }
        write!(
            f,
            " is an ELF executable for {}, but the image platform is {} ({})",
            self.found, self.platform, self.expected
        )
    }
}

/// A file found in the image.
enum Source<'a> {
    Store(Vec<u8>),
    Tree(&'a FileData),
}

enum Node<'a> {
    Directory,
    File(Source<'a>),
    Symlink(Vec<u8>),
}

/// The image's file tree as far as this build knows it.
struct ImageView<'a, S> {
    store: &'a S,
    store_comps: Vec<Vec<u8>>,
    /// Base names of the store paths in the layers.
    paths: BTreeSet<&'a str>,
    tree: Option<&'a CustomisationTree>,
}

fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut name = Vec::new();
    for c in comps {
        name.push(b'/');
        name.extend_from_slice(c);
    }
    name
}

impl<'a, S: Store> ImageView<'a, S> {
    fn node(&self, comps: &[Vec<u8>]) -> Result<Option<Node<'a>>, Error> {
        let n = self.store_comps.len();
        if comps.len() <= n && self.store_comps.starts_with(comps) {
            return Ok(Some(Node::Directory));
        }
        if comps.starts_with(&self.store_comps) {
            // Only store layers fill the store directory, and only with
            // the store paths they hold.
            let in_image = std::str::from_utf8(&comps[n]).is_ok_and(|b| self.paths.contains(b));
            if !in_image {
                return Ok(None);
            }
            let name = join(comps);
            let entry = self
                .store
                .entry(&name)
                .map_err(|e| Error::Layer(e.into()))?;
            return Ok(entry.map(|e| match e.kind {
                EntryKind::Directory => Node::Directory,
                EntryKind::Regular { .. } => Node::File(Source::Store(name)),
                EntryKind::Symlink { target } => Node::Symlink(target),
            }));
        }
        Ok(self.tree.and_then(|t| t.lookup(comps)).map(|n| match n {
            TreeNode::Directory => Node::Directory,
            TreeNode::File(data) => Node::File(Source::Tree(data)),
            TreeNode::Symlink(target) => Node::Symlink(target.to_vec()),
        }))
    }

    /// The regular file `path` names in the image, and its resolved name.
    fn resolve(&self, path: &[u8]) -> Result<Option<(Vec<u8>, Source<'a>)>, Error> {
        let mut pending: VecDeque<Vec<u8>> = components(path).collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => resolved.push(c),
            }
            match self.node(&resolved)? {
                None => return Ok(None),
                Some(Node::Directory) => {}
                Some(Node::File(source)) => {
                    return Ok(pending.is_empty().then(|| (join(&resolved), source)));
                }
                Some(Node::Symlink(target)) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Ok(None);
                    }
                    resolved.pop();
                    if target.starts_with(b"/") {
                        resolved.clear();
                    }
                    for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(c);
                    }
                }
            }
        }
        Ok(None)
    }

    fn head(&self, source: &Source<'_>) -> Result<Vec<u8>, Error> {
        let mut head = Vec::new();
        match source {
            Source::Store(name) => {
                let reader = self.store.open(name).map_err(|e| Error::Layer(e.into()))?;
                reader.take(HEAD).read_to_end(&mut head).map_err(|source| {
                    Error::Layer(
                        crate::store::Error::Io {
                            path: self.store.location(name),
                            source,
                        }
                        .into(),
                    )
                })?;
            }
            Source::Tree(FileData::Inline(bytes)) => {
                head.extend_from_slice(&bytes[..bytes.len().min(HEAD as usize)]);
            }
            Source::Tree(FileData::Disk(path)) => {
                std::fs::File::open(path)
                    .and_then(|f| f.take(HEAD).read_to_end(&mut head))
                    .map_err(|source| {
                        Error::Layer(
                            crate::store::Error::Io {
                                path: path.clone(),
                                source,
                            }
                            .into(),
                        )
                    })?;
            }
        }
        Ok(head)
    }

    /// The ELF machine of the program `path`, following a `#!` line to
    /// its interpreter once; `None` when it is not an ELF file in the image.
    fn machine(&self, path: &[u8]) -> Result<Option<(Vec<u8>, Machine)>, Error> {
        let mut path = path.to_vec();
        for _ in 0..2 {
            let Some((name, source)) = self.resolve(&path)? else {
                return Ok(None);
            };
            let head = self.head(&source)?;
            match elf::identify(&head) {
                Kind::Elf(machine) => return Ok(Some((name, machine))),
                Kind::Malformed => return Ok(None),
                Kind::NotElf => match elf::shebang(&head) {
                    Some(interpreter) => path = interpreter.to_vec(),
                    None => return Ok(None),
                },
            }
        }
        Ok(None)
    }
}

/// The programs whose architecture matters: the entrypoint, then the
/// roots' `bin/` entries.
fn targets<S: Store>(
    settings: &BuildSettings,
    view: &ImageView<'_, S>,
) -> Result<Vec<String>, Error> {
    let config = &settings.config.config;
    let first = |key: &str| {
        config
            .get(key)
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let mut targets = Vec::new();
    if let Some(entry) = first("Entrypoint").or_else(|| first("Cmd")) {
        if entry.starts_with('/') {
            targets.push(entry);
        }
    }
    for root in &settings.roots {
        if !view.paths.contains(root.base_name()) {
            continue;
        }
        let bin = format!("{}/bin", root.as_str());
        let is_dir = view
            .store
            .entry(bin.as_bytes())
            .map_err(|e| Error::Layer(e.into()))?
            .is_some_and(|e| e.kind == EntryKind::Directory);
        if !is_dir {
            continue;
        }
        for name in view
            .store
            .read_dir(bin.as_bytes())
            .map_err(|e| Error::Layer(e.into()))?
        {
            let program = format!("{bin}/{}", String::from_utf8_lossy(&name));
            // The entrypoint is often one of these: name each file once,
            // not once as the entrypoint and again as a root's program.
            if !targets.contains(&program) {
                targets.push(program);
            }
        }
    }
    Ok(targets)
}

/// Every program of the image (see the module) built for another machine
/// than the image platform; empty when the platform is not one
/// [`platform::elf_machine`] knows.
///
/// # Errors
/// When a store file cannot be read.
pub fn check(settings: &BuildSettings, image: &PreparedImage) -> Result<Vec<Mismatch>, Error> {
    let spec = &settings.config;
    let Some(expected) = platform::elf_machine(&spec.architecture) else {
        return Ok(Vec::new());
    };
    let mut platform = format!("{}/{}", spec.os, spec.architecture);
    if let Some(variant) = &spec.variant {
        platform.push('/');
        platform.push_str(variant);
    }
    let view = view(settings, image);
    let mut mismatches = Vec::new();
    for file in targets(settings, &view)? {
        if let Some((name, found)) = view.machine(file.as_bytes())? {
            if found != expected {
                let name = String::from_utf8_lossy(&name).into_owned();
                mismatches.push(Mismatch {
                    resolved: (name != file).then_some(name),
                    file,
                    found,
                    platform: platform.clone(),
                    expected,
                });
            }
        }
    }
    Ok(mismatches)
}

/// The image's files as this build knows them: the store paths of its
/// layers and the customisation tree.
fn view<'a>(
    settings: &'a BuildSettings,
    image: &'a PreparedImage,
) -> ImageView<'a, impl Store + 'a> {
    let tree = image.layers.iter().find_map(|l| match &l.content {
        LayerContent::Customisation(tree) => Some(&**tree),
        _ => None,
    });
    ImageView {
        store: &settings.store,
        store_comps: components(settings.store.dir().as_str().as_bytes()).collect(),
        paths: image
            .plan
            .layers
            .iter()
            .flatten()
            .map(|p| p.base_name())
            .collect(),
        tree,
    }
}

/// The user or group `config.User` names (`app`, `app:staff`, `1000:staff`;
/// numeric ids need no file) when the image has no `/etc/passwd` or
/// `/etc/group` to find it in: a runtime then refuses to start the
/// container ("unable to find user app: no matching entries in passwd
/// file"). `[[users]]`/`[[groups]]` write both files, and ones from
/// `contents` or `files` count; an image with a base image or a `run`
/// script is not checked, since either may bring the files and neither
/// is read here. Returns `("user" | "group", name, file)`.
///
/// # Errors
/// When a store file cannot be read.
pub fn unresolvable_user(
    settings: &BuildSettings,
    image: &PreparedImage,
) -> Result<Option<(&'static str, String, &'static str)>, Error> {
    let Some(user) = settings.config.config.get("User").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let content = &settings.content;
    if content.base.is_some() || content.base_pull.is_some() || content.run.is_some() {
        return Ok(None);
    }
    let (user, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let named = |s: &str| !s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit());
    let view = view(settings, image);
    for (kind, name, file) in [
        ("user", Some(user), "/etc/passwd"),
        ("group", group, "/etc/group"),
    ] {
        if let Some(name) = name.filter(|n| named(n)) {
            if view.resolve(file.as_bytes())?.is_none() {
                return Ok(Some((kind, name.to_owned(), file)));
            }
        }
    }
    Ok(None)
}
