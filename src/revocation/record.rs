//! The on-disk format of the revocation log: the file header, the fixed-size checksummed
//! record, and the pure decoder that replay (and the fuzz target) run over a file's bytes.
//!
//! ```text
//! header  8 bytes   b"PCRVLOG" then the format version (1)
//! record 37 bytes   kind u8 | key [u8; 16] | a u64 LE | b u64 LE | crc32 u32 LE
//!                   crc32 (IEEE, crc32fast) covers the 33 bytes before it
//!   kind 1 RevokeToken      a = exp
//!   kind 2 UnrevokeToken    a = b = 0
//!   kind 3 RevokeSubject    a = revoked_before, b = expires
//!   kind 4 UnrevokeSubject  a = b = 0
//! ```
//!
//! Fixed-size framing means a damaged record never desynchronises the ones after it: the
//! decoder skips a record whose checksum fails and carries on at the next 37-byte boundary.

use thiserror::Error;

use super::dict::{expired, Entry, Key};

/// First bytes of every log file; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"PCRVLOG\x01";
pub const HEADER_LEN: usize = MAGIC.len();
/// Bytes per record, checksum included.
pub const RECORD_LEN: usize = 37;
const BODY_LEN: usize = RECORD_LEN - 4;

const KIND_REVOKE_TOKEN: u8 = 1;
const KIND_UNREVOKE_TOKEN: u8 = 2;
const KIND_REVOKE_SUBJECT: u8 = 3;
const KIND_UNREVOKE_SUBJECT: u8 = 4;

/// One change to the revocation set, as appended to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    RevokeToken {
        key: Key,
        exp: u64,
    },
    UnrevokeToken {
        key: Key,
    },
    RevokeSubject {
        key: Key,
        revoked_before: u64,
        expires: u64,
    },
    UnrevokeSubject {
        key: Key,
    },
}

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let (kind, key, a, b) = match *self {
            Record::RevokeToken { key, exp } => (KIND_REVOKE_TOKEN, key, exp, 0),
            Record::UnrevokeToken { key } => (KIND_UNREVOKE_TOKEN, key, 0, 0),
            Record::RevokeSubject {
                key,
                revoked_before,
                expires,
            } => (KIND_REVOKE_SUBJECT, key, revoked_before, expires),
            Record::UnrevokeSubject { key } => (KIND_UNREVOKE_SUBJECT, key, 0, 0),
        };
        let mut out = [0u8; RECORD_LEN];
        out[0] = kind;
        out[1..17].copy_from_slice(&key);
        out[17..25].copy_from_slice(&a.to_le_bytes());
        out[25..33].copy_from_slice(&b.to_le_bytes());
        let crc = crc32fast::hash(&out[..BODY_LEN]);
        out[BODY_LEN..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// `None` when the checksum fails or the kind is unknown.
    pub fn decode(raw: &[u8; RECORD_LEN]) -> Option<Record> {
        let (body, crc) = raw.split_at(BODY_LEN);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let key: Key = raw[1..17].try_into().ok()?;
        let a = u64::from_le_bytes(raw[17..25].try_into().ok()?);
        let b = u64::from_le_bytes(raw[25..33].try_into().ok()?);
        match raw[0] {
            KIND_REVOKE_TOKEN => Some(Record::RevokeToken { key, exp: a }),
            KIND_UNREVOKE_TOKEN => Some(Record::UnrevokeToken { key }),
            KIND_REVOKE_SUBJECT => Some(Record::RevokeSubject {
                key,
                revoked_before: a,
                expires: b,
            }),
            KIND_UNREVOKE_SUBJECT => Some(Record::UnrevokeSubject { key }),
            _ => None,
        }
    }

    /// Applies the change to a dictionary, ignoring expiry.
    pub fn apply(&self, dict: &super::dict::Dictionary) {
        match *self {
            Record::RevokeToken { key, exp } => dict.revoke_token(key, exp),
            Record::UnrevokeToken { key } => {
                dict.unrevoke_token(key);
            }
            Record::RevokeSubject {
                key,
                revoked_before,
                expires,
            } => dict.revoke_subject(key, revoked_before, expires),
            Record::UnrevokeSubject { key } => {
                dict.unrevoke_subject(key);
            }
        }
    }
}

