//! `nixlayer init STORE_PATH…`: prints a manifest for those roots that
//! builds as is (SPEC §6), commented so it can be grown from there.
//!
//! The image is named after the first root (its name without the version,
//! made a valid repository name), its entry point is the one executable in
//! the first root's `bin/` when there is exactly one, and `created` and
//! `mtime` are nixpkgs' fixed default, so the manifest builds the same
//! image every time.

use std::fmt::Write as _;
use std::path::Path;

use nixlayer::manifest::DEFAULT_STORE_DIR;
use nixlayer::nix::narinfo::PublicKey;
use nixlayer::nix::{parse_drv_name, StoreDir, StorePath};
use nixlayer::ops::settings::{CacheEnvironment, CacheRequest};
use nixlayer::store::{BinaryCache, Entry, EntryKind, Store as _};

use super::args::InitArgs;
use super::printer::Printer;
use super::{BoxError, UsageError};
use nixlayer::ops::settings;

/// A root that is a valid store path but is not on disk.
#[derive(Debug, thiserror::Error)]
#[error("store path `{path}` does not exist")]
pub(super) struct MissingRoot {
    path: String,
    #[source]
    source: std::io::Error,
}

impl MissingRoot {
    /// What to do about it.
    pub(super) fn hint(&self) -> String {
        format!(
            "build or fetch it first (`nix-build`, `nix-store --realise {}`), or give `--store-dir` when it lives in another store",
            self.path
        )
    }
}

