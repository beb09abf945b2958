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
//! Families live in the same store as the revocations ([`crate::signin::sessions_for`]
//! picks the one that matches `[revocation] store`), so they survive restarts and, in
//! cluster mode, every instance sees the same ones:
//!
//! | store | sessions | file |
//! | --- | --- | --- |
//! | `"memory"` | [`MemorySessions`]: process memory, gone on restart | this one |
//! | a file path | [`JournalSessions`]: the [`Index`] below, rebuilt at start-up from a journal beside the revocation log, every change fsynced before it is answered | `journal.rs` |
//! | `redis://...` | [`RedisSessions`]: keys in the shared Redis, each operation one Lua script | `cluster.rs` |
//!
//! The ending of a family returns the access tokens to revoke; the caller revokes them
//! through the revocation service, which is durable and cluster-wide already.

mod cluster;
mod journal;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::ids::Key;

pub use cluster::RedisSessions;
pub use journal::{journal_path, JournalSessions, Loaded};
/// The journal's record scanner, for the fuzz target (`fuzz/fuzz_targets/session_journal.rs`).
pub use journal::{scan_only as scan_journal, Scan as JournalScan};

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

/// A live session family as the admin API lists it (never a refresh token or digest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// The family id (hex): names the session, grants nothing.
    pub id: String,
    /// When the session started (unix seconds), where the store keeps it (Redis does).
    pub started: Option<u64>,
    /// When its current refresh token expires (unix seconds).
    pub expires: u64,
    /// Access tokens issued in it that have not expired.
    pub access_tokens: usize,
}

/// Why a refresh token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// Unknown, expired, or its family already ended.
    Invalid,
    /// Already spent: the family was ended; these access tokens must be revoked.
    Reused(Vec<Issued>),
}

/// The store could not record (or read) a change: nothing was issued or ended, the
/// endpoint answers 503 (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct SessionError(pub String);

/// What a [`SessionStore`] method returns: a boxed future, so the trait stays usable as
/// `dyn SessionStore` (one store type is picked at start-up from the config).
pub type SessionFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SessionError>> + Send + 'a>>;

/// Where families live. Each method is atomic with respect to the others (on every instance
/// sharing the store) and resolves only once its change is durable; each returns the access
/// tokens that must now be revoked.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Record a new family for `s.user`. With `max_sessions = Some(n)`, the user's oldest
    /// families end so that at most `n` remain including the new one.
    fn start(
        &self,
        s: NewSession,
        max_sessions: Option<usize>,
        now: u64,
    ) -> SessionFuture<'_, Vec<Issued>>;

    /// Spend `old` and record `next` (with the access token issued beside it) in its family.
    /// The inner result gives the family's user, or why the token was refused.
    fn rotate(
        &self,
        old: &RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
        now: u64,
    ) -> SessionFuture<'_, Result<String, RefreshError>>;

    /// End the family in which the access token `key` of `user` was issued.
    fn end_by_access(&self, user: &str, key: &Key, now: u64) -> SessionFuture<'_, Vec<Issued>>;

    /// End every family of `user`.
    fn end_all(&self, user: &str, now: u64) -> SessionFuture<'_, Vec<Issued>>;

    /// End the family in which the refresh token `token` was issued (current or spent):
    /// a DPoP-bound refresh token presented without a proof by its key.
    fn end_by_refresh(&self, token: &RefreshDigest, now: u64) -> SessionFuture<'_, Vec<Issued>>;

    /// The live families of `user`, oldest first (changes nothing).
    fn list(&self, user: &str, now: u64) -> SessionFuture<'_, Vec<SessionInfo>>;
}

