//! Record framing for every append-only store file, and the resynchronising scan that finds
//! each intact record however the bytes around it were damaged.
//!
//! ```text
//! frame   magic [0xF7, 0x5A] | len u32 LE | payload (len bytes) | crc32 u32 LE of len and payload
//! ```
//!
//! Why a per-record magic and length rather than fixed-size records: when bytes are
//! inserted or deleted in the middle of a file (a replayed partial write, a bad copy), fixed
//! offsets misalign every later record. Here the scan, on a frame that does not check out,
//! moves to the next occurrence of the magic and tries again, so damage costs only the
//! records it touches. A false match needs the magic, a plausible length, a 32-bit checksum
//! and a payload the caller accepts to line up by chance.

/// First bytes of every frame. Neither is ASCII nor zero, so text and holes a file system
/// left behind do not look like a record.
pub const MAGIC: [u8; 2] = [0xF7, 0x5A];
/// Frame bytes around the payload: magic, length, checksum.
pub const OVERHEAD: usize = MAGIC.len() + 4 + 4;
const HEAD: usize = MAGIC.len() + 4;

/// Appends one frame to `out`, its payload written by `payload`.
pub fn encode_with(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 4]);
    payload(out);
    let len = (out.len() - start - HEAD) as u32;
    out[start + MAGIC.len()..start + HEAD].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start + MAGIC.len()..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    encode_with(out, |o| o.extend_from_slice(payload));
}

/// A stretch of bytes that holds no intact record, followed by an intact one (so it is not
/// a torn final write). Offsets are from the start of the scanned bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset: usize,
    pub len: usize,
}

/// What [`scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Intact records, handed to the caller in order.
    pub records: usize,
    /// Bytes up to the end of the last intact record.
    pub good_len: usize,
    /// Damaged stretches between intact records (or before the first one).
    pub damaged: Vec<Damage>,
    /// Bytes after `good_len`.
    pub tail: usize,
    /// Whether those bytes are what a crash during the last write leaves (see
    /// [`is_torn_write`]): safe to cut. Otherwise they are damage like any other.
    pub tail_torn: bool,
    /// Contiguous runs of intact records, as (start, end): what a recovery keeps.
    pub runs: Vec<(usize, usize)>,
}

impl Scan {
    /// Total bytes that are neither intact records nor a torn final write.
    pub fn damaged_bytes(&self) -> usize {
        self.damaged.iter().map(|d| d.len).sum::<usize>()
            + if self.tail_torn { 0 } else { self.tail }
    }

    /// Where the first damage starts, if any (torn final write aside).
    pub fn first_damage(&self) -> Option<usize> {
        match self.damaged.first() {
            Some(d) => Some(d.offset),
            None if !self.tail_torn && self.tail > 0 => Some(self.good_len),
            None => None,
        }
    }
}

/// Whether `tail` (the bytes after the last intact record) is what a crash during a write
/// leaves: nothing but zeros (the file grew before the data landed), or the start of one
/// frame whose declared length reaches the end of the file or beyond. Anything else, such as
/// a whole frame followed by more bytes, is damage and is not cut.
pub fn is_torn_write(tail: &[u8]) -> bool {
    if tail.iter().all(|&b| b == 0) {
        return true;
    }
    if tail.len() < MAGIC.len() {
        return MAGIC.starts_with(tail);
    }
    if tail[..MAGIC.len()] != MAGIC {
        return false;
    }
    match tail.get(MAGIC.len()..HEAD) {
        None => true,
        Some(len) => {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            HEAD.saturating_add(len).saturating_add(4) >= tail.len()
        }
    }
}

/// The payload of the intact frame at `pos` and the frame's length, if one is there.
fn frame_at(bytes: &[u8], pos: usize, max_len: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(pos..pos.checked_add(HEAD)?)?;
    if head[..MAGIC.len()] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
    if len == 0 || len > max_len {
        return None;
    }
    let end = pos + HEAD + len + 4;
    let frame = bytes.get(pos..end)?;
    let (covered, crc) = frame.split_at(HEAD + len);
    if crc32fast::hash(&covered[MAGIC.len()..]).to_le_bytes() != crc {
        return None;
    }
    Some((&covered[HEAD..], end - pos))
}

/// The next position after `pos` where the magic starts, or the end of `bytes`.
fn next_magic(bytes: &[u8], pos: usize) -> usize {
    let from = pos + 1;
    bytes
        .get(from..)
        .and_then(|rest| rest.windows(MAGIC.len()).position(|w| w == MAGIC))
        .map_or(bytes.len(), |i| from + i)
}

