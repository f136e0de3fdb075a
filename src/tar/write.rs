//! Tar headers exactly as Python's `tarfile` writes them in its default PAX
//! format (the format of nixpkgs' streamer), and a streaming tar writer.
//!
//! Used for the store layers and for the outer docker-archive, whose bytes
//! must match `stream_layered_image.py` (reference §A.4, §A.6). The encoder
//! knows nothing of the filesystem: it turns a [`Header`] into bytes.
//!
//! Why not the `tar` crate: its PAX/GNU header choices, field encodings and
//! record order differ from CPython's `tarfile`, and byte-compatibility is
//! the whole point. The encoder below follows `TarInfo.create_pax_header`,
//! `_create_pax_generic_header` and `_create_header` rule by rule; it is
//! small enough that owning it costs less than patching another one.
//!
//! Lengths ([`header_len`], [`entry_len`], [`archive_len`]) are computed
//! arithmetically from the same rules, so a layer can be measured without
//! encoding anything; a property test checks they agree with the writer.

use std::io::{self, Write};
use std::str;

/// The tar block size.
pub const BLOCK: u64 = 512;
/// Python tarfile pads the archive to a multiple of this (20 blocks).
pub const RECORD: u64 = 10240;

/// Python's `LENGTH_NAME`: longer names go to a PAX `path` record.
const NAME_FIELD: usize = 100;
/// Python's `LENGTH_LINK`.
const LINK_FIELD: usize = 100;
/// Width of the uname and gname fields.
const OWNER_FIELD: usize = 32;
/// `8 ** 7`: the first uid/gid that no longer fits 7 octal digits.
const ID_LIMIT: u64 = 1 << 21;
/// `8 ** 11`: the first size/mtime that no longer fits 11 octal digits.
const NUMBER_LIMIT: u64 = 1 << 33;
/// The record Python puts first when a value is not valid UTF-8.
const HDRCHARSET_BINARY: &[u8] = b"21 hdrcharset=BINARY\n";
/// The member name CPython gives every PAX extended header (like `star`).
const PAX_NAME: &[u8] = b"././@PaxHeader";

const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];

/// The type of a tar entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory (typeflag `5`).
    Directory,
    /// A regular file (typeflag `0`).
    Regular,
    /// A symbolic link (typeflag `2`) to this raw target.
    Symlink(Vec<u8>),
}

impl Kind {
    fn typeflag(&self) -> u8 {
        match self {
            Self::Directory => b'5',
            Self::Regular => b'0',
            Self::Symlink(_) => b'2',
        }
    }
}

/// The fields of one tar entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The member name as raw bytes (non-UTF-8 allowed). A directory gets a
    /// trailing `/` if it has none, as Python's `TarInfo.get_info` adds one.
    pub name: Vec<u8>,
    /// The entry type, with a symlink's target.
    pub kind: Kind,
    /// Permission bits; only `mode & 0o7777` is written.
    pub mode: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Data size of a regular file; ignored (written as 0, no data) for
    /// directories and symlinks.
    pub size: u64,
}

impl Header {
    /// A member of an image archive (docker-archive, OCI archive, merged
    /// archive): owned by 0:0 without names, mode 0755 for a directory and
    /// 0644 otherwise, as `docker save` writes them.
    #[must_use]
    pub fn archive_member(name: &str, kind: Kind, size: u64, mtime: u64) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            mode: if kind == Kind::Directory {
                0o755
            } else {
                0o644
            },
            kind,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime,
            size,
        }
    }

    /// Bytes of data that follow the headers (unpadded).
    #[must_use]
    pub fn data_len(&self) -> u64 {
        match self.kind {
            Kind::Regular => self.size,
            Kind::Directory | Kind::Symlink(_) => 0,
        }
    }

    /// The name as written, with the directory slash Python adds.
    fn full_name(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.kind == Kind::Directory && !self.name.ends_with(b"/") {
            let mut name = Vec::with_capacity(self.name.len() + 1);
            name.extend_from_slice(&self.name);
            name.push(b'/');
            name.into()
        } else {
            self.name.as_slice().into()
        }
    }

    fn link(&self) -> &[u8] {
        match &self.kind {
            Kind::Symlink(target) => target,
            Kind::Directory | Kind::Regular => b"",
        }
    }
}

