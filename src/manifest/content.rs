//! The manifest's image-content sections (SPEC §1, §4): `[customisation]`,
//! `[base]`, and their checks, each pointing at the offending value.
//!
//! Paths in the image are checked here (absolute, no `..`, not `/`), modes
//! parsed (`"0644"`, `"1777"` or a TOML integer such as `0o644`), and
//! `source` files resolved against the manifest's directory and checked to
//! exist, so a bad value is reported at its line before anything is built.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::hints::mode_hint;
use super::{Error, LoadedManifest};

/// `[customisation]`: the top layer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomisationSection {
    /// Store paths merged into `/` (symlinkJoin).
    #[serde(default)]
    pub contents: Vec<Spanned<String>>,
    /// `"error"` (default) or `"first"`.
    pub on_collision: Option<Spanned<String>>,
    /// `[[customisation.files]]`.
    #[serde(default)]
    pub files: Vec<FileSection>,
    /// `[[customisation.dirs]]`.
    #[serde(default)]
    pub dirs: Vec<DirSection>,
    /// `[[customisation.symlinks]]`.
    #[serde(default)]
    pub symlinks: Vec<SymlinkSection>,
    /// `[[customisation.permissions]]`.
    #[serde(default)]
    pub permissions: Vec<PermissionSection>,
    /// A shell script run over the tree as fake root.
    pub run: Option<Spanned<String>>,
    /// Run the script inside the image root (store visible read-only).
    pub chroot: Option<Spanned<bool>>,
}

/// A mode as written: `"0644"` or an integer (`0o644`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ModeSpec {
    /// Octal digits.
    Text(String),
    /// A TOML integer, taken as the mode's value.
    Number(i64),
}

/// `[[customisation.files]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSection {
    /// Absolute path in the image.
    pub path: Spanned<String>,
    /// Contents, given inline.
    pub text: Option<Spanned<String>>,
    /// Contents, copied from this file (relative to the manifest).
    pub source: Option<Spanned<PathBuf>>,
    /// Default `0644`.
    pub mode: Option<Spanned<ModeSpec>>,
}

/// `[[customisation.dirs]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSection {
    /// Absolute path in the image.
    pub path: Spanned<String>,
    /// Default `0755`.
    pub mode: Option<Spanned<ModeSpec>>,
}

/// `[[customisation.symlinks]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSection {
    /// Absolute path in the image.
    pub path: Spanned<String>,
    /// Where it points, verbatim.
    pub target: Spanned<String>,
}

/// `[[customisation.permissions]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSection {
    /// A path or glob (`*`, `?`, `**`).
    pub path: Spanned<String>,
    /// New owner id (32 bits, as in [`super::OwnerSection`]).
    pub uid: Option<u32>,
    /// New group id.
    pub gid: Option<u32>,
    /// New owner name.
    pub uname: Option<String>,
    /// New group name.
    pub gname: Option<String>,
    /// Mode of files and directories.
    pub mode: Option<Spanned<ModeSpec>>,
    /// Mode of directories, over `mode`.
    pub dir_mode: Option<Spanned<ModeSpec>>,
    /// Mode of regular files, over `mode`.
    pub file_mode: Option<Spanned<ModeSpec>>,
}

/// `[base]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSection {
    /// A docker-archive (plain, gzip, zstd, xz), an OCI archive or an OCI
    /// layout directory; or `docker://HOST/NAME[:TAG]@sha256:…`.
    pub image: Spanned<PathBuf>,
}

/// A checked `[[customisation.files]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomFile {
    /// Normalised absolute path.
    pub path: String,
    /// Its contents.
    pub content: CustomFileContent,
    /// Its mode.
    pub mode: u32,
}

/// Where a file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomFileContent {
    /// `text`.
    Text(String),
    /// `source`, resolved against the manifest's directory.
    Source(PathBuf),
}

