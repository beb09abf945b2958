//! Sign-in sessions: refresh tokens and the session families they belong to.
//!
//! A login starts a family. Each refresh spends the family's current refresh token and
//! issues the next one (rotation); presenting a token that was already spent means two
//! parties hold it, so the whole family ends (RFC 9700 section 4.14.2). A family also
//! remembers the `jti` of every access token issued in it that has not expired, so ending
//! the family (reuse, logout, single-session policy) can revoke them all through the
//! revocation dictionary.
//!
//! Refresh tokens are stored only as SHA-256 digests: a copy of the store does not let
//! anyone refresh.
//!
//! TODO(issue 5): the issue wants families persisted in the revocation store (embedded log
//! or Redis) so they survive restarts and are shared by a cluster. [`MemorySessions`] keeps
//! them in process memory only; a durable implementation goes behind [`SessionStore`]. The
//! revocations made when a family ends *are* durable and cluster-wide already.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::revocation::dict::Key;

/// SHA-256 of a refresh token as the client holds it.
pub type RefreshDigest = [u8; 32];

/// A family's id: 128 random bits.
pub type FamilyId = [u8; 16];

pub fn refresh_digest(token: &str) -> RefreshDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// An access token issued in a family: its revocation key (digest of its `jti`) and `exp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    pub key: Key,
    pub exp: u64,
}

/// A new session's tokens as the store records them.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user: String,
    pub access: Issued,
    pub refresh: RefreshDigest,
    pub refresh_exp: u64,
}

/// Why a refresh token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// Unknown, expired, or its family already ended.
    Invalid,
    /// Already spent: the family was ended; these access tokens must be revoked.
    Reused(Vec<Issued>),
}

/// Where families live. Every method runs under the store's own synchronisation; each
/// returns the access tokens that must now be revoked.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Record a new family for `s.user`. With `max_sessions = Some(n)`, the user's oldest
    /// families end so that at most `n` remain including the new one.
    fn start(&self, s: NewSession, max_sessions: Option<usize>, now: u64) -> Vec<Issued>;

    /// Spend `old` and record `next` (with the access token issued beside it) in its family.
    /// Returns the family's user.
    fn rotate(
        &self,
        old: &RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
        now: u64,
    ) -> Result<String, RefreshError>;

    /// End the family in which the access token `key` of `user` was issued.
    fn end_by_access(&self, user: &str, key: &Key, now: u64) -> Vec<Issued>;

    /// End every family of `user`.
    fn end_all(&self, user: &str, now: u64) -> Vec<Issued>;
}

#[derive(Debug)]
struct Family {
    user: String,
    /// Access tokens issued in this family that may not have expired yet.
    access: Vec<Issued>,
    /// The only refresh token of the family that may be spent.
    current: RefreshDigest,
    current_exp: u64,
}

#[derive(Debug)]
struct Spent {
    family: FamilyId,
    /// Kept (for reuse detection) as long as the token itself would have been valid.
    until: u64,
}

#[derive(Debug, Default)]
struct Inner {
    families: HashMap<FamilyId, Family>,
    /// Current refresh token -> its family.
    current: HashMap<RefreshDigest, FamilyId>,
    /// Spent refresh tokens, for reuse detection.
    spent: HashMap<RefreshDigest, Spent>,
    /// A user's families, oldest first.
    by_user: HashMap<String, Vec<FamilyId>>,
    ops: u64,
}

/// Families in process memory (see the module TODO).
#[derive(Debug, Default)]
pub struct MemorySessions {
    inner: Mutex<Inner>,
}

impl MemorySessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn end(&mut self, id: &FamilyId, now: u64) -> Vec<Issued> {
        let Some(f) = self.families.remove(id) else {
            return Vec::new();
        };
        self.current.remove(&f.current);
        if let Some(list) = self.by_user.get_mut(&f.user) {
            list.retain(|x| x != id);
            if list.is_empty() {
                self.by_user.remove(&f.user);
            }
        }
        f.access.into_iter().filter(|a| a.exp >= now).collect()
    }

    /// Drop what has expired, once every 1024 changes (amortised O(1)).
    fn maybe_sweep(&mut self, now: u64) {
        self.ops += 1;
        if self.ops % 1024 != 0 {
            return;
        }
        self.spent.retain(|_, s| s.until >= now);
        let dead: Vec<FamilyId> = self
            .families
            .iter()
            .filter(|(_, f)| f.current_exp < now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.end(&id, now);
        }
        for f in self.families.values_mut() {
            f.access.retain(|a| a.exp >= now);
        }
    }
}

impl SessionStore for MemorySessions {
    fn start(&self, s: NewSession, max_sessions: Option<usize>, now: u64) -> Vec<Issued> {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        let mut inner = self.lock();
        inner.maybe_sweep(now);
        let mut ended = Vec::new();
        if let Some(max) = max_sessions {
            let existing = inner.by_user.get(&s.user).cloned().unwrap_or_default();
            let keep = max.saturating_sub(1);
            if existing.len() > keep {
                for old in &existing[..existing.len() - keep] {
                    ended.extend(inner.end(old, now));
                }
            }
        }
        inner.current.insert(s.refresh, id);
        inner.by_user.entry(s.user.clone()).or_default().push(id);
        inner.families.insert(
            id,
            Family {
                user: s.user,
                access: vec![s.access],
                current: s.refresh,
                current_exp: s.refresh_exp,
            },
        );
        ended
    }