/// A PAX record value.
#[derive(Clone, Copy)]
enum Value<'a> {
    Bytes(&'a [u8]),
    Number(u64),
}

/// The PAX records `create_pax_header` emits for `header` (whose full name
/// is `name`), in its order: path, linkpath, uname, gname, uid, gid, size,
/// mtime. A text field needs one when it is not ASCII or longer than its
/// ustar field (the length test only runs on ASCII, so bytes = characters);
/// a number when it does not fit its octal digits.
fn pax_records<'a>(
    header: &'a Header,
    name: &'a [u8],
) -> impl Iterator<Item = (&'static str, Value<'a>)> {
    let text = |value: &'a [u8], limit: usize| !value.is_ascii() || value.len() > limit;
    let link = header.link();
    [
        text(name, NAME_FIELD).then_some(("path", Value::Bytes(name))),
        text(link, LINK_FIELD).then_some(("linkpath", Value::Bytes(link))),
        text(header.uname.as_bytes(), OWNER_FIELD)
            .then_some(("uname", Value::Bytes(header.uname.as_bytes()))),
        text(header.gname.as_bytes(), OWNER_FIELD)
            .then_some(("gname", Value::Bytes(header.gname.as_bytes()))),
        (header.uid >= ID_LIMIT).then_some(("uid", Value::Number(header.uid))),
        (header.gid >= ID_LIMIT).then_some(("gid", Value::Number(header.gid))),
        (header.data_len() >= NUMBER_LIMIT).then_some(("size", Value::Number(header.data_len()))),
        (header.mtime >= NUMBER_LIMIT).then_some(("mtime", Value::Number(header.mtime))),
    ]
    .into_iter()
    .flatten()
}

fn decimal_digits(mut n: u64) -> u64 {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

fn value_len(value: Value<'_>) -> u64 {
    match value {
        Value::Bytes(bytes) => bytes.len() as u64,
        Value::Number(n) => decimal_digits(n),
    }
}

/// Length of the record `"<len> <key>=<value>\n"`, where `<len>` counts
/// itself: the fixed point Python's `_create_pax_generic_header` iterates to.
fn record_len(key: &str, value_len: u64) -> u64 {
    let base = key.len() as u64 + value_len + 3; // ' ', '=', '\n'
    let mut p = 0;
    loop {
        let n = base + decimal_digits(p);
        if n == p {
            return p;
        }
        p = n;
    }
}

/// Python switches every value to raw bytes behind `hdrcharset=BINARY` when
/// one of them does not encode as strict UTF-8 (a surrogate-escaped name).
fn needs_binary<'a>(mut records: impl Iterator<Item = (&'static str, Value<'a>)>) -> bool {
    records.any(|(_, value)| matches!(value, Value::Bytes(b) if str::from_utf8(b).is_err()))
}

/// Bytes of the PAX records of `header`, 0 when it needs no PAX header.
fn records_len(header: &Header, name: &[u8]) -> u64 {
    let len: u64 = pax_records(header, name)
        .map(|(key, value)| record_len(key, value_len(value)))
        .sum();
    if len > 0 && needs_binary(pax_records(header, name)) {
        len + HDRCHARSET_BINARY.len() as u64
    } else {
        len
    }
}

/// `n` rounded up to whole blocks.
fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Bytes of the headers of `header`: the ustar block, preceded when needed
/// by a PAX extended header block and its padded records.
#[must_use]
pub fn header_len(header: &Header) -> u64 {
    let name = header.full_name();
    match records_len(header, &name) {
        0 => BLOCK,
        records => 2 * BLOCK + padded(records),
    }
}

/// Bytes an entry takes: its headers and its data padded to a block.
#[must_use]
pub fn entry_len(header: &Header) -> u64 {
    header_len(header) + padded(header.data_len())
}

/// Bytes of a whole archive whose entries take `entries` bytes (the sum of
/// their [`entry_len`]s): two zero blocks, then zero padding to a multiple
/// of [`RECORD`], as `TarFile.close` writes.
#[must_use]
pub fn archive_len(entries: u64) -> u64 {
    (entries + 2 * BLOCK).div_ceil(RECORD) * RECORD
}

