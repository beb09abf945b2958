//! The `portcullis` command line: the argument definitions, and one file per command.
//!
//! `run` serves, `check` validates a config and prints every problem, `token` mints a token
//! with sign-in's signer for trying things out, `users` edits the sign-in users file,
//! `revoke`, `revocations`, `apikey`, `ready` and `reload` talk to a running gateway's admin
//! API ([`admin`]).

pub mod admin;
pub mod admin_client;
pub mod check;
pub mod revocations;
pub mod run;
pub mod token;
pub mod users;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A reverse-proxy authentication gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Why (kept in the audit trail; at most 256 bytes).
        #[arg(long)]
        reason: Option<String>,
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
pub enum UsersCommand {
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
pub enum ApikeyCommand {
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
pub enum RevocationsCommand {
    /// List revocations in force, one page at a time. With a filter (--sub, --jti, --actor,
    /// --since) it prints a table unless --json; without one, the JSON page as before.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// "jti" or "sub" (without a filter, "jti" by default).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The next_cursor of a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        filter: revocations::Filter,
        /// Print the JSON page.
        #[arg(long, conflicts_with = "table")]
        json: bool,
        /// Print a table.
        #[arg(long)]
        table: bool,
    },
    /// The audit trail: every revoke and un-revoke, oldest first, as a table (or --json).
    Audit {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        filter: revocations::Filter,
        #[arg(long)]
        json: bool,
    },
    /// Count revocations in force.
    Count {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The admin API's base URL.
    #[arg(long = "admin", default_value = "http://127.0.0.1:9443")]
    pub url: String,
    /// The admin token (or set PORTCULLIS_ADMIN_TOKEN).
    #[arg(
        id = "admin_token",
        long = "admin-token",
        env = "PORTCULLIS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read the admin token from this file instead.
    #[arg(long = "admin-token-file", conflicts_with = "admin_token")]
    pub token_file: Option<PathBuf>,
    /// CA or self-signed certificate (PEM) to trust for an https:// admin URL.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
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
