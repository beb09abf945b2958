//! The on-disk format of the revocation log: the file header, the record payload, and the
//! pure decoder that replay (and the fuzz target) run over a file's bytes. Framing,
//! checksums and the scan that recovers records after damage are `crate::durable::frame`'s.
//!
//! ```text
//! header   8 bytes   b"PCRVLOG" then the format version (2)
//! record  43 bytes   a durable frame (magic, length 33, payload, crc32) around
//! payload 33 bytes   kind u8 | key [u8; 16] | a u64 LE | b u64 LE
//!   kind 1 RevokeToken      a = exp
//!   kind 2 UnrevokeToken    a = b = 0
//!   kind 3 RevokeSubject    a = revoked_before, b = expires
//!   kind 4 UnrevokeSubject  a = b = 0
//! ```
//!
//! Version 1 used bare fixed-size records (payload then crc32, 37 bytes), so inserted or
//! deleted bytes misaligned every later record. A version 1 file is read with its own
//! decoder ([`decode_v1`]) and rewritten as version 2 at open.

use crate::durable::frame::{self, OVERHEAD};
pub use crate::durable::store::{check_header, Header, HEADER_LEN};
use crate::durable::FileKind;
pub use crate::durable::HeaderError;

use super::dict::{expired, Entry, Key};

