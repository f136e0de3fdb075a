//! The binary-cache store against real caches: written by `nix copy`
//! (xz, zstd, bzip2, none; signed with keys from `nix-store
//! --generate-binary-cache-key`), read straight from `file://` and served by
//! a real nginx on 127.0.0.1, plain and behind basic auth (netrc).
//! Every entry, every file's bytes and every layer equal the local store's.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nixlayer::layer::{self, LayerOptions, Owner, Permissions};
use nixlayer::nix::narinfo::PublicKey;
use nixlayer::nix::{StoreDir, StorePath};
use nixlayer::store::binary_cache::{Auth, CacheError};
use nixlayer::store::{BinaryCache, CacheOptions, EntryKind, Store, StoreLocation};

use crate::support::{self, Spawned};
use crate::util::{nix, nix_fixture, require_tool, temp_dir, tool, NIX_CONFIG};

/// The fixture roots: the golden closure (a file path, a symlink path,
/// libraries) and hello-app (busybox with its symlinks).
pub(crate) fn roots() -> Option<Vec<StorePath>> {
    let golden = nix_fixture("golden")?;
    let hello = nix_fixture("hello")?;
    Some(
        [golden, hello]
            .iter()
            .map(|p| StorePath::parse(&StoreDir::default(), p.to_str().unwrap()).unwrap())
            .collect(),
    )
}

/// A signing key pair made by Nix: (secret key file, `name:base64` public key).
pub(crate) fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let (secret, public) = (
        dir.join(format!("{name}.sec")),
        dir.join(format!("{name}.pub")),
    );
    nix(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            name,
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
    );
    (
        secret,
        std::fs::read_to_string(public).unwrap().trim().to_owned(),
    )
}

/// `nix copy` of the roots' closure into a new `file://` cache at `dir`.
pub(crate) fn nix_copy(dir: &Path, compression: &str, secret: Option<&Path>, roots: &[StorePath]) {
    let mut url = format!(
        "file://{}?compression={compression}&write-nar-listing=true",
        dir.display()
    );
    if let Some(secret) = secret {
        url += &format!("&secret-key={}", secret.display());
    }
    let mut args = vec!["copy", "--to", url.as_str()];
    args.extend(roots.iter().map(StorePath::as_str));
    nix("nix", &args);
}

fn options(keys: &[&str], nar_cache: &Path) -> CacheOptions {
    let keys = keys.iter().map(|k| PublicKey::parse(k).unwrap()).collect();
    CacheOptions::new(keys, nar_cache.to_owned())
}

fn local() -> StoreLocation {
    StoreLocation {
        dir: StoreDir::default(),
        root: PathBuf::from("/"),
    }
}

/// Layer options as a build gives them, over `store`.
fn opts<S: Store>(store: S) -> LayerOptions<S> {
    LayerOptions {
        store,
        owner: Owner::default(),
        mtime: 1,
        permissions: Permissions::default(),
    }
}

/// The layer of `paths` from `measure` (sizes) then `write` (bytes).
fn layer_of<M: Store, W: Store>(
    measure: M,
    write: W,
    paths: &[StorePath],
) -> nixlayer::oci::LayerDigest {
    let size = layer::measure_store_layer(&opts(measure), paths).unwrap();
    layer::write_store_layer(&opts(write), paths, size, std::io::sink()).unwrap()
}

/// Everything a local store and the cache say about `paths` agrees: every
/// entry, every file's bytes, NAR sizes, and the layer of all of them.
fn assert_same_as_local(cache: &BinaryCache, paths: &[StorePath]) {
    let local = local();
    for path in paths {
        let from_cache: Vec<_> = cache.entries(path).map(Result::unwrap).collect();
        let from_disk: Vec<_> = local.entries(path).map(Result::unwrap).collect();
        assert_eq!(from_cache, from_disk, "entries of {path}");
        for entry in &from_disk {
            if let EntryKind::Regular { .. } = entry.kind {
                let mut a = Vec::new();
                cache
                    .open(&entry.name)
                    .unwrap()
                    .read_to_end(&mut a)
                    .unwrap();
                let b = std::fs::read(local.location(&entry.name)).unwrap();
                assert!(a == b, "bytes of {}", String::from_utf8_lossy(&entry.name));
            }
            let name = entry.name.strip_suffix(b"/").unwrap_or(&entry.name);
            assert_eq!(cache.entry(name).unwrap(), local.entry(name).unwrap());
            if entry.kind == EntryKind::Directory {
                assert_eq!(cache.read_dir(name).unwrap(), local.read_dir(name).unwrap());
            }
        }
        assert_eq!(cache.nar_size(path).unwrap(), local.nar_size(path).unwrap());
    }
    let expected = layer_of(&local, &local, paths);
    assert_eq!(
        layer_of(cache.listed(), cache, paths),
        expected,
        "listed then NARs"
    );
    assert_eq!(layer_of(cache, cache, paths), expected, "NARs alone");
}

