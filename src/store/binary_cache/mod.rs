//! A Nix binary cache as a [`Store`]: images built with no local Nix store.
//!
//! [`BinaryCache::open`] reads the cache's `nix-cache-info` (its
//! `StoreDir` must be the build's store directory); [`BinaryCache::closure`]
//! reads `<hash>.narinfo` for the roots and, through their `References`,
//! the whole closure, on a bounded pool of threads. Each narinfo is checked
//! on arrival: it must be for the path asked, and with trusted keys it must
//! carry a valid ed25519 `Sig` from one of them ([`NarInfo::verify`]).
//! Without keys the cache is refused unless `require_signatures` is false
//! (Nix's default is to require them).
//!
//! Content comes from NARs: each is downloaded (retried) and, in the same
//! pass as it arrives, hashed as served, decompressed (xz, zstd, bzip2,
//! gzip or none), hashed again, its structure validated and written to a
//! temporary file of the local NAR cache
//! (`ops::settings::nixlayer_cache_home`); its `FileSize`, `FileHash`,
//! `NarSize` and `NarHash` are checked at the end, and only then is it
//! renamed into place, with its index and stamp beside it (see
//! `nar_cache`: a later use re-hashes it only when its stamp moved).
//! [`Store::entries`] and [`Store::open`] read that verified file:
//! entries from its index, a file's bytes at its offset. A NAR two threads
//! want at once is got by one of them. NARs carry no
//! mtime or owner and the executable bit maps to the canonical modes
//! ([`Entry::mode`]), so the layers are those of a local store holding the
//! same paths.
//!
//! # Sizes before bytes
//!
//! The one-pass docker archive needs each layer's size before its bytes.
//! [`BinaryCache::listed`] is a view whose [`Store::entries`] come from the
//! cache's `.ls` listings when it has them (nothing downloaded but a small
//! JSON per path), else from the verified NAR; measure a layer through it
//! and write it through the [`BinaryCache`] itself. A listing is unsigned,
//! but only predicts: a path's listing is used once, every later read of the
//! path comes from its verified NAR, and when that NAR arrives it must give
//! the very entries the listing gave, or the build fails
//! ([`CacheError::ListingMismatch`]).
//! OCI outputs and push need no sizes up front and use the cache alone;
//! [`BinaryCache::fetch_all`] downloads a closure's NARs in parallel first.
//!
//! # How the manifest maps onto it (to be wired)
//!
//! ```toml
//! [closure]
//! source = { binary_cache = "https://cache.example.org" }  # → BinaryCache::open(url, …)
//! trusted_public_keys = ["cache.example.org-1:base64…"]     # → CacheOptions::trusted_keys
//! require_signatures = true                                 # → CacheOptions::require_signatures
//! netrc_file = "~/.netrc"                                   # → Auth::netrc_file (default ~/.netrc)
//! ```
//!
//! `[store] dir` → [`CacheOptions::store_dir`]; the bearer token is
//! `NIXLAYER_CACHE_TOKEN` from the environment → [`Auth::bearer_token`];
//! the NAR cache is `$XDG_CACHE_HOME/nixlayer/nar` (`ops::settings::nixlayer_cache_home`)
//! bounded by [`CacheOptions::nar_cache_max_bytes`]. The closure graph is
//! `closure(roots)` mapped through `PathInfo::from(&NarInfo)` in `closure`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

use super::{Entry, Error, Store};
use crate::http::Timeouts;
use crate::nix::listing::{self, MAX_LISTING};
use crate::nix::nar::NarError;
use crate::nix::narinfo::{
    self, Compression, NarInfo, ParseError, PublicKey, SignatureError, MAX_NARINFO,
};
use crate::nix::{NarHash, StoreDir, StorePath};

mod index;
mod nar_cache;
mod transport;

use index::NarIndex;
use nar_cache::NarCache;
pub use transport::Auth;
use transport::Transport;

/// How to read a binary cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// The build's store directory; the cache's `StoreDir` must equal it.
    pub store_dir: StoreDir,
    /// Keys whose signatures are trusted (`name:base64`).
    pub trusted_keys: Vec<PublicKey>,
    /// Refuse a cache when no keys are given (Nix's default).
    pub require_signatures: bool,
    /// Credentials for an HTTP cache.
    pub auth: Auth,
    /// Where verified NARs are kept.
    pub nar_cache_dir: PathBuf,
    /// The most bytes the NAR cache keeps (least recently used go first).
    pub nar_cache_max_bytes: u64,
    /// Requests in flight at once.
    pub threads: usize,
    /// Request deadlines.
    pub timeouts: Timeouts,
    /// PEM files of CAs trusted for `https://` besides the system's:
    /// `SSL_CERT_FILE` (or `NIX_SSL_CERT_FILE`) by default, as Nix reads them.
    pub ca_files: Vec<PathBuf>,
}

impl CacheOptions {
    /// Options requiring signatures by `trusted_keys`, NARs cached in
    /// `nar_cache_dir` (up to 10 GiB), 8 requests at once.
    #[must_use]
    pub fn new(trusted_keys: Vec<PublicKey>, nar_cache_dir: PathBuf) -> Self {
        Self {
            store_dir: StoreDir::default(),
            trusted_keys,
            require_signatures: true,
            auth: Auth::default(),
            nar_cache_dir,
            nar_cache_max_bytes: 10 << 30,
            threads: 8,
            timeouts: Timeouts::default(),
            ca_files: ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"]
                .iter()
                .filter_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()))
                .map(PathBuf::from)
                .collect(),
        }
    }
}

