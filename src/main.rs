//! The `portcullis` command: parse the arguments and hand each command to its file in
//! `portcullis::cli`. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use http::Method;
use portcullis::cli::{self, admin, token::TokenArgs, Cli, Command};

#[global_allocator]
static ALLOCATOR: portcullis::allocator::SplitAllocator = portcullis::allocator::SplitAllocator;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run { config, recover } => cli::run::run(config, recover),
        Command::Check { config } => return cli::check::check(config),
        Command::Token {
            config,
            sub,
            ttl,
            kid,
            claims,
        } => cli::token::token(TokenArgs {
            config,
            sub,
            ttl,
            kid,
            claims,
        }),
        Command::Revoke {
            admin: args,
            jti,
            exp,
            sub,
            token,
            reason,
        } => match admin::revoke_body(jti, exp, sub, token) {
            Ok(mut body) => {
                if let (Some(r), Some(obj)) = (reason, body.as_object_mut()) {
                    obj.insert("reason".into(), r.into());
                }
                admin::call(args, Method::POST, "/revocations".into(), Some(body))
            }
            Err(usage) => {
                eprintln!("portcullis: {usage}");
                return ExitCode::from(2);
            }
        },
        Command::Revocations { command } => admin::revocations(command),
        Command::Apikey { command } => admin::apikey(command),
        Command::Ready { admin: args } => admin::call(args, Method::GET, "/readyz".into(), None),
        Command::Reload { admin: args } => admin::call(args, Method::POST, "/reload".into(), None),
        Command::Users { command } => cli::users::users(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}