/// The store paths of the closure of `roots` in `cache`.
fn closure_paths(cache: &BinaryCache, roots: &[StorePath]) -> Vec<StorePath> {
    cache
        .closure(roots)
        .unwrap()
        .iter()
        .map(|i| i.store_path.clone())
        .collect()
}

/// NARs and temporary files left in the NAR cache.
pub(crate) fn nar_cache_files(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn file_caches_of_every_compression_equal_the_local_store() {
    let Some(roots) = roots() else { return };
    let tmp = temp_dir();
    let (secret, public) = keypair(tmp.path(), "test-cache-1");
    let expected: Vec<String> = String::from_utf8(nix(
        "nix-store",
        &[
            &["--query", "--requisites"][..],
            &roots.iter().map(StorePath::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    ))
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect();
    for compression in ["xz", "zstd", "bzip2", "gzip", "none"] {
        let dir = tmp.path().join(compression);
        nix_copy(&dir, compression, Some(&secret), &roots);
        let nar_cache = tmp.path().join(format!("nar-{compression}"));
        let url = format!("file://{}", dir.display());
        let cache = BinaryCache::open(&url, options(&[&public], &nar_cache)).unwrap();
        let closure = cache.closure(&roots).unwrap();
        let mut paths: Vec<String> = closure.iter().map(|i| i.store_path.to_string()).collect();
        let mut want = expected.clone();
        want.sort();
        paths.sort();
        assert_eq!(paths, want, "{compression}: the closure");
        let paths: Vec<StorePath> = closure.iter().map(|i| i.store_path.clone()).collect();
        // Sizes from the listings alone (no NAR fetched), bytes from the NARs.
        let local = local();
        let listed = tmp.path().join(format!("nar-listed-{compression}"));
        let fresh = BinaryCache::open(&url, options(&[&public], &listed)).unwrap();
        let opts_listed = opts(fresh.listed());
        let size = layer::measure_store_layer(&opts_listed, &paths).unwrap();
        assert_eq!(
            size,
            layer::measure_store_layer(&opts(&local), &paths).unwrap()
        );
        assert!(
            nar_cache_files(&listed).is_empty(),
            "measuring fetched no NAR"
        );
        let layer = layer::write_store_layer(&opts(&fresh), &paths, size, std::io::sink()).unwrap();
        assert_eq!(layer, layer_of(&local, &local, &paths));
        assert_same_as_local(&cache, &paths);
        // A second build reads the NAR cache: same answers, no new files.
        let before = nar_cache_files(&nar_cache);
        assert_eq!(
            before.len(),
            2 * paths.len(),
            "one NAR and index per path: {before:?}"
        );
        let again = BinaryCache::open(&url, options(&[&public], &nar_cache)).unwrap();
        again.fetch_all(&paths).unwrap();
        assert_same_as_local(&again, &paths);
        assert_eq!(nar_cache_files(&nar_cache), before);
    }
}

/// A signed zstd cache of the roots and its key, for the refusal tests.
struct Signed {
    tmp: tempfile::TempDir,
    public: String,
    roots: Vec<StorePath>,
}

impl Signed {
    fn new(compression: &str) -> Option<Self> {
        let roots = roots()?;
        let tmp = temp_dir();
        let (secret, public) = keypair(tmp.path(), "test-cache-1");
        nix_copy(
            &tmp.path().join("cache"),
            compression,
            Some(&secret),
            &roots,
        );
        Some(Self { tmp, public, roots })
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }
    fn url(&self) -> String {
        format!("file://{}", self.dir().display())
    }
    fn nar_cache(&self) -> PathBuf {
        self.tmp.path().join("nar")
    }
    fn narinfo(&self, path: &StorePath) -> PathBuf {
        self.dir().join(format!("{}.narinfo", path.hash_part()))
    }
    fn nar_file(&self, path: &StorePath) -> PathBuf {
        let text = std::fs::read_to_string(self.narinfo(path)).unwrap();
        let url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
        self.dir().join(url)
    }
    /// The error of reading every root's layer entries with `keys`.
    fn error(&self, keys: &[&str]) -> String {
        let opts = options(keys, &self.nar_cache());
        let cache = match BinaryCache::open(&self.url(), opts) {
            Ok(c) => c,
            Err(e) => return chain(&e),
        };
        if let Err(e) = cache.closure(&self.roots) {
            return chain(&e);
        }
        for path in &self.roots {
            for entry in cache.entries(path) {
                if let Err(e) = entry {
                    return chain(&e);
                }
            }
        }
        panic!("no error");
    }
}

/// An error and its causes, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// `text` without the lines that start with `prefix`.
fn without_lines(text: &str, prefix: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn tampering_wrong_keys_and_missing_files_are_refused() {
    let Some(signed) = Signed::new("none") else {
        return;
    };
    let root = &signed.roots[0];
    let narinfo = signed.narinfo(root);
    let original = std::fs::read_to_string(&narinfo).unwrap();
    let url = signed.url();
    let assert_refused = |error: &str, why: &str| {
        // The closure is read in parallel: any of its paths may fail first.
        let named = if why == "wrong key" {
            "/nix/store/"
        } else {
            root.as_str()
        };
        assert!(error.contains(named), "{why}: names the path: {error}");
        assert!(error.contains(&url), "{why}: names the URL: {error}");
        let left = nar_cache_files(&signed.nar_cache());
        let hash = original
            .lines()
            .find_map(|l| l.strip_prefix("NarHash: sha256:"))
            .unwrap();
        assert!(
            !left
                .iter()
                .any(|n| n.starts_with(hash) || n.starts_with(".tmp")),
            "{why}: no poisoned or partial NAR-cache entry: {left:?}"
        );
    };

    // Tampered NAR: one byte of the file changed (same length).
    let nar = signed.nar_file(root);
    let good = std::fs::read(&nar).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 20;
    bad[last] ^= 1;
    std::fs::write(&nar, &bad).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(e.contains("FileHash"), "{e}");
    assert_refused(&e, "tampered NAR");
    // Also with the FileHash gone: the NAR hash catches it.
    let no_file_hash = without_lines(&original, "FileHash");
    std::fs::write(&narinfo, &no_file_hash).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(e.contains("NarHash"), "{e}");
    assert_refused(&e, "tampered NAR, no FileHash");
    std::fs::write(&nar, &good).unwrap();

    // Missing NAR.
    std::fs::remove_file(&nar).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(e.contains("NAR") && e.contains("missing"), "{e}");
    assert_refused(&e, "missing NAR");
    std::fs::write(&nar, &good).unwrap();

    // Tampered narinfo: another NarHash (a signed field).
    let tampered = original.replace("NarSize: ", "NarSize: 1");
    std::fs::write(&narinfo, &tampered).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(e.contains("does not verify"), "{e}");
    assert_refused(&e, "tampered narinfo");

    // Missing signature.
    let unsigned = without_lines(&original, "Sig:");
    std::fs::write(&narinfo, &unsigned).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(e.contains("not signed"), "{e}");
    assert_refused(&e, "unsigned");
    std::fs::write(&narinfo, &original).unwrap();

    // Wrong key: the narinfo is signed by a key not trusted.
    let (_, other) = keypair(signed.tmp.path(), "other-1");
    let e = signed.error(&[&other]);
    assert!(e.contains("untrusted keys (test-cache-1)"), "{e}");
    assert_refused(&e, "wrong key");
    // Same name, other key bytes.
    let impostor = format!("test-cache-1:{}", other.split_once(':').unwrap().1);
    let e = signed.error(&[&impostor]);
    assert!(e.contains("does not verify"), "{e}");

    // Missing narinfo.
    std::fs::remove_file(&narinfo).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(e.contains("narinfo") && e.contains("missing"), "{e}");
    assert!(e.contains(root.as_str()), "{e}");
    std::fs::write(&narinfo, &original).unwrap();
    // A reference's: the error names the path that needs it (found by the
    // QA round: only the missing path was named).
    let reference = original
        .lines()
        .find_map(|l| l.strip_prefix("References: "))
        .and_then(|r| r.split(' ').find(|r| !root.as_str().ends_with(*r)))
        .expect("the root has a reference");
    let referenced = signed.dir().join(format!("{}.narinfo", &reference[..32]));
    let kept = std::fs::read(&referenced).unwrap();
    std::fs::remove_file(&referenced).unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(
        e.contains(reference) && e.contains(&format!("(a reference of `{root}`)")),
        "{e}"
    );
    std::fs::write(&referenced, kept).unwrap();

    // No keys: refused unless signatures are not required.
    let e = signed.error(&[]);
    assert!(e.contains("require_signatures = false"), "{e}");
    let mut opts = options(&[], &signed.nar_cache());
    opts.require_signatures = false;
    let cache = BinaryCache::open(&url, opts).unwrap();
    let paths = closure_paths(&cache, &signed.roots);
    assert_same_as_local(&cache, &paths);

    // Unknown compression and another store directory.
    std::fs::write(
        &narinfo,
        original.replace("Compression: none", "Compression: lz4"),
    )
    .unwrap();
    let e = signed.error(&[&signed.public]);
    assert!(
        e.contains("unknown compression `lz4`") && e.contains(root.as_str()),
        "{e}"
    );
    std::fs::write(&narinfo, &original).unwrap();
    let mut opts = options(&[&signed.public], &signed.nar_cache());
    opts.store_dir = StoreDir::new("/other/store").unwrap();
    let e = chain(&BinaryCache::open(&url, opts).unwrap_err());
    assert!(
        e.contains("/other/store") && e.contains("nix-cache-info"),
        "{e}"
    );
}

/// An nginx on 127.0.0.1 serving `root`, stopped on drop.
pub(crate) struct Nginx {
    server: Spawned,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `root`; with `htpasswd`, behind basic auth.
    pub(crate) fn start(root: &Path, htpasswd: Option<&Path>) -> Option<Self> {
        let auth = htpasswd.map_or(String::new(), |p| {
            format!(
                "auth_basic \"cache\"; auth_basic_user_file {};",
                p.display()
            )
        });
        Self::start_with(root, &auth, None)
    }

    /// Serves `root` over TLS with `(certificate, key)` when given.
    pub(crate) fn start_with(
        root: &Path,
        directives: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Option<Self> {
        if !require_tool("nginx") {
            return None;
        }
        let dir = temp_dir();
        let port = support::free_port();
        let mut auth = directives.to_owned();
        let mut listen = format!("127.0.0.1:{port}");
        if let Some((cert, key)) = tls {
            listen += " ssl";
            auth += &format!(
                " ssl_certificate {}; ssl_certificate_key {};",
                cert.display(),
                key.display()
            );
        }
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; user root root;\n\
             error_log {d}/error.log; pid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {listen}; root {root}; {auth} }} }}\n",
            d = dir.path().display(),
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                dir.path().to_str().unwrap(),
                "-c",
                conf_path.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        support::wait_for_port(port, "nginx");
        Some(Self {
            server: Spawned { child, port },
            _dir: dir,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.port)
    }
}

/// An unsigned narinfo (accepted with `require_signatures = false`) that
/// declares a NAR bigger than the disk: refused before the download, so a
/// decompression bomb cannot fill the NAR cache's file system, and nothing
/// is left there. (The old reader decompressed up to the declared NarSize
/// and only then compared.)
#[test]
fn a_nar_larger_than_the_free_space_is_refused_before_the_download() {
    let Some(signed) = Signed::new("none") else {
        return;
    };
    let root = &signed.roots[0];
    let narinfo = signed.narinfo(root);
    let original = std::fs::read_to_string(&narinfo).unwrap();
    let huge: String = original
        .lines()
        .filter(|l| !l.starts_with("Sig:"))
        .map(|l| match l.strip_prefix("NarSize: ") {
            Some(_) => format!("NarSize: {}\n", 1u64 << 62),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&narinfo, huge).unwrap();
    let mut opts = options(&[], &signed.nar_cache());
    opts.require_signatures = false;
    let cache = BinaryCache::open(&signed.url(), opts).unwrap();
    let error = cache
        .entries(root)
        .find_map(Result::err)
        .map(|e| chain(&e))
        .expect("an error");
    assert!(
        error.contains(root.as_str())
            && error.contains("bytes (its NarSize), more than the")
            && error.contains("free there"),
        "{error}"
    );
    assert_eq!(nar_cache_files(&signed.nar_cache()), Vec::<String>::new());
}

#[test]
fn http_cache_served_by_nginx_equals_the_local_store() {
    let Some(signed) = Signed::new("xz") else {
        return;
    };
    let Some(nginx) = Nginx::start(&signed.dir(), None) else {
        return;
    };
    let cache = BinaryCache::open(
        &nginx.url(),
        options(&[&signed.public], &signed.nar_cache()),
    )
    .unwrap();
    let paths = closure_paths(&cache, &signed.roots);
    cache.fetch_all(&paths).unwrap();
    assert_same_as_local(&cache, &paths);

    // A missing NAR over HTTP (404) names the path and the URL.
    let root = &signed.roots[1];
    let nar = signed.nar_file(root);
    std::fs::rename(&nar, nar.with_extension("gone")).unwrap();
    let fresh = signed.tmp.path().join("nar-fresh");
    let cache = BinaryCache::open(&nginx.url(), options(&[&signed.public], &fresh)).unwrap();
    let e = chain(&cache.entries(root).next().unwrap().unwrap_err());
    assert!(
        e.contains(root.as_str()) && e.contains(&nginx.url()) && e.contains("missing"),
        "{e}"
    );
    assert!(
        nar_cache_files(&fresh)
            .iter()
            .all(|n| !n.starts_with(".tmp")),
        "no partial file"
    );
}

#[test]
fn basic_auth_through_netrc() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    if !require_tool("openssl") {
        return;
    }
    let hash = String::from_utf8(tool("openssl", &["passwd", "-apr1", "s3cret-pw"])).unwrap();
    let htpasswd = signed.tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("builder:{}", hash.trim())).unwrap();
    let Some(nginx) = Nginx::start(&signed.dir(), Some(&htpasswd)) else {
        return;
    };
    // Without credentials: the error says so, and names the URL.
    let mut opts = options(&[&signed.public], &signed.nar_cache());
    opts.auth = Auth {
        netrc_file: Some(signed.tmp.path().join("no-netrc")),
        bearer_token: None,
    };
    let e = chain(&BinaryCache::open(&nginx.url(), opts.clone()).unwrap_err());
    assert!(
        e.contains("needs credentials") && e.contains(&nginx.url()),
        "{e}"
    );
    // ...and why there were none: the netrc file named is not there, or
    // has no entry for the host (found by the QA round: a mistyped
    // `netrc_file` was not mentioned).
    let no_netrc = signed.tmp.path().join("no-netrc").display().to_string();
    assert!(e.contains(&format!("`{no_netrc}` does not exist")), "{e}");
    let other = signed.tmp.path().join("other-netrc");
    std::fs::write(&other, "machine other.example login x password other-pw\n").unwrap();
    opts.auth.netrc_file = Some(other.clone());
    let e = chain(&BinaryCache::open(&nginx.url(), opts.clone()).unwrap_err());
    assert!(
        e.contains("no `machine 127.0.0.1` or `default` entry") && !e.contains("other-pw"),
        "{e}"
    );
    // Wrong ones: refused, and the password is never shown.
    let netrc = signed.tmp.path().join("netrc");
    std::fs::write(
        &netrc,
        "machine 127.0.0.1 login builder password wrong-pw\n",
    )
    .unwrap();
    opts.auth.netrc_file = Some(netrc.clone());
    let e = BinaryCache::open(&nginx.url(), opts.clone()).unwrap_err();
    let shown = format!("{} {e:?}", chain(&e));
    assert!(
        shown.contains("refused") && !shown.contains("wrong-pw"),
        "{shown}"
    );
    // The right ones, from the netrc file.
    std::fs::write(&netrc, "machine other.example login x password y\nmachine 127.0.0.1\n login builder\n password s3cret-pw\n").unwrap();
    let cache = BinaryCache::open(&nginx.url(), opts).unwrap();
    assert!(!format!("{cache:?}").contains("s3cret-pw"));
    let paths = closure_paths(&cache, &signed.roots);
    assert_same_as_local(&cache, &paths);
}

#[test]
fn unsupported_urls_are_refused_clearly() {
    let tmp = temp_dir();
    let opts = options(&[], tmp.path());
    let e = BinaryCache::open("s3://bucket?region=eu-west-1", opts.clone()).unwrap_err();
    assert!(
        matches!(e, CacheError::Url { .. }) && e.to_string().contains("HTTPS endpoint"),
        "{e}"
    );
    let mut opts = opts;
    opts.require_signatures = false;
    let e =
        chain(&BinaryCache::open(&format!("file://{}", tmp.path().display()), opts).unwrap_err());
    assert!(e.contains("nix-cache-info") && e.contains("missing"), "{e}");
    let _ = NIX_CONFIG;
}

#[test]
fn https_cache_with_a_custom_ca() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    if !require_tool("openssl") {
        return;
    }
    let support::TestCa { ca, cert, key } = support::test_ca(signed.tmp.path());
    let Some(nginx) = Nginx::start_with(&signed.dir(), "", Some((&cert, &key))) else {
        return;
    };
    // Not trusted without the CA.
    let mut opts = options(&[&signed.public], &signed.nar_cache());
    opts.ca_files = Vec::new();
    let e = chain(&BinaryCache::open(&nginx.https_url(), opts.clone()).unwrap_err());
    assert!(e.contains(&nginx.https_url()), "{e}");
    // The error says how to trust it (found by the QA round: it said
    // `io: invalid peer certificate: UnknownIssuer`, and that after four
    // retries of a refusal that never changes).
    assert!(
        e.contains("TLS failed") && e.contains("SSL_CERT_FILE"),
        "{e}"
    );
    // A CA file with no certificate in it (here a key) is named, not
    // quietly skipped.
    opts.ca_files = vec![key.clone()];
    let e = chain(&BinaryCache::open(&nginx.https_url(), opts.clone()).unwrap_err());
    assert!(
        e.contains(&key.display().to_string()) && e.contains("holds no PEM certificate"),
        "{e}"
    );
    // A self-signed certificate as `openssl req -x509` makes it (a CA
    // certificate), trusted: rustls refuses it, and the error says why.
    let (self_key, self_cert) = support::self_signed(&signed.tmp.path().join("self"), "127.0.0.1");
    let Some(self_nginx) = Nginx::start_with(&signed.dir(), "", Some((&self_cert, &self_key)))
    else {
        return;
    };
    opts.ca_files = vec![self_cert.clone()];
    let e = chain(&BinaryCache::open(&self_nginx.https_url(), opts.clone()).unwrap_err());
    assert!(e.contains("CA:TRUE"), "{e}");
    // Trusted with it (as SSL_CERT_FILE gives it).
    opts.ca_files = vec![ca];
    let cache = BinaryCache::open(&nginx.https_url(), opts).unwrap();
    let paths = closure_paths(&cache, &signed.roots);
    assert_same_as_local(&cache, &paths);
}

