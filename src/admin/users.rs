//! The operator's view of a user and of the gateway now: a user's sign-in sessions,
//! "log out everywhere", and the live ring (`GET /stats`).

use std::sync::Arc;

use http::StatusCode;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::json;

use super::{audit_append, error, json_response, update_entries_gauge, AdminState, Caller, Resp};
use crate::clock::unix_now;
use crate::ids::{digest as digest128, key_to_hex};
use crate::revocation::audit::{Action, AuditKind, AuditRecord, MAX_REASON_BYTES};
use crate::revocation::Record;

/// `GET /stats?since=T`: samples newer than unix second `T` (all 15 minutes without it),
/// and the per-route table over the last minute.
pub(super) fn stats(admin: &AdminState, query: Option<&str>) -> Resp {
    let since = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("since="))
        .map(str::parse::<u64>);
    let since = match since {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "since must be unix seconds"),
    };
    json_response(
        StatusCode::OK,
        json!({
            "now": unix_now(),
            "interval_secs": crate::telemetry::live::INTERVAL.as_secs(),
            "window_secs": crate::telemetry::live::WINDOW,
            "samples": admin.live.samples_since(since),
            "routes": admin.live.routes(),
        }),
    )
}

/// The user id of a `/users/{user}/...` path, percent-decoded; `None` when it is empty or
/// not UTF-8.
fn user_id(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| u.into_owned())
}

fn bad_user_id() -> Resp {
    error(
        StatusCode::BAD_REQUEST,
        "the user id must be non-empty UTF-8",
    )
}

fn no_signin() -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "sign-in is not configured on this gateway ([signin]), so it holds no sessions",
    )
}

/// `GET /users/{user}/sessions`: the user's sign-in session families, oldest first.
pub(super) async fn sessions(admin: &AdminState, raw: &str) -> Resp {
    let Some(user) = user_id(raw) else {
        return bad_user_id();
    };
    let Some(store) = &admin.sessions else {
        return no_signin();
    };
    match store.list(&user, unix_now()).await {
        Ok(list) => json_response(
            StatusCode::OK,
            json!({ "user": user, "count": list.len(), "sessions": list }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "sessions not listed");
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
    }
}

/// `POST /users/{user}/logout`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogoutRequest {
    #[serde(default)]
    reason: Option<String>,
}

pub(super) const LOGOUT_SHAPE: &str =
    "expected an empty body or {\"reason\": \"...\"} (at most 256 bytes)";

/// Log a user out everywhere: end every sign-in session (no refresh token of theirs works
/// any more), revoke the access tokens those sessions issued, and revoke the subject up to
/// this second (which also covers tokens sign-in did not issue). One audit record, a `sub`
/// revoke, names the actor and reason.
pub(super) async fn logout_everywhere(
    admin: &Arc<AdminState>,
    raw: &str,
    body: LogoutRequest,
    caller: &Caller,
) -> Resp {
    let Some(user) = user_id(raw) else {
        return bad_user_id();
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_BYTES)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "reason is too long (256 bytes at most)",
        );
    }
    let now = unix_now();
    let ended = match &admin.sessions {
        Some(store) => match store.end_all(&user, now).await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::error!(error = %e, "sessions not ended");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "session store unavailable; nothing was changed",
                );
            }
        },
        None => Vec::new(),
    };
    let revs = &admin.revocations;
    let key = digest128(user.as_bytes());
    // Fail closed at one-second resolution, as `POST /revocations {"sub"}` does.
    let before = now + 1;
    let expires = before.saturating_add(revs.max_lifetime());
    let mut records: Vec<Record> = ended
        .iter()
        .map(|t| Record::RevokeToken {
            key: t.key,
            exp: t.exp,
        })
        .collect();
    records.push(Record::RevokeSubject {
        key,
        revoked_before: before,
        expires,
    });
    if let Err(e) = revs.apply(records).await {
        tracing::error!(error = %e, "log-out-everywhere revocations not stored");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &super::store_failure_message(&e, "revoked"),
        );
    }
    admin.metrics.revocations_total.inc();
    update_entries_gauge(admin);
    let audited = audit_append(
        admin,
        AuditRecord {
            time: now,
            action: Action::Revoke,
            kind: AuditKind::Sub,
            id: user.clone(),
            key: key_to_hex(&key),
            sub: Some(user.clone()),
            actor: caller.actor.to_string(),
            ip: caller.ip.clone(),
            reason: body.reason.clone(),
            exp: Some(expires),
        },
    )
    .await;
    tracing::info!(user = %user, actor = %caller.actor, revoked = ended.len(), "user logged out everywhere");
    json_response(
        StatusCode::OK,
        json!({
            "user": user,
            "sessions_tokens_revoked": ended.len(),
            "revoked_before": before,
            "expires": expires,
            "actor": caller.actor.as_ref(),
            "reason": body.reason,
            "audited": audited,
        }),
    )
}
