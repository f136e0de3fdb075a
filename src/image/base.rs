//! Base images (`[base] image`, SPEC §4): the layers an image is built on.
//!
//! Reads a docker-archive (plain, or wholly compressed with gzip, zstd or
//! xz, as `buildLayeredImage` and `docker save | gzip` make them), an OCI
//! image layout directory, or an OCI archive (a layout in a tar). Only what a
//! build needs is read: the first image's layers, their diff_ids, and the
//! config's `Env` (nixpkgs inherits nothing else, reference §A.7).
//!
//! A compressed archive is decompressed once into a temporary file, so its
//! members can be reached in any order (`manifest.json` usually comes last);
//! a compressed layer (an OCI blob) is decompressed as it streams into the
//! output, once to measure it and once to write it, never held in memory.
//! Every layer's bytes are checked against its diff_id as they are written.
//!
//! Self-contained on purpose (its own small tar reader), so it can later be
//! unified with the reader of `nixlayer inspect`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::layer::{Digest, HashCountWriter, LayerDigest};

/// Why a base image could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the image failed.
    #[error("failed to read base image `{}`", path.display())]
    Io {
        /// The image.
        path: PathBuf,
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

/// How a layer's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    /// Recognises the format from its first bytes.
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else {
            Self::None
        }
    }
}

/// Where a blob (config, layer) is.
#[derive(Clone, Debug)]
enum Location {
    /// A member of the (decompressed) archive: data offset and length.
    Member { offset: u64, len: u64 },
    /// A file of a layout directory.
    File(PathBuf),
}

/// What the image is read from.
#[derive(Debug)]
enum Container {
    /// A tar file (maybe a decompressed temporary copy, removed on drop)
    /// and its members.
    Tar {
        file: PathBuf,
        _temp: Option<tempfile::TempPath>,
        members: BTreeMap<String, (u64, u64)>,
    },
    /// An OCI layout directory.
    Dir(PathBuf),
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
    location: Location,
    compression: Compression,
}

/// A base image, opened.
#[derive(Debug)]
pub struct BaseImage {
    path: PathBuf,
    container: Container,
    /// Its layers, bottom first.
    pub layers: Vec<BaseLayer>,
    /// Its config's `Env`.
    pub env: Vec<String>,
}

/// Shared so prepared images stay cheap to clone.
pub type SharedBaseImage = Arc<BaseImage>;