/// How the faulty server misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// The first request for each file gets a 503.
    Flaky,
    /// NARs are cut in half after a full Content-Length.
    Truncate,
    /// Only the first answer for each NAR is cut (a connection reset).
    TruncateOnce,
    /// Every NAR is answered after 300 ms.
    Slow,
    /// None: every file as it is (to count requests).
    Honest,
}

/// A small HTTP server on 127.0.0.1 in front of a cache directory that
/// misbehaves as told; stops on drop.
struct Faulty {
    port: u16,
    /// The files asked for so far.
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Faulty {
    fn start(root: PathBuf, fault: Fault) -> Self {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let asking = std::sync::Arc::clone(&asked);
        let thread = std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let mut served = 0;
            // Bounded: at most 10,000 polls of 5 ms after the last request.
            let mut idle = 0;
            while !stopping.load(Ordering::Relaxed) && idle < 10_000 {
                let Ok((mut conn, _)) = listener.accept() else {
                    idle += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                idle = 0;
                served += 1;
                conn.set_nonblocking(false).unwrap();
                let mut head = Vec::new();
                let mut byte = [0];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if conn.read(&mut byte).unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let target = head
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_owned();
                let body = std::fs::read(root.join(&target));
                asking.lock().unwrap().push(target.clone());
                if target.starts_with("nar/") && fault == Fault::Slow {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                let _ = match (body, fault) {
                    (Err(_), _) => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                    (Ok(_), Fault::Flaky) if seen.insert(target.clone()) => conn.write_all(
                        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                    (Ok(body), fault) => {
                        let once = fault == Fault::TruncateOnce && seen.insert(target.clone());
                        let cut =
                            if (fault == Fault::Truncate || once) && target.starts_with("nar/") {
                                body.len() / 2
                            } else {
                                body.len()
                            };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        conn.write_all(head.as_bytes())
                            .and_then(|()| conn.write_all(&body[..cut]))
                    }
                };
            }
            served
        });
        Self {
            port,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn nar_requests(&self) -> usize {
        self.asked_for(|t| t.starts_with("nar/"))
    }

    /// How many requests so far were for a file `which` picks.
    fn asked_for(&self, which: impl Fn(&str) -> bool) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|t| which(t))
            .count()
    }
}

/// A build whose NARs are all in the NAR cache measures its layers from
/// there and asks the server for no listing and no NAR (narinfos only).
#[test]
fn a_warm_build_fetches_no_listing_and_no_nar() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    let server = Faulty::start(signed.dir(), Fault::Honest);
    let open = || {
        BinaryCache::open(
            &server.url(),
            options(&[&signed.public], &signed.nar_cache()),
        )
        .unwrap()
    };
    let cold = open();
    let paths = closure_paths(&cold, &signed.roots);
    cold.fetch_all(&paths).unwrap();
    drop(cold);
    let before = server.asked_for(|_| true);
    let warm = open();
    assert_eq!(closure_paths(&warm, &signed.roots), paths);
    assert!(warm.has_listing(&paths[0]));
    let layer = layer_of(warm.listed(), &warm, &paths);
    assert_eq!(layer, layer_of(local(), local(), &paths));
    let asked = server.asked.lock().unwrap()[before..].to_vec();
    assert!(
        asked
            .iter()
            .all(|t| t.ends_with(".narinfo") || t == "nix-cache-info"),
        "{asked:?}"
    );
}

/// Threads wanting the same NAR at once (the layer writer and the thread
/// hashing layers ahead of it) download it once: the others wait for it.
#[test]
fn a_nar_wanted_by_several_threads_is_downloaded_once() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    let slow = Faulty::start(signed.dir(), Fault::Slow);
    let cache =
        BinaryCache::open(&slow.url(), options(&[&signed.public], &signed.nar_cache())).unwrap();
    let root = &signed.roots[1];
    cache.closure(std::slice::from_ref(root)).unwrap();
    let entries: Vec<_> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cache.entries(root).map(Result::unwrap).collect::<Vec<_>>()))
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(slow.nar_requests(), 1, "one download for four readers");
    assert!(entries.windows(2).all(|w| w[0] == w[1]));
    assert_same_as_local(&cache, std::slice::from_ref(root));
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn retries_on_503_and_refuses_truncated_downloads() {
    let Some(signed) = Signed::new("xz") else {
        return;
    };
    let flaky = Faulty::start(signed.dir(), Fault::Flaky);
    let cache = BinaryCache::open(
        &flaky.url(),
        options(&[&signed.public], &signed.nar_cache()),
    )
    .unwrap();
    let paths = closure_paths(&cache, &signed.roots);
    cache.fetch_all(&paths).unwrap();
    assert_same_as_local(&cache, &paths);

    // A NAR cut once is fetched again.
    let once = Faulty::start(signed.dir(), Fault::TruncateOnce);
    let again = signed.tmp.path().join("nar-again");
    let cache = BinaryCache::open(&once.url(), options(&[&signed.public], &again)).unwrap();
    cache.fetch_all(&paths).unwrap();
    assert_same_as_local(&cache, &paths);

    let cut = Faulty::start(signed.dir(), Fault::Truncate);
    let fresh = signed.tmp.path().join("nar-fresh");
    let cache = BinaryCache::open(&cut.url(), options(&[&signed.public], &fresh)).unwrap();
    let root = &signed.roots[0];
    let e = chain(&cache.fetch_all(std::slice::from_ref(root)).unwrap_err());
    assert!(e.contains(root.as_str()) && e.contains(&cut.url()), "{e}");
    assert!(
        nar_cache_files(&fresh).is_empty(),
        "nothing left: {:?}",
        nar_cache_files(&fresh)
    );
}

