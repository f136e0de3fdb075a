//! `nixlayer build`, `layers` and `init` straight from a Nix binary cache
//! made by the real `nix copy`, read from `file://` and from a real nginx,
//! with `store.root` an empty directory: the image is byte for byte the
//! local-store build's and runs in docker; a tampered NAR, a wrong key or a
//! missing signature fails the build with one error naming the path and
//! the URL, and leaves no output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nixlayer::nix::StorePath;

use crate::binary_cache::{keypair, nar_cache_files, nix_copy, Nginx};
use crate::util::{self, docker, docker_ready, docker_run, nixlayer, require_tool, run, tool};

/// The `hello` fixture's closure in a signed `file://` cache.
///
/// ```text
/// hello-app-1.0 ──► busybox-static-1.35
///       └─────────► greeting-1.0
/// ```
struct Cache {
    tmp: tempfile::TempDir,
    hello: PathBuf,
    secret: PathBuf,
    public: String,
}

impl Cache {
    fn new(compression: &str) -> Option<Self> {
        let hello = util::nix_fixture("hello")?;
        let tmp = util::temp_dir();
        let (secret, public) = keypair(tmp.path(), "test-cache-1");
        let root = StorePath::parse(&Default::default(), hello.to_str().unwrap()).unwrap();
        nix_copy(
            &tmp.path().join("cache"),
            compression,
            Some(&secret),
            &[root],
        );
        std::fs::create_dir(tmp.path().join("empty-root")).unwrap();
        std::fs::create_dir(tmp.path().join("home")).unwrap();
        Some(Self {
            tmp,
            hello,
            secret,
            public,
        })
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir().display())
    }

    /// The NAR file of store path `path` (a `/nix/store/…` string).
    fn nar_file(&self, path: &Path) -> PathBuf {
        let hash = &path.file_name().unwrap().to_str().unwrap()[..32];
        let text = std::fs::read_to_string(self.dir().join(format!("{hash}.narinfo"))).unwrap();
        let url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
        self.dir().join(url)
    }

    /// The closure of `hello` as `nix-store` lists it.
    fn closure(&self) -> Vec<PathBuf> {
        String::from_utf8(util::nix(
            "nix-store",
            &["--query", "--requisites", self.hello.to_str().unwrap()],
        ))
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
    }

    /// A manifest for `hello`: its closure, the Nix database, `hello`
    /// merged into `/`; `closure` adds keys to `[closure]`, `store` is the
    /// `[store]` table.
    fn manifest(&self, name: &str, store: &str, closure: &str) -> PathBuf {
        let hello = self.hello.display();
        util::write(
            self.tmp.path(),
            name,
            &format!(
                r#"name = "nixlayer-test/from-cache"
tag = "it"

{store}

[closure]
roots = ["{hello}"]
include_nix_db = true
{closure}

[config]
Entrypoint = ["{hello}/bin/hello"]
Cmd = ["from", "a", "cache"]

[customisation]
contents = ["{hello}"]
"#
            ),
        )
    }

    /// The manifest reading the local store.
    fn local_manifest(&self) -> PathBuf {
        self.manifest("local.toml", "", "")
    }

    /// The manifest reading the cache at `url` with `keys`, the store root
    /// an empty directory (nothing is read from a local store).
    fn cache_manifest(&self, name: &str, url: &str, extra: &str) -> PathBuf {
        let keys = format!("trusted_public_keys = [\"{}\"]", self.public);
        self.manifest(
            name,
            "[store]\nroot = \"empty-root\"",
            &format!("source = {{ binary_cache = \"{url}\" }}\n{keys}\n{extra}"),
        )
    }

    /// `nixlayer` with its own NAR and layer cache (`xdg`) and a home
    /// without a `.netrc`.
    fn nixlayer(&self, xdg: &str) -> Command {
        let mut cmd = nixlayer();
        cmd.env("XDG_CACHE_HOME", self.tmp.path().join(xdg))
            .env("HOME", self.tmp.path().join("home"));
        cmd
    }

    /// `nixlayer build MANIFEST -o OUT ARGS…` with the NAR cache `xdg`,
    /// expecting `code`.
    fn build(&self, manifest: &Path, out: &Path, xdg: &str, args: &[&str], code: i32) -> Output {
        run(
            self.nixlayer(xdg)
                .arg("build")
                .arg(manifest)
                .arg("-o")
                .arg(out)
                .args(args),
            code,
        )
    }

    /// NARs the cache `xdg` holds, and no temporary file among them.
    /// The NARs in the NAR cache of `xdg`, each with its index.
    fn nars(&self, xdg: &str) -> Vec<String> {
        let names = nar_cache_files(&self.tmp.path().join(xdg).join("nixlayer/nar"));
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "a partial file in the NAR cache: {names:?}"
        );
        let nars: Vec<String> = names
            .iter()
            .filter(|n| n.ends_with(".nar"))
            .cloned()
            .collect();
        for nar in &nars {
            let index = nar.replace(".nar", ".idx");
            assert!(names.contains(&index), "no index for {nar}: {names:?}");
        }
        assert_eq!(2 * nars.len(), names.len(), "{names:?}");
        nars
    }
}