/// One state change of the [`Index`]: what the journal records and replays. Applying a
/// change is idempotent and a change that no longer fits the state is a no-op (a rotation
/// whose family moved on, a start whose family exists), so replaying a suffix of the
/// history over a state that already holds it changes nothing; compaction relies on that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A login started family `id`.
    Start {
        id: FamilyId,
        user: String,
        access: Issued,
        refresh: RefreshDigest,
        refresh_exp: u64,
    },
    /// `old` (valid until `old_exp`) was spent; `next` is the family's current token.
    Rotate {
        id: FamilyId,
        old: RefreshDigest,
        old_exp: u64,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
    },
    /// The family ended (reuse, logout, session limit, expiry).
    End { id: FamilyId },
    /// Compaction snapshot: a whole live family.
    Family {
        id: FamilyId,
        user: String,
        current: RefreshDigest,
        current_exp: u64,
        access: Vec<Issued>,
    },
    /// Compaction snapshot: a spent token kept for reuse detection.
    Spent {
        digest: RefreshDigest,
        id: FamilyId,
        until: u64,
    },
}

/// A store operation, as [`Index::execute`] runs it.
#[derive(Debug)]
pub(crate) enum Op {
    Start(NewSession, Option<usize>),
    Rotate {
        old: RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
    },
    EndByAccess(String, Key),
    EndAll(String),
    EndByRefresh(RefreshDigest),
}

/// What an [`Op`] answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ended(Vec<Issued>),
    Rotated(Result<String, RefreshError>),
}

impl Outcome {
    fn ended(self) -> Vec<Issued> {
        match self {
            Outcome::Ended(v) => v,
            Outcome::Rotated(_) => Vec::new(),
        }
    }

    fn rotated(self) -> Result<String, RefreshError> {
        match self {
            Outcome::Rotated(r) => r,
            Outcome::Ended(_) => Err(RefreshError::Invalid),
        }
    }
}

#[derive(Debug, Clone)]
struct Family {
    user: String,
    /// Access tokens issued in this family that may not have expired yet.
    access: Vec<Issued>,
    /// The only refresh token of the family that may be spent.
    current: RefreshDigest,
    current_exp: u64,
}

#[derive(Debug, Clone, Copy)]
struct Spent {
    family: FamilyId,
    /// Kept (for reuse detection) as long as the token itself would have been valid.
    until: u64,
}

/// Every family and spent token, in memory: the whole state of [`MemorySessions`] and of
/// [`JournalSessions`] (which rebuilds it from its journal). Operations decide on the
/// state, then change it only through [`Change`]s, so the journal can replay exactly what
/// happened.
#[derive(Debug, Default)]
pub(crate) struct Index {
    families: HashMap<FamilyId, Family>,
    /// Current refresh token -> its family.
    current: HashMap<RefreshDigest, FamilyId>,
    /// Spent refresh tokens, for reuse detection.
    spent: HashMap<RefreshDigest, Spent>,
    /// A user's families, oldest first.
    by_user: HashMap<String, Vec<FamilyId>>,
    ops: u64,
}

impl Index {
    /// Apply one change (see [`Change`] for why each is a no-op where it no longer fits).
    pub(crate) fn apply(&mut self, change: &Change) {
        match change {
            Change::Start {
                id,
                user,
                access,
                refresh,
                refresh_exp,
            } => {
                if !self.families.contains_key(id) {
                    self.insert(*id, user.clone(), *refresh, *refresh_exp, vec![*access]);
                }
            }
            Change::Rotate {
                id,
                old,
                old_exp,
                next,
                next_exp,
                access,
            } => {
                self.spent.insert(
                    *old,
                    Spent {
                        family: *id,
                        until: *old_exp,
                    },
                );
                let Some(f) = self.families.get_mut(id).filter(|f| f.current == *old) else {
                    return;
                };
                f.current = *next;
                f.current_exp = *next_exp;
                if !f.access.contains(access) {
                    f.access.push(*access);
                }
                self.current.remove(old);
                self.current.insert(*next, *id);
            }
            Change::End { id } => {
                self.end(id);
            }
            Change::Family {
                id,
                user,
                current,
                current_exp,
                access,
            } => {
                if !self.families.contains_key(id) {
                    self.insert(*id, user.clone(), *current, *current_exp, access.clone());
                }
            }
            Change::Spent { digest, id, until } => {
                self.spent.insert(
                    *digest,
                    Spent {
                        family: *id,
                        until: *until,
                    },
                );
            }
        }
    }

