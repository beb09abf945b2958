//! The in-memory revocation dictionary consulted on every request: revoked token ids and
//! revoked subjects, keyed by a 16-byte SHA-256 prefix.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, Hasher};

use dashmap::DashMap;
use serde::Serialize;

pub use crate::ids::{digest, key_from_hex, key_to_hex, Key};

/// A revoked subject: every token of that `sub` issued before `revoked_before` is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectEntry {
    /// Unix seconds; tokens with `iat < revoked_before` are revoked, later ones are spared.
    pub revoked_before: u64,
    /// Unix seconds after which the entry can be forgotten: `revoked_before` plus the longest
    /// token lifetime, since no token issued before `revoked_before` is valid past that.
    pub expires: u64,
}

/// A [`SubjectEntry`] as the map holds it: two u32 seconds instead of two u64 keep a subject
/// entry the size of a token entry (16-byte key + 8 bytes), inside the 64 bytes per entry the
/// dictionary is allowed at a million entries. A time past u32 (the year 2106) is stored as
/// u32::MAX and read back as "forever", which revokes more, never less.
#[derive(Debug, Clone, Copy)]
struct PackedSubject {
    revoked_before: u32,
    expires: u32,
}

fn pack(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

fn unpack(t: u32) -> u64 {
    if t == u32::MAX {
        u64::MAX
    } else {
        u64::from(t)
    }
}

impl PackedSubject {
    fn new(e: SubjectEntry) -> Self {
        PackedSubject {
            revoked_before: pack(e.revoked_before),
            expires: pack(e.expires),
        }
    }

    fn get(self) -> SubjectEntry {
        SubjectEntry {
            revoked_before: unpack(self.revoked_before),
            expires: unpack(self.expires),
        }
    }
}

/// Why [`Dictionary::is_revoked`] rejected a token (for the log line, never the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// This token id was revoked.
    Token,
    /// The token's subject was revoked after the token was issued.
    Subject,
    /// The token's subject was revoked and the token has no `iat` to prove it is newer.
    SubjectNoIat,
}

/// Which map [`Dictionary::page`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token,
    Subject,
}

/// One revocation, as listed by [`Dictionary::page`] and written by compaction. Listed
/// with the admin API's one `kind` vocabulary: a token entry is `jti` (the audit trail, when
/// it knows the revoke, says `token` for a whole-token one), a subject entry `sub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Entry {
    #[serde(rename = "jti")]
    Token {
        #[serde(serialize_with = "serialize_key")]
        key: Key,
        exp: u64,
    },
    #[serde(rename = "sub")]
    Subject {
        #[serde(serialize_with = "serialize_key")]
        key: Key,
        revoked_before: u64,
        expires: u64,
    },
}

impl Entry {
    pub fn key(&self) -> Key {
        match self {
            Entry::Token { key, .. } | Entry::Subject { key, .. } => *key,
        }
    }
}

fn serialize_key<S: serde::Serializer>(key: &Key, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key_to_hex(key))
}

/// Hashes a [`Key`] by taking 8 of its bytes.
///
/// Keys are already SHA-256 output, so any 8 bytes are uniformly distributed and an attacker
/// choosing `jti` values cannot aim at one bucket without breaking SHA-256; running SipHash
/// over them again would only cost time on the request path. This is a bucket selector,
/// not cryptography.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 16]` hashes as a length prefix (`write_usize`, which defaults to `write`)
        // followed by one `write` of the 16 bytes; mixing the constant prefix in keeps every
        // bit of the result uniform.
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`KeyHasher`]s; the dictionary's maps use it instead of `RandomState`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildKeyHasher;

impl BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

/// Shards per map. More shards than dashmap's default (4 x cores) so that `sweep`, which
/// write-locks one shard at a time, holds up readers of 1/64 of the keys for 1/64 of its
/// run; the cost is a few bytes of lock per shard.
const SHARDS: usize = 64;

/// Revoked tokens and subjects, shared by all request tasks (`Arc<Dictionary>`).
///
/// Lookups take a shard read lock for the duration of one hash probe, so readers never wait
/// for each other and writers (admin calls, sweeps) hold up only one shard's readers at a time.
pub struct Dictionary {
    /// Token key -> the token's `exp` (unix seconds).
    tokens: DashMap<Key, u64, BuildKeyHasher>,
    subjects: DashMap<Key, PackedSubject, BuildKeyHasher>,
}

impl Default for Dictionary {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("tokens", &self.tokens.len())
            .field("subjects", &self.subjects.len())
            .finish()
    }
}

