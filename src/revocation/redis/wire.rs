//! What cluster mode puts on the wire: the key names, the Lua script that applies a change,
//! stream entry IDs, and the decoding of the replies it reads (RESP2 or RESP3).

use redis::Value;

use crate::revocation::dict::key_to_hex;
use crate::revocation::record::Record;

/// Writes changes to the keys and the stream in one atomic step.
///
/// `KEYS[1]` is the stream, `KEYS[1 + i]` the entry key of change `i`. `ARGV[1]` is the
/// stream's approximate `MAXLEN`; `ARGV[2]` is `1` to publish only changes that altered the
/// stored state (re-seeding), `0` to publish every change (admin writes). Then four
/// arguments per change: `t` (revoke token, value `exp`), `s` (revoke subject, value
/// `revoked_before:expires`) or `d` (delete); the value; the `EXAT` time; the record.
///
/// A revoke never narrows what is stored: each number keeps the larger of the stored and
/// the new value, compared as decimal strings so no precision is lost to Lua's doubles.
/// Returns per change the stream ID it was published under, or nil.
pub const APPLY_SCRIPT: &str = r#"
local function bigger(a, b)
  if #a ~= #b then return (#a > #b) and a or b end
  return (a > b) and a or b
end
local out = {}
for i = 1, #KEYS - 1 do
  local at = 3 + (i - 1) * 4
  local op, value, exat, record = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local key = KEYS[i + 1]
  local changed = true
  if op == 'd' then
    changed = redis.call('DEL', key) == 1
  else
    local cur = redis.call('GET', key)
    local keepttl = false
    if cur then
      if op == 't' and string.match(cur, '^%d+$') then
        if bigger(cur, value) == cur then changed = false end
      elseif op == 's' then
        local crb, cex = string.match(cur, '^(%d+):(%d+)$')
        local nrb, nex = string.match(value, '^(%d+):(%d+)$')
        if crb and nrb then
          local rb, ex = bigger(crb, nrb), bigger(cex, nex)
          if rb == crb and ex == cex then
            changed = false
          else
            value = rb .. ':' .. ex
            keepttl = (ex == cex)
          end
        end
      end
    end
    if changed then
      if keepttl then
        redis.call('SET', key, value, 'KEEPTTL')
      else
        redis.call('SET', key, value, 'EXAT', exat)
      end
    end
  end
  if changed or ARGV[2] == '0' then
    out[i] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', record)
  else
    out[i] = false
  end
end
return out
"#;

/// An entry ID of a Redis stream: milliseconds, then a sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Parses `MS-SEQ` (a bare `MS` means sequence 0).
    pub fn parse(raw: &[u8]) -> Option<StreamId> {
        let s = std::str::from_utf8(raw).ok()?;
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The URL with the password (if any) replaced by `***`, for logs and config errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// A `redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER_NAME/DB` store URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// Sentinel addresses, asked in order for the current master.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master: String,
    pub db: i64,
}

/// `Some` for a `redis+sentinel://` URL: parsed, or why it does not parse.
pub fn sentinel_url(url: &str) -> Option<Result<SentinelUrl, String>> {
    let rest = url.strip_prefix("redis+sentinel://")?;
    Some(
        (|| {
            let mut parts = rest.splitn(3, '/');
            let hosts = parts.next().unwrap_or_default();
            let master = parts.next().filter(|m| !m.is_empty()).ok_or(
                "no master name: write redis+sentinel://HOST:PORT,HOST:PORT/MASTER_NAME/DB",
            )?;
            let db = match parts.next() {
                None | Some("") => 0,
                Some(d) => d.parse().map_err(|_| "the database must be a number")?,
            };
            if hosts.contains('@') {
                return Err("passwords are not supported in a sentinel URL".to_string());
            }
            let sentinels = hosts
                .split(',')
                .map(|h| {
                    let (host, port) = h.rsplit_once(':').ok_or("each sentinel needs HOST:PORT")?;
                    let port = port
                        .parse()
                        .map_err(|_| "a sentinel port is not a number")?;
                    if host.is_empty() {
                        return Err("a sentinel host is empty");
                    }
                    Ok((host.to_string(), port))
                })
                .collect::<Result<Vec<_>, &str>>()?;
            Ok(SentinelUrl {
                sentinels,
                master: master.to_string(),
                db,
            })
        })()
        .map_err(|e: String| e),
    )
}

/// Whether `url` is a Redis URL this build can connect to (`portcullis check` runs this).
/// The message never repeats the URL, which may hold a password.
pub fn check_url(url: &str) -> Result<(), String> {
    if let Some(parsed) = sentinel_url(url) {
        return parsed.map(drop);
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("{:?}: {}", e.kind(), e.detail().unwrap_or("invalid URL")))
}