/// Why a binary cache could not be read. Each names the URL, and the store
/// path when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A URL this tool cannot read.
    #[error("binary cache `{url}`: {reason}")]
    Url {
        /// The URL as given (without credentials).
        url: String,
        /// Why.
        reason: String,
    },
    /// No keys and signatures required.
    #[error("binary cache `{url}`: no trusted_public_keys given; set them, or require_signatures = false to accept unsigned paths")]
    NoKeys {
        /// The cache.
        url: String,
    },
    /// The cache's `StoreDir` is not the build's.
    #[error("binary cache `{url}` holds paths of store `{found}`, not `{expected}`")]
    StoreDir {
        /// Its `nix-cache-info`.
        url: String,
        /// The build's.
        expected: String,
        /// The cache's.
        found: String,
    },
    /// A file the cache should have is missing.
    #[error("{what} is missing at `{url}`")]
    Missing {
        /// What (e.g. `the narinfo of /nix/store/…`).
        what: String,
        /// Where it was looked for.
        url: String,
    },
    /// A narinfo or `nix-cache-info` is malformed.
    #[error("`{url}`{} is malformed", for_path(path))]
    Parse {
        /// Where.
        url: String,
        /// Its store path, when known.
        path: Option<String>,
        /// What is wrong.
        #[source]
        source: ParseError,
    },
    /// A narinfo for another path than asked.
    #[error("`{url}` describes `{found}`, not `{path}`")]
    WrongPath {
        /// Where.
        url: String,
        /// Asked for.
        path: String,
        /// Described.
        found: String,
    },
    /// A narinfo without a valid trusted signature.
    #[error("`{path}` from `{url}` is refused")]
    Signature {
        /// The store path.
        path: String,
        /// Its narinfo.
        url: String,
        /// Why.
        #[source]
        source: SignatureError,
    },
    /// A hash or size differs from the narinfo's.
    #[error("`{path}`: {what} of `{url}` is {found}, the narinfo says {expected}")]
    Mismatch {
        /// The store path.
        path: String,
        /// The NAR file.
        url: String,
        /// `FileHash`, `FileSize`, `NarHash` or `NarSize`.
        what: &'static str,
        /// From the narinfo.
        expected: String,
        /// Found.
        found: String,
    },
    /// The NAR is not a valid NAR, or decompressing it failed.
    #[error("`{path}`: the NAR `{url}` is invalid (compression: {compression})")]
    Nar {
        /// The store path.
        path: String,
        /// The NAR file.
        url: String,
        /// How it was compressed.
        compression: Compression,
        /// Why.
        #[source]
        source: NarError,
    },
    /// A response larger than allowed.
    #[error("`{url}` is larger than {limit} bytes")]
    TooLarge {
        /// Where.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The server wants credentials, or refused ours.
    #[error("`{url}` needs credentials{}", if *sent { format!(" and refused the ones sent ({whence})") } else { format!(": none were found ({whence}; give them in a netrc file, netrc_file, or NIXLAYER_CACHE_TOKEN)") })]
    Unauthorized {
        /// Where.
        url: String,
        /// Whether credentials were sent.
        sent: bool,
        /// Where they came from, or why there were none (a netrc file
        /// missing or without the host): never the credentials.
        whence: String,
    },
    /// An HTTP status that is not success.
    #[error("`{url}` answered HTTP {status}")]
    Status {
        /// Where.
        url: String,
        /// The status.
        status: u16,
    },
    /// A request ran out of time.
    #[error("`{url}` did not answer within {after:?}")]
    Timeout {
        /// Where.
        url: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// The server's certificate is not trusted, or the handshake failed.
    #[error("`{url}`: TLS failed: {reason}; trust its CA with `SSL_CERT_FILE` or `NIX_SSL_CERT_FILE` (a PEM file)")]
    Tls {
        /// Where.
        url: String,
        /// Why (rustls' words).
        reason: String,
    },
    /// A request failed.
    #[error("request to `{url}` failed")]
    Http {
        /// Where.
        url: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// Reading (a download, a cache file) failed.
    #[error("reading `{url}` failed")]
    Read {
        /// Where.
        url: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The local NAR cache failed.
    #[error("the NAR cache `{}` failed", dir.display())]
    NarCache {
        /// Its directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A listing whose entries were used disagrees with the verified NAR.
    #[error("`{path}`: the listing `{url}` disagrees with the verified NAR")]
    ListingMismatch {
        /// The store path.
        path: String,
        /// The listing.
        url: String,
    },
    /// Getting a file of `path` failed (the cause names the URL).
    #[error("fetching `{path}` failed")]
    Fetch {
        /// The store path.
        path: String,
        /// The cause.
        #[source]
        source: Box<CacheError>,
    },
    /// A path of the store directory but not a store path.
    #[error("`{name}` is not in a store path")]
    NotStorePath {
        /// The name.
        name: String,
    },
}

fn for_path(path: &Option<String>) -> String {
    path.as_ref()
        .map_or_else(String::new, |p| format!(" (of `{p}`)"))
}

/// A store path, its NAR and the rest of a name below it.
type Located<'n> = (StorePath, Arc<Nar>, &'n [u8]);

/// A verified NAR in the NAR cache: the open file and its index.
#[derive(Debug)]
struct Nar {
    file: Arc<File>,
    path: PathBuf,
    index: NarIndex,
}

/// A Nix binary cache read as a store.
#[derive(Debug)]
pub struct BinaryCache {
    /// The URL, as shown.
    url: String,
    transport: Transport,
    options: CacheOptions,
    nar_cache: NarCache,
    /// Where the last copies of this cache's small files are kept.
    offline: Option<Offline>,
    narinfos: Mutex<HashMap<StorePath, Arc<NarInfo>>>,
    nars: Mutex<HashMap<StorePath, Arc<Nar>>>,
    /// Paths whose NAR a thread is getting now: another thread asking for
    /// one waits for it (`fetched`) rather than downloading it again.
    fetching: Mutex<HashSet<StorePath>>,
    fetched: Condvar,
    listings: Mutex<HashMap<StorePath, Option<Arc<NarIndex>>>>,
    /// Listings whose entries were handed out: each is compared with its
    /// NAR when the NAR arrives.
    listed: Mutex<HashMap<StorePath, Arc<NarIndex>>>,
    /// What was downloaded, for progress.
    meter: Arc<NarMeter>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The NARs a [`BinaryCache`] downloaded so far (not those found in the NAR
/// cache), for the CLI's progress: fetching a closure's NARs can take
/// long before and while its layers are written.
#[derive(Debug, Default)]
pub struct NarMeter {
    nars: AtomicUsize,
    bytes: AtomicU64,
}

impl NarMeter {
    /// NARs downloaded and verified.
    #[must_use]
    pub fn nars(&self) -> usize {
        self.nars.load(Ordering::Relaxed)
    }

    /// Their bytes, as NARs (NarSize: uncompressed).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn add(&self, nar_size: u64) {
        self.nars.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(nar_size, Ordering::Relaxed);
    }
}

/// Checks `url`: `file://` (absolute path), `http://`, `https://`.
fn check_url(url: &str) -> Result<(), CacheError> {
    let err = |reason: &str| CacheError::Url {
        url: url.split('@').next_back().unwrap_or(url).to_owned(),
        reason: reason.to_owned(),
    };
    if url.starts_with("s3://") {
        return Err(err("s3:// is not supported; use the bucket's HTTPS endpoint (https://<bucket>.s3.<region>.amazonaws.com, or your endpoint's), with credentials in a netrc file or NIXLAYER_CACHE_TOKEN"));
    }
    if url.contains(['?', '#']) {
        return Err(err(
            "URL parameters are not supported; give the bare cache URL",
        ));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(err("a file:// URL needs an absolute path (file:///dir)"));
        }
        return Ok(());
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err(err("expected a file://, http:// or https:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(err(
            "credentials in the URL are not accepted; put them in a netrc file",
        ));
    }
    if authority.is_empty() || url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(err("no host, or spaces or control characters in the URL"));
    }
    Ok(())
}

/// sha256 and length of what passes through.
pub(super) struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    pub(super) fn new(inner: T) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    pub(super) fn finish(self) -> (T, NarHash, u64) {
        (self.inner, NarHash(self.hasher.finalize().into()), self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The last copies of an HTTP cache's `nix-cache-info` and narinfos,
/// beside the NAR cache (`…/nixlayer/narinfo/<sha256 of the URL>/`), so
/// that a warm build needs no server: they are read only when the server
/// cannot be reached (refused, reset, timed out, 5xx after the retries),
/// never when it answers, and a copy is checked as the original would be
/// (parsed, its path, its signatures by today's trusted keys). As Nix
/// keeps narinfos in its own disk cache; found missing by the QA round (a
/// build whose NARs were all cached failed when the cache was down).
#[derive(Debug)]
struct Offline {
    dir: PathBuf,
    /// Set once the server was found unreachable: the rest of the build
    /// reads the copies without waiting on the retries again.
    down: std::sync::atomic::AtomicBool,
}

impl Offline {
    /// For an HTTP(S) cache (a `file://` one is its own copy).
    fn of(url: &str, nar_cache_dir: &std::path::Path) -> Option<Self> {
        if url.starts_with("file://") {
            return None;
        }
        let digest = Sha256::digest(url.as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let root = nar_cache_dir.parent()?.join("narinfo");
        Some(Self {
            dir: root.join(name),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Keeps `bytes` as the copy of `rel`; best effort (a failure only
    /// means the next build needs the server).
    fn keep(&self, rel: &str, bytes: &[u8]) {
        let write = || -> io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut temp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&self.dir)?;
            temp.write_all(bytes)?;
            temp.persist(self.dir.join(rel)).map_err(|e| e.error)?;
            Ok(())
        };
        let _ = write();
    }

    /// The copy of `rel`, at most `MAX_NARINFO` bytes.
    fn copy(&self, rel: &str) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(self.dir.join(rel))
            .ok()?
            .take(MAX_NARINFO + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        (bytes.len() as u64 <= MAX_NARINFO).then_some(bytes)
    }
}

/// Whether `e` means the server could not be reached (as opposed to an
/// answer: missing, refused credentials, a bad certificate, too large).
fn unreachable(e: &CacheError) -> bool {
    match e {
        CacheError::Http { .. } | CacheError::Timeout { .. } => true,
        CacheError::Status { status, .. } => *status >= 500,
        _ => false,
    }
}

/// `rel` (`nix-cache-info` or a narinfo) from the cache, its copy kept;
/// the copy when the server cannot be reached.
fn get_small(
    transport: &Transport,
    offline: Option<&Offline>,
    rel: &str,
) -> Result<Option<Vec<u8>>, CacheError> {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(o) = offline.filter(|o| o.down.load(Relaxed)) {
        if let Some(bytes) = o.copy(rel) {
            return Ok(Some(bytes));
        }
    }
    match transport.get(rel, MAX_NARINFO) {
        Ok(Some(bytes)) => {
            if let Some(o) = offline {
                o.keep(rel, &bytes);
            }
            Ok(Some(bytes))
        }
        Ok(None) => Ok(None),
        Err(e) if unreachable(&e) => match offline.and_then(|o| Some((o, o.copy(rel)?))) {
            Some((o, bytes)) => {
                o.down.store(true, Relaxed);
                Ok(Some(bytes))
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The index of the cached NAR `file` when its bytes still hash to the
/// narinfo's `NarHash` and `NarSize`, else `None` (fetch it anew).
///
/// Used when the NAR's index file is missing or its stamp no longer
/// matches ([`NarCache::index`]): not trusted for having been verified
/// once, since a flipped bit or a stray edit would otherwise go into a
/// layer whose digest (from the layer cache, keyed by `NarHash`) says
/// otherwise, a silently broken image (found by the QA round).
fn cached_index(file: &File, info: &NarInfo) -> Option<NarIndex> {
    let mut tee = Tee {
        inner: BufReader::with_capacity(1 << 16, file).take(info.nar_size.saturating_add(1)),
        out: Hashing::new(io::sink()),
    };
    let index = NarIndex::read(&mut tee).ok()?;
    io::copy(&mut tee, &mut io::sink()).ok()?;
    let (_, hash, size) = tee.out.finish();
    (hash == info.nar_hash && size == info.nar_size).then_some(index)
}

/// What one pass over a downloaded NAR file found (see `download`).
struct Received {
    /// sha256 and length of the file as served.
    file_hash: NarHash,
    file_size: u64,
    /// The NAR's index, or why it is no NAR.
    parsed: Result<NarIndex, NarError>,
    /// Reading what the decoder held past the NAR's end.
    drained: io::Result<u64>,
    /// The NAR's temporary file, written.
    writer: BufWriter<File>,
    /// sha256 and length of the decompressed NAR.
    nar_hash: NarHash,
    nar_size: u64,
}

/// Reads from `inner`, writing each byte read to `out`, hashing it.
struct Tee<R, W> {
    inner: R,
    out: Hashing<W>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl BinaryCache {
    /// Opens the cache at `url` and checks its `nix-cache-info`.
    ///
    /// # Errors
    /// For an unsupported URL (`s3://`: use the HTTPS endpoint), no keys
    /// while signatures are required, an unreachable cache or another
    /// store directory.
    pub fn open(url: &str, options: CacheOptions) -> Result<Self, CacheError> {
        check_url(url)?;
        let url = url.trim_end_matches('/').to_owned();
        if options.trusted_keys.is_empty() && options.require_signatures {
            return Err(CacheError::NoKeys { url });
        }
        let transport = Transport::new(&url, &options.auth, options.timeouts, &options.ca_files)?;
        let offline = Offline::of(&url, &options.nar_cache_dir);
        let info_url = transport.url("nix-cache-info");
        let text = get_small(&transport, offline.as_ref(), "nix-cache-info")?.ok_or_else(|| {
            CacheError::Missing {
                what: "nix-cache-info (is this a binary cache?)".into(),
                url: info_url.clone(),
            }
        })?;
        let dir = narinfo::parse_cache_info(&text).map_err(|source| CacheError::Parse {
            url: info_url.clone(),
            path: None,
            source,
        })?;
        if dir != options.store_dir {
            return Err(CacheError::StoreDir {
                url: info_url,
                expected: options.store_dir.to_string(),
                found: dir.to_string(),
            });
        }
        Ok(Self {
            url,
            transport,
            nar_cache: NarCache::new(options.nar_cache_dir.clone(), options.nar_cache_max_bytes),
            offline,
            options,
            narinfos: Mutex::new(HashMap::new()),
            nars: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashSet::new()),
            fetched: Condvar::new(),
            listings: Mutex::new(HashMap::new()),
            listed: Mutex::new(HashMap::new()),
            meter: Arc::default(),
        })
    }

    /// Counts the NARs downloaded from now on, as they arrive.
    #[must_use]
    pub fn meter(&self) -> Arc<NarMeter> {
        Arc::clone(&self.meter)
    }

    /// The cache's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The verified narinfo of `path`; `None` when the cache has none.
    ///
    /// # Errors
    /// When it cannot be fetched or parsed, describes another path, or
    /// lacks a valid signature from a trusted key (when keys are given).
    pub fn narinfo(&self, path: &StorePath) -> Result<Option<Arc<NarInfo>>, CacheError> {
        if let Some(info) = lock(&self.narinfos).get(path) {
            return Ok(Some(Arc::clone(info)));
        }
        let rel = format!("{}.narinfo", path.hash_part());
        let url = self.transport.url(&rel);
        let fetched = get_small(&self.transport, self.offline.as_ref(), &rel);
        let Some(text) = fetched.map_err(|e| CacheError::Fetch {
            path: path.to_string(),
            source: Box::new(e),
        })?
        else {
            return Ok(None);
        };
        let info =
            NarInfo::parse(&self.options.store_dir, &text).map_err(|source| CacheError::Parse {
                url: url.clone(),
                path: Some(path.to_string()),
                source,
            })?;
        if info.store_path != *path {
            return Err(CacheError::WrongPath {
                url,
                path: path.to_string(),
                found: info.store_path.to_string(),
            });
        }
        if !self.options.trusted_keys.is_empty() {
            info.verify(&self.options.trusted_keys)
                .map_err(|source| CacheError::Signature {
                    path: path.to_string(),
                    url: url.clone(),
                    source,
                })?;
        }
        let info = Arc::new(info);
        lock(&self.narinfos).insert(path.clone(), Arc::clone(&info));
        Ok(Some(info))
    }

    fn required_narinfo(&self, path: &StorePath) -> Result<Arc<NarInfo>, CacheError> {
        self.narinfo(path)?.ok_or_else(|| CacheError::Missing {
            what: format!("the narinfo of `{path}`"),
            url: self.transport.url(&format!("{}.narinfo", path.hash_part())),
        })
    }

    /// The verified narinfos of the closure of `roots`, sorted by path,
    /// fetched `options.threads` at a time.
    ///
    /// # Errors
    /// The first failure of any narinfo (missing, malformed, unsigned…).
    pub fn closure(&self, roots: &[StorePath]) -> Result<Vec<Arc<NarInfo>>, CacheError> {
        struct Work {
            /// Each path with the path that referenced it (`None`: a root).
            queue: VecDeque<(StorePath, Option<StorePath>)>,
            seen: HashSet<StorePath>,
            busy: usize,
            error: Option<CacheError>,
            done: Vec<Arc<NarInfo>>,
        }
        let work = Mutex::new(Work {
            queue: roots.iter().map(|r| (r.clone(), None)).collect(),
            seen: roots.iter().cloned().collect(),
            busy: 0,
            error: None,
            done: Vec::new(),
        });
        let wake = Condvar::new();
        let worker = || loop {
            let (path, referrer) = {
                let mut w = lock(&work);
                loop {
                    if w.error.is_some() {
                        return;
                    }
                    if let Some(p) = w.queue.pop_front() {
                        w.busy += 1;
                        break p;
                    }
                    if w.busy == 0 {
                        return;
                    }
                    w = wake.wait(w).unwrap_or_else(PoisonError::into_inner);
                }
            };
            // A missing reference names the path that needs it, as Nix's
            // "required by" does: the narinfo asked for is not in the
            // manifest.
            let result = self.narinfo(&path).and_then(|info| {
                info.ok_or_else(|| CacheError::Missing {
                    what: match &referrer {
                        Some(r) => format!("the narinfo of `{path}` (a reference of `{r}`)"),
                        None => format!("the narinfo of `{path}`"),
                    },
                    url: self.transport.url(&format!("{}.narinfo", path.hash_part())),
                })
            });
            let mut w = lock(&work);
            w.busy -= 1;
            match result {
                Ok(info) => {
                    for r in &info.references {
                        if w.seen.insert(r.clone()) {
                            w.queue.push_back((r.clone(), Some(path.clone())));
                        }
                    }
                    w.done.push(info);
                }
                Err(e) => {
                    w.error.get_or_insert(e);
                }
            }
            wake.notify_all();
        };
        std::thread::scope(|s| {
            for _ in 0..self.options.threads.max(1) {
                s.spawn(worker);
            }
        });
        let work = work.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = work.error {
            return Err(e);
        }
        let mut done = work.done;
        done.sort_by(|a, b| a.store_path.cmp(&b.store_path));
        Ok(done)
    }

    /// Downloads and verifies the NARs of `paths` not yet cached,
    /// `options.threads` at a time.
    ///
    /// # Errors
    /// The first failure.
    pub fn fetch_all(&self, paths: &[StorePath]) -> Result<(), CacheError> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let error: Mutex<Option<CacheError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.options.threads.max(1).min(paths.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= paths.len() || lock(&error).is_some() {
                        return;
                    }
                    if let Err(e) = self.nar(&paths[i]) {
                        lock(&error).get_or_insert(e);
                        return;
                    }
                });
            }
        });
        match error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The verified NAR of `path`, from the NAR cache or downloaded; one
    /// thread gets it while any other asking for it waits (the layer
    /// writer and the thread hashing layers ahead of it may want the same
    /// path at once).
    fn nar(&self, path: &StorePath) -> Result<Arc<Nar>, CacheError> {
        /// Takes `path` off the list of NARs being got, however `get` ends.
        struct Done<'a>(&'a BinaryCache, &'a StorePath);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                lock(&self.0.fetching).remove(self.1);
                self.0.fetched.notify_all();
            }
        }
        {
            let mut fetching = lock(&self.fetching);
            loop {
                if let Some(nar) = lock(&self.nars).get(path) {
                    return Ok(Arc::clone(nar));
                }
                // Another thread's failure leaves it to this one to try.
                if fetching.insert(path.clone()) {
                    break;
                }
                fetching = self
                    .fetched
                    .wait(fetching)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        let _done = Done(self, path);
        self.get_nar(path)
    }

    /// [`BinaryCache::nar`]'s work, by the one thread getting `path`.
    fn get_nar(&self, path: &StorePath) -> Result<Arc<Nar>, CacheError> {
        let info = self.required_narinfo(path)?;
        let cache_err = |source| CacheError::NarCache {
            dir: self.nar_cache.dir.clone(),
            source,
        };
        let file_path = self.nar_cache.path(&info.nar_hash);
        let nar = match self.nar_cache.open(&info.nar_hash).map_err(cache_err)? {
            // Verified when it was put there; its index stands while its
            // stamp does, else it is hashed again (and written a new index
            // when intact): a damaged one is fetched anew.
            Some(file) => self
                .nar_cache
                .index(&file, &info.nar_hash, info.nar_size)
                .or_else(|| {
                    let index = cached_index(&file, &info)?;
                    self.nar_cache
                        .write_index(&file, &info.nar_hash, info.nar_size, &index);
                    Some(index)
                })
                .map(|index| Nar {
                    file: Arc::new(file),
                    path: file_path.clone(),
                    index,
                }),
            None => None,
        };
        let (nar, added) = match nar {
            Some(nar) => (nar, None),
            None => {
                let nar = self.download(&info)?;
                let index_len = std::fs::metadata(self.nar_cache.index_path(&info.nar_hash))
                    .map_or(0, |m| m.len());
                let len = nar.file.metadata().map_or(0, |m| m.len()) + index_len;
                (nar, Some(len))
            }
        };
        if let Some(listing) = lock(&self.listed).get(path) {
            if listing.entries(path) != nar.index.entries(path) {
                return Err(CacheError::ListingMismatch {
                    path: path.to_string(),
                    url: self.transport.url(&format!("{}.ls", path.hash_part())),
                });
            }
        }
        let nar = Arc::new(nar);
        let keep: HashSet<PathBuf> = {
            let mut nars = lock(&self.nars);
            nars.insert(path.clone(), Arc::clone(&nar));
            nars.values().map(|n| n.path.clone()).collect()
        };
        if let Some(len) = added {
            self.meter.add(info.nar_size);
            self.nar_cache.added(len, &keep).map_err(cache_err)?;
        }
        Ok(nar)
    }

    /// Downloads, checks and caches the NAR `info` describes.
    fn download(&self, info: &NarInfo) -> Result<Nar, CacheError> {
        let path = info.store_path.to_string();
        let url = self.transport.url(&info.url);
        let cache_err = |source| CacheError::NarCache {
            dir: self.nar_cache.dir.clone(),
            source,
        };
        let mismatch = |what, expected: String, found: String| CacheError::Mismatch {
            path: path.clone(),
            url: url.clone(),
            what,
            expected,
            found,
        };
        // One pass as the file arrives: hashed as served (FileHash),
        // decompressed (never past NarSize + 1), hashed again (NarHash),
        // checked as a NAR and written to the NAR's temporary file; nothing
        // of it is in place before every check passed. (The compressed
        // file is not kept: no second pass over it, no disk for it.)
        let nar_file = self.nar_cache.temp().map_err(cache_err)?;
        // Refused before the download when the NAR cannot fit.
        let need = info.nar_size;
        if let Some(room) = NarCache::room(nar_file.as_file()) {
            if need > room {
                return Err(cache_err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "the NAR of `{path}` ({}) needs {need} bytes (its NarSize), \
                         more than the {room} free there",
                        url
                    ),
                )));
            }
        }
        let limit = info
            .file_size
            .unwrap_or_else(|| info.nar_size.saturating_mul(2).saturating_add(1 << 20));
        let attempt = |body: &mut dyn Read| -> io::Result<Received> {
            let out = nar_file.reopen()?;
            out.set_len(0)?;
            let mut served = Tee {
                inner: body,
                out: Hashing::new(io::sink()),
            };
            let (parsed, drained, writer, nar_hash, nar_size) = {
                let buffered = BufReader::with_capacity(1 << 16, &mut served);
                let decoder: Box<dyn Read + '_> = match info.compression {
                    Compression::None => Box::new(buffered),
                    Compression::Xz => Box::new(lzma_rust2::XzReader::new(buffered, true)),
                    Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
                    Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
                    Compression::Zstd => {
                        Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
                    }
                };
                let mut tee = Tee {
                    inner: decoder.take(info.nar_size.saturating_add(1)),
                    out: Hashing::new(BufWriter::with_capacity(1 << 16, out)),
                };
                let parsed = NarIndex::read(&mut tee);
                // Whatever the decoder still holds counts towards NarSize.
                let drained = io::copy(&mut tee, &mut io::sink());
                let (writer, nar_hash, nar_size) = tee.out.finish();
                (parsed, drained, writer, nar_hash, nar_size)
            };
            // The rest of the file (past a corrupt stream's failure, or
            // after its end) counts towards FileHash and FileSize.
            io::copy(&mut served, &mut io::sink())?;
            let (_, file_hash, file_size) = served.out.finish();
            Ok(Received {
                file_hash,
                file_size,
                parsed,
                drained,
                writer,
                nar_hash,
                nar_size,
            })
        };
        let received = self
            .transport
            .stream(&info.url, limit.saturating_add(1), limit, attempt)
            .map_err(|e| CacheError::Fetch {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let Some(received) = received else {
            return Err(CacheError::Missing {
                what: format!("the NAR of `{path}`"),
                url,
            });
        };
        let Received {
            file_hash,
            file_size,
            parsed,
            drained,
            writer,
            nar_hash,
            nar_size,
        } = received.map_err(cache_err)?;
        // The file as served first (a tampered or truncated file), then a
        // decoder's failure (a corrupt one), then the signed size and hash
        // of the NAR, then the structure of a NAR that has them.
        if let Some(expected) = info.file_size {
            if file_size != expected {
                return Err(mismatch(
                    "FileSize",
                    expected.to_string(),
                    file_size.to_string(),
                ));
            }
        }
        if let Some(expected) = info.file_hash {
            if file_hash != expected {
                return Err(mismatch(
                    "FileHash",
                    expected.to_nix32(),
                    file_hash.to_nix32(),
                ));
            }
        }
        let nar_error = |source| CacheError::Nar {
            path: path.clone(),
            url: url.clone(),
            compression: info.compression,
            source,
        };
        let parsed = match parsed {
            Err(NarError::Io { source, offset })
                if source.kind() != io::ErrorKind::UnexpectedEof =>
            {
                return Err(nar_error(NarError::Io { source, offset }))
            }
            other => other,
        };
        drained.map_err(|source| CacheError::Read {
            url: url.clone(),
            source,
        })?;
        if nar_size != info.nar_size {
            return Err(mismatch(
                "NarSize",
                info.nar_size.to_string(),
                nar_size.to_string(),
            ));
        }
        if nar_hash != info.nar_hash {
            return Err(mismatch(
                "NarHash",
                info.nar_hash.to_nix32(),
                nar_hash.to_nix32(),
            ));
        }
        let index = parsed.map_err(nar_error)?;
        writer.into_inner().map_err(|e| cache_err(e.into_error()))?;
        // Verified: into place.
        let file = self
            .nar_cache
            .insert(nar_file, &info.nar_hash)
            .map_err(cache_err)?;
        self.nar_cache
            .write_index(&file, &info.nar_hash, info.nar_size, &index);
        Ok(Nar {
            file: Arc::new(file),
            path: self.nar_cache.path(&info.nar_hash),
            index,
        })
    }

    /// The `.ls` listing of `path`, when the cache has a valid one.
    fn listing(&self, path: &StorePath) -> Option<Arc<NarIndex>> {
        if let Some(l) = lock(&self.listings).get(path) {
            return l.clone();
        }
        let rel = format!("{}.ls", path.hash_part());
        if self
            .offline
            .as_ref()
            .is_some_and(|o| o.down.load(std::sync::atomic::Ordering::Relaxed))
        {
            // The server is down: the NAR (cached, or the build fails
            // naming it) is the listing.
            lock(&self.listings).insert(path.clone(), None);
            return None;
        }
        // A listing is optional: any failure means "none", and the NAR is used.
        let index = self
            .transport
            .get(&rel, MAX_LISTING)
            .ok()
            .flatten()
            .and_then(|bytes| listing::parse(&bytes).ok())
            .map(|root| Arc::new(NarIndex::from_listing(&root)));
        lock(&self.listings).insert(path.clone(), index.clone());
        index
    }

    /// Whether `path`'s NAR is verified here already or in the NAR cache,
    /// or the cache has a valid `.ls` listing of it (fetched once and kept
    /// for [`BinaryCache::listed`]): then its layer entries come without
    /// downloading the NAR first.
    #[must_use]
    pub fn has_listing(&self, path: &StorePath) -> bool {
        lock(&self.nars).contains_key(path)
            || self.in_nar_cache(path)
            || self.listing(path).is_some()
    }

    /// Whether the NAR cache has a file for `path`'s NAR (to be checked
    /// when used, as every cached NAR is): its entries are then read from
    /// there rather than from a listing fetched from the server.
    fn in_nar_cache(&self, path: &StorePath) -> bool {
        let Some(info) = lock(&self.narinfos).get(path).cloned() else {
            return false;
        };
        self.nar_cache.path(&info.nar_hash).is_file()
    }

    /// A view for measuring layers: entries from `.ls` listings where the
    /// cache has them and the NAR is not cached yet.
    #[must_use]
    pub fn listed(&self) -> Listed<'_> {
        Listed(self)
    }

    /// The store path holding `name` and the rest of `name` below it.
    fn split<'n>(&self, name: &'n [u8]) -> Result<(StorePath, &'n [u8]), CacheError> {
        let name = name.strip_suffix(b"/").unwrap_or(name);
        let not = || CacheError::NotStorePath {
            name: String::from_utf8_lossy(name).into_owned(),
        };
        let dir = self.options.store_dir.as_str().as_bytes();
        let rest = name
            .strip_prefix(dir)
            .and_then(|r| r.strip_prefix(b"/"))
            .ok_or_else(not)?;
        let (base, rel) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let base = std::str::from_utf8(base).map_err(|_| not())?;
        let path = StorePath::from_base_name(&self.options.store_dir, base).map_err(|_| not())?;
        Ok((path, rel))
    }

    fn store_error(&self, name: &[u8], e: CacheError) -> Error {
        Error::Io {
            path: self.location(name),
            source: io::Error::other(e),
        }
    }

    /// The NAR holding `name`, `None` when the cache has no such path.
    fn nar_of<'n>(&self, name: &'n [u8]) -> Result<Option<Located<'n>>, Error> {
        let (path, rel) = match self.split(name) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        match self.narinfo(&path) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.store_error(name, e)),
        }
        let nar = self.nar(&path).map_err(|e| self.store_error(name, e))?;
        Ok(Some((path, nar, rel)))
    }
}

