//! Recognising and undoing the compression of an archive or a blob, by its
//! magic bytes (as `file --mime-type` does for nixpkgs' mergeImages).

use std::io::{self, BufRead, BufReader, Read};

use super::Compression;

/// Reads the decompressed bytes of `inner`, whatever its compression
/// (sniffed from its first bytes); plain bytes pass through.
///
/// # Errors
/// When the first bytes cannot be read or a zstd decoder cannot be set up.
pub fn decompress<'a, R: Read + 'a>(inner: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(1 << 16, inner);
    let compression = Compression::sniff(buffered.fill_buf()?);
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(buffered),
        // Multi-member: pigz and `cat a.gz b.gz` write several members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(buffered, true)),
    };
    Ok((compression, reader))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn sniffs_and_undoes_each_compression() {
        let data = b"hello tar".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (bytes, expected) in [
            (data.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
        ] {
            let (found, mut r) = decompress(&bytes[..]).unwrap();
            assert_eq!(found, expected);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        assert_eq!(
            Compression::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Compression::Xz
        );
    }

    /// Every member is read: nixlayer's own gzip (one member per
    /// [`GZIP_MEMBER`](crate::codec::GZIP_MEMBER) bytes) and members
    /// written elsewhere and concatenated (`cat a.gz b.gz`).
    #[test]
    fn every_gzip_member_is_read() {
        let data: Vec<u8> = (0..crate::codec::GZIP_MEMBER * 3 + 77)
            .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
            .collect();
        let options = crate::codec::CompressOptions::new(
            Compression::Gzip,
            std::num::NonZeroUsize::new(2).unwrap(),
        );
        let mut ours = crate::codec::Compressor::new(Vec::new(), &options).unwrap();
        ours.write_all(&data).unwrap();
        let ours = ours.finish().unwrap();
        assert_eq!(crate::codec::gzip::count_members(&ours).unwrap(), 4);
        let mut cat = Vec::new();
        for part in data.chunks(1_000_000) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
            gz.write_all(part).unwrap();
            cat.extend(gz.finish().unwrap());
        }
        for bytes in [ours, cat] {
            let (found, mut r) = decompress(&bytes[..]).unwrap();
            assert_eq!(found, Compression::Gzip);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert!(out == data, "{} of {} bytes", out.len(), data.len());
        }
    }

    #[test]
    fn garbage_after_a_magic_is_an_error_not_a_panic() {
        let (_, mut r) = decompress(&[0x1f, 0x8b, 1, 2, 3][..]).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let (_, mut r) = decompress(&[0x28, 0xb5, 0x2f, 0xfd, 9, 9][..]).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let (_, mut r) = decompress(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1][..]).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Random bytes after each magic (and none): sniffing and decoding
        /// return, with bytes or an error, and never run away (the output
        /// read is capped; a decoder stuck on input would hang here).
        #[test]
        fn never_panics_or_loops(
            magic in 0usize..4,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        ) {
            let mut bytes: Vec<u8> = [
                &[][..],
                &[0x1f, 0x8b][..],
                &[0x28, 0xb5, 0x2f, 0xfd][..],
                &[0xfd, b'7', b'z', b'X', b'Z', 0][..],
            ][magic].to_vec();
            bytes.extend_from_slice(&body);
            let _ = Compression::sniff(&bytes);
            let mut out = Vec::new();
            if let Ok((_, r)) = decompress(&bytes[..]) {
                let _ = r.take(16 << 20).read_to_end(&mut out);
            };
        }
    }
}
