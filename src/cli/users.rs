//! `portcullis users add|passwd|remove`: edit the sign-in users file (replaced atomically).

use anyhow::Context;

use super::UsersCommand;

/// Apply one users-file command.
pub fn users(command: UsersCommand) -> anyhow::Result<()> {
    use crate::signin::users::{hash_password, EditError, UsersFile};
    let edit = |file: &std::path::Path,
                change: &dyn Fn(&mut UsersFile) -> Result<String, EditError>|
     -> anyhow::Result<()> {
        let mut users = UsersFile::load_or_empty(file)?;
        let done = change(&mut users)?;
        users
            .save(file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("portcullis: {done} in {}", file.display());
        Ok(())
    };
    match command {
        UsersCommand::Add { file, id, username } => {
            // Refuse a taken id or username before asking for a password.
            UsersFile::load_or_empty(&file)?.add(&id, &username, String::new())?;
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