#[test]
fn a_lying_listing_cannot_change_a_layer() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    // hello-app's listing says its `deps` file is larger than it is.
    let hello = &signed.roots[1];
    let ls = signed.dir().join(format!("{}.ls", hello.hash_part()));
    let text = std::fs::read_to_string(&ls).unwrap();
    let lying = text.replace("\"size\":121", "\"size\":122");
    assert_ne!(text, lying, "the fixture's listing changed: {text}");
    std::fs::write(&ls, lying).unwrap();
    let cache = BinaryCache::open(
        &signed.url(),
        options(&[&signed.public], &signed.nar_cache()),
    )
    .unwrap();
    let paths = [hello.clone()];
    // Measured from the listing, written from the NAR: refused.
    let size = layer::measure_store_layer(&opts(cache.listed()), &paths).unwrap();
    let e = layer::write_store_layer(&opts(&cache), &paths, size, std::io::sink()).unwrap_err();
    let e = chain(&e);
    assert!(
        e.contains("disagrees with the verified NAR") && e.contains(hello.as_str()),
        "{e}"
    );
    // Written through the listed view too: the NAR still decides.
    let cache = BinaryCache::open(
        &signed.url(),
        options(&[&signed.public], &signed.tmp.path().join("nar2")),
    )
    .unwrap();
    let size = layer::measure_store_layer(&opts(cache.listed()), &paths).unwrap();
    let e = chain(
        &layer::write_store_layer(&opts(cache.listed()), &paths, size, std::io::sink())
            .unwrap_err(),
    );
    assert!(e.contains("disagrees with the verified NAR"), "{e}");
    // A listing that changes a symlink's target but no size is caught too.
    let busybox = cache
        .closure(&paths)
        .unwrap()
        .into_iter()
        .map(|i| i.store_path.clone())
        .find(|p| p.as_str().contains("busybox"))
        .unwrap();
    let ls = signed.dir().join(format!("{}.ls", busybox.hash_part()));
    let text = std::fs::read_to_string(&ls).unwrap();
    std::fs::write(
        &ls,
        text.replacen("\"target\":\"busybox\"", "\"target\":\"evilbox\"", 1),
    )
    .unwrap();
    let cache = BinaryCache::open(
        &signed.url(),
        options(&[&signed.public], &signed.tmp.path().join("nar3")),
    )
    .unwrap();
    let paths = [busybox];
    let size = layer::measure_store_layer(&opts(cache.listed()), &paths).unwrap();
    let e =
        chain(&layer::write_store_layer(&opts(&cache), &paths, size, std::io::sink()).unwrap_err());
    assert!(e.contains("disagrees with the verified NAR"), "{e}");
}