impl Drop for BinaryCache {
    /// The build is over: the NAR cache goes back within its bound (see
    /// `NarCache::finish`); a failure only leaves it larger until the
    /// next build's eviction.
    fn drop(&mut self) {
        let _ = self.nar_cache.finish();
    }
}

/// The bytes of one file of a cached NAR, read at its offset (`pread`: no
/// shared position, so any number of readers at once).
#[derive(Debug)]
pub struct NarFile {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for NarFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.at;
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Store for BinaryCache {
    type Entries<'a> = std::vec::IntoIter<Result<Entry, Error>>;
    type Reader<'a> = NarFile;

    fn dir(&self) -> &StoreDir {
        &self.options.store_dir
    }

    /// `binary-cache?url=URL`: every NAR is checked against its narinfo's
    /// hash, so one URL gives one content per store path.
    fn identity(&self) -> String {
        format!("binary-cache?url={}", self.url)
    }

    fn entries(&self, path: &StorePath) -> Self::Entries<'_> {
        let entries = match self.nar(path) {
            Ok(nar) => nar.index.entries(path).into_iter().map(Ok).collect(),
            Err(e) => vec![Err(self.store_error(path.as_str().as_bytes(), e))],
        };
        entries.into_iter()
    }

    fn entry(&self, name: &[u8]) -> Result<Option<Entry>, Error> {
        Ok(self
            .nar_of(name)?
            .and_then(|(path, nar, rel)| nar.index.entry(&path, rel)))
    }

    fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let listed = self
            .nar_of(name)?
            .and_then(|(_, nar, rel)| nar.index.read_dir(rel));
        listed.ok_or_else(|| Error::Io {
            path: self.location(name),
            source: io::ErrorKind::NotFound.into(),
        })
    }

    fn open(&self, name: &[u8]) -> Result<NarFile, Error> {
        let not_found = || Error::Io {
            path: self.location(name),
            source: io::ErrorKind::NotFound.into(),
        };
        let (_, nar, rel) = self.nar_of(name)?.ok_or_else(not_found)?;
        let at = nar.index.file(rel).ok_or_else(not_found)?;
        Ok(NarFile {
            file: Arc::clone(&nar.file),
            at: at.offset,
            end: at.offset + at.size,
        })
    }

    fn location(&self, name: &[u8]) -> PathBuf {
        PathBuf::from(format!("{} in {}", String::from_utf8_lossy(name), self.url))
    }

    fn nar_size(&self, path: &StorePath) -> Result<u64, Error> {
        self.required_narinfo(path)
            .map(|info| info.nar_size)
            .map_err(|e| self.store_error(path.as_str().as_bytes(), e))
    }

    /// The signed `NarHash`: every NAR used is checked against it, so the
    /// same hash means the same entries and bytes.
    fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        self.required_narinfo(path)
            .map(|info| info.nar_hash.to_base16().into_bytes())
            .map_err(|e| self.store_error(path.as_str().as_bytes(), e))
    }
}