/// The files of an OCI layout, relative, with their bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                files.push((p.strip_prefix(dir).unwrap().to_owned(), bytes));
            }
        }
    }
    files.sort();
    files
}

/// The error lines of a failed command, which must be one error.
fn one_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one error expected: {stderr}"
    );
    stderr
}

#[test]
fn image_from_a_file_cache_is_the_local_build_and_runs() {
    let Some(cache) = Cache::new("zstd") else {
        return;
    };
    let tmp = cache.tmp.path();
    let local = cache.local_manifest();
    let from_cache = cache.cache_manifest("cache.toml", &cache.url(), "");

    // docker-archive: sizes from the `.ls` listings, one pass.
    let want = tmp.join("local.tar");
    cache.build(&local, &want, "xdg-local", &[], 0);
    let got = tmp.join("cache.tar");
    cache.build(&from_cache, &got, "xdg-1", &[], 0);
    let want_bytes = std::fs::read(&want).unwrap();
    assert!(
        std::fs::read(&got).unwrap() == want_bytes,
        "docker-archive from the cache differs from the local store's"
    );
    // Every NAR of the closure is now verified in the NAR cache.
    assert_eq!(cache.nars("xdg-1").len(), cache.closure().len());

    // Without listings: the NARs are fetched (in parallel) first.
    for entry in std::fs::read_dir(cache.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ls") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let no_listing = tmp.join("no-listing.tar");
    cache.build(&from_cache, &no_listing, "xdg-2", &[], 0);
    assert!(std::fs::read(&no_listing).unwrap() == want_bytes);
    // A second build reads the NAR cache: same bytes.
    let again = tmp.join("again.tar");
    cache.build(&from_cache, &again, "xdg-2", &[], 0);
    assert!(std::fs::read(&again).unwrap() == want_bytes);

    // OCI archive and layout, zstd layers.
    for (format, name) in [("oci-archive", "oci.tar"), ("oci-layout", "layout")] {
        let args = ["--format", format, "--compression", "zstd"];
        let want = tmp.join(format!("local-{name}"));
        cache.build(&local, &want, "xdg-local", &args, 0);
        let got = tmp.join(format!("cache-{name}"));
        cache.build(&from_cache, &got, "xdg-3", &args, 0);
        if format == "oci-layout" {
            assert!(tree(&got) == tree(&want), "{format}");
        } else {
            assert!(
                std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap(),
                "{format}"
            );
        }
    }

    // `nixlayer layers` plans the same layers from the cache's narinfos.
    let plan = |manifest: &Path, xdg: &str| {
        run(
            cache
                .nixlayer(xdg)
                .arg("layers")
                .arg(manifest)
                .arg("--json"),
            0,
        )
        .stdout
    };
    assert_eq!(plan(&from_cache, "xdg-4"), plan(&local, "xdg-local"));
    assert!(cache.nars("xdg-4").is_empty(), "planning downloads no NAR");

    if !docker_ready() {
        return;
    }
    let tag = format!("nixlayer-test/from-cache:it-{}", std::process::id());
    let tagged = tmp.join("tagged.tar");
    cache.build(&from_cache, &tagged, "xdg-1", &["--tag", &tag], 0);
    let loaded = docker(&["load", "-i", tagged.to_str().unwrap()]);
    assert!(loaded.contains(&tag), "{loaded}");
    assert_eq!(
        docker_run(&tag),
        "hello from nixlayer\nargs: from a cache\n"
    );
}

/// A NAR cache entry damaged on disk (one flipped byte in a file's
/// contents, the NAR's structure intact) is noticed and fetched anew: the
/// image stays the local build's (found by the QA round: the damaged bytes
/// went into the layer while the config kept the layer cache's digest).
#[test]
fn a_damaged_nar_cache_entry_is_fetched_anew() {
    let Some(cache) = Cache::new("xz") else {
        return;
    };
    let tmp = cache.tmp.path();
    let want = tmp.join("local.tar");
    cache.build(&cache.local_manifest(), &want, "xdg-local", &[], 0);
    let from_cache = cache.cache_manifest("cache.toml", &cache.url(), "");
    cache.build(&from_cache, &tmp.join("first.tar"), "xdg", &[], 0);
    let nar_dir = tmp.join("xdg/nixlayer/nar");
    let biggest = cache
        .nars("xdg")
        .into_iter()
        .map(|n| nar_dir.join(n))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let good = std::fs::read(&biggest).unwrap();
    let mut bad = good.clone();
    // Past the NAR's header, inside the largest file's contents.
    let at = bad.len() / 2;
    bad[at] ^= 1;
    std::fs::write(&biggest, &bad).unwrap();
    for format in ["docker-archive", "oci-archive"] {
        let got = tmp.join(format!("again-{format}.tar"));
        cache.build(&from_cache, &got, "xdg", &["--format", format], 0);
        let local = tmp.join(format!("local-{format}.tar"));
        cache.build(
            &cache.local_manifest(),
            &local,
            "xdg-local",
            &["--format", format],
            0,
        );
        assert!(
            std::fs::read(&got).unwrap() == std::fs::read(&local).unwrap(),
            "{format}: the damaged NAR went into the image"
        );
        assert!(std::fs::read(&biggest).unwrap() == good, "fetched anew");
        std::fs::write(&biggest, &bad).unwrap();
    }
}

#[test]
fn image_from_nginx_is_the_local_build() {
    let Some(cache) = Cache::new("xz") else {
        return;
    };
    let Some(nginx) = Nginx::start(&cache.dir(), None) else {
        return;
    };
    let tmp = cache.tmp.path();
    let want = tmp.join("local.tar");
    cache.build(&cache.local_manifest(), &want, "xdg-local", &[], 0);
    let nginx_url = nginx.url();
    let from_cache = cache.cache_manifest("http.toml", &nginx_url, "");
    let got = tmp.join("http.tar");
    cache.build(&from_cache, &got, "xdg-http", &[], 0);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap());
    let oci = tmp.join("http-oci.tar");
    let local_oci = tmp.join("local-oci.tar");
    let args = ["--format", "oci-archive"];
    cache.build(&from_cache, &oci, "xdg-http-oci", &args, 0);
    cache.build(&cache.local_manifest(), &local_oci, "xdg-local", &args, 0);
    assert!(std::fs::read(&oci).unwrap() == std::fs::read(&local_oci).unwrap());

    // With the server gone, a warm build needs no HTTP: the narinfos kept
    // from the last build (checked again) and the NAR cache (found by the
    // QA round: it failed on `nix-cache-info`, connection refused).
    drop(nginx);
    for (xdg, args, want) in [
        ("xdg-http", &[][..], &want),
        ("xdg-http-oci", &args[..], &local_oci),
    ] {
        let offline = tmp.join(format!("offline-{xdg}.tar"));
        cache.build(&from_cache, &offline, xdg, args, 0);
        assert!(
            std::fs::read(&offline).unwrap() == std::fs::read(want).unwrap(),
            "{xdg}"
        );
    }
    // A NAR not in the NAR cache cannot be had: the error names its URL.
    std::fs::remove_dir_all(tmp.join("xdg-http/nixlayer/nar")).unwrap();
    let e = one_error(&cache.build(&from_cache, &tmp.join("no.tar"), "xdg-http", &[], 1));
    assert!(e.contains(&format!("{}/nar/", nginx_url)), "{e}");
    assert!(!tmp.join("no.tar").exists());
}

