//! Base images (`[base] image`, SPEC §4): the layers an image is built on.
//!
//! A thin layer over [`ImageArchive`], so a base image is anything
//! `nixlayer inspect` reads: a docker-archive (plain, or wholly compressed
//! with gzip, zstd or xz, as `buildLayeredImage` and `docker save | gzip`
//! make them), an OCI image layout directory, or an OCI archive. Only what a
//! build needs is kept: the first image's layers, their diff_ids, and the
//! config's `Env` (nixpkgs inherits nothing else, reference §A.7).
//!
//! Every layer is read once when the image is opened, before any output is
//! written: its stored bytes are checked against their digest (where the
//! format records one, see [`crate::archive`]) and its uncompressed tar
//! against the config's diff_id, and its size is measured. So with
//! `build --stream`, no base-layer byte reaches stdout before that layer is
//! verified. Writing it reads (and decompresses) it a second time, streamed,
//! never held in memory, and checks it again: only a base image changed
//! *during* the build can fail then, after some bytes went out.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::archive::{self, ImageArchive};
use crate::codec::{self, Compression};
use crate::oci::platform::comparable_variant;
use crate::oci::{Digest, HashCountWriter, LayerDigest};
use crate::tar::TarError;

/// Why a base image could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the image failed.
    #[error("failed to read base image `{}`", path.display())]
    Io {
        /// The image (or, in a layout, the file that failed).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a layer's bytes failed.
    #[error("failed to read layer `{member}` of base image `{}`", path.display())]
    ReadLayer {
        /// The image.
        path: PathBuf,
        /// The layer's name in the image.
        member: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The image is not a docker-archive or OCI layout, or is malformed.
    #[error("base image `{}` is invalid: {message}", path.display())]
    Malformed {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A layer's bytes do not match the diff_id the base config gives.
    #[error("layer `{member}` of base image `{}` does not match its diff_id (expected {expected}, found {found})", path.display())]
    DiffIdMismatch {
        /// The image.
        path: PathBuf,
        /// The layer's name in the image.
        member: String,
        /// The config's diff_id.
        expected: Digest,
        /// The digest of the bytes.
        found: Digest,
    },
    /// Writing a layer to the output failed.
    #[error("failed to write layer `{member}` of the base image")]
    Write {
        /// The layer's name in the image.
        member: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    fn malformed(path: &Path, message: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// The reader's error, said of a base image: I/O stays I/O, anything
    /// else makes the image invalid.
    fn from_archive(path: &Path, error: archive::Error) -> Self {
        match error {
            archive::Error::Io { path, source }
            | archive::Error::Tar {
                path,
                source: TarError::Io(source),
            } => Self::Io { path, source },
            archive::Error::Tar { source, .. } => {
                Self::malformed(path, format!("it is not a valid tar archive: {source}"))
            }
            archive::Error::NotAnImage { what, .. } => Self::malformed(
                path,
                format!("it is not a docker-archive or OCI image: {what}"),
            ),
            archive::Error::Malformed { member, what, .. } => {
                Self::malformed(path, format!("`{member}` {what}"))
            }
        }
    }
}

/// One layer of the base image.
#[derive(Clone, Debug)]
pub struct BaseLayer {
    /// Its diff_id, from the base config.
    pub diff_id: Digest,
    /// Size of its uncompressed tar.
    pub size: u64,
    /// Its name in the base image (archive member or blob), for history.
    pub member: String,
    /// The store paths the base's own history lists for it (an image
    /// nixlayer or nixpkgs built; none for others), for `diff`.
    pub store_paths: Vec<String>,
    /// Where and what it is in the archive (its stored digest, if any).
    source: archive::Layer,
    /// How its stored bytes are compressed (sniffed when they were checked).
    stored: Compression,
}

/// A base image, opened.
#[derive(Debug)]
pub struct BaseImage {
    archive: ImageArchive,
    /// Its layers, bottom first.
    pub layers: Vec<BaseLayer>,
    /// Its config's `Env`.
    pub env: Vec<String>,
}

/// The platform an image is built for, which its base must be for.
#[derive(Clone, Copy, Debug)]
pub struct Platform<'a> {
    /// `linux`.
    pub os: &'a str,
    /// GOARCH spelling.
    pub architecture: &'a str,
    /// CPU variant, e.g. `v7`.
    pub variant: Option<&'a str>,
}

impl std::fmt::Display for Platform<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// The platform an image's config gives (`os`, `architecture`, `variant`);
/// `None` when it names no architecture.
fn config_platform(config: &Value) -> Option<(String, String, Option<String>)> {
    let field = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_owned);
    let architecture = field("architecture").filter(|a| !a.is_empty())?;
    Some((
        field("os").unwrap_or_else(|| "linux".to_owned()),
        architecture,
        field("variant").filter(|v| !v.is_empty()),
    ))
}

/// Whether an image of config platform `p` serves `want` (see [`choose`]):
/// exactly, or when `exact` is false also loosely.
fn fits(p: &Option<(String, String, Option<String>)>, want: &Platform<'_>, exact: bool) -> bool {
    match p {
        None => !exact,
        Some((os, architecture, variant)) => {
            os == want.os
                && architecture == want.architecture
                && (comparable_variant(architecture, variant.as_deref())
                    == comparable_variant(architecture, want.variant)
                    || (!exact && (variant.is_none() || want.variant.is_none())))
        }
    }
}

fn platform_name((os, architecture, variant): &(String, String, Option<String>)) -> String {
    match variant {
        Some(v) => format!("{os}/{architecture}/{v}"),
        None => format!("{os}/{architecture}"),
    }
}

/// The image of `images` for `want`: an exact match first (variants
/// compared as docker compares them: `arm64` is `arm64/v8`, `arm` is
/// `arm/v7`; see [`comparable_variant`]); then, when either names no
/// variant, any variant of the architecture or an image whose config names
/// no architecture at all. Without `want`, the first image.
fn choose<'a>(
    path: &Path,
    images: &'a [archive::Image],
    want: Option<&Platform<'_>>,
) -> Result<&'a archive::Image, Error> {
    let first = images
        .first()
        .ok_or_else(|| Error::malformed(path, "it holds no image"))?;
    let Some(want) = want else {
        return Ok(first);
    };
    let platforms: Vec<Option<(String, String, Option<String>)>> = images
        .iter()
        .map(|image| image.config_value().ok().as_ref().and_then(config_platform))
        .collect();
    let fits = |p: &Option<(String, String, Option<String>)>, exact: bool| fits(p, want, exact);
    let chosen = platforms
        .iter()
        .position(|p| fits(p, true))
        .or_else(|| platforms.iter().position(|p| fits(p, false)));
    if let Some(i) = chosen {
        return Ok(&images[i]);
    }
    let offered: Vec<String> = platforms.iter().flatten().map(platform_name).collect();
    Err(Error::malformed(
        path,
        if images.len() == 1 {
            format!(
                "it is an image for {}, not for {want}, the platform being built \
                 (`--no-arch-check` takes it anyway)",
                offered.join(", ")
            )
        } else {
            format!(
                "it has no image for {want}, the platform being built (it has {})",
                offered.join(", ")
            )
        },
    ))
}