/// Runs `nixlayer init`.
pub(super) fn run(args: &InitArgs, printer: Printer) -> Result<(), BoxError> {
    let dir = StoreDir::new(&args.store_dir).map_err(|_| {
        UsageError(format!(
            "`--store-dir` must be an absolute directory such as `{DEFAULT_STORE_DIR}`, found `{}`",
            args.store_dir
        ))
    })?;
    let mut roots: Vec<StorePath> = Vec::with_capacity(args.roots.len());
    for arg in &args.roots {
        let root = StorePath::parse(&dir, arg)
            .or_else(|e| links_to_store_path(&dir, arg).ok_or(e))
            .map_err(|e| UsageError(e.to_string()))?;
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    if let Some(url) = &args.binary_cache {
        let keys = args
            .trusted_public_keys
            .iter()
            .map(|k| {
                PublicKey::parse(k).map_err(|e| UsageError(format!("`--trusted-public-key`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cache =
            CacheRequest::new(url.clone(), keys).open(&dir, &CacheEnvironment::capture())?;
        for root in &roots {
            if cache.narinfo(root)?.is_none() {
                return Err(NotInCache {
                    path: root.as_str().to_owned(),
                    url: cache.url().to_owned(),
                }
                .into());
            }
        }
        let executables = cache_executables(&cache, &roots[0]);
        let from = CacheSource {
            url: cache.url(),
            keys: &args.trusted_public_keys,
        };
        let text = manifest(&dir, &roots, &executables, Some(&from));
        printer.data(text.trim_end().as_bytes())?;
        return Ok(());
    }
    for root in &roots {
        if let Err(source) = std::fs::symlink_metadata(root.as_str()) {
            return Err(MissingRoot {
                path: root.as_str().to_owned(),
                source,
            }
            .into());
        }
    }
    let executables = executables(&Path::new(roots[0].as_str()).join("bin"));
    let text = manifest(&dir, &roots, &executables, None);
    printer.data(text.trim_end().as_bytes())?;
    Ok(())
}

/// The store path `arg` leads to through symbolic links, as Nix's
/// `followLinksToStorePath` finds it for `nix-store -qR ./result`: the
/// out-link `nix build` leaves is how users name what they built. Each
/// hop's relative target is taken from the link's directory and `..`
/// resolved by name (as Nix does), up to 40 hops; `None` when the chain
/// ends elsewhere (then `arg`'s own error stands).
fn links_to_store_path(dir: &StoreDir, arg: &str) -> Option<StorePath> {
    use std::path::{Component, PathBuf};
    let mut path = std::path::absolute(arg).ok()?;
    for _ in 0..40 {
        let target = std::fs::read_link(&path).ok()?;
        let joined = path.parent()?.join(target);
        let mut resolved = PathBuf::new();
        for part in joined.components() {
            match part {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::CurDir => {}
                other => resolved.push(other),
            }
        }
        if let Ok(root) = StorePath::parse(dir, resolved.to_str()?) {
            return Some(root);
        }
        path = resolved;
    }
    None
}

/// A root the binary cache has no narinfo for.
#[derive(Debug, thiserror::Error)]
#[error("store path `{path}` is not in the binary cache `{url}`")]
struct NotInCache {
    path: String,
    url: String,
}

/// The binary cache a manifest from `init --binary-cache` reads.
struct CacheSource<'a> {
    url: &'a str,
    keys: &'a [String],
}

/// [`executables`] of `root/bin` in a binary cache (its NAR is fetched and
/// verified): regular files with the executable bit, symlinks followed
/// through the cache a few hops; none when it cannot be read.
fn cache_executables(cache: &BinaryCache, root: &StorePath) -> Vec<String> {
    let bin = format!("{}/bin", root.as_str());
    let Ok(names) = cache.read_dir(bin.as_bytes()) else {
        return Vec::new();
    };
    let mut found: Vec<String> = names
        .into_iter()
        .filter_map(|name| String::from_utf8(name).ok())
        .filter(|name| {
            let mut at = format!("{bin}/{name}");
            // A chain of links longer than this is not a program to run.
            for _ in 0..8 {
                match cache.entry(at.as_bytes()) {
                    Ok(Some(Entry {
                        kind: EntryKind::Regular { executable, .. },
                        ..
                    })) => return executable,
                    Ok(Some(Entry {
                        kind: EntryKind::Symlink { target },
                        ..
                    })) => {
                        let Ok(target) = String::from_utf8(target) else {
                            return false;
                        };
                        let parent = at.rsplit_once('/').map_or("", |(p, _)| p).to_owned();
                        at = resolve_link(&parent, &target);
                    }
                    _ => return false,
                }
            }
            false
        })
        .collect();
    found.sort();
    found
}

/// The absolute path a symlink in `dir` with `target` points at, `.` and
/// `..` resolved lexically (inside a store path there is nothing else).
fn resolve_link(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The names of the executable files (symlinks followed) directly in
/// `bin`, sorted; none when it cannot be read.
fn executables(bin: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(entries) = std::fs::read_dir(bin) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::metadata(e.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A docker repository name made from a store path's name: lowercase
/// letters and digits, joined by `.`, `_`, `__` or dashes, the way the
/// distribution spec's grammar allows; `image` when nothing is left.
fn repository_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::with_capacity(mapped.len());
    let mut separators = String::new();
    for c in mapped.chars() {
        if c.is_ascii_alphanumeric() {
            // A run of separators between two alphanumerics: keep it when
            // the grammar allows it, else one dash.
            if !out.is_empty() && !separators.is_empty() {
                let allowed = separators.chars().all(|s| s == '-')
                    || matches!(separators.as_str(), "." | "_" | "__");
                out.push_str(if allowed { &separators } else { "-" });
            }
            separators.clear();
            out.push(c);
        } else {
            separators.push(c);
        }
    }
    if out.is_empty() {
        "image".to_owned()
    } else {
        out
    }
}

/// An executable's name as a comment shows it: as is, or as a one-line
/// TOML string when it holds a control character. A file name is anything
/// but `/` and NUL, and a newline in one would end the comment and put the
/// rest of the name into the manifest as keys (`User = "0"`, `Env = …`);
/// TOML refuses other control characters in a comment.
fn comment_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().any(char::is_control) {
        one_line_quote(name).into()
    } else {
        name.into()
    }
}

/// `value` as a TOML basic string on one line, for a comment: [`quote`]
/// writes a string with a newline over several lines. Control characters
/// (all in the BMP) as `\uXXXX`, which TOML reads back.
fn one_line_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a TOML basic string.
fn quote(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// The manifest text for `roots` (at least one), the first root's
/// executables given.
fn manifest(
    dir: &StoreDir,
    roots: &[StorePath],
    executables: &[String],
    cache: Option<&CacheSource<'_>>,
) -> String {
    let first = &roots[0];
    let (name, version) = parse_drv_name(first.name());
    let name = repository_name(name);
    let time = settings::DEFAULT_TIME;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# A manifest for `nixlayer build` (made by `nixlayer init`). Build it with\n\
         #   nixlayer build image.toml -o image.tar    (or `--stream | docker load`)\n\
         # For checks and completion in editors (taplo, Even Better TOML), run\n\
         # `nixlayer schema > nixlayer.schema.json` and make the first line of\n\
         # this file `#:schema ./nixlayer.schema.json`.\n"
    );
    let _ = writeln!(
        m,
        "# The image reference; `--tag NAME[:TAG]` overrides both."
    );
    let _ = writeln!(m, "name = {}", quote(&name));
    let tag_example = if version.is_empty() || !settings::valid_tag(version) {
        "1.0"
    } else {
        version
    };
    let _ = writeln!(
        m,
        "# tag = {}    # default: the first 32 hex digits of the config digest\n",
        quote(tag_example)
    );
    let _ = writeln!(
        m,
        "# `created`: image metadata; `mtime`: the time of every file in every layer.\n\
         # Fixed (nixpkgs' default), the same store paths always give the same image;\n\
         # \"now\" works too, but then every build differs.\n\
         created = {q}\nmtime = {q}\n",
        q = quote(time)
    );
    if dir.as_str() != DEFAULT_STORE_DIR {
        let _ = writeln!(
            m,
            "[store]\n# The store directory the paths live in.\ndir = {}\n",
            quote(dir.as_str())
        );
    }
    let _ = writeln!(
        m,
        "[closure]\n# The store paths whose closure (them and everything they reference) goes in."
    );
    let _ = writeln!(m, "roots = [");
    for root in roots {
        let _ = writeln!(m, "  {},", quote(root.as_str()));
    }
    if let Some(cache) = cache {
        let keys: Vec<String> = cache.keys.iter().map(|k| quote(k)).collect();
        let _ = writeln!(
            m,
            "]\n\
             # The closure and its content come from this binary cache, every path signed\n\
             # by one of these keys and every NAR checked against its signed hash; no local\n\
             # store is read. Credentials: `netrc_file` (default ~/.netrc) or NIXLAYER_CACHE_TOKEN.\n\
             source = {{ binary_cache = {} }}\n\
             trusted_public_keys = [{}]\n",
            quote(cache.url),
            keys.join(", ")
        );
    } else {
        let _ = writeln!(
        m,
        "]\n\
         # Where references come from: the local store (`nix-store`, the default), or a file:\n\
         # source = {{ graph = \"graph.json\" }}           # exportReferencesGraph (structured attrs)\n\
         # source = {{ registration = \"registration\" }}  # closureInfo / nix-store --dump-db\n\
         # source = {{ path_info = \"info.json\" }}        # nix path-info --json --recursive\n\
         # source = {{ dot = \"graph.dot\" }}              # nix-store --query --graph\n\
         # source = {{ binary_cache = \"https://…\" }}     # a Nix binary cache (with trusted_public_keys)\n"
    );
    }
    let _ = writeln!(
        m,
        "[config]\n# The OCI image config, OCI key names, copied verbatim."
    );
    let bin = format!("{}/bin", first.as_str());
    // The store directory is the user's (`--store-dir`), yet any text.
    let shown_bin = comment_name(&bin);
    match executables {
        [single] => {
            let _ = writeln!(m, "Entrypoint = [{}]", quote(&format!("{bin}/{single}")));
        }
        [] => {
            let _ = writeln!(
                m,
                "# `{shown_bin}` has no executable: set the command to run.\n\
                 # Entrypoint = [{}]",
                one_line_quote(&format!("{bin}/PROGRAM"))
            );
        }
        several => {
            let _ = writeln!(
                m,
                "# `{shown_bin}` has {} executables ({}): pick the command to run.\n\
                 # Entrypoint = [{}]",
                several.len(),
                several
                    .iter()
                    .map(|n| comment_name(n))
                    .collect::<Vec<_>>()
                    .join(", "),
                one_line_quote(&format!("{bin}/{}", several[0]))
            );
        }
    }
    let _ = writeln!(
        m,
        "# Cmd = []\n\
         # Env = [\"LANG=C.UTF-8\"]\n\
         # WorkingDir = \"/\"\n\
         # User = \"1000:1000\"\n\
         # ExposedPorts = {{ \"8080/tcp\" = {{}} }}\n\n\
         # More: `[owner]`, `[customisation]` (files, dirs, symlinks, permissions),\n\
         # `[[users]]`/`[[groups]]` (accounts), `[base]`, and the sections below;\n\
         # `nixlayer schema` lists every key.\n\
         # [layering]\n\
         # strategy = \"auto\"          # current nixpkgs' default; \"popularity\": nixpkgs before PR #355189;\n\
         #                            # or `pipeline = [...]` (nixpkgs' layeringPipeline DSL)\n\
         # [output]\n\
         # format = \"docker-archive\"  # or \"oci-layout\", \"oci-archive\", \"rootfs\" (merged filesystem)\n\
         # compression = \"none\"       # or \"gzip\", \"zstd\""
    );
    m
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use nixlayer::manifest::LoadedManifest;

    #[test]
    fn names_follow_parse_drv_name_and_the_docker_grammar() {
        assert_eq!(parse_drv_name("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(parse_drv_name("hello-app-1.0"), ("hello-app", "1.0"));
        assert_eq!(
            parse_drv_name("python3.11-minimal"),
            ("python3.11-minimal", "")
        );
        assert_eq!(parse_drv_name("foo-bar"), ("foo-bar", ""));
        for (name, expected) in [
            ("Hello-App", "hello-app"),
            ("python3.11-minimal", "python3.11-minimal"),
            ("a__b", "a__b"),
            ("a___b", "a-b"),
            ("a._b", "a-b"),
            ("a+b=c?", "a-b-c"),
            ("-_.x.-", "x"),
            ("a---b", "a---b"),
            ("+++", "image"),
        ] {
            let got = repository_name(name);
            assert_eq!(got, expected, "{name}");
            assert_eq!(settings::invalid_name(&got), None, "{got}");
        }
    }

    /// A store under a temp dir with one root; `bin` holds `programs`.
    fn store_with(programs: &[&str]) -> (tempfile::TempDir, StoreDir, StorePath) {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StoreDir::new(tmp.path().join("store").to_str().unwrap()).unwrap();
        let root = StorePath::parse(
            &dir,
            &format!("{dir}/00000000000000000000000000000000-My_Tool-2.1"),
        )
        .unwrap();
        let bin = Path::new(root.as_str()).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("README"), "not executable").unwrap();
        for p in programs {
            std::fs::write(bin.join(p), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(bin.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        (tmp, dir, root)
    }

    fn load(text: &str) -> LoadedManifest {
        LoadedManifest::from_text(PathBuf::from("/m/image.toml"), text.to_owned())
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn one_executable_is_the_entry_point() {
        let (_tmp, dir, root) = store_with(&["tool"]);
        let exes = executables(&Path::new(root.as_str()).join("bin"));
        assert_eq!(exes, ["tool"]);
        let text = manifest(&dir, std::slice::from_ref(&root), &exes, None);
        let loaded = load(&text);
        let m = &loaded.manifest;
        assert_eq!(m.name.get_ref(), "my_tool");
        assert_eq!(
            m.created.as_ref().unwrap().get_ref(),
            "1970-01-01T00:00:01Z"
        );
        assert_eq!(m.mtime.as_ref().unwrap().get_ref(), "1970-01-01T00:00:01Z");
        assert_eq!(loaded.store_dir().unwrap(), dir.as_str());
        assert_eq!(m.closure.roots[0].get_ref(), root.as_str());
        assert_eq!(
            m.config["Entrypoint"],
            serde_json::json!([format!("{root}/bin/tool")])
        );
        assert!(text.contains("# tag = \"2.1\""), "{text}");
    }

    #[test]
    fn otherwise_a_commented_hint() {
        for programs in [&[][..], &["a", "b"][..]] {
            let (_tmp, dir, root) = store_with(programs);
            let exes = executables(&Path::new(root.as_str()).join("bin"));
            let text = manifest(&dir, &[root.clone(), root.clone()], &exes, None);
            let loaded = load(&text);
            assert!(loaded.manifest.config.is_empty(), "{text}");
            assert!(text.contains("# Entrypoint = ["), "{text}");
            assert_eq!(loaded.manifest.closure.roots.len(), 2);
        }
    }

    #[test]
    fn a_binary_cache_manifest_loads_with_its_source_and_keys() {
        let (_tmp, dir, root) = store_with(&["tool"]);
        let key = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=".to_owned();
        let cache = CacheSource {
            url: "https://cache.example.org",
            keys: std::slice::from_ref(&key),
        };
        let text = manifest(&dir, std::slice::from_ref(&root), &[], Some(&cache));
        let loaded = load(&text);
        let Ok(nixlayer::manifest::ClosureSource::BinaryCache(source)) = loaded.closure_source()
        else {
            panic!("{text}");
        };
        assert_eq!(source.url, "https://cache.example.org");
        assert_eq!(source.trusted_public_keys, [key]);
    }

    /// Executable names are whatever a store path's `bin/` holds (a file
    /// name is anything but `/` and NUL): a newline in one ended the comment
    /// listing them and made the rest of the name manifest keys.
    #[test]
    fn executable_names_never_become_manifest_keys() {
        let (_tmp, dir, root) = store_with(&[]);
        let exes = [
            "a".to_owned(),
            "b\nUser = \"0:0\"\nEnv = [\"LD_PRELOAD=evil.so\"]\n#".to_owned(),
        ];
        let text = manifest(&dir, std::slice::from_ref(&root), &exes, None);
        let loaded = load(&text);
        assert!(loaded.manifest.config.is_empty(), "{text}");
        assert!(text.contains("(a, \"b\\u000AUser = \\\"0:0\\\""), "{text}");
    }

    /// A store directory with a newline (`--store-dir`) stays in its
    /// comment and its value too.
    #[test]
    fn a_store_directory_with_a_newline_stays_in_its_comment() {
        let dir = StoreDir::new("/s\nUser = \"0\"").unwrap();
        let root = StorePath::parse(&dir, &format!("{dir}/{}-tool", "0".repeat(32))).unwrap();
        for exes in [&[][..], &["a".to_owned(), "b".to_owned()][..]] {
            let text = manifest(&dir, std::slice::from_ref(&root), exes, None);
            let loaded = load(&text);
            assert!(loaded.manifest.config.is_empty(), "{text}");
            assert_eq!(loaded.store_dir().unwrap(), dir.as_str());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any root name and any executable names (file names: anything
        /// but `/` and NUL) give a manifest that loads, whose config is the
        /// one entry point or nothing.
        #[test]
        fn any_names_give_a_manifest_that_loads(
            name in "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,30}",
            exes in proptest::collection::vec("(?s:[^/\\x00]){0,12}", 0..4),
        ) {
            let dir = StoreDir::default();
            let root = StorePath::parse(&dir, &format!("/nix/store/{}-{name}", "0".repeat(32))).unwrap();
            let text = manifest(&dir, std::slice::from_ref(&root), &exes, None);
            let loaded = LoadedManifest::from_text(PathBuf::from("/m/image.toml"), text.clone());
            let loaded = match loaded {
                Ok(l) => l,
                Err(e) => return Err(proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}"))),
            };
            let config = &loaded.manifest.config;
            if let [single] = &exes[..] {
                proptest::prop_assert_eq!(&config["Entrypoint"], &serde_json::json!([format!("{root}/bin/{single}")]));
                proptest::prop_assert_eq!(config.len(), 1);
            } else {
                proptest::prop_assert!(config.is_empty(), "{}", text);
                // The commented entry point reads back once uncommented.
                let line = text.lines().find_map(|l| l.strip_prefix("# Entrypoint = ")).unwrap();
                let table: toml::Table = toml::from_str(&format!("e = {line}")).unwrap();
                let program = exes.first().map_or("PROGRAM", String::as_str);
                let want = format!("{root}/bin/{program}");
                proptest::prop_assert_eq!(table["e"][0].as_str(), Some(want.as_str()));
            }
            proptest::prop_assert_eq!(settings::invalid_name(loaded.manifest.name.get_ref()), None);
        }
    }

    #[test]
    fn links_resolve_lexically() {
        assert_eq!(resolve_link("/s/a/bin", "busybox"), "/s/a/bin/busybox");
        assert_eq!(resolve_link("/s/a/bin", "../libexec/./x"), "/s/a/libexec/x");
        assert_eq!(resolve_link("/s/a/bin", "/s/b/bin/y"), "/s/b/bin/y");
        assert_eq!(resolve_link("/s", "../../.."), "/");
    }
}
