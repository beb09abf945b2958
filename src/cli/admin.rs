//! The commands that talk to a running gateway's admin API (`revoke`, `revocations`,
//! `apikey`, `ready`, `reload`): build the request, print the answer, fail on non-2xx.

use anyhow::Context;
use http::Method;

use super::admin_client::AdminClient;
use super::{AdminArgs, ApikeyCommand, RevocationsCommand};

/// Why a `revoke` invocation names no single thing to revoke.
#[derive(Debug, thiserror::Error)]
#[error("give exactly one of --jti, --sub, --token")]
pub struct RevokeUsage;

/// The body of `POST /revocations` for `portcullis revoke`.
pub fn revoke_body(
    jti: Option<String>,
    exp: Option<u64>,
    sub: Option<String>,
    token: Option<String>,
) -> Result<serde_json::Value, RevokeUsage> {
    Ok(match (jti, sub, token) {
        (Some(jti), None, None) => match exp {
            Some(exp) => serde_json::json!({ "jti": jti, "exp": exp }),
            None => serde_json::json!({ "jti": jti }),
        },
        (None, Some(sub), None) => serde_json::json!({ "sub": sub }),
        (None, None, Some(token)) => serde_json::json!({ "token": token }),
        _ => return Err(RevokeUsage),
    })
}

/// `portcullis revocations ...`.
pub fn revocations(command: RevocationsCommand) -> anyhow::Result<()> {
    match command {
        RevocationsCommand::List {
            admin,
            kind,
            limit,
            cursor,
            filter,
            json,
            table,
        } => {
            let as_table = table || (filter.any() && !json);
            let kind = kind.or_else(|| (!filter.any()).then(|| "jti".to_owned()));
            let path = super::revocations::path("/revocations", kind, limit, cursor, &filter);
            if as_table {
                super::revocations::print_table(admin, &path)
            } else {
                call(admin, Method::GET, path, None)
            }
        }
        RevocationsCommand::Audit {
            admin,
            limit,
            cursor,
            filter,
            json,
        } => {
            let path = super::revocations::path("/audit", None, limit, cursor, &filter);
            if json {
                call(admin, Method::GET, path, None)
            } else {
                super::revocations::print_table(admin, &path)
            }
        }
        RevocationsCommand::Count { admin } => {
            call(admin, Method::GET, "/revocations/count".into(), None)
        }
    }
}

/// `portcullis apikey ...`.
pub fn apikey(command: ApikeyCommand) -> anyhow::Result<()> {
    match command {
        ApikeyCommand::Create { admin, app } => call(
            admin,
            Method::POST,
            "/apikeys".into(),
            Some(serde_json::json!({ "app": app })),
        ),
        ApikeyCommand::Revoke { admin, id } => {
            let id = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
            call(admin, Method::DELETE, format!("/apikeys/{id}"), None)
        }
        ApikeyCommand::List { admin } => call(admin, Method::GET, "/apikeys".into(), None),
    }
}

impl AdminArgs {
    pub fn client(self) -> anyhow::Result<AdminClient> {
        let token = match (self.token, self.token_file) {
            (Some(t), _) => t,
            (None, Some(p)) => std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .trim()
                .to_string(),
            (None, None) => {
                anyhow::bail!("give --admin-token, --admin-token-file or PORTCULLIS_ADMIN_TOKEN")
            }
        };
        Ok(AdminClient {
            base: self.url.parse().context("--admin is not a URL")?,
            token,
            cacert: self.cacert,
        })
    }
}

/// One admin API call; prints the response body, fails on a non-2xx status.
pub fn call(
    args: AdminArgs,
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let client = args.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(client.call(method, &path, body))?;
    println!("{}", text.trim_end());
    if !(200..300).contains(&status) {
        anyhow::bail!("admin API answered {status}");
    }
    Ok(())
}
