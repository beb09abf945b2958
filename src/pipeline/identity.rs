//! Identity headers: strip every client-supplied copy, then inject what a verified token says.
//!
//! This is the gateway's core promise to the upstream: a request that carries the user header
//! came through authentication, on every route, public ones included. Header names are
//! case-insensitive (RFC 9110 section 5.1) and hyper lower-cases them, so one name check
//! covers every casing; `HeaderMap::remove` drops every copy. Names that differ only by `_`
//! for `-` are stripped too: CGI-style stacks (WSGI, PHP, nginx with
//! `underscores_in_headers`) map both `x-user-id` and `x_user_id` to `HTTP_X_USER_ID`.

use http::header::HeaderName;
use http::HeaderMap;
use smallvec::SmallVec;

use crate::auth::jws::Verified;
use crate::config::Identity;

/// The header names a client may never set, precomputed from `[identity]`.
#[derive(Debug, Clone)]
pub struct Protected {
    names: Vec<HeaderName>,
    /// The same names with `-` replaced by `_`, for the underscore check.
    folded: Vec<String>,
}

impl Protected {
    pub fn new(identity: &Identity, extra: &[HeaderName]) -> Self {
        let mut names = vec![identity.user_header.clone()];
        names.extend(identity.claims.iter().map(|(h, _)| h.clone()));
        names.extend(extra.iter().cloned());
        let folded = names.iter().map(|n| fold(n.as_str())).collect();
        Protected { names, folded }
    }

    /// Remove every protected header, every copy, whatever its case or `-`/`_` spelling.
    pub fn strip(&self, headers: &mut HeaderMap) {
        for name in &self.names {
            headers.remove(name);
        }
        // Only names containing `_` can be an underscore spelling of a protected name.
        let mut doomed: SmallVec<[HeaderName; 2]> = SmallVec::new();
        for name in headers.keys() {
            if name.as_str().contains('_') && self.folded.contains(&fold(name.as_str())) {
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            headers.remove(name);
        }
    }
}

fn fold(name: &str) -> String {
    name.replace('-', "_")
}

/// Set the user header and the mapped claim headers from a verified token.
pub fn inject(headers: &mut HeaderMap, identity: &Identity, verified: &Verified) {
    headers.insert(identity.user_header.clone(), verified.user.clone());
    for (i, value) in &verified.extra {
        if let Some((name, _)) = identity.claims.get(*i) {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn identity() -> Identity {
        Identity {
            user_header: HeaderName::from_static("x-user-id"),
            user_claim: "sub".into(),
            claims: vec![(HeaderName::from_static("x-user-roles"), "roles".into())],
            forward_token: true,
        }
    }

    #[test]
    fn strips_every_copy_and_spelling() {
        let p = Protected::new(&identity(), &[HeaderName::from_static("x-client-id")]);
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-user-id", "a"),
            ("X-User-Id", "b"),
            ("X-USER-ID", "c"),
            ("x_user_id", "d"),
            ("X_User-Id", "e"),
            ("x-user-roles", "admin"),
            ("x-client-id", "app"),
            ("x-other", "keep"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        p.strip(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-other").unwrap(), "keep");
    }
}
