//! Cluster mode sessions: families kept in the Redis that holds the revocations, so every
//! instance sees the same ones and an instance restart loses none.
//!
//! # Layout (`P` is `[revocation] key_prefix`)
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:rt:<64 hex>` | string `c:<family>` or `s:<family>` | a refresh token's SHA-256: current or spent in that family; expires (`EXAT`) with the token |
//! | `P:fam:<32 hex>` | hash `user`, `uk`, `cur`, `exp`, `acc` | a family: its user, user key, current token digest and `exp`, and its access tokens as `key:exp,key:exp` (revocation key hex); expires with the last of them |
//! | `P:user:<32 hex>` | sorted set | a user's family ids scored by start time (ms), for `max_sessions_per_user` and logout-all; the hex is the user id's digest |
//!
//! # Atomicity
//!
//! Each operation is one Lua script, and a script runs alone on the server: two instances
//! spending the same refresh token at once are serialised, the first rotates it (`c` to
//! `s`), the second finds it spent and ends the family, as any reuse does. A script's reply
//! lists the access tokens of the families it ended; the caller revokes them through the
//! revocation service (keys and change stream, already cluster-wide).
//!
//! Redis not answering within `[revocation] timeout` is a [`SessionError`]: the endpoint
//! answers 503 and nothing is issued that Redis did not store. A rotation is never retried
//! (the first attempt may have run; a retry would look like reuse); the other scripts are
//! idempotent and retried once on a dropped connection, as the revocation writes are.

use std::time::Duration;

use redis::{RedisError, Script, ScriptInvocation, Value};

use super::{
    Issued, NewSession, RefreshDigest, RefreshError, SessionError, SessionFuture, SessionStore,
};
use crate::hex::encode as hex;
use crate::ids::{digest, key_from_hex, key_to_hex, Key};
use crate::revocation::redis::{bulk, items, Cluster};

/// Latest `EXAT` asked for (9999-12-31), as in the revocation keys.
const MAX_EXPIRE_AT: u64 = 253_402_300_799;

/// Helpers every script starts with. `end_family` deletes a family, its current refresh
/// token and its place in the user's set, appending its live access tokens to `out`.
const LIB: &str = r#"
local function live_access(list, now, out)
  for key, exp in string.gmatch(list or '', '(%x+):(%d+)') do
    if tonumber(exp) >= now then out[#out + 1] = key .. ':' .. exp end
  end
  return out
end
local function end_family(prefix, id, now, out)
  local fam = prefix .. 'fam:' .. id
  local f = redis.call('HMGET', fam, 'uk', 'cur', 'acc')
  if not f[1] then return out end
  redis.call('DEL', fam)
  if f[2] then redis.call('DEL', prefix .. 'rt:' .. f[2]) end
  redis.call('ZREM', prefix .. 'user:' .. f[1], id)
  return live_access(f[3], now, out)
end
local function extend(key, at, now)
  local ttl = redis.call('TTL', key)
  if ttl < 0 or now + ttl < at then redis.call('EXPIREAT', key, at) end
end
"#;

/// `KEYS` family, refresh token, user set. `ARGV` prefix, family id, user, user key hex,
/// refresh digest hex, refresh `exp`, access `key:exp`, now, max sessions (0: unlimited),
/// score, family expiry. Ends the oldest families beyond the limit (dropping ids whose
/// family expired), then records the new one. A repeated call (retry) changes nothing.
const START: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local prefix, now, max = ARGV[1], tonumber(ARGV[8]), tonumber(ARGV[9])
local live, ended = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if redis.call('EXISTS', prefix .. 'fam:' .. id) == 1 then
    live[#live + 1] = id
  else
    redis.call('ZREM', KEYS[3], id)
  end
end
if max > 0 then
  for i = 1, #live - (max - 1) do end_family(prefix, live[i], now, ended) end
end
redis.call('HSET', KEYS[1], 'user', ARGV[3], 'uk', ARGV[4], 'cur', ARGV[5], 'exp', ARGV[6], 'acc', ARGV[7])
redis.call('EXPIREAT', KEYS[1], ARGV[11])
redis.call('SET', KEYS[2], 'c:' .. ARGV[2], 'EXAT', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[10], ARGV[2])
extend(KEYS[3], tonumber(ARGV[11]), now)
return ended
"#;

/// `KEYS` old and new refresh token. `ARGV` prefix, old digest hex, new digest hex, new
/// `exp`, access `key:exp`, now, family expiry. Replies `ok` and the user; `invalid`; or
/// `reused` and the ended family's access tokens.
const ROTATE: &str = r#"
local prefix, now = ARGV[1], tonumber(ARGV[6])
local v = redis.call('GET', KEYS[1])
if not v then return {'invalid'} end
local state, id = string.match(v, '^([cs]):(%x+)$')
if not id then return {'invalid'} end
if state == 's' then return end_family(prefix, id, now, {'reused'}) end
local fam = prefix .. 'fam:' .. id
local f = redis.call('HMGET', fam, 'user', 'cur', 'exp', 'acc', 'uk')
if not f[1] or f[2] ~= ARGV[2] then return {'invalid'} end
if tonumber(f[3]) < now then
  end_family(prefix, id, now, {})
  return {'invalid'}
end
local acc = live_access(f[4], now, {})
acc[#acc + 1] = ARGV[5]
redis.call('SET', KEYS[1], 's:' .. id, 'KEEPTTL')
redis.call('SET', KEYS[2], 'c:' .. id, 'EXAT', ARGV[4])
redis.call('HSET', fam, 'cur', ARGV[3], 'exp', ARGV[4], 'acc', table.concat(acc, ','))
redis.call('EXPIREAT', fam, ARGV[7])
extend(prefix .. 'user:' .. f[5], tonumber(ARGV[7]), now)
return {'ok', f[1]}
"#;

/// `KEYS` user set. `ARGV` prefix, access key hex, now. Ends the family that issued it.
const END_BY_ACCESS: &str = r#"
local prefix, now = ARGV[1], tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local acc = redis.call('HGET', prefix .. 'fam:' .. id, 'acc')
  if not acc then
    redis.call('ZREM', KEYS[1], id)
  elseif string.find(acc, ARGV[2] .. ':', 1, true) then
    return end_family(prefix, id, now, {})
  end
end
return {}
"#;

/// `KEYS` user set. `ARGV` prefix, now. Ends every family of the user.
const END_ALL: &str = r#"
local ended = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  end_family(ARGV[1], id, tonumber(ARGV[2]), ended)
end
redis.call('DEL', KEYS[1])
return ended
"#;

/// `KEYS` user set. `ARGV` prefix, now. Lists the user's live families as
/// `id:refresh exp:live access tokens:start ms`, oldest first; changes nothing.
const LIST: &str = r#"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local f = redis.call('HMGET', ARGV[1] .. 'fam:' .. ids[i], 'exp', 'acc')
  if f[1] and tonumber(f[1]) >= tonumber(ARGV[2]) then
    out[#out + 1] = ids[i] .. ':' .. f[1] .. ':' .. #live_access(f[2], tonumber(ARGV[2]), {}) .. ':' .. ids[i + 1]
  end
end
return out
"#;

/// `KEYS` refresh token. `ARGV` prefix, now. Ends the family the token (current or spent)
/// belongs to.
const END_BY_REFRESH: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return {} end
local _, id = string.match(v, '^([cs]):(%x+)$')
if not id then return {} end
return end_family(ARGV[1], id, tonumber(ARGV[2]), {})
"#;

/// Families in the cluster's Redis (`store = "redis://..."`).
pub struct RedisSessions {
    /// Whose admin write connection the scripts run on: with Sentinel it follows the
    /// master through a failover, so it is asked for on every call.
    cluster: std::sync::Arc<Cluster>,
    /// `P:`
    root: String,
    timeout: Duration,
    start: Script,
    rotate: Script,
    end_by_access: Script,
    end_all: Script,
    end_by_refresh: Script,
    list: Script,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn entry(a: &Issued) -> String {
    format!("{}:{}", key_to_hex(&a.key), a.exp)
}

fn expire_at(t: u64) -> u64 {
    t.clamp(1, MAX_EXPIRE_AT)
}

/// The access tokens in a script's reply, from index `skip` on (entries the gateway did
/// not write are ignored).
fn ended(reply: Vec<Value>, skip: usize) -> Vec<Issued> {
    reply
        .iter()
        .skip(skip)
        .filter_map(|v| {
            let text = std::str::from_utf8(bulk(v)?).ok()?;
            let (key, exp) = text.split_once(':')?;
            Some(Issued {
                key: key_from_hex(key)?,
                exp: exp.parse().ok()?,
            })
        })
        .collect()
}

impl RedisSessions {
    pub fn new(cluster: &std::sync::Arc<Cluster>) -> RedisSessions {
        let (_, root, timeout) = cluster.session_link();
        let script = |body: &str| Script::new(&format!("{LIB}{body}"));
        RedisSessions {
            cluster: cluster.clone(),
            root,
            timeout,
            start: script(START),
            rotate: script(ROTATE),
            end_by_access: script(END_BY_ACCESS),
            end_all: script(END_ALL),
            end_by_refresh: script(END_BY_REFRESH),
            list: script(LIST),
        }
    }

    fn user_key(&self, user: &str) -> (String, String) {
        let uk = key_to_hex(&digest(user.as_bytes()));
        (format!("{}user:{uk}", self.root), uk)
    }

    /// Run a script within `timeout`; with `retry`, once more if the connection dropped
    /// (the first call after Redis restarted fails while the manager reconnects).
    async fn call(
        &self,
        invocation: ScriptInvocation<'_>,
        retry: bool,
    ) -> Result<Vec<Value>, SessionError> {
        let attempt = async {
            let mut conn = self.cluster.writer_connection();
            match invocation.invoke_async::<Value>(&mut conn).await {
                Err(e) if retry && (e.is_unrecoverable_error() || e.is_connection_dropped()) => {
                    invocation.invoke_async::<Value>(&mut conn).await
                }
                done => done,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(items(v)),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(SessionError(format!(
                "no answer from Redis within {:?}",
                self.timeout
            ))),
        }
    }
}

fn unavailable(e: RedisError) -> SessionError {
    SessionError(format!("Redis: {e}"))
}

use crate::clock::unix_now_ms as now_ms;

impl SessionStore for RedisSessions {
    fn start(
        &self,
        s: NewSession,
        max_sessions: Option<usize>,
        now: u64,
    ) -> SessionFuture<'_, Vec<Issued>> {
        Box::pin(async move {
            let mut id = [0u8; 16];
            rand::fill(&mut id);
            let id = hex(&id);
            let refresh = hex(&s.refresh);
            let (user_key, uk) = self.user_key(&s.user);
            let mut call = self.start.prepare_invoke();
            call.key(format!("{}fam:{id}", self.root))
                .key(format!("{}rt:{refresh}", self.root))
                .key(user_key)
                .arg(&self.root)
                .arg(&id)
                .arg(&s.user)
                .arg(uk)
                .arg(&refresh)
                .arg(expire_at(s.refresh_exp))
                .arg(entry(&s.access))
                .arg(now)
                .arg(max_sessions.unwrap_or(0))
                .arg(now_ms())
                .arg(expire_at(s.refresh_exp.max(s.access.exp)));
            Ok(ended(self.call(call, true).await?, 0))
        })
    }

    fn rotate(
        &self,
        old: &RefreshDigest,
        next: RefreshDigest,
        next_exp: u64,
        access: Issued,
        now: u64,
    ) -> SessionFuture<'_, Result<String, RefreshError>> {
        let old = *old;
        Box::pin(async move {
            let (old, next) = (hex(&old), hex(&next));
            let mut call = self.rotate.prepare_invoke();
            call.key(format!("{}rt:{old}", self.root))
                .key(format!("{}rt:{next}", self.root))
                .arg(&self.root)
                .arg(&old)
                .arg(&next)
                .arg(expire_at(next_exp))
                .arg(entry(&access))
                .arg(now)
                .arg(expire_at(next_exp.max(access.exp)));
            let reply = self.call(call, false).await?;
            let word = |i: usize| reply.get(i).and_then(bulk).unwrap_or_default();
            Ok(match word(0) {
                b"ok" => match std::str::from_utf8(word(1)) {
                    Ok(user) if !user.is_empty() => Ok(user.to_owned()),
                    _ => Err(RefreshError::Invalid),
                },
                b"reused" => Err(RefreshError::Reused(ended(reply, 1))),
                _ => Err(RefreshError::Invalid),
            })
        })
    }

    fn end_by_access(&self, user: &str, key: &Key, now: u64) -> SessionFuture<'_, Vec<Issued>> {
        let key = *key;
        let (user_key, _) = self.user_key(user);
        Box::pin(async move {
            let mut call = self.end_by_access.prepare_invoke();
            call.key(user_key)
                .arg(&self.root)
                .arg(key_to_hex(&key))
                .arg(now);
            Ok(ended(self.call(call, true).await?, 0))
        })
    }

    fn end_all(&self, user: &str, now: u64) -> SessionFuture<'_, Vec<Issued>> {
        let (user_key, _) = self.user_key(user);
        Box::pin(async move {
            let mut call = self.end_all.prepare_invoke();
            call.key(user_key).arg(&self.root).arg(now);
            Ok(ended(self.call(call, true).await?, 0))
        })
    }

    fn end_by_refresh(&self, token: &RefreshDigest, now: u64) -> SessionFuture<'_, Vec<Issued>> {
        let token = *token;
        Box::pin(async move {
            let mut call = self.end_by_refresh.prepare_invoke();
            call.key(format!("{}rt:{}", self.root, hex(&token)))
                .arg(&self.root)
                .arg(now);
            Ok(ended(self.call(call, true).await?, 0))
        })
    }

    fn list(&self, user: &str, now: u64) -> SessionFuture<'_, Vec<super::SessionInfo>> {
        let (user_key, _) = self.user_key(user);
        Box::pin(async move {
            let mut call = self.list.prepare_invoke();
            call.key(user_key).arg(&self.root).arg(now);
            let reply = self.call(call, true).await?;
            Ok(reply
                .iter()
                .filter_map(|v| {
                    let text = std::str::from_utf8(bulk(v)?).ok()?;
                    let mut parts = text.split(':');
                    let id = parts.next()?.to_owned();
                    let expires = parts.next()?.parse().ok()?;
                    let access_tokens = parts.next()?.parse().ok()?;
                    let started = parts
                        .next()
                        .and_then(|ms| ms.parse::<f64>().ok())
                        .map(|ms| (ms / 1000.0) as u64);
                    Some(super::SessionInfo {
                        id,
                        started,
                        expires,
                        access_tokens,
                    })
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_to_access_tokens() {
        let a = Issued {
            key: [7; 16],
            exp: 1_700_000_000,
        };
        let reply = vec![
            Value::BulkString(b"reused".to_vec()),
            Value::BulkString(entry(&a).into_bytes()),
            Value::BulkString(b"not-an-entry".to_vec()),
        ];
        assert_eq!(ended(reply, 1), vec![a]);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(expire_at(u64::MAX), MAX_EXPIRE_AT);
    }
}
