//! Nix's base32 ("nixbase32"): its own alphabet (no `e o t u`) and its
//! bytes read from the last character backwards, least significant bits
//! first. A naive RFC 4648 port gets the bit order wrong.

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The number of characters `len` bytes encode to.
#[must_use]
pub fn encoded_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len * 8 - 1) / 5 + 1
    }
}

/// Encodes `bytes` as nixbase32.
#[must_use]
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&x| u16::from(x) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// The value of one nixbase32 digit, or `None` for a character outside the alphabet.
#[must_use]
pub fn digit(c: u8) -> Option<u8> {
    match DIGITS[usize::from(c)] {
        NOT_A_DIGIT => None,
        d => Some(d),
    }
}

const NOT_A_DIGIT: u8 = 0xff;

/// Each byte's digit value, [`NOT_A_DIGIT`] outside the alphabet: a table
/// rather than a search of [`ALPHABET`], as every store path of a closure
/// file (10,000 paths, 100,000 references) is decoded to be checked.
const DIGITS: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decodes nixbase32 text into `len` bytes; `None` when a character is not
/// a digit, the length does not match, or set bits fall past the end.
#[must_use]
pub fn decode(text: &[u8], len: usize) -> Option<Vec<u8>> {
    if text.len() != encoded_len(len) {
        return None;
    }
    let mut out = vec![0u8; len];
    for (k, &c) in text.iter().enumerate() {
        let d = u16::from(digit(c)?);
        let n = text.len() - 1 - k;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let shifted = d << j;
        out[i] |= (shifted & 0xff) as u8;
        let carry = (shifted >> 8) as u8;
        if carry != 0 {
            *out.get_mut(i + 1)? |= carry;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors() {
        // sha256 of the empty string as Nix prints it (`nix hash to-base32`).
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&empty[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(
            encode(&bytes),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x1f]), "0z");
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(decode(b"e0", 1), None); // 'e' is not a digit
        assert_eq!(decode(b"0", 1), None); // wrong length
        assert_eq!(decode(b"zz", 1), None); // bits past the end
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = encode(&bytes);
            prop_assert_eq!(decode(text.as_bytes(), bytes.len()), Some(bytes));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            text in proptest::collection::vec(any::<u8>(), 0..120),
            len in 0usize..80,
        ) {
            if let Some(bytes) = decode(&text, len) {
                prop_assert_eq!(bytes.len(), len);
            }
        }

        #[test]
        fn alphabet_text_of_any_length_decodes_or_fails_cleanly(
            text in "[0-9a-df-np-sv-z]{0,120}",
            len in 0usize..80,
        ) {
            let _ = decode(text.as_bytes(), len);
        }
    }
}