impl BaseImage {
    /// Opens the image at `path`: a directory is an OCI layout, a file a
    /// docker-archive or OCI archive, plain or compressed. Its first image
    /// is the base; [`BaseImage::open_for`] picks it by platform.
    ///
    /// # Errors
    /// When it cannot be read, is not one of those formats, or is malformed.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_image(path, None)
    }

    /// [`BaseImage::open`], its image the one for `platform`: an archive of
    /// several images (a multi-platform layout, `docker save` of several)
    /// gives the one whose config is for that platform, and an image for
    /// another platform is refused, as its programs would not run there.
    ///
    /// # Errors
    /// As [`BaseImage::open`]; also when no image is for `platform`.
    pub fn open_for(path: &Path, platform: &Platform<'_>) -> Result<Self, Error> {
        Self::open_image(path, Some(platform))
    }

    fn open_image(path: &Path, platform: Option<&Platform<'_>>) -> Result<Self, Error> {
        let archive = ImageArchive::open(path).map_err(|e| Error::from_archive(path, e))?;
        let image = choose(path, archive.images(), platform)?;
        let config = image
            .config_value()
            .map_err(|e| Error::malformed(path, format!("its config is not valid JSON: {e}")))?;
        let listed = config
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::malformed(path, "its config has no `rootfs.diff_ids`"))?
            .len();
        if listed != image.layers.len() {
            return Err(Error::malformed(
                path,
                format!(
                    "its config lists {listed} diff_ids for {} layers",
                    image.layers.len()
                ),
            ));
        }
        let env = match &config["config"]["Env"] {
            Value::Null => Vec::new(),
            env => string_list(env).ok_or_else(|| {
                Error::malformed(path, "its config's `Env` is not a list of strings")
            })?,
        };
        let mut history = super::history_store_paths(&config, image.layers.len());
        let mut layers = Vec::with_capacity(image.layers.len());
        // A layer listed again (an image with two identical layers, or a
        // hostile one listing a big layer thousands of times) is read and
        // checked once: its bytes and diff_id are the same each time.
        let mut checked_sizes: HashMap<(String, Digest), (u64, Compression)> = HashMap::new();
        for layer in &image.layers {
            let mut layer = BaseLayer {
                diff_id: layer.diff_id.ok_or_else(|| {
                    Error::malformed(path, format!("layer `{}` has no diff_id", layer.location))
                })?,
                size: 0,
                member: layer.location.clone(),
                store_paths: history
                    .get_mut(layers.len())
                    .map(std::mem::take)
                    .unwrap_or_default(),
                source: layer.clone(),
                stored: Compression::None,
            };
            let key = (layer.source.location.clone(), layer.diff_id);
            if let Some(&(size, stored)) = checked_sizes.get(&key) {
                layer.size = size;
                layer.stored = stored;
                layers.push(layer);
                continue;
            }
            // Before anything is written: the stored bytes, read to their
            // end, against their digest (and, when they are the tar itself,
            // against the diff_id); then a compressed layer is decompressed
            // once to check the diff_id and measure it.
            let checked = archive
                .verify_blob(&layer.source)
                .map_err(|e| Error::from_archive(path, e))?;
            layer.size = if checked.compression == Compression::None {
                checked.size
            } else {
                copy_layer(&archive, &layer, io::sink())?.size
            };
            layer.stored = checked.compression;
            checked_sizes.insert(key, (layer.size, layer.stored));
            layers.push(layer);
        }
        Ok(Self {
            archive,
            layers,
            env,
        })
    }

    /// Writes layer `index` (its uncompressed tar, exactly
    /// `self.layers[index].size` bytes) to `out`.
    ///
    /// # Errors
    /// When the image cannot be read, the bytes do not match the diff_id,
    /// or `out` fails.
    pub fn write_layer<W: Write>(&self, index: usize, out: W) -> Result<LayerDigest, Error> {
        let layer = self.layers.get(index).ok_or_else(|| {
            Error::malformed(self.archive.path(), format!("it has no layer {index}"))
        })?;
        copy_layer(&self.archive, layer, out)
    }

    /// The digest and size of layer `index`'s stored blob when it may go
    /// into an image as it is, for a layer compressed with `codec`: it is
    /// compressed so, and its digest is recorded (an OCI blob), so that
    /// every read is checked against it; its decompressed bytes were held
    /// to the diff_id when the image was opened. As docker keeps a base
    /// image's blobs: recompressing them (another compressor, another
    /// level) would give other digests, which a push uploads again rather
    /// than mount, and which every client holding the base pulls again.
    #[must_use]
    pub fn stored_blob(&self, index: usize, codec: Compression) -> Option<(Digest, u64)> {
        let layer = self.layers.get(index)?;
        let digest = layer.source.digest?;
        (codec != Compression::None && layer.stored == codec).then_some((digest, layer.source.size))
    }

    /// Copies layer `index`'s stored blob, as it is and checked against its
    /// digest, to `out` (see [`BaseImage::stored_blob`]).
    ///
    /// # Errors
    /// When the image cannot be read, its bytes do not match their digest,
    /// or `out` fails.
    pub fn copy_stored_blob<W: Write>(&self, index: usize, mut out: W) -> Result<u64, Error> {
        let layer = self.layers.get(index).ok_or_else(|| {
            Error::malformed(self.archive.path(), format!("it has no layer {index}"))
        })?;
        let mut blob = self
            .archive
            .open_blob(&layer.source)
            .map_err(|e| Error::from_archive(self.archive.path(), e))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = match blob.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&self.archive, layer, e)),
            };
            out.write_all(&buf[..n]).map_err(|source| Error::Write {
                member: layer.member.clone(),
                source,
            })?;
            size += n as u64;
        }
        if size != layer.source.size {
            return Err(Error::malformed(
                self.archive.path(),
                format!(
                    "`{}` is {size} bytes, its descriptor says {}",
                    layer.member, layer.source.size
                ),
            ));
        }
        Ok(size)
    }
}