/// A checked `[[customisation.permissions]]` entry: which paths, and the
/// owner and mode overrides for them. The settings make a
/// `layer::PermissionRule` of it: matching and applying are the layer
/// stage's, which takes resolved values and knows no manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionOverride {
    /// The normalised pattern, absolute (`/nix/var/nix/**`).
    pub pattern: String,
    /// New owner id.
    pub uid: Option<u64>,
    /// New group id.
    pub gid: Option<u64>,
    /// New owner name; when `uid` is set without it, the name is cleared so
    /// that name-preferring tools fall back to the number.
    pub uname: Option<String>,
    /// New group name, cleared likewise when only `gid` is set.
    pub gname: Option<String>,
    /// Mode of files and directories (not symlinks, whose mode means nothing).
    pub mode: Option<u32>,
    /// Mode of directories, over `mode`.
    pub dir_mode: Option<u32>,
    /// Mode of regular files, over `mode`.
    pub file_mode: Option<u32>,
}

/// The checked `[customisation]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Customisation {
    /// `contents`, as written (store paths are parsed by the settings).
    pub contents: Vec<Spanned<String>>,
    /// `on_collision = "first"`.
    pub first_wins: bool,
    /// `files`.
    pub files: Vec<CustomFile>,
    /// `dirs`: path and mode.
    pub dirs: Vec<(String, u32)>,
    /// `symlinks`: path and target.
    pub symlinks: Vec<(String, String)>,
    /// `permissions`.
    pub permissions: Vec<PermissionOverride>,
    /// `run`: the script, if any.
    pub run: Option<String>,
    /// `chroot`: the script runs inside the image root, as real root.
    pub chroot: bool,
}