/// Hands the payload of every intact record in `bytes` to `accept`, in order, and reports
/// the damage around them. `accept` returns false for a payload it cannot decode (that
/// frame then counts as damage). Payloads longer than `max_len` are never accepted.
///
/// Never panics and accounts for every byte: `good_len + tail` is `bytes.len()`.
pub fn scan(bytes: &[u8], max_len: usize, mut accept: impl FnMut(&[u8]) -> bool) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0usize;
    // Start of the stretch that has not parsed since the last intact record.
    let mut bad_from: Option<usize> = None;
    let mut run_start = 0usize;
    while pos < bytes.len() {
        match frame_at(bytes, pos, max_len) {
            Some((payload, len)) if accept(payload) => {
                if let Some(from) = bad_from.take() {
                    out.damaged.push(Damage {
                        offset: from,
                        len: pos - from,
                    });
                    if out.good_len > run_start {
                        out.runs.push((run_start, out.good_len));
                    }
                    run_start = pos;
                }
                out.records += 1;
                pos += len;
                out.good_len = pos;
            }
            _ => {
                bad_from.get_or_insert(pos);
                pos = next_magic(bytes, pos);
            }
        }
    }
    if out.good_len > run_start {
        out.runs.push((run_start, out.good_len));
    }
    out.tail = bytes.len() - out.good_len;
    out.tail_torn = is_torn_write(&bytes[out.good_len..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(&mut out, p);
        }
        out
    }

    fn all(bytes: &[u8]) -> (Vec<Vec<u8>>, Scan) {
        let mut got = Vec::new();
        let s = scan(bytes, 1024, |p| {
            got.push(p.to_vec());
            true
        });
        (got, s)
    }

    #[test]
    fn frames_round_trip_and_every_bit_flip_is_caught() {
        let bytes = frames(&[b"one", b"two two", b"three"]);
        let (got, s) = all(&bytes);
        assert_eq!(
            got,
            vec![b"one".to_vec(), b"two two".to_vec(), b"three".to_vec()]
        );
        assert_eq!((s.good_len, s.tail, s.damaged.len()), (bytes.len(), 0, 0));
        let one = frames(&[b"payload"]);
        for bit in 0..one.len() * 8 {
            let mut bad = one.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(all(&bad).1.records, 0, "bit {bit}");
        }
    }

    #[test]
    fn inserted_bytes_lose_nothing_and_are_reported_where_they_are() {
        let mut bytes = frames(&[b"a", b"b", b"c", b"d"]);
        let at = OVERHEAD + 1;
        bytes.splice(at..at, [1u8, 2, 3, 0xF7]);
        let (got, s) = all(&bytes);
        assert_eq!(got.len(), 4);
        assert_eq!(s.damaged, vec![Damage { offset: at, len: 4 }]);
        assert_eq!(s.runs, vec![(0, at), (at + 4, bytes.len())]);
        assert!(s.tail_torn && s.tail == 0);
    }

    #[test]
    fn torn_final_write_versus_damaged_tail() {
        let bytes = frames(&[b"a", b"bbbb"]);
        let last = OVERHEAD + 1;
        for cut in last + 1..bytes.len() {
            let s = all(&bytes[..cut]).1;
            assert_eq!(
                (s.records, s.tail, s.tail_torn),
                (1, cut - last, true),
                "cut {cut}"
            );
            assert_eq!(s.first_damage(), None);
        }
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert!(all(&zeros).1.tail_torn);
        // A whole frame with a bad checksum followed by more bytes is damage, not a tear.
        let mut bad = bytes.clone();
        bad[last + 7] ^= 1;
        bad.extend_from_slice(b"more");
        let s = all(&bad).1;
        assert!(!s.tail_torn);
        assert_eq!(s.first_damage(), Some(last));
        assert_eq!(s.damaged_bytes(), bad.len() - last);
    }

    #[test]
    fn garbage_never_panics_and_every_byte_is_accounted_for() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = frames(&[b"x", b"yy", b"zzz"]);
        for round in 0..5_000 {
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..next() % 200).map(|_| next() as u8).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..(next() % 4) {
                    let i = (next() as usize) % v.len();
                    v[i] ^= next() as u8;
                }
                v
            };
            buf.extend_from_slice(&MAGIC);
            let s = all(&buf).1;
            assert_eq!(s.good_len + s.tail, buf.len());
            let runs: usize = s.runs.iter().map(|(a, b)| b - a).sum();
            let damaged: usize = s.damaged.iter().map(|d| d.len).sum();
            assert_eq!(runs + damaged, s.good_len);
        }
    }
}