    fn insert(
        &mut self,
        id: FamilyId,
        user: String,
        current: RefreshDigest,
        current_exp: u64,
        access: Vec<Issued>,
    ) {
        self.current.insert(current, id);
        self.by_user.entry(user.clone()).or_default().push(id);
        self.families.insert(
            id,
            Family {
                user,
                access,
                current,
                current_exp,
            },
        );
    }

    /// Remove a family; returns its access tokens (all of them, expired or not).
    fn end(&mut self, id: &FamilyId) -> Vec<Issued> {
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
        f.access
    }

    /// The access tokens of family `id` still worth revoking at `now`.
    fn live_access(&self, id: &FamilyId, now: u64) -> Vec<Issued> {
        self.families.get(id).map_or_else(Vec::new, |f| {
            f.access.iter().filter(|a| a.exp >= now).copied().collect()
        })
    }

    /// Drop what has expired at `now`: families whose refresh token lapsed (nothing can
    /// continue them), spent tokens past their lifetime, access tokens past theirs. Not
    /// journalled: a replay at a later time drops the same things and more.
    pub(crate) fn sweep(&mut self, now: u64) {
        self.spent.retain(|_, s| s.until >= now);
        let dead: Vec<FamilyId> = self
            .families
            .iter()
            .filter(|(_, f)| f.current_exp < now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.end(&id);
        }
        for f in self.families.values_mut() {
            f.access.retain(|a| a.exp >= now);
        }
    }

    /// [`Index::sweep`] once every 1024 operations (amortised O(1)).
    fn maybe_sweep(&mut self, now: u64) {
        self.ops += 1;
        if self.ops % 1024 == 0 {
            self.sweep(now);
        }
    }

    /// Run `op`: decide on the current state, apply the resulting changes, and return the
    /// answer with the changes (for the journal).
    pub(crate) fn execute(&mut self, op: Op, now: u64) -> (Outcome, Vec<Change>) {
        self.maybe_sweep(now);
        let mut changes = Vec::new();
        let outcome = match op {
            Op::Start(s, max_sessions) => {
                let mut ended = Vec::new();
                if let Some(max) = max_sessions {
                    let existing = self.by_user.get(&s.user).cloned().unwrap_or_default();
                    let excess = existing.len().saturating_sub(max.saturating_sub(1));
                    for old in &existing[..excess] {
                        ended.extend(self.live_access(old, now));
                        changes.push(Change::End { id: *old });
                    }
                }
                let mut id = [0u8; 16];
                rand::fill(&mut id);
                changes.push(Change::Start {
                    id,
                    user: s.user,
                    access: s.access,
                    refresh: s.refresh,
                    refresh_exp: s.refresh_exp,
                });
                Outcome::Ended(ended)
            }
            Op::Rotate {
                old,
                next,
                next_exp,
                access,
            } => Outcome::Rotated(self.plan_rotate(old, next, next_exp, access, now, &mut changes)),
            Op::EndByAccess(user, key) => {
                let found = self.by_user.get(&user).and_then(|ids| {
                    ids.iter()
                        .find(|id| {
                            self.families
                                .get(*id)
                                .is_some_and(|f| f.access.iter().any(|a| a.key == key))
                        })
                        .copied()
                });
                let mut ended = Vec::new();
                if let Some(id) = found {
                    ended = self.live_access(&id, now);
                    changes.push(Change::End { id });
                }
                Outcome::Ended(ended)
            }
            Op::EndByRefresh(digest) => {
                let id = self.current.get(&digest).copied().or_else(|| {
                    self.spent
                        .get(&digest)
                        .filter(|s| s.until >= now)
                        .map(|s| s.family)
                });
                let mut ended = Vec::new();
                if let Some(id) = id.filter(|id| self.families.contains_key(id)) {
                    ended = self.live_access(&id, now);
                    changes.push(Change::End { id });
                }
                Outcome::Ended(ended)
            }
            Op::EndAll(user) => {
                let ids = self.by_user.get(&user).cloned().unwrap_or_default();
                let mut ended = Vec::new();
                for id in ids {
                    ended.extend(self.live_access(&id, now));
                    changes.push(Change::End { id });
                }
                Outcome::Ended(ended)
            }
        };
        for c in &changes {
            self.apply(c);
        }
        (outcome, changes)
    }