#[test]
fn tampered_nar_wrong_key_and_unsigned_paths_fail_with_no_output() {
    let Some(cache) = Cache::new("none") else {
        return;
    };
    let tmp = cache.tmp.path();
    let busybox = cache
        .closure()
        .into_iter()
        .find(|p| p.to_str().unwrap().contains("busybox"))
        .unwrap();
    let busybox = busybox.to_str().unwrap().to_owned();

    // A wrong key: the first narinfo read is refused, naming path and URL.
    let (_, other) = keypair(tmp, "other-cache-1");
    let wrong_key = cache.manifest(
        "wrong-key.toml",
        "[store]\nroot = \"empty-root\"",
        &format!(
            "source = {{ binary_cache = \"{}\" }}\ntrusted_public_keys = [\"{other}\"]",
            cache.url()
        ),
    );
    // Unsigned: the same closure copied without a key.
    let unsigned_dir = tmp.join("unsigned");
    let root = StorePath::parse(&Default::default(), cache.hello.to_str().unwrap()).unwrap();
    nix_copy(&unsigned_dir, "none", None, &[root]);
    let unsigned = cache.cache_manifest(
        "unsigned.toml",
        &format!("file://{}", unsigned_dir.display()),
        "",
    );
    for (manifest, url, what) in [
        (&wrong_key, cache.url(), "untrusted"),
        (
            &unsigned,
            format!("file://{}", unsigned_dir.display()),
            "not signed",
        ),
    ] {
        for format in ["docker-archive", "oci-archive"] {
            let out = tmp.join("out.tar");
            let failed = cache.build(manifest, &out, "xdg-refused", &["--format", format], 1);
            let e = one_error(&failed);
            assert!(
                e.contains(&url) && e.contains("/nix/store/") && e.contains(what),
                "{format}: {e}"
            );
            assert!(!out.exists(), "{format}: an output was left");
        }
    }
    assert!(cache.nars("xdg-refused").is_empty(), "nothing was fetched");

    // A tampered NAR (one byte of busybox): refused when it arrives.
    let nar = cache.nar_file(Path::new(&busybox));
    let mut bytes = std::fs::read(&nar).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&nar, bytes).unwrap();
    let manifest = cache.cache_manifest("tampered.toml", &cache.url(), "");
    for (format, xdg) in [("docker-archive", "xdg-t1"), ("oci-layout", "xdg-t2")] {
        let out = tmp.join("tampered-out");
        let failed = cache.build(&manifest, &out, xdg, &["--format", format], 1);
        let e = one_error(&failed);
        assert!(
            e.contains(&busybox) && e.contains(&cache.url()),
            "{format}: {e}"
        );
        assert!(!out.exists(), "{format}: an output was left");
        let nars = cache.nars(xdg);
        assert!(
            nars.len() < cache.closure().len(),
            "{format}: the tampered NAR was cached: {nars:?}"
        );
    }
    let _ = &cache.secret;
}