/// The bytes Python's `str.encode("ascii", "replace")` gives for a name read
/// with `surrogateescape`: ASCII kept, every other character (a valid UTF-8
/// sequence, or one undecodable byte) replaced by one `?`.
fn ascii_replaced(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        let valid = chunk
            .valid()
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' });
        let invalid = chunk.invalid().iter().map(|_| b'?');
        valid.chain(invalid)
    })
}

/// Python's `stn` after the ascii/replace encoding: truncated, NUL-padded
/// (the block starts zeroed).
fn put_text(block: &mut [u8], offset: usize, width: usize, value: &[u8]) {
    for (dst, src) in block[offset..offset + width]
        .iter_mut()
        .zip(ascii_replaced(value))
    {
        *dst = src;
    }
}

/// Python's `itn` in the ustar range: `width - 1` zero-padded octal digits
/// and a NUL. Callers keep `value < 8 ** (width - 1)` (PAX takes the rest).
fn put_octal(block: &mut [u8], offset: usize, width: usize, mut value: u64) {
    let digits = &mut block[offset..offset + width - 1];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value & 7) as u8;
        value >>= 3;
    }
    debug_assert_eq!(value, 0, "octal field overflow");
    block[offset + width - 1] = 0;
}

/// The ustar fields of one header block.
struct Ustar<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &'a [u8],
    uname: &'a [u8],
    gname: &'a [u8],
}

/// `_create_header` with `USTAR_FORMAT`, "ascii", "replace". devmajor and
/// devminor stay NUL: CPython ≥ 3.11.4/3.12 only fills them for device
/// entries, which a store never holds; the prefix stays empty in PAX mode.
fn ustar_block(fields: &Ustar<'_>, out: &mut Vec<u8>) {
    let mut block = [0u8; BLOCK as usize];
    put_text(&mut block, 0, NAME_FIELD, fields.name);
    put_octal(&mut block, 100, 8, u64::from(fields.mode & 0o7777));
    put_octal(&mut block, 108, 8, fields.uid);
    put_octal(&mut block, 116, 8, fields.gid);
    put_octal(&mut block, 124, 12, fields.size);
    put_octal(&mut block, 136, 12, fields.mtime);
    block[148..156].copy_from_slice(b"        ");
    block[156] = fields.typeflag;
    put_text(&mut block, 157, LINK_FIELD, fields.link);
    block[257..265].copy_from_slice(b"ustar\x0000");
    put_text(&mut block, 265, OWNER_FIELD, fields.uname);
    put_text(&mut block, 297, OWNER_FIELD, fields.gname);
    // The checksum is taken with its own field as spaces, then written as
    // "%06o\0", leaving the field's eighth byte a space.
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut block, 148, 7, sum);
    out.extend_from_slice(&block);
}

fn pad_to_block(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK as usize;
    if rem != 0 {
        out.resize(out.len() + BLOCK as usize - rem, 0);
    }
}

/// Appends the headers of `header` to `out`: exactly [`header_len`] bytes.
pub fn encode_header(header: &Header, out: &mut Vec<u8>) {
    let name = header.full_name();
    let records_len = records_len(header, &name);
    if records_len > 0 {
        // Records are always the raw bytes: UTF-8 when valid, and behind
        // hdrcharset=BINARY the surrogate-escaped bytes restored as they were.
        let mut records = Vec::with_capacity(records_len as usize);
        if needs_binary(pax_records(header, &name)) {
            records.extend_from_slice(HDRCHARSET_BINARY);
        }
        for (key, value) in pax_records(header, &name) {
            let len = record_len(key, value_len(value));
            records.extend_from_slice(len.to_string().as_bytes());
            records.push(b' ');
            records.extend_from_slice(key.as_bytes());
            records.push(b'=');
            match value {
                Value::Bytes(bytes) => records.extend_from_slice(bytes),
                Value::Number(n) => records.extend_from_slice(n.to_string().as_bytes()),
            }
            records.push(b'\n');
        }
        debug_assert_eq!(records.len() as u64, records_len);
        // The extended header's own block: mode, ids, mtime 0, no owner names.
        ustar_block(
            &Ustar {
                name: PAX_NAME,
                mode: 0,
                uid: 0,
                gid: 0,
                size: records_len,
                mtime: 0,
                typeflag: b'x',
                link: b"",
                uname: b"",
                gname: b"",
            },
            out,
        );
        out.extend_from_slice(&records);
        pad_to_block(out);
    }
    // Numbers too large for their field were moved to PAX; the field holds 0.
    let fit = |value: u64, limit: u64| if value < limit { value } else { 0 };
    ustar_block(
        &Ustar {
            name: &name,
            mode: header.mode,
            uid: fit(header.uid, ID_LIMIT),
            gid: fit(header.gid, ID_LIMIT),
            size: fit(header.data_len(), NUMBER_LIMIT),
            mtime: fit(header.mtime, NUMBER_LIMIT),
            typeflag: header.kind.typeflag(),
            link: header.link(),
            uname: header.uname.as_bytes(),
            gname: header.gname.as_bytes(),
        },
        out,
    );
}

