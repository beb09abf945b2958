//! The operator's view of revocations: `GET /revocations` (what is in force, by its original
//! identifier, with who revoked it and why) and `GET /audit` (every revoke and un-revoke in
//! time order), both read from the audit trail in `revocation::audit` and joined with the
//! dictionary, which holds only 16-byte keys.
//!
//! Query parameters (both endpoints): `sub`, `jti`, `actor`, `since` (unix seconds or RFC
//! 3339), `limit` (1..=1000, default 100), `cursor` (the `next_cursor` of the previous page).
//! `GET /revocations` also takes `kind=jti|sub|token` (`jti` and `token` both list the token
//! dictionary). `kind` has one vocabulary everywhere (POST answers, filters, list items,
//! audit records): `jti`, `sub`, `token`.

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use super::{counts, error, json_response, AdminState, Resp};
use crate::ids::{digest as digest128, key_from_hex, key_to_hex};
use crate::revocation::audit::{Action, AuditKind, AuditRecord};
use crate::revocation::dict::{Entry, Kind};

/// Default and largest page size.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The filters and paging of one listing.
#[derive(Debug, Default)]
struct Query {
    kind: Option<Kind>,
    sub: Option<String>,
    jti: Option<String>,
    actor: Option<String>,
    since: Option<u64>,
    limit: usize,
    cursor: Option<String>,
}

impl Query {
    fn has_filters(&self) -> bool {
        self.sub.is_some() || self.jti.is_some() || self.actor.is_some() || self.since.is_some()
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let jti_ok = self
            .jti
            .as_deref()
            .is_none_or(|j| matches!(r.kind, AuditKind::Jti | AuditKind::Token) && r.id == j);
        let sub_ok = self
            .sub
            .as_deref()
            .is_none_or(|s| r.sub.as_deref() == Some(s) || (r.kind == AuditKind::Sub && r.id == s));
        let actor_ok = self.actor.as_deref().is_none_or(|a| r.actor == a);
        let since_ok = self.since.is_none_or(|t| r.time >= t);
        jti_ok && sub_ok && actor_ok && since_ok
    }
}

/// Parse `since`: unix seconds, or an RFC 3339 time.
pub fn parse_since(v: &str) -> Option<u64> {
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let t = humantime::parse_rfc3339_weak(v).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Parse the query string; the error is the 400's message.
fn parse_query(q: Option<&str>, with_kind: bool) -> Result<Query, &'static str> {
    let mut out = Query {
        limit: DEFAULT_PAGE,
        ..Query::default()
    };
    let bad = |m: &'static str| m;
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(v) = percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
        else {
            return Err(bad("query values must be UTF-8"));
        };
        match k {
            "kind" if with_kind => {
                out.kind = Some(match v.as_str() {
                    // `jti` and `token` revokes share the token dictionary.
                    "jti" | "token" => Kind::Token,
                    "sub" => Kind::Subject,
                    _ => return Err(bad("kind must be jti, sub or token")),
                })
            }
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => out.limit = n,
                _ => return Err(bad("limit must be 1..=1000")),
            },
            "cursor" => out.cursor = Some(v),
            "sub" => out.sub = Some(v),
            "jti" => out.jti = Some(v),
            "actor" => out.actor = Some(v),
            "since" => match parse_since(&v) {
                Some(t) => out.since = Some(t),
                None => {
                    return Err(bad(
                        "since must be unix seconds or an RFC 3339 time (2026-12-02T21:00:00Z)",
                    ))
                }
            },
            _ => {
                return Err(bad(
                    "unknown query parameter; valid: sub, jti, actor, since, limit, cursor (and kind on /revocations)",
                ))
            }
        }
    }
    Ok(out)
}

fn record_json(r: &AuditRecord) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn trail_unavailable(e: impl std::fmt::Display) -> Resp {
    tracing::error!(error = %e, "audit trail unreadable");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the audit trail is not available right now",
    )
}

/// Which dictionary a record's key lives in.
fn class(kind: AuditKind) -> Kind {
    match kind {
        AuditKind::Sub => Kind::Subject,
        AuditKind::Jti | AuditKind::Token => Kind::Token,
    }
}

fn class_name(k: Kind) -> &'static str {
    match k {
        Kind::Token => "t",
        Kind::Subject => "s",
    }
}

/// The latest revoke of each key that no later un-revoke undid, from the time-ordered trail.
fn in_force(records: Vec<AuditRecord>) -> HashMap<(&'static str, String), AuditRecord> {
    let mut map = HashMap::new();
    for r in records {
        let k = (class_name(class(r.kind)), r.key.clone());
        match r.action {
            Action::Revoke => {
                map.insert(k, r);
            }
            Action::Unrevoke => {
                map.remove(&k);
            }
        }
    }
    map
}