#[test]
fn bearer_token_for_a_private_cache() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    let check = "if ($http_authorization != \"Bearer t0ken-value\") { return 401; }";
    let Some(nginx) = Nginx::start_with(&signed.dir(), check, None) else {
        return;
    };
    let mut opts = options(&[&signed.public], &signed.nar_cache());
    opts.auth.netrc_file = None;
    opts.auth.bearer_token = Some("wrong-t0ken".into());
    let e = BinaryCache::open(&nginx.url(), opts.clone()).unwrap_err();
    let shown = format!("{} {e:?}", chain(&e));
    assert!(
        shown.contains("refused") && !shown.contains("wrong-t0ken"),
        "{shown}"
    );
    opts.auth.bearer_token = Some("t0ken-value".into());
    let cache = BinaryCache::open(&nginx.url(), opts).unwrap();
    assert!(!format!("{cache:?}").contains("t0ken-value"));
    let paths = closure_paths(&cache, &signed.roots);
    assert_same_as_local(&cache, &paths);
}

#[test]
fn two_builds_share_one_nar_cache() {
    let Some(signed) = Signed::new("xz") else {
        return;
    };
    let shared = signed.nar_cache();
    let build = || {
        let cache = BinaryCache::open(&signed.url(), options(&[&signed.public], &shared)).unwrap();
        let paths = closure_paths(&cache, &signed.roots);
        cache.fetch_all(&paths).unwrap();
        assert_same_as_local(&cache, &paths);
        paths.len()
    };
    let counts: Vec<usize> = std::thread::scope(|s| {
        let a = s.spawn(build);
        let b = s.spawn(build);
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let files = nar_cache_files(&shared);
    assert_eq!(
        files.len(),
        2 * counts[0],
        "one NAR and one index per path, nothing partial: {files:?}"
    );
    let nars: Vec<&String> = files.iter().filter(|f| f.ends_with(".nar")).collect();
    assert_eq!(nars.len(), counts[0], "{files:?}");
    for nar in nars {
        let index = nar.replace(".nar", ".idx");
        assert!(files.contains(&index), "no index for {nar}: {files:?}");
    }
}

/// The NAR-cache files' total size.
fn nar_cache_bytes(dir: &Path) -> u64 {
    nar_cache_files(dir)
        .iter()
        .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
        .sum()
}

/// A bound smaller than one build's closure holds once the build is over:
/// the NARs it read were kept while it read them, and go when the cache is
/// dropped, least recently used first (found by the QA round: the cache
/// stayed above `nar_cache_max_bytes` after every such build).
#[test]
fn the_nar_cache_bound_holds_after_a_build() {
    let Some(signed) = Signed::new("zstd") else {
        return;
    };
    let dir = signed.nar_cache();
    let fill = |max: u64| {
        let mut o = options(&[&signed.public], &dir);
        o.nar_cache_max_bytes = max;
        let cache = BinaryCache::open(&signed.url(), o).unwrap();
        let paths = closure_paths(&cache, &signed.roots);
        cache.fetch_all(&paths).unwrap();
        assert_same_as_local(&cache, &paths);
        let during = nar_cache_bytes(&dir);
        drop(cache);
        (during, nar_cache_bytes(&dir))
    };
    let (_, full) = fill(u64::MAX);
    assert!(full > 0);
    // One byte less than everything: at least one NAR must go, not all.
    let bound = full - 1;
    std::fs::remove_dir_all(&dir).unwrap();
    let (during, after) = fill(bound);
    assert_eq!(
        during, full,
        "every NAR the build holds is kept while it runs"
    );
    assert!(
        after <= bound && after > 0,
        "after the build: {after} bytes, bound {bound}"
    );
    // Nothing but whole NARs with their indexes is left.
    let files = nar_cache_files(&dir);
    for f in &files {
        let other = match f.strip_suffix(".nar") {
            Some(stem) => format!("{stem}.idx"),
            None => format!("{}.nar", f.strip_suffix(".idx").unwrap()),
        };
        assert!(files.contains(&other), "{f} alone: {files:?}");
    }
}

/// The index file of the cached NAR of `path` (through its narinfo).
fn index_file(signed: &Signed, path: &StorePath) -> PathBuf {
    let text = std::fs::read_to_string(signed.narinfo(path)).unwrap();
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("NarHash: sha256:"))
        .unwrap();
    signed.nar_cache().join(format!("{hash}.idx"))
}

/// A cached NAR's index is trusted only under the NAR's stamp: a NAR whose
/// stamp changed with its bytes intact (`touch`, a copy) is hashed again,
/// kept (not fetched) and given a new index; one whose bytes changed is
/// fetched anew; a damaged or foreign index file is ignored and rewritten.
/// Every read gives the local store's entries and bytes.
#[test]
fn a_nar_whose_stamp_changed_is_verified_again() {
    use std::os::unix::fs::MetadataExt as _;
    let Some(signed) = Signed::new("xz") else {
        return;
    };
    let open = || {
        BinaryCache::open(
            &signed.url(),
            options(&[&signed.public], &signed.nar_cache()),
        )
        .unwrap()
    };
    let cache = open();
    let paths = closure_paths(&cache, &signed.roots);
    cache.fetch_all(&paths).unwrap();
    drop(cache);
    // The largest NAR: a file's contents fill most of it.
    let (path, nar) = paths
        .iter()
        .map(|p| {
            let idx = index_file(&signed, p);
            (p.clone(), idx.with_extension("nar"))
        })
        .max_by_key(|(_, nar)| std::fs::metadata(nar).unwrap().len())
        .unwrap();
    let idx = nar.with_extension("idx");
    let read = || {
        let cache = open();
        assert_same_as_local(&cache, std::slice::from_ref(&path));
    };
    let inode = || std::fs::metadata(&nar).unwrap().ino();
    let first = std::fs::read(&idx).unwrap();
    let good_inode = inode();

    // Stamp moved, bytes intact: verified, kept, a new index.
    let file = std::fs::File::options().append(true).open(&nar).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    drop(file);
    read();
    assert_eq!(inode(), good_inode, "an intact NAR is not fetched again");
    let second = std::fs::read(&idx).unwrap();
    assert_ne!(second, first, "the index records the new stamp");
    // Unchanged since: the index stands (not rewritten).
    read();
    assert_eq!(std::fs::read(&idx).unwrap(), second);

    // A byte of a file's contents flipped in place (same size, same
    // inode, the mtime put back): fetched anew.
    let good = std::fs::read(&nar).unwrap();
    let mtime = std::fs::metadata(&nar).unwrap().modified().unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    std::fs::write(&nar, &bad).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&nar)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    read();
    assert!(std::fs::read(&nar).unwrap() == good, "fetched anew");
    assert_ne!(inode(), good_inode);

    // A damaged index (one byte), then another NAR's index: ignored,
    // the NAR verified again and the index written anew.
    for damage in 0..2 {
        let mut bytes = std::fs::read(&idx).unwrap();
        if damage == 0 {
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
        } else {
            let other = paths.iter().find(|p| **p != path).unwrap();
            bytes = std::fs::read(index_file(&signed, other)).unwrap();
        }
        std::fs::write(&idx, &bytes).unwrap();
        let before = inode();
        read();
        assert_eq!(inode(), before, "an intact NAR is not fetched again");
        assert_ne!(
            std::fs::read(&idx).unwrap(),
            bytes,
            "index {damage} rewritten"
        );
    }
}
