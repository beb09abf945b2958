//! The `portcullis` command: a thin clap shell over the library.
//!
//! `run` serves, `check` validates a config and prints every problem, `token` mints a token
//! with a configured key for trying things out, `users` edits the sign-in users file,
//! `revoke`, `revocations`, `apikey`, `ready` and `reload` talk to a running gateway's admin
//! API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use http::Method;
use portcullis::admin::client::AdminClient;
use portcullis::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A reverse-proxy authentication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Path to the config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// Start even if a store file is damaged: keep every intact record and preserve the
        /// damaged file beside it (`<file>.damaged-<time>`); as `[revocation] recover = true`.
        #[arg(long)]
        recover: bool,
    },
    /// Validate a config file: exit 0 if valid, otherwise print every problem and exit 2.
    Check {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Mint a token signed with a configured key (for trying things out).
    Token {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// The subject (user id).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. "15m", "1h".
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with the key of this kid (default: the first key that can sign).
        #[arg(long)]
        kid: Option<String>,
        /// Extra claim as key=value; the value is parsed as JSON when it is valid JSON.
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
    },
    /// Revoke a token (by jti or the token itself) or every token of a subject, through the
    /// admin API of a running gateway.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Revoke the token with this jti.
        #[arg(long, group = "what")]
        jti: Option<String>,
        /// With --jti: the token's exp (unix seconds), so the entry can be forgotten then.
        #[arg(long, requires = "jti")]
        exp: Option<u64>,
        /// Revoke every token of this subject issued before now ("log out everywhere").
        #[arg(long, group = "what")]
        sub: Option<String>,
        /// Revoke this token (the gateway verifies it and takes jti and exp from it).
        #[arg(long, group = "what")]
        token: Option<String>,
    },
    /// Inspect revocations through the admin API.
    Revocations {
        #[command(subcommand)]
        command: RevocationsCommand,
    },
    /// Create, revoke and list API keys for trusted apps, through the admin API of a running
    /// gateway.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Ask a running gateway whether it is ready (`GET /readyz`): exit 0 when it is, 1 when
    /// not (revocation store not loaded, or Redis unreachable). For container health checks
    /// and Kubernetes exec probes, which cannot send the admin token themselves.
    Ready {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a running gateway re-read its config file, like SIGHUP (`POST /reload`). Prints
    /// the notes, or the reason the new config was rejected (exit 1; the old one stays).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Manage the sign-in users file (`[signin] users_file`). The password is read from
    /// standard input when it is not a terminal, otherwise prompted for without echo. A
    /// running gateway picks changes up on reload.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user with a new argon2id password hash.
    Add {
        /// The users file (TOML, or JSON by a .json extension); created when missing.
        #[arg(long)]
        file: PathBuf,
        /// The user id the gateway puts in `sub` (what upstreams see).
        #[arg(long)]
        id: String,
        /// The name the user signs in with.
        #[arg(long)]
        username: String,
    },
    /// Set a user's password.
    Passwd {
        #[arg(long)]
        file: PathBuf,
        /// Username (or id) of the user.
        #[arg(long)]
        username: String,
    },
    /// Remove a user.
    Remove {
        #[arg(long)]
        file: PathBuf,
        /// Username (or id) of the user.
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create a key for an app. The key is printed once: store it now, the gateway keeps
    /// only its SHA-256.
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// The app id the upstream receives (in `x-client-id` by default).
        #[arg(long)]
        app: String,
    },
    /// Revoke a key by its id; refused from the next request on.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// The key's id (from `create` or `list`).
        #[arg(long)]
        id: String,
    },
    /// List the keys: id, app and creation time (never a key).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum RevocationsCommand {
    /// List revocations, one page at a time.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// "jti" or "sub".
        #[arg(long, default_value = "jti")]
        kind: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The next_cursor of a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Count revocations in force.
    Count {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API's base URL.
    #[arg(long = "admin", default_value = "http://127.0.0.1:9443")]
    url: String,
    /// The admin token (or set PORTCULLIS_ADMIN_TOKEN).
    #[arg(
        id = "admin_token",
        long = "admin-token",
        env = "PORTCULLIS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Read the admin token from this file instead.
    #[arg(long = "admin-token-file", conflicts_with = "admin_token")]
    token_file: Option<PathBuf>,
    /// CA or self-signed certificate (PEM) to trust for an https:// admin URL.
    #[arg(long)]
    cacert: Option<PathBuf>,
}