impl Dictionary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pre-sized, so replaying a large log does not rehash on the way up.
    pub fn with_capacity(tokens: usize, subjects: usize) -> Self {
        Dictionary {
            tokens: DashMap::with_capacity_and_hasher_and_shard_amount(
                tokens,
                BuildKeyHasher,
                SHARDS,
            ),
            subjects: DashMap::with_capacity_and_hasher_and_shard_amount(
                subjects,
                BuildKeyHasher,
                SHARDS,
            ),
        }
    }

    /// Revokes one token until `exp`. Revoking an already revoked token keeps the later
    /// `exp`: the entry only ever lives longer, so replaying records twice is harmless.
    pub fn revoke_token(&self, key: Key, exp: u64) {
        self.tokens
            .entry(key)
            .and_modify(|e| *e = (*e).max(exp))
            .or_insert(exp);
    }

    /// Returns whether the token was revoked.
    pub fn unrevoke_token(&self, key: Key) -> bool {
        self.tokens.remove(&key).is_some()
    }

    /// Revokes every token of a subject issued before `revoked_before`. A second revocation
    /// of the same subject keeps the later of each field, so it widens, never narrows.
    pub fn revoke_subject(&self, key: Key, revoked_before: u64, expires: u64) {
        self.subjects
            .entry(key)
            .and_modify(|packed| {
                let e = packed.get();
                *packed = PackedSubject::new(SubjectEntry {
                    revoked_before: e.revoked_before.max(revoked_before),
                    expires: e.expires.max(expires),
                });
            })
            .or_insert(PackedSubject::new(SubjectEntry {
                revoked_before,
                expires,
            }));
    }

    /// Returns whether the subject was revoked.
    pub fn unrevoke_subject(&self, key: Key) -> bool {
        self.subjects.remove(&key).is_some()
    }

    /// Whether a token is revoked, and why. Two hash probes at most, no allocation.
    ///
    /// The token id is checked first, then the subject: a subject revocation covers the
    /// tokens with `iat < revoked_before`. **A token without `iat` whose subject is revoked
    /// counts as revoked** ([`Reason::SubjectNoIat`]): nothing proves it was issued after
    /// the revocation, so we fail closed. A token with `iat == revoked_before` is spared;
    /// callers revoking "everything up to now" should pass `now + 1` if tokens minted in
    /// the same second must die too.
    pub fn is_revoked(
        &self,
        token_key: Key,
        sub_key: Option<Key>,
        iat: Option<u64>,
    ) -> Option<Reason> {
        if self.tokens.contains_key(&token_key) {
            return Some(Reason::Token);
        }
        let sub_key = sub_key?;
        // Copy out of the guard at once so the shard lock is not held past the probe.
        let revoked_before = self
            .subjects
            .get(&sub_key)
            .map(|e| e.get().revoked_before)?;
        match iat {
            Some(iat) if iat >= revoked_before => None,
            Some(_) => Some(Reason::Subject),
            None => Some(Reason::SubjectNoIat),
        }
    }

    /// Is this token key revoked (whatever its expiry)?
    pub fn has_token(&self, key: &Key) -> bool {
        self.tokens.contains_key(key)
    }

    /// Is this subject key revoked?
    pub fn has_subject(&self, key: &Key) -> bool {
        self.subjects.contains_key(key)
    }

    pub fn len_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn len_subjects(&self) -> usize {
        self.subjects.len()
    }

    /// Drops entries with `exp + leeway < now` (subjects: `expires + leeway < now`) and
    /// returns how many went. `leeway` must be at least the validator's clock-skew
    /// allowance, or a revoked token could become acceptable again inside that window.
    ///
    /// Works one shard at a time, so a reader waits at most for one shard's pass.
    pub fn sweep(&self, now: u64, leeway: u64) -> usize {
        let mut dropped = 0usize;
        self.tokens.retain(|_, exp| {
            let keep = !expired(*exp, now, leeway);
            dropped += usize::from(!keep);
            keep
        });
        self.subjects.retain(|_, e| {
            let keep = !expired(e.get().expires, now, leeway);
            dropped += usize::from(!keep);
            keep
        });
        dropped
    }

    /// Up to `limit` entries of one kind with keys strictly greater than `after`, in key
    /// order; pass the last key of a page as `after` to get the next one.
    ///
    /// The maps are unordered, so each call scans the whole map keeping the `limit`
    /// smallest qualifying keys in a heap: O(n log limit) time, O(limit) memory. Fine for an
    /// admin listing, not for the request path. Entries added or removed while paging may
    /// or may not show up; nothing present throughout is skipped or listed twice.
    pub fn page(&self, kind: Kind, after: Option<Key>, limit: usize) -> Vec<Entry> {
        if limit == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<ByKey> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        let mut offer = |entry: Entry| {
            let key = entry.key();
            if after.is_some_and(|a| key <= a) {
                return;
            }
            if heap.len() < limit {
                heap.push(ByKey(entry));
            } else if heap.peek().is_some_and(|top| key < top.0.key()) {
                heap.pop();
                heap.push(ByKey(entry));
            }
        };
        match kind {
            Kind::Token => self.tokens.iter().for_each(|r| {
                offer(Entry::Token {
                    key: *r.key(),
                    exp: *r.value(),
                })
            }),
            Kind::Subject => self.subjects.iter().for_each(|r| {
                let e = r.value().get();
                offer(Entry::Subject {
                    key: *r.key(),
                    revoked_before: e.revoked_before,
                    expires: e.expires,
                })
            }),
        }
        heap.into_sorted_vec().into_iter().map(|e| e.0).collect()
    }

    /// Calls `f` with every entry not yet expired at `now` (with `leeway`), tokens first.
    /// Holds one shard read lock at a time, so `f` must not write to this dictionary.
    pub fn for_each_live(&self, now: u64, leeway: u64, mut f: impl FnMut(Entry)) {
        for r in self.tokens.iter() {
            if !expired(*r.value(), now, leeway) {
                f(Entry::Token {
                    key: *r.key(),
                    exp: *r.value(),
                });
            }
        }
        for r in self.subjects.iter() {
            let e = r.value().get();
            if !expired(e.expires, now, leeway) {
                f(Entry::Subject {
                    key: *r.key(),
                    revoked_before: e.revoked_before,
                    expires: e.expires,
                });
            }
        }
    }
}