/// [`BinaryCache::listed`]: entries from `.ls` listings, to measure layers.
#[derive(Clone, Copy, Debug)]
pub struct Listed<'a>(&'a BinaryCache);

impl Store for Listed<'_> {
    type Entries<'a>
        = std::vec::IntoIter<Result<Entry, Error>>
    where
        Self: 'a;
    type Reader<'a>
        = NarFile
    where
        Self: 'a;

    fn dir(&self) -> &StoreDir {
        self.0.dir()
    }
    fn identity(&self) -> String {
        self.0.identity()
    }
    /// From the listing the first time a path is asked for, unless its
    /// NAR is already here or in the NAR cache (a warm build asks the
    /// server for no listing); from the verified NAR every other time. So
    /// measuring takes the listing and writing (even through this view)
    /// the NAR, which is then checked against the listing that was used.
    fn entries(&self, path: &StorePath) -> Self::Entries<'_> {
        let cached = lock(&self.0.nars).contains_key(path) || self.0.in_nar_cache(path);
        let first = !lock(&self.0.listed).contains_key(path);
        if !cached && first {
            if let Some(index) = self.0.listing(path) {
                let entries = index.entries(path);
                lock(&self.0.listed).insert(path.clone(), index);
                return entries.into_iter().map(Ok).collect::<Vec<_>>().into_iter();
            }
        }
        self.0.entries(path)
    }
    fn entry(&self, name: &[u8]) -> Result<Option<Entry>, Error> {
        self.0.entry(name)
    }
    fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        self.0.read_dir(name)
    }
    fn open(&self, name: &[u8]) -> Result<NarFile, Error> {
        self.0.open(name)
    }
    fn location(&self, name: &[u8]) -> PathBuf {
        self.0.location(name)
    }
    fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        self.0.stamp(path)
    }
    fn nar_size(&self, path: &StorePath) -> Result<u64, Error> {
        self.0.nar_size(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("file:///tmp/c").is_ok());
        assert!(check_url("https://cache.example/sub").is_ok());
        let e = check_url("s3://bucket").unwrap_err().to_string();
        assert!(e.contains("HTTPS endpoint"), "{e}");
        let e = check_url("https://user:pw@cache.example")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw"), "{e}");
        for bad in [
            "file://rel",
            "ftp://x",
            "https://",
            "http://x/?a=b",
            "ssh://h",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
