//! Revocation (placeholder until the durable store lands): the in-memory dictionary.

use dashmap::DashMap;

use crate::auth::jws::{Digest128, Verified};

#[derive(Debug, Default)]
pub struct Revocations {
    tokens: DashMap<Digest128, u64>,
    subjects: DashMap<Digest128, u64>,
}

impl Revocations {
    pub fn in_memory() -> Self {
        Self::default()
    }

    pub fn is_revoked(&self, v: &Verified) -> bool {
        if self.tokens.contains_key(&v.token_key) {
            return true;
        }
        match (v.sub_key, self.subjects.is_empty()) {
            (Some(k), false) => self
                .subjects
                .get(&k)
                .is_some_and(|before| v.iat.is_none_or(|iat| iat < *before)),
            _ => false,
        }
    }
}