impl BaseImage {
    /// Opens the image at `path`: a directory is an OCI layout, a file a
    /// docker-archive or OCI archive, plain or compressed.
    ///
    /// # Errors
    /// When it cannot be read, is not one of those formats, or is malformed.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let container = if meta.is_dir() {
            Container::Dir(path.to_owned())
        } else {
            let mut file = File::open(path).map_err(io_err)?;
            let mut head = [0u8; 6];
            let n = read_up_to(&mut file, &mut head).map_err(io_err)?;
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            let (tar_path, temp) = match Compression::sniff(&head[..n]) {
                Compression::None => (path.to_owned(), None),
                compression => {
                    let temp = tempfile::Builder::new()
                        .prefix("nixlayer-base-")
                        .suffix(".tar")
                        .tempfile()
                        .map_err(io_err)?;
                    let mut out = io::BufWriter::new(temp.as_file());
                    let input = BufReader::new(file);
                    decompress_into(compression, input, &mut out).map_err(io_err)?;
                    out.flush().map_err(io_err)?;
                    drop(out);
                    let temp = temp.into_temp_path();
                    (temp.to_path_buf(), Some(temp))
                }
            };
            let members = index_tar(&tar_path).map_err(|e| match e {
                TarError::Io(source) => Error::Io {
                    path: path.to_owned(),
                    source,
                },
                TarError::Malformed(message) => Error::Malformed {
                    path: path.to_owned(),
                    message,
                },
            })?;
            Container::Tar {
                file: tar_path,
                _temp: temp,
                members,
            }
        };
        let mut image = Self {
            path: path.to_owned(),
            container,
            layers: Vec::new(),
            env: Vec::new(),
        };
        image.read_image()?;
        Ok(image)
    }

    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Malformed {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn io(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Where the file `name` (archive member or layout path) is.
    fn locate(&self, name: &str) -> Option<Location> {
        let name = name.trim_start_matches("./");
        match &self.container {
            Container::Tar { members, .. } => members
                .get(name)
                .map(|&(offset, len)| Location::Member { offset, len }),
            Container::Dir(dir) => {
                let file = dir.join(name);
                file.is_file().then_some(Location::File(file))
            }
        }
    }

    fn open_location(&self, location: &Location) -> io::Result<(Box<dyn Read + Send>, u64)> {
        match (location, &self.container) {
            (Location::Member { offset, len }, Container::Tar { file, .. }) => {
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok((Box::new(f.take(*len)), *len))
            }
            (Location::File(path), _) => {
                let f = File::open(path)?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            (Location::Member { .. }, Container::Dir(_)) => {
                Err(io::Error::other("an archive member in a layout directory"))
            }
        }
    }

    /// The bytes of a small file (a JSON document), at most 64 MiB.
    fn read_small(&self, name: &str) -> Result<Vec<u8>, Error> {
        let location = self
            .locate(name)
            .ok_or_else(|| self.malformed(format!("`{name}` is missing")))?;
        let (reader, len) = self.open_location(&location).map_err(|e| self.io(e))?;
        if len > 64 << 20 {
            return Err(self.malformed(format!("`{name}` is too large")));
        }
        let mut bytes = Vec::new();
        reader
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e))?;
        Ok(bytes)
    }

    fn read_json(&self, name: &str) -> Result<Value, Error> {
        let bytes = self.read_small(name)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.malformed(format!("`{name}` is not valid JSON: {e}")))
    }

    fn read_image(&mut self) -> Result<(), Error> {
        let (config_name, layer_names) = if self.locate("manifest.json").is_some() {
            let manifest = self.read_json("manifest.json")?;
            let first = manifest
                .get(0)
                .ok_or_else(|| self.malformed("`manifest.json` lists no image"))?;
            let config = first["Config"]
                .as_str()
                .ok_or_else(|| self.malformed("`manifest.json` has no `Config`"))?
                .to_owned();
            let layers = string_list(&first["Layers"])
                .ok_or_else(|| self.malformed("`manifest.json` has no `Layers` list"))?;
            (config, layers)
        } else if self.locate("index.json").is_some() {
            self.oci_manifest()?
        } else {
            return Err(self.malformed(
                "it has neither `manifest.json` (docker-archive) nor `index.json` (OCI layout)",
            ));
        };
        let config = self.read_json(&config_name)?;
        let diff_ids = string_list(&config["rootfs"]["diff_ids"])
            .ok_or_else(|| self.malformed("its config has no `rootfs.diff_ids`"))?;
        if diff_ids.len() != layer_names.len() {
            return Err(self.malformed(format!(
                "its config lists {} diff_ids for {} layers",
                diff_ids.len(),
                layer_names.len()
            )));
        }
        self.env = match &config["config"]["Env"] {
            Value::Null => Vec::new(),
            env => string_list(env)
                .ok_or_else(|| self.malformed("its config's `Env` is not a list of strings"))?,
        };
        let mut layers = Vec::with_capacity(layer_names.len());
        for (name, diff_id) in layer_names.into_iter().zip(diff_ids) {
            let diff_id = parse_digest(&diff_id)
                .ok_or_else(|| self.malformed(format!("`{diff_id}` is not a sha256 diff_id")))?;
            let location = self
                .locate(&name)
                .ok_or_else(|| self.malformed(format!("layer `{name}` is missing")))?;
            let (mut reader, len) = self.open_location(&location).map_err(|e| self.io(e))?;
            let mut head = [0u8; 6];
            let n = read_up_to(&mut reader, &mut head).map_err(|e| self.io(e))?;
            let compression = Compression::sniff(&head[..n]);
            let mut layer = BaseLayer {
                diff_id,
                size: len,
                member: name,
                location,
                compression,
            };
            if compression != Compression::None {
                // The uncompressed size is needed before the bytes; one
                // streaming pass finds it and checks the diff_id early.
                let digest = self.copy_layer(&layer, io::sink())?;
                layer.size = digest.size;
            }
            layers.push(layer);
        }
        self.layers = layers;
        Ok(())
    }

    /// The config and layers named by an OCI layout's `index.json`: its
    /// first manifest, descending into a nested index.
    fn oci_manifest(&self) -> Result<(String, Vec<String>), Error> {
        let blob = |digest: &Value| -> Result<String, Error> {
            let digest = digest
                .as_str()
                .ok_or_else(|| self.malformed("a descriptor has no digest"))?;
            let hex = digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| self.malformed(format!("`{digest}` is not a sha256 digest")))?;
            Ok(format!("blobs/sha256/{hex}"))
        };
        let mut doc = self.read_json("index.json")?;
        for _ in 0..4 {
            if let Some(manifests) = doc.get("manifests") {
                let first = manifests
                    .get(0)
                    .ok_or_else(|| self.malformed("`index.json` lists no manifest"))?;
                doc = self.read_json(&blob(&first["digest"])?)?;
                continue;
            }
            let config = blob(&doc["config"]["digest"])?;
            let layers = doc["layers"]
                .as_array()
                .ok_or_else(|| self.malformed("the image manifest has no `layers`"))?
                .iter()
                .map(|l| blob(&l["digest"]))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((config, layers));
        }
        Err(self.malformed("image indexes nest too deeply"))
    }

    /// Streams layer `layer`, decompressed, into `out`, checking its diff_id.
    fn copy_layer<W: Write>(&self, layer: &BaseLayer, out: W) -> Result<LayerDigest, Error> {
        let (reader, _) = self
            .open_location(&layer.location)
            .map_err(|e| self.io(e))?;
        let mut sink = HashCountWriter::new(out);
        let copied = decompress_into(layer.compression, BufReader::new(reader), &mut sink);
        match copied {
            Ok(()) => {}
            // A failure of `out` is a write error, anything else a read error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Err(Error::Write {
                    member: layer.member.clone(),
                    source: e,
                })
            }
            Err(e) => return Err(self.io(e)),
        }
        let (_, diff_id, size) = sink.finish().map_err(|source| Error::Write {
            member: layer.member.clone(),
            source,
        })?;
        if diff_id != layer.diff_id {
            return Err(Error::DiffIdMismatch {
                path: self.path.clone(),
                member: layer.member.clone(),
                expected: layer.diff_id,
                found: diff_id,
            });
        }
        Ok(LayerDigest { diff_id, size })
    }

    /// Writes layer `index` (its uncompressed tar, exactly
    /// `self.layers[index].size` bytes) to `out`.
    ///
    /// # Errors
    /// When the image cannot be read, the bytes do not match the diff_id,
    /// or `out` fails.
    pub fn write_layer<W: Write>(&self, index: usize, out: W) -> Result<LayerDigest, Error> {
        let layer = self
            .layers
            .get(index)
            .ok_or_else(|| self.malformed(format!("it has no layer {index}")))?;
        self.copy_layer(layer, out)
    }
}