/// The one expiry rule shared by sweep, replay and compaction.
pub(crate) fn expired(exp: u64, now: u64, leeway: u64) -> bool {
    exp.saturating_add(leeway) < now
}

/// Orders entries by key alone, so the page heap keeps the smallest keys.
struct ByKey(Entry);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}
impl Eq for ByKey {}
impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key().cmp(&other.0.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn k(n: u32) -> Key {
        digest(&n.to_le_bytes())
    }

    #[test]
    fn digest_is_sha256_prefix() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 ...
        assert_eq!(
            key_to_hex(&digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223"
        );
        let key = digest(b"some-jti");
        assert_eq!(key_from_hex(&key_to_hex(&key)), Some(key));
        assert_eq!(key_from_hex(&key_to_hex(&key).to_uppercase()), Some(key));
        assert_eq!(key_from_hex("zz"), None);
        assert_eq!(key_from_hex(&"g".repeat(32)), None);
    }

    #[test]
    fn token_revoke_and_unrevoke() {
        let d = Dictionary::new();
        assert_eq!(d.is_revoked(k(1), None, Some(10)), None);
        d.revoke_token(k(1), 100);
        assert_eq!(d.is_revoked(k(1), None, Some(10)), Some(Reason::Token));
        assert_eq!(d.is_revoked(k(2), None, Some(10)), None);
        assert_eq!(d.len_tokens(), 1);
        assert!(d.unrevoke_token(k(1)));
        assert!(!d.unrevoke_token(k(1)));
        assert_eq!(d.is_revoked(k(1), None, Some(10)), None);
        assert_eq!(d.len_tokens(), 0);
    }

    #[test]
    fn revoking_twice_keeps_the_later_expiry() {
        let d = Dictionary::new();
        d.revoke_token(k(1), 100);
        d.revoke_token(k(1), 50);
        assert_eq!(
            d.page(Kind::Token, None, 10),
            vec![Entry::Token {
                key: k(1),
                exp: 100
            }]
        );
        d.revoke_subject(k(2), 40, 400);
        d.revoke_subject(k(2), 30, 500);
        assert_eq!(
            d.page(Kind::Subject, None, 10),
            vec![Entry::Subject {
                key: k(2),
                revoked_before: 40,
                expires: 500
            }]
        );
    }

    #[test]
    fn subject_revocation_spares_newer_tokens() {
        let d = Dictionary::new();
        let sub = k(7);
        d.revoke_subject(sub, 1000, 5000);
        assert_eq!(
            d.is_revoked(k(1), Some(sub), Some(999)),
            Some(Reason::Subject)
        );
        assert_eq!(d.is_revoked(k(1), Some(sub), Some(1000)), None);
        assert_eq!(d.is_revoked(k(1), Some(sub), Some(2000)), None);
        // Another subject is untouched.
        assert_eq!(d.is_revoked(k(1), Some(k(8)), Some(1)), None);
        // The token check wins even when the subject would spare it.
        d.revoke_token(k(1), 9999);
        assert_eq!(
            d.is_revoked(k(1), Some(sub), Some(2000)),
            Some(Reason::Token)
        );
        assert!(d.unrevoke_subject(sub));
        assert!(!d.unrevoke_subject(sub));
        assert_eq!(d.is_revoked(k(2), Some(sub), Some(1)), None);
    }

    #[test]
    fn token_without_iat_of_revoked_subject_is_revoked() {
        let d = Dictionary::new();
        d.revoke_subject(k(7), 1000, 5000);
        assert_eq!(
            d.is_revoked(k(1), Some(k(7)), None),
            Some(Reason::SubjectNoIat)
        );
        // No iat but an unrevoked subject: fine.
        assert_eq!(d.is_revoked(k(1), Some(k(8)), None), None);
        assert_eq!(d.is_revoked(k(1), None, None), None);
    }

    #[test]
    fn sweep_drops_only_expired() {
        let d = Dictionary::new();
        d.revoke_token(k(1), 100); // expired at now=200 even with leeway 50
        d.revoke_token(k(2), 150); // 150 + 50 == 200: not yet expired
        d.revoke_token(k(3), 300);
        d.revoke_subject(k(4), 10, 149); // expired
        d.revoke_subject(k(5), 10, 160); // kept
        assert_eq!(d.sweep(200, 50), 2);
        assert_eq!(d.is_revoked(k(1), None, None), None);
        assert_eq!(d.is_revoked(k(2), None, None), Some(Reason::Token));
        assert_eq!(d.is_revoked(k(3), None, None), Some(Reason::Token));
        assert_eq!(d.is_revoked(k(0), Some(k(4)), Some(1)), None);
        assert_eq!(
            d.is_revoked(k(0), Some(k(5)), Some(1)),
            Some(Reason::Subject)
        );
        assert_eq!((d.len_tokens(), d.len_subjects()), (2, 1));
        // Saturating: a huge exp never wraps into "expired".
        d.revoke_token(k(6), u64::MAX);
        assert_eq!(d.sweep(u64::MAX, u64::MAX), 0);
    }

    /// Subject times are held as u32 seconds: a time past 2106 must revoke more, never less.
    #[test]
    fn subject_times_past_u32_fail_closed() {
        let d = Dictionary::new();
        let far = u64::from(u32::MAX) + 1000;
        d.revoke_subject(k(1), far, far);
        // A token issued after u32::MAX but before the real revoked_before stays revoked.
        assert_eq!(
            d.is_revoked(k(0), Some(k(1)), Some(far - 1)),
            Some(Reason::Subject)
        );
        assert_eq!(
            d.sweep(far + 10, 0),
            0,
            "kept: expires reads back as forever"
        );
        // Ordinary times come back exactly.
        d.revoke_subject(k(2), 1_700_000_000, 1_700_086_400);
        let page = d.page(Kind::Subject, None, 10);
        assert!(page.contains(&Entry::Subject {
            key: k(2),
            revoked_before: 1_700_000_000,
            expires: 1_700_086_400,
        }));
    }

    #[test]
    fn page_cursor_walks_every_entry_once() {
        let d = Dictionary::new();
        for n in 0..1000 {
            d.revoke_token(k(n), u64::from(n));
        }
        for n in 0..37 {
            d.revoke_subject(k(100_000 + n), 1, 2);
        }
        for (kind, total) in [(Kind::Token, 1000), (Kind::Subject, 37)] {
            let mut seen = HashSet::new();
            let mut after = None;
            let mut last = None;
            loop {
                let page = d.page(kind, after, 7);
                assert!(page.len() <= 7);
                let Some(tail) = page.last() else { break };
                after = Some(tail.key());
                for e in &page {
                    // Strictly increasing across and within pages.
                    assert!(last < Some(e.key()));
                    last = Some(e.key());
                    assert!(seen.insert(e.key()), "listed twice");
                    assert_eq!(matches!(e, Entry::Token { .. }), kind == Kind::Token);
                }
            }
            assert_eq!(seen.len(), total);
        }
        assert!(d.page(Kind::Token, None, 0).is_empty());
    }

    #[test]
    fn for_each_live_skips_expired() {
        let d = Dictionary::new();
        d.revoke_token(k(1), 10);
        d.revoke_token(k(2), 1000);
        d.revoke_subject(k(3), 1, 10);
        d.revoke_subject(k(4), 1, 1000);
        let mut keys = Vec::new();
        d.for_each_live(500, 0, |e| keys.push(e.key()));
        keys.sort();
        let mut want = vec![k(2), k(4)];
        want.sort();
        assert_eq!(keys, want);
    }
}