#[test]
fn private_cache_through_netrc() {
    let Some(cache) = Cache::new("zstd") else {
        return;
    };
    if !require_tool("openssl") {
        return;
    }
    let tmp = cache.tmp.path();
    let hash = String::from_utf8(tool("openssl", &["passwd", "-apr1", "s3cret-pw"])).unwrap();
    let htpasswd = tmp.join("htpasswd");
    std::fs::write(&htpasswd, format!("builder:{}", hash.trim())).unwrap();
    let Some(nginx) = Nginx::start(&cache.dir(), Some(&htpasswd)) else {
        return;
    };
    // No credentials (no ~/.netrc): the error says so; no output.
    let bare = cache.cache_manifest("bare.toml", &nginx.url(), "");
    let out = tmp.join("out.tar");
    let failed = cache.build(&bare, &out, "xdg-bare", &[], 1);
    let e = one_error(&failed);
    assert!(
        e.contains("needs credentials") && e.contains(&nginx.url()),
        "{e}"
    );
    assert!(!out.exists());

    // `netrc_file` in the manifest, relative to it.
    std::fs::write(
        tmp.join("netrc"),
        "machine 127.0.0.1 login builder password s3cret-pw\n",
    )
    .unwrap();
    let with_netrc = cache.cache_manifest("netrc.toml", &nginx.url(), "netrc_file = \"netrc\"");
    let got = tmp.join("private.tar");
    let built = cache.build(&with_netrc, &got, "xdg-netrc", &[], 0);
    assert!(!String::from_utf8_lossy(&built.stderr).contains("s3cret-pw"));
    let want = tmp.join("local.tar");
    cache.build(&cache.local_manifest(), &want, "xdg-local", &[], 0);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap());

    // The default `~/.netrc`, as Nix reads it.
    std::fs::copy(tmp.join("netrc"), tmp.join("home/.netrc")).unwrap();
    let from_home = tmp.join("home.tar");
    cache.build(&bare, &from_home, "xdg-home", &[], 0);
    assert!(std::fs::read(&from_home).unwrap() == std::fs::read(&want).unwrap());
}