impl AdminArgs {
    fn client(self) -> anyhow::Result<AdminClient> {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, recover } => run(config, recover),
        Command::Check { config } => return check(config),
        Command::Token {
            config,
            sub,
            ttl,
            kid,
            claims,
        } => token(config, sub, ttl, kid, claims),
        Command::Revoke {
            admin,
            jti,
            exp,
            sub,
            token,
        } => {
            let body = match (jti, sub, token) {
                (Some(jti), None, None) => match exp {
                    Some(exp) => serde_json::json!({ "jti": jti, "exp": exp }),
                    None => serde_json::json!({ "jti": jti }),
                },
                (None, Some(sub), None) => serde_json::json!({ "sub": sub }),
                (None, None, Some(token)) => serde_json::json!({ "token": token }),
                _ => {
                    eprintln!("portcullis: give exactly one of --jti, --sub, --token");
                    return ExitCode::from(2);
                }
            };
            admin_call(admin, Method::POST, "/revocations".into(), Some(body))
        }
        Command::Revocations { command } => match command {
            RevocationsCommand::List {
                admin,
                kind,
                limit,
                cursor,
            } => {
                let mut path = format!("/revocations?kind={kind}&limit={limit}");
                if let Some(c) = cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                admin_call(admin, Method::GET, path, None)
            }
            RevocationsCommand::Count { admin } => {
                admin_call(admin, Method::GET, "/revocations/count".into(), None)
            }
        },
        Command::Apikey { command } => match command {
            ApikeyCommand::Create { admin, app } => admin_call(
                admin,
                Method::POST,
                "/apikeys".into(),
                Some(serde_json::json!({ "app": app })),
            ),
            ApikeyCommand::Revoke { admin, id } => {
                let id =
                    percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
                admin_call(admin, Method::DELETE, format!("/apikeys/{id}"), None)
            }
            ApikeyCommand::List { admin } => {
                admin_call(admin, Method::GET, "/apikeys".into(), None)
            }
        },
        Command::Ready { admin } => admin_call(admin, Method::GET, "/readyz".into(), None),
        Command::Reload { admin } => admin_call(admin, Method::POST, "/reload".into(), None),
        Command::Users { command } => users(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration\n{e}"))
}

fn check(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(c) => {
            println!(
                "{}: ok ({} route(s), {} key(s), {})",
                path.display(),
                c.routes.len(),
                c.jwt.keys.len(),
                if c.listen.tls.is_some() {
                    "TLS"
                } else {
                    "plain HTTP"
                }
            );
            if let Some(j) = &c.jwt.jwks {
                // `check` stays offline: say what `run` will fetch instead of fetching it.
                match &j.source {
                    portcullis::auth::jwks::Source::Url(u) => println!(
                        "  note: `run` will fetch the key set from {u} before it binds (not fetched by check), then every {}",
                        humantime::format_duration(j.refresh_interval)
                    ),
                    portcullis::auth::jwks::Source::File(p) => println!(
                        "  note: key set file {} parses; `run` re-reads it every {}",
                        p.display(),
                        humantime::format_duration(j.refresh_interval)
                    ),
                }
            }
            for f in &c.pending_dev_files {
                println!(
                    "  note: `run` will generate {} at {}",
                    f.what,
                    f.path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: PathBuf, recover: bool) -> anyhow::Result<()> {
    let mut config = load(&path)?;
    config.revocation.recover |= recover;
    portcullis::telemetry::init_logging(config.log.format, &config.log.level);
    config.write_dev_files()?;
    // Worker 0, the admin API and background tasks share this thread; `start` adds one
    // thread-per-core worker for each further core (see `server`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut signals = Signals::new();
        let gateway = portcullis::start(config).await?;
        while let Signal::Reload = signals.next().await {
            // The outcome is logged (and counted in metrics) by the reloader.
            let _ = gateway.reload().await;
        }
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        gateway.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

enum Signal {
    /// SIGHUP: re-read the config file.
    Reload,
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
}

/// Signal streams, registered once so no signal is lost between two waits.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((term, hup)) = &mut self.streams {
            return tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}

fn token(
    path: PathBuf,
    sub: String,
    ttl: String,
    kid: Option<String>,
    extra: Vec<String>,
) -> anyhow::Result<()> {
    let mut config = load(&path)?;
    portcullis::telemetry::init_logging(config.log.format, "warn");
    // The token must verify against what `run` will use, so dev material is written now.
    config.write_dev_files()?;
    let ttl = config::parse_duration(&ttl).map_err(anyhow::Error::msg)?;
    let key = config
        .jwt
        .keys
        .signing_key(kid.as_deref())
        .with_context(|| match &kid {
            Some(k) => format!("no key with kid `{k}` that can sign (HMAC secret or private_key)"),
            None => "no configured key can sign: add an HMAC key or a private_key".into(),
        })?;
    let now = portcullis::pipeline::unix_now();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + ttl.as_secs().max(1)).into());
    claims.insert("jti".into(), random_jti().into());
    if let Some(iss) = &config.jwt.issuer {
        claims.insert("iss".into(), iss.clone().into());
    }
    match config.jwt.audience.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), one.clone().into());
        }
        many => {
            claims.insert("aud".into(), many.to_vec().into());
        }
    }
    for kv in extra {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--claim `{kv}` is not KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        claims.insert(k.to_string(), value);
    }
    let alg = key.alg.jwt().context("the selected key cannot sign")?;
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = key.kid.clone();
    let Some(encoding) = &key.encoding else {
        anyhow::bail!("the selected key cannot sign");
    };
    let token = jsonwebtoken::encode(&header, &claims, encoding)?;
    println!("{token}");
    Ok(())
}