/// `GET /revocations`: entries in force in key order, each with the metadata of the revoke
/// that put it there (entries revoked before the trail existed carry their key only).
pub async fn list_revocations(admin: &Arc<AdminState>, query: Option<&str>) -> Resp {
    let q = match parse_query(query, true) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let cursor = match q.cursor.as_deref().map(key_from_hex) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "cursor is not a key from a previous page",
            )
        }
        Some(Some(k)) => Some(k),
        None => None,
    };
    let records = match admin.audit.records().await {
        Ok(r) => r,
        Err(e) => return trail_unavailable(e),
    };
    let meta = in_force(records);
    let dict = admin.revocations.dict();
    let mut items: Vec<Value> = Vec::new();
    let next: Option<String>;
    if q.has_filters() {
        // Only revokes the trail knows about can match a filter on their identifier.
        let mut hits: Vec<(&'static str, &AuditRecord)> = meta
            .iter()
            .filter(|((_, key), r)| {
                let kind = class(r.kind);
                q.kind.is_none_or(|k| k == kind)
                    && q.matches(r)
                    && key_from_hex(key).is_some_and(|k| match kind {
                        Kind::Token => dict.has_token(&k),
                        Kind::Subject => dict.has_subject(&k),
                    })
            })
            .map(|((c, _), r)| (*c, r))
            .collect();
        hits.sort_by(|a, b| a.1.key.cmp(&b.1.key).then(a.0.cmp(b.0)));
        let after = cursor.map(|k| key_to_hex(&k));
        let page: Vec<_> = hits
            .into_iter()
            .filter(|(_, r)| after.as_deref().is_none_or(|a| r.key.as_str() > a))
            .take(q.limit)
            .collect();
        next = (page.len() == q.limit)
            .then(|| page.last().map(|(_, r)| r.key.clone()))
            .flatten();
        items.extend(page.into_iter().map(|(_, r)| record_json(r)));
    } else {
        let kind = q.kind.unwrap_or(Kind::Token);
        let page: Vec<Entry> = dict.page(kind, cursor, q.limit);
        next = (page.len() == q.limit)
            .then(|| page.last().map(|e| key_to_hex(&e.key())))
            .flatten();
        for e in page {
            let key = key_to_hex(&e.key());
            let mut item = serde_json::to_value(e).unwrap_or(Value::Null);
            if let (Some(obj), Some(r)) = (
                item.as_object_mut(),
                meta.get(&(class_name(kind), key.clone())),
            ) {
                if let Value::Object(m) = record_json(r) {
                    for (k, v) in m {
                        // The dictionary's own `exp` is what is in force.
                        if k != "exp" || !obj.contains_key("exp") {
                            obj.insert(k, v);
                        }
                    }
                }
            }
            items.push(item);
        }
    }
    json_response(
        StatusCode::OK,
        json!({ "items": items, "next_cursor": next, "count": counts(&admin.revocations) }),
    )
}

/// `GET /audit`: every record kept, oldest first. The cursor is `TIME.N`: the page after
/// the `N`-th record of second `TIME`.
pub async fn list_audit(admin: &Arc<AdminState>, query: Option<&str>) -> Resp {
    let q = match parse_query(query, false) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let cursor = match q.cursor.as_deref().map(|c| {
        c.split_once('.')
            .and_then(|(t, n)| Some((t.parse::<u64>().ok()?, n.parse::<usize>().ok()?)))
    }) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "cursor is not the next_cursor of a previous page",
            )
        }
        Some(Some(c)) => Some(c),
        None => None,
    };
    let records = match admin.audit.records().await {
        Ok(r) => r,
        Err(e) => return trail_unavailable(e),
    };
    // Number each record within its second, so the cursor survives a prune of older ones.
    let mut numbered = Vec::with_capacity(records.len());
    let mut last = (u64::MAX, 0usize);
    for r in records {
        let n = if r.time == last.0 { last.1 + 1 } else { 0 };
        last = (r.time, n);
        numbered.push((n, r));
    }
    let page: Vec<(usize, AuditRecord)> = numbered
        .into_iter()
        .filter(|(n, r)| cursor.is_none_or(|(t, m)| r.time > t || (r.time == t && *n > m)))
        .filter(|(_, r)| q.matches(r))
        .take(q.limit)
        .collect();
    let next = (page.len() == q.limit)
        .then(|| page.last().map(|(n, r)| format!("{}.{n}", r.time)))
        .flatten();
    let items: Vec<Value> = page.iter().map(|(_, r)| record_json(r)).collect();
    json_response(
        StatusCode::OK,
        json!({ "items": items, "next_cursor": next }),
    )
}

/// The revocation key of a `jti` or subject named by an admin call, as hex.
pub fn key_hex(id: &str) -> String {
    key_to_hex(&digest128(id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_unix_seconds_and_rfc3339() {
        assert_eq!(parse_since("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_since("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_since("yesterday"), None);
    }

    #[test]
    fn unknown_parameters_and_bad_values_are_refused() {
        assert!(parse_query(Some("color=red"), true).is_err());
        assert!(parse_query(Some("kind=jti"), false).is_err());
        assert!(parse_query(Some("limit=0"), true).is_err());
        let q = parse_query(Some("sub=al%20ice&actor=bob&since=5"), false).unwrap();
        assert_eq!(q.sub.as_deref(), Some("al ice"));
        assert_eq!(q.since, Some(5));
    }
}
