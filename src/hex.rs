//! Lower-case hex, the one encoder and decoder the gateway uses (ids, digests, cursors).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Lower-case hex of `bytes` into `out` (twice as long), without allocating: for the
/// request path, where a request id is drawn per request.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Exactly `2 * N` hex digits (either case) back into `N` bytes; `None` for anything else.
pub fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_text() {
        let b = [0x00, 0x7f, 0xab, 0xff];
        assert_eq!(encode(&b), "007fabff");
        assert_eq!(decode::<4>("007FABff"), Some(b));
        assert_eq!(decode::<4>("007fab"), None);
        assert_eq!(decode::<4>("007fabfg"), None);
        let mut out = [0u8; 8];
        encode_into(&b, &mut out);
        assert_eq!(&out, b"007fabff");
    }
}