    fn plan_rotate(
        &self,
        old: RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
        now: u64,
        changes: &mut Vec<Change>,
    ) -> Result<String, RefreshError> {
        if let Some(spent) = self.spent.get(&old).filter(|s| s.until >= now) {
            let id = spent.family;
            let ended = self.live_access(&id, now);
            if self.families.contains_key(&id) {
                changes.push(Change::End { id });
            }
            return Err(RefreshError::Reused(ended));
        }
        let Some(id) = self.current.get(&old).copied() else {
            return Err(RefreshError::Invalid);
        };
        let Some(f) = self.families.get(&id) else {
            return Err(RefreshError::Invalid);
        };
        if f.current_exp < now {
            changes.push(Change::End { id });
            return Err(RefreshError::Invalid);
        }
        changes.push(Change::Rotate {
            id,
            old,
            old_exp: f.current_exp,
            next,
            next_exp,
            access,
        });
        Ok(f.user.clone())
    }

    /// The state as changes that rebuild it (compaction), users' families oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.families.len() + self.spent.len());
        for ids in self.by_user.values() {
            for id in ids {
                if let Some(f) = self.families.get(id) {
                    out.push(Change::Family {
                        id: *id,
                        user: f.user.clone(),
                        current: f.current,
                        current_exp: f.current_exp,
                        access: f.access.clone(),
                    });
                }
            }
        }
        for (digest, s) in &self.spent {
            out.push(Change::Spent {
                digest: *digest,
                id: s.family,
                until: s.until,
            });
        }
        out
    }

    /// The live families of `user`, oldest first.
    pub(crate) fn list(&self, user: &str, now: u64) -> Vec<SessionInfo> {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let f = self.families.get(id).filter(|f| f.current_exp >= now)?;
                Some(SessionInfo {
                    id: crate::hex::encode(id),
                    started: None,
                    expires: f.current_exp,
                    access_tokens: f.access.iter().filter(|a| a.exp >= now).count(),
                })
            })
            .collect()
    }

    /// Families and spent tokens held, for sizing compaction.
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.families.len(), self.spent.len())
    }
}

/// Families in process memory only (`[revocation] store = "memory"`): lost on restart.
#[derive(Debug, Default)]
pub struct MemorySessions {
    index: Mutex<Index>,
}

impl IndexStore for MemorySessions {
    fn run(&self, op: Op, now: u64) -> SessionFuture<'_, Outcome> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let out = index.execute(op, now).0;
        Box::pin(std::future::ready(Ok(out)))
    }

    fn list(&self, user: &str, now: u64) -> Vec<SessionInfo> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.list(user, now)
    }
}

/// A store that keeps an [`Index`] of its own (in memory, or journalled first) and differs
/// from another only in how it runs one [`Op`]; the four [`SessionStore`] calls translate
/// into ops the same way for all of them. (The Redis store runs scripts instead.)
pub(crate) trait IndexStore: Send + Sync + std::fmt::Debug {
    /// Apply `op` to the index; resolves once the change is durable.
    fn run(&self, op: Op, now: u64) -> SessionFuture<'_, Outcome>;

    /// Read the index: the live families of `user`.
    fn list(&self, user: &str, now: u64) -> Vec<SessionInfo>;
}