/// The normalised form of absolute image path `path`, or why it is invalid.
/// `allow_root` admits `/` itself (a permission rule may name it).
pub(super) fn normalise_image_path(path: &str, allow_root: bool) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must be an absolute path in the image"));
    }
    // A tar name ends at its first NUL: `/x\0y` would silently become `/x`.
    if path.contains('\0') {
        return Err(format!(
            "`{}` holds a NUL byte, which no file name in an image can",
            path.escape_debug()
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("`{path}` escapes `/`: `..` is not allowed")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() && !allow_root {
        return Err("`/` itself cannot be a file, directory or symlink".to_owned());
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses a mode: octal digits (`"644"`, `"0644"`, `"1777"`) or an integer.
pub(super) fn parse_mode(mode: &ModeSpec) -> Result<u32, String> {
    let value = match mode {
        ModeSpec::Text(text) => {
            let digits = text.strip_prefix("0o").unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(format!("`{text}` is not an octal mode"));
            }
            u32::from_str_radix(digits, 8).map_err(|_| format!("`{text}` is not an octal mode"))?
        }
        ModeSpec::Number(n) => u32::try_from(*n).map_err(|_| format!("`{n}` is not a mode"))?,
    };
    if value > 0o7777 {
        return Err(format!(
            "mode `{value:o}` is larger than `7777` (permission bits only)"
        ));
    }
    Ok(value)
}

impl LoadedManifest {
    fn mode_at(
        &self,
        key: &str,
        mode: Option<&Spanned<ModeSpec>>,
        default: u32,
    ) -> Result<u32, Error> {
        let Some(m) = mode else {
            return Ok(default);
        };
        let hint = Some(mode_hint(key));
        if let ModeSpec::Number(n) = m.get_ref() {
            // TOML forgets how an integer was written; the text does not.
            // `644` is decimal 644 (`0o1204`), never what was meant, so only
            // an `0o` literal is taken as a mode.
            let written = self.text.get(m.span()).unwrap_or("").trim();
            if !written.trim_start_matches('+').starts_with("0o") {
                return Err(self.error_at(
                    m.span(),
                    format!("`{key} = {written}` is a decimal integer ({n}), not an octal mode"),
                    hint,
                ));
            }
        }
        parse_mode(m.get_ref()).map_err(|msg| self.error_at(m.span(), msg, hint))
    }

    fn path_at(&self, path: &Spanned<String>, allow_root: bool) -> Result<String, Error> {
        normalise_image_path(path.get_ref(), allow_root)
            .map_err(|msg| self.error_at(path.span(), msg, None))
    }

    /// A file, directory or symlink path: also never inside the store
    /// directory, which only whole store paths fill (SPEC §4).
    fn entry_path_at(&self, path: &Spanned<String>) -> Result<String, Error> {
        let normal = self.path_at(path, false)?;
        let store = self.store_dir().unwrap_or(super::DEFAULT_STORE_DIR);
        let inside = normal
            .strip_prefix(store)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if inside {
            return Err(self.error_at(
                path.span(),
                format!("`{normal}` is inside the store directory `{store}`"),
                Some("store paths enter the image only through `closure.roots` and `customisation.contents`".to_owned()),
            ));
        }
        Ok(normal)
    }

    /// Where `customisation.{field}` (`files`, `dirs` or `symlinks`) gives
    /// the image path `path` (normalised as [`LoadedManifest::customisation`]
    /// gives it), for an error found while building.
    #[must_use]
    pub fn entry_span(&self, field: &str, path: &str) -> Option<std::ops::Range<usize>> {
        let section = &self.manifest.customisation;
        let paths: Vec<&Spanned<String>> = match field {
            "files" => section.files.iter().map(|f| &f.path).collect(),
            "dirs" => section.dirs.iter().map(|d| &d.path).collect(),
            "symlinks" => section.symlinks.iter().map(|l| &l.path).collect(),
            _ => Vec::new(),
        };
        paths
            .into_iter()
            .find(|p| normalise_image_path(p.get_ref(), false).is_ok_and(|n| n == path))
            .map(Spanned::span)
    }

    /// Where the `[[customisation.permissions]]` rule whose normalised
    /// pattern is `pattern` is written, for an error found while building.
    #[must_use]
    pub fn permission_span(&self, pattern: &str) -> Option<std::ops::Range<usize>> {
        self.manifest
            .customisation
            .permissions
            .iter()
            .find(|p| normalise_image_path(p.path.get_ref(), true).is_ok_and(|n| n == pattern))
            .map(|p| p.path.span())
    }

    /// Where `customisation.contents` names the store path that `path` is
    /// or is inside of (`/nix/store/…-app/etc/x`), for an error found while
    /// building.
    #[must_use]
    pub fn contents_span(&self, path: &str) -> Option<std::ops::Range<usize>> {
        self.manifest
            .customisation
            .contents
            .iter()
            .find(|c| {
                let entry = c.get_ref().trim_end_matches('/');
                !entry.is_empty()
                    && path
                        .strip_prefix(entry)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(Spanned::span)
    }

    /// The `[customisation]` section, checked.
    ///
    /// # Errors
    /// At the first invalid value: a path that is relative, has `..` or is
    /// `/`, a malformed mode, a file with both or neither of `text` and
    /// `source`, a `source` that is not a readable file, an unknown
    /// `on_collision`, or a permission rule that changes nothing.
    pub fn customisation(&self) -> Result<Customisation, Error> {
        let section = &self.manifest.customisation;
        let first_wins = match &section.on_collision {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "error" => false,
                "first" => true,
                other => {
                    return Err(self.error_at(
                        v.span(),
                        format!("unknown `customisation.on_collision` value `{other}`"),
                        Some("`customisation.on_collision` is `error` or `first`".to_owned()),
                    ))
                }
            },
        };
        // Two entries for one path are a mistake (the later would silently
        // replace the earlier): the path, and the line it was first given at.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut once = |path: &Spanned<String>, normal: &str| -> Result<(), Error> {
            let line = self.line_col(path.span().start).0;
            match seen.insert(normal.to_owned(), line) {
                None => Ok(()),
                Some(first) => {
                    seen.insert(normal.to_owned(), first);
                    Err(self.error_at(
                        path.span(),
                        format!(
                            "`{normal}` is already a file, directory or symlink at line {first}"
                        ),
                        Some(
                            "give each image path once in `files`, `dirs` and `symlinks`"
                                .to_owned(),
                        ),
                    ))
                }
            }
        };
        let mut files = Vec::with_capacity(section.files.len());
        for f in &section.files {
            let path = self.entry_path_at(&f.path)?;
            once(&f.path, &path)?;
            // Without `mode`, a `source` keeps only whether it is
            // executable, as a NAR (and git) do: 0755 or 0644, so an
            // entry-point script stays runnable (as docker's COPY keeps
            // it) while the checkout's umask changes nothing.
            let mut default_mode = 0o644;
            let content = match (&f.text, &f.source) {
                (Some(text), None) => CustomFileContent::Text(text.get_ref().clone()),
                (None, Some(source)) => {
                    let file = self.resolve(source.get_ref());
                    match std::fs::metadata(&file) {
                        Ok(meta) if meta.is_file() => {
                            use std::os::unix::fs::PermissionsExt as _;
                            if meta.permissions().mode() & 0o100 != 0 {
                                default_mode = 0o755;
                            }
                            CustomFileContent::Source(file)
                        }
                        Ok(_) => {
                            return Err(self.error_at(
                                source.span(),
                                format!("source `{}` is not a regular file", file.display()),
                                None,
                            ))
                        }
                        Err(e) => {
                            return Err(self.error_at(
                                source.span(),
                                format!("cannot read source `{}`: {e}", file.display()),
                                Some("`source` is relative to the manifest's directory".to_owned()),
                            ))
                        }
                    }
                }
                (None, None) | (Some(_), Some(_)) => {
                    return Err(self.error_at(
                        f.path.span(),
                        format!("file `{path}` needs exactly one of `text` and `source`"),
                        None,
                    ))
                }
            };
            let mode = self.mode_at("mode", f.mode.as_ref(), default_mode)?;
            files.push(CustomFile {
                path,
                content,
                mode,
            });
        }
        let mut dirs = Vec::with_capacity(section.dirs.len());
        for d in &section.dirs {
            let path = self.entry_path_at(&d.path)?;
            once(&d.path, &path)?;
            dirs.push((path, self.mode_at("mode", d.mode.as_ref(), 0o755)?));
        }
        let mut symlinks = Vec::with_capacity(section.symlinks.len());
        for l in &section.symlinks {
            if l.target.get_ref().is_empty() {
                return Err(self.error_at(
                    l.target.span(),
                    "a symlink target cannot be empty".to_owned(),
                    None,
                ));
            }
            if l.target.get_ref().contains('\0') {
                return Err(self.error_at(
                    l.target.span(),
                    "a symlink target cannot hold a NUL byte".to_owned(),
                    None,
                ));
            }
            let path = self.entry_path_at(&l.path)?;
            once(&l.path, &path)?;
            symlinks.push((path, l.target.get_ref().clone()));
        }
        let mut permissions = Vec::with_capacity(section.permissions.len());
        for p in &section.permissions {
            let rule = PermissionOverride {
                pattern: self.path_at(&p.path, true)?,
                uid: p.uid.map(u64::from),
                gid: p.gid.map(u64::from),
                uname: p.uname.clone(),
                gname: p.gname.clone(),
                mode: p
                    .mode
                    .as_ref()
                    .map(|m| self.mode_at("mode", Some(m), 0))
                    .transpose()?,
                dir_mode: p
                    .dir_mode
                    .as_ref()
                    .map(|m| self.mode_at("dir_mode", Some(m), 0))
                    .transpose()?,
                file_mode: p
                    .file_mode
                    .as_ref()
                    .map(|m| self.mode_at("file_mode", Some(m), 0))
                    .transpose()?,
            };
            let changes_nothing = rule.uid.is_none()
                && rule.gid.is_none()
                && rule.uname.is_none()
                && rule.gname.is_none()
                && rule.mode.is_none()
                && rule.dir_mode.is_none()
                && rule.file_mode.is_none();
            if changes_nothing {
                return Err(self.error_at(
                    p.path.span(),
                    format!("permission rule `{}` changes nothing", rule.pattern),
                    Some("set `uid`, `gid`, `mode`, `dir_mode` or `file_mode`".to_owned()),
                ));
            }
            permissions.push(rule);
        }
        let run = match &section.run {
            Some(script) if script.get_ref().trim().is_empty() => {
                return Err(self.error_at(
                    script.span(),
                    "`customisation.run` is empty".to_owned(),
                    Some("remove it, or give the shell commands to run".to_owned()),
                ))
            }
            Some(script) if script.get_ref().contains('\0') => {
                return Err(self.error_at(
                    script.span(),
                    "`customisation.run` holds a NUL byte, which no shell script can".to_owned(),
                    None,
                ))
            }
            Some(script) => Some(script.get_ref().clone()),
            None => None,
        };
        let chroot = match &section.chroot {
            Some(chroot) if *chroot.get_ref() && run.is_none() => {
                return Err(self.error_at(
                    chroot.span(),
                    "`customisation.chroot` is set but there is no `customisation.run` script"
                        .to_owned(),
                    Some("add the script to `run`, or remove `chroot`".to_owned()),
                ))
            }
            Some(chroot) => *chroot.get_ref(),
            None => false,
        };
        Ok(Customisation {
            run,
            chroot,
            contents: section.contents.clone(),
            first_wins,
            files,
            dirs,
            symlinks,
            permissions,
        })
    }

    /// `base.image`: a path resolved against the manifest's directory, or
    /// a registry reference (`docker://…@sha256:…`), which must carry a
    /// digest.
    ///
    /// # Errors
    /// When a path names nothing that exists, or a reference is malformed
    /// or has no digest.
    pub fn base_image(&self) -> Result<Option<BaseSource>, Error> {
        let Some(base) = &self.manifest.base else {
            return Ok(None);
        };
        if let Some(text) = base
            .image
            .get_ref()
            .to_str()
            .filter(|t| t.starts_with(crate::registry::reference::SCHEME))
        {
            return match crate::registry::reference::parse_pinned(text) {
                Ok((reference, digest)) => Ok(Some(BaseSource::Registry {
                    text: text.to_owned(),
                    reference,
                    digest,
                })),
                Err((message, hint)) => Err(self.error_at(base.image.span(), message, hint)),
            };
        }
        let path = self.resolve(base.image.get_ref());
        if base.image.get_ref().as_os_str().is_empty() || !path.exists() {
            return Err(self.error_at(
                base.image.span(),
                format!("base image `{}` does not exist", path.display()),
                Some("`base.image` is relative to the manifest's directory".to_owned()),
            ));
        }
        Ok(Some(BaseSource::Path(path)))
    }
}

/// Where `base.image` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseSource {
    /// A file or OCI layout on disk.
    Path(PathBuf),
    /// An image in a registry, pinned by digest.
    Registry {
        /// The reference as written.
        text: String,
        /// Registry, repository and tag.
        reference: crate::registry::Reference,
        /// The image manifest's or index's digest.
        digest: crate::oci::Digest,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode(&ModeSpec::Text("0644".into())), Ok(0o644));
        assert_eq!(parse_mode(&ModeSpec::Text("1777".into())), Ok(0o1777));
        assert_eq!(parse_mode(&ModeSpec::Text("0o755".into())), Ok(0o755));
        assert_eq!(parse_mode(&ModeSpec::Number(0o600)), Ok(0o600));
        assert!(parse_mode(&ModeSpec::Text("rw-r--r--".into())).is_err());
        assert!(parse_mode(&ModeSpec::Text("0999".into())).is_err());
        assert!(parse_mode(&ModeSpec::Text("17777".into())).is_err());
        assert!(parse_mode(&ModeSpec::Number(-1)).is_err());
    }

    fn load(text: &str) -> Result<LoadedManifest, Error> {
        LoadedManifest::from_text(PathBuf::from("/m/image.toml"), text.to_owned())
    }

    #[test]
    fn sections_parse_with_modes_as_text_or_integer() {
        let m = load(
            "name = \"x\"\n[closure]\nroots = []\ninclude_nix_db = true\n\
             [customisation]\non_collision = \"first\"\n\
             [[customisation.files]]\npath = \"/etc/a\"\ntext = \"a\"\nmode = 0o600\n\
             [[customisation.dirs]]\npath = \"/tmp/\"\nmode = \"1777\"\n\
             [[customisation.permissions]]\npath = \"/nix/var/nix/**\"\nuid = 1\n",
        )
        .unwrap();
        let c = m.customisation().unwrap();
        assert!(c.first_wins);
        assert_eq!(c.files[0].mode, 0o600);
        assert_eq!(c.dirs, [("/tmp".to_owned(), 0o1777)]);
        assert_eq!(c.permissions[0].uid, Some(1));
        assert_eq!(
            m.manifest
                .closure
                .include_nix_db
                .as_ref()
                .map(|on| *on.get_ref()),
            Some(true)
        );
    }

    #[test]
    fn bad_values_point_at_their_line() {
        for (text, line) in [
            ("[[customisation.dirs]]\npath = \"/x\"\nmode = \"9\"\n", 7),
            ("[[customisation.files]]\npath = \"/x\"\n", 6),
            ("[customisation]\non_collision = \"last\"\n", 6),
            ("[[customisation.permissions]]\npath = \"/x\"\n", 6),
            ("[customisation]\nunknown = 1\n", 6),
            ("[base]\nimage = \"/nonexistent/base.tar\"\n", 6),
        ] {
            let text = format!("name = \"x\"\n[closure]\nroots = []\n\n{text}");
            match load(&text) {
                Err(Error::Invalid { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn image_paths() {
        assert_eq!(
            normalise_image_path("/etc//passwd/", false).unwrap(),
            "/etc/passwd"
        );
        assert_eq!(normalise_image_path("/./a", false).unwrap(), "/a");
        assert!(normalise_image_path("/../etc", false).is_err());
        assert!(normalise_image_path("/a/../../b", false).is_err());
        assert!(normalise_image_path("etc/passwd", false).is_err());
        assert!(normalise_image_path("/", false).is_err());
        assert_eq!(normalise_image_path("/", true).unwrap(), "/");
        // A tar name stops at NUL: `/x\0y` must not become `/x`.
        assert!(normalise_image_path("/x\0y", false).is_err());
    }

    #[test]
    fn a_source_without_mode_keeps_only_its_executable_bit() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run.sh");
        let data = dir.path().join("data.json");
        std::fs::write(&run, "#!/bin/sh\n").unwrap();
        std::fs::write(&data, "{}").unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o600)).unwrap();
        let m = load(&format!(
            "name = \"x\"\n[closure]\nroots = []\n\
             [[customisation.files]]\npath = \"/run.sh\"\nsource = \"{}\"\n\
             [[customisation.files]]\npath = \"/data.json\"\nsource = \"{}\"\n\
             [[customisation.files]]\npath = \"/fixed.sh\"\nsource = \"{}\"\nmode = \"0500\"\n",
            run.display(),
            data.display(),
            run.display()
        ))
        .unwrap();
        let modes: Vec<u32> = m
            .customisation()
            .unwrap()
            .files
            .iter()
            .map(|f| f.mode)
            .collect();
        assert_eq!(modes, [0o755, 0o644, 0o500]);
    }

    #[test]
    fn one_image_path_given_twice_is_an_error_naming_both_lines() {
        for (text, line, first) in [
            ("[[customisation.files]]\npath = \"/x\"\ntext = \"a\"\n[[customisation.files]]\npath = \"/x\"\ntext = \"b\"\n", 9, 6),
            ("[[customisation.files]]\npath = \"/x\"\ntext = \"a\"\n[[customisation.dirs]]\npath = \"//x/\"\n", 9, 6),
            ("[[customisation.dirs]]\npath = \"/d\"\n[[customisation.symlinks]]\npath = \"/d\"\ntarget = \"/\"\n", 8, 6),
            ("[[customisation.symlinks]]\npath = \"/l\\u0000x\"\ntarget = \"/\"\n", 6, 0),
            ("[[customisation.symlinks]]\npath = \"/l\"\ntarget = \"/a\\u0000b\"\n", 7, 0),
        ] {
            let text = format!("name = \"x\"\n[closure]\nroots = []\n\n{text}");
            match load(&text).and_then(|m| m.customisation()) {
                Err(Error::Invalid { line: l, message, .. }) => {
                    assert_eq!(l, line, "{text}");
                    if first > 0 {
                        assert!(message.contains(&format!("at line {first}")), "{message}");
                    }
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