fn read_error(archive: &ImageArchive, layer: &BaseLayer, source: io::Error) -> Error {
    if let Some(mismatch) = archive::DigestMismatch::in_io(&source) {
        // The stored bytes do not match their digest: say which blob.
        return Error::malformed(archive.path(), mismatch.to_string());
    }
    Error::ReadLayer {
        path: archive.path().to_owned(),
        member: layer.member.clone(),
        source,
    }
}

/// A layer's uncompressed tar (its stored bytes checked against their
/// digest as they are read).
fn open_layer<'a>(
    archive: &'a ImageArchive,
    layer: &BaseLayer,
) -> Result<Box<dyn Read + 'a>, Error> {
    let blob = archive
        .open_blob(&layer.source)
        .map_err(|e| Error::from_archive(archive.path(), e))?;
    let (_, reader) = codec::decompress(blob).map_err(|e| read_error(archive, layer, e))?;
    Ok(reader)
}

/// Streams `layer`, decompressed, into `out`, checking its diff_id.
fn copy_layer<W: Write>(
    archive: &ImageArchive,
    layer: &BaseLayer,
    out: W,
) -> Result<LayerDigest, Error> {
    let write_error = |source| Error::Write {
        member: layer.member.clone(),
        source,
    };
    let mut reader = open_layer(archive, layer)?;
    let mut sink = HashCountWriter::new(out);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(archive, layer, e)),
        };
        sink.write_all(&buf[..n]).map_err(write_error)?;
    }
    let (_, diff_id, size) = sink.finish().map_err(write_error)?;
    if diff_id != layer.diff_id {
        return Err(Error::DiffIdMismatch {
            path: archive.path().to_owned(),
            member: layer.member.clone(),
            expected: layer.diff_id,
            found: diff_id,
        });
    }
    Ok(LayerDigest { diff_id, size })
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{Header, Kind, TarWriter};

    /// Variants compare as docker's (and as a pulled index's do): `arm`
    /// with none is `arm/v7`, `arm64` with none `arm64/v8`; so for a plain
    /// `arm` image, an archive's `arm/v7` is the exact match, not whichever
    /// `arm` image comes first.
    #[test]
    fn variants_compare_as_dockers() {
        let p = |arch: &str, variant: Option<&str>| {
            Some((
                "linux".to_owned(),
                arch.to_owned(),
                variant.map(str::to_owned),
            ))
        };
        let want = |architecture, variant| Platform {
            os: "linux",
            architecture,
            variant,
        };
        assert!(fits(&p("arm", Some("v7")), &want("arm", None), true));
        assert!(!fits(&p("arm", Some("v6")), &want("arm", None), true));
        assert!(fits(&p("arm64", None), &want("arm64", Some("v8")), true));
        assert!(fits(&p("amd64", Some("v1")), &want("amd64", None), true));
        // Loosely, any variant when either names none.
        assert!(fits(&p("arm", Some("v6")), &want("arm", None), false));
        assert!(!fits(
            &p("arm", Some("v6")),
            &want("arm", Some("v7")),
            false
        ));
        assert!(!fits(&None, &want("arm", None), true));
        assert!(fits(&None, &want("arm", None), false));
    }

    /// A docker-archive with one layer whose bytes are `layer`.
    fn archive(layer: &[u8], diff_id: &Digest) -> Vec<u8> {
        let config = serde_json::json!({
            "rootfs": {"type": "layers", "diff_ids": [diff_id.prefixed()]},
            "config": {"Env": ["PATH=/bin", "A=1"]},
        })
        .to_string();
        let manifest =
            r#"[{"Config":"c.json","RepoTags":["x:y"],"Layers":["l/layer.tar"]}]"#.to_owned();
        let mut tar = TarWriter::new(Vec::new());
        for (name, data) in [
            ("l/layer.tar", layer),
            ("c.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let header = Header::archive_member(name, Kind::Regular, data.len() as u64, 1);
            tar.append(&header, data).unwrap();
        }
        tar.finish().unwrap()
    }

    fn open_bytes(bytes: &[u8]) -> Result<BaseImage, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base");
        std::fs::write(&path, bytes).unwrap();
        let image = BaseImage::open(&path);
        // Keep the file until the test has read the layers through it.
        std::mem::forget(dir);
        image
    }

    #[test]
    fn plain_gzip_zstd_xz_archives_give_the_same_layer() {
        let layer = vec![7u8; 3000];
        let diff_id = Digest::of(&layer);
        let plain = archive(&layer, &diff_id);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let mut xz =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).unwrap();
        xz.write_all(&plain).unwrap();
        let xz = xz.finish().unwrap();
        for bytes in [&plain, &gz, &zst, &xz] {
            let image = open_bytes(bytes).unwrap();
            assert_eq!(image.env, ["PATH=/bin", "A=1"]);
            assert_eq!(image.layers.len(), 1);
            assert_eq!(image.layers[0].size, 3000);
            assert_eq!(image.layers[0].member, "l/layer.tar");
            let mut out = Vec::new();
            let digest = image.write_layer(0, &mut out).unwrap();
            assert_eq!((digest.diff_id, out), (diff_id, layer.clone()));
        }
    }

    #[test]
    fn wrong_diff_id_and_garbage_are_errors() {
        // Refused when opened, before any byte of it is written anywhere.
        let err = open_bytes(&archive(b"abc", &Digest::of(b"xyz"))).unwrap_err();
        assert!(
            matches!(&err, Error::Malformed { message, .. } if message.contains("l/layer.tar")),
            "{err:?}"
        );
        // A compressed layer: its diff_id is checked on the decompressed
        // bytes, also when opened.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"abc").unwrap();
        let layer = gz.finish().unwrap();
        assert!(matches!(
            open_bytes(&archive(&layer, &Digest::of(b"xyz"))),
            Err(Error::DiffIdMismatch { .. })
        ));
        assert!(open_bytes(&archive(&layer, &Digest::of(b"abc"))).is_ok());
        assert!(matches!(
            open_bytes(b"not a tar at all, just some text that is long enough"),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(open_bytes(&[]), Err(Error::Malformed { .. })));
    }

    /// One compressed layer (16 MiB of zeros in 16 KiB of gzip) listed
    /// 1,000 times: read and checked once, not 1,000 times (16 GiB to
    /// decompress and hash), and every listing gets its size.
    #[test]
    fn a_layer_listed_many_times_is_checked_once() {
        let layer = vec![0u8; 16 << 20];
        let diff_id = Digest::of(&layer);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&layer).unwrap();
        let gz = gz.finish().unwrap();
        let n = 1000;
        let config = serde_json::json!({
            "rootfs": {"type": "layers", "diff_ids": vec![diff_id.prefixed(); n]},
        })
        .to_string();
        let manifest = serde_json::json!([{
            "Config": "c.json",
            "RepoTags": ["x:y"],
            "Layers": vec!["l/layer.tar"; n],
        }])
        .to_string();
        let mut tar = TarWriter::new(Vec::new());
        for (name, data) in [
            ("l/layer.tar", &gz[..]),
            ("c.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let header = Header::archive_member(name, Kind::Regular, data.len() as u64, 1);
            tar.append(&header, data).unwrap();
        }
        let started = std::time::Instant::now();
        let image = open_bytes(&tar.finish().unwrap()).unwrap();
        let took = started.elapsed();
        assert_eq!(image.layers.len(), n);
        assert!(image.layers.iter().all(|l| l.size == 16 << 20));
        assert!(took.as_secs() < 30, "opening took {took:?}");
    }

    /// An OCI layout directory whose layer blob is gzip-compressed: the
    /// layer comes out as its uncompressed tar, sized before it is written.
    #[test]
    fn oci_layout_with_a_compressed_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        // A descriptor of the blob `bytes`, stored.
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            std::fs::write(blobs.join(digest.hex()), bytes).unwrap();
            serde_json::json!({"digest": digest.prefixed(), "size": bytes.len()})
        };
        let layer = vec![3u8; 5000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&layer).unwrap();
        let mut blob = put(&gz.finish().unwrap());
        blob["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
        let config = put(
            serde_json::json!({"rootfs": {"diff_ids": [Digest::of(&layer).prefixed()]}})
                .to_string()
                .as_bytes(),
        );
        let manifest = put(serde_json::json!({
            "config": config,
            "layers": [blob],
        })
        .to_string()
        .as_bytes());
        std::fs::write(
            dir.path().join("index.json"),
            serde_json::json!({"manifests": [manifest]}).to_string(),
        )
        .unwrap();
        let image = BaseImage::open(dir.path()).unwrap();
        assert!(image.env.is_empty());
        assert_eq!(image.layers[0].size, 5000);
        let mut out = Vec::new();
        image.write_layer(0, &mut out).unwrap();
        assert_eq!(out, layer);
    }

    mod untrusted {
        use proptest::prelude::*;

        use super::*;

        /// A docker-archive with `layer` and config `config`, `@diff_id`
        /// in it standing for the layer's diff_id.
        fn archive_with_config(layer: &[u8], config: &Value) -> Vec<u8> {
            let config = config
                .to_string()
                .replace("@diff_id", &Digest::of(layer).prefixed());
            let manifest = r#"[{"Config":"c.json","Layers":["l.tar"]}]"#;
            let mut tar = TarWriter::new(Vec::new());
            for (name, data) in [
                ("l.tar", layer),
                ("c.json", config.as_bytes()),
                ("manifest.json", manifest.as_bytes()),
            ] {
                let header = Header::archive_member(name, Kind::Regular, data.len() as u64, 1);
                tar.append(&header, data).unwrap();
            }
            tar.finish().unwrap()
        }

        /// Opens `bytes` as a base image, for no platform and for a few,
        /// and writes every layer of what opens: never a panic, and a
        /// written layer is exactly its measured size.
        fn exercise(bytes: &[u8]) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("base");
            std::fs::write(&path, bytes).unwrap();
            let platforms = [
                Platform {
                    os: "linux",
                    architecture: "amd64",
                    variant: None,
                },
                Platform {
                    os: "linux",
                    architecture: "arm",
                    variant: Some("v7"),
                },
            ];
            let opened = std::iter::once(BaseImage::open(&path))
                .chain(platforms.iter().map(|p| BaseImage::open_for(&path, p)));
            for image in opened.flatten() {
                for (i, layer) in image.layers.iter().enumerate() {
                    let mut out = HashCountWriter::new(io::sink());
                    if let Ok(d) = image.write_layer(i, &mut out) {
                        assert_eq!(d.size, layer.size);
                    }
                }
                let _ = image.write_layer(image.layers.len(), io::sink());
            }
        }

        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                prop::sample::select(
                    &[
                        "linux",
                        "amd64",
                        "arm",
                        "v7",
                        "arm64",
                        "",
                        "@diff_id",
                        "PATH=/bin",
                        "A",
                    ][..]
                )
                .prop_map(Value::from),
                ".{0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop::sample::select(
                            &[
                                "os",
                                "architecture",
                                "variant",
                                "rootfs",
                                "diff_ids",
                                "config",
                                "Env",
                                "x",
                            ][..]
                        ),
                        inner,
                        0..5
                    )
                    .prop_map(|m| Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                    )),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Any config (platform fields, `rootfs`, `Env` of any type):
            /// an image or a clean error, never a panic.
            #[test]
            fn any_config_opens_or_fails_cleanly(config in arb_json(), env in arb_json()) {
                let layer = vec![7u8; 100];
                let mut config = config;
                if let Value::Object(o) = &mut config {
                    o.entry("rootfs").or_insert(serde_json::json!({"diff_ids": ["@diff_id"]}));
                    o.entry("config").or_insert(serde_json::json!({"Env": env}));
                }
                exercise(&archive_with_config(&layer, &config));
            }

            /// A valid archive, plain or gzip, with bytes changed and cut:
            /// an image or a clean error, never a panic or a wrong size.
            #[test]
            fn mutated_archives_open_or_fail_cleanly(
                gzip in any::<bool>(),
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
                cut in prop::option::of(any::<prop::sample::Index>()),
            ) {
                let layer = vec![7u8; 3000];
                let mut bytes = archive(&layer, &Digest::of(&layer));
                if gzip {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&bytes).unwrap();
                    bytes = gz.finish().unwrap();
                }
                for (at, byte) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                exercise(&bytes);
            }
        }
    }
}