/// Names of the keys one deployment uses.
#[derive(Debug)]
pub(super) struct Keys {
    /// `P:`, what every key starts with.
    pub(super) root: String,
    pub(super) stream: String,
    pub(super) epoch: String,
    /// `P:tok:` and `P:sub:`, to which a key's hex is appended.
    pub(super) token: String,
    pub(super) subject: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            root: format!("{prefix}:"),
            stream: format!("{prefix}:stream"),
            epoch: format!("{prefix}:epoch"),
            token: format!("{prefix}:tok:"),
            subject: format!("{prefix}:sub:"),
        }
    }

    /// The key holding the state `record` changes.
    pub(super) fn of(&self, record: &Record) -> String {
        match record {
            Record::RevokeToken { key, .. } | Record::UnrevokeToken { key } => {
                format!("{}{}", self.token, key_to_hex(key))
            }
            Record::RevokeSubject { key, .. } | Record::UnrevokeSubject { key } => {
                format!("{}{}", self.subject, key_to_hex(key))
            }
        }
    }
}

/// The bytes of a string reply.
pub fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// The elements of an array reply (empty for nil or anything else).
pub fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => Vec::new(),
    }
}

/// Name/value pairs of a map reply: a RESP3 map, or a RESP2 flat array alternating them.
pub(super) fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Map(m) => m,
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The entries of an `XREAD` reply for one stream, in order: ID and decoded record (`None`
/// when the entry is not a record this build understands). Nil (a timeout) gives none.
pub(super) fn stream_entries(reply: Value) -> Vec<(StreamId, Option<Record>)> {
    // RESP2: [[stream, [[id, [field, value, ...]], ...]]]; RESP3: {stream: [...]}.
    let streams: Vec<Value> = match reply {
        Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        other => items(other)
            .into_iter()
            .filter_map(|s| items(s).into_iter().nth(1))
            .collect(),
    };
    let mut out = Vec::new();
    for entries in streams {
        for entry in items(entries) {
            let mut parts = items(entry).into_iter();
            let Some(id) = parts
                .next()
                .and_then(|v| bulk(&v).and_then(StreamId::parse))
            else {
                continue;
            };
            let record = parts.next().and_then(|fields| {
                pairs(fields).into_iter().find_map(|(name, value)| {
                    if bulk(&name) != Some(b"r") {
                        return None;
                    }
                    Record::decode_wire(bulk(&value)?)
                })
            });
            out.push((id, record));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::dict::digest;

    #[test]
    fn stream_ids_parse_and_order() {
        assert_eq!(
            StreamId::parse(b"1700000000000-5"),
            Some(StreamId {
                ms: 1_700_000_000_000,
                seq: 5
            })
        );
        assert_eq!(StreamId::parse(b"42"), Some(StreamId { ms: 42, seq: 0 }));
        assert_eq!(StreamId::parse(b"x-1"), None);
        assert_eq!(StreamId::parse(b""), None);
        let a = StreamId::parse(b"5-9").unwrap();
        let b = StreamId::parse(b"6-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "5-9");
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(
            redact_url("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss:w0rd@host:6380/1?x=1"),
            "rediss://user:***@host:6380/1?x=1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://user@h/0"), "redis://user@h/0");
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://:pw@127.0.0.1:6380/0").is_ok());
        let err = check_url("redis://:hunter2@[bad/0").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn xread_replies_decode_in_both_protocols() {
        let rec = Record::RevokeToken {
            key: digest(b"jti"),
            exp: 99,
        };
        let entry = |id: &str, raw: Vec<u8>| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"r".to_vec()),
                    Value::BulkString(raw),
                ]),
            ])
        };
        let entries = Value::Array(vec![
            entry("1-0", rec.encode_wire().to_vec()),
            entry("1-1", b"garbage".to_vec()),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"p:stream".to_vec()),
            entries.clone(),
        ])]);
        let resp3 = Value::Map(vec![(Value::BulkString(b"p:stream".to_vec()), entries)]);
        for reply in [resp2, resp3] {
            let got = stream_entries(reply);
            assert_eq!(
                got,
                vec![
                    (StreamId { ms: 1, seq: 0 }, Some(rec)),
                    (StreamId { ms: 1, seq: 1 }, None)
                ]
            );
        }
        assert!(stream_entries(Value::Nil).is_empty());
    }

    #[test]
    fn key_names() {
        let keys = Keys::new("pc");
        let key = digest(b"x");
        assert_eq!(
            keys.of(&Record::UnrevokeToken { key }),
            format!("pc:tok:{}", key_to_hex(&key))
        );
        assert_eq!(
            keys.of(&Record::RevokeSubject {
                key,
                revoked_before: 1,
                expires: 2
            }),
            format!("pc:sub:{}", key_to_hex(&key))
        );
        assert_eq!(keys.stream, "pc:stream");
    }
}