/// 128 bits from the OS CSPRNG, hex.
fn random_jti() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn users(command: UsersCommand) -> anyhow::Result<()> {
    use portcullis::signin::users::{hash_password, UsersFile};
    let edit = |file: &std::path::Path,
                change: &dyn Fn(&mut UsersFile) -> Result<String, String>|
     -> anyhow::Result<()> {
        let mut users = UsersFile::load_or_empty(file).map_err(anyhow::Error::msg)?;
        let done = change(&mut users).map_err(anyhow::Error::msg)?;
        users
            .save(file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("portcullis: {done} in {}", file.display());
        Ok(())
    };
    match command {
        UsersCommand::Add { file, id, username } => {
            // Refuse a taken id or username before asking for a password.
            UsersFile::load_or_empty(&file)
                .map_err(anyhow::Error::msg)?
                .add(&id, &username, String::new())
                .map_err(anyhow::Error::msg)?;
            let hash = hash_password(&read_password()?).map_err(anyhow::Error::msg)?;
            edit(&file, &|u| {
                u.add(&id, &username, hash.clone())
                    .map(|()| format!("added user `{username}` (id `{id}`)"))
            })
        }
        UsersCommand::Passwd { file, username } => {
            let hash = hash_password(&read_password()?).map_err(anyhow::Error::msg)?;
            edit(&file, &|u| {
                u.set_password(&username, hash.clone())
                    .map(|()| format!("changed the password of `{username}`"))
            })
        }
        UsersCommand::Remove { file, username } => edit(&file, &|u| {
            u.remove(&username)
                .map(|e| format!("removed user `{}` (id `{}`)", e.username, e.id))
        }),
    }
}

/// The new password: one line of standard input when it is not a terminal (scripts), else
/// prompted twice without echo.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let again = rpassword::prompt_password("Repeat it: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

/// One admin API call; prints the response body, fails on a non-2xx status.
fn admin_call(
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