fn misuse(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A streaming tar writer producing Python `tarfile` ("w|", PAX) bytes.
///
/// Either [`append`](Self::append) a small member whole, or
/// [`start_entry`](Self::start_entry), write exactly the declared size
/// through the [`Write`] impl, then [`end_entry`](Self::end_entry). Finish
/// with [`finish`](Self::finish), which writes the trailer.
pub struct TarWriter<W: Write> {
    inner: W,
    written: u64,
    /// Body bytes the open entry still expects; `None` between entries.
    remaining: Option<u64>,
    /// Body bytes of the open entry, for its padding.
    body_len: u64,
    /// Reused for encoding headers.
    scratch: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer of an archive to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            written: 0,
            remaining: None,
            body_len: 0,
            scratch: Vec::with_capacity(2 * BLOCK as usize),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_zeros(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let chunk = n.min(BLOCK);
            self.put(&ZEROS[..chunk as usize])?;
            n -= chunk;
        }
        Ok(())
    }

    /// Writes a whole entry whose data is `data`.
    ///
    /// # Errors
    /// When `data` is not [`Header::data_len`] bytes long, an entry is open,
    /// or writing fails.
    pub fn append(&mut self, header: &Header, data: &[u8]) -> io::Result<()> {
        if data.len() as u64 != header.data_len() {
            return Err(misuse("tar entry data differs from its declared size"));
        }
        self.start_entry(header)?;
        self.write_all(data)?;
        self.end_entry()
    }

    /// Writes the headers of an entry; its [`Header::data_len`] bytes of
    /// data follow through [`Write`], then [`end_entry`](Self::end_entry).
    ///
    /// # Errors
    /// When an entry is already open or writing fails.
    pub fn start_entry(&mut self, header: &Header) -> io::Result<()> {
        if self.remaining.is_some() {
            return Err(misuse("a tar entry is already open"));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        encode_header(header, &mut scratch);
        let result = self.put(&scratch);
        self.scratch = scratch;
        result?;
        self.remaining = Some(header.data_len());
        self.body_len = header.data_len();
        Ok(())
    }

    /// Ends the open entry, padding its data to a block.
    ///
    /// # Errors
    /// When no entry is open, fewer bytes than declared were written, or
    /// writing fails.
    pub fn end_entry(&mut self) -> io::Result<()> {
        match self.remaining {
            None => Err(misuse("no tar entry is open")),
            Some(0) => {
                self.remaining = None;
                self.put_zeros(padded(self.body_len) - self.body_len)
            }
            Some(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar entry ended before its declared size",
            )),
        }
    }

    /// Writes the trailer (two zero blocks, then zeros to a multiple of
    /// [`RECORD`]), flushes, and returns the inner writer.
    ///
    /// # Errors
    /// When an entry is still open or writing fails.
    pub fn finish(mut self) -> io::Result<W> {
        if self.remaining.is_some() {
            return Err(misuse("a tar entry is still open"));
        }
        self.put_zeros(archive_len(self.written) - self.written)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably; bytes written through it bypass the
    /// archive's accounting.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Writes up to `max` bytes of the open entry's data by handing the
    /// inner writer to `fill`, which puts them there itself and returns how
    /// many (`Ok(Err(t))`: it put none and failed in a way of its own). A
    /// layer writer reads a file straight into its output buffer this way,
    /// saving a copy through a buffer of its own.
    ///
    /// # Errors
    /// When no entry is open, `fill` claims more than `max` bytes (or
    /// more than the entry has left), or writing fails.
    pub fn write_through<T>(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut W, usize) -> io::Result<Result<usize, T>>,
    ) -> io::Result<Result<usize, T>> {
        let Some(remaining) = self.remaining else {
            return Err(misuse("no tar entry is open"));
        };
        let max = usize::try_from(remaining).map_or(max, |r| r.min(max));
        let n = match fill(&mut self.inner, max)? {
            Ok(n) => n,
            Err(t) => return Ok(Err(t)),
        };
        if n > max {
            return Err(misuse("write past the declared size of the tar entry"));
        }
        self.written += n as u64;
        self.remaining = Some(remaining - n as u64);
        Ok(Ok(n))
    }

    /// Bytes the inner writer accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// The data of the open entry. A write that would exceed the declared size
/// is rejected whole, so the archive never gets more than it announced.
impl<W: Write> Write for TarWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(remaining) = self.remaining else {
            return Err(misuse("no tar entry is open"));
        };
        if buf.len() as u64 > remaining {
            return Err(misuse("write past the declared size of the tar entry"));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        self.remaining = Some(remaining - n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `data(n)` of `fixtures/tar/generate.py`.
    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect()
    }

    /// `info(...)` of `generate.py`, with its defaults.
    fn info(name: &[u8], kind: Kind, size: u64) -> Header {
        Header {
            name: name.to_vec(),
            mode: match kind {
                Kind::Symlink(_) => 0o777,
                Kind::Directory | Kind::Regular => 0o644,
            },
            kind,
            uid: 0,
            gid: 0,
            uname: "root".to_owned(),
            gname: "root".to_owned(),
            mtime: 1,
            size,
        }
    }

    fn file(name: &[u8], size: usize) -> (Header, Vec<u8>) {
        (info(name, Kind::Regular, size as u64), data(size))
    }

    fn link(name: &[u8], target: &[u8]) -> (Header, Vec<u8>) {
        (info(name, Kind::Symlink(target.to_vec()), 0), Vec::new())
    }

    fn with(mut entry: (Header, Vec<u8>), f: impl FnOnce(&mut Header)) -> (Header, Vec<u8>) {
        f(&mut entry.0);
        entry
    }

    fn rep(s: &str, n: usize) -> String {
        s.repeat(n)
    }

    /// The twins of `header_cases()` in `generate.py`.
    fn header_cases() -> Vec<(Header, Vec<u8>)> {
        let long_dir = format!("/{}", rep("d", 120));
        let dir = |name: &[u8], mode| {
            let mut h = info(name, Kind::Directory, 0);
            h.mode = mode;
            (h, Vec::new())
        };
        vec![
            dir(b"/nix", 0o755),
            file(format!("/{}", rep("n", 99)).as_bytes(), 3),
            file(format!("/{}", rep("n", 100)).as_bytes(), 3),
            dir(long_dir.as_bytes(), 0o555),
            (
                info(
                    format!("{long_dir}/café-日本.txt").as_bytes(),
                    Kind::Regular,
                    8,
                ),
                b"unicode\n".to_vec(),
            ),
            file("/café".as_bytes(), 0),
            (
                info(format!("/{}x", rep("é", 45)).as_bytes(), Kind::Regular, 1),
                b"x".to_vec(),
            ),
            (
                info(format!("/{}xy", rep("é", 45)).as_bytes(), Kind::Regular, 1),
                b"y".to_vec(),
            ),
            file(b"/bad-\xff-name", 512),
            file(format!("/{}", rep("b", 990)).as_bytes(), 513),
            link(b"/sym", rep("t", 100).as_bytes()),
            link(b"/sym-long", format!("/{}", rep("t", 150)).as_bytes()),
            link(b"/sym-utf8", "über".as_bytes()),
            link(b"/sym-bin", b"x\xfe"),
            with((info(b"/ids", Kind::Regular, 2), b"ok".to_vec()), |h| {
                h.uid = (1 << 21) - 1;
                h.gid = 1 << 21;
            }),
            with((info(b"/ids2", Kind::Regular, 2), b"ok".to_vec()), |h| {
                h.uid = (1 << 32) + 5
            }),
            with(file(b"/owners", 0), |h| {
                h.uname = rep("u", 33);
                h.gname = rep("g", 32);
            }),
            with(file(b"/owners2", 0), |h| {
                h.uname = "üser".to_owned();
                h.gname = "grüppe".to_owned();
            }),
            with(file(b"/mtime", 0), |h| h.mtime = 1 << 33),
            with(file(b"/mtime2", 0), |h| h.mtime = (1 << 33) - 1),
            with(file(b"/modes", 0), |h| h.mode = 0o104_755),
            with(
                link(
                    b"/all",
                    &[b"\xff\xff\xff", rep("é", 60).as_bytes()].concat(),
                ),
                |h| {
                    h.uid = 1 << 21;
                    h.gid = 1 << 24;
                    h.uname = "üser".to_owned();
                    h.gname = rep("g", 40);
                    h.mtime = 1 << 36;
                },
            ),
        ]
    }

    fn archive(entries: &[(Header, Vec<u8>)]) -> Vec<u8> {
        let mut tar = TarWriter::new(Vec::new());
        for (header, data) in entries {
            tar.append(header, data).unwrap();
        }
        tar.finish().unwrap()
    }

    /// Equal bytes, or a message naming the first differing offset.
    fn assert_bytes(actual: &[u8], expected: &[u8]) {
        if let Some(at) = actual.iter().zip(expected).position(|(a, b)| a != b) {
            let from = at - at % 512;
            panic!(
                "first difference at byte {at} (block at {from}):\n actual   {:?}\n expected {:?}",
                String::from_utf8_lossy(&actual[from..(from + 512).min(actual.len())]),
                String::from_utf8_lossy(&expected[from..(from + 512).min(expected.len())]),
            );
        }
        assert_eq!(actual.len(), expected.len(), "lengths differ");
    }

    #[test]
    fn headers_match_python_tarfile() {
        let cases = header_cases();
        let bytes = archive(&cases);
        assert_bytes(&bytes, include_bytes!("../../fixtures/tar/headers.tar"));
        let entries: u64 = cases.iter().map(|(h, _)| entry_len(h)).sum();
        assert_eq!(archive_len(entries), bytes.len() as u64);
    }

    #[test]
    fn trailer_and_record_padding_match_python_tarfile() {
        assert_bytes(
            &archive(&[]),
            include_bytes!("../../fixtures/tar/empty.tar"),
        );
        assert_eq!(archive_len(0), RECORD);
        // 18 blocks of entry + 2 trailer blocks fill one record: no padding.
        let exact = [file(b"/f", 17 * 512)];
        assert_eq!(entry_len(&exact[0].0), 18 * BLOCK);
        assert_bytes(
            &archive(&exact),
            include_bytes!("../../fixtures/tar/exact-record.tar"),
        );
        let over = [file(b"/f", 17 * 512 + 1)];
        assert_bytes(
            &archive(&over),
            include_bytes!("../../fixtures/tar/over-record.tar"),
        );
        assert_eq!(archive_len(18 * BLOCK), RECORD);
        assert_eq!(archive_len(18 * BLOCK + 1), 2 * RECORD);
    }

    #[test]
    fn huge_size_goes_to_pax_like_python() {
        let header = Header {
            uid: 7,
            gid: 8,
            uname: "u".to_owned(),
            gname: "g".to_owned(),
            mtime: 9,
            ..info(b"/huge", Kind::Regular, 1 << 33)
        };
        let mut bytes = Vec::new();
        encode_header(&header, &mut bytes);
        assert_bytes(&bytes, include_bytes!("../../fixtures/tar/huge-header.bin"));
        assert_eq!(header_len(&header), 3 * BLOCK);
        assert_eq!(entry_len(&header), 3 * BLOCK + (1 << 33));
    }

    /// The outer docker-archive member shape, checked field by field.
    #[test]
    fn ustar_fields_by_hand() {
        let header = Header {
            name: b"0123/layer.tar".to_vec(),
            kind: Kind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 1,
            size: 10240,
        };
        let mut b = Vec::new();
        encode_header(&header, &mut b);
        assert_eq!(b.len(), 512);
        assert_eq!(&b[..15], b"0123/layer.tar\0");
        assert_eq!(&b[100..108], b"0000644\0");
        assert_eq!(&b[108..116], b"0000000\0", "uid");
        assert_eq!(&b[116..124], b"0000000\0", "gid");
        assert_eq!(&b[124..136], b"00000024000\0");
        assert_eq!(&b[136..148], b"00000000001\0");
        let sum: u32 = b[..148]
            .iter()
            .chain(&b[156..])
            .map(|&x| u32::from(x))
            .sum();
        let sum = sum + 8 * u32::from(b' ');
        assert_eq!(&b[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(b[156], b'0');
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert!(b[157..257].iter().all(|&x| x == 0), "linkname");
        assert!(b[265..512].iter().all(|&x| x == 0), "names, dev, prefix");
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(record_len("path", 90), 99); // "99 path=<90>\n"
        assert_eq!(record_len("path", 91), 101); // 98 + 2 digits = 100 → 3 digits
        assert_eq!(record_len("path", 991), 1002);
    }

    #[test]
    fn writer_rejects_misuse() {
        let h = info(b"/f", Kind::Regular, 3);
        let mut tar = TarWriter::new(Vec::new());
        assert!(tar.write_all(b"x").is_err(), "no entry open");
        assert!(tar.append(&h, b"toolong").is_err());
        tar.start_entry(&h).unwrap();
        assert!(tar.start_entry(&h).is_err(), "already open");
        assert!(tar.write_all(b"abcd").is_err(), "past the size");
        tar.write_all(b"ab").unwrap();
        assert_eq!(
            tar.end_entry().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        tar.write_all(b"c").unwrap();
        tar.end_entry().unwrap();
        assert!(tar.end_entry().is_err(), "nothing open");
        assert_eq!(tar.bytes_written(), 1024);
        tar.start_entry(&h).unwrap();
        assert!(tar.finish().is_err(), "still open");
    }

    #[test]
    fn directory_and_symlink_carry_no_data() {
        let mut dir = info(b"/d", Kind::Directory, 99);
        dir.mode = 0o755;
        assert_eq!(entry_len(&dir), BLOCK);
        let mut tar = TarWriter::new(Vec::new());
        tar.append(&dir, b"").unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(&bytes[..3], b"/d/", "Python adds the directory slash");
        assert_eq!(&bytes[124..136], b"00000000000\0");
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        let name = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "[a-zé/日]{0,160}".prop_map(String::into_bytes),
        ];
        let kind = prop_oneof![
            Just(Kind::Directory),
            Just(Kind::Regular),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(Kind::Symlink),
        ];
        let id = prop_oneof![0u64..3000, any::<u64>(), Just((1 << 21) - 1), Just(1 << 21)];
        let big = prop_oneof![0u64..3000, Just((1 << 33) - 1), Just(1 << 33), any::<u64>()];
        let owner = "[a-zü]{0,40}";
        (
            name,
            kind,
            any::<u32>(),
            (id.clone(), id),
            (owner, owner),
            big,
            0u64..5000,
        )
            .prop_map(
                |(name, kind, mode, (uid, gid), (uname, gname), mtime, size)| Header {
                    name,
                    kind,
                    mode,
                    uid,
                    gid,
                    uname,
                    gname,
                    mtime,
                    size,
                },
            )
    }

    proptest! {
        #[test]
        fn lengths_agree_with_written_bytes(headers in proptest::collection::vec(arb_header(), 0..6)) {
            let mut tar = TarWriter::new(Vec::new());
            let mut sum = 0;
            for h in &headers {
                let mut encoded = Vec::new();
                encode_header(h, &mut encoded);
                prop_assert_eq!(encoded.len() as u64, header_len(h));
                let before = tar.bytes_written();
                tar.append(h, &data(h.data_len() as usize)).unwrap();
                prop_assert_eq!(tar.bytes_written() - before, entry_len(h));
                sum += entry_len(h);
            }
            let bytes = tar.finish().unwrap();
            prop_assert_eq!(bytes.len() as u64, archive_len(sum));
            prop_assert_eq!(bytes.len() as u64 % RECORD, 0);
        }

        #[test]
        fn huge_sizes_measure_like_they_encode(size in (1u64 << 33)..u64::MAX / 2) {
            let h = Header { size, ..info(b"/big", Kind::Regular, 0) };
            let mut encoded = Vec::new();
            encode_header(&h, &mut encoded);
            prop_assert_eq!(encoded.len() as u64, header_len(&h));
        }
    }
}