impl From<Entry> for Record {
    fn from(e: Entry) -> Record {
        match e {
            Entry::Token { key, exp } => Record::RevokeToken { key, exp },
            Entry::Subject {
                key,
                revoked_before,
                expires,
            } => Record::RevokeSubject {
                key,
                revoked_before,
                expires,
            },
        }
    }
}

/// What the decoder found in a log body (the bytes after the header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Intact records.
    pub records: usize,
    /// Body bytes up to the end of the last intact record: the part worth keeping.
    pub good_len: usize,
    /// Damaged records followed by an intact one: skipped, but not a torn tail.
    pub corrupt: usize,
    /// Bytes after `good_len`: a partial record and/or damaged records at the very end,
    /// which is what a crash in the middle of a write leaves.
    pub torn: usize,
}

/// Decodes every intact record of a log body, calling `f` on each in file order.
///
/// Never panics, whatever the bytes: this is the fuzz target's entry point (via
/// [`decode_records`]). Damaged records in the middle are skipped and counted in
/// [`Scan::corrupt`]; anything after the last intact record is reported as [`Scan::torn`].
pub fn scan(body: &[u8], mut f: impl FnMut(Record)) -> Scan {
    let mut out = Scan::default();
    let mut bad_since_good = 0usize;
    for (i, chunk) in body.chunks_exact(RECORD_LEN).enumerate() {
        let decoded = <&[u8; RECORD_LEN]>::try_from(chunk)
            .ok()
            .and_then(Record::decode);
        match decoded {
            Some(record) => {
                f(record);
                out.records += 1;
                out.corrupt += bad_since_good;
                bad_since_good = 0;
                out.good_len = (i + 1) * RECORD_LEN;
            }
            None => bad_since_good += 1,
        }
    }
    out.torn = body.len() - out.good_len;
    out
}

/// Upper bounds on the (tokens, subjects) a replay at `now` will hold, for pre-sizing the
/// dictionary: revocations not yet expired, read without checking checksums (a damaged
/// record only inflates the estimate). Several times cheaper than [`scan`].
pub fn estimate_live(body: &[u8], now: u64, leeway: u64) -> (usize, usize) {
    let (mut tokens, mut subjects) = (0usize, 0usize);
    for raw in body.chunks_exact(RECORD_LEN) {
        let field = |at: usize| {
            raw.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes)
        };
        match raw[0] {
            KIND_REVOKE_TOKEN if !expired(field(17), now, leeway) => tokens += 1,
            KIND_REVOKE_SUBJECT if !expired(field(25), now, leeway) => subjects += 1,
            _ => {}
        }
    }
    (tokens, subjects)
}

/// [`scan`] collecting the records.
pub fn decode_records(body: &[u8]) -> (Vec<Record>, Scan) {
    let mut records = Vec::with_capacity(body.len() / RECORD_LEN);
    let found = scan(body, |r| records.push(r));
    (records, found)
}

/// Why a file's first bytes are not a log this build can read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a portcullis revocation log (bad magic bytes)")]
    NotALog,
    #[error(
        "revocation log format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedVersion { found: u8, supported: u8 },
}

/// The state of a file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A complete header; the body starts at [`HEADER_LEN`].
    Valid,
    /// Empty, or a prefix of the header: the file was created and the process died before
    /// the header reached the disk. Safe to rewrite from scratch: it holds no record.
    Incomplete,
}

pub fn check_header(file: &[u8]) -> Result<Header, HeaderError> {
    let version = MAGIC[HEADER_LEN - 1];
    if file.len() < HEADER_LEN {
        return if MAGIC.starts_with(file) {
            Ok(Header::Incomplete)
        } else {
            Err(HeaderError::NotALog)
        };
    }
    if file[..HEADER_LEN - 1] != MAGIC[..HEADER_LEN - 1] {
        return Err(HeaderError::NotALog);
    }
    if file[HEADER_LEN - 1] != version {
        return Err(HeaderError::UnsupportedVersion {
            found: file[HEADER_LEN - 1],
            supported: version,
        });
    }
    Ok(Header::Valid)
}