impl<T: IndexStore> SessionStore for T {
    fn start(
        &self,
        s: NewSession,
        max_sessions: Option<usize>,
        now: u64,
    ) -> SessionFuture<'_, Vec<Issued>> {
        let run = self.run(Op::Start(s, max_sessions), now);
        Box::pin(async move { run.await.map(Outcome::ended) })
    }

    fn rotate(
        &self,
        old: &RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
        now: u64,
    ) -> SessionFuture<'_, Result<String, RefreshError>> {
        let op = Op::Rotate {
            old: *old,
            next,
            next_exp,
            access,
        };
        let run = self.run(op, now);
        Box::pin(async move { run.await.map(Outcome::rotated) })
    }

    fn end_by_access(&self, user: &str, key: &Key, now: u64) -> SessionFuture<'_, Vec<Issued>> {
        let run = self.run(Op::EndByAccess(user.to_owned(), *key), now);
        Box::pin(async move { run.await.map(Outcome::ended) })
    }

    fn end_all(&self, user: &str, now: u64) -> SessionFuture<'_, Vec<Issued>> {
        let run = self.run(Op::EndAll(user.to_owned()), now);
        Box::pin(async move { run.await.map(Outcome::ended) })
    }

    fn end_by_refresh(&self, token: &RefreshDigest, now: u64) -> SessionFuture<'_, Vec<Issued>> {
        let run = self.run(Op::EndByRefresh(*token), now);
        Box::pin(async move { run.await.map(Outcome::ended) })
    }

    fn list(&self, user: &str, now: u64) -> SessionFuture<'_, Vec<SessionInfo>> {
        Box::pin(std::future::ready(Ok(IndexStore::list(self, user, now))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const NOW: u64 = 1_000_000;

    pub(crate) fn issued(n: u8) -> Issued {
        Issued {
            key: [n; 16],
            exp: NOW + 900,
        }
    }

    pub(crate) fn session(user: &str, n: u8) -> NewSession {
        NewSession {
            user: user.into(),
            access: issued(n),
            refresh: [n; 32],
            refresh_exp: NOW + 3600,
        }
    }

    pub(crate) fn rotate(n: u8, next: u8) -> Op {
        Op::Rotate {
            old: [n; 32],
            next: [next; 32],
            next_exp: NOW + 3600,
            access: issued(next),
        }
    }

    fn run(i: &mut Index, op: Op, now: u64) -> Outcome {
        i.execute(op, now).0
    }

    #[test]
    fn single_session_policy_ends_the_previous_family() {
        let s = &mut Index::default();
        assert_eq!(
            run(s, Op::Start(session("alice", 1), Some(1)), NOW),
            Outcome::Ended(vec![])
        );
        run(s, Op::Start(session("bob", 2), Some(1)), NOW);
        assert_eq!(
            run(s, Op::Start(session("alice", 3), Some(1)), NOW),
            Outcome::Ended(vec![issued(1)])
        );
        // The ended family's refresh token no longer works.
        assert_eq!(
            run(s, rotate(1, 9), NOW),
            Outcome::Rotated(Err(RefreshError::Invalid))
        );
    }

    #[test]
    fn ending_by_refresh_token_ends_its_family_whether_current_or_spent() {
        let s = &mut Index::default();
        run(s, Op::Start(session("alice", 1), None), NOW);
        run(s, Op::Start(session("alice", 5), None), NOW);
        assert_eq!(
            run(s, Op::EndByRefresh([1; 32]), NOW),
            Outcome::Ended(vec![issued(1)])
        );
        assert_eq!(s.list("alice", NOW).len(), 1, "the other family lives on");
        // A spent token names its family too.
        run(s, rotate(5, 6), NOW);
        assert_eq!(
            run(s, Op::EndByRefresh([5; 32]), NOW),
            Outcome::Ended(vec![issued(5), issued(6)])
        );
        assert!(s.list("alice", NOW).is_empty());
        assert_eq!(
            run(s, Op::EndByRefresh([9; 32]), NOW),
            Outcome::Ended(vec![])
        );
    }

    #[test]
    fn unlimited_sessions_end_nothing() {
        let s = &mut Index::default();
        for n in 1..5 {
            assert_eq!(
                run(s, Op::Start(session("alice", n), None), NOW),
                Outcome::Ended(vec![])
            );
        }
        assert_eq!(run(s, Op::EndAll("alice".into()), NOW).ended().len(), 4);
    }

    #[test]
    fn rotation_then_reuse_ends_the_family_with_every_access_token() {
        let s = &mut Index::default();
        run(s, Op::Start(session("alice", 1), None), NOW);
        assert_eq!(
            run(s, rotate(1, 2), NOW),
            Outcome::Rotated(Ok("alice".into()))
        );
        assert_eq!(
            run(s, rotate(1, 3), NOW),
            Outcome::Rotated(Err(RefreshError::Reused(vec![issued(1), issued(2)])))
        );
        // The current token died with the family.
        assert_eq!(
            run(s, rotate(2, 4), NOW),
            Outcome::Rotated(Err(RefreshError::Invalid))
        );
    }

    #[test]
    fn expired_refresh_token_is_invalid() {
        let s = &mut Index::default();
        run(s, Op::Start(session("alice", 1), None), NOW);
        assert_eq!(
            run(s, rotate(1, 2), NOW + 3601),
            Outcome::Rotated(Err(RefreshError::Invalid))
        );
    }

    #[test]
    fn logout_ends_only_the_family_of_that_token() {
        let s = &mut Index::default();
        run(s, Op::Start(session("alice", 1), None), NOW);
        run(s, Op::Start(session("alice", 2), None), NOW);
        assert_eq!(
            run(s, Op::EndByAccess("alice".into(), [1; 16]), NOW),
            Outcome::Ended(vec![issued(1)])
        );
        assert_eq!(
            run(s, Op::EndByAccess("bob".into(), [2; 16]), NOW),
            Outcome::Ended(vec![])
        );
        assert_eq!(
            run(s, Op::EndAll("alice".into()), NOW),
            Outcome::Ended(vec![issued(2)])
        );
    }

    /// Compaction replays the changes appended while it ran over a snapshot that may
    /// already hold them: that must give the same state as the plain history.
    #[test]
    fn replaying_any_suffix_over_the_state_changes_nothing() {
        let mut live = Index::default();
        let mut history = Vec::new();
        let mut step = |op, live: &mut Index| history.extend(live.execute(op, NOW).1);
        step(Op::Start(session("alice", 1), None), &mut live);
        step(Op::Start(session("alice", 2), Some(2)), &mut live);
        step(rotate(1, 3), &mut live);
        step(rotate(3, 4), &mut live);
        step(Op::Start(session("bob", 5), None), &mut live);
        step(rotate(1, 6), &mut live); // reuse: alice's first family ends
        step(Op::Start(session("alice", 7), Some(2)), &mut live);
        step(Op::EndByAccess("bob".into(), [5; 16]), &mut live);
        let want = state(&live);
        // A snapshot taken after `m` changes, then every change from `k <= m` on.
        for m in 0..=history.len() {
            let mut at_m = Index::default();
            for c in &history[..m] {
                at_m.apply(c);
            }
            for k in 0..=m {
                let mut replayed = Index::default();
                for c in at_m.snapshot() {
                    replayed.apply(&c);
                }
                for c in &history[k..] {
                    replayed.apply(c);
                }
                assert_eq!(state(&replayed), want, "snapshot at {m}, suffix from {k}");
            }
        }
    }

    /// A comparable view of an index.
    pub(crate) fn state(i: &Index) -> Vec<String> {
        let mut out: Vec<String> = i
            .families
            .iter()
            .map(|(id, f)| {
                format!(
                    "fam {id:?} {} {:?} {} {:?}",
                    f.user, f.current, f.current_exp, f.access
                )
            })
            .chain(
                i.spent
                    .iter()
                    .map(|(d, s)| format!("spent {d:?} {:?} {}", s.family, s.until)),
            )
            .chain(i.current.iter().map(|(d, id)| format!("cur {d:?} {id:?}")))
            .collect();
        out.extend(
            i.by_user
                .iter()
                .map(|(user, ids)| format!("user {user} {ids:?}")),
        );
        out.sort();
        out
    }
}