#[test]
fn init_writes_a_manifest_that_builds_from_the_cache() {
    let Some(cache) = Cache::new("zstd") else {
        return;
    };
    let tmp = cache.tmp.path();
    let out = run(
        cache
            .nixlayer("xdg-init")
            .arg("init")
            .args(["--binary-cache", &cache.url()])
            .args(["--trusted-public-key", &cache.public])
            .arg(&cache.hello),
        0,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("binary_cache = \"{}\"", cache.url()))
            && text.contains(&cache.public),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Entrypoint = [\"{}/bin/hello\"]",
            cache.hello.display()
        )),
        "init looked into the cache for executables: {text}"
    );
    let manifest = util::write(tmp, "init.toml", &text);
    let archive = tmp.join("init.tar");
    cache.build(&manifest, &archive, "xdg-init", &[], 0);
    assert!(archive.exists());

    // A root the cache does not have: named, with the URL.
    let missing = "/nix/store/00000000000000000000000000000000-missing";
    let failed = run(
        cache
            .nixlayer("xdg-init")
            .arg("init")
            .args(["--binary-cache", &cache.url()])
            .args(["--trusted-public-key", &cache.public])
            .arg(missing),
        1,
    );
    let e = one_error(&failed);
    assert!(e.contains(missing) && e.contains(&cache.url()), "{e}");
}

#[test]
fn push_from_a_cache_is_the_local_push() {
    let Some(cache) = Cache::new("zstd") else {
        return;
    };
    if !crate::push::registry_ready() {
        return;
    }
    let reference = format!(
        "{}/nixlayer-test/from-cache:p{}",
        crate::push::REGISTRY,
        std::process::id()
    );
    let push = |manifest: &Path, xdg: &str| {
        let out = run(
            cache
                .nixlayer(xdg)
                .arg("push")
                .arg(manifest)
                .arg(&reference)
                .args(["--json", "--no-cache"]),
            0,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let local = push(&cache.local_manifest(), "xdg-local");
    let from_cache = push(
        &cache.cache_manifest("cache.toml", &cache.url(), ""),
        "xdg-push",
    );
    assert_eq!(from_cache["manifest_digest"], local["manifest_digest"]);
    assert_eq!(from_cache["layers"], local["layers"]);
    assert_eq!(cache.nars("xdg-push").len(), cache.closure().len());
}

#[test]
fn bearer_token_from_the_environment() {
    let Some(cache) = Cache::new("zstd") else {
        return;
    };
    let directives = r#"if ($http_authorization != "Bearer tok-s3cret") { return 401; }"#;
    let Some(nginx) = Nginx::start_with(&cache.dir(), directives, None) else {
        return;
    };
    let tmp = cache.tmp.path();
    let manifest = cache.cache_manifest("token.toml", &nginx.url(), "");
    let got = tmp.join("token.tar");
    let built = run(
        cache
            .nixlayer("xdg-token")
            .env("NIXLAYER_CACHE_TOKEN", "tok-s3cret")
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&got),
        0,
    );
    assert!(!String::from_utf8_lossy(&built.stderr).contains("tok-s3cret"));
    let want = tmp.join("local.tar");
    cache.build(&cache.local_manifest(), &want, "xdg-local", &[], 0);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap());

    // A wrong token: refused, the token never shown, no output.
    let out = tmp.join("wrong.tar");
    let failed = run(
        cache
            .nixlayer("xdg-wrong")
            .env("NIXLAYER_CACHE_TOKEN", "tok-wrong")
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&out),
        1,
    );
    let e = one_error(&failed);
    assert!(e.contains(&nginx.url()) && !e.contains("tok-wrong"), "{e}");
    assert!(!out.exists());
}