/// Header check then [`decode_records`] on the body; the whole-file fuzz entry point.
pub fn decode_file(file: &[u8]) -> Result<(Vec<Record>, Scan), HeaderError> {
    match check_header(file)? {
        Header::Incomplete => Ok((Vec::new(), Scan::default())),
        Header::Valid => Ok(decode_records(file.get(HEADER_LEN..).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::dict::digest;

    fn samples() -> Vec<Record> {
        vec![
            Record::RevokeToken {
                key: digest(b"a"),
                exp: 1_700_000_000,
            },
            Record::UnrevokeToken { key: digest(b"b") },
            Record::RevokeSubject {
                key: digest(b"c"),
                revoked_before: 5,
                expires: u64::MAX,
            },
            Record::UnrevokeSubject { key: digest(b"d") },
        ]
    }

    #[test]
    fn records_round_trip() {
        for r in samples() {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        for r in samples() {
            let raw = r.encode();
            for bit in 0..RECORD_LEN * 8 {
                let mut bad = raw;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(Record::decode(&bad), None, "bit {bit} of {r:?}");
            }
        }
        // A zero-filled record (a hole left by a crash) is not valid either.
        assert_eq!(Record::decode(&[0u8; RECORD_LEN]), None);
    }

    #[test]
    fn unknown_kind_with_valid_crc_is_rejected() {
        let mut raw = [0u8; RECORD_LEN];
        raw[0] = 9;
        let crc = crc32fast::hash(&raw[..BODY_LEN]);
        raw[BODY_LEN..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Record::decode(&raw), None);
    }

    #[test]
    fn scan_separates_corrupt_middle_from_torn_tail() {
        let recs = samples();
        let mut body: Vec<u8> = recs.iter().flat_map(|r| r.encode()).collect();
        body[RECORD_LEN + 3] ^= 0xff; // damage record 1 of 4
        let (got, s) = decode_records(&body);
        assert_eq!(got, vec![recs[0], recs[2], recs[3]]);
        assert_eq!(
            s,
            Scan {
                records: 3,
                good_len: 4 * RECORD_LEN,
                corrupt: 1,
                torn: 0
            }
        );

        body[3 * RECORD_LEN] ^= 0xff; // now the last one too: it joins the torn tail
        body.extend_from_slice(&[1, 2, 3]);
        let (got, s) = decode_records(&body);
        assert_eq!(got, vec![recs[0], recs[2]]);
        assert_eq!(
            s,
            Scan {
                records: 2,
                good_len: 3 * RECORD_LEN,
                corrupt: 1,
                torn: RECORD_LEN + 3
            }
        );
    }

    #[test]
    fn header_states() {
        assert_eq!(check_header(b""), Ok(Header::Incomplete));
        assert_eq!(check_header(b"PCRV"), Ok(Header::Incomplete));
        assert_eq!(check_header(&MAGIC), Ok(Header::Valid));
        assert_eq!(check_header(b"PCRX"), Err(HeaderError::NotALog));
        assert_eq!(check_header(b"{\"hello\": 1}"), Err(HeaderError::NotALog));
        assert_eq!(
            check_header(b"PCRVLOG\x07"),
            Err(HeaderError::UnsupportedVersion {
                found: 7,
                supported: 1
            })
        );
    }

    /// Arbitrary bytes never panic the decoder (a stand-in for the cargo-fuzz target).
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<u8> = MAGIC
            .iter()
            .copied()
            .chain(samples().iter().flat_map(|r| r.encode()))
            .collect();
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                // Mutated valid files reach the record decoder far more often.
                let mut v = valid.clone();
                v.truncate(len.min(v.len()));
                for _ in 0..(next() % 4) {
                    if !v.is_empty() {
                        let i = (next() as usize) % v.len();
                        v[i] ^= next() as u8;
                    }
                }
                v
            };
            if round % 3 == 0 {
                buf.extend_from_slice(&MAGIC);
            }
            let _ = decode_file(&buf);
            let (recs, s) = decode_records(&buf);
            assert_eq!(recs.len(), s.records);
            assert_eq!(s.good_len + s.torn, buf.len());
            assert!(s.good_len % RECORD_LEN == 0);
        }
    }
}