/// `sha256:<64 hex digits>` as a digest.
fn parse_digest(text: &str) -> Option<Digest> {
    let hex = text.strip_prefix("sha256:")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(Digest(bytes))
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies `input`, decompressed, into `out`. Multi-member gzip (pigz,
/// concatenated streams) is read whole.
fn decompress_into<R: BufRead, W: Write>(
    compression: Compression,
    mut input: R,
    out: &mut W,
) -> io::Result<()> {
    match compression {
        Compression::None => io::copy(&mut input, out).map(drop),
        Compression::Gzip => {
            io::copy(&mut flate2::bufread::MultiGzDecoder::new(input), out).map(drop)
        }
        Compression::Zstd => {
            io::copy(&mut zstd::stream::read::Decoder::with_buffer(input)?, out).map(drop)
        }
        Compression::Xz => lzma_rs::xz_decompress(&mut input, out).map_err(|e| match e {
            lzma_rs::error::Error::IoError(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }),
    }
}

enum TarError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Parses a tar number field: octal text, or GNU base-256.
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
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

fn text_field(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The regular-file members of the tar at `path`: name → (data offset, size).
/// Understands ustar (with prefix), PAX `path` records and GNU long names.
fn index_tar(path: &Path) -> Result<BTreeMap<String, (u64, u64)>, TarError> {
    let mut file = BufReader::new(File::open(path)?);
    let mut members = BTreeMap::new();
    let mut offset: u64 = 0;
    let mut long_name: Option<String> = None;
    let mut block = [0u8; 512];
    loop {
        if read_up_to(&mut file, &mut block)? < 512 {
            return Err(TarError::Malformed(
                "the archive ends in the middle of a header".to_owned(),
            ));
        }
        offset += 512;
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar_number(&block[124..136]).ok_or_else(|| {
            TarError::Malformed(format!("bad size in the header at byte {}", offset - 512))
        })?;
        let padded = size.div_ceil(512) * 512;
        let typeflag = block[156];
        match typeflag {
            b'x' | b'L' => {
                let mut data = vec![
                    0u8;
                    usize::try_from(size).map_err(|_| TarError::Malformed(
                        "an oversized header".into()
                    ))?
                ];
                if size > 1 << 20 {
                    return Err(TarError::Malformed(
                        "an oversized extended header".to_owned(),
                    ));
                }
                file.read_exact(&mut data)?;
                io::copy(&mut (&mut file).take(padded - size), &mut io::sink())?;
                offset += padded;
                long_name = if typeflag == b'L' {
                    Some(text_field(&data))
                } else {
                    pax_path(&data).or(long_name)
                };
                continue;
            }
            _ => {}
        }
        let name = long_name.take().unwrap_or_else(|| {
            let name = text_field(&block[0..100]);
            let prefix = if &block[257..262] == b"ustar" {
                text_field(&block[345..500])
            } else {
                String::new()
            };
            if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }
        });
        if typeflag == b'0' || typeflag == 0 || typeflag == b'7' {
            let name = name
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_owned();
            members.insert(name, (offset, size));
        }
        file.seek_relative(
            i64::try_from(padded).map_err(|_| TarError::Malformed("an oversized member".into()))?,
        )?;
        offset += padded;
    }
    Ok(members)
}

/// The `path` record of PAX extended header data.
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        let record = rest.get(space + 1..len)?;
        if let Some(value) = record.strip_prefix(b"path=") {
            found = Some(
                String::from_utf8_lossy(value.strip_suffix(b"\n").unwrap_or(value)).into_owned(),
            );
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{Header, Kind, TarWriter};

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
            let header = Header {
                name: name.as_bytes().to_vec(),
                kind: Kind::Regular,
                mode: 0o644,
                uid: 0,
                gid: 0,
                uname: String::new(),
                gname: String::new(),
                mtime: 1,
                size: data.len() as u64,
            };
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
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &plain[..], &mut xz).unwrap();
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
        let image = open_bytes(&archive(b"abc", &Digest::of(b"xyz"))).unwrap();
        assert!(matches!(
            image.write_layer(0, io::sink()),
            Err(Error::DiffIdMismatch { .. })
        ));
        assert!(matches!(
            open_bytes(b"not a tar at all, just some text that is long enough"),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(open_bytes(&[]), Err(Error::Malformed { .. })));
    }

    /// An OCI layout directory whose layer blob is gzip-compressed: the
    /// layer comes out as its uncompressed tar, sized before it is written.
    #[test]
    fn oci_layout_with_a_compressed_blob() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            std::fs::write(blobs.join(digest.hex()), bytes).unwrap();
            digest.prefixed()
        };
        let layer = vec![3u8; 5000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&layer).unwrap();
        let blob = put(&gz.finish().unwrap());
        let config = put(
            serde_json::json!({"rootfs": {"diff_ids": [Digest::of(&layer).prefixed()]}})
                .to_string()
                .as_bytes(),
        );
        let manifest = put(
            serde_json::json!({
                "config": {"digest": config},
                "layers": [{"digest": blob, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}],
            })
            .to_string()
            .as_bytes(),
        );
        std::fs::write(
            dir.path().join("index.json"),
            serde_json::json!({"manifests": [{"digest": manifest}]}).to_string(),
        )
        .unwrap();
        let image = BaseImage::open(dir.path()).unwrap();
        assert!(image.env.is_empty());
        assert_eq!(image.layers[0].size, 5000);
        let mut out = Vec::new();
        image.write_layer(0, &mut out).unwrap();
        assert_eq!(out, layer);
    }

    #[test]
    fn tar_numbers() {
        assert_eq!(tar_number(b"0000012\0"), Some(10));
        assert_eq!(tar_number(b"\x80\0\0\0\0\0\0\x01"), Some(1));
        assert_eq!(tar_number(b"        "), Some(0));
        assert_eq!(tar_number(b"9\0"), None);
    }
}
