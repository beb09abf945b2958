//! `portcullis token`: mint a token for trying things out, with sign-in's own signer, so it
//! carries exactly the claims (`sub`, `jti`, `iat`, `exp`, `iss`/`aud` from `[jwt]`) and the
//! header a sign-in access token would, and verifies through what `run` will use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::run::load;
use crate::signin::issue::Signer;

/// What `portcullis token` was asked for.
pub struct TokenArgs {
    pub config: PathBuf,
    pub sub: String,
    /// Lifetime, e.g. "15m", "1h".
    pub ttl: String,
    /// Sign with the key of this kid (default: the first key that can sign).
    pub kid: Option<String>,
    /// Extra claims as `key=value`; the value is JSON when it parses as JSON.
    pub claims: Vec<String>,
}

/// Mint and print one token.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut config = load(&args.config)?;
    crate::telemetry::init_logging(config.log.format, "warn");
    // The token must verify against what `run` will use, so dev material is written now.
    config.write_dev_files()?;
    let ttl = crate::config::parse_duration(&args.ttl).map_err(anyhow::Error::msg)?;
    let key = config
        .jwt
        .keys
        .signing_key(args.kid.as_deref())
        .with_context(|| match &args.kid {
            Some(k) => format!("no key with kid `{k}` that can sign (HMAC secret or private_key)"),
            None => "no configured key can sign: add an HMAC key or a private_key".into(),
        })?;
    let ttl = Duration::from_secs(ttl.as_secs().max(1));
    let signer = Signer::new(key, &config.jwt, ttl, None).map_err(anyhow::Error::msg)?;
    let mut extra = serde_json::Map::new();
    for kv in &args.claims {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--claim `{kv}` is not KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        extra.insert(k.to_string(), value);
    }
    let pending = signer
        .prepare(crate::clock::unix_now())
        .map_err(anyhow::Error::msg)?;
    let token = signer
        .sign_with(&pending, &args.sub, extra)
        .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}