    fn rotate(
        &self,
        old: &RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
        now: u64,
    ) -> Result<String, RefreshError> {
        let mut inner = self.lock();
        inner.maybe_sweep(now);
        if let Some(spent) = inner.spent.get(old) {
            let family = spent.family;
            return Err(RefreshError::Reused(inner.end(&family, now)));
        }
        let Some(id) = inner.current.get(old).copied() else {
            return Err(RefreshError::Invalid);
        };
        let Some(f) = inner.families.get_mut(&id) else {
            return Err(RefreshError::Invalid);
        };
        if f.current_exp < now {
            inner.end(&id, now);
            return Err(RefreshError::Invalid);
        }
        let until = f.current_exp;
        f.current = next;
        f.current_exp = next_exp;
        f.access.retain(|a| a.exp >= now);
        f.access.push(access);
        let user = f.user.clone();
        inner.current.remove(old);
        inner.current.insert(next, id);
        inner.spent.insert(*old, Spent { family: id, until });
        Ok(user)
    }

    fn end_by_access(&self, user: &str, key: &Key, now: u64) -> Vec<Issued> {
        let mut inner = self.lock();
        let found = inner.by_user.get(user).and_then(|ids| {
            ids.iter()
                .find(|id| {
                    inner
                        .families
                        .get(*id)
                        .is_some_and(|f| f.access.iter().any(|a| &a.key == key))
                })
                .copied()
        });
        match found {
            Some(id) => inner.end(&id, now),
            None => Vec::new(),
        }
    }

    fn end_all(&self, user: &str, now: u64) -> Vec<Issued> {
        let mut inner = self.lock();
        let ids = inner.by_user.get(user).cloned().unwrap_or_default();
        ids.iter().flat_map(|id| inner.end(id, now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn issued(n: u8) -> Issued {
        Issued {
            key: [n; 16],
            exp: NOW + 900,
        }
    }

    fn session(user: &str, n: u8) -> NewSession {
        NewSession {
            user: user.into(),
            access: issued(n),
            refresh: [n; 32],
            refresh_exp: NOW + 3600,
        }
    }

    #[test]
    fn single_session_policy_ends_the_previous_family() {
        let s = MemorySessions::default();
        assert!(s.start(session("alice", 1), Some(1), NOW).is_empty());
        assert!(s.start(session("bob", 2), Some(1), NOW).is_empty());
        assert_eq!(s.start(session("alice", 3), Some(1), NOW), vec![issued(1)]);
        // The ended family's refresh token no longer works.
        assert_eq!(
            s.rotate(&[1; 32], [9; 32], NOW + 3600, issued(9), NOW),
            Err(RefreshError::Invalid)
        );
    }

    #[test]
    fn unlimited_sessions_end_nothing() {
        let s = MemorySessions::default();
        for n in 1..5 {
            assert!(s.start(session("alice", n), None, NOW).is_empty());
        }
        assert_eq!(s.end_all("alice", NOW).len(), 4);
    }

    #[test]
    fn rotation_then_reuse_ends_the_family_with_every_access_token() {
        let s = MemorySessions::default();
        s.start(session("alice", 1), None, NOW);
        assert_eq!(
            s.rotate(&[1; 32], [2; 32], NOW + 3600, issued(2), NOW)
                .unwrap(),
            "alice"
        );
        match s.rotate(&[1; 32], [3; 32], NOW + 3600, issued(3), NOW) {
            Err(RefreshError::Reused(ended)) => assert_eq!(ended, vec![issued(1), issued(2)]),
            other => panic!("{other:?}"),
        }
        // The current token died with the family.
        assert_eq!(
            s.rotate(&[2; 32], [4; 32], NOW + 3600, issued(4), NOW),
            Err(RefreshError::Invalid)
        );
    }

    #[test]
    fn expired_refresh_token_is_invalid() {
        let s = MemorySessions::default();
        s.start(session("alice", 1), None, NOW);
        assert_eq!(
            s.rotate(&[1; 32], [2; 32], NOW + 7200, issued(2), NOW + 3601),
            Err(RefreshError::Invalid)
        );
    }

    #[test]
    fn logout_ends_only_the_family_of_that_token() {
        let s = MemorySessions::default();
        s.start(session("alice", 1), None, NOW);
        s.start(session("alice", 2), None, NOW);
        assert_eq!(s.end_by_access("alice", &[1; 16], NOW), vec![issued(1)]);
        assert!(s.end_by_access("bob", &[2; 16], NOW).is_empty());
        assert_eq!(s.end_all("alice", NOW), vec![issued(2)]);
    }
}