/// First bytes of every log file; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"PCRVLOG\x02";
/// Bytes of a record's payload.
pub const PAYLOAD_LEN: usize = 33;
/// Bytes per record in the file, framing included.
pub const RECORD_LEN: usize = PAYLOAD_LEN + OVERHEAD;
/// What the durable layer needs to know about this file.
pub const KIND: FileKind = FileKind {
    name: "revocation log",
    header: MAGIC,
    max_payload: PAYLOAD_LEN,
};
/// Version 1 records, still the Redis change stream's wire format: the payload then its
/// crc32, 37 bytes.
pub const WIRE_LEN: usize = PAYLOAD_LEN + 4;
const V1_RECORD_LEN: usize = WIRE_LEN;

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
    pub fn payload(&self) -> [u8; PAYLOAD_LEN] {
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
        let mut out = [0u8; PAYLOAD_LEN];
        out[0] = kind;
        out[1..17].copy_from_slice(&key);
        out[17..25].copy_from_slice(&a.to_le_bytes());
        out[25..33].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Appends the framed record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        frame::encode(out, &self.payload());
    }

    /// The framed record, as it sits in the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_LEN);
        self.encode_into(&mut out);
        out
    }

    /// `None` when the payload is not a record this build writes (the checksum was checked
    /// by the frame).
    pub fn from_payload(raw: &[u8]) -> Option<Record> {
        if raw.len() != PAYLOAD_LEN {
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

    /// The record as the Redis change stream carries it (and version 1 logs held it).
    pub fn encode_wire(&self) -> [u8; WIRE_LEN] {
        let mut out = [0u8; WIRE_LEN];
        let payload = self.payload();
        out[..PAYLOAD_LEN].copy_from_slice(&payload);
        out[PAYLOAD_LEN..].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out
    }

    /// `None` when the checksum fails or the kind is unknown.
    pub fn decode_wire(raw: &[u8]) -> Option<Record> {
        if raw.len() != WIRE_LEN {
            return None;
        }
        let (payload, crc) = raw.split_at(PAYLOAD_LEN);
        let crc = u32::from_le_bytes(crc.try_into().ok()?);
        if crc32fast::hash(payload) != crc {
            return None;
        }
        Record::from_payload(payload)
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

pub use crate::durable::frame::Scan;

/// Decodes every intact record of a log body (the bytes after the header), calling `f` on
/// each in file order, wherever damage sits between them. Never panics, whatever the bytes:
/// the fuzz target's entry point (via [`decode_records`]).
pub fn scan(body: &[u8], mut f: impl FnMut(Record)) -> Scan {
    frame::scan(body, PAYLOAD_LEN, |p| match Record::from_payload(p) {
        Some(r) => {
            f(r);
            true
        }
        None => false,
    })
}

/// Upper bounds on the (tokens, subjects) a replay at `now` will hold, for pre-sizing the
/// dictionary: revocations not yet expired, read at record-size steps without checking
/// checksums (damage only skews the estimate). Several times cheaper than [`scan`].
pub fn estimate_live(body: &[u8], now: u64, leeway: u64) -> (usize, usize) {
    let (mut tokens, mut subjects) = (0usize, 0usize);
    let start = frame::MAGIC.len() + 4;
    for raw in body.chunks_exact(RECORD_LEN) {
        let field = |at: usize| {
            raw.get(start + at..start + at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes)
        };
        match raw[start] {
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

/// The records of a version 1 log body: fixed 37-byte records, each checked by its crc32;
/// a damaged one is skipped, as version 1 did.
pub fn decode_v1(body: &[u8]) -> Vec<Record> {
    body.chunks_exact(V1_RECORD_LEN)
        .filter_map(Record::decode_wire)
        .collect()
}

/// Header check then [`decode_records`] on the body; the whole-file fuzz entry point.
pub fn decode_file(file: &[u8]) -> Result<(Vec<Record>, Scan), HeaderError> {
    match check_header(file, &KIND)? {
        Header::Incomplete => Ok((Vec::new(), Scan::default())),
        Header::Valid => Ok(decode_records(file.get(HEADER_LEN..).unwrap_or_default())),
        Header::Version(found) => Err(HeaderError::UnsupportedVersion {
            kind: KIND.name,
            found,
            supported: MAGIC[HEADER_LEN - 1],
        }),
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
            assert_eq!(r.encode().len(), RECORD_LEN);
            let (got, s) = decode_records(&r.encode());
            assert_eq!((got, s.records), (vec![r], 1));
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        for r in samples() {
            let raw = r.encode();
            for bit in 0..RECORD_LEN * 8 {
                let mut bad = raw.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(decode_records(&bad).1.records, 0, "bit {bit} of {r:?}");
            }
        }
        assert_eq!(decode_records(&[0u8; RECORD_LEN]).1.records, 0);
    }

    #[test]
    fn unknown_kind_with_valid_frame_is_rejected() {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = 9;
        let mut raw = Vec::new();
        frame::encode(&mut raw, &payload);
        assert_eq!(decode_records(&raw).1.records, 0);
    }

    #[test]
    fn a_damaged_middle_record_is_reported_and_the_rest_decoded() {
        let recs = samples();
        let mut body: Vec<u8> = recs.iter().flat_map(|r| r.encode()).collect();
        body[RECORD_LEN + 3] ^= 0xff; // damage record 1 of 4
        let (got, s) = decode_records(&body);
        assert_eq!(got, vec![recs[0], recs[2], recs[3]]);
        assert_eq!(s.first_damage(), Some(RECORD_LEN));
        assert_eq!(s.damaged_bytes(), RECORD_LEN);
    }

    #[test]
    fn version_1_bodies_decode() {
        let recs = samples();
        let mut body = Vec::new();
        for r in &recs {
            body.extend_from_slice(&r.encode_wire());
        }
        body[V1_RECORD_LEN + 2] ^= 1;
        body.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode_v1(&body), vec![recs[0], recs[2], recs[3]]);
    }

    #[test]
    fn header_states() {
        assert_eq!(check_header(b"", &KIND), Ok(Header::Incomplete));
        assert_eq!(check_header(b"PCRV", &KIND), Ok(Header::Incomplete));
        assert_eq!(check_header(&MAGIC, &KIND), Ok(Header::Valid));
        assert_eq!(check_header(b"PCRVLOG\x01", &KIND), Ok(Header::Version(1)));
        assert_eq!(
            check_header(b"PCRX", &KIND),
            Err(HeaderError::NotA("revocation log"))
        );
        assert_eq!(
            check_header(b"{\"hello\": 1}", &KIND),
            Err(HeaderError::NotA("revocation log"))
        );
        assert!(decode_file(b"PCRVLOG\x07").is_err());
    }
}
